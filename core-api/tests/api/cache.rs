//! The partner answer cache: a second analysis of the same person within the cache time asks
//! the identity and income partners nothing, says so, and `Cache-Control: no-cache` asks
//! afresh; answers are kept per tenant; on Redis, instances share them, sealed.

use serde_json::{json, Value};

use crate::helpers::*;

/// Runs an analysis to its end; its events and its snapshot.
async fn analyse(app: &TestApp, key: &str, no_cache: bool) -> (Vec<(u64, String, Value)>, Value) {
    let mut req = app
        .http
        .post(format!("{}/v1/analyses", app.url))
        .bearer_auth(key)
        .json(&json!({"cpf": "529.982.247-25", "from": "2026-10-01", "to": "2026-10-31"}));
    if no_cache {
        req = req.header("Cache-Control", "no-cache");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 202);
    let started: Value = r.json().await.unwrap();
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    assert_eq!(events.last().unwrap().1, "analysis.completed");
    let snapshot = app
        .get_json(key, started["analysis_url"].as_str().unwrap())
        .await;
    (events, snapshot)
}

/// The `partner.completed` event of `kind`.
fn completed<'a>(events: &'a [(u64, String, Value)], kind: &str) -> &'a Value {
    &events
        .iter()
        .find(|e| e.1 == "partner.completed" && e.2["kind"] == kind)
        .unwrap_or_else(|| panic!("no partner.completed for {kind}"))
        .2
}

/// Calls made to `partner`, from the service's metrics.
async fn calls(app: &TestApp, partner: &str) -> f64 {
    let line = format!("integrations_partner_calls_total{{partner=\"{partner}\"}} ");
    metric(&app.metrics().await, &line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_analysis_of_the_same_person_reuses_identity_and_income_answers_and_says_how_old()
{
    let app = spawn_app().await;
    let (first, _) = analyse(&app, ACME, false).await;
    assert!(completed(&first, "consumer").get("cached").is_none());
    let before = (
        calls(&app, "consumer-sim").await,
        calls(&app, "rating-sim").await,
        calls(&app, "movements-sim").await,
    );
    let (second, snapshot) = analyse(&app, ACME, false).await;
    for kind in ["consumer", "rating"] {
        let cached = &completed(&second, kind)["cached"];
        assert!(cached["age_secs"].as_u64().unwrap() < 60, "{cached}");
        assert!(cached["stored_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(snapshot["partners"][kind]["cached"], *cached);
    }
    // Movements are not cached by default: asked again, page by page.
    assert!(completed(&second, "movements").get("cached").is_none());
    assert!(snapshot["partners"]["movements"].get("cached").is_none());
    assert_eq!(calls(&app, "consumer-sim").await, before.0);
    assert_eq!(calls(&app, "rating-sim").await, before.1);
    assert!(calls(&app, "movements-sim").await > before.2);
    // The same debts, from the cache.
    assert_eq!(
        completed(&second, "consumer")["debts"],
        completed(&first, "consumer")["debts"]
    );
    // no-cache asks again (and caches the new answer).
    let (fresh, _) = analyse(&app, ACME, true).await;
    assert!(completed(&fresh, "consumer").get("cached").is_none());
    assert_eq!(calls(&app, "consumer-sim").await, before.0 + 1.0);
    // Another tenant never gets this tenant's answers.
    let (theirs, _) = analyse(&app, BETA, false).await;
    assert!(completed(&theirs, "consumer").get("cached").is_none());
    assert_eq!(calls(&app, "consumer-sim").await, before.0 + 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_instances_share_cached_answers_sealed_and_expiring() {
    let prefix = KeyPrefix::new("core");
    let a = spawn_app_with(|s| on_redis(s, &prefix)).await;
    let b = spawn_app_with(|s| on_redis(s, &prefix)).await;
    analyse(&a, ACME, false).await;
    let (on_b, _) = analyse(&b, ACME, false).await;
    assert!(completed(&on_b, "consumer")["cached"]["age_secs"].is_u64());
    assert_eq!(calls(&b, "consumer-sim").await, 0.0, "B asked nobody");
    let mut redis = redis_conn().await;
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut redis, format!("{}:cache:*", &*prefix))
        .await
        .unwrap();
    // The two answers, and the index of the person's answers an erasure removes.
    let (index, keys): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|k| k.contains(":cache:scope:"));
    assert_eq!(keys.len(), 2, "consumer and rating: {keys:?}");
    assert_eq!(index.len(), 1, "{index:?}");
    let ttl: i64 = redis::AsyncCommands::ttl(&mut redis, &index[0])
        .await
        .unwrap();
    assert!(
        (86_000..=86_400).contains(&ttl),
        "the index expires too: {ttl}"
    );
    for key in keys {
        let ttl: i64 = redis::AsyncCommands::ttl(&mut redis, &key).await.unwrap();
        assert!((86_000..=86_400).contains(&ttl), "{ttl}");
        let value: String = redis::AsyncCommands::get(&mut redis, &key).await.unwrap();
        assert!(!key.contains("52998224725") && !value.contains("52998224725"));
        assert!(
            !value.contains("dividas") && !value.contains("renda"),
            "sealed"
        );
    }
}
