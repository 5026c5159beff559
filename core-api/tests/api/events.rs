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
