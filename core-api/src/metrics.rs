//! The service's own counters, and the text of `GET /metrics`: them, then the partner
//! gateway's metrics when it runs in this process.
//!
//! Process-wide atomics: cheap to bump on the hot path, and one process is one instance.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use integrations::gateway::GatewayStatus;

pub static REQUESTS_2XX: AtomicU64 = AtomicU64::new(0);
pub static REQUESTS_4XX: AtomicU64 = AtomicU64::new(0);
pub static REQUESTS_5XX: AtomicU64 = AtomicU64::new(0);
pub static SSE_CLIENTS: AtomicU64 = AtomicU64::new(0);
pub static ANALYSES_STARTED: AtomicU64 = AtomicU64::new(0);
pub static ANALYSES_COMPLETED: AtomicU64 = AtomicU64::new(0);
pub static ANALYSES_FAILED: AtomicU64 = AtomicU64::new(0);
/// Analyses this instance took over from one that stopped.
pub static ANALYSES_RESUMED: AtomicU64 = AtomicU64::new(0);
/// Analyses whose run is on this instance now.
pub static ANALYSES_RUNNING: AtomicU64 = AtomicU64::new(0);
pub static MOVEMENTS_CLASSIFIED: AtomicU64 = AtomicU64::new(0);

/// Counts every response by status class.
pub async fn count_requests(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let counter = match response.status().as_u16() {
        500..=599 => &REQUESTS_5XX,
        400..=499 => &REQUESTS_4XX,
        _ => &REQUESTS_2XX,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    response
}

/// `GET /metrics` in the Prometheus text format: this service's counters, then `partners`,
/// the in-process gateway's state (none when partner calls go to a separate integrations
/// service, which exports its own). The gateway renders its part itself, so its series are
/// the same here as at `integrations serve`.
pub fn prometheus_text(partners: Option<&GatewayStatus>) -> String {
    let mut out = counters();
    if let Some(status) = partners {
        out.push_str(&integrations::metrics::prometheus_text(status));
    }
    out
}

/// This service's counters in the Prometheus text format.
fn counters() -> String {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "# HELP core_api_requests_total HTTP responses by status class.\n\
         # TYPE core_api_requests_total counter\n\
         core_api_requests_total{{class=\"2xx\"}} {}\n\
         core_api_requests_total{{class=\"4xx\"}} {}\n\
         core_api_requests_total{{class=\"5xx\"}} {}\n\
         # HELP core_api_sse_clients Clients following an analysis's events now.\n\
         # TYPE core_api_sse_clients gauge\n\
         core_api_sse_clients {}\n\
         # HELP core_api_analyses_total Analyses by how they ended (started counts all; resumed counts those this instance took over).\n\
         # TYPE core_api_analyses_total counter\n\
         core_api_analyses_total{{state=\"started\"}} {}\n\
         core_api_analyses_total{{state=\"completed\"}} {}\n\
         core_api_analyses_total{{state=\"failed\"}} {}\n\
         core_api_analyses_total{{state=\"resumed\"}} {}\n\
         # HELP core_api_analyses_running Analyses running on this instance now.\n\
         # TYPE core_api_analyses_running gauge\n\
         core_api_analyses_running {}\n\
         # HELP core_api_movements_classified_total Movements classified (analyses and classification endpoints).\n\
         # TYPE core_api_movements_classified_total counter\n\
         core_api_movements_classified_total {}\n",
        l(&REQUESTS_2XX),
        l(&REQUESTS_4XX),
        l(&REQUESTS_5XX),
        l(&SSE_CLIENTS),
        l(&ANALYSES_STARTED),
        l(&ANALYSES_COMPLETED),
        l(&ANALYSES_FAILED),
        l(&ANALYSES_RESUMED),
        l(&ANALYSES_RUNNING),
        l(&MOVEMENTS_CLASSIFIED),
    )
}
