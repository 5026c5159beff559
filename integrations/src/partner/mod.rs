//! One partner bureau: its HTTP adapter, circuit breaker and rate limiter, called under the
//! shared semaphore.
//!
//! [`Partner::attempt`] makes at most one request and never waits for capacity: when the
//! partner asked us to back off (`Retry-After`), the circuit is open, this instance is over
//! its rate, or every permit is held, it says so with [`Attempt::Defer`] and when to try
//! again, and the caller queues the request. Answers are classified by the contract's table:
//! 200 is data; 404 and our own 4xx mistakes are final; 429 defers without counting against the
//! partner's health; 5xx, timeouts, connection errors and malformed bodies are failures, retried
//! with backoff and counted by the breaker.

pub mod breaker;
mod client;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use self::breaker::{Breaker, BreakerState, Verdict};
pub use self::client::{CallError, RequestParams};
use crate::config::PartnerConfig;
use crate::contract::PartnerData;
use crate::cpf::Cpf;
use crate::semaphore::{stopped, stopping, Permit, PermitStore, Semaphore};

/// Why a request could not be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferReason {
    /// Every permit of the partner's semaphore is held.
    NoPermit,
    /// The circuit is open, or a half-open probe is already out.
    CircuitOpen,
    /// This instance reached the partner's requests-per-second.
    RateLimited,
    /// The partner answered 429 and asked us to wait.
    PartnerBusy,
    /// The partner failed (5xx, timeout, connection); retried with backoff.
    PartnerFailed,
    /// The same request is already queued (asked by an earlier run of the same analysis, on
    /// any instance sharing the queue): its outcome is waited for, not asked again.
    AlreadyQueued,
}

impl DeferReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeferReason::NoPermit => "no_permit",
            DeferReason::CircuitOpen => "circuit_open",
            DeferReason::RateLimited => "rate_limited",
            DeferReason::PartnerBusy => "partner_busy",
            DeferReason::PartnerFailed => "partner_failed",
            DeferReason::AlreadyQueued => "already_queued",
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The partner's data.
    Done(PartnerData),
    /// The partner has no record of this CPF: final.
    NotFound,
    /// Our request or credentials were refused (400, 401, 403, 422): final, not retried.
    Refused { status: u16 },
    /// Not attempted, or refused with 429: try again no sooner than `retry_in`.
    Defer {
        reason: DeferReason,
        retry_in: Duration,
    },
    /// Partner trouble: retry with backoff.
    Failed { error: String },
}

/// Counters of one partner, for the status endpoint and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct PartnerStatus {
    pub name: String,
    pub kind: crate::contract::Kind,
    pub breaker: BreakerState,
    pub permits_in_use: Option<u32>,
    pub max_concurrency: u32,
    pub rate_per_sec: u32,
    pub calls: u64,
    pub ok: u64,
    pub failures: u64,
    pub deferred: u64,
    pub breaker_rejections: u64,
    pub times_opened: u64,
    /// Latency of the last successful call, in milliseconds.
    pub last_latency_ms: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    ok: AtomicU64,
    failures: AtomicU64,
    deferred: AtomicU64,
    last_latency_ms: AtomicU64,
}

/// A configured partner. Cloning shares its breaker, limiter and counters.
#[derive(Clone)]
pub struct Partner {
    config: Arc<PartnerConfig>,
    http: reqwest::Client,
    breaker: Breaker,
    limiter: Arc<DefaultDirectRateLimiter>,
    /// No request before this instant: the partner's last `Retry-After`.
    not_before: Arc<Mutex<Option<Instant>>>,
    semaphore: Semaphore,
    lease: Duration,
    counters: Arc<Counters>,
}

