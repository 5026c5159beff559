//! `POST /v1/classifications/stream`: a large batch (NDJSON, or a JSON array) answered as an
//! SSE stream of result batches as they are classified, then a final event with the counts.
//!
//! Both bodies are read row by row as they arrive, each byte looked at once: NDJSON by lines,
//! a JSON array by its top-level elements ([`ArraySplitter`]), so a million rows never sit in
//! memory at once and no row's JSON becomes a generic value first. Every line counts toward
//! the row limit, blank ones too, and the reader yields to the runtime every few hundred rows,
//! so a body of nothing but newlines neither runs for ever nor holds a core from other
//! requests. A malformed row does not stop the batch: it gets a `classification.error` event
//! naming its line (or array index) and is counted as failed, so the client loses nothing
//! silently. Each API key may have [`STREAMS_PER_KEY`] streams open at once.
//!
//! The stream cannot be resumed, so a shutdown does not cut it: the batch stops taking rows,
//! sends what it classified, and ends with `classification.failed` naming the first row it
//! did not classify.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::auth::Scope;
use crate::events::frame;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::api_key;
use crate::http::routes::classify::{classify_one, ClassifyItem};
use crate::server::sse::batch_response;
use crate::state::AppState;

/// Rows one stream may carry.
pub const MAX_ROWS: usize = 1_000_000;
/// Bytes one stream may carry.
pub const MAX_BYTES: usize = 256 * 1024 * 1024;
/// Results per `classification.results` event.
const BATCH: usize = 1000;
/// A line, or an array element, may be at most this long.
const MAX_ROW_BYTES: usize = 64 * 1024;
/// Rows read between two yields to the runtime.
const YIELD_EVERY: u64 = 256;
/// How long a body may send nothing before the batch ends: a client that stalls its upload
/// does not hold its stream's place for ever.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long the rest of a body the batch stopped reading is read and dropped, so that the
/// client receives the final event before the connection closes (see [`drain`]).
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);
/// Classification streams one API key may have open at once.
pub const STREAMS_PER_KEY: usize = 4;

struct Batcher {
    tx: mpsc::Sender<Bytes>,
    state: Arc<AppState>,
    ws: classifier::model::Workspace,
    results: Vec<serde_json::Value>,
    classified: u64,
    failed: u64,
    /// Turns true when the service shuts down.
    stop: watch::Receiver<bool>,
    /// The first row not classified because the service is shutting down.
    stopped_at: Option<String>,
}

impl Batcher {
    /// Classifies one row; `where_` names it in errors. `false` when the batch must stop:
    /// the client has gone, or the service is shutting down ([`Batcher::stop`] tells which).
    async fn row(&mut self, parsed: Result<ClassifyItem, String>, where_: String) -> bool {
        if *self.stop.borrow() {
            self.stopped_at = Some(where_);
            return false;
        }
        let result = parsed
            .and_then(|r| classify_one(&self.state, &mut self.ws, &r))
            .map(|c| serde_json::to_value(c).expect("results serialise"));
        match result {
            Ok(v) => {
                self.classified += 1;
                self.results.push(v);
                if self.results.len() >= BATCH {
                    return self.flush().await;
                }
                true
            }
            Err(problem) => {
                self.failed += 1;
                let data = serde_json::json!({ "at": where_, "problem": problem });
                let e = frame::unnumbered("classification.error", &data.to_string());
                self.tx.send(e).await.is_ok()
            }
        }
    }

