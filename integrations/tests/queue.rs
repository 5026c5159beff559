//! The retry queue's guarantees, on a real Redis and in process.

use std::time::Duration;

use integrations::config::Secret;
use integrations::partner::RequestParams;
use integrations::queue::{Job, JobSeal, LocalQueue, Outcome, QueueTtl, RedisQueue, RetryQueue};
use redis::AsyncCommands;

mod common;
use common::{redis_conn, redis_url, KeyPrefix};

const CPF: &str = "52998224725";
const NAME: &str = "MARIA DA SILVA";

fn seal(secret: &str) -> JobSeal {
    JobSeal::from_secret(&Secret::new(secret.repeat(32))).unwrap()
}

const DAY: QueueTtl = QueueTtl {
    job: Duration::from_secs(86_400),
    dead_letter: Duration::from_secs(7 * 86_400),
};

/// A queue under a prefix of its own, and the prefix, whose keys go when it is dropped.
async fn redis() -> (RedisQueue, KeyPrefix) {
    let prefix = KeyPrefix::new("q");
    let q = redis_at(&prefix, seal("k"), DAY).await;
    (q, prefix)
}

async fn redis_at(prefix: &str, seal: JobSeal, ttl: QueueTtl) -> RedisQueue {
    RedisQueue::connect(&redis_url(), prefix, 1000, seal, ttl)
        .await
        .expect("a Redis server")
}

/// Every key under `prefix`, with everything it holds as text and its time to live in ms.
async fn dump(prefix: &str) -> Vec<(String, Vec<String>, i64)> {
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let held: Vec<String> = match kind.as_str() {
            "hash" => {
                let h: Vec<(String, String)> = conn.hgetall(&key).await.unwrap();
                h.into_iter().flat_map(|(k, v)| [k, v]).collect()
            }
            "zset" => conn.zrange(&key, 0, -1).await.unwrap(),
            "list" => conn.lrange(&key, 0, -1).await.unwrap(),
            other => vec![format!("a {other}")],
        };
        let ttl: i64 = conn.pttl(&key).await.unwrap();
        out.push((key, held, ttl));
    }
    out
}

fn job(request: &str) -> Job {
    Job::new(
        request.into(),
        "p".into(),
        CPF.into(),
        RequestParams::default(),
        None,
    )
}

async fn lifecycle<Q: RetryQueue>(q: Q) {
    let lease = Duration::from_millis(300);
    assert!(q.enqueue(&job("a"), Duration::ZERO).await.unwrap());
    assert!(
        !q.enqueue(&job("a"), Duration::ZERO).await.unwrap(),
        "the idempotency key keeps one"
    );
    assert!(q
        .enqueue(&job("later"), Duration::from_secs(60))
        .await
        .unwrap());

    let leased = q.lease(10, lease).await.unwrap();
    assert_eq!(leased.len(), 1, "only the due job is leased");
    assert_eq!(leased[0].job.request_id, "a");
    assert!(
        q.lease(10, lease).await.unwrap().is_empty(),
        "a leased job is not leased twice"
    );

    // The worker dies: its lease runs out and another worker gets the job.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let again = q.lease(10, lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(
        !q.finish(&leased[0]).await.unwrap(),
        "the first worker's token no longer counts"
    );
    let mut updated = again[0].job.clone();
    updated.attempts = 1;
    updated.last_error = Some("the partner answered 503".into());
    updated.failed_deliveries = 4;
    assert!(q
        .reschedule(&again[0], &updated, Duration::ZERO)
        .await
        .unwrap());

    let third = q.lease(10, lease).await.unwrap();
    assert_eq!(third[0].job.attempts, 1, "the rescheduled state was kept");
    assert!(q.bury(&third[0], &third[0].job).await.unwrap());
    let dead = q.dead_letters(10, "").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("the partner answered 503")
    );
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.due, stats.leased, stats.dead), (1, 0, 1));

    assert_eq!(q.replay(None, "").await.unwrap(), 1);
    let replayed = q.lease(10, lease).await.unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        (replayed[0].job.attempts, replayed[0].job.failed_deliveries),
        (0, 0),
        "a replayed job starts its attempts and deliveries afresh"
    );
    assert!(q.finish(&replayed[0]).await.unwrap());
    assert_eq!(q.stats().await.unwrap().dead, 0);
}

#[tokio::test]
async fn on_redis_jobs_are_leased_once_return_when_a_worker_dies_and_dead_letters_replay() {
    let (q, _keys) = redis().await;
    lifecycle(q).await;
}

#[tokio::test]
async fn in_process_jobs_are_leased_once_return_when_a_worker_dies_and_dead_letters_replay() {
    lifecycle(LocalQueue::new(1000)).await;
}

