//! The integrations service of the distributed shape: the gateway over HTTP.
//!
//! - `POST /v1/partner-requests` `{"request_id", "partner", "cpf", "params", "callback_url"}`
//!   (and optionally `"fresh": true` to skip the answer cache, `"cache_scope"` to keep one
//!   caller's clients' cached answers apart): `200` with the outcome when it could be had at
//!   once (from the cache, it says `"cached": {"stored_at", "age_secs"}`), `202` when queued;
//!   every queued request ends with exactly one `POST callback_url` of the outcome
//!   `{"request_id", "partner", "status": "ok"|"failed", "data"|"error", "attempts"}`.
//! - `GET /v1/partners`: breaker state, permits in use, rate, counters, queue depth, dead letters.
//! - `GET /v1/dead-letters`, `POST /v1/dead-letters/replay[?id=ID]`.
//! - `GET /healthz`, `GET /readyz` (Redis answers), `GET /metrics` (Prometheus text; a
//!   caller's secret or `METRICS_TOKEN`, which opens nothing else).
//!
//! Every route but `/healthz` and `/readyz` needs a configured caller's secret
//! (`Authorization: Bearer`, see [`crate::auth`]), and a caller's callback URLs may point only
//! at its own hosts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::watch;

use crate::cpf::Cpf;
use crate::gateway::{Gateway, PartnerRequest, Submitted};
use crate::metrics::prometheus_text;
use crate::partner::RequestParams;
use crate::queue::RetryQueue;

/// The one error type of the HTTP API: a 4xx tells the client what it did wrong; a 5xx says
/// only that something went wrong, and the cause goes to the log.
#[derive(Debug)]
pub enum ApiError {
    /// No secret, or not a caller's: 401.
    Unauthenticated,
    /// The body could not be read as the JSON asked for: 400 (syntax), 415 (content type),
    /// 413 (size) or 422 (shape), as axum classifies it.
    Rejected(StatusCode, String),
    Unprocessable {
        field: &'static str,
        detail: String,
    },
    Internal(String),
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail, field) = match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "send a caller's secret as `Authorization: Bearer <secret>`".to_string(),
                None,
            ),
            // A refusal may quote what was refused (serde's reasons do): never the value.
            ApiError::Rejected(status, d) => (status, without_values(&d), None),
            ApiError::Unprocessable { field, detail } => {
                (StatusCode::UNPROCESSABLE_ENTITY, detail, Some(field))
            }
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "Request failed.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong".to_string(),
                    None,
                )
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "Request refused: a store is unavailable.");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service cannot take requests now".to_string(),
                    None,
                )
            }
        };
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason(),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let Some(f) = field {
            body["field"] = f.into();
        }
        let mut response = (
            status,
            [("content-type", "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            // What to send instead, as HTTP asks of a 401.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Makes a 4xx that something other than an `ApiError` answered (an extractor refusing a
/// malformed path or query string, a route that does not exist) a problem document with the
/// same status and reason, so that clients parse one error format. Its other headers
/// (`Allow`) stay. core-api's router uses it too.
pub async fn problems_only(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !status.is_client_error() || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    // These reasons are a line of text; a longer body is not one of them.
    let detail = axum::body::to_bytes(body, 2048)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| match status {
            StatusCode::NOT_FOUND => "no such route".to_string(),
            StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method".to_string(),
            _ => "the request was refused".to_string(),
        });
    let mut problem = ApiError::Rejected(status, detail).into_response();
    for name in parts.headers.keys() {
        let ours = name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH;
        if !ours && !problem.headers().contains_key(name) {
            for value in parts.headers.get_all(name) {
                problem.headers_mut().append(name, value.clone());
            }
        }
    }
    problem
}

/// A serde reason without the value it quotes: `invalid type: integer `52998224725`,
/// expected a string` becomes `invalid type: integer, expected a string`. A refused value
/// may be a CPF or a name, and error messages never carry personal data; what was expected,
/// and where, stay.
pub fn without_values(reason: &str) -> String {
    let mut out = reason.to_string();
    for kind in [
        "invalid type: ",
        "invalid value: ",
        "unknown variant ",
        "unknown field ",
    ] {
        let Some(start) = out.find(kind) else {
            continue;
        };
        let after = start + kind.len();
        let len = out[after..].find(", expected").unwrap_or(out.len() - after);
        // What sort of value it was (`integer`, `string`), never the value.
        let sort = out[after..after + len]
            .split([' ', '`', '"'])
            .next()
            .filter(|w| !w.is_empty())
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        let head = kind.trim_end_matches([' ', ':']);
        out = format!("{}{head}{sort}{}", &out[..start], &out[after + len..]);
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    request_id: String,
    partner: String,
    cpf: String,
    #[serde(default)]
    params: RequestParams,
    callback_url: String,
    /// Ask the partner even if a cached answer would do.
    #[serde(default)]
    fresh: bool,
    /// Whose answers these are, within this caller (the core API sends the tenant): a cached
    /// answer is reused only for the same caller and scope.
    #[serde(default)]
    cache_scope: String,
}

/// The service's routes over a gateway: health and readiness open, the rest for callers.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let callers_only = Router::new()
        .route("/v1/partner-requests", post(partner_request))
        .route("/v1/partners", get(partners))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/dead-letters/replay", post(replay))
        .route("/v1/erasures", post(erase))
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            authenticate,
        ));
    Router::new()
        .merge(callers_only)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(problems_only))
        .with_state(gateway)
}