impl Partner {
    /// `lease` is the semaphore lease; `http` is shared by every partner.
    pub fn new(
        config: PartnerConfig,
        http: reqwest::Client,
        semaphore: Semaphore,
        lease: Duration,
    ) -> Self {
        let rate = NonZeroU32::new(config.rate_per_sec).unwrap_or(NonZeroU32::MIN);
        Partner {
            breaker: Breaker::new(&config.name, &config.breaker),
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(rate))),
            not_before: Arc::default(),
            config: Arc::new(config),
            http,
            semaphore,
            lease,
            counters: Arc::default(),
        }
    }

    pub fn config(&self) -> &PartnerConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    fn defer(&self, reason: DeferReason, retry_in: Duration) -> Attempt {
        self.counters.deferred.fetch_add(1, Ordering::Relaxed);
        Attempt::Defer { reason, retry_in }
    }

    /// Makes at most one request for `cpf`, if the partner's limits allow it now.
    pub async fn attempt(&self, cpf: &Cpf, params: &RequestParams) -> Attempt {
        self.attempt_within(cpf, params, Duration::ZERO).await
    }

    /// Like [`Partner::attempt`], but waits up to `permit_wait` for a permit, woken by
    /// releases (the queue worker's way: it has nothing better to do meanwhile).
    pub async fn attempt_within(
        &self,
        cpf: &Cpf,
        params: &RequestParams,
        permit_wait: Duration,
    ) -> Attempt {
        let (_never, stop) = watch::channel(false);
        self.attempt_until(cpf, params, permit_wait, &stop)
            .await
            .expect("an attempt that cannot be stopped ends with an attempt")
    }

    /// Like [`Partner::attempt_within`], but stops once `stop` is set (see [`stopping`]):
    /// `None` when it stopped before the attempt came to anything, its permit wait or its call
    /// abandoned. A permit it took is released before it returns, not in the background, so
    /// a process that exits next does not leave it held until its lease runs out.
    pub async fn attempt_until(
        &self,
        cpf: &Cpf,
        params: &RequestParams,
        permit_wait: Duration,
        stop: &watch::Receiver<bool>,
    ) -> Option<Attempt> {
        if stopping(stop) {
            return None;
        }
        if let Some(until) = *self.not_before.lock().expect("not_before lock") {
            let now = Instant::now();
            if until > now {
                return Some(self.defer(DeferReason::PartnerBusy, until - now));
            }
        }
        let admission = match self.breaker.admit() {
            Ok(a) => a,
            Err(wait) => return Some(self.defer(DeferReason::CircuitOpen, wait)),
        };
        if let Err(not_until) = self.limiter.check() {
            drop(admission);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Some(self.defer(DeferReason::RateLimited, wait.max(Duration::from_millis(1))));
        }
        let name = self.config.name.as_str();
        let limit = self.config.max_concurrency;
        let taken = if permit_wait.is_zero() {
            Permit::try_acquire(&self.semaphore, name, limit, self.lease).await
        } else {
            Permit::acquire_until(&self.semaphore, name, limit, self.lease, permit_wait, stop).await
        };
        let mut permit = match taken {
            Ok(Some(p)) => p,
            Ok(None) => {
                drop(admission);
                if stopping(stop) {
                    return None;
                }
                // A permit frees within one call's time; look again then.
                let retry = Duration::from_millis(self.config.timeout_ms.clamp(50, 1000));
                return Some(self.defer(DeferReason::NoPermit, retry));
            }
            Err(e) => {
                drop(admission);
                tracing::warn!(partner = name, error = %e, "Semaphore unavailable; deferring the request.");
                return Some(self.defer(DeferReason::NoPermit, Duration::from_secs(1)));
            }
        };
        if stopping(stop) {
            // Stopped while the permit was being taken: give it back without calling.
            drop(admission);
            self.release(permit).await;
            return None;
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let call = client::call(&self.http, &self.config, cpf, params);
        // The timeout is ours, not the HTTP client's, so an abandoned call still counts as a
        // failure; a lost lease cancels the call, since another process may now hold the slot.
        // A stop abandons the call too, and counts for nothing: the partner did no wrong.
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, call) => r.unwrap_or(Err(CallError::Timeout)),
            _ = permit.lost() => Err(CallError::LeaseLost),
            _ = stopped(stop) => {
                drop(admission);
                self.release(permit).await;
                return None;
            }
        };
        self.release(permit).await;
        let verdict = match &result {
            Ok(_) | Err(CallError::NotFound) => Verdict::Success,
            Err(e) if e.is_partner_failure() => Verdict::Failure,
            Err(_) => Verdict::Neutral,
        };
        self.breaker.record(admission, verdict);
        Some(match result {
            Ok(data) => {
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .last_latency_ms
                    .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                Attempt::Done(data)
            }
            Err(CallError::NotFound) => Attempt::NotFound,
            Err(CallError::Refused(status)) => {
                tracing::warn!(
                    partner = name,
                    status,
                    "Partner refused the request; not retrying."
                );
                Attempt::Refused { status }
            }
            Err(CallError::RateLimited(after)) => {
                *self.not_before.lock().expect("not_before lock") = Some(Instant::now() + after);
                self.defer(DeferReason::PartnerBusy, after)
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(partner = name, error = %e, "Partner call failed.");
                Attempt::Failed {
                    error: e.to_string(),
                }
            }
        })
    }

    /// Gives a permit back and waits until it is given back.
    async fn release(&self, permit: Permit<Semaphore>) {
        if let Err(e) = permit.release().await {
            tracing::warn!(partner = self.name(), error = %e, "Semaphore release failed; the lease will expire.");
        }
    }

    /// The partner's counters and states now.
    pub async fn status(&self) -> PartnerStatus {
        let c = &self.counters;
        PartnerStatus {
            name: self.config.name.clone(),
            kind: self.config.kind,
            breaker: self.breaker.state(),
            permits_in_use: self.semaphore.in_use(&self.config.name).await.ok(),
            max_concurrency: self.config.max_concurrency,
            rate_per_sec: self.config.rate_per_sec,
            calls: c.calls.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            deferred: c.deferred.load(Ordering::Relaxed),
            breaker_rejections: self.breaker.rejected(),
            times_opened: self.breaker.times_opened(),
            last_latency_ms: c.last_latency_ms.load(Ordering::Relaxed),
        }
    }
}
