//! The retry queue's guarantees, on a real Redis and in process.

use std::time::Duration;

use integrations::partner::RequestParams;
use integrations::queue::{Job, LocalQueue, RedisQueue, RetryQueue};

mod common;
use common::{redis_url, KeyPrefix};

/// A queue under a prefix of its own, and the prefix, whose keys go when it is dropped.
async fn redis() -> (RedisQueue, KeyPrefix) {
    let prefix = KeyPrefix::new("q");
    let q = RedisQueue::connect(&redis_url(), &prefix, 1000)
        .await
        .expect("a Redis server");
    (q, prefix)
}

fn job(request: &str) -> Job {
    Job::new(
        request.into(),
        "p".into(),
        "52998224725".into(),
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
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("the partner answered 503")
    );
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.due, stats.leased, stats.dead), (1, 0, 1));

    assert_eq!(q.replay(None).await.unwrap(), 1);
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

#[tokio::test]
async fn a_full_queue_refuses_with_a_clear_error() {
    let q = LocalQueue::new(1);
    q.enqueue(&job("a"), Duration::ZERO).await.unwrap();
    let err = q.enqueue(&job("b"), Duration::ZERO).await.unwrap_err();
    assert_eq!(err.to_string(), "the retry queue is full (1 jobs)");
}
