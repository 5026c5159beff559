//! The one place SSE frames are written: an analysis event with its id, and the fixed frames
//! the service sends around the events (the retry hint, keep-alives, and the frames that end a
//! stream early). Each is built once and shared: every client of an analysis receives the same
//! bytes.

use axum::body::Bytes;

/// The first frame of every stream: how long EventSource waits before reconnecting.
pub const RETRY_HINT: &[u8] = b"retry: 3000\n\n";

/// A comment sent when nothing else was for a while; proxies drop quiet connections.
pub const KEEP_ALIVE: &[u8] = b":keep-alive\n\n";

/// The last frame when the service shuts down.
pub const CLOSING: &[u8] = b"event: stream.closing\ndata: {\"reason\":\"the service is shutting down; reconnect with Last-Event-ID\"}\n\n";

/// The last frame of a client whose buffer filled: it fell behind the analysis.
pub const FELL_BEHIND: &[u8] = b"event: stream.error\ndata: {\"reason\":\"the client fell behind; reconnect with Last-Event-ID\"}\n\n";

/// The last frame of a stream whose analysis ended but whose final event was never recorded.
pub const FINAL_LOST: &[u8] = b"event: stream.error\ndata: {\"reason\":\"the analysis ended but its final event was not recorded; read the analysis itself\"}\n\n";

/// The last frame when the event log cannot be read.
pub const UNAVAILABLE: &[u8] = b"event: stream.error\ndata: {\"reason\":\"events are unavailable; reconnect with Last-Event-ID\"}\n\n";

/// An event as an SSE frame: `id`, `event` and one `data` line. `data` is JSON, which has no
/// raw newlines, so one line always holds it.
pub fn event(id: u64, name: &str, data: &str) -> Bytes {
    Bytes::from(format!("id: {id}\nevent: {name}\ndata: {data}\n\n"))
}

/// An event without an id (a stream that cannot be resumed).
pub fn unnumbered(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_frame_is_one_whole_sse_frame() {
        for f in [
            RETRY_HINT,
            KEEP_ALIVE,
            CLOSING,
            FELL_BEHIND,
            FINAL_LOST,
            UNAVAILABLE,
        ] {
            let text = std::str::from_utf8(f).unwrap();
            assert!(text.ends_with("\n\n") && !text[..text.len() - 2].contains("\n\n"));
        }
        assert_eq!(
            &event(7, "transactions.stored", "{\"stored\":1}")[..],
            b"id: 7\nevent: transactions.stored\ndata: {\"stored\":1}\n\n"
        );
    }
}
