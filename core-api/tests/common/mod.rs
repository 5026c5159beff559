//! What the black-box tests share: the real service started on port 0 with three keys (two
//! tenants, one read-only key), a real SSE client to read its streams, and, for tests that
//! start programs of their own, a process group that ends with the test and a way to see
//! what of it is still running.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use core_api::config::{ApiKeyConfig, Settings};
use core_api::Application;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

// Where Redis is and a key prefix that deletes its keys after the test: the integrations
// tests' own helpers, so the two suites clean up the same way.
#[path = "../../../integrations/tests/common/mod.rs"]
mod redis_keys;
#[allow(unused_imports)] // the browser tests use neither
pub use redis_keys::{
    any_json, check, free_port, redis_conn, redis_url, success_or_problem,
    trickling_and_idle_connections_are_closed, KeyPrefix,
};

/// The value of the first line of Prometheus `text` that starts with `line_start` (a name
/// with its labels, e.g. `x_total{kind="a"}`).
pub fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

/// An analysis's stored transactions as (movement, label, amount in cents), sorted, read page
/// by page through the query API with `get` (a path to its JSON answer).
pub async fn stored_rows<F, Fut>(get: F, id: &str) -> Vec<(String, String, i64)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(format!("/v1/analyses/{id}/transactions?limit=1000{cursor}")).await;
        for t in page["transactions"].as_array().unwrap() {
            out.push((
                t["movement_id"].as_str().unwrap().to_string(),
                t["label"].as_str().unwrap().to_string(),
                t["amount_cents"].as_i64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    out.sort();
    out
}

pub const ACME: &str = "acme-key-0123456789";
pub const BETA: &str = "beta-key-0123456789";
pub const READER: &str = "acme-reader-0123456789";

pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    /// Sending `true` shuts the service down as SIGTERM would.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    _data: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let data = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let key = |tenant: &str, key: &str, scopes: Option<Vec<&str>>| ApiKeyConfig {
        tenant: tenant.into(),
        key: key.into(),
        scopes: scopes.map(|s| s.into_iter().map(String::from).collect()),
    };
    let settings = Settings {
        port: 0,
        api_keys: vec![
            key("acme", ACME, None),
            key("beta", BETA, None),
            key("acme", READER, Some(vec!["analyses:read"])),
        ],
        model_path: root.join("models/default.json"),
        data_dir: data.path().to_path_buf(),
        rate_per_key: 10_000,
        ..Settings::default()
    };
    let mut settings = settings;
    adjust(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("the service builds");
    let url = format!("http://{}", app.addr());
    let shutdown = app.shutdown_handle();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        url,
        http: reqwest::Client::new(),
        shutdown,
        _data: data,
    }
}

/// Puts `s` on the test Redis under `prefix`, with the keys every instance on one Redis shares.
pub fn on_redis(s: &mut Settings, prefix: &KeyPrefix) {
    s.redis_url = Some(redis_url());
    s.key_prefix = prefix.to_string();
    s.events_token_key = Some(core_api::config::Secret::new("a key the instances share"));
    s.cpf_hash_key = Some(core_api::config::Secret::new(
        "a hash key the instances share",
    ));
    s.queue_key = Some(core_api::config::Secret::new(
        "a queue key the instances share, 32+ characters",
    ));
}

impl TestApp {
    pub async fn start(&self, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/analyses", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` with `key`.
    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// `GET /metrics` (open, as without `METRICS_TOKEN`), as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET path` with `key`, read as JSON.
    pub async fn get_json(&self, key: &str, path: &str) -> Value {
        self.get(key, path).await.json().await.unwrap()
    }

    pub async fn started(&self) -> Value {
        self.started_by(ACME).await
    }

    /// An analysis started with `key` (so for its tenant), as the 202 answered it.
    pub async fn started_by(&self, key: &str) -> Value {
        let r = self.start(key, json!({"cpf": "529.982.247-25"})).await;
        assert_eq!(r.status(), 202);
        r.json().await.unwrap()
    }

    /// Reads SSE events from `path` (with `last` as Last-Event-ID), at most `max`.
    pub async fn events(
        &self,
        path: &str,
        last: Option<&str>,
        max: usize,
    ) -> Vec<(u64, String, Value)> {
        self.events_on(&self.http, path, last, max).await.1
    }

    /// As [`TestApp::events`], with `client`; also returns the response headers.
    pub async fn events_on(
        &self,
        client: &reqwest::Client,
        path: &str,
        last: Option<&str>,
        max: usize,
    ) -> (reqwest::header::HeaderMap, Vec<(u64, String, Value)>) {
        let mut req = client.get(format!("{}{path}", self.url));
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l);
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let events = read_events(status, &headers, r.bytes_stream(), max).await;
        (headers, events)
    }
}

