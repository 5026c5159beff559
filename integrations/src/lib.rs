//! Partner credit bureaus, called within their limits.
//!
//! Partners limit how many requests they take at once and per second. This crate calls them
//! by the contract of `shared/partner-api.md` without ever exceeding those limits, counting
//! every running instance together, without hammering a partner that is down, and without
//! losing a request:
//!
//! - [`semaphore`]: lease-based permits, in process or shared through Redis;
//! - [`partner`]: the HTTP adapter, circuit breaker and rate limiter of one partner;
//! - [`queue`]: the durable retry queue, in process or on Redis, at-least-once with leases;
//! - [`simulator`]: the bundled bureau simulator the embedded shape and the tests call.
//!
//! It is a library, used in process by the core API, and its own service binary.

pub mod config;
pub mod contract;
pub mod cpf;
pub mod error;
pub mod gateway;
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