    async fn flush(&mut self) -> bool {
        if self.results.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.results);
        let results = frame::unnumbered(
            "classification.results",
            &serde_json::json!({ "results": batch }).to_string(),
        );
        let progress = frame::unnumbered(
            "classification.progress",
            &serde_json::json!({ "classified": self.classified, "failed": self.failed })
                .to_string(),
        );
        self.tx.send(results).await.is_ok() && self.tx.send(progress).await.is_ok()
    }

    /// Ends a batch that [`Batcher::row`] stopped: with `classification.failed` and the counts
    /// when the service is shutting down (nothing, when the client has gone).
    async fn stop(self) {
        if let Some(at) = self.stopped_at.clone() {
            self.shutting_down(&at).await;
        }
    }

    /// Ends the batch at a row longer than [`MAX_ROW_BYTES`] (`at` names it), counted as
    /// failed.
    async fn too_long(mut self, at: String) {
        self.failed += 1;
        self.finish(Some(format!("{at} is longer than 64 KiB")))
            .await
    }

    /// Ends the batch because the service is shutting down, `at` being the first row left.
    async fn shutting_down(self, at: &str) {
        let reason = format!("the service is shutting down; send the rows from {at} on again");
        self.finish(Some(reason)).await
    }

    async fn finish(mut self, error: Option<String>) {
        if !self.flush().await {
            return;
        }
        let (kind, data) = match error {
            None => (
                "classification.completed",
                serde_json::json!({ "classified": self.classified, "failed": self.failed }),
            ),
            Some(e) => (
                "classification.failed",
                serde_json::json!({ "classified": self.classified, "failed": self.failed, "reason": e }),
            ),
        };
        let _ = self
            .tx
            .send(frame::unnumbered(kind, &data.to_string()))
            .await;
    }
}

fn too_many() -> String {
    format!("more than {MAX_ROWS} rows")
}

/// Lets other tasks run every [`YIELD_EVERY`] rows: a body that is all blank lines (or all
/// bad rows) never waits on the client, so it would otherwise keep its core to itself.
async fn pace(rows: u64) {
    if rows % YIELD_EVERY == 0 {
        tokio::task::yield_now().await;
    }
}

/// The next piece of a body, or where the batch must stop: its end, a read error, or the
/// service shutting down (`at` names the first row not read).
async fn next_chunk(
    b: Batcher,
    stream: &mut axum::body::BodyDataStream,
    bytes: &mut usize,
    at: String,
) -> Result<(Batcher, Option<Bytes>), ()> {
    let stop = b.stop.clone();
    let next = tokio::select! {
        next = tokio::time::timeout(BODY_IDLE, stream.next()) => next,
        _ = crate::shutdown::stopped(&stop) => {
            b.shutting_down(&at).await;
            return Err(());
        }
    };
    let Ok(next) = next else {
        let reason = format!(
            "the body sent nothing for {} s; send the rows from {at} on again",
            BODY_IDLE.as_secs()
        );
        b.finish(Some(reason)).await;
        return Err(());
    };
    match next {
        None => Ok((b, None)),
        Some(Err(_)) => {
            b.finish(Some("the request body could not be read".into()))
                .await;
            Err(())
        }
        Some(Ok(chunk)) => {
            *bytes += chunk.len();
            if *bytes > MAX_BYTES {
                b.finish(Some(format!("the body is over {MAX_BYTES} bytes")))
                    .await;
                return Err(());
            }
            Ok((b, Some(chunk)))
        }
    }
}

/// Reads what is left of a body and drops it, for at most [`DRAIN_FOR`] and [`MAX_BYTES`],
/// and not past a shutdown.
async fn drain(stream: &mut axum::body::BodyDataStream, stop: watch::Receiver<bool>) {
    let read_and_drop = async {
        let mut bytes = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            bytes += chunk.len();
            if bytes > MAX_BYTES {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(DRAIN_FOR, read_and_drop) => {}
        _ = crate::shutdown::stopped(&stop) => {}
    }
}

async fn ndjson(mut b: Batcher, stream: &mut axum::body::BodyDataStream) {
    let mut buf: Vec<u8> = Vec::new();
    let (mut line_no, mut bytes) = (0u64, 0usize);
    loop {
        let at = format!("line {}", line_no + 1);
        let chunk = match next_chunk(b, stream, &mut bytes, at).await {
            Ok((batcher, chunk)) => {
                b = batcher;
                chunk
            }
            Err(()) => return,
        };
        let Some(chunk) = chunk else { break };
        // Where the unread part of `buf` starts: the buffer is shifted once per chunk, not
        // once per line.
        let mut start = buf.len();
        buf.extend_from_slice(&chunk);
        let mut from = 0;
        while let Some(nl) = buf[start..].iter().position(|&c| c == b'\n') {
            let line = &buf[from..start + nl];
            from = start + nl + 1;
            start = from;
            line_no += 1;
            if line_no > MAX_ROWS as u64 {
                return b.finish(Some(too_many())).await;
            }
            if line.len() > MAX_ROW_BYTES {
                return b.too_long(format!("line {line_no}")).await;
            }
            if !handle_line(&mut b, line, line_no).await {
                return b.stop().await;
            }
            pace(line_no).await;
        }
        buf.drain(..from);
        if buf.len() > MAX_ROW_BYTES {
            return b.too_long(format!("line {}", line_no + 1)).await;
        }
    }
    if !buf.is_empty() {
        line_no += 1;
        if line_no > MAX_ROWS as u64 {
            return b.finish(Some(too_many())).await;
        }
        let rest = std::mem::take(&mut buf);
        if !handle_line(&mut b, &rest, line_no).await {
            return b.stop().await;
        }
    }
    b.finish(None).await
}

async fn handle_line(b: &mut Batcher, line: &[u8], line_no: u64) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    let parsed = serde_json::from_slice::<ClassifyItem>(line)
        .map_err(|e| integrations::service::without_values(&e.to_string()));
    b.row(parsed, format!("line {line_no}")).await
}

