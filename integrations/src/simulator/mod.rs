//! The bundled bureau simulator: serves all three partner kinds by the contract of
//! `docs/partner-api.md`, with deterministic data per CPF and settable misbehaviour.
//!
//! It stands in for the real bureaus, which cannot be reached here: the embedded shape of the
//! service calls it, and the tests use it to make a partner slow, failing, rate-limited or
//! over capacity. It enforces a concurrency `capacity` as a real contract would (requests
//! beyond it are refused with 429) and reports in `GET /stats` the highest concurrency it saw,
//! which is how the tests prove the distributed semaphore holds.
//!
//! Settings can be changed while it runs with `PUT /admin/settings`, so a test can make a
//! partner fail and then recover. The admin routes (`GET`/`PUT /admin/settings`, which hold
//! the bureaus' token, and `POST /stats/reset`) need the admin token the simulator was started
//! with (`Authorization: Bearer <token>`); started without one, they are off (403).

pub mod data;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::NaiveDate;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::contract::{DEFAULT_PAGE, MAX_PAGE};
use crate::cpf::Cpf;

/// How the simulated bureaus behave. Every field has a default, so a partial JSON body to
/// `PUT /admin/settings` changes only what it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorSettings {
    /// Base latency of every answer, in milliseconds.
    pub latency_ms: u64,
    /// Extra latency drawn uniformly from 0 to this, in milliseconds.
    pub latency_jitter_ms: u64,
    /// Share of requests answered 500.
    pub error_rate: f64,
    /// Share of requests that hang for `hang_ms` before answering (a timeout for the caller).
    pub timeout_rate: f64,
    pub hang_ms: u64,
    /// Share of requests answered 429 with `Retry-After: retry_after_s`.
    pub rate_limit_rate: f64,
    pub retry_after_s: u64,
    /// Requests in flight at once beyond which the bureau refuses with 429 (0: no limit).
    pub capacity: u64,
    /// Share of CPFs the bureaus have no record of (answered 404), chosen by CPF.
    pub missing_rate: f64,
    /// Movements per day of history; by default 2 to 20, depending on the CPF.
    pub movements_per_day: Option<f64>,
    /// The bearer token every request must carry; none means any or no token is accepted.
    pub token: Option<String>,
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        SimulatorSettings {
            latency_ms: 20,
            latency_jitter_ms: 10,
            error_rate: 0.0,
            timeout_rate: 0.0,
            hang_ms: 30_000,
            rate_limit_rate: 0.0,
            retry_after_s: 1,
            capacity: 0,
            missing_rate: 0.0,
            movements_per_day: None,
            token: None,
        }
    }
}

/// What the simulator has seen since it started or was last reset.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatorStats {
    pub requests: u64,
    pub in_flight: u64,
    /// The highest number of requests in flight at once.
    pub max_in_flight: u64,
    /// Requests refused because `capacity` was reached: a contract violation by the caller.
    pub over_capacity: u64,
    pub ok: u64,
    pub not_found: u64,
    pub server_errors: u64,
    pub rate_limited: u64,
    pub timeouts: u64,
    pub unauthorized: u64,
    /// Movements pages served, by their first movement's offset (the cursor; 0 for the
    /// first page), over every person: how often each page was asked for. At most
    /// [`MAX_PAGES_COUNTED`] offsets are counted.
    #[serde(default)]
    pub pages_served: std::collections::BTreeMap<u64, u64>,
}

/// Distinct page offsets [`SimulatorStats::pages_served`] counts at most: any cursor a client
/// sends is an offset, and the map must not grow with them.
pub const MAX_PAGES_COUNTED: usize = 10_000;

#[derive(Default)]
struct Counters {
    pages_served: std::sync::Mutex<std::collections::BTreeMap<u64, u64>>,
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    over_capacity: AtomicU64,
    ok: AtomicU64,
    not_found: AtomicU64,
    server_errors: AtomicU64,
    rate_limited: AtomicU64,
    timeouts: AtomicU64,
    unauthorized: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SimulatorStats {
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        SimulatorStats {
            requests: l(&self.requests),
            in_flight: l(&self.in_flight),
            max_in_flight: l(&self.max_in_flight),
            over_capacity: l(&self.over_capacity),
            ok: l(&self.ok),
            not_found: l(&self.not_found),
            server_errors: l(&self.server_errors),
            rate_limited: l(&self.rate_limited),
            timeouts: l(&self.timeouts),
            unauthorized: l(&self.unauthorized),
            pages_served: self.pages_served.lock().expect("pages lock").clone(),
        }
    }

