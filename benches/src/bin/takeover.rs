//! How long an analysis goes without its owner: from the moment the instance running it is
//! killed to the first event of the run another instance resumes.
//!
//! `takeover [RUNS]` (default 5) starts two `core-api` processes (`target/release/core-api`,
//! built first) on the Redis at `REDIS_URL` (default the local one, under a key prefix of
//! its own, removed at the end) with the default lease (`RUN_LEASE_MS`, 5,000 ms, unless set),
//! partners in process against a bureau simulator served from this process (300 ms a
//! request, five movement pages), and a shared SQLite store. Each run starts an analysis on
//! one instance, follows it on the other, kills the first (`SIGKILL`) once a page is stored,
//! and times the kill to the arrival of `analysis.resumed` on the follower's stream; the
//! killed instance is started again for the next run. Prints JSON.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use integrations::simulator::SimulatorSettings;

const KEY: &str = "bench-key-0123456789";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Instance {
    child: Child,
    url: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn instance(env: &[(String, String)]) -> Result<Instance> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = free_port()?;
    let child = Command::new(root.join("target/release/core-api"))
        .current_dir(&root)
        // Only what this benchmark sets: nothing from the caller's environment (an
        // INTEGRATIONS_URL, say) changes the shape measured.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        .env("PORT", port.to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .context("target/release/core-api (cargo build --release -p core-api)")?;
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok(Instance { child, url });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("core-api did not become ready")
}

#[tokio::main]
async fn main() -> Result<()> {
    let runs = benches::runs_arg(5)?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let lease_ms = std::env::var("RUN_LEASE_MS").unwrap_or_else(|_| "5000".into());
    let prefix = format!("takeover-bench-{}", std::process::id());
    let work = tempfile::tempdir()?;
    let (sim, _) = integrations::simulator::serve(
        "127.0.0.1:0".parse()?,
        SimulatorSettings {
            latency_ms: 300,
            latency_jitter_ms: 0,
            movements_per_day: Some(2000.0 / 91.0),
            ..SimulatorSettings::default()
        },
        None,
        std::future::pending(),
    )
    .await?;
    let mut partners = String::new();
    for (name, kind) in [("c", "consumer"), ("r", "rating"), ("m", "movements")] {
        partners.push_str(&format!(
            "[[partners]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"http://{sim}\"\n\
             max_concurrency = 8\nrate_per_sec = 1000\ntimeout_ms = 5000\n\n"
        ));
    }
    std::fs::write(work.path().join("partners.toml"), partners)?;
    let env: Vec<(String, String)> = [
        ("HOST", "127.0.0.1".to_string()),
        ("API_KEYS", format!("bench:{KEY}")),
        ("REDIS_URL", redis_url.clone()),
        ("KEY_PREFIX", prefix.clone()),
        (
            "EVENTS_TOKEN_KEY",
            "bench-events-token-key-0123456789".into(),
        ),
        ("CPF_HASH_KEY", "bench-cpf-hash-key-0123456789".into()),
        (
            "QUEUE_KEY",
            "bench-queue-key-0123456789abcdef-0123456789".into(),
        ),
        ("RUN_LEASE_MS", lease_ms.clone()),
        (
            "PARTNERS_CONFIG",
            work.path().join("partners.toml").display().to_string(),
        ),
        ("DATA_DIR", work.path().join("store").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let http = reqwest::Client::new();
    let mut a = instance(&env).await?;
    let b = instance(&env).await?;
    let mut times = Vec::new();
    for i in 0..runs {
        let cpf = integrations::simulator::data::person_with_record(500_000 + i as u32).digits();
        let started: serde_json::Value = http
            .post(format!("{}/v1/analyses", a.url))
            .bearer_auth(KEY)
            .json(&serde_json::json!({ "cpf": cpf }))
            .send()
            .await?
            .json()
            .await?;
        let id = started["id"].as_str().context("id")?.to_string();
        let events_url = started["events_url"].as_str().context("events_url")?;
        let mut stream = http
            .get(format!("{}{events_url}", b.url))
            .send()
            .await?
            .bytes_stream()
            .eventsource();
        // Read until the first page is stored, then kill the owner.
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await?
                .context("stream ended")??;
            if e.event == "transactions.stored" {
                break;
            }
        }
        a.child.kill()?;
        let killed = Instant::now();
        a.child.wait()?;
        let resumed = loop {
            let e = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await?
                .context("stream ended")??;
            match e.event.as_str() {
                "analysis.resumed" => break killed.elapsed(),
                "analysis.completed" | "analysis.failed" => bail!("{id} ended unresumed"),
                _ => {}
            }
        };
        times.push(resumed.as_secs_f64() * 1000.0);
        // Let it finish, then bring the killed instance back for the next run.
        while let Some(e) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await? {
            if e?.event == "analysis.completed" {
                break;
            }
        }
        a = instance(&env).await?;
    }
    drop((a, b));
    // Leave nothing behind on the shared Redis.
    let mut conn = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, format!("{prefix}:*")).await?;
    if !keys.is_empty() {
        redis::AsyncCommands::del::<_, ()>(&mut conn, keys).await?;
    }
    let lease: f64 = lease_ms.parse()?;
    let max = times.iter().cloned().fold(0.0, f64::max);
    println!(
        "{}",
        serde_json::json!({
            "runs": times.len(),
            "lease_ms": lease,
            "kill_to_resumed_ms": times,
            "max_ms": max,
            "target_ms": lease + 1000.0,
            "met": max <= lease + 1000.0,
        })
    );
    Ok(())
}