/// An erasure purges an analysis's queued, leased and dead jobs, and nothing else.
async fn purge<Q: RetryQueue>(q: Q) {
    let lease = Duration::from_secs(30);
    for r in ["an_erased", "an_erased.p300", "an_kept"] {
        assert!(q.enqueue(&job(r), Duration::ZERO).await.unwrap());
    }
    assert!(q
        .enqueue(&job("an_erased.p600"), Duration::from_secs(60))
        .await
        .unwrap());
    let leased = q.lease(10, lease).await.unwrap();
    let dead = leased
        .iter()
        .find(|l| l.job.request_id == "an_erased")
        .unwrap();
    assert!(q.bury(dead, &dead.job).await.unwrap());
    assert_eq!(q.purge("an_erased").await.unwrap(), 3);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.due, stats.dead), (0, 0), "{stats:?}");
    let kept = leased
        .iter()
        .find(|l| l.job.request_id == "an_kept")
        .unwrap();
    assert!(
        q.finish(kept).await.unwrap(),
        "another analysis's job stays"
    );
    let erased = leased
        .iter()
        .find(|l| l.job.request_id == "an_erased.p300")
        .unwrap();
    assert!(
        !q.finish(erased).await.unwrap(),
        "a purged job's lease is gone"
    );
}

#[tokio::test]
async fn on_redis_an_erasure_purges_an_analysis_s_jobs_and_dead_letters_only() {
    let (q, _keys) = redis().await;
    purge(q).await;
}

#[tokio::test]
async fn in_process_an_erasure_purges_an_analysis_s_jobs_and_dead_letters_only() {
    purge(LocalQueue::new(1000)).await;
}

#[tokio::test]
async fn a_full_queue_refuses_with_a_clear_error() {
    let q = LocalQueue::new(1);
    q.enqueue(&job("a"), Duration::ZERO).await.unwrap();
    let err = q.enqueue(&job("b"), Duration::ZERO).await.unwrap_err();
    assert_eq!(err.to_string(), "the retry queue is full (1 jobs)");
}

#[tokio::test]
async fn on_redis_no_key_holds_a_cpf_in_clear_and_every_key_expires() {
    let (q, prefix) = redis().await;
    let lease = Duration::from_secs(30);
    q.enqueue(&job("waiting"), Duration::from_secs(60))
        .await
        .unwrap();
    q.enqueue(&job("buried"), Duration::ZERO).await.unwrap();
    // Answered jobs hold the person's bureau record until it is delivered.
    let answered = |mut j: Job| {
        j.outcome = Some(Outcome {
            request_id: j.request_id.clone(),
            partner: j.partner.clone(),
            status: "ok".into(),
            data: Some(serde_json::json!({"cpf": CPF, "nome": NAME})),
            error: None,
            attempts: 1,
            cached: None,
        });
        j
    };
    let leased = q.lease(1, lease).await.unwrap();
    assert_eq!(leased[0].job.cpf, CPF, "a leased job has its CPF back");
    assert!(q
        .bury(&leased[0], &answered(leased[0].job.clone()))
        .await
        .unwrap());
    q.enqueue(&job("rescheduled"), Duration::ZERO)
        .await
        .unwrap();
    let leased = q.lease(1, lease).await.unwrap();
    assert!(q
        .reschedule(
            &leased[0],
            &answered(leased[0].job.clone()),
            Duration::from_secs(60)
        )
        .await
        .unwrap());

    let keys = dump(&prefix).await;
    assert!(keys.len() >= 6, "{keys:?}");
    for (key, held, ttl) in &keys {
        for text in held {
            assert!(!text.contains(CPF), "{key} holds the CPF in clear: {text}");
            assert!(!text.contains(NAME), "{key} holds a name in clear: {text}");
        }
        assert!(*ttl > 0, "{key} has no expiry ({ttl})");
    }
    // What was sealed opens: the dead letter replays with its CPF.
    assert_eq!(q.replay(None, "").await.unwrap(), 1);
}

