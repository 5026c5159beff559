//! What LGPD asks of the service, black-box: every access to a person's data is in the
//! tenant's audit trail (with no CPF in it); an analysis can be erased from every store; and
//! analyses past the retention are erased on their own. On both transaction stores: the
//! embedded one, and `osmem-server` (an in-memory OpenSearch-compatible server from PyPI, not
//! Elasticsearch; skipped when it is not installed unless `REQUIRE_OSMEM` is set).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const CPF: &str = "529.982.247-25";

/// Starts an analysis with `key` and follows it to its end; its id.
async fn analyse(app: &TestApp, key: &str) -> String {
    let r = app
        .start(
            key,
            json!({"cpf": CPF, "from": "2026-10-01", "to": "2026-10-31"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let started: Value = r.json().await.unwrap();
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    assert_eq!(events.last().unwrap().1, "analysis.completed");
    started["id"].as_str().unwrap().to_string()
}

/// The tenant's audit records for `query` (a query string), newest first.
async fn audit(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let r = app.get(key, &format!("/v1/audit?{query}")).await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    page["records"].as_array().unwrap().clone()
}

fn actions(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect()
}

async fn delete(app: &TestApp, key: &str, id: &str) -> reqwest::Response {
    app.http
        .delete(format!("{}/v1/analyses/{id}", app.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_of_an_analysis_is_in_its_tenant_s_audit_trail_newest_first_without_the_cpf() {
    let app = spawn_app().await;
    let id = analyse(&app, ACME).await;
    for path in ["", "/transactions", "/categories"] {
        let r = app.get(READER, &format!("/v1/analyses/{id}{path}")).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let records = audit(&app, ACME, &format!("analysis={id}")).await;
    // Newest first (records of one millisecond in any order).
    let at: Vec<&str> = records.iter().map(|r| r["at"].as_str().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "{at:?}");
    let mut seen = actions(&records);
    seen.sort();
    assert_eq!(
        seen,
        [
            "analysis.events",
            "analysis.read",
            "analysis.start",
            "categories.read",
            "transactions.read",
        ]
    );
    let by = |action: &str| records.iter().find(|r| r["action"] == action).unwrap();
    // The reads were the read-only key's, the start the full key's, the stream the token's.
    assert_eq!(
        by("categories.read")["key_id"],
        by("analysis.read")["key_id"]
    );
    assert_ne!(
        by("categories.read")["key_id"],
        by("analysis.start")["key_id"]
    );
    assert_eq!(by("analysis.events")["key_id"], "events-token");
    for r in &records {
        assert_eq!(r["analysis_id"], id.as_str());
        assert_eq!(r["client"], "127.0.0.1");
    }
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("52998224725") && !text.contains("529.982"));
    assert!(!text.contains(ACME) && !text.contains(READER));
    // Another tenant sees none of it; a key without `audit:read` may not look.
    assert!(audit(&app, BETA, &format!("analysis={id}"))
        .await
        .is_empty());
    assert_eq!(app.get(READER, "/v1/audit").await.status(), 403);
    assert_eq!(app.get(ACME, "/v1/audit?since=x").await.status(), 422);
    assert_eq!(app.get(ACME, "/v1/audit?cursor=nope").await.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_finds_a_person_by_cpf_pages_and_exports_as_json_lines() {
    let app = spawn_app().await;
    let first = analyse(&app, ACME).await;
    let other = app
        .start(ACME, json!({"cpf": "111.444.777-35"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let second = analyse(&app, ACME).await;
    let search = |body: Value| {
        app.http
            .post(format!("{}/v1/audit/search", app.url))
            .bearer_auth(ACME)
            .json(&body)
            .send()
    };
    let r = search(json!({"cpf": "52998224725"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let person = r.json::<Value>().await.unwrap()["records"]
        .as_array()
        .unwrap()
        .clone();
    let ids: std::collections::BTreeSet<&str> = person
        .iter()
        .map(|r| r["analysis_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str()].into_iter().collect(),
        "the other person's analysis {} is not theirs",
        other["id"]
    );
    assert_eq!(search(json!({"cpf": "123"})).await.unwrap().status(), 422);
    assert_eq!(search(json!({"who": 1})).await.unwrap().status(), 422);
    // A CPF is never taken from a URL, where proxies would log it.
    let r = app.get(ACME, "/v1/audit?cpf=52998224725").await;
    assert_eq!(r.status(), 422);
    assert!(!r.text().await.unwrap().contains("52998224725"));
    let r = app
        .get(ACME, "/v1/audit?from=2026-11-02&to=2026-11-01")
        .await;
    assert_eq!(r.status(), 422);
    let r = app
        .http
        .post(format!("{}/v1/audit/export", app.url))
        .bearer_auth(ACME)
        .json(&json!({"cpf": "529.982.247-25"}))
        .send()
        .await
        .unwrap();
    let exported = r.text().await.unwrap();
    assert_eq!(exported.lines().count(), person.len());
    // Paged newest first: the pages together are the whole trail, once each.
    let all = audit(&app, ACME, "").await;
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/audit?limit=2&cursor={c}"),
            None => "/v1/audit?limit=2".to_string(),
        };
        let page = app.get_json(ACME, &q).await;
        paged.extend(page["records"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let r = app.get(ACME, "/v1/audit/export").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, all);
    let future = app.get(ACME, "/v1/audit/export?from=2100-01-01").await;
    assert_eq!(future.text().await.unwrap(), "");
}

/// Erases a finished analysis and checks every place it was: snapshot, events, transactions,
/// cached answers (a new analysis of the person asks the partners again).
async fn an_erased_analysis_leaves_nothing(app: &TestApp) {
    let id = analyse(app, ACME).await;
    let again = analyse(app, ACME).await;
    assert_eq!(delete(app, BETA, &id).await.status(), 404);
    assert_eq!(delete(app, READER, &id).await.status(), 403);
    let r = delete(app, ACME, &id).await;
    assert_eq!(r.status(), 204);
    for path in ["", "/transactions", "/categories", "/events"] {
        let r = app.get(ACME, &format!("/v1/analyses/{id}{path}")).await;
        assert_eq!(r.status(), 404, "{path} after the erasure");
    }
    assert_eq!(delete(app, ACME, &id).await.status(), 404);
    // The person's cached answers went with it: the next analysis asks the partners.
    let r = app
        .start(
            ACME,
            json!({"cpf": CPF, "from": "2026-10-01", "to": "2026-10-31"}),
        )
        .await;
    let started: Value = r.json().await.unwrap();
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let consumer = events
        .iter()
        .find(|e| e.1 == "partner.completed" && e.2["kind"] == "consumer")
        .unwrap();
    assert!(consumer.2.get("cached").is_none(), "{:?}", consumer.2);
    // The other analysis of the person is untouched; the erasure is in the trail.
    assert_eq!(
        app.get(ACME, &format!("/v1/analyses/{again}/transactions"))
            .await
            .status(),
        200
    );
    let records = audit(app, ACME, &format!("analysis={id}")).await;
    assert_eq!(records[0]["action"], "analysis.erase");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_analysis_is_gone_from_the_embedded_store_and_its_erasure_is_audited() {
    an_erased_analysis_leaves_nothing(&spawn_app().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_analysis_is_gone_from_an_elasticsearch_compatible_store() {
    let Some(server) = start_osmem() else { return };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let app = spawn_app_with(|s| {
        s.elasticsearch_url = Some(server.url.clone());
        s.elasticsearch_index = format!("erase-{run}");
        s.elasticsearch_audit_index = format!("audit-{run}");
    })
    .await;
    an_erased_analysis_leaves_nothing(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_an_erasure_removes_the_cached_answers_and_the_snapshot() {
    let prefix = KeyPrefix::new("erase");
    let app = spawn_app_with(|s| on_redis(s, &prefix)).await;
    let id = analyse(&app, ACME).await;
    let redis = redis_conn().await;
    let keys = |pattern: String| {
        let mut redis = redis.clone();
        async move {
            let keys: Vec<String> = redis::AsyncCommands::keys(&mut redis, pattern)
                .await
                .unwrap();
            keys
        }
    };
    assert!(!keys(format!("{}:cache:*", &*prefix)).await.is_empty());
    assert_eq!(keys(format!("{}:an:{id}", &*prefix)).await.len(), 1);
    assert_eq!(delete(&app, ACME, &id).await.status(), 204);
    assert_eq!(
        keys(format!("{}:cache:*", &*prefix)).await,
        Vec::<String>::new()
    );
    assert!(keys(format!("{}:an:{id}", &*prefix)).await.is_empty());
    assert!(keys(format!("{}:ev:{id}*", &*prefix)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_analysis_is_not_erased() {
    let app = spawn_app_with(|s| s.simulator.latency_ms = 2_000).await;
    let started = app.started().await;
    let id = started["id"].as_str().unwrap();
    let r = delete(&app, ACME, id).await;
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("running"));
}

/// With a retention of a second, a finished analysis goes on its own within a few sweeps,
/// and the trail says the service erased it.
async fn analyses_past_the_retention_go(app: &TestApp) {
    let id = analyse(app, ACME).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = app
            .get(ACME, &format!("/v1/analyses/{id}/transactions"))
            .await;
        if r.status() == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not erased in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = audit(app, ACME, &format!("analysis={id}")).await;
    assert_eq!(records[0]["action"], "analysis.retention_erase");
    assert_eq!(records[0]["key_id"], "service");
}

fn short_retention(s: &mut core_api::config::Settings) {
    s.retention_days = 1.0 / 86_400.0;
    s.retention_sweep_secs = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyses_past_the_retention_are_erased_on_their_own_from_the_embedded_store() {
    analyses_past_the_retention_go(&spawn_app_with(short_retention).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyses_past_the_retention_are_erased_on_their_own_from_an_elasticsearch_compatible_store(
) {
    let Some(server) = start_osmem() else { return };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let app = spawn_app_with(|s| {
        short_retention(s);
        s.elasticsearch_url = Some(server.url.clone());
        s.elasticsearch_index = format!("retain-{run}");
        s.elasticsearch_audit_index = format!("audit-{run}");
    })
    .await;
    analyses_past_the_retention_go(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_separate_integrations_service_an_erasure_forgets_the_person_s_answers_there() {
    let (sim, _) = integrations::simulator::serve(
        "127.0.0.1:0".parse().unwrap(),
        integrations::simulator::SimulatorSettings::default(),
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    let (service, url) = integrations_service(sim, |_| {}).await;
    let app = spawn_app_with(|s| on_integrations(s, &url)).await;
    let consumer_cached = |events: &[(u64, String, Value)]| {
        events
            .iter()
            .find(|e| e.1 == "partner.completed" && e.2["kind"] == "consumer")
            .unwrap()
            .2
            .get("cached")
            .is_some()
    };
    let run = || async {
        let started = app.started().await;
        let events = app
            .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
            .await;
        assert_eq!(events.last().unwrap().1, "analysis.completed");
        (started["id"].as_str().unwrap().to_string(), events)
    };
    let (first, events) = run().await;
    assert!(!consumer_cached(&events));
    let (_, events) = run().await;
    assert!(consumer_cached(&events), "the service cached the answer");
    assert_eq!(delete(&app, ACME, &first).await.status(), 204);
    let (_, events) = run().await;
    assert!(
        !consumer_cached(&events),
        "the erasure reached the integrations service's cache"
    );
    service.stop().await;
}
