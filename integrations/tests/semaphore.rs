//! The semaphore's guarantees, on a real Redis (REDIS_URL, or the local one at
//! 127.0.0.1:6379) and in process. Each test uses its own key prefix.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integrations::semaphore::{LocalSemaphore, Permit, PermitStore, RedisSemaphore};

mod common;
use common::{redis_url, KeyPrefix};

/// A semaphore under a prefix of its own, and the prefix, whose keys go when it is dropped.
async fn redis() -> (RedisSemaphore, KeyPrefix) {
    let prefix = KeyPrefix::new("sem");
    let store = RedisSemaphore::connect(&redis_url(), &prefix)
        .await
        .expect("a Redis server at REDIS_URL or 127.0.0.1:6379");
    (store, prefix)
}

/// 40 tasks each take a permit, hold it a few milliseconds and give it back, 5 times over.
async fn never_more_than_the_limit<S: PermitStore + Clone>(store: S) {
    const LIMIT: u32 = 4;
    let holding = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (store, holding, most) = (store.clone(), holding.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let permit = Permit::acquire(
                    &store,
                    "p",
                    LIMIT,
                    Duration::from_secs(5),
                    Duration::from_secs(30),
                )
                .await
                .unwrap()
                .expect("a permit within 30 s");
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                permit.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        LIMIT,
        "the limit was reached but never passed"
    );
    assert_eq!(
        store.in_use("p").await.unwrap(),
        0,
        "every permit was given back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_redis_no_more_than_the_limit_hold_permits_at_once() {
    let (store, _keys) = redis().await;
    never_more_than_the_limit(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_no_more_than_the_limit_hold_permits_at_once() {
    never_more_than_the_limit(LocalSemaphore::new()).await;
}

#[tokio::test]
async fn a_crashed_holders_permit_comes_back_within_its_lease() {
    let (store, _keys) = redis().await;
    let lease = Duration::from_millis(400);
    // A holder that never refreshes nor releases: a process killed with its permit.
    assert!(store.try_acquire("p", 1, "crashed", lease).await.unwrap());
    assert!(!store.try_acquire("p", 1, "other", lease).await.unwrap());
    tokio::time::sleep(lease + Duration::from_millis(150)).await;
    assert!(store.try_acquire("p", 1, "other", lease).await.unwrap());
    assert!(
        !store.refresh("p", "crashed", lease).await.unwrap(),
        "the crashed holder's lease is gone"
    );
}

#[tokio::test]
async fn a_held_permit_is_refreshed_past_its_lease_and_a_lost_one_is_reported() {
    let (store, _keys) = redis().await;
    let lease = Duration::from_millis(300);
    let mut permit = Permit::try_acquire(&store, "p", 1, lease)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(lease * 3).await;
    assert_eq!(
        store.in_use("p").await.unwrap(),
        1,
        "refreshing kept the permit"
    );
    assert!(!store.try_acquire("p", 1, "other", lease).await.unwrap());

    // Another process steals the slot after the lease is taken away (as a long pause would).
    store.release("p", permit.holder()).await.unwrap();
    assert!(store.try_acquire("p", 1, "thief", lease).await.unwrap());
    tokio::time::timeout(lease, permit.lost())
        .await
        .expect("the refresher notices the loss within a lease");
}

async fn release_wakes_a_waiter<S: PermitStore + Clone>(store: S) {
    // A long lease: if the waiter were not woken by the release it would wait 20 s.
    let lease = Duration::from_secs(20);
    let held = Permit::try_acquire(&store, "p", 1, lease)
        .await
        .unwrap()
        .unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let p = Permit::acquire(&store, "p", 1, lease, Duration::from_secs(30))
                .await
                .unwrap();
            (p.is_some(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.release().await.unwrap();
    let (got, waited) = waiter.await.unwrap();
    assert!(got);
    assert!(
        waited < Duration::from_secs(5),
        "woken by the release, not by the lease ({waited:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_release_wakes_a_waiter() {
    let (store, _keys) = redis().await;
    release_wakes_a_waiter(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_release_wakes_a_waiter() {
    release_wakes_a_waiter(LocalSemaphore::new()).await;
}
