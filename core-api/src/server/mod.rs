//! The HTTP front: accepts connections (capped), serves them with hyper, and writes live SSE
//! streams to their sockets itself.
//!
//! Why not only `axum::serve`: hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for
//! every HTTP/1 connection for as long as it lives (`INIT_BUFFER_SIZE` in hyper 1.x), and an
//! SSE client's connection lives as long as its analysis; 10,000 followers of one instance
//! would hold 160 MiB of buffers that carry nothing after the request. So a connection whose
//! first bytes are a whole `GET …/events` request head, with no body, is read here, answered
//! by the same router (authentication, validation, errors and metrics stay the router's),
//! and if the answer is a live stream its frames go straight to the socket, in chunks, and
//! the connection closes after the stream. Any other answer is written as a plain response.
//! Every other connection — and an events request that arrives later on a kept-alive
//! connection — is hyper's (HTTP/1.1), through the front both services share
//! ([`integrations::front`]: the connection cap, the header and idle timeouts, the drain).

pub mod sse;

use std::time::Duration;

use axum::body::Body;
use axum::http::{self, header, Request, Response};
use axum::Router;
use http_body_util::BodyExt;
use integrations::front::FrontLimits;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use sse::LiveHandle;

/// Request heads longer than this go to hyper (a real events request is far shorter).
const PEEK: usize = 4096;

/// Serves `router` on `listener` within `limits` until `stop` turns true, through the front
/// both services share ([`integrations::front`]), with the lean SSE writer in front of hyper.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: FrontLimits,
    stop: watch::Receiver<bool>,
) {
    integrations::front::serve(listener, limits, stop, move |stream, stop| {
        connection(stream, router.clone(), limits.header_read, stop)
    })
    .await
}

async fn connection(
    mut stream: TcpStream,
    router: Router,
    header_read: Duration,
    stop: watch::Receiver<bool>,
) {
    // A connection that sends nothing does not hold its place for ever.
    if !integrations::front::first_bytes(&stream, header_read).await {
        return;
    }
    // Bytes are there, so the peek answers at once.
    if let Some(head_len) = sse_request_head(&stream).await {
        lean_sse(&mut stream, head_len, router).await;
        return;
    }
    integrations::front::hyper_connection(stream, router, header_read, stop).await
}

/// The length of the connection's first request head if it is a bodiless HTTP/1.1 `GET` of
/// an events stream, all of it already received; `None` leaves the connection to hyper.
async fn sse_request_head(stream: &TcpStream) -> Option<usize> {
    let mut buf = vec![0u8; PEEK];
    let n = stream.peek(&mut buf).await.ok()?;
    sse_head_len(&buf[..n])
}

/// What [`sse_request_head`] decides, from the bytes it peeked.
fn sse_head_len(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = request.parse(buf).ok()? else {
        return None;
    };
    let path = request.path?.split('?').next()?;
    let bodiless = !request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
    });
    (request.method == Some("GET")
        && request.version == Some(1)
        && path.starts_with("/v1/analyses/")
        && path.ends_with("/events")
        && bodiless)
        .then_some(len)
}

