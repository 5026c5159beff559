//! The HTTP layer: the router ([`router`]), the one error type ([`error`]), what handlers
//! read off a request ([`extract`]), one module per resource ([`routes`]), the OpenAPI
//! document ([`openapi`]) and the page at `/` ([`web`]). Handlers check what the client sent
//! and call the layers below; they do no domain work themselves.

pub mod audit;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod web;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;
use routes::{analyses, classify, classify_stream, events, ops, transactions};

/// Bytes a request body may hold, but for the classification stream's own limit.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The service's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/analyses", post(analyses::start_analysis))
        .route(
            "/v1/analyses/{id}",
            get(analyses::get_analysis).delete(analyses::erase_analysis),
        )
        .route(
            "/v1/webhook-endpoints",
            post(routes::webhooks::create).get(routes::webhooks::list),
        )
        .route(
            "/v1/webhook-endpoints/{id}",
            axum::routing::delete(routes::webhooks::delete),
        )
        .route(
            "/v1/analyses/{id}/webhooks",
            get(routes::webhooks::deliveries),
        )
        .route(
            "/v1/analyses/{id}/webhooks/{delivery_id}/resend",
            post(routes::webhooks::resend),
        )
        .route("/v1/audit", get(routes::audit::list))
        .route("/v1/audit/search", post(routes::audit::search))
        .route(
            "/v1/audit/export",
            get(routes::audit::export).post(routes::audit::export_search),
        )
        .route("/v1/analyses/{id}/events", get(events::events))
        .route("/v1/analyses/{id}/transactions", get(transactions::list))
        .route(
            "/v1/analyses/{id}/categories",
            get(transactions::categories),
        )
        .route("/v1/classifications", post(classify::classify))
        .route(
            "/v1/classifications/stream",
            post(classify_stream::classify_stream)
                .layer(DefaultBodyLimit::max(classify_stream::MAX_BYTES)),
        )
        .route("/internal/partner-results", post(ops::partner_result))
        .route("/openapi.json", get(openapi::serve))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(web::router())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Every 4xx a problem document, also axum's own (unknown routes, bad paths).
        .layer(axum::middleware::map_response(
            integrations::service::problems_only,
        ))
        .layer(axum::middleware::from_fn(crate::metrics::count_requests))
        .with_state(state)
}
