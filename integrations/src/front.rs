//! The HTTP front both services stand behind: accepts connections up to a cap, serves each
//! with hyper, and stops on the shutdown signal, letting open requests finish for a while.
//! HTTP/1.1 only: telling HTTP/2 from HTTP/1 means reading the first bytes with no timeout,
//! and hyper's HTTP/2 has no header or idle timeout at all; the services' clients (browsers
//! through a proxy, the core API, curl) speak HTTP/1.1. `axum::serve` has no bound on connections, on how slowly a request
//! head may arrive, or on how long a kept-alive connection may sit idle; each of those lets
//! a client hold a place (and a file descriptor) for ever, so this is our own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// The bounds of a front.
#[derive(Debug, Clone, Copy)]
pub struct FrontLimits {
    /// Connections served at once; over it the front stops accepting (the kernel's backlog
    /// holds the rest) until one closes.
    pub max_connections: usize,
    /// How long a connection may take to send each request head, the first one included,
    /// and may sit idle between two requests.
    pub header_read: Duration,
    /// How long open requests may run on after the shutdown signal.
    pub drain: Duration,
}

/// Resolves once `stop` turns true (without borrowing its value across an await, so the
/// future can be held in spawned tasks).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Accepts connections on `listener` and hands each to `serve_one` with the shutdown signal,
/// at most `limits.max_connections` at once, until `stop` turns true; then stops accepting
/// and returns once every connection has closed or after `limits.drain`.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: FrontLimits,
    mut stop: watch::Receiver<bool>,
    serve_one: F,
) where
    F: Fn(TcpStream, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let open = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "Accepting a connection failed; retrying in a second.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Small answers and events must not wait for the previous one's acknowledgement.
        let _ = stream.set_nodelay(true);
        let connection = serve_one(stream, stop.clone());
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    let all = limits.max_connections as u32;
    let _ = tokio::time::timeout(limits.drain, open.acquire_many(all)).await;
}

/// Whether the connection sends a first byte within `within` (`false` also when it closed).
/// hyper's header timer starts only once bytes arrive, so without this a connection that
/// sends nothing would hold its place for ever.
pub async fn first_bytes(stream: &TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Serves one HTTP/1.1 connection with hyper until it closes; when `stop` turns true, the
/// request in hand finishes and the connection closes. The first byte must come within
/// `header_read`, then each request head within `header_read` of its first byte, and the
/// connection may sit idle no longer between requests (hyper starts the same timer then).
pub async fn hyper_connection(
    stream: TcpStream,
    router: Router,
    header_read: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if !first_bytes(&stream, header_read).await {
        return;
    }
    // hyper's own HTTP/1 builder: hyper-util's `auto` one first reads 24 bytes to tell the
    // protocol, with no timeout, even when told HTTP/1 only.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read);
    let conn = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