/// Reads the request head `sse_request_head` found, asks the router, and writes its answer.
async fn lean_sse(stream: &mut TcpStream, head_len: usize, router: Router) {
    use tokio::io::AsyncReadExt;
    let mut head = vec![0u8; head_len];
    if stream.read_exact(&mut head).await.is_err() {
        return;
    }
    let Some(mut request) = to_request(&head) else {
        return;
    };
    if let Ok(peer) = stream.peer_addr() {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
    }
    drop(head);
    let Ok(mut response) = router.oneshot(request).await;
    if response.status() == http::StatusCode::OK {
        if let Some(live) = response
            .extensions()
            .get::<LiveHandle>()
            .and_then(LiveHandle::take)
        {
            let head = response_head(&response, "transfer-encoding: chunked\r\n");
            drop(response);
            sse::write_live(stream, head, live).await;
            return;
        }
    }
    // Not a live stream (an error, most often): a plain response with its length.
    response.headers_mut().remove(header::TRANSFER_ENCODING);
    let (parts, body) = response.into_parts();
    let Ok(Ok(body)) = tokio::time::timeout(Duration::from_secs(10), body.collect()).await else {
        return;
    };
    let body = body.to_bytes();
    let mut out = response_head(
        &Response::from_parts(parts, ()),
        &format!("content-length: {}\r\n", body.len()),
    );
    out.extend_from_slice(&body);
    use tokio::io::AsyncWriteExt;
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// The request the head describes, with an empty body.
fn to_request(head: &[u8]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(head).ok()?;
    let mut request = Request::builder()
        .method(http::Method::GET)
        .uri(parsed.path?)
        .version(http::Version::HTTP_11);
    for h in parsed.headers.iter() {
        request = request.header(h.name, h.value);
    }
    request.body(Body::empty()).ok()
}

/// A response's status line and headers, plus `framing` (its length or chunking) and
/// `connection: close`: the connection ends with this response.
fn response_head<B>(response: &Response<B>, framing: &str) -> Vec<u8> {
    let status = response.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH || name == header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(framing.as_bytes());
    out.extend_from_slice(b"connection: close\r\n");
    let date = httpdate(std::time::SystemTime::now());
    out.extend_from_slice(format!("date: {date}\r\n\r\n").as_bytes());
    out
}

/// An HTTP date (RFC 9110 IMF-fixdate).
fn httpdate(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_head_has_its_status_headers_framing_and_closes() {
        let response = Response::builder()
            .status(404)
            .header("content-type", "application/problem+json")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let head = String::from_utf8(response_head(&response, "content-length: 12\r\n")).unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(head.contains("content-type: application/problem+json\r\n"));
        assert_eq!(head.matches("content-length").count(), 1, "{head}");
        assert!(head.contains("content-length: 12\r\nconnection: close\r\n"));
        assert!(head.ends_with("GMT\r\n\r\n"));
    }

    #[test]
    fn a_request_head_becomes_a_request_with_its_headers() {
        let r = to_request(
            b"GET /v1/analyses/a/events?token=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.uri().path(), "/v1/analyses/a/events");
        assert_eq!(r.uri().query(), Some("token=t"));
        assert_eq!(r.headers()["last-event-id"], "3");
        assert!(to_request(b"GET /\xff HTTP/1.1\r\n\r\n").is_none());
    }

    /// Request heads as clients get them wrong: the events path with any query, headers of
    /// any bytes, bodies announced or not, bare `\n`s, cut anywhere.
    fn head() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let line = prop_oneof![
            Just(b"Host: x".to_vec()),
            Just(b"Content-Length: 5".to_vec()),
            Just(b"Transfer-Encoding: chunked".to_vec()),
            Just(b"Upgrade: websocket".to_vec()),
            "Last-Event-ID: [ -~]{0,24}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ];
        (
            "(GET|POST|get|GET ) /v1/analyses/[ -~]{0,30}/events(\\?[ -~]{0,30})? HTTP/1\\.[01]"
                .prop_map(String::into_bytes),
            prop::collection::vec(line, 0..6),
            prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..])],
            0usize..400,
        )
            .prop_map(|(start, lines, eol, cut)| {
                let mut head = start;
                for l in lines {
                    head.extend_from_slice(eol);
                    head.extend_from_slice(&l);
                }
                head.extend_from_slice(eol);
                head.extend_from_slice(eol);
                head.truncate(cut.max(1));
                head
            })
    }

    proptest::proptest! {
        /// Any peeked bytes: no panic, and a head taken for the lean path is a whole,
        /// bodiless `GET` of an events stream that `to_request` turns into a `GET` (or
        /// refuses), never more than was peeked.
        #[test]
        fn any_bytes_are_left_to_hyper_or_read_as_a_bodiless_events_get(
            bytes in proptest::prop_oneof![head(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)],
        ) {
            if let Some(len) = sse_head_len(&bytes) {
                proptest::prop_assert!(len <= bytes.len());
                let head = String::from_utf8_lossy(&bytes[..len]).to_ascii_lowercase();
                proptest::prop_assert!(bytes.starts_with(b"GET /v1/analyses/"));
                for refused in ["content-length:", "transfer-encoding:", "upgrade:"] {
                    proptest::prop_assert!(!head.contains(&format!("\n{refused}")), "{}", head);
                }
                if let Some(request) = to_request(&bytes[..len]) {
                    proptest::prop_assert_eq!(request.method(), http::Method::GET);
                }
            }
            let _ = to_request(&bytes);
        }
    }
}