/// The caller a request authenticated as, for the handlers.
#[derive(Clone)]
struct Caller {
    /// Its jobs' ids start with `{name}/`.
    name: Arc<str>,
    callback_hosts: Arc<[String]>,
}

impl Caller {
    /// The start of its jobs' ids.
    fn scope(&self) -> String {
        format!("{}/", self.name)
    }
}

/// Lets a request through only with a configured caller's secret.
async fn authenticate(
    State(gw): State<Arc<Gateway>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
        .ok_or(ApiError::Unauthenticated)?;
    let caller =
        crate::auth::caller(&gw.config().callers, presented).ok_or(ApiError::Unauthenticated)?;
    request.extensions_mut().insert(Caller {
        name: caller.name.as_str().into(),
        callback_hosts: caller.callback_hosts.clone().into(),
    });
    Ok(next.run(request).await)
}

async fn partner_request(
    State(gw): State<Arc<Gateway>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<RequestBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::Rejected(e.status(), e.body_text()))?;
    let field = |field: &'static str, detail: &str| ApiError::Unprocessable {
        field,
        detail: detail.into(),
    };
    // The id goes into logs, metrics and Redis keys: letters, digits, `.`, `_` and `-` only,
    // so no caller can forge a log line or reach into another key.
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if body.request_id.is_empty()
        || body.request_id.len() > 128
        || !body.request_id.chars().all(safe)
    {
        return Err(field(
            "request_id",
            "must be 1 to 128 ASCII letters, digits, `.`, `_` or `-`",
        ));
    }
    if gw.partner(&body.partner).is_none() {
        return Err(field("partner", "no partner of that name is configured"));
    }
    let cpf = Cpf::parse(&body.cpf).map_err(|e| field("cpf", &e.to_string()))?;
    match reqwest::Url::parse(&body.callback_url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            if !crate::auth::callback_allowed(&caller.callback_hosts, &u) {
                return Err(field(
                    "callback_url",
                    "must point at one of this caller's callback hosts",
                ));
            }
        }
        _ => return Err(field("callback_url", "must be an http or https URL")),
    }
    if body
        .params
        .limit
        .is_some_and(|l| l == 0 || l > crate::contract::MAX_PAGE)
    {
        return Err(field("params.limit", "must be 1 to 1000"));
    }
    if body.cache_scope.len() > 128 {
        return Err(field("cache_scope", "must be at most 128 characters"));
    }
    let submitted = gw
        .submit(PartnerRequest {
            caller: caller.name.to_string(),
            request_id: body.request_id.clone(),
            partner: body.partner.clone(),
            cpf,
            params: body.params,
            callback_url: Some(body.callback_url),
            fresh: body.fresh,
            // One caller's cached answers are never another's.
            cache_scope: format!("{}/{}", caller.name, body.cache_scope),
        })
        .await
        .map_err(|e| match e {
            crate::IntegrationError::QueueFull(_) | crate::IntegrationError::Redis(_) => {
                ApiError::Unavailable(e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        })?;
    Ok(match submitted {
        Submitted::Now(outcome) => (StatusCode::OK, Json(outcome)).into_response(),
        Submitted::Queued {
            reason, retry_in, ..
        } => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "request_id": body.request_id,
                "partner": body.partner,
                "status": "queued",
                "reason": reason.as_str(),
                "next_attempt_in_ms": retry_in.as_millis() as u64,
            })),
        )
            .into_response(),
    })
}

async fn partners(State(gw): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    let status = gw
        .status()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(status).into_response())
}

/// The caller's own dead letters.
async fn dead_letters(
    State(gw): State<Arc<Gateway>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let dead = gw
        .queue()
        .dead_letters(1000, &caller.scope())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(dead).into_response())
}

#[derive(Deserialize)]
struct ReplayQuery {
    id: Option<String>,
}

/// Replays the caller's own dead letters: one by id, or all.
async fn replay(
    State(gw): State<Arc<Gateway>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<ReplayQuery>,
) -> Result<Response, ApiError> {
    let n = gw
        .queue()
        .replay(q.id.as_deref(), &caller.scope())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(serde_json::json!({"replayed": n})).into_response())
}

/// An erasure: what the caller's requests for one analysis left here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureBody {
    /// The `cache_scope` the analysis's requests were sent with.
    cache_scope: String,
    /// The analysis's request ids start with this (at least 8 characters, so an erasure can
    /// never sweep a caller's whole queue).
    request_prefix: String,
}

