//! The integrations service as separate OS processes sharing one Redis, against the bundled
//! simulator (a stand-in for the bureaus, which cannot be reached here) over real HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use integrations::queue::Outcome;
use integrations::simulator::data::person_with_record;
use integrations::simulator::{self, SimulatorSettings, SimulatorStats};

mod common;
use common::{free_port, redis_url, trickling_and_idle_connections_are_closed, KeyPrefix};

/// The tests' secret as the service's caller `test`.
const CALLER_SECRET: &str = "test-caller-secret-0123456789";
/// The secret of a second caller, `other`, for configurations that name it.
const OTHER_SECRET: &str = "other-caller-secret-0123456789";
const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

/// An HTTP client that calls as the configured caller `test`.
fn caller() -> reqwest::Client {
    caller_with(CALLER_SECRET)
}

/// An HTTP client that calls with `secret`.
fn caller_with(secret: &str) -> reqwest::Client {
    let bearer = format!("Bearer {secret}");
    reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            bearer.parse().unwrap(),
        )]))
        .build()
        .unwrap()
}

struct ServiceProcess {
    child: Child,
    url: String,
}

impl ServiceProcess {
    async fn start(config: &std::path::Path, prefix: &str) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_integrations"))
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--port",
                &port.to_string(),
            ])
            .env("REDIS_URL", redis_url())
            .env("KEY_PREFIX", prefix)
            .env("TEST_CALLER_SECRET", CALLER_SECRET)
            .env("OTHER_CALLER_SECRET", OTHER_SECRET)
            .env("QUEUE_KEY", "test-queue-key-0123456789abcdef-0123456789")
            .env("METRICS_TOKEN", METRICS_TOKEN)
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = caller();
        for _ in 0..100 {
            if http.get(format!("{url}/healthz")).send().await.is_ok() {
                return ServiceProcess { child, url };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the integrations service did not start");
    }

    /// kill -9: no shutdown, no release, no goodbye.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects the outcomes POSTed to its callback URL.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Outcome>>>,
}

impl Receiver {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<Outcome>>> = Arc::default();
        let sink = got.clone();
        let app = Router::new().route(
            "/callback",
            post(move |Json(o): Json<Outcome>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(o);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/callback"),
            got,
        }
    }

    /// The outcomes received once there are `n`, or after 20 s.
    async fn wait_for(&self, n: usize) -> Vec<Outcome> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.got.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.got.lock().unwrap().clone()
    }
}

async fn simulator(settings: SimulatorSettings) -> SocketAddr {
    simulator::serve(
        "127.0.0.1:0".parse().unwrap(),
        settings,
        None,
        std::future::pending(),
    )
    .await
    .unwrap()
    .0
}