    fn count_page(&self, offset: usize) {
        let mut pages = self.pages_served.lock().expect("pages lock");
        let offset = offset as u64;
        if pages.len() < MAX_PAGES_COUNTED || pages.contains_key(&offset) {
            *pages.entry(offset).or_default() += 1;
        }
    }

    fn reset(&self) {
        for a in [
            &self.requests,
            &self.max_in_flight,
            &self.over_capacity,
            &self.ok,
            &self.not_found,
            &self.server_errors,
            &self.rate_limited,
            &self.timeouts,
            &self.unauthorized,
        ] {
            a.store(0, Ordering::SeqCst);
        }
        self.pages_served.lock().expect("pages lock").clear();
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Sim {
    settings: Arc<RwLock<SimulatorSettings>>,
    counters: Arc<Counters>,
    /// The SHA-256 of the admin token; `None`: the admin routes are off.
    admin: Option<[u8; 32]>,
}

/// Counts a request in flight for as long as it lives, even when the caller hangs up and the
/// handler is dropped mid-way.
struct InFlight(Arc<Counters>);

impl InFlight {
    fn enter(counters: &Arc<Counters>) -> (Self, u64) {
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        (InFlight(counters.clone()), now)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The simulator's routes; the admin routes need `admin_token` (off without one).
pub fn router(settings: SimulatorSettings, admin_token: Option<&str>) -> Router {
    let sim = Sim {
        settings: Arc::new(RwLock::new(settings)),
        counters: Arc::default(),
        admin: admin_token.map(crate::auth::secret_hash),
    };
    let admin = Router::new()
        .route("/stats/reset", axum::routing::post(reset))
        .route("/admin/settings", put(update_settings).get(read_settings))
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            admin_only,
        ));
    Router::new()
        .route("/v1/consumers/{cpf}", get(consumer))
        .route("/v1/ratings/{cpf}", get(rating))
        .route("/v1/movements/{cpf}", get(movements))
        .route("/stats", get(stats))
        .merge(admin)
        .with_state(sim)
}

/// Lets a request through to an admin route only with the admin token.
async fn admin_only(
    State(sim): State<Sim>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(expected) = &sim.admin else {
        return problem(
            StatusCode::FORBIDDEN,
            "the admin routes are off: start the simulator with an admin token",
        );
    };
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    match presented {
        Some(token)
            if crate::auth::constant_time_eq(&crate::auth::secret_hash(token), expected) =>
        {
            next.run(request).await
        }
        _ => problem(
            StatusCode::UNAUTHORIZED,
            "the admin routes need `Authorization: Bearer <admin token>`",
        ),
    }
}

/// Binds `addr` and serves until `shutdown` completes; returns the bound address first through
/// `ready` so callers can use port 0. The admin routes need `admin_token` (off without one).
pub async fn serve(
    addr: SocketAddr,
    settings: SimulatorSettings,
    admin_token: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(settings, admin_token);
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((local, handle))
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        Json(serde_json::json!({"title": status.canonical_reason(), "status": status.as_u16(), "detail": detail})),
    )
        .into_response()
}

fn retry_after(status: StatusCode, seconds: u64) -> Response {
    let mut r = problem(status, "over the partner's limit");
    r.headers_mut().insert(
        "retry-after",
        HeaderValue::from_str(&seconds.to_string()).expect("digits"),
    );
    r
}

/// Everything every bureau route does before answering: auth, capacity, latency, faults.
/// `Err` carries the answer to give instead of the data.
async fn misbehave(sim: &Sim, headers: &HeaderMap, cpf: &str) -> Result<(InFlight, Cpf), Response> {
    let c = &sim.counters;
    c.requests.fetch_add(1, Ordering::SeqCst);
    let (guard, now) = InFlight::enter(c);
    let s = sim.settings.read().expect("settings lock").clone();
    if let Some(token) = &s.token {
        let expected = format!("Bearer {token}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            c.unauthorized.fetch_add(1, Ordering::SeqCst);
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
            ));
        }
    }
    if s.capacity > 0 && now > s.capacity {
        c.over_capacity.fetch_add(1, Ordering::SeqCst);
        return Err(retry_after(StatusCode::TOO_MANY_REQUESTS, 1));
    }
    let (latency, roll_error, roll_timeout, roll_429) = {
        let mut r = rand::rng();
        let jitter = if s.latency_jitter_ms > 0 {
            r.random_range(0..=s.latency_jitter_ms)
        } else {
            0
        };
        (
            s.latency_ms + jitter,
            r.random::<f64>(),
            r.random::<f64>(),
            r.random::<f64>(),
        )
    };
    if roll_timeout < s.timeout_rate {
        c.timeouts.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(s.hang_ms)).await;
        return Err(problem(StatusCode::GATEWAY_TIMEOUT, "took too long"));
    }
    tokio::time::sleep(Duration::from_millis(latency)).await;
    if roll_429 < s.rate_limit_rate {
        c.rate_limited.fetch_add(1, Ordering::SeqCst);
        return Err(retry_after(StatusCode::TOO_MANY_REQUESTS, s.retry_after_s));
    }
    if roll_error < s.error_rate {
        c.server_errors.fetch_add(1, Ordering::SeqCst);
        return Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulated failure",
        ));
    }
    let cpf = Cpf::parse(cpf).map_err(|e| problem(StatusCode::BAD_REQUEST, &e.to_string()))?;
    if data::is_missing(&cpf, s.missing_rate) {
        c.not_found.fetch_add(1, Ordering::SeqCst);
        return Err(problem(StatusCode::NOT_FOUND, "no record of this CPF"));
    }
    Ok((guard, cpf))
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

