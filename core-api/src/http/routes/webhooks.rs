//! Webhook endpoints (`/v1/webhook-endpoints`: create, list, delete) and an analysis's delivery
//! log (`GET /v1/analyses/{id}/webhooks`) with its resend. See [`crate::webhooks`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Scope;
use crate::http::audit::{self, Client};
use crate::http::error::{invalid, rejected, ApiError, Problem};
use crate::http::extract::api_key;
use crate::state::AppState;
use crate::store::{actions, AccessRecord};
use crate::webhooks::{self, Delivery, DeliveryStatus, Endpoint, EVENTS, MAX_ENDPOINTS};

/// A new endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    /// Where to POST: `http` or `https`, a public address (private and loopback ones only
    /// when the operator allows the host), no user name or password.
    #[schema(example = "https://lender.example/hooks/credit")]
    pub url: String,
    /// `analysis.completed`, `analysis.failed`, or both.
    pub events: Vec<String>,
}

/// An endpoint as shown; `secret` only in the answer that created it.
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// `whsec_…`: the key of the `webhook-signature` (Standard Webhooks). Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl EndpointView {
    fn of(e: Endpoint, with_secret: bool) -> Self {
        EndpointView {
            created_at: rfc3339(e.created_ms),
            id: e.id,
            url: e.url,
            events: e.events,
            secret: with_secret.then_some(e.secret),
        }
    }
}

/// The tenant's endpoints.
#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// One delivery of an analysis's webhook.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` header, the same on every attempt.
    pub id: String,
    pub endpoint_id: String,
    pub event: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The endpoint's last HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// When the next attempt is due, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        let pending = d.status == DeliveryStatus::Pending;
        DeliveryView {
            id: d.id,
            endpoint_id: d.endpoint_id,
            event: d.event,
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: rfc3339(d.created_ms),
            delivered_at: d.delivered_ms.map(rfc3339),
            next_attempt_at: pending.then(|| rfc3339(d.next_ms)),
        }
    }
}

/// An analysis's deliveries.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

fn store_failed(e: webhooks::WebhookStoreError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints",
    request_body = EndpointBody,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = EndpointView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `webhooks`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad or refused `url`, unknown `events`, unknown field, or ten endpoints already; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<EndpointBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = state.auth.authorize(api_key(&headers), Scope::Webhooks)?;
    let Json(body) = body.map_err(rejected)?;
    let url = webhooks::check_url(&body.url, state.webhooks.allowed())
        .await
        .map_err(|why| invalid("url", why.to_string()))?;
    let mut events = body.events;
    events.sort();
    events.dedup();
    if events.is_empty() || events.iter().any(|e| !EVENTS.contains(&e.as_str())) {
        return Err(invalid(
            "events",
            format!("events must list one or more of {}", EVENTS.join(", ")),
        ));
    }
    let store = state.webhooks.store();
    if store
        .endpoints(&caller.tenant)
        .await
        .map_err(store_failed)?
        .len()
        >= MAX_ENDPOINTS
    {
        return Err(invalid(
            "url",
            format!("a tenant may have {MAX_ENDPOINTS} endpoints; delete one first"),
        ));
    }
    let endpoint = Endpoint {
        id: format!("we_{}", uuid::Uuid::new_v4().simple()),
        tenant: caller.tenant,
        url: url.to_string(),
        events,
        secret: webhooks::new_secret(),
        created_ms: chrono::Utc::now().timestamp_millis(),
    };
    store.add_endpoint(&endpoint).await.map_err(store_failed)?;
    Ok((StatusCode::CREATED, Json(EndpointView::of(endpoint, true))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant's endpoints, oldest first (no secrets)", body = EndpointList),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `webhooks`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<EndpointList>, ApiError> {
    let caller = state.auth.authorize(api_key(&headers), Scope::Webhooks)?;
    let endpoints = state
        .webhooks
        .store()
        .endpoints(&caller.tenant)
        .await
        .map_err(store_failed)?;
    Ok(Json(EndpointList {
        endpoints: endpoints
            .into_iter()
            .map(|e| EndpointView::of(e, false))
            .collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/webhook-endpoints/{id}",
    params(("id" = String, Path, description = "The endpoint id")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted; its pending deliveries end as failed"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `webhooks`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = state.auth.authorize(api_key(&headers), Scope::Webhooks)?;
    match state
        .webhooks
        .store()
        .delete_endpoint(&caller.tenant, &id)
        .await
        .map_err(store_failed)?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound("webhook endpoint")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/analyses/{id}/webhooks",
    params(("id" = String, Path, description = "The analysis id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The analysis's webhook deliveries, oldest first", body = DeliveryList),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such analysis for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<DeliveryList>, ApiError> {
    let (caller, person) =
        super::transactions::own_analysis(&state, &headers, &id, Scope::AnalysesRead).await?;
    audit::record(
        &state,
        AccessRecord::now(&caller.tenant, &caller.key_id, actions::WEBHOOK_LOG)
            .about(&id, &person)
            .from_client(client.0),
    )
    .await?;
    let all = state
        .webhooks
        .store()
        .deliveries(&id)
        .await
        .map_err(store_failed)?;
    Ok(Json(DeliveryList {
        deliveries: all
            .into_iter()
            .filter(|d| d.tenant == caller.tenant)
            .map(DeliveryView::from)
            .collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/analyses/{id}/webhooks/{delivery_id}/resend",
    params(
        ("id" = String, Path, description = "The analysis id"),
        ("delivery_id" = String, Path, description = "The delivery (`webhook-id`)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Queued again, with a fresh count of attempts and the same `webhook-id`"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `webhooks`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such analysis or delivery for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resend(
    State(state): State<Arc<AppState>>,
    Path((id, delivery_id)): Path<(String, String)>,
    client: Client,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (caller, person) =
        super::transactions::own_analysis(&state, &headers, &id, Scope::Webhooks).await?;
    let known = state
        .webhooks
        .store()
        .delivery(&delivery_id)
        .await
        .map_err(store_failed)?
        .is_some_and(|d| d.tenant == caller.tenant && d.analysis_id == id);
    if !known {
        return Err(ApiError::NotFound("webhook delivery"));
    }
    audit::record(
        &state,
        AccessRecord::now(&caller.tenant, &caller.key_id, actions::WEBHOOK_RESEND)
            .about(&id, &person)
            .from_client(client.0),
    )
    .await?;
    if !state
        .webhooks
        .resend(&caller.tenant, &id, &delivery_id)
        .await
        .map_err(store_failed)?
    {
        return Err(ApiError::NotFound("webhook delivery"));
    }
    Ok(StatusCode::ACCEPTED)
}
