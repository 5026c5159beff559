//! Black-box tests: the real service on port 0, a real HTTP client and a real SSE client
//! (eventsource-stream). Partners are the bundled bureau simulator, started by the service
//! itself as in `cargo run` (the real bureaus cannot be reached here).

use std::time::Duration;

use core_api::config::Settings;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};

mod common;

use common::*;

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
async fn a_stream_on_its_own_connection_and_one_on_a_kept_alive_connection_carry_the_same_events() {
    // A connection that opens with the events request is written by the service's lean SSE
    // front (and closed after the stream); one that carried other requests first is hyper's.
    // Both must be the same stream.
    let app = spawn_app().await;
    let started = app.started().await;
    let url = started["events_url"].as_str().unwrap();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (lean_headers, lean) = app.events_on(&fresh, url, None, usize::MAX).await;
    assert_eq!(lean_headers["connection"], "close");
    assert_eq!(lean.last().unwrap().1, "analysis.completed");
    // One explicit connection carries `/healthz` and then the stream: a pooled client may
    // open a new connection for the second request (the first not yet back in its pool), and
    // that one would be the lean front's.
    let tcp = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut kept, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let get = |path: &str| {
        hyper::Request::get(path)
            .header("host", app.url.trim_start_matches("http://"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap()
    };
    let r = kept.send_request(get("/healthz")).await.unwrap();
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), "ok");
    // Waits for the connection to be idle again; fails, rather than opening another
    // connection, if the service closed it.
    kept.ready().await.unwrap();
    let r = kept.send_request(get(url)).await.unwrap();
    let (status, hyper_headers) = (r.status(), r.headers().clone());
    let body = http_body_util::BodyExt::into_data_stream(r.into_body());
    let via_hyper = read_events(status, &hyper_headers, body, usize::MAX).await;
    assert!(hyper_headers.get("connection").is_none());
    assert_eq!(lean, via_hyper);
    // The lean front answers errors as problems too.
    let r = fresh
        .get(format!("{}{}", app.url, url.replace("token=", "token=x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    let r = fresh
        .get(format!("{}{url}", app.url))
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_last_event_id_misses_and_repeats_nothing() {
    let app = spawn_app().await;
    let started = app.started().await;
    let url = started["events_url"].as_str().unwrap();
    let first = app.events(url, None, 3).await;
    assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
    // The client drops and comes back, by header...
    let rest = app.events(url, Some("3"), usize::MAX).await;
    let all: Vec<u64> = first.iter().chain(&rest).map(|e| e.0).collect();
    assert_eq!(
        all,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "nothing missed, nothing repeated"
    );
    assert_eq!(rest.last().unwrap().1, "analysis.completed");
    // ... or, as EventSource's first request must, by query parameter.
    let tail = app
        .events(
            &format!("{url}&last_event_id={}", all.len() - 2),
            None,
            usize::MAX,
        )
        .await;
    assert_eq!(
        tail.iter().map(|e| e.0).collect::<Vec<_>>(),
        [all.len() as u64 - 1, all.len() as u64]
    );
    // A client that had everything of a finished analysis gets an ending stream, not a hang.
    let none = app
        .events(url, Some(&all.len().to_string()), usize::MAX)
        .await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn keys_tenants_and_scopes_are_enforced() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(format!("{}/v1/analyses", app.url))
        .json(&json!({"cpf": "529.982.247-25"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        app.start("not-a-key-0123456789", json!({"cpf": "529.982.247-25"}))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.start(READER, json!({"cpf": "529.982.247-25"}))
            .await
            .status(),
        403
    );

    let started = app.started().await;
    let path = started["analysis_url"].as_str().unwrap();
    assert_eq!(app.get(ACME, path).await.status(), 200);
    assert_eq!(
        app.get(READER, path).await.status(),
        200,
        "a read key of the same tenant reads"
    );
    assert_eq!(
        app.get(BETA, path).await.status(),
        404,
        "another tenant's analysis does not exist for them"
    );
    let events_with_key = app.get(BETA, &format!("{path}/events")).await;
    assert_eq!(events_with_key.status(), 404);

    // The events token opens only its own analysis.
    let other = app.started().await;
    let token = started["events_url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap();
    let r = app
        .http
        .get(format!(
            "{}{}/events?token={token}",
            app.url,
            other["analysis_url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn every_bad_input_gets_a_problem_naming_it() {
    let app = spawn_app().await;
    let expect = |r: reqwest::Response, status: u16, field: Option<&'static str>| async move {
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], status);
        if let Some(f) = field {
            assert_eq!(p["field"], f, "{p}");
        }
        assert!(
            !p.to_string().contains("529982247"),
            "the CPF is not echoed"
        );
    };
    expect(
        app.start(ACME, json!({"cpf": "529.982.247-24"})).await,
        422,
        Some("cpf"),
    )
    .await;
    expect(
        app.start(ACME, json!({"cpf": "1234"})).await,
        422,
        Some("cpf"),
    )
    .await;
    expect(
        app.start(ACME, json!({"cpf": "529.982.247-25", "from": "01/08/2026"}))
            .await,
        422,
        Some("from"),
    )
    .await;
    expect(
        app.start(
            ACME,
            json!({"cpf": "529.982.247-25", "from": "2026-10-01", "to": "2026-09-01"}),
        )
        .await,
        422,
        Some("from"),
    )
    .await;
    expect(
        app.start(ACME, json!({"cpf": "529.982.247-25", "to": "2999-01-01"}))
            .await,
        422,
        Some("to"),
    )
    .await;
    expect(
        app.start(ACME, json!({"cpf": "529.982.247-25", "surprise": true}))
            .await,
        422,
        None,
    )
    .await;
    let post = |body: &'static str, ct: &'static str| {
        app.http
            .post(format!("{}/v1/analyses", app.url))
            .bearer_auth(ACME)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    expect(
        post("{\"cpf\": ", "application/json").await.unwrap(),
        400,
        None,
    )
    .await;
    expect(
        post("cpf=1", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
        None,
    )
    .await;
    let huge = app
        .http
        .post(format!("{}/v1/analyses", app.url))
        .bearer_auth(ACME)
        .header("content-type", "application/json")
        .body(vec![b' '; 5 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    expect(huge, 413, None).await;
    let unknown = app
        .http
        .get(format!("{}/v1/analyses/an_nope", app.url))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    expect(unknown, 404, None).await;
    let started = app.started().await;
    let bad_last = app
        .http
        .get(format!(
            "{}{}",
            app.url,
            started["events_url"].as_str().unwrap()
        ))
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    expect(bad_last, 400, None).await;
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"id": i.to_string(), "description": "X", "amount": -1.0}))
        .collect();
    let r = app
        .http
        .post(format!("{}/v1/classifications", app.url))
        .bearer_auth(ACME)
        .json(&json!({"transactions": too_many}))
        .send()
        .await
        .unwrap();
    expect(r, 413, None).await;
}

#[tokio::test]
async fn a_batch_of_transactions_is_classified() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(format!("{}/v1/classifications", app.url))
        .bearer_auth(ACME)
        .json(&json!({"transactions": [
            {"id": "a", "description": "PIX RECEBIDO JOAO SILVA", "amount": 250.0, "type": "pix"},
            {"id": "b", "description": "NETFLIX.COM", "amount": -55.9},
            {"id": "c", "description": "DROGARIA SAO PAULO", "amount": -32.1, "mcc": "5912"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let labels: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["TRANSFER_IN", "ENTERTAINMENT", "MEDICAL"]);
    assert_eq!(
        body["results"][0]["runners_up"].as_array().unwrap().len(),
        2
    );
    let r = app
        .http
        .post(format!("{}/v1/classifications", app.url))
        .bearer_auth(ACME)
        .json(&json!({"transactions": [{"id": "x", "description": "", "amount": 1.0}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_streams_one_instance_runs_an_analysis_and_another_streams_it() {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("test-core-{}", uuid::Uuid::new_v4().simple());
    let shared = |s: &mut Settings| {
        s.redis_url = Some(redis.clone());
        s.key_prefix = prefix.clone();
        s.events_token_key = Some(core_api::config::Secret::new("a key both instances share"));
    };
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

/// Reads every SSE event of a response.
async fn all_sse(r: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream().eventsource();
    let mut out = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an event within 60 s")
    {
        let e = e.unwrap();
        out.push((e.event, serde_json::from_str(&e.data).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ndjson_batch_streams_results_and_names_bad_lines() {
    let app = spawn_app().await;
    let mut body = String::new();
    for i in 0..2500 {
        match i {
            10 => body.push_str("{\"id\": \"x\", \"description\": \"NO AMOUNT\"}\n"),
            20 => body.push_str("not json at all\n"),
            _ => body.push_str(&format!(
                "{{\"id\": \"{i}\", \"description\": \"PADARIA REAL {i}\", \"amount\": -12.5}}\n"
            )),
        }
    }
    let r = app
        .http
        .post(format!("{}/v1/classifications/stream", app.url))
        .bearer_auth(ACME)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let events = all_sse(r).await;
    let results: usize = events
        .iter()
        .filter(|e| e.0 == "classification.results")
        .map(|e| e.1["results"].as_array().unwrap().len())
        .sum();
    assert_eq!(results, 2498, "every good row has a result");
    let errors: Vec<&str> = events
        .iter()
        .filter(|e| e.0 == "classification.error")
        .map(|e| e.1["at"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["line 11", "line 21"]);
    let last = events.last().unwrap();
    assert_eq!(last.0, "classification.completed");
    assert_eq!(last.1, json!({"classified": 2498, "failed": 2}));
    assert!(events.iter().any(|e| e.0 == "classification.progress"));
}

#[tokio::test]
async fn a_json_array_batch_streams_too_and_other_content_types_are_refused() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(format!("{}/v1/classifications/stream", app.url))
        .bearer_auth(ACME)
        .json(&json!([{"id": "a", "description": "NETFLIX.COM", "amount": -39.9}]))
        .send()
        .await
        .unwrap();
    let events = all_sse(r).await;
    assert_eq!(events[0].1["results"][0]["label"], "ENTERTAINMENT");
    assert_eq!(
        events.last().unwrap().1,
        json!({"classified": 1, "failed": 0})
    );
    let r = app
        .http
        .post(format!("{}/v1/classifications/stream", app.url))
        .bearer_auth(ACME)
        .header("content-type", "text/csv")
        .body("id,description")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
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
        std::future::pending(),
    )
    .await
    .unwrap();
    let mut config = integrations::Config::embedded(&format!("http://{sim}"));
    for p in &mut config.partners {
        p.retry.max_attempts = 20;
    }
    let gateway = integrations::gateway::Gateway::build(config).await.unwrap();
    let service = integrations::service::Service::start(gateway, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let integrations_url = format!("http://{}", service.addr);

    let app = spawn_app_with(|s| s.integrations_url = Some(integrations_url.clone())).await;
    let started = app.started().await;
    // Every first attempt has been refused (and queued) by the time the bureau recovers.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        reqwest::Client::new()
            .put(format!("http://{sim}/admin/settings"))
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

#[tokio::test]
async fn the_api_is_described_as_openapi_3() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/analyses",
        "/v1/analyses/{id}",
        "/v1/analyses/{id}/events",
        "/v1/classifications",
        "/v1/classifications/stream",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    assert!(doc["paths"]["/v1/analyses"]["post"]["responses"]["422"].is_object());
    for schema in [
        "StartBody",
        "Snapshot",
        "Problem",
        "ClassifyItem",
        "Classified",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no {schema} schema"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    // The documented problem shape is the one the API sends.
    let r = app.start(ACME, json!({"cpf": "1"})).await;
    let problem: Value = r.json().await.unwrap();
    let documented: Vec<&str> = doc["components"]["schemas"]["Problem"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in problem.as_object().unwrap().keys() {
        assert!(
            documented.contains(&key.as_str()),
            "{key} is not documented"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_analyses_and_partner_state() {
    let app = spawn_app().await;
    let started = app.started().await;
    app.events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    };
    assert!(value("core_api_analyses_total{state=\"completed\"}") >= 1.0);
    assert!(value("core_api_movements_classified_total") > 100.0);
    assert!(value("core_api_requests_total{class=\"2xx\"}") >= 2.0);
    assert_eq!(
        value("integrations_breaker_state{partner=\"movements-sim\"}"),
        0.0
    );
    assert!(value("integrations_partner_calls_total{partner=\"movements-sim\"}") >= 1.0);
    assert!(!text.contains("52998224725"), "no CPF in metrics");
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
async fn an_analysis_s_transactions_and_categories_can_be_read_back_by_its_tenant_only() {
    let app = spawn_app().await;
    let started = app.started().await;
    let id = started["id"].as_str().unwrap();
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let stored = events
        .iter()
        .rev()
        .find(|e| e.1 == "transactions.stored")
        .map(|e| e.2["stored"].as_u64().unwrap())
        .unwrap();
    // Every page, by cursor: each movement once, by date.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(
                ACME,
                &format!("/v1/analyses/{id}/transactions?limit=250{cursor}"),
            )
            .await;
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        seen.extend(page["transactions"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, stored);
    let dates: Vec<&str> = seen.iter().map(|t| t["date"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|w| w[0] <= w[1]), "sorted by date");
    // Categories add up to the same rows; a label filter gives that label's count.
    let cats = app
        .get_json(ACME, &format!("/v1/analyses/{id}/categories"))
        .await;
    let cats = cats["categories"].as_array().unwrap();
    assert_eq!(
        cats.iter()
            .map(|c| c["count"].as_u64().unwrap())
            .sum::<u64>(),
        stored
    );
    let first = &cats[0];
    let label = first["label"].as_str().unwrap();
    let only = app
        .get_json(
            ACME,
            &format!("/v1/analyses/{id}/transactions?label={label}&limit=1000"),
        )
        .await;
    assert_eq!(
        only["transactions"].as_array().unwrap().len() as u64,
        first["count"].as_u64().unwrap()
    );
    // Another tenant: 404, on both.
    for path in ["transactions", "categories"] {
        let r = app.get(BETA, &format!("/v1/analyses/{id}/{path}")).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    // A bad parameter is named.
    let r = app
        .get(ACME, &format!("/v1/analyses/{id}/transactions?limit=0"))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_elasticsearch_down_the_analysis_reports_the_storage_failure_and_readiness_is_false() {
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
    let started = app.started().await;
    let events = app
        .events(started["events_url"].as_str().unwrap(), None, usize::MAX)
        .await;
    let last = events.last().unwrap();
    assert_eq!(last.1, "analysis.failed");
    assert_eq!(last.2["reason"], "the transaction store failed");
    let snapshot = app
        .get_json(ACME, started["analysis_url"].as_str().unwrap())
        .await;
    assert_eq!(snapshot["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_its_files_and_a_policy_that_keeps_it_to_this_origin() {
    let app = spawn_app().await;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<form id=\"start\""),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "new EventSource",
        ),
        ("/app.css", "text/css; charset=utf-8", ".chip"),
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
        let policy = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
}
