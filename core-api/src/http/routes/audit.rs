//! `GET /v1/audit`: the tenant's access audit trail, newest first and paged; and
//! `GET /v1/audit/export`: the same records as JSON lines, for archiving or a data subject's
//! request. Records name the key (its id), the action, the analysis, the time and the client's
//! address; never a CPF. A person is found with `POST /v1/audit/search` (or `/export`) and
//! `cpf` in the body, hashed as the trail keeps it: a CPF never goes in a URL.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use integrations::Cpf;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Scope;
use crate::http::error::{invalid, rejected, ApiError, Problem};
use crate::http::extract::api_key;
use crate::state::AppState;
use crate::store::{AccessRecord, AuditPosition, AuditQuery, AuditTrail};

/// Records per page by default and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// Records one export holds at most: a bound on the stream (narrow it with `from`/`to`).
pub const EXPORT_MAX: usize = 100_000;

/// One access to a person's data.
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    /// The key's id (a prefix of its hash, never the key); `events-token` for a stream opened
    /// with an `events_url` token; `service` for what the service did on its own.
    pub key_id: String,
    /// `analysis.start`, `analysis.start_replayed`, `analysis.read`, `analysis.events`, `transactions.read`,
    /// `categories.read`, `analysis.erase`, `analysis.retention_erase`, `webhook.delivery`,
    /// `webhook.deliveries.read`, `webhook.resend`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis_id: Option<String>,
    /// The client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl From<AccessRecord> for AuditEntry {
    fn from(r: AccessRecord) -> Self {
        AuditEntry {
            at: r.at(),
            id: r.id,
            key_id: r.key_id,
            action: r.action,
            analysis_id: r.analysis_id,
            client: r.client,
        }
    }
}

/// A page of the trail.
#[derive(Serialize, ToSchema)]
pub struct AuditPageView {
    pub records: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A time bound: RFC 3339, or a date (`YYYY-MM-DD`, midnight UTC; as `to`, the whole day).
fn time(field: &'static str, v: &str, end: bool) -> Result<i64, ApiError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp_millis());
    }
    let day = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
        invalid(
            field,
            format!("{field} must be an RFC 3339 time or a date (YYYY-MM-DD)"),
        )
    })?;
    let day = if end {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    };
    Ok(day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default())
}

