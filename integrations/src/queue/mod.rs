//! The durable retry queue: partner requests that could not be made now, ordered by when they
//! are due.
//!
//! Delivery is at least once with leases: a worker leases due jobs for a while; a job it
//! neither finishes nor reschedules before the lease runs out (the worker was killed) becomes
//! due again and another worker takes it. Each lease carries a token, so a worker whose lease
//! ran out cannot finish or reschedule a job that is now someone else's. A job's id is its
//! idempotency key (request id, partner, page): enqueuing the same one twice keeps one. After
//! its last attempt a job moves to the dead-letter set with its last error, from which an
//! operator can replay it.

mod local;
mod redis;
mod seal;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::local::LocalQueue;
pub use self::redis::{QueueTtl, RedisQueue};
pub use self::seal::JobSeal;
use crate::error::IntegrationError;
use crate::partner::RequestParams;

/// What a job's caller is told once it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub request_id: String,
    pub partner: String,
    /// `ok` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: u32,
    /// Set when the answer came from the cache (no partner call): when the partner gave it,
    /// and how old it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<crate::cache::CachedAnswer>,
}

/// A queued partner request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The idempotency key: `request_id`, partner and page.
    pub id: String,
    pub request_id: String,
    pub partner: String,
    /// The CPF's digits: needed to make the call. Stored in the queue, never logged.
    pub cpf: String,
    #[serde(default)]
    pub params: RequestParams,
    /// Where to POST the outcome; none delivers in process.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Partner calls made so far.
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the request was first queued, milliseconds since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// The outcome, once known but not yet delivered (a failed callback is retried too).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Deliveries of the outcome that failed so far.
    #[serde(default)]
    pub failed_deliveries: u32,
    /// The scope its answer is cached in ([`crate::gateway::PartnerRequest::cache_scope`]).
    #[serde(default)]
    pub cache_scope: String,
}

impl Job {
    /// A new job for a request, not yet attempted; its id is the idempotency key.
    pub fn new(
        request_id: String,
        partner: String,
        cpf_digits: String,
        params: RequestParams,
        callback_url: Option<String>,
    ) -> Self {
        Job {
            id: Job::key(&request_id, &partner, &params),
            request_id,
            partner,
            cpf: cpf_digits,
            params,
            callback_url,
            attempts: 0,
            last_error: None,
            enqueued_at_ms: now_ms(),
            outcome: None,
            failed_deliveries: 0,
            cache_scope: String::new(),
        }
    }

    /// The idempotency key of a request for one partner and page.
    pub fn key(request_id: &str, partner: &str, params: &RequestParams) -> String {
        format!(
            "{request_id}:{partner}:{}",
            params.cursor.as_deref().unwrap_or("0")
        )
    }
}

/// A job leased to a worker, with the token that proves the lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Leased {
    pub job: Job,
    pub token: String,
}

/// Depth and age of the queue, for metrics and the status endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Jobs waiting for their time.
    pub due: u64,
    /// Jobs leased to a worker now.
    pub leased: u64,
    pub dead: u64,
    /// Age of the oldest job still queued, in milliseconds.
    pub oldest_age_ms: u64,
}

/// A dead-lettered job as the status endpoint lists it (no CPF).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub request_id: String,
    pub partner: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Storage of queued jobs.
