//! The gateway's metrics in the Prometheus text format, wherever the gateway runs: at
//! `GET /metrics` of `integrations serve`, and appended to the core API's own metrics when it
//! runs the gateway in process. One rendering, so both shapes export the same series.

use std::fmt::Write;

use crate::gateway::GatewayStatus;
use crate::partner::{BreakerState, PartnerStatus};

/// The gateway's state in the Prometheus text format: partner calls, failures, deferrals,
/// latency, breaker state and openings, permits in use, queue depth and age.
pub fn prometheus_text(status: &GatewayStatus) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per = |f: &dyn Fn(&PartnerStatus) -> f64| {
        status
            .partners
            .iter()
            .map(|p| (format!("{{partner=\"{}\"}}", p.name), f(p)))
            .collect::<Vec<_>>()
    };
    family(
        "integrations_partner_calls_total",
        "Partner calls made.",
        "counter",
        per(&|p| p.calls as f64),
    );
    family(
        "integrations_partner_failures_total",
        "Partner calls that failed (5xx, timeout, connection, malformed).",
        "counter",
        per(&|p| p.failures as f64),
    );
    family(
        "integrations_partner_deferred_total",
        "Requests deferred (no permit, open circuit, rate, 429).",
        "counter",
        per(&|p| p.deferred as f64),
    );
    family(
        "integrations_partner_latency_ms",
        "Latency of the last successful call.",
        "gauge",
        per(&|p| p.last_latency_ms as f64),
    );
    family(
        "integrations_breaker_state",
        "Circuit state: 0 closed, 1 open, 2 half-open.",
        "gauge",
        per(&|p| match p.breaker {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }),
    );
    family(
        "integrations_breaker_opened_total",
        "Times the circuit opened.",
        "counter",
        per(&|p| p.times_opened as f64),
    );
    family(
        "integrations_permits_in_use",
        "Semaphore permits held, all instances.",
        "gauge",
        per(&|p| p.permits_in_use.unwrap_or(0) as f64),
    );
    let q = &status.queue;
    family(
        "integrations_queue_due",
        "Queued requests waiting for their time.",
        "gauge",
        vec![(String::new(), q.due as f64)],
    );
    family(
        "integrations_queue_leased",
        "Queued requests a worker holds.",
        "gauge",
        vec![(String::new(), q.leased as f64)],
    );
    family(
        "integrations_queue_dead",
        "Dead-lettered requests.",
        "gauge",
        vec![(String::new(), q.dead as f64)],
    );
    family(
        "integrations_queue_oldest_age_seconds",
        "Age of the oldest queued request.",
        "gauge",
        vec![(String::new(), q.oldest_age_ms as f64 / 1000.0)],
    );
    let c = &status.cache;
    family(
        "integrations_cache_lookups_total",
        "Answer cache look-ups, by result (a hit saves a partner call).",
        "counter",
        vec![
            ("{result=\"hit\"}".into(), c.hits as f64),
            ("{result=\"miss\"}".into(), c.misses as f64),
        ],
    );
    family(
        "integrations_cache_stored_total",
        "Partner answers stored in the cache.",
        "counter",
        vec![(String::new(), c.stored as f64)],
    );
    out
}
