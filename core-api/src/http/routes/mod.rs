//! One module per resource of the API, each with its handlers, their request and response
//! types, and their OpenAPI annotations.

pub mod analyses;
pub mod audit;
pub mod classify;
pub mod classify_stream;
pub mod events;
pub mod ops;
pub mod transactions;
pub mod webhooks;
