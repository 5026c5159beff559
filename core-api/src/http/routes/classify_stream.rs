//! `POST /v1/classifications/stream`: a large batch (NDJSON, or a JSON array) answered as an
//! SSE stream of result batches as they are classified, then a final event with the counts.
//!
//! NDJSON is read line by line as it arrives, so a million rows never sit in memory at once;
//! a JSON array has to be read whole before parsing, within the same byte limit. A malformed
//! row does not stop the batch: it gets a `classification.error` event naming its line (or
//! array index) and is counted as failed, so the client loses nothing silently.
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

async fn ndjson(mut b: Batcher, body: Body) {
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let (mut line_no, mut bytes) = (0u64, 0usize);
    let stop = b.stop.clone();
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = crate::shutdown::stopped(&stop) => {
                let at = format!("line {}", line_no + 1);
                return b.shutting_down(&at).await;
            }
        };
        let chunk = match next {
            Some(Ok(c)) => c,
            Some(Err(_)) => {
                return b
                    .finish(Some("the request body could not be read".into()))
                    .await
            }
            None => break,
        };
        bytes += chunk.len();
        if bytes > MAX_BYTES {
            return b
                .finish(Some(format!("the body is over {MAX_BYTES} bytes")))
                .await;
        }
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            line_no += 1;
            if !handle_line(&mut b, &line[..line.len() - 1], line_no).await {
                return b.stop().await;
            }
            if b.classified + b.failed > MAX_ROWS as u64 {
                return b.finish(Some(too_many())).await;
            }
        }
        if buf.len() > 64 * 1024 {
            line_no += 1;
            b.failed += 1;
            return b
                .finish(Some(format!("line {line_no} is longer than 64 KiB")))
                .await;
        }
    }
    if !buf.is_empty() {
        line_no += 1;
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
    let parsed = serde_json::from_slice::<ClassifyItem>(line).map_err(|e| format!("{e}"));
    b.row(parsed, format!("line {line_no}")).await
}

async fn json_array(mut b: Batcher, body: Body) {
    let stop = b.stop.clone();
    let read = tokio::select! {
        read = axum::body::to_bytes(body, MAX_BYTES) => read,
        _ = crate::shutdown::stopped(&stop) => return b.shutting_down("index 0").await,
    };
    let bytes = match read {
        Ok(b) => b,
        Err(_) => {
            return b
                .finish(Some(format!(
                    "the body is over {MAX_BYTES} bytes or unreadable"
                )))
                .await
        }
    };
    let rows: Vec<serde_json::Value> = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return b
                .finish(Some(format!("the body is not a JSON array: {e}")))
                .await
        }
    };
    if rows.len() > MAX_ROWS {
        return b.finish(Some(too_many())).await;
    }
    for (i, v) in rows.into_iter().enumerate() {
        let parsed = serde_json::from_value::<ClassifyItem>(v).map_err(|e| e.to_string());
        if !b.row(parsed, format!("index {i}")).await {
            return b.stop().await;
        }
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
    state.auth.authorize(api_key(&headers), Scope::Classify)?;
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
        if ndjson_body {
            ndjson(batcher, body).await
        } else {
            json_array(batcher, body).await
        }
    });
    // The same writer as the analysis stream (a retry hint, keep-alives), ended by the batch.
    Ok(batch_response(rx))
}
