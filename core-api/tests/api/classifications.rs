//! Classifying transactions without an analysis: a batch in one response, and a large batch
//! (NDJSON or a JSON array) streamed back as SSE.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

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
    let r = post_stream(&app, "application/x-ndjson", body)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stream_ends_with_its_counts_and_where_to_resume_when_the_service_shuts_down() {
    let app = spawn_app().await;
    // A body the test writes as it goes: a first batch of rows and a few more, then nothing
    // until the service stops.
    let (tx, body) = open_body();
    let r = post_stream(&app, "application/x-ndjson", body).send();
    let r = tokio::spawn(r);
    let mut rows = String::new();
    for i in 0..1003 {
        rows.push_str(&format!(
            "{{\"id\": \"{i}\", \"description\": \"PADARIA REAL\", \"amount\": -12.5}}\n"
        ));
    }
    tx.send(Ok(rows)).await.unwrap();
    let r = r.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream().eventsource();
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an event within 60 s")
    {
        let e = e.unwrap();
        if e.event == "classification.results" && events.is_empty() {
            // The first 1,000 are classified: now the service stops.
            app.shutdown.send(true).unwrap();
        }
        if !e.data.is_empty() {
            events.push((e.event, serde_json::from_str::<Value>(&e.data).unwrap()));
        }
    }
    drop(tx);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "classification.failed", "{events:?}");
    // Every row before the one to resume from has its result; nothing was lost or repeated.
    let results: u64 = events
        .iter()
        .filter(|e| e.0 == "classification.results")
        .map(|e| e.1["results"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(
        (&data["classified"], &data["failed"]),
        (&json!(results), &json!(0))
    );
    let reason = data["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("send the rows from line {} on again", results + 1)),
        "{reason}"
    );
    assert!((1000..=1003).contains(&results), "{results}");
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
    let r = post_stream(&app, "text/csv", "id,description")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

/// A request body the test writes as it goes, and the sender that writes it (dropping the
/// sender ends the body).
fn open_body() -> (
    tokio::sync::mpsc::Sender<Result<String, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (tx, body)
}

/// `POST /v1/classifications/stream` with `key`, of `body` as `content_type`.
fn post_stream_as(
    app: &TestApp,
    key: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    app.http
        .post(format!("{}/v1/classifications/stream", app.url))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
}

/// [`post_stream_as`] with the ACME key.
fn post_stream(
    app: &TestApp,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    post_stream_as(app, ACME, content_type, body)
}

/// Streams an NDJSON `body`, checks the stream ends with `classification.failed`, and
/// returns that event's data.
async fn failed_batch(app: &TestApp, body: String) -> Value {
    let r = post_stream(app, "application/x-ndjson", body)
        .send()
        .await
        .unwrap();
    let events = all_sse(r).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "classification.failed", "{events:?}");
    data.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_ndjson_lines_count_toward_the_row_limit() {
    let app = spawn_app().await;
    let blank = "\n".repeat(1_000_001);
    let data = failed_batch(&app, blank).await;
    assert_eq!(data["reason"], "more than 1000000 rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_when_its_batch_fails_reads_the_final_event() {
    let app = spawn_app().await;
    // 8 MiB of blank lines, two at once, a few times: each batch fails at 1,000,001 lines
    // while its client still has megabytes to send. A service that ended the response on
    // unread bytes had its connections reset, and clients lost the final event (most runs).
    for _ in 0..4 {
        let blank = || "\n".repeat(8 * 1024 * 1024);
        let (a, b) = tokio::join!(failed_batch(&app, blank()), failed_batch(&app, blank()));
        assert_eq!(a["reason"], "more than 1000000 rows");
        assert_eq!(b["reason"], "more than 1000000 rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_is_classified_as_it_arrives_element_by_element() {
    let app = spawn_app().await;
    let (tx, body) = open_body();
    let r = tokio::spawn(post_stream(&app, "application/json", body).send());
    let mut rows = String::from("[");
    for i in 0..1000 {
        rows.push_str(&format!(
            "{{\"id\": \"{i}\", \"description\": \"PADARIA REAL\", \"amount\": -12.5}},"
        ));
    }
    rows.push_str("{\"id\": \"bad\"},");
    tx.send(Ok(rows)).await.unwrap();
    let r = r.await.unwrap().unwrap();
    let mut stream = r.bytes_stream().eventsource();
    // The first thousand come back while the array is still open.
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("results before the body ends")
        .unwrap()
        .unwrap();
    assert_eq!(first.event, "classification.results");
    let first: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(first["results"].as_array().unwrap().len(), 1000);
    tx.send(Ok(
        r#"{"id": "last", "description": "NETFLIX.COM", "amount": -39.9}]"#.into(),
    ))
    .await
    .unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an event within 30 s")
    {
        let e = e.unwrap();
        rest.push((e.event, serde_json::from_str::<Value>(&e.data).unwrap()));
    }
    let error = rest.iter().find(|e| e.0 == "classification.error").unwrap();
    assert_eq!(error.1["at"], "index 1000");
    assert_eq!(
        rest.last().unwrap(),
        &(
            "classification.completed".to_string(),
            json!({"classified": 1001, "failed": 1})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_may_hold_only_a_few_classification_streams_open_at_once() {
    let app = spawn_app().await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let (tx, body) = open_body();
        let r = post_stream(&app, "application/x-ndjson", body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        open.push((tx, r));
    }
    let over = post_stream(&app, "application/x-ndjson", "")
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 429);
    assert_eq!(over.headers()["content-type"], "application/problem+json");
    let problem: Value = over.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("4 classification streams open"),
        "{problem}"
    );
    // Another key is not held back by this one's streams.
    let other = post_stream_as(&app, BETA, "application/x-ndjson", "")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    // One stream ends (its body ends and its last event is read): its place is free again.
    let (tx, r) = open.pop().unwrap();
    drop(tx);
    let events = all_sse(r).await;
    assert_eq!(events.last().unwrap().0, "classification.completed");
    let again = post_stream(&app, "application/x-ndjson", "")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_row_limit_counts_a_last_line_without_a_newline_and_a_long_line_stops_the_batch() {
    let app = spawn_app().await;
    let mut body = "\n".repeat(1_000_000);
    body.push_str(r#"{"id": "one-too-many", "description": "NETFLIX.COM", "amount": -39.9}"#);
    let data = failed_batch(&app, body).await;
    assert_eq!(data["reason"], "more than 1000000 rows");
    // A line over 64 KiB, whole in the body, is not parsed: it ends the batch, counted.
    let long = format!(
        "{{\"id\": \"a\", \"description\": \"NETFLIX.COM\", \"amount\": -1}}\n{{\"id\": \"b\", \"description\": \"{}\", \"amount\": -1}}\n",
        "X".repeat(70 * 1024)
    );
    let data = failed_batch(&app, long).await;
    assert_eq!(data["reason"], "line 2 is longer than 64 KiB");
    assert_eq!(
        (&data["classified"], &data["failed"]),
        (&json!(1), &json!(1))
    );
}
