//! The HTTP API: routes, handlers, the one error type, and the SSE stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use integrations::Cpf;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::analysis::{self, Snapshot, Status};
use crate::auth::{Denied, Scope};
use crate::events::Event;
use crate::state::AppState;
use crate::store::TransactionStore;

/// Transactions one `POST /v1/classifications` may carry.
pub const MAX_CLASSIFY: usize = 10_000;

/// An error as RFC 9457 problem details.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What was wrong, for a person to read.
    pub detail: String,
    /// The request field at fault, on 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The one error type of the API: a 4xx says what the client did wrong; a 5xx says only that
/// something went wrong, and the cause goes to the log.
#[derive(Debug)]
pub enum ApiError {
    Unauthenticated,
    Forbidden(Scope),
    NotFound(&'static str),
    RateLimited(Duration),
    Invalid { field: &'static str, detail: String },
    Rejected(StatusCode, String),
    Internal(String),
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated => ApiError::Unauthenticated,
            Denied::Forbidden(s) => ApiError::Forbidden(s),
            Denied::RateLimited(w) => ApiError::RateLimited(w),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut field = None;
        let (status, detail) = match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "an API key is needed: `Authorization: Bearer <key>`".to_string(),
            ),
            ApiError::Forbidden(s) => (
                StatusCode::FORBIDDEN,
                format!("this key lacks the `{}` scope", s.as_str()),
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, format!("no such {what}")),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests for this key".to_string(),
            ),
            ApiError::Invalid { field: f, detail } => {
                field = Some(f);
                (StatusCode::UNPROCESSABLE_ENTITY, detail)
            }
            ApiError::Rejected(status, detail) => (status, detail),
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "Request failed.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong".to_string(),
                )
            }
        };
        let body = Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail,
            field: field.map(String::from),
        };
        let body = serde_json::to_string(&body).expect("problems serialise");
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field,
        detail: detail.into(),
    }
}

fn rejected(e: JsonRejection) -> ApiError {
    ApiError::Rejected(e.status(), e.body_text())
}

/// The API key of a request: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// The service's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/analyses", post(start_analysis))
        .route("/v1/analyses/{id}", get(get_analysis))
        .route("/v1/analyses/{id}/events", get(events))
        .route(
            "/v1/analyses/{id}/transactions",
            get(crate::transactions::list),
        )
        .route(
            "/v1/analyses/{id}/categories",
            get(crate::transactions::categories),
        )
        .route("/v1/classifications", post(classify))
        .route(
            "/v1/classifications/stream",
            post(crate::stream_classify::classify_stream)
                .layer(DefaultBodyLimit::max(crate::stream_classify::MAX_BYTES)),
        )
        .route("/internal/partner-results", post(partner_result))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::web::router())
        .layer(DefaultBodyLimit::max(4 * 1024 * 1024))
        .layer(axum::middleware::from_fn(crate::metrics::count_requests))
        .with_state(state)
}

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
    pub status: String,
    /// The SSE stream, with a token that opens it for 15 minutes (EventSource sends no headers).
    pub events_url: String,
    pub analysis_url: String,
}

