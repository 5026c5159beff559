//! Partner credit bureaus, called within their limits.
//!
//! Partners limit how many requests they take at once and per second. This crate calls them
//! by the contract of `docs/partner-api.md` (at the repository root) without ever exceeding
//! those limits, counting every running instance together, without hammering a partner that
//! is down, and without losing a request. It is a library, used in process by the core API,
//! and its own service binary (`integrations serve`, `integrations simulate`).
//!
//! The modules:
//!
//! - [`auth`]: the callers of `integrations serve`, their secrets and callback hosts.
//! - [`cache`]: partners' answers kept for a while, sealed, so a repeated analysis is free.
//! - [`config`]: the partner configuration, from TOML and the environment, checked at start.
//! - [`contract`]: the bureau contract's kinds and the bodies each kind answers.
//! - [`cpf`]: the CPF as a validated type that prints masked.
//! - [`error`]: the crate's error type; its messages never carry a CPF or a token.
//! - [`front`]: the HTTP front of both services (capped accepts, hyper with timeouts).
//! - [`gateway`]: a request made now or queued, and the worker that drains the queue.
//! - [`metrics`]: the gateway's state as Prometheus text, for the service and the core API.
//! - [`partner`]: one partner's HTTP adapter, circuit breaker and rate limiter.
//! - [`queue`]: the retry queue, in process or on Redis, at least once with leases.
//! - `redis_wake` (private): Redis server time for Lua scripts, and waits on wake lists.
//! - [`semaphore`]: lease-based permits, in process or shared through Redis.
//! - [`service`]: the HTTP API of `integrations serve` over a gateway.
//! - [`simulator`]: the bundled bureau simulator the embedded shape and the tests call.

pub mod auth;
pub mod cache;
pub mod config;
pub mod contract;
pub mod cpf;
pub mod error;
pub mod front;
pub mod gateway;
pub mod metrics;
pub mod partner;
pub mod queue;
mod redis_wake;
pub mod semaphore;
pub mod service;
pub mod simulator;

pub use config::{Config, PartnerConfig, Secret};
pub use contract::{Kind, PartnerData};
pub use cpf::Cpf;
pub use error::IntegrationError;
