//! Analyses: one started, run against the partners and read back; with several instances
//! sharing Redis, with a separate integrations service answering by callback, with partners
//! that have no record and with Elasticsearch down.

use std::time::Duration;

use core_api::config::Settings;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_analysis_streams_from_accepted_to_completed() {
    let app = spawn_app().await;
    let r = app
        .start(
            ACME,
            json!({"cpf": "529.982.247-25", "from": "2026-08-01", "to": "2026-10-31"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let started: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/analyses/{}", started["id"].as_str().unwrap())
    );

    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "ids increase from 1 without gaps"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    for k in [
        "analysis.accepted",
        "partner.started",
        "partner.completed",
        "classification.progress",
        "transactions.stored",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    assert_eq!(
        *kinds.last().unwrap(),
        "analysis.completed",
        "the stream ends with the summary"
    );
    assert_eq!(
        events[0].2["cpf"], "***.982.247-**",
        "events carry the masked CPF only"
    );
    assert!(
        !serde_json::to_string(&events.iter().map(|e| &e.2).collect::<Vec<_>>())
            .unwrap()
            .contains("52998224725")
    );
    let summary = &events.last().unwrap().2["summary"];
    assert!(summary["transactions"].as_u64().unwrap() > 100);
    assert!(summary["spend_by_category"].as_object().unwrap().len() > 3);

    let snapshot = app.get_json(ACME, &location).await;
    assert_eq!(snapshot["status"], "completed");
    assert_eq!(snapshot["classified"], snapshot["stored"]);
    assert_eq!(snapshot["summary"], *summary);
    for kind in ["consumer", "rating", "movements"] {
        assert_eq!(snapshot["partners"][kind]["state"], "completed");
    }
    // The snapshot carries a fresh events_url (for a client whose first token expired).
    let again = snapshot["events_url"].as_str().unwrap();
    assert!(again.starts_with(&format!("{location}/events?token=")));
    let replay = app
        .events(
            &format!("{again}&last_event_id={}", events.len() - 1),
            None,
            10,
        )
        .await;
    assert_eq!(replay.len(), 1);
    assert_eq!(replay[0].1, "analysis.completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_streams_one_instance_runs_an_analysis_and_another_streams_it() {
    let prefix = KeyPrefix::new("core");
    let shared = |s: &mut Settings| on_redis(s, &prefix);
    let a = spawn_app_with(shared).await;
    let b = spawn_app_with(shared).await;
    let started = a.started().await;
    // The stream is read from B, which never saw the request: the log is in Redis.
    let events = b
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().1, "analysis.completed");
    // Reconnecting to B in the middle works the same.
    let tail = b
        .events(
            started["events_url"].as_str().unwrap(),
            Some("2"),
            usize::MAX,
        )
        .await;
    assert_eq!(tail.first().unwrap().0, 3);
    assert_eq!(tail.len(), ids.len() - 2);
    // A client that already had the final event (or claims an id past it) gets an ending
    // stream with nothing in it, not one that waits for events that will never come.
    let last = ids.len().to_string();
    for seen in [last.as_str(), "999"] {
        let nothing = tokio::time::timeout(
            Duration::from_secs(10),
            b.events(
                started["events_url"].as_str().unwrap(),
                Some(seen),
                usize::MAX,
            ),
        )
        .await
        .expect("the stream ends");
        assert!(nothing.is_empty(), "{nothing:?}");
    }
    // B answers for the snapshot too, and keeps tenants apart.
    let path = started["analysis_url"].as_str().unwrap();
    let snap = b.get_json(ACME, path).await;
    assert_eq!(snap["status"], "completed");
    assert_eq!(b.get(BETA, path).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_streams_an_ended_analysis_whose_final_event_was_lost_still_ends_its_streams() {
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;
    let prefix = KeyPrefix::new("core");
    let app = spawn_app_with(|s| {
        on_redis(s, &prefix);
        // Followers of an ended analysis then wait 2 x 1 + 5 s for its final event.
        s.final_retry_secs = 1;
    })
    .await;
    let started = app.started().await;
    let url = started["events_url"].as_str().unwrap();
    let all = app.events(url, None, usize::MAX).await;
    let last = all.last().unwrap().0;
    // As if Redis had refused the final event for longer than the run retried it.
    let id = started["id"].as_str().unwrap();
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::pipe()
        .cmd("XDEL")
        .arg(format!("{}:ev:{id}", &*prefix))
        .arg(format!("{last}-0"))
        .hdel(format!("{}:ev:{id}:meta", &*prefix), "finished")
        .query(&mut redis)
        .unwrap();
    // The snapshot says the analysis ended: after what the log holds, the stream ends saying
    // the final event was lost instead of waiting for it for ever.
    let r = app
        .http
        .get(format!("{}{url}", app.url))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream().eventsource();
    let (mut ids, mut control) = (Vec::new(), Vec::new());
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a frame or the end within 30 s")
    {
        let e = e.unwrap();
        // A control frame has no id (the parser repeats the last one): tell them by name.
        if e.event.starts_with("stream.") {
            control.push((e.event, e.data));
        } else if !e.data.is_empty() {
            ids.push(e.id.parse::<u64>().unwrap());
        }
    }
    assert_eq!(ids, (2..last).collect::<Vec<_>>());
    assert_eq!(control.len(), 1, "{control:?}");
    assert_eq!(control[0].0, "stream.error");
    assert!(
        control[0].1.contains("final event was not recorded"),
        "{control:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_separate_integrations_service_queued_partner_calls_come_back_by_callback() {
    use integrations::simulator::{self, SimulatorSettings};
    // A bureau that refuses every request with 429 (Retry-After: 1) until the test lets it
    // answer, so requests queue in the integrations service and their outcomes come back by
    // callback.
    let (sim, _) = simulator::serve(
        "127.0.0.1:0".parse().unwrap(),
        SimulatorSettings {
            latency_ms: 5,
            rate_limit_rate: 1.0,
            retry_after_s: 1,
            ..SimulatorSettings::default()
        },
        Some("sim-admin-token"),
        std::future::pending(),
    )
    .await
    .unwrap();
    let (_service, integrations_url) = integrations_service(sim, |config| {
        for p in &mut config.partners {
            p.retry.max_attempts = 20;
        }
    })
    .await;
    let app = spawn_app_with(|s| on_integrations(s, &integrations_url)).await;
    let started = app.started().await;
    // Every first attempt has been refused (and queued) by the time the bureau recovers.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        reqwest::Client::new()
            .put(format!("http://{sim}/admin/settings"))
            .bearer_auth("sim-admin-token")
            .json(&json!({ "rate_limit_rate": 0.0 }))
            .send()
            .await
            .unwrap();
    });
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(*kinds.last().unwrap(), "analysis.completed", "{kinds:?}");
    assert!(
        kinds.contains(&"partner.queued"),
        "some request was queued: {kinds:?}"
    );
    let summary = &events.last().unwrap().2["summary"];
    assert!(summary["transactions"].as_u64().unwrap() > 100);

    // The callback route takes outcomes only with this instance's secret.
    let r = app
        .http
        .post(format!("{}/internal/partner-results?secret=guess", app.url))
        .json(&json!({"request_id": "x", "partner": "y", "status": "ok", "attempts": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_without_a_record_leave_the_analysis_to_finish_without_them() {
    let app = spawn_app_with(|s| s.simulator.missing_rate = 1.0).await;
    let started = app.started().await;
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e.1 == "partner.failed")
        .map(|e| &e.2)
        .collect();
    assert_eq!(failed.len(), 3, "each partner says it had no record");
    assert!(failed
        .iter()
        .all(|f| f["reason"].as_str().unwrap().starts_with("not_found")));
    let last = events.last().unwrap();
    assert_eq!(
        last.1, "analysis.completed",
        "the analysis still ends with a summary"
    );
    assert_eq!(last.2["summary"]["transactions"], 0);
    let snapshot = app
        .get_json(ACME, started["analysis_url"].as_str().unwrap())
        .await;
    assert_eq!(snapshot["partners"]["consumer"]["state"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_elasticsearch_down_starts_are_refused_as_unrecordable_and_readiness_is_false() {
    // A port nothing listens on: Elasticsearch is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_app_with(|s| s.elasticsearch_url = Some(url)).await;
    let r = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // The audit trail lives there too: a start it cannot record asks no bureau.
    let r = app.start(ACME, json!({"cpf": "529.982.247-25"})).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(
        problem["detail"],
        "the service cannot serve this now; try again later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_queued_requests_wait_sealed_and_expiring_in_the_queue_all_instances_share() {
    use redis::AsyncCommands;
    let prefix = KeyPrefix::new("core");
    let app = spawn_app_with(|s| {
        on_redis(s, &prefix);
        // Every bureau call is refused with 429, so every request waits in the retry queue.
        s.simulator.rate_limit_rate = 1.0;
        s.simulator.retry_after_s = 30;
    })
    .await;
    app.started().await;
    let mut redis = redis_conn().await;
    // Under the deployment's prefix, not an instance's: any instance's worker drains it.
    let pattern = format!("{}:q:*", &*prefix);
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..100 {
        keys = redis.keys(&pattern).await.unwrap();
        if keys.iter().any(|k| k.ends_with(":q:jobs")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = keys
        .iter()
        .find(|k| k.ends_with(":q:jobs"))
        .expect("a queued job");
    let stored: Vec<(String, String)> = redis.hgetall(jobs).await.unwrap();
    assert!(!stored.is_empty());
    for (_, job) in &stored {
        assert!(!job.contains("52998224725"), "a CPF in clear: {job}");
        assert!(!job.starts_with('{'), "stored sealed, not as JSON: {job}");
    }
    for key in &keys {
        let ttl: i64 = redis.pttl(key).await.unwrap();
        assert!(ttl > 0, "{key} has no expiry");
    }
}