/// Finds the top-level elements of a JSON array as its bytes arrive, without parsing them:
/// it follows only nesting and strings, so each element can be parsed on its own, straight
/// into a row. Each byte is looked at once.
#[derive(Debug, Default)]
struct ArraySplitter {
    state: Place,
    /// Open `{` and `[` inside the current element.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Where the current element starts in the buffer, once it has started.
    start: Option<usize>,
    /// A top-level comma came, and no element after it yet.
    after_comma: bool,
    /// The next byte of the buffer to look at.
    pos: usize,
}

/// Where the splitter is: before the array's `[`, inside the array, or after its `]`.
#[derive(Debug, Default, PartialEq)]
enum Place {
    #[default]
    Before,
    Inside,
    After,
}

impl ArraySplitter {
    /// The next whole element of `buf` (the bytes so far, less those [`ArraySplitter::keep`]
    /// let go), or `None` until more bytes come. An element may be empty (`[1,,2]`): its
    /// parse then fails like any other bad row's.
    fn next(&mut self, buf: &[u8]) -> Result<Option<std::ops::Range<usize>>, &'static str> {
        while self.pos < buf.len() {
            let (at, c) = (self.pos, buf[self.pos]);
            self.pos += 1;
            match self.state {
                Place::Before if c.is_ascii_whitespace() => {}
                Place::Before if c == b'[' => self.state = Place::Inside,
                Place::Before => return Err("it does not start with `[`"),
                Place::After if c.is_ascii_whitespace() => {}
                Place::After => return Err("something follows its closing `]`"),
                Place::Inside if self.in_string => {
                    if self.escaped {
                        self.escaped = false;
                    } else if c == b'\\' {
                        self.escaped = true;
                    } else if c == b'"' {
                        self.in_string = false;
                    }
                }
                Place::Inside => match c {
                    b',' | b']' if self.depth == 0 => {
                        let element = self.start.take();
                        let after_comma = std::mem::replace(&mut self.after_comma, c == b',');
                        if c == b']' {
                            self.state = Place::After;
                            // `[]` and `[1]` end here; `[1,]` leaves an empty last element.
                            if element.is_none() && !after_comma {
                                continue;
                            }
                        }
                        return Ok(Some(element.unwrap_or(at)..at));
                    }
                    b'{' | b'[' => {
                        self.depth += 1;
                        self.start.get_or_insert(at);
                    }
                    // A stray `}` at the top is left for the element's parse to refuse.
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        self.start.get_or_insert(at);
                    }
                    b'"' => {
                        self.in_string = true;
                        self.start.get_or_insert(at);
                    }
                    c if c.is_ascii_whitespace() => {}
                    _ => {
                        self.start.get_or_insert(at);
                    }
                },
            }
        }
        Ok(None)
    }

    /// How many leading bytes of the buffer are no longer needed; the caller drops them and
    /// the splitter's places move with the rest.
    fn release(&mut self) -> usize {
        let n = self.start.unwrap_or(self.pos);
        self.pos -= n;
        if let Some(s) = &mut self.start {
            *s -= n;
        }
        n
    }

    /// The length of the element being read, so far.
    fn pending(&self) -> usize {
        self.start.map_or(0, |s| self.pos - s)
    }

    fn finished(&self) -> bool {
        self.state == Place::After
    }
}

