//! Benchmarks of the partner integrations against a local Redis and the bundled simulator.
//!
//! `integrations_bench [REDIS_URL]` measures, in one run:
//! - semaphore: acquire+release pairs per second from one process (64 concurrent tasks);
//! - retry queue: jobs per second from enqueue to finished (enqueue all, lease in batches of
//!   100, finish each);
//! - overhead: p50/p99 latency of a partner call on loopback, plain `reqwest` against the
//!   simulator side by side with the same call through semaphore + breaker + rate limiter.
//!
//! Prints one JSON object.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use integrations::config::{BreakerConfig, PartnerConfig, RetryConfig, Secret};
use integrations::partner::{Attempt, Partner, RequestParams};
use integrations::queue::{Job, JobSeal, QueueTtl, RedisQueue, RetryQueue};
use integrations::semaphore::{new_holder, PermitStore, RedisSemaphore, Semaphore};
use integrations::simulator::{self, SimulatorSettings};
use integrations::Kind;

const SECONDS: f64 = 3.0;

async fn semaphore_pairs(url: &str, prefix: &str) -> Result<f64> {
    let store = RedisSemaphore::connect(url, &format!("{prefix}-sem")).await?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let holder = new_holder();
            while started.elapsed().as_secs_f64() < SECONDS {
                assert!(store
                    .try_acquire("p", 1_000_000, &holder, Duration::from_secs(10))
                    .await
                    .unwrap());
                store.release("p", &holder).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn queue_jobs(url: &str, prefix: &str) -> Result<(u64, f64)> {
    const JOBS: u64 = 50_000;
    // Jobs are sealed as in production (one XChaCha20-Poly1305 seal per write, one open per
    // lease), so the figure includes it.
    let seal = JobSeal::from_secret(&Secret::new("bench-queue-key-0123456789abcdef-0123"))
        .map_err(anyhow::Error::msg)?;
    let ttl = QueueTtl {
        job: Duration::from_secs(86_400),
        dead_letter: Duration::from_secs(86_400),
    };
    let queue = RedisQueue::connect(url, &format!("{prefix}-q"), JOBS * 2, seal, ttl).await?;
    let started = Instant::now();
    let mut enqueuers = Vec::new();
    for w in 0..32 {
        let queue = queue.clone();
        enqueuers.push(tokio::spawn(async move {
            for i in (w..JOBS).step_by(32) {
                let job = Job::new(
                    format!("r{i}"),
                    "p".into(),
                    "52998224725".into(),
                    RequestParams::default(),
                    None,
                );
                queue.enqueue(&job, Duration::ZERO).await.unwrap();
            }
        }));
    }
    let finished = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (queue, finished) = (queue.clone(), finished.clone());
        workers.push(tokio::spawn(async move {
            while finished.load(Ordering::Relaxed) < JOBS {
                let batch = queue.lease(100, Duration::from_secs(30)).await.unwrap();
                if batch.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                let finishes: Vec<_> = batch
                    .iter()
                    .map(|l| {
                        let (queue, l) = (queue.clone(), l.clone());
                        tokio::spawn(async move { queue.finish(&l).await.unwrap() })
                    })
                    .collect();
                for f in finishes {
                    assert!(f.await.unwrap());
                }
                finished.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in enqueuers.into_iter().chain(workers) {
        t.await?;
    }
    let rate = JOBS as f64 / started.elapsed().as_secs_f64();
    queue.discard().await?;
    Ok((JOBS, rate))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn overhead(url: &str, prefix: &str) -> Result<serde_json::Value> {
    const CALLS: usize = 3000;
    let settings = SimulatorSettings {
        latency_ms: 0,
        latency_jitter_ms: 0,
        ..SimulatorSettings::default()
    };
    let (addr, _h) = simulator::serve(
        "127.0.0.1:0".parse()?,
        settings,
        None,
        std::future::pending(),
    )
    .await?;
    let http = reqwest::Client::new();
    let semaphore = Semaphore::Redis(RedisSemaphore::connect(url, &format!("{prefix}-ovh")).await?);
    let config = PartnerConfig {
        name: "bench".into(),
        kind: Kind::Consumer,
        base_url: format!("http://{addr}"),
        token_env: None,
        max_concurrency: 8,
        rate_per_sec: 1_000_000,
        timeout_ms: 5000,
        breaker: BreakerConfig::default(),
        retry: RetryConfig::default(),
        cache_ttl_secs: None,
        token: None,
    };
    let partner = Partner::new(config, http.clone(), semaphore, Duration::from_secs(10));
    let cpf = integrations::simulator::data::person_with_record(123_456_789);
    let plain_url = format!("http://{addr}/v1/consumers/{}", cpf.digits());
    // Warm both paths (connections, script cache).
    for _ in 0..200 {
        http.get(&plain_url).send().await?.bytes().await?;
        partner.attempt(&cpf, &RequestParams::default()).await;
    }
    let (mut plain, mut guarded) = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
    // Interleaved, so both see the same machine state.
    for _ in 0..CALLS {
        let t = Instant::now();
        let body = http.get(&plain_url).send().await?.bytes().await?;
        integrations::PartnerData::parse(Kind::Consumer, &body)?;
        plain.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let a = partner.attempt(&cpf, &RequestParams::default()).await;
        guarded.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(matches!(a, Attempt::Done(_)), "{a:?}");
    }
    plain.sort_by(f64::total_cmp);
    guarded.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "calls": CALLS,
        "plain_p50_ms": percentile(&plain, 0.5),
        "plain_p99_ms": percentile(&plain, 0.99),
        "guarded_p50_ms": percentile(&guarded, 0.5),
        "guarded_p99_ms": percentile(&guarded, 0.99),
        "overhead_p50_ms": percentile(&guarded, 0.5) - percentile(&plain, 0.5),
        "overhead_p99_ms": percentile(&guarded, 0.99) - percentile(&plain, 0.99),
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    // Every key this run makes starts with `prefix`, and goes at the end.
    let prefix = format!("bench-{}", new_holder());
    let pairs = semaphore_pairs(&url, &prefix).await?;
    let (jobs, jobs_per_s) = queue_jobs(&url, &prefix).await?;
    let overhead = overhead(&url, &prefix).await?;
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}-*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<i64>(&mut conn)
            .await?;
    }
    println!(
        "{}",
        serde_json::json!({
            "semaphore_pairs_per_second": pairs,
            "queue_jobs": jobs,
            "queue_jobs_per_second": jobs_per_s,
            "overhead": overhead,
        })
    );
    Ok(())
}
