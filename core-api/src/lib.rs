//! The public credit-analysis service.
//!
//! A client starts an analysis of a person by CPF; the service asks the partner bureaus for
//! the person's data through `integrations`, labels every bank movement with the `classifier`,
//! stores the classified transactions and streams its progress over Server-Sent Events until
//! a summary is ready. [`Application::build`] wires the parts from [`config::Settings`] and
//! binds the listener, so tests start the real service on port 0.
//!
//! `docs/architecture.md` and `docs/events.md` (at the repository root) describe the design
//! and the SSE events. The modules, in layers that depend one way (each uses only those
//! above it, and within layer 2 only `partners` uses another, `auth`'s key helpers, and `webhooks` the
//! store's audit trail):
//!
//! 1. [`config`], [`domain`] (the analysis, its window, summary and events), [`shutdown`],
//!    [`metrics`], [`retry`]: no I/O of their own.
//! 2. [`store`] (transactions: SQLite or Elasticsearch), [`events`] (each analysis's event
//!    log, in memory or on Redis Streams), [`snapshots`], [`partners`] (integrations in
//!    process or over HTTP), [`auth`] (keys, tenants, scopes, rate limits, `events_url`
//!    tokens), [`limits`] (what one caller may hold open at once), [`idempotency`] (the
//!    `Idempotency-Key`s of analysis starts), [`webhooks`] (endpoints, the delivery queue and
//!    its sender, which records its deliveries in the store's audit trail).
//! 3. [`state`]: one handle on each of them, shared by handlers and runs.
//! 4. [`analyses`]: starting an analysis and running it to its end.
//! 5. [`http`] (router, error type, one module per resource, OpenAPI, the page) and
//!    [`server`] (capped accepts, hyper, and its own writer for SSE clients).
//! 6. [`startup`]: [`Application`], which builds and runs all of it.

pub mod analyses;
pub mod auth;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod partners;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod snapshots;
pub mod startup;
pub mod state;
pub mod store;
pub mod webhooks;

pub use startup::{Application, MAX_CONNECTIONS};
