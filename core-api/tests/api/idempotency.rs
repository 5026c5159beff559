//! Idempotent starts: `Idempotency-Key` on `POST /v1/analyses`, in memory and on Redis
//! shared by two instances.

use serde_json::{json, Value};

use crate::helpers::*;

async fn start_with_key(app: &TestApp, key: &str, idem: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/analyses", app.url))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_start_with_the_same_idempotency_key_answers_the_same_analysis() {
    let app = spawn_app().await;
    let first = start_with_key(&app, ACME, "order-42", json!({"cpf": "529.982.247-25"})).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    // The same body, the CPF written another way: the same request.
    let again = start_with_key(&app, ACME, "order-42", json!({"cpf": "52998224725"})).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.headers()["location"],
        format!("/v1/analyses/{}", first["id"].as_str().unwrap())
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    // Its events_url works like the first one's.
    let events = app
        .events(again["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    assert_eq!(events.last().unwrap().1, "analysis.completed");
    // Without a key, or with another key, a new analysis.
    assert_ne!(app.started().await["id"], first["id"]);
    let other: Value = start_with_key(&app, ACME, "order-43", json!({"cpf": "52998224725"}))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(other["id"], first["id"]);
    // Another tenant's equal key is its own.
    let beta: Value = start_with_key(&app, BETA, "order-42", json!({"cpf": "52998224725"}))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(beta["id"], first["id"]);
    let theirs = app.get(BETA, first["analysis_url"].as_str().unwrap()).await;
    assert_eq!(theirs.status(), 404);
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_body_is_refused_with_422_naming_the_header() {
    let app = spawn_app().await;
    let r = start_with_key(&app, ACME, "k-1", json!({"cpf": "529.982.247-25"})).await;
    assert_eq!(r.status(), 202);
    for body in [
        json!({"cpf": "111.444.777-35"}),
        json!({"cpf": "529.982.247-25", "from": "2026-01-01"}),
    ] {
        let r = start_with_key(&app, ACME, "k-1", body).await;
        assert_eq!(r.status(), 422);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["field"], "Idempotency-Key");
        // Neither CPF is repeated back.
        let text = problem.to_string();
        assert!(!text.contains("529") && !text.contains("111"), "{text}");
    }
    // A key that is no key: named, and nothing started.
    for bad in ["", &"k".repeat(256), "two words"] {
        let r = start_with_key(&app, ACME, bad, json!({"cpf": "529.982.247-25"})).await;
        assert_eq!(r.status(), 422, "{bad:?}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["field"], "Idempotency-Key");
    }
    // An invalid body with a key is refused for its body, and does not use the key up.
    let r = start_with_key(&app, ACME, "k-2", json!({"cpf": "123"})).await;
    assert_eq!(r.status(), 422);
    let r = start_with_key(&app, ACME, "k-2", json!({"cpf": "111.444.777-35"})).await;
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_with_one_key_start_one_analysis() {
    let app = spawn_app().await;
    let body = json!({"cpf": "529.982.247-25"});
    let tries = (0..8).map(|_| start_with_key(&app, ACME, "together", body.clone()));
    let mut ids = std::collections::BTreeSet::new();
    let mut fresh = 0;
    for r in futures_util::future::join_all(tries).await {
        assert_eq!(r.status(), 202);
        fresh += usize::from(r.headers().get("idempotent-replayed").is_none());
        let v: Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!((fresh, ids.len()), (1, 1), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_concurrent_starts_with_one_key_on_two_instances_start_one_analysis() {
    let prefix = KeyPrefix::new("core");
    let a = spawn_app_with(|s| on_redis(s, &prefix)).await;
    let b = spawn_app_with(|s| on_redis(s, &prefix)).await;
    let body = json!({"cpf": "529.982.247-25", "from": "2026-09-01"});
    let tries = (0..8).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        start_with_key(app, ACME, "together", body.clone())
    });
    let answers = futures_util::future::join_all(tries).await;
    let mut ids = Vec::new();
    let mut fresh = 0;
    for r in answers {
        assert_eq!(r.status(), 202);
        fresh += usize::from(r.headers().get("idempotent-replayed").is_none());
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(fresh, 1, "exactly one request started the analysis");
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    // The key is kept on Redis for 24 h, under the prefix, and holds no CPF.
    let mut redis = redis_conn().await;
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut redis, format!("{}:idem:*", &*prefix))
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::AsyncCommands::ttl(&mut redis, &keys[0])
        .await
        .unwrap();
    assert!((86_000..=86_400).contains(&ttl), "{ttl}");
    let value: String = redis::AsyncCommands::get(&mut redis, &keys[0])
        .await
        .unwrap();
    assert!(
        !value.contains("52998224725") && !keys[0].contains("together"),
        "{value}"
    );
    // B answers the replay with where the analysis is now.
    let snap_path = format!("/v1/analyses/{}", ids[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b.get_json(ACME, &snap_path).await["status"] == "running" {
        assert!(std::time::Instant::now() < deadline, "the analysis ends");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let replay: Value = start_with_key(&b, ACME, "together", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replay["status"], "completed");
}
