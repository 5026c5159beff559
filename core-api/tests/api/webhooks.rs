//! Webhooks, black-box: a real receiver (a Python HTTP server that verifies every request with
//! the `standardwebhooks` package, the Standard Webhooks project's own implementation, which
//! `test.sh` installs in `.venv`) is told when an analysis ends, through failures and retries,
//! on the embedded shape and on Redis; endpoints are per tenant and refuse loopback addresses
//! unless the operator allows them.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// The receiver process: ended (its group killed) when dropped.
struct Receiver {
    child: Child,
    port: u16,
    secret_file: tempfile::NamedTempFile,
    lines: mpsc::Receiver<Value>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // SAFETY: kill(2) only sends a signal; a negative pid addresses the whole group.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Starts a receiver that answers 500 to its first `fail_first` requests; `None` (skipped)
/// when `.venv` has no Python with `standardwebhooks`, unless `REQUIRE_OSMEM` says this is
/// `test.sh`'s run, which installs it.
fn receiver(fail_first: u32) -> Option<Receiver> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let has_verifier = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_verifier {
        assert!(
            std::env::var("REQUIRE_OSMEM").is_err(),
            "test.sh's run, but .venv has no standardwebhooks"
        );
        eprintln!("SKIPPED: .venv has no standardwebhooks; ./test.sh installs it");
        return None;
    }
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(python)
        .arg(root.join("core-api/tests/support/webhook_receiver.py"))
        .arg(secret_file.path())
        .arg(fail_first.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
        .as_u64()
        .unwrap() as u16;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    Some(Receiver {
        child,
        port,
        secret_file,
        lines,
    })
}

impl Receiver {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    fn know(&mut self, secret: &str) {
        let f = self.secret_file.as_file_mut();
        f.write_all(secret.as_bytes()).unwrap();
        f.flush().unwrap();
    }