async fn json_array(mut b: Batcher, stream: &mut axum::body::BodyDataStream) {
    let mut buf: Vec<u8> = Vec::new();
    let mut split = ArraySplitter::default();
    let (mut index, mut bytes) = (0u64, 0usize);
    loop {
        let at = format!("index {index}");
        let chunk = match next_chunk(b, stream, &mut bytes, at).await {
            Ok((batcher, chunk)) => {
                b = batcher;
                chunk
            }
            Err(()) => return,
        };
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        loop {
            let element = match split.next(&buf) {
                Ok(Some(element)) => element,
                Ok(None) => break,
                Err(e) => {
                    let reason = format!("the body is not a JSON array: {e}");
                    return b.finish(Some(reason)).await;
                }
            };
            if index >= MAX_ROWS as u64 {
                return b.finish(Some(too_many())).await;
            }
            if element.len() > MAX_ROW_BYTES {
                return b.too_long(format!("index {index}")).await;
            }
            let parsed = serde_json::from_slice::<ClassifyItem>(&buf[element])
                .map_err(|e| integrations::service::without_values(&e.to_string()));
            if !b.row(parsed, format!("index {index}")).await {
                return b.stop().await;
            }
            index += 1;
            pace(index).await;
        }
        let released = split.release();
        buf.drain(..released);
        if split.pending() > MAX_ROW_BYTES {
            return b.too_long(format!("index {index}")).await;
        }
    }
    if !split.finished() {
        let reason = "the body is not a JSON array: it ends before its closing `]`";
        return b.finish(Some(reason.into())).await;
    }
    b.finish(None).await
}

