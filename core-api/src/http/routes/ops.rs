//! What operators and the integrations service call: readiness, the Prometheus metrics, and
//! the callback through which a separate integrations service delivers queued outcomes.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::http::error::{rejected, ApiError};
use crate::state::AppState;
use crate::store::TransactionStore;

pub async fn readyz(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.store.ready().await && state.partners.ready().await {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The Prometheus metrics; with `METRICS_TOKEN` set, only for its bearer.
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.settings.metrics_token {
        // Compared as hashes: equal lengths, so the time taken says nothing of the token's.
        let presented = crate::http::extract::api_key(&headers).unwrap_or_default();
        let (presented, token) = (
            integrations::auth::secret_hash(presented),
            integrations::auth::secret_hash(token.expose()),
        );
        if !crate::auth::constant_time_eq(&presented, &token) {
            return Err(ApiError::Unauthenticated);
        }
    }
    let partners = state.partners.status().await;
    let text = crate::metrics::prometheus_text(partners.as_ref());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[derive(Deserialize)]
/// The callback's query: the secret this instance gave the integrations service.
pub struct CallbackQuery {
    secret: String,
}

/// Where a separate integrations service delivers queued requests' outcomes.
pub async fn partner_result(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CallbackQuery>,
    body: Result<Json<integrations::queue::Outcome>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let crate::partners::Partners::Remote(remote) = &state.partners else {
        return Err(ApiError::NotFound("route"));
    };
    let Json(outcome) = body.map_err(rejected)?;
    if remote.deliver(&q.secret, outcome) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Unauthenticated)
    }
}
