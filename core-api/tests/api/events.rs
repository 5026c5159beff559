//! An analysis's event stream (SSE): the same events on any connection, and a reconnect with
//! Last-Event-ID that misses and repeats nothing.

use serde_json::Value;

use crate::helpers::*;

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

/// Checks `value` against the OpenAPI schema `schema` of `doc` (the subset utoipa writes:
/// `$ref`, `oneOf`, `type` as a name or a list, `required`, `properties`,
/// `additionalProperties`, `items`). Returns what does not match, with its path. An object
/// may carry only the properties its schema names: an undocumented field is a mismatch.
pub(crate) fn mismatches(doc: &Value, schema: &Value, value: &Value, path: &str) -> Vec<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return mismatches(doc, &doc["components"]["schemas"][name], value, path);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        return if options
            .iter()
            .any(|o| mismatches(doc, o, value, path).is_empty())
        {
            Vec::new()
        } else {
            vec![format!("{path}: matches none of its oneOf")]
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Vec::new(),
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    // An integer is also a number.
    let allowed = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
    if !allowed {
        return vec![format!("{path}: a {actual}, the schema says {types:?}")];
    }
    let mut out = Vec::new();
    match value {
        Value::Object(fields) => {
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !fields.contains_key(r) {
                    out.push(format!("{path}.{r}: required, missing"));
                }
            }
            for (k, v) in fields {
                let p = format!("{path}.{k}");
                match (&schema["properties"][k], &schema["additionalProperties"]) {
                    (Value::Null, Value::Null) => out.push(format!("{p}: not in the schema")),
                    (Value::Null, extra) => out.extend(mismatches(doc, extra, v, &p)),
                    (s, _) => out.extend(mismatches(doc, s, v, &p)),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                out.extend(mismatches(
                    doc,
                    &schema["items"],
                    v,
                    &format!("{path}[{i}]"),
                ));
            }
        }
        _ => {}
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_an_analysis_emits_matches_its_schema_in_openapi() {
    // Three analyses that between them emit all nine kinds of event: one that runs to its
    // summary, one whose partners have no record (partner.failed), and one whose partners
    // answer only 429 with a long Retry-After and whose deadline is a second
    // (partner.queued, then analysis.failed).
    let mut streams = Vec::new();
    let mut apps = Vec::new();
    for adjust in [
        Box::new(|_: &mut core_api::config::Settings| {})
            as Box<dyn FnOnce(&mut core_api::config::Settings)>,
        Box::new(|s| s.simulator.missing_rate = 1.0),
        Box::new(|s| {
            s.simulator.rate_limit_rate = 1.0;
            s.simulator.retry_after_s = 60;
            s.analysis_deadline_secs = 1;
        }),
    ] {
        let app = spawn_app_with(adjust).await;
        let started = app.started().await;
        streams.push(
            app.events(started["events_url"].as_str().unwrap(), None, usize::MAX)
                .await,
        );
        apps.push(app);
    }
    let doc = apps[0].get_json(ACME, "/openapi.json").await;
    let events = &doc["components"]["schemas"]["AnalysisEvent"]["oneOf"];
    let mut seen = std::collections::BTreeSet::new();
    for (id, name, data) in streams.iter().flatten() {
        // `at` is added to every event by the log; the enum documents it once for all.
        let mut data = data.clone();
        let at = data.as_object_mut().unwrap().remove("at");
        assert!(
            at.as_ref().is_some_and(Value::is_u64),
            "event {id} ({name}): `at` must be ms since the epoch, got {at:?}"
        );
        let problems = mismatches(&doc, &schema_of(&doc, name), &data, name);
        assert!(problems.is_empty(), "event {id}: {problems:?} in {data}");
        seen.insert(name.clone());
    }
    // `analysis.resumed` comes only when an instance stops mid-run: `durable.rs` checks it.
    assert_eq!(
        seen.len(),
        9,
        "the three analyses cover every kind of event but analysis.resumed: {seen:?}"
    );
    assert_eq!(
        events.as_array().unwrap().len(),
        10,
        "and the schema documents ten"
    );
}

/// The schema of the event `name` in the OpenAPI document `doc`.
pub(crate) fn schema_of(doc: &Value, name: &str) -> Value {
    doc["components"]["schemas"]["AnalysisEvent"]["oneOf"]
        .as_array()
        .expect("AnalysisEvent is a oneOf of the events")
        .iter()
        .find_map(|e| e["properties"].get(name))
        .unwrap_or_else(|| panic!("no schema for `{name}` in AnalysisEvent"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_analysis_stream_ends_saying_why_when_the_service_shuts_down() {
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;
    // Slow bureaus keep the analysis running while the service stops.
    let app = spawn_app_with(|s| s.simulator.latency_ms = 10_000).await;
    let started = app.started().await;
    let r = app
        .http
        .get(format!(
            "{}{}",
            app.url,
            started["events_url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream().eventsource();
    let mut names = Vec::new();
    while let Some(e) = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .expect("a frame or the end within 30 s")
    {
        let e = e.unwrap();
        if e.event == "analysis.accepted" {
            app.shutdown.send(true).unwrap();
        }
        if !e.data.is_empty() {
            names.push((e.event, e.data));
        }
    }
    // The run ends too (with `analysis.failed`): whichever frame comes first ends the stream,
    // and both say why.
    let (last, data) = names.last().unwrap();
    assert!(
        ["stream.closing", "analysis.failed"].contains(&last.as_str()),
        "{names:?}"
    );
    assert!(data.contains("the service is shutting down"), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_gets_its_cap_of_open_event_streams_even_with_tokens() {
    let app = spawn_app_with(|s| {
        s.max_streams_per_tenant = 2;
        // Every bureau call is refused for a while, so the analysis keeps running.
        s.simulator.rate_limit_rate = 1.0;
        s.simulator.retry_after_s = 30;
    })
    .await;
    let started = app.started().await;
    let url = format!("{}{}", app.url, started["events_url"].as_str().unwrap());
    // Tokens skip the key's rate limit; the cap is the tenant's all the same.
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let first = fresh().get(&url).send().await.unwrap();
    let second = fresh().get(&url).send().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = fresh().get(&url).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    let problem: Value = third.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("2 event streams open"),
        "{problem}"
    );
    // Another tenant is not held back by this one.
    let other = app.started_by(BETA).await;
    let url = format!("{}{}", app.url, other["events_url"].as_str().unwrap());
    assert_eq!(fresh().get(&url).send().await.unwrap().status(), 200);
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_opening_event_streams_too_fast_is_told_to_wait() {
    // One a second, in bursts of ten.
    let app = spawn_app_with(|s| s.stream_opens_per_sec = 1).await;
    let path = |i: usize| format!("{}/v1/analyses/nothing-{i}/events", app.url);
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = app
            .http
            .get(path(i))
            .bearer_auth(ACME)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[404; 10], "{statuses:?}");
    assert_eq!(statuses[11], 429, "{statuses:?}");
    // Another tenant opens as usual.
    let r = app
        .http
        .get(path(99))
        .bearer_auth(BETA)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