    /// The requests it got until one of them was answered 2xx (or `within` passed).
    fn until_delivered(&self, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    let done = v["status"] == 204;
                    got.push(v);
                    if done {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        got
    }
}

fn fast_retries(s: &mut core_api::config::Settings) {
    s.webhook_allowed_hosts = vec!["127.0.0.1".into()];
    s.webhook_retry_base_ms = 100;
    s.webhook_max_attempts = 4;
}

async fn register(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/webhook-endpoints", app.url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Runs an analysis to its end; its id.
async fn analyse(app: &TestApp) -> String {
    let started = app.started().await;
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    assert_eq!(events.last().unwrap().1, "analysis.completed");
    started["id"].as_str().unwrap().to_string()
}

/// The receiver fails twice, then takes the webhook: every attempt carries the same id and a
/// signature the independent verifier accepts; the delivery log and the audit trail say so;
/// a resend arrives again under the same id.
async fn an_ended_analysis_is_announced_signed_and_retried(app: &TestApp, mut rx: Receiver) {
    let r = register(
        app,
        ACME,
        json!({"url": rx.url(), "events": ["analysis.completed", "analysis.failed"]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let endpoint: Value = r.json().await.unwrap();
    let secret = endpoint["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{endpoint}");
    rx.know(secret);
    let id = analyse(app).await;
    let got = rx.until_delivered(Duration::from_secs(20));
    assert_eq!(got.len(), 3, "two failures, then delivered: {got:?}");
    for g in &got {
        assert_eq!(g["verified"], true, "{g}");
        assert_eq!(g["id"], got[0]["id"]);
        assert_eq!(g["body"]["type"], "analysis.completed");
        assert_eq!(g["body"]["data"]["analysis_id"], id.as_str());
        assert_eq!(g["body"]["data"]["status"], "completed");
    }
    let text = serde_json::to_string(&got).unwrap();
    assert!(!text.contains("52998224725") && !text.contains("529.982"));
    // The log says delivered after three attempts (it is saved just after the answer).
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = app
            .get_json(ACME, &format!("/v1/analyses/{id}/webhooks"))
            .await;
        if log["deliveries"][0]["status"] == "delivered" || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let d = &log["deliveries"][0];
    assert_eq!(d["status"], "delivered", "{log}");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["id"], got[0]["id"]);
    assert_eq!(d["endpoint_id"], endpoint["id"]);
    // Another tenant sees no such analysis.
    let r = app.get(BETA, &format!("/v1/analyses/{id}/webhooks")).await;
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .post(format!(
            "{}/v1/analyses/{id}/webhooks/{}/resend",
            app.url,
            d["id"].as_str().unwrap()
        ))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let again = rx.until_delivered(Duration::from_secs(10));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["id"], got[0]["id"]);
    assert_eq!(again[0]["verified"], true);
    let audit = app
        .get_json(ACME, &format!("/v1/audit?analysis={id}"))
        .await;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in [
        "webhook.delivery",
        "webhook.deliveries.read",
        "webhook.resend",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_analysis_is_announced_signed_as_standard_webhooks_verify_through_retries() {
    let Some(rx) = receiver(2) else { return };
    let app = spawn_app_with(fast_retries).await;
    an_ended_analysis_is_announced_signed_and_retried(&app, rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_an_ended_analysis_is_announced_signed_through_retries() {
    let Some(rx) = receiver(2) else { return };
    let prefix = KeyPrefix::new("webhooks");
    let app = spawn_app_with(|s| {
        fast_retries(s);
        on_redis(s, &prefix);
    })
    .await;
    an_ended_analysis_is_announced_signed_and_retried(&app, rx).await;
    // Nothing kept there in clear: the endpoint's secret is sealed.
    let mut redis = redis_conn().await;
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut redis, format!("{}:wh:ep:*", &*prefix))
        .await
        .unwrap();
    let all: Vec<(String, String)> = redis::AsyncCommands::hgetall(&mut redis, &keys[0])
        .await
        .unwrap();
    assert!(!all[0].1.contains("whsec_"), "sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_failing_ends_as_failed_after_its_attempts() {
    let Some(mut rx) = receiver(1_000) else {
        return;
    };
    let app = spawn_app_with(fast_retries).await;
    let endpoint: Value = register(
        &app,
        ACME,
        json!({"url": rx.url(), "events": ["analysis.completed"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    rx.know(endpoint["secret"].as_str().unwrap());
    let id = analyse(&app).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let log = app
            .get_json(ACME, &format!("/v1/analyses/{id}/webhooks"))
            .await;
        let d = log["deliveries"][0].clone();
        if d["status"] == "failed" || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 4);
    assert_eq!(d["last_status"], 500);
    assert_eq!(rx.until_delivered(Duration::from_millis(300)).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_per_tenant_refuse_internal_addresses_and_show_their_secret_once() {
    let app = spawn_app().await;
    // Loopback, private and metadata addresses: refused unless the operator allows them.
    for url in [
        "http://127.0.0.1:9/hooks",
        "http://localhost/hooks",
        "http://10.0.0.7/hooks",
        "http://169.254.169.254/latest",
    ] {
        let r = register(
            &app,
            ACME,
            json!({"url": url, "events": ["analysis.completed"]}),
        )
        .await;
        assert_eq!(r.status(), 422, "{url}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["field"], "url");
    }
    for (body, field) in [
        (
            json!({"url": "ftp://x.example/", "events": ["analysis.completed"]}),
            "url",
        ),
        (
            json!({"url": "https://8.8.8.8/", "events": ["analysis.exploded"]}),
            "events",
        ),
        (json!({"url": "https://8.8.8.8/", "events": []}), "events"),
    ] {
        let r = register(&app, ACME, body).await;
        assert_eq!(r.status(), 422);
        assert_eq!(r.json::<Value>().await.unwrap()["field"], field);
    }
    let r = register(
        &app,
        ACME,
        json!({"url": "https://8.8.8.8/", "events": ["analysis.completed"], "x": 1}),
    )
    .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        register(
            &app,
            READER,
            json!({"url": "https://8.8.8.8/", "events": ["analysis.completed"]})
        )
        .await
        .status(),
        403
    );
    // A public address is taken; listed without its secret; per tenant; deleted once.
    let r = register(
        &app,
        ACME,
        json!({"url": "https://8.8.8.8/hooks", "events": ["analysis.failed"]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let list = app.get_json(ACME, "/v1/webhook-endpoints").await;
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1);
    assert_eq!(list["endpoints"][0]["id"], created["id"]);
    assert!(list["endpoints"][0].get("secret").is_none());
    let beta = app.get_json(BETA, "/v1/webhook-endpoints").await;
    assert!(beta["endpoints"].as_array().unwrap().is_empty());
    let delete = |key: &'static str| {
        app.http
            .delete(format!(
                "{}/v1/webhook-endpoints/{}",
                app.url,
                created["id"].as_str().unwrap()
            ))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(delete(BETA).await.unwrap().status(), 404);
    assert_eq!(delete(ACME).await.unwrap().status(), 204);
    assert_eq!(delete(ACME).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_removes_an_analysis_s_deliveries_and_another_tenant_cannot_resend_them() {
    let Some(mut rx) = receiver(1_000) else {
        return;
    };
    let app = spawn_app_with(|s| {
        fast_retries(s);
        // The second attempt would come two seconds after the first.
        s.webhook_retry_base_ms = 2_000;
    })
    .await;
    let endpoint: Value = register(
        &app,
        ACME,
        json!({"url": rx.url(), "events": ["analysis.completed"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    rx.know(endpoint["secret"].as_str().unwrap());
    let id = analyse(&app).await;
    // The first attempt fails; the erasure comes before the second.
    let first = rx.lines.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["status"], 500);
    let log = app
        .get_json(ACME, &format!("/v1/analyses/{id}/webhooks"))
        .await;
    let delivery = log["deliveries"][0]["id"].as_str().unwrap().to_string();
    let resend = |key: &'static str| {
        app.http
            .post(format!(
                "{}/v1/analyses/{id}/webhooks/{delivery}/resend",
                app.url
            ))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(resend(BETA).await.unwrap().status(), 404);
    let r = app
        .http
        .delete(format!("{}/v1/analyses/{id}", app.url))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(resend(ACME).await.unwrap().status(), 404);
    // Nothing more is sent for it: its delivery went with it.
    assert!(rx.until_delivered(Duration::from_secs(4)).is_empty());
}
