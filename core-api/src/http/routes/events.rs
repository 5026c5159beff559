//! `GET /v1/analyses/{id}/events`: an analysis's Server-Sent Events, replayed from the
//! client's `Last-Event-ID` and followed live until the final event (see `docs/events.md`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::auth::Scope;
use crate::domain::Status;
use crate::http::audit::{self, Client};
use crate::http::error::{ApiError, Problem};
use crate::http::extract::api_key;
use crate::server::sse::live_response;
use crate::state::AppState;
use crate::store::{actions, AccessRecord};

#[derive(Deserialize)]
/// The events request's query: the `events_url` token, and where to resume (as the header).
pub struct EventsQuery {
    token: Option<String>,
    last_event_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/analyses/{id}/events",
    params(
        ("id" = String, Path, description = "The analysis id"),
        ("token" = Option<String>, Query, description = "The token of `events_url` (instead of an API key)"),
        ("last_event_id" = Option<u64>, Query, description = "Replay after this event (as the Last-Event-ID header)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Replay after this event"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `id`, `event` type, JSON `data` with an `at` time stamp; ends after `analysis.completed` or `analysis.failed`", content_type = "text/event-stream", body = String),
        (status = 400, description = "Malformed Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token or key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such analysis for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A signed token (EventSource cannot send headers) or an API key with the read scope.
    let (tenant, key_id) = match (&q.token, api_key(&headers)) {
        (Some(token), _) => (
            state
                .auth
                .check_events_token(token, &id)
                .ok_or(ApiError::Unauthenticated)?,
            "events-token".to_string(),
        ),
        (None, key) => {
            let caller = state.auth.authorize(key, Scope::AnalysesRead)?;
            (caller.tenant, caller.key_id)
        }
    };
    if state.stream_opens.check_key(&tenant).is_err() {
        return Err(ApiError::Rejected(
            StatusCode::TOO_MANY_REQUESTS,
            "this tenant is opening event streams faster than allowed; try again in a second"
                .into(),
        ));
    }
    // Taken before any work is done for the stream (a replay, a reader), and held as long
    // as it lives.
    let slot = state.event_streams.open(&tenant).ok_or_else(|| {
        ApiError::Rejected(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this tenant already has {} event streams open here; close some first",
                state.event_streams.max()
            ),
        )
    })?;
    // Another tenant's analysis does not exist for this one.
    let snapshot = state
        .analyses
        .get(&id, &tenant)
        .await
        .ok_or(ApiError::NotFound("analysis"))?;
    let last = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid").to_string())
        .or(q.last_event_id.clone());
    let last: u64 = match last.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(v) => v.parse().map_err(|_| {
            ApiError::Rejected(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID must be an event id (a whole number)".into(),
            )
        })?,
    };
    // The final event of an analysis that has ended is on its way (the run records it right
    // after the snapshot) or was lost (Redis failed for longer than the run retried): then
    // its followers are not left waiting for it for ever.
    audit::record(
        &state,
        AccessRecord::now(&tenant, &key_id, actions::EVENTS)
            .about(&id, &snapshot.cpf_hash)
            .from_client(client.0),
    )
    .await?;
    let rx = if snapshot.status == Status::Running {
        state.events.follow(&id, last).await
    } else {
        let within = crate::analyses::ending_within(&state);
        state.events.follow_ended(&id, last, within).await
    };
    let rx = rx
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or(ApiError::NotFound("analysis"))?;
    Ok(live_response(rx, state.shutdown.clone(), slot))
}