async fn sim_stats(addr: SocketAddr) -> SimulatorStats {
    reqwest::get(format!("http://{addr}/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn config_file(sim: SocketAddr, max_concurrency: u32, lease_ms: u64) -> tempfile::TempPath {
    config_file_with(sim, max_concurrency, lease_ms, "")
}

/// As [`config_file`], with `top` (settings of the top table) added.
fn config_file_with(
    sim: SocketAddr,
    max_concurrency: u32,
    lease_ms: u64,
    top: &str,
) -> tempfile::TempPath {
    let text = format!(
        r#"
        lease_ms = {lease_ms}
        {top}

        [[callers]]
        name = "test"
        secret_env = "TEST_CALLER_SECRET"
        callback_hosts = ["127.0.0.1"]

        [[partners]]
        name = "bureau"
        kind = "consumer"
        base_url = "http://{sim}"
        max_concurrency = {max_concurrency}
        rate_per_sec = 10000
        timeout_ms = 3000
        retry = {{ max_attempts = 8, base_ms = 20, cap_ms = 200 }}
        "#
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file.into_temp_path()
}

/// Sends `n` requests spread over `services`; returns the outcomes answered at once.
async fn fire(services: &[String], n: usize, callback: &str, tag: &str) -> Vec<Outcome> {
    let http = caller();
    let mut calls = Vec::new();
    for i in 0..n {
        let url = format!("{}/v1/partner-requests", services[i % services.len()]);
        let body = serde_json::json!({
            "request_id": format!("{tag}-{i}"),
            "partner": "bureau",
            "cpf": person_with_record(100_000 + i as u32).digits(),
            "callback_url": callback,
        });
        let http = http.clone();
        calls.push(tokio::spawn(async move {
            http.post(url).json(&body).send().await.unwrap()
        }));
    }
    let mut now = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        match r.status().as_u16() {
            200 => now.push(r.json::<Outcome>().await.unwrap()),
            202 => {}
            s => panic!("unexpected {s}: {}", r.text().await.unwrap()),
        }
    }
    now
}

/// Waits until every request of `n` has an outcome (at once or by callback); returns the
/// number of outcomes per request id.
async fn all_outcomes(
    now: &[Outcome],
    receiver: &Receiver,
    n: usize,
    within: Duration,
) -> HashMap<String, usize> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for o in now.iter().chain(receiver.got.lock().unwrap().iter()) {
            assert_eq!(o.status, "ok", "{o:?}");
            *counts.entry(o.request_id.clone()).or_default() += 1;
        }
        if counts.len() == n || tokio::time::Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_processes_never_exceed_the_partners_concurrency_together() {
    const LIMIT: u32 = 3;
    let sim = simulator(SimulatorSettings {
        latency_ms: 30,
        latency_jitter_ms: 20,
        capacity: LIMIT as u64,
        ..SimulatorSettings::default()
    })
    .await;
    let config = config_file(sim, LIMIT, 5000);
    let prefix = KeyPrefix::new("svc");
    let mut services = Vec::new();
    for _ in 0..3 {
        services.push(ServiceProcess::start(&config, &prefix).await);
    }
    let receiver = Receiver::start().await;
    let urls: Vec<String> = services.iter().map(|s| s.url.clone()).collect();
    let now = fire(&urls, 90, &receiver.url, "hammer").await;
    let counts = all_outcomes(&now, &receiver, 90, Duration::from_secs(60)).await;
    assert_eq!(counts.len(), 90, "every request got its outcome");
    assert!(
        counts.values().all(|&c| c == 1),
        "no request was answered twice: {counts:?}"
    );
    let stats = sim_stats(sim).await;
    assert_eq!(
        stats.over_capacity, 0,
        "the partner never refused for capacity"
    );
    assert!(
        stats.max_in_flight <= LIMIT as u64,
        "the partner saw {} at once",
        stats.max_in_flight
    );
    assert!(
        stats.max_in_flight >= 2,
        "the test did load the partner concurrently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instances_permits_and_jobs_go_to_another_instance_and_nothing_is_lost_or_repeated(
) {
    const LIMIT: u32 = 2;
    let sim = simulator(SimulatorSettings {
        latency_ms: 150,
        latency_jitter_ms: 50,
        capacity: LIMIT as u64,
        ..SimulatorSettings::default()
    })
    .await;
    let config = config_file(sim, LIMIT, 1000);
    let prefix = KeyPrefix::new("svc");
    let mut a = ServiceProcess::start(&config, &prefix).await;
    let b = ServiceProcess::start(&config, &prefix).await;
    let receiver = Receiver::start().await;

    // Everything goes to A: two calls run at once, the rest wait in the shared queue.
    let now = fire(std::slice::from_ref(&a.url), 24, &receiver.url, "kill").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        receiver.got.lock().unwrap().len() < 20,
        "A was killed mid-way"
    );
    a.kill();

    let counts = all_outcomes(&now, &receiver, 24, Duration::from_secs(60)).await;
    assert_eq!(counts.len(), 24, "B delivered what A left");
    assert!(
        counts.values().all(|&c| c == 1),
        "no request was delivered twice: {counts:?}"
    );
    let stats = sim_stats(sim).await;
    assert_eq!(
        stats.over_capacity, 0,
        "A's permits were not handed out twice"
    );
    assert!(stats.max_in_flight <= LIMIT as u64);
    drop(b);
}

#[tokio::test]
async fn bad_requests_get_problem_json_naming_the_field() {
    let sim = simulator(SimulatorSettings::default()).await;
    let config = config_file(sim, 2, 5000);
    let prefix = KeyPrefix::new("svc");
    let service = ServiceProcess::start(&config, &prefix).await;
    let http = caller();
    let url = format!("{}/v1/partner-requests", service.url);
    let good = serde_json::json!({
        "request_id": "r1", "partner": "bureau", "cpf": "529.982.247-25",
        "callback_url": "http://127.0.0.1:1/cb",
    });
    let cases = [
        (
            serde_json::json!({"cpf": "529.982.247-24"}),
            422,
            Some("cpf"),
        ),
        (
            serde_json::json!({"partner": "nobody"}),
            422,
            Some("partner"),
        ),
        (
            serde_json::json!({"callback_url": "ftp://x"}),
            422,
            Some("callback_url"),
        ),
        (serde_json::json!({"surprise": 1}), 422, None),
        // Control characters would forge log lines; `:` would reach into other keys.
        (
            serde_json::json!({"request_id": "r1\nlevel=ERROR forged"}),
            422,
            Some("request_id"),
        ),
        (
            serde_json::json!({"request_id": "r1:x"}),
            422,
            Some("request_id"),
        ),
    ];
    for (patch, status, field) in cases {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{patch}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: serde_json::Value = r.json().await.unwrap();
        if let Some(f) = field {
            assert_eq!(problem["field"], f);
        }
        assert!(
            !problem.to_string().contains("52998224"),
            "the CPF is not echoed"
        );
    }
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http.post(&url).body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = http
        .get(format!("{}/v1/partners", service.url))
        .send()
        .await
        .unwrap();
    let status: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status["partners"][0]["name"], "bureau");
    assert_eq!(status["partners"][0]["breaker"], "closed");
    let metrics = http
        .get(format!("{}/metrics", service.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("integrations_breaker_state{partner=\"bureau\"} 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_instance_gives_its_jobs_back_at_once() {
    const LIMIT: u32 = 1;
    let sim = simulator(SimulatorSettings {
        latency_ms: 100,
        latency_jitter_ms: 0,
        ..SimulatorSettings::default()
    })
    .await;
    // A 30 s lease: if A's jobs came back only when their leases ran out, B would need 30 s.
    let config = config_file(sim, LIMIT, 30_000);
    let prefix = KeyPrefix::new("svc");
    let a = ServiceProcess::start(&config, &prefix).await;
    let receiver = Receiver::start().await;
    let now = fire(std::slice::from_ref(&a.url), 12, &receiver.url, "stop").await;
    // Queued requests are due after a second; by 1.4 s A's worker holds them, one running
    // and the rest waiting for the single permit.
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let done = receiver.got.lock().unwrap().len() + now.len();
    assert!(
        done < 10,
        "A still holds jobs when it is stopped ({done} done)"
    );
    // SIGTERM: a graceful stop.
    let status = Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let b = ServiceProcess::start(&config, &prefix).await;
    let counts = all_outcomes(&now, &receiver, 12, Duration::from_secs(15)).await;
    assert_eq!(
        counts.len(),
        12,
        "B delivered A's jobs well before their leases ran out"
    );
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
    drop((a, b));
}

#[tokio::test]
async fn a_connection_that_trickles_its_request_head_or_sits_idle_is_closed() {
    let sim = simulator(SimulatorSettings::default()).await;
    let config = config_file_with(sim, 2, 5000, "header_read_ms = 1000");
    let prefix = KeyPrefix::new("svc");
    let service = ServiceProcess::start(&config, &prefix).await;
    let addr = service.url.trim_start_matches("http://");
    trickling_and_idle_connections_are_closed(addr).await;
}

#[tokio::test]
async fn over_its_connection_cap_the_service_answers_503_at_once_instead_of_stalling() {
    let sim = simulator(SimulatorSettings::default()).await;
    let config = config_file_with(sim, 2, 5000, "max_connections = 2");
    let prefix = KeyPrefix::new("svc");
    let service = ServiceProcess::start(&config, &prefix).await;
    let addr = service.url.trim_start_matches("http://").to_string();
    // Two connections that say nothing hold both places (for up to header_read_ms, 10 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet: Vec<tokio::net::TcpStream> = vec![
        tokio::net::TcpStream::connect(&addr).await.unwrap(),
        tokio::net::TcpStream::connect(&addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = tokio::time::timeout(
        Duration::from_secs(3),
        reqwest::get(format!("{}/healthz", service.url)),
    )
    .await
    .expect("a full service answers at once, not after a place frees up")
    .unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    assert_eq!(third.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["status"], 503);

    drop(quiet);
    let mut status = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = reqwest::get(format!("{}/healthz", service.url))
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "places free again once connections close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_keeps_failing_or_redirects_gets_a_few_tries_then_its_job_is_a_dead_letter()
{
    // Where a redirect would lead: it must never be reached.
    let elsewhere = Receiver::start().await;
    // Calls per callback path; `/fails` answers 500, `/moves` redirects to `elsewhere`.
    let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (count_fails, count_moves) = (calls.clone(), calls.clone());
    let target = elsewhere.url.clone();
    let app = Router::new()
        .route(
            "/fails",
            post(move || {
                *count_fails
                    .lock()
                    .unwrap()
                    .entry("fails".into())
                    .or_default() += 1;
                async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
            }),
        )
        .route(
            "/moves",
            post(move || {
                *count_moves
                    .lock()
                    .unwrap()
                    .entry("moves".into())
                    .or_default() += 1;
                let to = target.clone();
                async move { axum::response::Redirect::temporary(&to) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callbacks = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // One permit and slow answers: of the requests sent at once, all but one are queued and
    // their outcomes go to the callbacks.
    let sim = simulator(SimulatorSettings {
        latency_ms: 300,
        ..SimulatorSettings::default()
    })
    .await;
    let config = config_file_with(sim, 1, 5000, "max_deliveries = 3");
    let prefix = KeyPrefix::new("svc");
    let service = ServiceProcess::start(&config, &prefix).await;
    let http = caller();
    let sends: Vec<_> = (0..4)
        .map(|i| {
            let path = if i % 2 == 0 { "fails" } else { "moves" };
            let send = http
                .post(format!("{}/v1/partner-requests", service.url))
                .json(&serde_json::json!({
                    "request_id": format!("cb-{i}"),
                    "partner": "bureau",
                    "cpf": person_with_record(200_000 + i).digits(),
                    "callback_url": format!("{callbacks}/{path}"),
                }))
                .send();
            tokio::spawn(send)
        })
        .collect();
    let mut queued = 0;
    for send in sends {
        if send.await.unwrap().unwrap().status() == 202 {
            queued += 1;
        }
    }
    assert!(queued >= 2, "{queued} queued");
    // Each queued job is tried three times, then is a dead letter saying why.
    let dead = dead_letters(&http, &service.url, queued, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), queued, "{dead:?}");
    for d in &dead {
        let why = d["last_error"].as_str().unwrap();
        assert!(why.contains("the callback failed 3 times"), "{why}");
    }
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.values().sum::<usize>(), 3 * queued, "{calls:?}");
    assert!(
        elsewhere.got.lock().unwrap().is_empty(),
        "a redirect was followed"
    );
}

#[tokio::test]
async fn every_route_but_health_needs_a_callers_secret_and_callbacks_go_only_to_its_hosts() {
    let sim = simulator(SimulatorSettings::default()).await;
    let config = config_file(sim, 2, 5000);
    let prefix = KeyPrefix::new("svc");
    let service = ServiceProcess::start(&config, &prefix).await;
    let url = |path: &str| format!("{}{path}", service.url);
    let request = serde_json::json!({
        "request_id": "r1", "partner": "bureau", "cpf": "529.982.247-25",
        "callback_url": "http://127.0.0.1:1/cb",
    });
    let anonymous = reqwest::Client::new();
    for (name, client) in [
        ("no secret", anonymous.clone()),
        ("a wrong secret", {
            reqwest::Client::builder()
                .default_headers(reqwest::header::HeaderMap::from_iter([(
                    reqwest::header::AUTHORIZATION,
                    "Bearer not-the-secret-0123456789".parse().unwrap(),
                )]))
                .build()
                .unwrap()
        }),
    ] {
        let answers = [
            client
                .post(url("/v1/partner-requests"))
                .json(&request)
                .send(),
            client.get(url("/v1/partners")).send(),
            client.get(url("/v1/dead-letters")).send(),
            client.post(url("/v1/dead-letters/replay")).send(),
            client.get(url("/metrics")).send(),
        ];
        for answer in answers {
            let r = answer.await.unwrap();
            assert_eq!(r.status(), 401, "{name}: {}", r.url());
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
        }
    }
    for open in ["/healthz", "/readyz"] {
        assert_eq!(anonymous.get(url(open)).send().await.unwrap().status(), 200);
    }
    // The metrics token opens the metrics (as a caller's secret does), and nothing else.
    let prometheus = caller_with(METRICS_TOKEN);
    let r = prometheus.get(url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("# TYPE integrations_cache_lookups_total counter"));
    assert_eq!(
        caller().get(url("/metrics")).send().await.unwrap().status(),
        200
    );
    for r in [
        prometheus
            .post(url("/v1/partner-requests"))
            .json(&request)
            .send()
            .await,
        prometheus.get(url("/v1/partners")).send().await,
        prometheus.get(url("/v1/dead-letters")).send().await,
    ] {
        assert_eq!(r.unwrap().status(), 401);
    }
    // The scheme is case-insensitive, as HTTP says.
    let r = anonymous
        .get(url("/v1/partners"))
        .header("authorization", format!("bearer {CALLER_SECRET}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The caller's outcomes go only to its own hosts.
    let mut elsewhere = request.clone();
    elsewhere["callback_url"] = "http://169.254.169.254/latest".into();
    let r = caller()
        .post(url("/v1/partner-requests"))
        .json(&elsewhere)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "callback_url");
    let r = caller()
        .post(url("/v1/partner-requests"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A simulated bureau that refuses every request (429, `Retry-After: 1`).
async fn never_answering_bureau() -> SocketAddr {
    simulator(SimulatorSettings {
        rate_limit_rate: 1.0,
        retry_after_s: 1,
        ..SimulatorSettings::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_past_its_ttl_is_ended_as_failed_and_its_caller_told() {
    // A bureau that never takes a request, and jobs that may wait 2 s.
    let sim = never_answering_bureau().await;
    let config = config_file_with(sim, 2, 5000, "job_ttl_secs = 2");
    let prefix = KeyPrefix::new("svc");
    let service = ServiceProcess::start(&config, &prefix).await;
    let receiver = Receiver::start().await;
    let now = fire(std::slice::from_ref(&service.url), 2, &receiver.url, "ttl").await;
    assert!(now.is_empty(), "nothing is answered at once: {now:?}");
    let got = receiver.wait_for(2).await;
    assert_eq!(got.len(), 2, "every caller is told: {got:?}");
    for o in &got {
        assert_eq!(o.status, "failed");
        assert!(o.error.as_deref().unwrap().starts_with("expired"), "{o:?}");
    }
    // Ended, not dropped: an operator sees them and may replay them.
    let dead = dead_letters(&caller(), &service.url, 2, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
}

/// The dead letters `http` sees at `url` once there are `n`, or `within` (a job's outcome is
/// delivered before the job is buried).
async fn dead_letters(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    within: Duration,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let dead: Vec<serde_json::Value> = http
            .get(format!("{url}/v1/dead-letters"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if dead.len() >= n || tokio::time::Instant::now() > deadline {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_request_ids_never_meet_and_each_sees_and_replays_only_its_dead_letters() {
    // A bureau that never takes a request, and jobs that may wait 2 s: each request ends
    // as a dead letter.
    let sim = never_answering_bureau().await;
    let other = r#"
        job_ttl_secs = 2

        [[callers]]
        name = "other"
        secret_env = "OTHER_CALLER_SECRET"
        callback_hosts = ["127.0.0.1"]
    "#;
    let config = config_file_with(sim, 2, 5000, other);
    let prefix = KeyPrefix::new("svc");
    let service = ServiceProcess::start(&config, &prefix).await;
    let receiver = Receiver::start().await;
    let (test, other) = (caller(), caller_with(OTHER_SECRET));
    let url = |path: &str| format!("{}{path}", service.url);
    // The same request id from both callers: two requests, not one.
    for (http, base) in [(&test, 300_000), (&other, 300_001)] {
        let r = http
            .post(url("/v1/partner-requests"))
            .json(&serde_json::json!({
                "request_id": "same", "partner": "bureau",
                "cpf": person_with_record(base).digits(), "callback_url": receiver.url,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    assert_eq!(receiver.wait_for(2).await.len(), 2, "each caller is told");
    let mine = dead_letters(&test, &service.url, 1, Duration::from_secs(10)).await;
    let theirs = dead_letters(&other, &service.url, 1, Duration::from_secs(10)).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert!(mine[0]["id"].as_str().unwrap().starts_with("test/"));
    let their_id = theirs[0]["id"].as_str().unwrap().to_string();
    assert!(their_id.starts_with("other/"));
    let replayed = |r: reqwest::Response| async move {
        r.json::<serde_json::Value>().await.unwrap()["replayed"].clone()
    };
    let path = format!("/v1/dead-letters/replay?id={their_id}");
    let r = test.post(url(&path)).send().await.unwrap();
    assert_eq!(
        replayed(r).await,
        0,
        "another caller's dead letter is not replayed"
    );
    let r = test
        .post(url("/v1/dead-letters/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed(r).await, 1, "replaying all is replaying one's own");
    let theirs = dead_letters(&other, &service.url, 1, Duration::from_secs(10)).await;
    assert_eq!(theirs.len(), 1, "untouched: {theirs:?}");
}

/// Property (proptest, over real HTTP): whatever a caller sends (a partner request of odd
/// fields, any JSON, a query string, a path), the service answers a success or a 4xx problem
/// document, never a 5xx or a dropped connection, and keeps answering its health check.
#[test]
fn any_request_is_taken_or_refused_with_a_problem() {
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use serde_json::{json, Value};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(simulator(SimulatorSettings::default()));
    let config = config_file(sim, 2, 5000);
    let prefix = KeyPrefix::new("props");
    let service = rt.block_on(ServiceProcess::start(&config, &prefix));
    let http = caller();
    let field = |good: Value| {
        prop_oneof![
            3 => Just(good),
            1 => "\\PC{0,20}".prop_map(Value::String),
            1 => common::any_json(),
        ]
    };
    let partner_request = (
        field(json!("r1")),
        field(json!("bureau")),
        field(json!("529.982.247-25")),
        field(json!("http://127.0.0.1:1/cb")),
        prop::option::of(field(json!({"from": "2026-01-01", "limit": 10}))),
        prop::option::of(("[a-z_]{1,8}", common::any_json())),
    )
        .prop_map(|(id, partner, cpf, callback, params, extra)| {
            let mut body = json!({
                "request_id": id, "partner": partner, "cpf": cpf, "callback_url": callback,
            });
            if let Some(p) = params {
                body["params"] = p;
            }
            if let Some((k, v)) = extra {
                body[k] = v;
            }
            body
        });
    let request = prop_oneof![
        4 => partner_request.prop_map(|b| ("POST", "/v1/partner-requests".to_string(), b.to_string())),
        1 => common::any_json().prop_map(|b| ("POST", "/v1/partner-requests".to_string(), b.to_string())),
        1 => "[ -~&&[^#]]{0,30}".prop_map(|q| ("POST", format!("/v1/dead-letters/replay?{q}"), String::new())),
        1 => "[ -~&&[^#]]{0,30}".prop_map(|q| ("GET", format!("/v1/dead-letters?{q}"), String::new())),
        1 => "[ -~&&[^#?]]{0,30}".prop_map(|p| ("GET", format!("/v1/{p}"), String::new())),
    ];
    common::check(128, request, |(method, path, body)| {
        rt.block_on(async {
            let url = format!("{}{path}", service.url);
            let req = match method {
                "POST" => http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body),
                _ => http.get(url),
            };
            let r = req
                .send()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            common::success_or_problem(r).await?;
            let health = http.get(format!("{}/healthz", service.url)).send().await;
            prop_assert!(
                health.is_ok_and(|h| h.status() == 200),
                "/healthz stopped answering"
            );
            Ok(())
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_is_reused_within_its_caller_and_scope_and_fresh_asks_again() {
    let sim = simulator(SimulatorSettings {
        latency_ms: 0,
        ..SimulatorSettings::default()
    })
    .await;
    let other = r#"
        [[callers]]
        name = "other"
        secret_env = "OTHER_CALLER_SECRET"
        callback_hosts = ["127.0.0.1"]
    "#;
    let config = config_file_with(sim, 4, 5000, other);
    let prefix = KeyPrefix::new("svc");
    let service = ServiceProcess::start(&config, &prefix).await;
    let receiver = Receiver::start().await;
    let cpf = person_with_record(400_000).digits();
    let ask = |http: reqwest::Client, extra: serde_json::Value| {
        let mut body = serde_json::json!({
            "request_id": "c", "partner": "bureau", "cpf": cpf, "callback_url": receiver.url,
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let url = format!("{}/v1/partner-requests", service.url);
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let calls = || async { sim_stats(sim).await.requests };
    let first = ask(caller(), serde_json::json!({"cache_scope": "acme"})).await;
    assert!(first.get("cached").is_none(), "{first}");
    assert_eq!(calls().await, 1);
    let again = ask(caller(), serde_json::json!({"cache_scope": "acme"})).await;
    assert!(again["cached"]["age_secs"].is_u64(), "{again}");
    assert_eq!(again["data"], first["data"]);
    assert_eq!(calls().await, 1, "answered from the cache");
    // Another scope of the same caller, another caller, or `fresh`: the partner is asked.
    // (A pause first, so the fresh answer's time differs from the first's.)
    tokio::time::sleep(Duration::from_millis(20)).await;
    for (http, extra) in [
        (caller(), serde_json::json!({"cache_scope": "beta"})),
        (
            caller_with(OTHER_SECRET),
            serde_json::json!({"cache_scope": "acme"}),
        ),
        (
            caller(),
            serde_json::json!({"cache_scope": "acme", "fresh": true}),
        ),
    ] {
        let r = ask(http, extra.clone()).await;
        assert!(r.get("cached").is_none(), "{extra}: {r}");
    }
    assert_eq!(calls().await, 4);
    // The fresh answer was cached anew: younger than the first.
    let last = ask(caller(), serde_json::json!({"cache_scope": "acme"})).await;
    assert!(last["cached"]["stored_at"].as_str() > again["cached"]["stored_at"].as_str());
    // A scope is a short label, not a body.
    let r = caller()
        .post(format!("{}/v1/partner-requests", service.url))
        .json(&serde_json::json!({
            "request_id": "c", "partner": "bureau", "cpf": cpf,
            "callback_url": receiver.url, "cache_scope": "x".repeat(129),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "cache_scope");
}
