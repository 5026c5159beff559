//! The circuit breaker of one partner: failsafe's state machine, plus one probe at a time.
//!
//! failsafe opens the circuit after `failure_threshold` consecutive failures and, once
//! `open_ms` has passed, moves to half-open, where it lets every call through. A partner that
//! is just recovering should not get the whole backlog at once, so this wrapper lets a single
//! probe through while half-open and turns the others away until the probe's answer closes or
//! reopens the circuit. State changes are logged and kept for the status endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use failsafe::{Config, Instrument, StateMachine};
use serde::Serialize;

use crate::config::BreakerConfig;

/// A breaker's state as the status endpoint and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

#[derive(Default)]
struct Shared {
    state: AtomicU8,
    /// When the circuit last opened, in milliseconds since `epoch`.
    opened_at_ms: AtomicU64,
    rejected: AtomicU64,
    opened: AtomicU64,
}

/// Records failsafe's transitions.
#[derive(Clone)]
struct Recorder {
    partner: Arc<str>,
    shared: Arc<Shared>,
    epoch: Instant,
}

impl Instrument for Recorder {
    fn on_call_rejected(&self) {
        self.shared.rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn on_open(&self) {
        self.shared
            .opened_at_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.shared.state.store(1, Ordering::SeqCst);
        self.shared.opened.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(partner = %self.partner, "Circuit opened: the partner is failing.");
    }

    fn on_half_open(&self) {
        self.shared.state.store(2, Ordering::SeqCst);
        tracing::info!(partner = %self.partner, "Circuit half-open: one probe goes through.");
    }

    fn on_closed(&self) {
        // failsafe also calls this when the breaker is built; only a real change is news.
        if self.shared.state.swap(0, Ordering::SeqCst) != 0 {
            tracing::info!(partner = %self.partner, "Circuit closed: the partner answers again.");
        }
    }
}

/// How a call ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The partner worked (2xx, 404).
    Success,
    /// Partner trouble: 5xx, timeout, connection error, malformed body.
    Failure,
    /// Neither: 429 and our own 4xx mistakes say nothing of the partner's health.
    Neutral,
}

/// The breaker of one partner. Cloning shares it.
#[derive(Clone)]
pub struct Breaker {
    machine: StateMachine<ConsecutiveFailures<Constant>, Recorder>,
    shared: Arc<Shared>,
    probing: Arc<AtomicBool>,
    open_for: Duration,
    epoch: Instant,
}

/// Permission to call, from [`Breaker::admit`]; report the result with [`Breaker::record`].
/// A probe's admission dropped unreported (a cancelled call) frees the probe slot.
#[must_use]
pub struct Admission {
    probe: Option<Arc<AtomicBool>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(flag) = self.probe.take() {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

impl Breaker {
    pub fn new(partner: &str, config: &BreakerConfig) -> Self {
        let open_for = Duration::from_millis(config.open_ms);
        let shared = Arc::new(Shared::default());
        let epoch = Instant::now();
        let recorder = Recorder {
            partner: partner.into(),
            shared: shared.clone(),
            epoch,
        };
        let machine = Config::new()
            .failure_policy(consecutive_failures(
                config.failure_threshold,
                backoff::constant(open_for),
            ))
            .instrument(recorder)
            .build();
        Breaker {
            machine,
            shared,
            probing: Arc::new(AtomicBool::new(false)),
            open_for,
            epoch,
        }
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.shared.state.load(Ordering::SeqCst))
    }

    /// Calls turned away since start.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Times the circuit opened since start.
    pub fn times_opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// Asks to call. `Err(wait)` says the circuit is open (or a probe is already out) and
    /// when to ask again.
    pub fn admit(&self) -> Result<Admission, Duration> {
        if !self.machine.is_call_permitted() {
            return Err(self.remaining_open());
        }
        if self.state() == BreakerState::HalfOpen {
            if self
                .probing
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                // The probe's answer comes within a call's timeout; look again soon.
                return Err(Duration::from_millis(100).min(self.open_for));
            }
            return Ok(Admission {
                probe: Some(self.probing.clone()),
            });
        }
        Ok(Admission { probe: None })
    }

    /// Reports how an admitted call ended.
    pub fn record(&self, admission: Admission, verdict: Verdict) {
        match verdict {
            Verdict::Success => self.machine.on_success(),
            Verdict::Failure => self.machine.on_error(),
            Verdict::Neutral => {}
        }
        // Dropping the admission frees the probe slot, after the verdict moved the state.
        drop(admission);
    }

    fn remaining_open(&self) -> Duration {
        let opened = Duration::from_millis(self.shared.opened_at_ms.load(Ordering::SeqCst));
        (opened + self.open_for).saturating_sub(self.epoch.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_ms: u64) -> Breaker {
        Breaker::new(
            "test",
            &BreakerConfig {
                failure_threshold: threshold,
                open_ms,
            },
        )
    }

    #[test]
    fn consecutive_failures_open_the_circuit_and_neutral_answers_do_not() {
        let b = breaker(3, 60_000);
        for _ in 0..10 {
            let a = b.admit().unwrap();
            b.record(a, Verdict::Neutral);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..3 {
            let a = b.admit().unwrap();
            b.record(a, Verdict::Failure);
        }
        assert_eq!(b.state(), BreakerState::Open);
        let wait = b.admit().err().expect("open rejects");
        assert!(wait > Duration::from_secs(50));
        assert_eq!(b.rejected(), 1);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_success_closes_the_circuit() {
        let b = breaker(1, 50);
        let a = b.admit().unwrap();
        b.record(a, Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(80));
        let probe = b
            .admit()
            .expect("the first call after open_ms is the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_err(), "a second caller waits for the probe");
        b.record(probe, Verdict::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn a_failed_probe_reopens_the_circuit() {
        let b = breaker(1, 50);
        let a = b.admit().unwrap();
        b.record(a, Verdict::Failure);
        std::thread::sleep(Duration::from_millis(80));
        let probe = b.admit().unwrap();
        b.record(probe, Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_err());
        assert_eq!(b.times_opened(), 2);
    }
}