#[utoipa::path(
    post,
    path = "/v1/classifications/stream",
    request_body(content = Vec<ClassifyItem>, description = "NDJSON (`application/x-ndjson`, one movement per line) or a JSON array; up to 1,000,000 rows and 256 MiB", content_type = "application/x-ndjson"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: `classification.results` (batches of 1,000), `classification.progress`, `classification.error` (naming the line or index), then `classification.completed` or `classification.failed` with the counts", content_type = "text/event-stream", body = String),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither NDJSON nor JSON", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn classify_stream(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = state.auth.authorize(api_key(&headers), Scope::Classify)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let ndjson_body = match content_type.as_str() {
        "application/x-ndjson" | "application/jsonl" => true,
        "application/json" => false,
        _ => {
            return Err(ApiError::Rejected(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send `application/x-ndjson` (one transaction per line) or `application/json` (an array)".into(),
            ))
        }
    };
    let slot = state.batch_streams.open(&caller.key_id).ok_or_else(|| {
        ApiError::Rejected(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this key already has {} classification streams open; wait for one to end",
                state.batch_streams.max()
            ),
        )
    })?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let batcher = Batcher {
        tx,
        state: state.clone(),
        ws: Default::default(),
        results: Vec::new(),
        classified: 0,
        failed: 0,
        stop: state.shutdown.clone(),
        stopped_at: None,
    };
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let (stop, keep_open) = (batcher.stop.clone(), batcher.tx.clone());
        if ndjson_body {
            ndjson(batcher, &mut stream).await
        } else {
            json_array(batcher, &mut stream).await
        }
        // The final event is sent. A body the batch stopped reading early is read to its end
        // (and dropped) before the response ends: a connection closed with bytes unread is
        // reset by the kernel, and a client still sending would lose the final event it has
        // not read yet.
        drain(&mut stream, stop).await;
        // The key's stream slot is held until here, draining included, and given back
        // before the stream ends: the client sees its stream end only once the slot is free.
        drop(slot);
        drop(keep_open);
    });
    // The same writer as the analysis stream (a retry hint, keep-alives), ended by the batch.
    Ok(batch_response(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As [`split_bytes`], the elements as text without trailing blanks.
    fn split(body: &str, step: usize) -> Result<(Vec<String>, bool), &'static str> {
        let (found, ended) = split_bytes(body.as_bytes(), step)?;
        // Blanks after an element stay in it (its parse skips them).
        let found = found
            .into_iter()
            .map(|e| String::from_utf8(e).unwrap().trim_end().to_string())
            .collect();
        Ok((found, ended))
    }

    #[test]
    fn an_array_is_split_into_its_elements_however_its_bytes_arrive() {
        let body = r#" [ {"a": [1, {"b": "x,]}\"y"}]}, 2 ,"s,]" , [3,[4]] ] "#;
        for step in [1, 2, 3, 7, body.len()] {
            let (found, ended) = split(body, step).unwrap();
            assert_eq!(
                found,
                [
                    r#"{"a": [1, {"b": "x,]}\"y"}]}"#,
                    "2",
                    r#""s,]""#,
                    "[3,[4]]"
                ],
                "in pieces of {step}"
            );
            assert!(ended);
        }
    }

    #[test]
    fn empty_arrays_empty_elements_and_what_is_not_an_array() {
        assert_eq!(split("[]", 1), Ok((vec![], true)));
        assert_eq!(split("[1,]", 1), Ok((vec!["1".into(), "".into()], true)));
        assert_eq!(
            split("[1,,2]", 2),
            Ok((vec!["1".into(), "".into(), "2".into()], true))
        );
        assert_eq!(split("[1, 2", 2), Ok((vec!["1".into()], false)));
        assert_eq!(split(r#"{"a": 1}"#, 3), Err("it does not start with `[`"));
        assert_eq!(split("[1] x", 1), Err("something follows its closing `]`"));
        // A stray closer does not upset the count: the element is handed on for its parse
        // to refuse.
        assert_eq!(split("[}, 1]", 1), Ok((vec!["}".into(), "1".into()], true)));
    }

    /// Any JSON value, nested a few levels, with strings that hold the splitter's own
    /// punctuation and escapes.
    fn json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e9..1e9f64).prop_map(Value::from),
            "[\\[\\]{},:\"\\\\ a-z]{0,12}|\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\\]\\[,\"]{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The elements the splitter finds in `body` (bytes that need not be UTF-8) fed in pieces
    /// of `step` bytes, then whether the array ended, or the error.
    fn split_bytes(body: &[u8], step: usize) -> Result<(Vec<Vec<u8>>, bool), &'static str> {
        let mut split = ArraySplitter::default();
        let (mut buf, mut found) = (Vec::new(), Vec::new());
        for piece in body.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(e) = split.next(&buf)? {
                found.push(buf[e].to_vec());
            }
            let n = split.release();
            buf.drain(..n);
            assert!(split.pending() <= buf.len());
        }
        Ok((found, split.finished()))
    }

    proptest::proptest! {
        /// Any array, written compactly or pretty, in pieces of any size: the splitter finds
        /// exactly its elements, each of which parses back to what was written.
        #[test]
        fn any_json_array_is_split_into_exactly_its_elements(
            elements in proptest::collection::vec(json(), 0..8),
            pretty: bool,
            step in 1usize..64,
        ) {
            let array = serde_json::Value::Array(elements.clone());
            let body = if pretty {
                serde_json::to_vec_pretty(&array).unwrap()
            } else {
                serde_json::to_vec(&array).unwrap()
            };
            let (found, ended) = split_bytes(&body, step).unwrap();
            proptest::prop_assert!(ended);
            let parsed: Vec<serde_json::Value> = found
                .iter()
                .map(|e| serde_json::from_slice(e).unwrap())
                .collect();
            // Each element as it reads back on its own (a float may read back a hair off).
            let alone: Vec<serde_json::Value> = elements
                .iter()
                .map(|e| serde_json::from_slice(&serde_json::to_vec(e).unwrap()).unwrap())
                .collect();
            proptest::prop_assert_eq!(parsed, alone);
        }

        /// Any bytes in pieces of any size: no panic, and whatever is found lies within the
        /// body, in order.
        #[test]
        fn any_bytes_are_split_or_refused_without_panicking(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            step in 1usize..40,
        ) {
            if let Ok((found, _)) = split_bytes(&body, step) {
                let total: usize = found.iter().map(Vec::len).sum();
                proptest::prop_assert!(total <= body.len());
            }
        }
    }
}
