//! Black-box tests: the real service on port 0, a real HTTP client and a real SSE client
//! (eventsource-stream). Partners are the bundled bureau simulator, started by the service
//! itself as in `cargo run` (the real bureaus cannot be reached here).
//!
//! One test binary (`cargo test --test api`) with one module per resource of the API:
//! `analyses` (start, run and read back an analysis, also with Redis, a separate integrations
//! service, partners without a record and Elasticsearch down), `events` (the SSE stream and
//! its reconnects), `classifications` (batches, and NDJSON or JSON-array streams), `transactions`
//! (an analysis's transactions and categories), `auth` (keys, tenants, scopes), `problems`
//! (bad input answered as problem+json) and `ops` (OpenAPI, metrics, the page at `/`). Every
//! test starts its own service on port 0 with `helpers::spawn_app` (or `spawn_app_with`, to
//! change its settings), so tests share nothing and run in parallel; `helpers` is the shared
//! `tests/common` that `browser.rs` uses too.

mod analyses;
mod auth;
mod classifications;
mod events;
mod helpers;
mod ops;
mod problems;
mod transactions;
