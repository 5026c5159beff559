//! `POST /v1/analyses` starts an analysis; `GET /v1/analyses/{id}` shows where it is.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use integrations::Cpf;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analyses;
use crate::auth::Scope;
use crate::domain::{Snapshot, Status, Window};
use crate::http::error::{invalid, rejected, ApiError, Problem};
use crate::http::extract::api_key;
use crate::state::AppState;

/// Start an analysis of a person.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The person's CPF: 11 digits with valid check digits; `.` and `-` allowed.
    #[schema(example = "529.982.247-25")]
    pub cpf: String,
    /// First day of the history, `YYYY-MM-DD`; default 90 days before `to`.
    pub from: Option<String>,
    /// Last day of the history, `YYYY-MM-DD`, not in the future; default today.
    pub to: Option<String>,
}

/// An accepted analysis.
#[derive(Serialize, ToSchema)]
pub struct Started {
    pub id: String,
    /// `running`.
    pub status: Status,
    /// The SSE stream, with a token that opens it for 15 minutes (EventSource sends no headers).
    pub events_url: String,
    pub analysis_url: String,
}

#[utoipa::path(
    post,
    path = "/v1/analyses",
    request_body = StartBody,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Accepted; follow `events_url`", body = Started, headers(("Location" = String, description = "The analysis"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `analyses:write`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 4 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid CPF, date or unknown field; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the key's rate; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_analysis(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<StartBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = state
        .auth
        .authorize(api_key(&headers), Scope::AnalysesWrite)?;
    let Json(body) = body.map_err(rejected)?;
    let cpf = Cpf::parse(&body.cpf).map_err(|e| invalid("cpf", e.to_string()))?;
    let today = chrono::Utc::now().date_naive();
    let window = Window::parse(body.from.as_deref(), body.to.as_deref(), today)
        .map_err(|e| invalid(e.field, e.detail))?;
    let id = analyses::start(&state, &caller.tenant, cpf, window)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let location = format!("/v1/analyses/{id}");
    let body = Started {
        id: id.clone(),
        status: Status::Running,
        events_url: events_url(&state, &id, &caller.tenant),
        analysis_url: location.clone(),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ASCII id"),
    );
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/v1/analyses/{id}",
    params(("id" = String, Path, description = "The analysis id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The analysis now", body = Snapshot),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such analysis for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_analysis(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state
        .auth
        .authorize(api_key(&headers), Scope::AnalysesRead)?;
    let mut snapshot = state
        .analyses
        .get(&id, &caller.tenant)
        .await
        .ok_or(ApiError::NotFound("analysis"))?;
    snapshot.events_url = Some(events_url(&state, &id, &caller.tenant));
    Ok(Json(snapshot).into_response())
}

/// The analysis's SSE stream with a new token (EventSource cannot send an API key).
pub fn events_url(state: &AppState, id: &str, tenant: &str) -> String {
    let token = state.auth.events_token(id, tenant);
    format!("/v1/analyses/{id}/events?token={token}")
}