/// Forgets the caller's cached answers within a scope, and its queued requests and dead
/// letters of one analysis.
async fn erase(
    State(gw): State<Arc<Gateway>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<ErasureBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::Rejected(e.status(), e.body_text()))?;
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if body.request_prefix.len() < 8
        || body.request_prefix.len() > 128
        || !body.request_prefix.chars().all(safe)
    {
        return Err(ApiError::Unprocessable {
            field: "request_prefix",
            detail: "must be 8 to 128 ASCII letters, digits, `.`, `_` or `-`".into(),
        });
    }
    if body.cache_scope.len() > 128 {
        return Err(ApiError::Unprocessable {
            field: "cache_scope",
            detail: "must be at most 128 characters".into(),
        });
    }
    let (cached, queued) = gw
        .erase(
            &caller.name,
            &format!("{}/{}", caller.name, body.cache_scope),
            &body.request_prefix,
        )
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(serde_json::json!({"cached": cached, "queued": queued})).into_response())
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> StatusCode {
    if gw.ready().await {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The metrics, for a caller or the holder of `METRICS_TOKEN` (a Prometheus server, which
/// can then read counters but never ask for a record).
async fn metrics(
    State(gw): State<Arc<Gateway>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
        .ok_or(ApiError::Unauthenticated)?;
    let config = gw.config();
    let token = config.metrics_token.as_ref().is_some_and(|t| {
        crate::auth::constant_time_eq(
            &crate::auth::secret_hash(t.expose()),
            &crate::auth::secret_hash(presented),
        )
    });
    if !token && crate::auth::caller(&config.callers, presented).is_none() {
        return Err(ApiError::Unauthenticated);
    }
    let status = gw
        .status()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok((
        [("content-type", "text/plain; version=0.0.4")],
        prometheus_text(&status),
    )
        .into_response())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// A running integrations service.
pub struct Service {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Binds `addr` (port 0 picks a free one), starts the worker and serves; refuses to start
    /// when no caller is configured.
    pub async fn start(gateway: Arc<Gateway>, addr: SocketAddr) -> std::io::Result<Self> {
        // Secure by default: a service nobody is allowed to call would answer anyone.
        if gateway.config().callers.is_empty() {
            return Err(std::io::Error::other(
                "no [[callers]] in the configuration: integrations serve needs at least one \
                 caller with a secret",
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(false);
        let worker = tokio::spawn(gateway.clone().run_worker(rx.clone()));
        let config = gateway.config();
        let limits = crate::front::FrontLimits {
            max_connections: config.max_connections.max(1),
            header_read: Duration::from_millis(config.header_read_ms.max(1)),
            drain: Duration::from_secs(30),
        };
        let router = router(gateway);
        let server = tokio::spawn(crate::front::serve(listener, limits, rx, move |s, stop| {
            crate::front::hyper_connection(s, router.clone(), limits.header_read, stop)
        }));
        Ok(Service {
            addr,
            shutdown: tx,
            server,
            worker,
        })
    }

    /// Stops taking requests, has the worker give its jobs in hand back to the queue (see
    /// [`Gateway::run_worker`]) and waits for both.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.worker.await;
        let _ = self.server.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only
    struct Body {
        cpf: String,
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize)]
    enum Kind {
        A,
    }

    fn reason(json: &str) -> String {
        without_values(&serde_json::from_str::<Body>(json).unwrap_err().to_string())
    }

    #[test]
    fn a_refused_value_leaves_the_reason_and_the_rest_stays() {
        assert_eq!(
            reason(r#"{"cpf": 52998224725}"#),
            "invalid type: integer, expected a string at line 1 column 19"
        );
        assert_eq!(
            reason(r#"{"cpf": "x", "kind": "52998224725"}"#),
            "unknown variant, expected `A` at line 1 column 34"
        );
        assert!(reason(r#"{"52998224725": 1}"#).starts_with("unknown field, expected"));
        assert_eq!(without_values("missing field `cpf`"), "missing field `cpf`");
    }

    proptest::proptest! {
        /// Whatever value a client sends where a string or a variant was expected, the
        /// reason does not repeat it.
        #[test]
        fn no_refused_value_is_repeated(value in "[0-9]{6,14}|[A-Z][A-Z ]{4,18}[A-Z]", as_key: bool) {
            let json = if as_key {
                format!(r#"{{"{value}": 1}}"#)
            } else {
                format!(r#"{{"cpf": "x", "kind": "{value}"}}"#)
            };
            let r = reason(&json);
            proptest::prop_assert!(!r.contains(&value), "{}", r);
            let number = format!(r#"{{"cpf": {value}}}"#);
            if value.bytes().all(|b| b.is_ascii_digit()) {
                let r = reason(&number);
                proptest::prop_assert!(!r.contains(&value), "{}", r);
            }
        }
    }
}
