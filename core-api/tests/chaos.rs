//! Chaos on real processes, in the distributed shape: two `core-api` processes sharing a
//! Redis of the test's own (append-only, fsync always) and one transaction store (a SQLite
//! file both open; Elasticsearch in a deployment), calling the partners in process. The
//! partners are the bundled bureau simulator, served from this test process (the real
//! bureaus cannot be reached here); it counts how often each movements page is asked for.
//!
//! - The instance running an analysis is killed (`SIGKILL`) in the middle of its movements
//!   pages while a client follows the analysis on the other instance: the analysis completes
//!   there, the client sees every event id once and in order, the stored transactions and the
//!   summary equal those of an uninterrupted run, and no page was asked for more than twice.
//! - Redis is killed and restarted on its append-only file in the middle of an analysis: the
//!   analysis completes or fails saying why, and no stream or snapshot is left hanging.

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, stored_rows, ProcessGroup};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use integrations::simulator::{SimulatorSettings, SimulatorStats};
use serde_json::{json, Value};

const KEY: &str = "chaos-key-0123456789";
/// A short lease, so a takeover comes within about a second.
const LEASE_MS: &str = "1000";

/// A Redis of the test's own on `port`, keeping its append-only file in `dir`.
async fn redis_server(port: u16, dir: &std::path::Path) -> ProcessGroup {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null());
    let group = ProcessGroup::spawn(command).expect("redis-server is on the PATH");
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..200 {
        if let Ok(client) = redis::Client::open(url.as_str()) {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return group;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not start on {port}");
}

/// The bureau simulator, answering each request in `latency_ms`, with about 2,000 movements
/// (five pages of 500) over the default window.
async fn simulator(latency_ms: u64) -> SocketAddr {
    integrations::simulator::serve(
        "127.0.0.1:0".parse().unwrap(),
        SimulatorSettings {
            latency_ms,
            latency_jitter_ms: 0,
            movements_per_day: Some(2000.0 / 91.0),
            ..SimulatorSettings::default()
        },
        None,
        std::future::pending(),
    )
    .await
    .unwrap()
    .0
}

async fn sim_stats(sim: SocketAddr) -> SimulatorStats {
    reqwest::get(format!("http://{sim}/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What the two instances share: Redis, the store, the partner file, the keys.
struct Shape {
    redis_port: u16,
    prefix: String,
    work: tempfile::TempDir,
    partners: std::path::PathBuf,
}

impl Shape {
    fn new(redis_port: u16, sim: SocketAddr) -> Self {
        let work = tempfile::tempdir().unwrap();
        let partners = work.path().join("partners.toml");
        let mut text = String::new();
        for (name, kind) in [
            ("consumer-sim", "consumer"),
            ("rating-sim", "rating"),
            ("movements-sim", "movements"),
        ] {
            text.push_str(&format!(
                "[[partners]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"http://{sim}\"\n\
                 max_concurrency = 8\nrate_per_sec = 1000\ntimeout_ms = 5000\n\n"
            ));
        }
        std::fs::write(&partners, text).unwrap();
        Shape {
            redis_port,
            prefix: format!("chaos-{}", std::process::id()),
            work,
            partners,
        }
    }

    /// A `core-api` process of this shape.
    async fn instance(&self) -> Instance {
        let port = free_port();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut command = Command::new(env!("CARGO_BIN_EXE_core-api"));
        command
            .current_dir(&root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("API_KEYS", format!("acme:{KEY}"))
            .env(
                "REDIS_URL",
                format!("redis://127.0.0.1:{}", self.redis_port),
            )
            .env("KEY_PREFIX", &self.prefix)
            .env("EVENTS_TOKEN_KEY", "chaos-events-token-key-0123456789")
            .env("CPF_HASH_KEY", "chaos-cpf-hash-key-0123456789")
            .env("QUEUE_KEY", "chaos-queue-key-0123456789abcdef-0123456789")
            .env("RUN_LEASE_MS", LEASE_MS)
            .env("FINAL_RETRY_SECS", "10")
            .env("PARTNERS_CONFIG", &self.partners)
            .env("DATA_DIR", self.work.path().join("store"))
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null());
        let group = ProcessGroup::spawn(command).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..400 {
            if let Ok(r) = reqwest::get(format!("{url}/readyz")).await {
                if r.status() == 200 {
                    return Instance { group, url };
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("core-api did not become ready at {url}");
    }
}

struct Instance {
    group: ProcessGroup,
    url: String,
}

impl Instance {
    async fn start(&self) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/analyses", self.url))
            .bearer_auth(KEY)
            .json(&json!({"cpf": "529.982.247-25"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the analysis has stored its first page.
    async fn first_page_stored(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get(&format!("/v1/analyses/{id}")).await["stored"] == 0 {
            assert!(Instant::now() < deadline, "no page stored within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The analysis's stored transactions, read through this instance.
    async fn stored(&self, id: &str) -> Vec<(String, String, i64)> {
        stored_rows(|path| async move { self.get(&path).await }, id).await
    }
}

/// Follows an analysis's events at `base` until its final event, as a client would: on a
/// dropped connection or a `stream.error` it reconnects with `Last-Event-ID`. Returns every
/// event received, in order, with when it arrived.
async fn follow(base: String, events_url: String) -> Vec<(u64, String, Value, Instant)> {
    let http = reqwest::Client::new();
    let mut got: Vec<(u64, String, Value, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    'connect: while Instant::now() < deadline {
        let mut req = http.get(format!("{base}{events_url}"));
        if let Some(last) = got.last() {
            req = req.header("Last-Event-ID", last.0.to_string());
        }
        let Ok(r) = req.send().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if r.status() != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut stream = r.bytes_stream().eventsource();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
            let Ok(Some(Ok(e))) = next else {
                continue 'connect;
            };
            if e.event == "message" && e.data.is_empty() {
                continue;
            }
            if e.event.starts_with("stream.") {
                // The service ended this stream (Redis away, shutting down): reconnect.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'connect;
            }
            let data: Value = serde_json::from_str(&e.data).unwrap();
            let last = e.event == "analysis.completed" || e.event == "analysis.failed";
            got.push((e.id.parse().unwrap(), e.event, data, Instant::now()));
            if last {
                return got;
            }
        }
    }
    panic!("the analysis did not end within 120 s; got {got:?}");
}

/// An analysis started on `a` and followed on `b` (to its end, in a task), returned once its
/// first page is stored: the moment the chaos tests break something.
async fn started_and_followed(
    a: &Instance,
    b: &Instance,
) -> (
    String,
    tokio::task::JoinHandle<Vec<(u64, String, Value, Instant)>>,
) {
    let started = a.start().await;
    let id = started["id"].as_str().unwrap().to_string();
    let follower = tokio::spawn(follow(
        b.url.clone(),
        started["events_url"].as_str().unwrap().to_string(),
    ));
    b.first_page_stored(&id).await;
    (id, follower)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_instance_running_an_analysis_mid_pages_loses_and_repeats_nothing() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    let _redis = redis_server(redis_port, redis_dir.path()).await;
    let sim = simulator(250).await;
    let shape = Shape::new(redis_port, sim);
    let mut a = shape.instance().await;
    let b = shape.instance().await;

    // The same person analysed without interruption, for comparison.
    let through = b.start().await;
    let through_events = follow(
        b.url.clone(),
        through["events_url"].as_str().unwrap().to_string(),
    )
    .await;
    let through_rows = b.stored(through["id"].as_str().unwrap()).await;
    let pages_before = sim_stats(sim).await.pages_served;

    let (id, follower) = started_and_followed(&a, &b).await;
    a.group.kill();
    let events = follower.await.unwrap();

    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "every event id once and in order"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(*kinds.last().unwrap(), "analysis.completed", "{kinds:?}");
    assert!(kinds.contains(&"analysis.resumed"), "{kinds:?}");
    assert_eq!(
        events.last().unwrap().2["summary"],
        through_events.last().unwrap().2["summary"],
        "the summary of an uninterrupted run"
    );
    let rows = b.stored(&id).await;
    assert_eq!(rows, through_rows, "the rows of an uninterrupted run");
    // The snapshot counts what is stored, whichever instance counted it.
    let snapshot = b.get(&format!("/v1/analyses/{id}")).await;
    assert_eq!(snapshot["status"], "completed");
    assert_eq!(snapshot["stored"], rows.len() as u64, "{snapshot}");
    assert_eq!(snapshot["classified"], rows.len() as u64, "{snapshot}");
    // Each page asked for at most twice: once by the killed instance, once by its successor
    // if the first answer was lost with it.
    let pages_after = sim_stats(sim).await.pages_served;
    for (offset, count) in &pages_after {
        let this_run = count - pages_before.get(offset).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&this_run),
            "page at {offset} asked {this_run} times: {pages_after:?} after {pages_before:?}"
        );
    }
    assert_eq!(pages_after.len(), pages_before.len(), "the same pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_redis_mid_analysis_ends_it_completed_or_failed_and_leaves_nothing_hanging() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    let mut redis = redis_server(redis_port, redis_dir.path()).await;
    let sim = simulator(250).await;
    let shape = Shape::new(redis_port, sim);
    let a = shape.instance().await;
    let b = shape.instance().await;

    let (id, follower) = started_and_followed(&a, &b).await;
    // Killed outright; it comes back on its append-only file a second later.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _redis = redis_server(redis_port, redis_dir.path()).await;

    let events = follower.await.unwrap();
    let (last, data) = (&events.last().unwrap().1, &events.last().unwrap().2);
    match last.as_str() {
        "analysis.completed" => assert!(data["summary"]["transactions"].as_u64().unwrap() > 0),
        "analysis.failed" => assert!(!data["reason"].as_str().unwrap().is_empty()),
        other => panic!("ended with {other}"),
    }
    // The snapshot says the same, from either instance.
    let deadline = Instant::now() + Duration::from_secs(30);
    for instance in [&a, &b] {
        loop {
            let status = instance.get(&format!("/v1/analyses/{id}")).await["status"].clone();
            if status != "running" {
                assert_eq!(
                    status,
                    if last == "analysis.completed" {
                        "completed"
                    } else {
                        "failed"
                    }
                );
                break;
            }
            assert!(Instant::now() < deadline, "the snapshot still says running");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
