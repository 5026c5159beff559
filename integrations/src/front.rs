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

use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// The bounds of a front.
#[derive(Debug, Clone, Copy)]
pub struct FrontLimits {
    /// Connections served at once; a connection over it is answered 503 at once (and
    /// closed), so a full instance says so instead of leaving clients in the kernel's
    /// backlog. Lowered at start to fit the process's file limit (see [`serve`]).
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

/// Connections being answered 503 at once: each holds a descriptor for at most
/// [`SHED_WITHIN`]; beyond this many, a connection over the cap is closed without a word.
const MAX_SHEDDING: usize = 64;
const SHED_WITHIN: Duration = Duration::from_secs(1);

/// Descriptors kept out of the connection cap, for everything else a process opens (Redis,
/// the search store, partners, files): a tenth of the file limit.
fn reserved_descriptors(file_limit: u64) -> u64 {
    (file_limit / 10).max(32)
}

/// Raises the soft limit on open files to the hard limit (Linux starts most processes at
/// 1,024, far below what a server of SSE clients needs) and returns both, or `None` where the
/// limit cannot be read.
pub fn raise_file_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write only the struct passed, which lives
        // on this stack frame for the whole call.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        // `rlim_t` is u64 on 64-bit Linux but not on every Unix.
        #[allow(clippy::unnecessary_cast)]
        Some((limit.rlim_cur as u64, limit.rlim_max as u64))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

impl FrontLimits {
    /// These limits with the connection cap lowered, if need be, to leave
    /// [`reserved_descriptors`] of a soft file limit of `file_limit` free.
    pub fn within_file_limit(self, file_limit: u64) -> Self {
        let room = file_limit
            .saturating_sub(reserved_descriptors(file_limit))
            .max(1);
        FrontLimits {
            max_connections: self
                .max_connections
                .min(usize::try_from(room).unwrap_or(usize::MAX))
                .clamp(1, Semaphore::MAX_PERMITS),
            ..self
        }
    }
}

/// Tells a connection over the cap to come back later, as `application/problem+json`, and
/// closes it; reading what the client sent until it closes too, so the answer is not lost
/// to a reset.
async fn shed(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"the service has as many connections as it can hold; try again in a second"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Accepts connections on `listener` and hands each to `serve_one` with the shutdown signal,
/// at most `limits.max_connections` at once (answering the others 503), until `stop` turns
/// true; then stops accepting and returns once every connection has closed or after
/// `limits.drain`. The process's file limit is raised first, and the cap lowered to fit it;
/// both are logged.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: FrontLimits,
    mut stop: watch::Receiver<bool>,
    serve_one: F,
) where
    F: Fn(TcpStream, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limits = match raise_file_limit() {
        Some((soft, hard)) => {
            let fitted = limits.within_file_limit(soft);
            tracing::info!(
                file_limit = soft,
                hard_file_limit = hard,
                max_connections = fitted.max_connections,
                asked = limits.max_connections,
                "Connection cap set within the file limit."
            );
            fitted
        }
        None => limits.within_file_limit(u64::MAX),
    };
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let shedding = Arc::new(Semaphore::new(MAX_SHEDDING));
    let mut warned: Option<std::time::Instant> = None;
    loop {
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
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "Connection cap reached; answering new connections 503."
                );
                warned = Some(std::time::Instant::now());
            }
            if let Ok(slot) = shedding.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(SHED_WITHIN, shed(stream)).await;
                    drop(slot);
                });
            }
            continue;
        };
        // Small answers and events must not wait for the previous one's acknowledgement.
        let _ = stream.set_nodelay(true);
        let connection = serve_one(stream, stop.clone());
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    // The cap fits a file limit, so it fits a u32; the saturation is for the type's sake.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
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
    // Handlers see the client's address as axum's `ConnectInfo` (the audit trail records it).
    let service = match stream.peer_addr() {
        Ok(peer) => tower::ServiceExt::map_request(router, move |mut r: Request<Incoming>| {
            r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            r
        }),
        Err(_) => return,
    };
    let conn = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> FrontLimits {
        FrontLimits {
            max_connections,
            header_read: Duration::from_secs(10),
            drain: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_connection_cap_leaves_a_tenth_of_the_file_limit_free_and_never_overflows() {
        assert_eq!(limits(50_000).within_file_limit(1_024).max_connections, 922);
        assert_eq!(
            limits(50_000).within_file_limit(1_048_576).max_connections,
            50_000
        );
        // A configured cap beyond anything a semaphore holds is cut, not a panic at start.
        assert_eq!(
            limits(usize::MAX)
                .within_file_limit(u64::MAX)
                .max_connections,
            Semaphore::MAX_PERMITS
        );
        assert_eq!(limits(0).within_file_limit(10).max_connections, 1);
    }

    #[test]
    fn the_soft_file_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = raise_file_limit().expect("a Unix file limit");
        // An unlimited hard limit cannot be the soft one for open files on Linux.
        #[allow(clippy::unnecessary_cast)]
        let infinity = libc::RLIM_INFINITY as u64;
        assert!(soft == hard || hard == infinity, "{soft} < {hard}");
    }
}
