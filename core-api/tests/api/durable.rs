//! Durable runs on Redis: an analysis whose instance stops is taken over by another and
//! completes there, its followers seeing every event once and in order. (A process killed
//! outright, and Redis restarted, are in `tests/chaos.rs`.)

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// Two instances on one Redis and one store (as on one Elasticsearch; here one SQLite file in
/// `store`), whose bundled partners take `latency_ms` a request, with about 2,000 movements
/// (five pages) over the default window.
async fn pair(prefix: &KeyPrefix, store: &std::path::Path, latency_ms: u64) -> (TestApp, TestApp) {
    let shape = |s: &mut core_api::config::Settings| {
        on_redis(s, prefix);
        s.data_dir = store.to_path_buf();
        s.run_lease_ms = 2_000;
        s.simulator.latency_ms = latency_ms;
        s.simulator.latency_jitter_ms = 0;
        s.simulator.movements_per_day = Some(2000.0 / 91.0);
    };
    (spawn_app_with(shape).await, spawn_app_with(shape).await)
}

/// The stored transactions of an analysis, read through `app`.
async fn stored(app: &TestApp, id: &str) -> Vec<(String, String, i64)> {
    stored_rows(|path| async move { app.get_json(ACME, &path).await }, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_an_analysis_whose_instance_stops_is_handed_on_and_completes_with_nothing_missing_or_repeated(
) {
    let prefix = KeyPrefix::new("core");
    let store = tempfile::tempdir().unwrap();
    let (a, b) = pair(&prefix, store.path(), 150).await;
    let body = json!({"cpf": "529.982.247-25"});
    let started: Value = a.start(ACME, body.clone()).await.json().await.unwrap();
    let events_url = started["events_url"].as_str().unwrap().to_string();
    // A follower on B, reading everything until the end.
    let follower = {
        let (url, http) = (b.url.clone(), b.http.clone());
        let events_url = events_url.clone();
        tokio::spawn(async move {
            let r = http.get(format!("{url}{events_url}")).send().await.unwrap();
            let (status, headers) = (r.status(), r.headers().clone());
            read_events(status, &headers, r.bytes_stream(), usize::MAX).await
        })
    };
    // A stops once the first page is stored.
    let id = started["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b.get_json(ACME, &format!("/v1/analyses/{id}")).await["stored"] == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a first page is stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown.send(true).unwrap();
    let events = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the follower's stream ends")
        .unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "every id once, in order"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(*kinds.last().unwrap(), "analysis.completed", "{kinds:?}");
    let resumed = events
        .iter()
        .find(|e| e.1 == "analysis.resumed")
        .unwrap_or_else(|| panic!("no analysis.resumed in {kinds:?}"));
    assert!(
        resumed.2["pages_done"].as_u64().unwrap() >= 1,
        "{}",
        resumed.2
    );
    let doc = b.get_json(ACME, "/openapi.json").await;
    let mut data = resumed.2.clone();
    data.as_object_mut().unwrap().remove("at");
    let schema = crate::events::schema_of(&doc, "analysis.resumed");
    let problems = crate::events::mismatches(&doc, &schema, &data, "analysis.resumed");
    assert!(problems.is_empty(), "{problems:?} in {data}");
    // Pages already stored were not classified again: the progress events count each page once.
    let pages: Vec<u64> = events
        .iter()
        .filter(|e| e.1 == "classification.progress")
        .map(|e| e.2["page"].as_u64().unwrap())
        .collect();
    let mut distinct = pages.clone();
    distinct.dedup();
    assert!(
        pages.len() <= distinct.len() + 1,
        "at most the page in hand redone: {pages:?}"
    );
    // The same figures and rows as an analysis of the same person that ran through, on B.
    let summary = &events.last().unwrap().2["summary"];
    let again: Value = b.start(ACME, body).await.json().await.unwrap();
    let whole = b
        .events(again["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let whole_summary = &whole.last().unwrap().2["summary"];
    assert_eq!(summary, whole_summary);
    let (interrupted, through) = (
        stored(&b, &id).await,
        stored(&b, again["id"].as_str().unwrap()).await,
    );
    assert_eq!(
        interrupted.len() as u64,
        summary["transactions"].as_u64().unwrap()
    );
    assert_eq!(interrupted, through);
    let snapshot = b.get_json(ACME, &format!("/v1/analyses/{id}")).await;
    assert_eq!(snapshot["status"], "completed");
    assert_eq!(snapshot["stored"], interrupted.len() as u64, "{snapshot}");
    // The run's record (which holds the CPF) is gone once the analysis ended.
    let mut redis = redis_conn().await;
    let left: Vec<String> = redis::AsyncCommands::keys(&mut redis, format!("{}:run:*", &*prefix))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}