fn parse_date(field: &'static str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| invalid(field, "must be a date as YYYY-MM-DD"))
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
async fn start_analysis(
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
    let to = body
        .to
        .as_deref()
        .map(|v| parse_date("to", v))
        .transpose()?
        .unwrap_or(today);
    let from = body
        .from
        .as_deref()
        .map(|v| parse_date("from", v))
        .transpose()?
        .unwrap_or(to - chrono::Duration::days(90));
    if to > today {
        return Err(invalid("to", "must not be in the future"));
    }
    if from > to {
        return Err(invalid("from", "must not be after `to`"));
    }
    if (to - from).num_days() > 366 {
        return Err(invalid("from", "the window spans at most 366 days"));
    }
    let id = format!("an_{}", uuid::Uuid::new_v4().simple());
    state
        .analyses
        .insert(Snapshot {
            id: id.clone(),
            tenant: caller.tenant.clone(),
            status: Status::Running,
            cpf: cpf.masked(),
            from,
            to,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            partners: Default::default(),
            classified: 0,
            stored: 0,
            summary: None,
            error: None,
            events_url: None,
        })
        .await;
    state
        .events
        .create(&id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .events
        .append(
            &id,
            "analysis.accepted",
            serde_json::json!({ "id": id, "cpf": cpf.masked(), "from": from, "to": to }),
        )
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(analysis = %id, tenant = %caller.tenant, "Analysis accepted.");
    crate::metrics::ANALYSES_STARTED.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(analysis::run(
        state.clone(),
        id.clone(),
        caller.tenant.clone(),
        cpf,
        from,
        to,
    ));
    let location = format!("/v1/analyses/{id}");
    let body = Started {
        id: id.clone(),
        status: "running".into(),
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
        (status = 200, description = "The analysis now", body = crate::analysis::Snapshot),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such analysis for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_analysis(
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
fn events_url(state: &AppState, id: &str, tenant: &str) -> String {
    let token = state.auth.events_token(id, tenant);
    format!("/v1/analyses/{id}/events?token={token}")
}

#[derive(Deserialize)]
struct EventsQuery {
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
async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A signed token (EventSource cannot send headers) or an API key with the read scope.
    let tenant = match (&q.token, api_key(&headers)) {
        (Some(token), _) => state
            .auth
            .check_events_token(token, &id)
            .ok_or(ApiError::Unauthenticated)?,
        (None, key) => state.auth.authorize(key, Scope::AnalysesRead)?.tenant,
    };
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
    if let crate::events::EventLog::Memory(log) = &state.events {
        // In memory, clients are pushed shared frames: no task or serialisation per client.
        let rx = log
            .subscribe(&id, last)
            .ok_or(ApiError::NotFound("analysis"))?;
        return Ok(crate::sse::live_response(rx, state.clone()));
    }
    let finished = snapshot.status != Status::Running;
    let past = state
        .events
        .read_after(&id, last, 256)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or(ApiError::NotFound("analysis"))?;
    // On Redis a task per client pulls from the log as fast as the client reads.
    let (tx, rx) = mpsc::channel(crate::events::CLIENT_BUFFER);
    tokio::spawn(feed(tx, id, past, last, finished, state.clone()));
    Ok(crate::sse::live_response(rx, state))
}

/// Sends the client what it missed, then what comes, as SSE frames, until the analysis ends,
/// the client leaves (the channel closes), it stops reading for [`crate::sse::SLOW_CLIENT`], or the
/// service shuts down. Events are pulled from the log only as fast as the client takes them,
/// so nothing is buffered for a slow client beyond its channel.
async fn feed(
    tx: mpsc::Sender<Bytes>,
    id: String,
    mut pending: Vec<Event>,
    mut last_sent: u64,
    finished: bool,
    state: Arc<AppState>,
) {
    if finished && pending.is_empty() && has_everything(&state, &id, last_sent).await {
        // Reconnected to a finished analysis and already had everything.
        return;
    }
    // Empty waits in a row while the analysis says it has ended (see below).
    let mut ended_empty = 0;
    loop {
        for e in pending.drain(..) {
            if e.id <= last_sent {
                continue;
            }
            match tx
                .send_timeout(crate::events::frame(&e), crate::sse::SLOW_CLIENT)
                .await
            {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    let _ = tx.try_send(Bytes::from_static(
                        b"event: stream.error\ndata: {\"reason\":\"the client stopped reading; reconnect with Last-Event-ID\"}\n\n",
                    ));
                    return;
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
            }
            last_sent = e.id;
            if e.is_terminal() {
                return;
            }
        }
        tokio::select! {
            more = state.events.wait_after(&id, last_sent, Duration::from_secs(15)) => match more {
                Ok(events) => pending = events,
                Err(e) => {
                    tracing::warn!(analysis = %id, error = %e, "Event log unavailable; ending the stream.");
                    let _ = tx.try_send(Bytes::from_static(
                        b"event: stream.error\ndata: {\"reason\":\"events are unavailable; reconnect with Last-Event-ID\"}\n\n",
                    ));
                    return;
                }
            },
            // The client left, or the service is stopping (the response sends the goodbye).
            _ = tx.closed() => return,
            _ = state.shutdown_signal() => return,
        }
        // The status turns final just before the final event is appended, so an ended status
        // with nothing read is not the end yet: ask the log itself. Only if the final event
        // never arrives (its append failed) does the stream end without it.
        if pending.is_empty()
            && matches!(state.analyses.get_status(&id).await, Some(s) if s != Status::Running)
        {
            pending = state
                .events
                .read_after(&id, last_sent, 256)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            if pending.is_empty() {
                ended_empty += 1;
                if ended_empty >= 2 {
                    return;
                }
            }
        } else {
            ended_empty = 0;
        }
    }
}

/// Whether a client that saw event `last` of a finished analysis has its final event: the
/// event it saw is the final one, or lies beyond the log's end.
async fn has_everything(state: &AppState, id: &str, last: u64) -> bool {
    match state.events.read_after(id, last.saturating_sub(1), 1).await {
        Ok(Some(events)) => match events.first() {
            None => true,
            Some(e) => e.id == last && e.is_terminal(),
        },
        _ => false,
    }
}

/// One movement to classify.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyItem {
    /// The caller's id, echoed in the result.
    pub id: String,
    /// The statement line, 1 to 1024 bytes.
    pub description: String,
    /// Signed amount in BRL; negative is money out.
    pub amount: f64,
    /// Merchant category code, 1 to 4 digits.
    #[serde(default)]
    pub mcc: Option<String>,
    /// The bureau's movement type (`pix`, `cartao`, ...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyBody {
    /// Up to 10,000 movements.
    pub transactions: Vec<ClassifyItem>,
}

/// A label the model did not pick.
#[derive(Serialize, ToSchema)]
pub struct RunnerUp {
    pub label: String,
    pub probability: f32,
}

/// The label of one movement.
#[derive(Serialize, ToSchema)]
pub struct Classified {
    pub id: String,
    /// One of the 19 PFC labels of taxonomy.md.
    pub label: String,
    pub probability: f32,
    /// `VERY_HIGH` (> 0.98), `HIGH` (> 0.90), `MEDIUM` (> 0.70) or `LOW`.
    pub confidence: String,
    /// The next two labels, best first.
    pub runners_up: Vec<RunnerUp>,
}

#[derive(Serialize, ToSchema)]
pub struct ClassifyResponse {
    pub results: Vec<Classified>,
}

/// Checks and classifies one movement; the error says what is wrong with it.
pub(crate) fn classify_one(
    state: &AppState,
    ws: &mut classifier::model::Workspace,
    t: &ClassifyItem,
) -> Result<Classified, String> {
    if t.description.trim().is_empty()
        || t.description.len() > classifier::data::MAX_DESCRIPTION_BYTES
    {
        return Err("description must be 1 to 1024 bytes".into());
    }
    if !t.amount.is_finite() {
        return Err("amount must be a number".into());
    }
    let mcc = match t.mcc.as_deref() {
        None => None,
        Some(m) => classifier::data::parse_mcc(m)?,
    };
    let p = state.scorer.predict_with(
        &classifier::features::MovementInput {
            description: &t.description,
            amount: t.amount,
            mcc,
            kind: t.kind.as_deref(),
        },
        ws,
    );
    crate::metrics::MOVEMENTS_CLASSIFIED.fetch_add(1, Ordering::Relaxed);
    Ok(Classified {
        id: t.id.clone(),
        label: p.label.as_str().into(),
        probability: p.probability,
        confidence: p.confidence.as_str().into(),
        runners_up: p
            .runners_up
            .iter()
            .flatten()
            .map(|a| RunnerUp {
                label: a.label.as_str().into(),
                probability: a.probability,
            })
            .collect(),
    })
}

#[utoipa::path(
    post,
    path = "/v1/classifications",
    request_body = ClassifyBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One result per movement, in order", body = ClassifyResponse),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `classify` scope", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "More than 10,000 movements", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A movement is invalid; `detail` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ClassifyBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    state.auth.authorize(api_key(&headers), Scope::Classify)?;
    let Json(body) = body.map_err(rejected)?;
    if body.transactions.len() > MAX_CLASSIFY {
        return Err(ApiError::Rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {MAX_CLASSIFY} transactions per request; this has {}",
                body.transactions.len()
            ),
        ));
    }
    let mut ws = classifier::model::Workspace::default();
    let results = body
        .transactions
        .iter()
        .enumerate()
        .map(|(i, t)| {
            classify_one(&state, &mut ws, t)
                .map_err(|e| invalid("transactions", format!("transactions[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ClassifyResponse { results }).into_response())
}

async fn readyz(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.store.ready().await && state.partners.ready().await {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let partners = state.partners.status().await;
    let text = crate::metrics::prometheus_text(partners.as_ref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    secret: String,
}

/// Where a separate integrations service delivers queued requests' outcomes.
async fn partner_result(
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
