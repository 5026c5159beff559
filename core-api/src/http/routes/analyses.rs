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
use crate::http::audit::{self, Client};
use crate::http::error::{invalid, rejected, ApiError, Problem};
use crate::http::extract::api_key;
use crate::idempotency::{self, Claim};
use crate::state::AppState;
use crate::store::{actions, AccessRecord};

/// The header that makes a start idempotent.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

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
    /// `true` asks every partner anew, even where a cached answer about this person would
    /// do (as the header `Cache-Control: no-cache`); the new answers are cached.
    pub fresh: Option<bool>,
}

/// An accepted analysis.
#[derive(Serialize, ToSchema)]
pub struct Started {
    pub id: String,
    /// `running`; where the analysis is now, when an earlier request with the same
    /// Idempotency-Key started it.
    pub status: Status,
    /// The SSE stream, with a token that opens it for 15 minutes (EventSource sends no headers).
    pub events_url: String,
    pub analysis_url: String,
}

#[utoipa::path(
    post,
    path = "/v1/analyses",
    request_body = StartBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters. A retry with the same key and body within 24 h answers the same analysis (with `Idempotent-Replayed: true`) instead of starting another; the same key with another body is a 422. Keys are per tenant.")),
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Accepted; follow `events_url`", body = Started, headers(("Location" = String, description = "The analysis"), ("Idempotent-Replayed" = String, description = "`true` when an earlier request with this Idempotency-Key started the analysis"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `analyses:write`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 4 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still starting its analysis; send it again", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid CPF, date or unknown field, or an Idempotency-Key used with another body; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the key's rate; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_analysis(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    body: Result<Json<StartBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = state
        .auth
        .authorize(api_key(&headers), Scope::AnalysesWrite)?;
    let Json(body) = body.map_err(rejected)?;
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            idempotency::parse_key(v.as_bytes()).map_err(|why| {
                invalid(
                    IDEMPOTENCY_KEY,
                    format!("the {IDEMPOTENCY_KEY} header {why}"),
                )
            })
        })
        .transpose()?;
    let cpf = Cpf::parse(&body.cpf).map_err(|e| invalid("cpf", e.to_string()))?;
    let today = chrono::Utc::now().date_naive();
    let window = Window::parse(body.from.as_deref(), body.to.as_deref(), today)
        .map_err(|e| invalid(e.field, e.detail))?;
    let person = analyses::run::cpf_hash(&state, &cpf);
    let subject = analyses::run::Subject {
        id: analyses::new_id(),
        tenant: caller.tenant.clone(),
        cpf,
        fresh: body.fresh.unwrap_or(false) || no_cache(&headers),
    };
    let key = match idempotency_key {
        None => None,
        Some(key) => {
            // The body as sent (not the window it resolves to, which moves with the date), so
            // a retry after midnight is still the same request.
            let digits = subject.cpf.digits();
            let fresh = body.fresh.map(|f| f.to_string());
            let fingerprint = idempotency::fingerprint(
                state.cpf_hash_key.expose().as_bytes(),
                &[
                    Some(&digits),
                    body.from.as_deref(),
                    body.to.as_deref(),
                    fresh.as_deref(),
                ],
            );
            Some((key.to_string(), fingerprint))
        }
    };
    // In a task of its own: a client that hangs up mid-way must not leave a claimed key, or a
    // snapshot, without the run that goes with it.
    // Recorded before the person's data is asked for; the analysis is named once known.
    let record = AccessRecord::now(&caller.tenant, &caller.key_id, actions::START)
        .about("", &person)
        .from_client(client.0);
    tokio::spawn(start(state, subject, window, key, record))
        .await
        .map_err(|e| ApiError::Internal(format!("the start task: {e}")))?
}

/// Records `record` (a start) for analysis `id` in the audit trail; a replay (an earlier
/// request with the same Idempotency-Key started it) as such.
async fn record_start(
    state: &AppState,
    mut record: AccessRecord,
    id: &str,
    replayed: bool,
) -> Result<(), ApiError> {
    record.analysis_id = Some(id.to_string());
    if replayed {
        record.action = actions::START_REPLAYED.into();
    }
    audit::record(state, record).await
}