pub trait RetryQueue: Send + Sync + 'static {
    /// Queues `job`, due after `delay`. `false` when a job with its id is already queued.
    fn enqueue(
        &self,
        job: &Job,
        delay: Duration,
    ) -> impl Future<Output = Result<bool, IntegrationError>> + Send;

    /// Leases up to `max` due jobs for `lease`; jobs whose lease ran out are due again first.
    fn lease(
        &self,
        max: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Leased>, IntegrationError>> + Send;

    /// Removes a finished job. `false` when the lease was lost (someone else has the job).
    fn finish(
        &self,
        leased: &Leased,
    ) -> impl Future<Output = Result<bool, IntegrationError>> + Send;

    /// Stores `job`'s new state and makes it due after `delay`. `false` when the lease was lost.
    fn reschedule(
        &self,
        leased: &Leased,
        job: &Job,
        delay: Duration,
    ) -> impl Future<Output = Result<bool, IntegrationError>> + Send;

    /// Moves a job out of the queue into the dead-letter set.
    fn bury(
        &self,
        leased: &Leased,
        job: &Job,
    ) -> impl Future<Output = Result<bool, IntegrationError>> + Send;

    /// Makes dead-lettered jobs whose id starts with `scope` due again with a fresh attempt
    /// count: the one with `id`, or all when `id` is none. Returns how many were replayed.
    /// The service scopes each caller to its own jobs (`{caller}/`); `""` is every job.
    fn replay(
        &self,
        id: Option<&str>,
        scope: &str,
    ) -> impl Future<Output = Result<u64, IntegrationError>> + Send;

    /// Removes every job and dead letter whose id starts with `prefix` (an erasure of the
    /// analysis that asked); how many. A worker running one of them loses its lease.
    fn purge(&self, prefix: &str) -> impl Future<Output = Result<u64, IntegrationError>> + Send;

    /// Up to `max` dead letters whose id starts with `scope`, oldest first.
    fn dead_letters(
        &self,
        max: usize,
        scope: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, IntegrationError>> + Send;

    fn stats(&self) -> impl Future<Output = Result<QueueStats, IntegrationError>> + Send;

    /// Waits until a job may be due or `timeout` passes, without polling in between.
    fn wait(&self, timeout: Duration) -> impl Future<Output = ()> + Send;
}

/// The queue the configuration chose.
#[derive(Clone)]
pub enum Queue {
    Local(LocalQueue),
    Redis(RedisQueue),
}

macro_rules! dispatch {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            Queue::Local($q) => $e,
            Queue::Redis($q) => $e,
        }
    };
}

impl RetryQueue for Queue {
    async fn enqueue(&self, job: &Job, delay: Duration) -> Result<bool, IntegrationError> {
        dispatch!(self, q => q.enqueue(job, delay).await)
    }
    async fn lease(&self, max: usize, lease: Duration) -> Result<Vec<Leased>, IntegrationError> {
        dispatch!(self, q => q.lease(max, lease).await)
    }
    async fn finish(&self, leased: &Leased) -> Result<bool, IntegrationError> {
        dispatch!(self, q => q.finish(leased).await)
    }
    async fn reschedule(
        &self,
        leased: &Leased,
        job: &Job,
        delay: Duration,
    ) -> Result<bool, IntegrationError> {
        dispatch!(self, q => q.reschedule(leased, job, delay).await)
    }
    async fn bury(&self, leased: &Leased, job: &Job) -> Result<bool, IntegrationError> {
        dispatch!(self, q => q.bury(leased, job).await)
    }
    async fn replay(&self, id: Option<&str>, scope: &str) -> Result<u64, IntegrationError> {
        dispatch!(self, q => q.replay(id, scope).await)
    }
    async fn purge(&self, prefix: &str) -> Result<u64, IntegrationError> {
        dispatch!(self, q => q.purge(prefix).await)
    }
    async fn dead_letters(
        &self,
        max: usize,
        scope: &str,
    ) -> Result<Vec<DeadLetter>, IntegrationError> {
        dispatch!(self, q => q.dead_letters(max, scope).await)
    }
    async fn stats(&self) -> Result<QueueStats, IntegrationError> {
        dispatch!(self, q => q.stats().await)
    }
    async fn wait(&self, timeout: Duration) {
        dispatch!(self, q => q.wait(timeout).await)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Capped exponential backoff with full jitter: uniform in `[0, min(cap, base * 2^attempt))`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    use rand::Rng;
    let ceiling = base
        .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .min(cap);
    let ms = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(0..ms))
}

impl From<&Job> for DeadLetter {
    fn from(j: &Job) -> Self {
        DeadLetter {
            id: j.id.clone(),
            request_id: j.request_id.clone(),
            partner: j.partner.clone(),
            attempts: j.attempts,
            last_error: j.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_doubling_capped_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_millis(1000);
        for attempt in 0..40 {
            let ceiling = (100u64 << attempt.min(20)).min(1000);
            for _ in 0..50 {
                assert!(backoff(attempt, base, cap) < Duration::from_millis(ceiling));
            }
        }
    }
}