/// What to read of the trail: `GET`'s query parameters, or the body of the `POST`s (the only
/// way to look a person up: a CPF never goes in a URL, where proxies log it).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSearch {
    /// Only accesses to this person's data: the CPF is hashed as the trail keeps it, never
    /// stored. Body only.
    #[schema(example = "529.982.247-25")]
    pub cpf: Option<String>,
    /// Only accesses to this analysis.
    pub analysis: Option<String>,
    /// At or after this time: RFC 3339, or a date (`YYYY-MM-DD`, from its midnight UTC).
    pub from: Option<String>,
    /// Before this time: RFC 3339, or a date (its whole day included).
    pub to: Option<String>,
    /// Records per page, 1 to 1000 (100); not for exports.
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`; not for exports.
    pub cursor: Option<String>,
}

impl AuditSearch {
    /// From `GET`'s query parameters: every one known, and no CPF.
    fn from_params(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let mut s = AuditSearch::default();
        for (k, v) in params {
            match k.as_str() {
                "analysis" => s.analysis = Some(v.clone()),
                "from" => s.from = Some(v.clone()),
                "to" => s.to = Some(v.clone()),
                "limit" => {
                    s.limit =
                        Some(v.parse().map_err(|_| {
                            invalid("limit", format!("limit must be 1 to {MAX_LIMIT}"))
                        })?)
                }
                "cursor" => s.cursor = Some(v.clone()),
                "cpf" => {
                    return Err(invalid(
                        "cpf",
                        "a CPF never goes in a URL (proxies log them): send it in the body of \
                         POST /v1/audit/search or POST /v1/audit/export",
                    ))
                }
                other => {
                    return Err(ApiError::Invalid {
                        field: "query",
                        detail: format!(
                            "unknown query parameter `{}`",
                            integrations::service::without_values(other)
                        ),
                    })
                }
            }
        }
        Ok(s)
    }

    /// The store's query for `tenant`, every field checked.
    fn query(self, state: &AppState, tenant: &str, export: bool) -> Result<AuditQuery, ApiError> {
        let mut q = AuditQuery {
            tenant: Some(tenant.to_string()),
            limit: if export { EXPORT_MAX } else { DEFAULT_LIMIT },
            ..AuditQuery::default()
        };
        if let Some(a) = self.analysis {
            if a.is_empty() || a.len() > 64 {
                return Err(invalid("analysis", "analysis must be an analysis id"));
            }
            q.analysis_id = Some(a);
        }
        if let Some(c) = self.cpf {
            let cpf = Cpf::parse(&c).map_err(|e| invalid("cpf", e.to_string()))?;
            q.cpf_hash = Some(crate::analyses::run::cpf_hash(state, &cpf));
        }
        if let Some(v) = self.from {
            q.from_ms = Some(time("from", &v, false)?);
        }
        if let Some(v) = self.to {
            q.to_ms = Some(time("to", &v, true)?);
        }
        if let (Some(f), Some(t)) = (q.from_ms, q.to_ms) {
            if f >= t {
                return Err(invalid("to", "to must be after from"));
            }
        }
        if export && (self.limit.is_some() || self.cursor.is_some()) {
            return Err(invalid(
                "limit",
                "an export has no pages: narrow it with from and to instead",
            ));
        }
        if let Some(l) = self.limit {
            if !(1..=MAX_LIMIT).contains(&l) {
                return Err(invalid("limit", format!("limit must be 1 to {MAX_LIMIT}")));
            }
            q.limit = l;
        }
        if let Some(c) = self.cursor {
            q.before = Some(AuditPosition::from_cursor(&c).ok_or_else(|| {
                invalid("cursor", "cursor must be a next_cursor this API returned")
            })?);
        }
        Ok(q)
    }
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    params(
        ("analysis" = Option<String>, Query, description = "Only accesses to this analysis"),
        ("from" = Option<String>, Query, description = "At or after this time (RFC 3339, or YYYY-MM-DD)"),
        ("to" = Option<String>, Query, description = "Before this time (RFC 3339; a date includes its whole day)"),
        ("limit" = Option<usize>, Query, description = "Records per page, 1 to 1000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant's accesses, newest first", body = AuditPageView),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `audit:read`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A query parameter is malformed or unknown; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<AuditPageView>, ApiError> {
    let caller = state.auth.authorize(api_key(&headers), Scope::AuditRead)?;
    let q = AuditSearch::from_params(&params)?.query(&state, &caller.tenant, false)?;
    page(&state, q).await
}

#[utoipa::path(
    post,
    path = "/v1/audit/search",
    request_body = AuditSearch,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant's accesses that match, newest first", body = AuditPageView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `audit:read`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is malformed or unknown; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn search(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<AuditSearch>, JsonRejection>,
) -> Result<Json<AuditPageView>, ApiError> {
    let caller = state.auth.authorize(api_key(&headers), Scope::AuditRead)?;
    let Json(body) = body.map_err(rejected)?;
    let q = body.query(&state, &caller.tenant, false)?;
    page(&state, q).await
}

/// One page of the trail for `q`.
async fn page(state: &AppState, q: AuditQuery) -> Result<Json<AuditPageView>, ApiError> {
    let page = state
        .store
        .audit(q)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(AuditPageView {
        next_cursor: page.next.as_ref().map(AuditPosition::cursor),
        records: page.records.into_iter().map(AuditEntry::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/audit/export",
    params(
        ("analysis" = Option<String>, Query, description = "Only accesses to this analysis"),
        ("from" = Option<String>, Query, description = "At or after this time (RFC 3339, or YYYY-MM-DD)"),
        ("to" = Option<String>, Query, description = "Before this time (RFC 3339; a date includes its whole day)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "JSON lines, one record (as in `GET /v1/audit`) per line, newest first; at most 100,000 (narrow with from/to)", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `audit:read`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A query parameter is malformed or unknown; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.auth.authorize(api_key(&headers), Scope::AuditRead)?;
    let q = AuditSearch::from_params(&params)?.query(&state, &caller.tenant, true)?;
    Ok(lines(state, q))
}

#[utoipa::path(
    post,
    path = "/v1/audit/export",
    request_body = AuditSearch,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "JSON lines of the matching records, newest first; at most 100,000", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `audit:read`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is malformed or unknown, or `limit`/`cursor` given; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export_search(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<AuditSearch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = state.auth.authorize(api_key(&headers), Scope::AuditRead)?;
    let Json(body) = body.map_err(rejected)?;
    let q = body.query(&state, &caller.tenant, true)?;
    Ok(lines(state, q))
}

/// The records of `q` as a stream of JSON lines.
fn lines(state: Arc<AppState>, q: AuditQuery) -> Response {
    // Read page by page as the client takes them, so an export holds one page in memory.
    let pages = futures_util::stream::unfold(
        (state, q, 0usize, false),
        |(state, mut q, sent, done)| async move {
            if done || sent >= EXPORT_MAX {
                return None;
            }
            let mut page_q = q.clone();
            page_q.limit = MAX_LIMIT.min(EXPORT_MAX - sent);
            match state.store.audit(page_q).await {
                Ok(page) => {
                    let n = page.records.len();
                    let mut out = Vec::with_capacity(n * 160);
                    for r in page.records {
                        serde_json::to_writer(&mut out, &AuditEntry::from(r))
                            .expect("records serialise");
                        out.push(b'\n');
                    }
                    let done = page.next.is_none();
                    q.before = page.next;
                    Some((Ok::<_, std::io::Error>(out), (state, q, sent + n, done)))
                }
                Err(e) => {
                    // The client sees a cut stream (no final newline of a whole page).
                    tracing::error!(error = %e, "Audit export failed mid-way.");
                    Some((
                        Err(std::io::Error::other("audit store")),
                        (state, q, sent, true),
                    ))
                }
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response()
}