/// Checks that a response is a live SSE stream (status, content type, no caching, no proxy
/// buffering, no compression) and reads at most `max` events from its `body`, as
/// `(id, event, data)`. Any HTTP client's response will do: the kept-alive test uses hyper's.
pub async fn read_events<B, E>(
    status: StatusCode,
    headers: &HeaderMap,
    body: impl Stream<Item = Result<B, E>> + Unpin,
    max: usize,
) -> Vec<(u64, String, Value)>
where
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    let mut stream = body.eventsource();
    let mut out = Vec::new();
    while out.len() < max {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within 30 s")
        {
            Some(Ok(e)) => {
                if e.event == "message" && e.data.is_empty() {
                    continue; // the retry hint
                }
                out.push((
                    e.id.parse().unwrap(),
                    e.event,
                    serde_json::from_str(&e.data).unwrap(),
                ));
            }
            Some(Err(e)) => panic!("SSE error: {e}"),
            None => break,
        }
    }
    out
}

/// A program started in a process group of its own. Killing the group (on drop, or earlier
/// with [`ProcessGroup::kill`]) ends whatever the program started too, which killing the
/// program alone would leave running; on drop this also happens when the test panics.
pub struct ProcessGroup {
    child: Child,
    killed: bool,
}

impl ProcessGroup {
    pub fn spawn(mut command: Command) -> std::io::Result<ProcessGroup> {
        let child = command.process_group(0).spawn()?;
        Ok(ProcessGroup {
            child,
            killed: false,
        })
    }

    /// The group's id: the program's pid, as it leads the group.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills every process in the group and reaps the program. Once only: after the reap the
    /// id may be reused by an unrelated process.
    pub fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: kill(2) only sends a signal; a negative pid addresses the whole group.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// [`processes`] after waiting up to `within` for them to end: a killed process takes a
/// moment to go.
pub fn processes_left(group: u32, marker: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes(group, marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The live processes (as `pid command line`) in process group `group` or whose command line
/// contains `marker`. Those that have ended but are not yet reaped (zombies) do not count.
pub fn processes(group: u32, marker: &str) -> Vec<String> {
    assert!(!marker.is_empty(), "an empty marker matches every process");
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Either file is gone if the process ended while we looked.
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        // `pid (name) state ppid pgrp ...`; the name may hold spaces and parentheses.
        let mut fields = stat[stat.rfind(')').unwrap_or(0) + 1..].split_whitespace();
        let state = fields.next().unwrap_or("");
        let pgrp: Option<u32> = fields.nth(1).and_then(|f| f.parse().ok());
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if state != "Z" && (pgrp == Some(group) || cmdline.contains(marker)) {
            found.push(format!("{pid} {}", cmdline.trim_end()));
        }
    }
    found
}

/// An `osmem-server` process, killed when dropped.
pub struct Osmem {
    child: Child,
    pub url: String,
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The osmem-server binary: `OSMEM_SERVER_BIN`, or the one `test.sh` installs in `.venv`.
fn osmem_binary() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("OSMEM_SERVER_BIN") {
        return Some(p.into());
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    std::fs::read_dir(venv).ok()?.flatten().find_map(|d| {
        let p = d.path().join("site-packages/osmem_server/bin/osmem-server");
        p.exists().then_some(p)
    })
}

/// Starts an osmem-server on a free port, or says why not.
pub fn start_osmem() -> Option<Osmem> {
    let Some(bin) = osmem_binary() else {
        assert!(
            std::env::var("REQUIRE_OSMEM").is_err(),
            "REQUIRE_OSMEM is set but osmem-server was not found (OSMEM_SERVER_BIN or .venv)"
        );
        eprintln!("SKIPPED: osmem-server not found; ./test.sh installs it in .venv");
        return None;
    };
    let mut child = Command::new(bin)
        .args(["-addr", "127.0.0.1:0", "-no-stdin-watch", "-no-ja"])
        .arg("-parent-pid")
        .arg(std::process::id().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("osmem-server starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).expect("osmem-server's ready line");
    Some(Osmem {
        url: ready["url"].as_str().unwrap().to_string(),
        child,
    })
}

/// The secret the core API presents to a separate integrations service in these tests.
pub const INTEGRATIONS_CALLER_SECRET: &str = "core-api-caller-secret-0123456789";

/// A separate integrations service (over HTTP, as `integrations serve`) whose partners are the
/// simulator at `sim`, with the core API as its one caller (callbacks to this machine), its
/// configuration changed by `adjust`; and its URL.
pub async fn integrations_service(
    sim: std::net::SocketAddr,
    adjust: impl FnOnce(&mut integrations::Config),
) -> (integrations::service::Service, String) {
    let mut config = integrations::Config::embedded(&format!("http://{sim}"));
    config.callers.push(integrations::config::CallerConfig {
        name: "core-api".into(),
        secret_env: "UNUSED_HERE".into(),
        callback_hosts: vec!["127.0.0.1".into()],
        secret_hash: integrations::auth::secret_hash(INTEGRATIONS_CALLER_SECRET),
    });
    adjust(&mut config);
    let gateway = integrations::gateway::Gateway::build(config).await.unwrap();
    let service = integrations::service::Service::start(gateway, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", service.addr);
    (service, url)
}

/// Points `s` at a separate integrations service at `url` (from [`integrations_service`]).
pub fn on_integrations(s: &mut Settings, url: &str) {
    s.integrations_url = Some(url.to_string());
    s.integrations_secret = Some(core_api::config::Secret::new(INTEGRATIONS_CALLER_SECRET));
}