/// How long a replay waits for the first request with its key to finish starting.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the analysis of `subject`, or with an Idempotency-Key (and the body's fingerprint)
/// answers the analysis an earlier request with the key started.
async fn start(
    state: Arc<AppState>,
    subject: analyses::run::Subject,
    window: Window,
    key: Option<(String, String)>,
    record: AccessRecord,
) -> Result<Response, ApiError> {
    let (id, tenant) = (subject.id.clone(), subject.tenant.clone());
    let Some((key, fingerprint)) = key else {
        record_start(&state, record, &id, false).await?;
        analyses::start(&state, subject, window)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(accepted(&state, &id, &tenant, Status::Running, false));
    };
    let keys = &state.idempotency;
    let waiting_since = tokio::time::Instant::now();
    loop {
        let claim = keys
            .claim(&tenant, &key, &fingerprint, &id)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        match claim {
            Claim::New => break,
            Claim::Replay {
                id: earlier,
                started: true,
            } => {
                match state.analyses.get(&earlier, &tenant).await {
                    Some(s) => {
                        record_start(&state, record, &earlier, true).await?;
                        return Ok(accepted(&state, &earlier, &tenant, s.status, true));
                    }
                    // Started, but no longer kept (in memory, ended analyses go after an
                    // hour): nothing to answer with, so the key starts a new analysis.
                    None => keys.release(&tenant, &key, &fingerprint, &earlier).await,
                }
            }
            Claim::Replay { started: false, .. } => {
                // The first request is still starting it (or died doing so: its claim then
                // lapses within idempotency::PENDING_TTL).
                if waiting_since.elapsed() >= PENDING_WAIT {
                    return Err(ApiError::Rejected(
                        StatusCode::CONFLICT,
                        format!(
                            "a request with this {IDEMPOTENCY_KEY} is still starting its \
                             analysis; send it again in a few seconds"
                        ),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Claim::Mismatch => {
                return Err(invalid(
                    IDEMPOTENCY_KEY,
                    "this key started an analysis with another body in the last 24 h: send that \
                     body again, or use a new key for a new analysis",
                ))
            }
        }
    }
    if let Err(e) = record_start(&state, record, &id, false).await {
        keys.release(&tenant, &key, &fingerprint, &id).await;
        return Err(e);
    }
    if let Err(e) = analyses::start(&state, subject, window).await {
        keys.release(&tenant, &key, &fingerprint, &id).await;
        return Err(ApiError::Internal(e.to_string()));
    }
    if let Err(e) = keys.confirm(&tenant, &key, &fingerprint, &id).await {
        // The analysis runs; a retry within the pending time waits, then may start another.
        tracing::warn!(analysis = %id, error = %e, "Idempotency key not confirmed.");
    }
    Ok(accepted(&state, &id, &tenant, Status::Running, false))
}

/// Whether `Cache-Control` says `no-cache` (among its directives, in any case).
fn no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
}

/// The 202 for analysis `id`; `replayed` when an earlier request with the same
/// Idempotency-Key started it.
fn accepted(state: &AppState, id: &str, tenant: &str, status: Status, replayed: bool) -> Response {
    let location = format!("/v1/analyses/{id}");
    let body = Started {
        id: id.to_string(),
        status,
        events_url: events_url(state, id, tenant),
        analysis_url: location.clone(),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ASCII id"),
    );
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
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
    client: Client,
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
    audit::record(
        &state,
        AccessRecord::now(&caller.tenant, &caller.key_id, actions::READ)
            .about(&id, &snapshot.cpf_hash)
            .from_client(client.0),
    )
    .await?;
    snapshot.events_url = Some(events_url(&state, &id, &caller.tenant));
    Ok(Json(snapshot).into_response())
}

/// The analysis's SSE stream with a new token (EventSource cannot send an API key).
pub fn events_url(state: &AppState, id: &str, tenant: &str) -> String {
    let token = state.auth.events_token(id, tenant);
    format!("/v1/analyses/{id}/events?token={token}")
}

#[utoipa::path(
    delete,
    path = "/v1/analyses/{id}",
    params(("id" = String, Path, description = "The analysis id")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Erased: the snapshot, the event log, the stored transactions, the partners' cached answers about the person (within this tenant) and the analysis's queued requests are gone; the erasure is in the audit trail"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `analyses:erase`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such analysis for this tenant (or already erased)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The analysis is still running; erase it once it has ended (within its deadline)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn erase_analysis(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    client: Client,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (caller, person) = crate::http::routes::transactions::own_analysis(
        &state,
        &headers,
        &id,
        Scope::AnalysesErase,
    )
    .await?;
    let record =
        AccessRecord::now(&caller.tenant, &caller.key_id, actions::ERASE).from_client(client.0);
    match analyses::erase::erase(&state, &id, &caller.tenant, &person, record).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(analyses::erase::EraseError::Running) => Err(ApiError::Rejected(
            StatusCode::CONFLICT,
            "the analysis is still running; erase it once it has ended".into(),
        )),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