#[tokio::test]
async fn on_redis_old_jobs_and_dead_letters_are_dropped_after_their_ttl() {
    let prefix = KeyPrefix::new("q");
    let ttl = QueueTtl {
        job: Duration::from_secs(1),
        dead_letter: Duration::from_secs(1),
    };
    let q = redis_at(&prefix, seal("k"), ttl).await;
    q.enqueue(&job("buried"), Duration::ZERO).await.unwrap();
    let leased = q.lease(1, Duration::from_secs(30)).await.unwrap();
    assert!(q.bury(&leased[0], &leased[0].job).await.unwrap());
    q.enqueue(&job("waiting"), Duration::from_secs(60))
        .await
        .unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.due, stats.dead), (1, 1));

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(q
        .lease(10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.due, stats.leased, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(q.dead_letters(10, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_job_sealed_under_another_key_is_never_leased_and_waits_in_the_dead_letters() {
    let prefix = KeyPrefix::new("q");
    let ours = redis_at(&prefix, seal("k"), DAY).await;
    let other = redis_at(&prefix, seal("x"), DAY).await;
    ours.enqueue(&job("a"), Duration::ZERO).await.unwrap();
    assert!(other
        .lease(10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    let stats = ours.stats().await.unwrap();
    assert_eq!(
        (stats.due, stats.leased, stats.dead),
        (0, 0, 1),
        "{stats:?}"
    );
    // An instance with the right key can still replay it.
    assert_eq!(ours.replay(None, "").await.unwrap(), 1);
    assert_eq!(
        ours.lease(10, Duration::from_secs(30)).await.unwrap()[0]
            .job
            .cpf,
        CPF
    );
}

#[tokio::test]
async fn a_discarded_queue_leaves_no_key_behind() {
    let (q, prefix) = redis().await;
    q.enqueue(&job("a"), Duration::ZERO).await.unwrap();
    let leased = q.lease(1, Duration::from_secs(30)).await.unwrap();
    q.bury(&leased[0], &leased[0].job).await.unwrap();
    assert!(!dump(&prefix).await.is_empty());
    q.discard().await.unwrap();
    assert_eq!(dump(&prefix).await, Vec::new());
}

#[tokio::test]
async fn a_redis_queue_without_a_key_is_refused_at_start() {
    let prefix = KeyPrefix::new("q");
    let mut config = integrations::Config::embedded("http://127.0.0.1:9");
    config.redis_url = Some(redis_url());
    config.key_prefix = prefix.to_string();
    let err = integrations::gateway::Gateway::build(config.clone())
        .await
        .err()
        .expect("no QUEUE_KEY, no gateway")
        .to_string();
    assert!(err.contains("QUEUE_KEY"), "{err}");
    config.queue_key = Some(Secret::new("k".repeat(32)));
    assert!(integrations::gateway::Gateway::build(config).await.is_ok());
}

/// Gateways on one Redis queue, as core-api instances with partners in process: a run asks
/// and its request is queued; the run is taken over and its successor, on another gateway,
/// asks the same request: it waits for the queued job instead of asking the bureau again,
/// and the outcome of the job a third gateway's worker ran reaches it, through Redis, sealed,
/// and is not left there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_waits_for_its_predecessors_queued_job_whichever_process_runs_it() {
    use integrations::gateway::{Gateway, PartnerRequest, Submitted};
    use integrations::simulator::{self, SimulatorSettings};
    // The bureau refuses everything at first, so the request is queued.
    let admin = "admin-token-0123456789";
    let (sim, _) = simulator::serve(
        "127.0.0.1:0".parse().unwrap(),
        SimulatorSettings {
            rate_limit_rate: 1.0,
            retry_after_s: 1,
            ..SimulatorSettings::default()
        },
        Some(admin),
        std::future::pending(),
    )
    .await
    .unwrap();
    let prefix = KeyPrefix::new("gw");
    let mut config = integrations::Config::embedded(&format!("http://{sim}"));
    config.redis_url = Some(redis_url());
    config.key_prefix = prefix.to_string();
    config.queue_key = Some(Secret::new("k".repeat(32)));
    let asker = Gateway::build(config.clone()).await.unwrap();
    let runner = Gateway::build(config).await.unwrap();
    let request = PartnerRequest {
        caller: String::new(),
        request_id: "an_1".into(),
        partner: "consumer-sim".into(),
        cpf: integrations::Cpf::parse(CPF).unwrap(),
        params: RequestParams::default(),
        callback_url: None,
        fresh: false,
        cache_scope: "acme".into(),
    };
    let submitted = asker.submit(request.clone()).await.unwrap();
    let Submitted::Queued { receiver, .. } = submitted else {
        panic!("queued: {submitted:?}")
    };
    // A successor (another run of the same analysis, on a third gateway) asking the same
    // request waits for that job instead of asking the bureau again.
    let successor = Gateway::build(asker.config().clone()).await.unwrap();
    let again = successor.submit(request).await.unwrap();
    let Submitted::Queued {
        reason,
        receiver: successor_receiver,
        ..
    } = again
    else {
        panic!("queued: {again:?}")
    };
    assert_eq!(reason.as_str(), "already_queued");
    let asked_before = reqwest::get(format!("http://{sim}/stats"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["requests"]
        .as_u64()
        .unwrap();
    // Now the bureau answers; only the other gateway runs a worker.
    reqwest::Client::new()
        .put(format!("http://{sim}/admin/settings"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"rate_limit_rate": 0.0}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The first run is gone (its wait dropped): only its successor waits now.
    drop(receiver);
    let successor_collector = tokio::spawn(successor.clone().run_collector(stopped.clone()));
    let worker = tokio::spawn(runner.clone().run_worker(stopped));
    let outcome = tokio::time::timeout(Duration::from_secs(15), successor_receiver.unwrap())
        .await
        .expect("the outcome within 15 s")
        .unwrap();
    assert_eq!(outcome.status, "ok", "{outcome:?}");
    assert!(outcome.data.unwrap().to_string().contains("nome"));
    // The bureau answered once: the queued job's call, nothing asked again for the successor.
    let stats = reqwest::get(format!("http://{sim}/stats"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(stats["ok"], 1, "one answer from the bureau: {stats}");
    assert!(
        stats["requests"].as_u64().unwrap() <= asked_before + 1,
        "{stats}"
    );
    let mut redis = redis_conn().await;
    let left: Vec<String> = redis.keys(format!("{}:q:out:*", &*prefix)).await.unwrap();
    assert!(left.is_empty(), "taken once delivered: {left:?}");
    stop.send(true).unwrap();
    successor_collector.await.unwrap();
    worker.await.unwrap();
}
