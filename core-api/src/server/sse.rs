//! One live SSE client: the frames pushed to it, and the two ways they reach its socket.
//!
//! The events handler answers with [`live_response`]: a response whose body relays the
//! client's frames through hyper, and which also carries a [`LiveHandle`] so that the lean
//! front in [`crate::server`] can take the same frames and write them to the socket itself
//! (see there for why). Whichever takes the frames first owns them; both follow the same
//! rules: a `retry:` hint first, a keep-alive comment when nothing was written for 15 s, a
//! closing frame when the service shuts down, and the end of the stream when the channel
//! closes (after the final event, or when the log cut off a client that fell behind).
//!
//! A batch classification's stream ([`batch_response`]) is written the same way but cannot
//! be resumed, so it gets no closing frame: its producer ends it on shutdown with its counts.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::events::frame::{CLOSING, KEEP_ALIVE as KEEP_ALIVE_FRAME, RETRY_HINT};

/// At most this long without a byte to the client; proxies drop quiet connections.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a client may leave bytes unread before it is cut off.
pub const SLOW_CLIENT: Duration = Duration::from_secs(10);

/// Counts the client while its stream lives, however it ends (a hang-up drops it).
struct Connected;

impl Connected {
    fn new() -> Self {
        crate::metrics::SSE_CLIENTS.fetch_add(1, Ordering::Relaxed);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        crate::metrics::SSE_CLIENTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client's frames, not yet claimed by a writer.
pub struct Live {
    rx: mpsc::Receiver<Bytes>,
    /// Turns true when the service shuts down; `None` for a stream its producer ends.
    stop: Option<watch::Receiver<bool>>,
    /// Counted as a live analysis client while the stream lives.
    _connected: Option<Connected>,
    /// The tenant's open-stream slot, given back when the stream ends.
    _slot: Option<crate::limits::Slot>,
}

impl Live {
    /// Resolves when the service shuts down, if this stream ends then; never otherwise.
    fn shutdown(&self) -> impl std::future::Future<Output = ()> + Send {
        let stop = self.stop.as_ref().map(crate::shutdown::stopped);
        async move {
            match stop {
                Some(stopped) => stopped.await,
                None => std::future::pending().await,
            }
        }
    }
}

/// The response extension through which the lean front claims a live stream.
#[derive(Clone)]
pub struct LiveHandle(Arc<Mutex<Option<Live>>>);

impl LiveHandle {
    /// The stream's frames, unless a writer already has them.
    pub fn take(&self) -> Option<Live> {
        self.0.lock().ok()?.take()
    }
}

/// An analysis's SSE response relaying `rx`, ending with a closing frame when `stop` turns
/// true: through hyper when the response is served as usual, or by [`write_live`] when the
/// lean front claims it through the [`LiveHandle`] extension.
pub fn live_response(
    rx: mpsc::Receiver<Bytes>,
    stop: watch::Receiver<bool>,
    slot: crate::limits::Slot,
) -> Response {
    sse_response(Live {
        rx,
        stop: Some(stop),
        _connected: Some(Connected::new()),
        _slot: Some(slot),
    })
}

/// A stream that cannot be resumed, relaying `rx` until its producer closes it: a shutdown
/// does not cut it (the producer ends it with what it did; the server's drain bounds it).
pub fn batch_response(rx: mpsc::Receiver<Bytes>) -> Response {
    sse_response(Live {
        rx,
        stop: None,
        _connected: None,
        _slot: None,
    })
}

fn sse_response(live: Live) -> Response {
    let slot = LiveHandle(Arc::new(Mutex::new(Some(live))));
    struct Relay {
        slot: Option<LiveHandle>,
        live: Option<Live>,
        keep_alive: Option<tokio::time::Interval>,
        done: bool,
    }
    let relay = Relay {
        slot: Some(slot.clone()),
        live: None,
        keep_alive: None,
        done: false,
    };
    let stream = futures_util::stream::unfold(relay, |mut r| async move {
        if r.done {
            return None;
        }
        if let Some(slot) = r.slot.take() {
            // First poll: claim the frames (nothing to send if the lean front has them).
            r.live = Some(slot.take()?);
            let mut keep_alive = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
            keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            r.keep_alive = Some(keep_alive);
            return Some((Ok::<_, Infallible>(Bytes::from_static(RETRY_HINT)), r));
        }
        let (live, keep_alive) = (r.live.as_mut()?, r.keep_alive.as_mut()?);
        let shutdown = live.shutdown();
        tokio::select! {
            biased;
            next = live.rx.recv() => match next {
                Some(frame) => {
                    keep_alive.reset();
                    Some((Ok(frame), r))
                }
                None => None,
            },
            _ = shutdown => {
                r.done = true;
                Some((Ok(Bytes::from_static(CLOSING)), r))
            }
            _ = keep_alive.tick() => Some((Ok(Bytes::from_static(KEEP_ALIVE_FRAME)), r)),
        }
    });
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.extensions_mut().insert(slot);
    response
}

/// Appends `frame` to `out` as one HTTP/1.1 chunk.
fn push_chunk(out: &mut Vec<u8>, frame: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", frame.len());
    out.extend_from_slice(frame);
    out.extend_from_slice(b"\r\n");
}

/// Writes `bytes` to a client: at once when the socket takes them (the usual case, with no
/// timer), else waiting at most [`SLOW_CLIENT`] for a client that stopped reading.
async fn send(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    let written = match stream.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    if written == bytes.len() {
        return true;
    }
    matches!(
        tokio::time::timeout(SLOW_CLIENT, stream.write_all(&bytes[written..])).await,
        Ok(Ok(()))
    )
}

/// Writes a live stream to the socket, after `head` (the response head, written here so that
/// head and first frame leave in one write), as HTTP/1.1 chunks, until the stream ends, the
/// client hangs up, stops reading, or the service shuts down. Frames that are waiting
/// together leave in one write.
pub async fn write_live(stream: &mut TcpStream, head: Vec<u8>, mut live: Live) {
    let mut out = head;
    push_chunk(&mut out, RETRY_HINT);
    if !send(stream, &out).await {
        return;
    }
    let shutdown = live.shutdown();
    tokio::pin!(shutdown);
    // One timer per client, moved only when it fires (not on every frame): it fires at most
    // every 15 s, and a keep-alive goes out only if nothing else did meanwhile.
    let mut last_write = Instant::now();
    let keep_alive = tokio::time::sleep_until(last_write + KEEP_ALIVE);
    tokio::pin!(keep_alive);
    let mut ended = false;
    while !ended {
        out.clear();
        tokio::select! {
            biased;
            next = live.rx.recv() => match next {
                Some(frame) => {
                    push_chunk(&mut out, &frame);
                    while let Ok(frame) = live.rx.try_recv() {
                        push_chunk(&mut out, &frame);
                    }
                }
                None => ended = true,
            },
            _ = &mut shutdown => {
                push_chunk(&mut out, CLOSING);
                ended = true;
            }
            _ = &mut keep_alive => {
                if last_write.elapsed() >= KEEP_ALIVE {
                    push_chunk(&mut out, KEEP_ALIVE_FRAME);
                } else {
                    keep_alive.as_mut().reset(last_write + KEEP_ALIVE);
                    continue;
                }
            }
            // A client sends nothing after its request; readable means it hung up (or sent
            // something to ignore).
            ready = stream.readable() => {
                let mut scratch = [0u8; 64];
                match (ready, stream.try_read(&mut scratch)) {
                    (Err(_), _) | (_, Ok(0)) => return,
                    (_, Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => return,
                    _ => continue,
                }
            }
        }
        if ended {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        if !send(stream, &out).await {
            return;
        }
        last_write = Instant::now();
        if keep_alive.is_elapsed() {
            keep_alive.as_mut().reset(last_write + KEEP_ALIVE);
        }
    }
    let _ = stream.shutdown().await;
}