async fn consumer(State(sim): State<Sim>, Path(cpf): Path<String>, headers: HeaderMap) -> Response {
    match misbehave(&sim, &headers, &cpf).await {
        Ok((_guard, cpf)) => {
            sim.counters.ok.fetch_add(1, Ordering::SeqCst);
            Json(data::consumer(&cpf, today())).into_response()
        }
        Err(r) => r,
    }
}

async fn rating(State(sim): State<Sim>, Path(cpf): Path<String>, headers: HeaderMap) -> Response {
    match misbehave(&sim, &headers, &cpf).await {
        Ok((_guard, cpf)) => {
            sim.counters.ok.fetch_add(1, Ordering::SeqCst);
            Json(data::rating(&cpf, today())).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct PageQuery {
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

async fn movements(
    State(sim): State<Sim>,
    Path(cpf): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let (_guard, cpf) = match misbehave(&sim, &headers, &cpf).await {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let today = today();
    let date = |s: &Option<String>, default: NaiveDate, name: &str| -> Result<NaiveDate, String> {
        match s {
            None => Ok(default),
            Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| format!("`{name}` must be YYYY-MM-DD")),
        }
    };
    let (from, to) = match (
        date(&q.from, today - chrono::Duration::days(90), "from"),
        date(&q.to, today, "to"),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return problem(StatusCode::BAD_REQUEST, &e),
    };
    if from > to || (to - from).num_days() > 366 {
        return problem(
            StatusCode::BAD_REQUEST,
            "the window must run forwards and span at most 366 days",
        );
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return problem(StatusCode::BAD_REQUEST, "`limit` must be 1 to 1000");
    }
    let cursor = match q.cursor.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "`cursor` is not one this bureau gave",
            )
        }
    };
    let per_day = sim
        .settings
        .read()
        .expect("settings lock")
        .movements_per_day;
    sim.counters.ok.fetch_add(1, Ordering::SeqCst);
    sim.counters.count_page(cursor);
    Json(data::movements_page(
        &cpf,
        from,
        to,
        cursor,
        limit as usize,
        per_day,
        today,
    ))
    .into_response()
}

async fn stats(State(sim): State<Sim>) -> Json<SimulatorStats> {
    Json(sim.counters.snapshot())
}

async fn reset(State(sim): State<Sim>) -> StatusCode {
    sim.counters.reset();
    StatusCode::NO_CONTENT
}

async fn read_settings(State(sim): State<Sim>) -> Json<SimulatorSettings> {
    Json(sim.settings.read().expect("settings lock").clone())
}

async fn update_settings(State(sim): State<Sim>, Json(patch): Json<serde_json::Value>) -> Response {
    let mut current = serde_json::to_value(&*sim.settings.read().expect("settings lock"))
        .expect("settings serialise");
    match (current.as_object_mut(), patch.as_object()) {
        (Some(cur), Some(p)) => {
            for (k, v) in p {
                cur.insert(k.clone(), v.clone());
            }
        }
        _ => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "expected a JSON object of settings",
            )
        }
    }
    match serde_json::from_value::<SimulatorSettings>(current) {
        Ok(new) => {
            *sim.settings.write().expect("settings lock") = new.clone();
            Json(new).into_response()
        }
        Err(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}
