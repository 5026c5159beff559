//! The gateway: partner requests made now when the partner's limits allow, queued otherwise,
//! and the worker that drains the queue under the same semaphore and delivers each outcome
//! once to whoever asked (a channel in process, an HTTP callback across processes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::cache::{AnswerCache, CacheStats};
use crate::config::Config;
use crate::cpf::Cpf;
use crate::error::IntegrationError;
use crate::partner::{Attempt, DeferReason, Partner, PartnerStatus, RequestParams};
use crate::queue::{
    backoff, now_ms, Job, JobSeal, Leased, LocalQueue, Outcome, Queue, QueueTtl, RedisQueue,
    RetryQueue,
};
use crate::semaphore::{LocalSemaphore, RedisSemaphore, Semaphore};

/// How long after `job_ttl_secs` a Redis queue drops a job nobody ended.
const SWEEP_GRACE: Duration = Duration::from_secs(3600);

/// How long an outcome for an in-process caller of another process waits on Redis for that
/// process to take it (it holds a person's record, so not long).
const OUTCOME_TTL: Duration = Duration::from_secs(3600);

/// How often in-process callers' outcomes are looked for on Redis.
const COLLECT_EVERY: Duration = Duration::from_millis(200);

/// A request for one partner's data.
#[derive(Debug, Clone)]
pub struct PartnerRequest {
    /// The caller the request is for: its jobs' ids start with `{caller}/`, so two callers'
    /// request ids never meet and each sees and replays only its own dead letters. Empty for
    /// the core API's in-process calls.
    pub caller: String,
    pub request_id: String,
    pub partner: String,
    pub cpf: Cpf,
    pub params: RequestParams,
    /// Where to POST the outcome if the request is queued; none delivers in process.
    pub callback_url: Option<String>,
    /// Ask the partner even when a cached answer would do (the answer is cached anew).
    pub fresh: bool,
    /// Whose answers these are: a cached answer is reused only within its scope (the core
    /// API's tenant), so no lender learns from a cache hit that another looked the person up.
    pub cache_scope: String,
}

/// What [`Gateway::submit`] did with a request.
#[derive(Debug)]
pub enum Submitted {
    /// Answered at once (data, or a final failure).
    Now(Outcome),
    /// Queued: the outcome comes later through `receiver` (in process) or the callback.
    Queued {
        reason: DeferReason,
        retry_in: Duration,
        receiver: Option<oneshot::Receiver<Outcome>>,
    },
}

/// The seal for jobs in a Redis queue: a Redis queue without a key is refused, since it would
/// keep CPFs in clear.
fn queue_seal(config: &Config) -> Result<JobSeal, IntegrationError> {
    let key = config.queue_key.as_ref().ok_or_else(|| {
        IntegrationError::Config(
            "QUEUE_KEY: needed with a Redis queue, whose jobs keep a CPF: set it to a random \
             secret of at least 32 characters, the same on every instance"
                .into(),
        )
    })?;
    JobSeal::from_secret(key).map_err(|why| IntegrationError::Config(format!("QUEUE_KEY: {why}")))
}

/// The queue's and partners' state, for `GET /v1/partners`.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    pub partners: Vec<PartnerStatus>,
    pub queue: crate::queue::QueueStats,
    pub cache: CacheStats,
}

/// Partners, semaphore and queue, as the configuration chose them.
pub struct Gateway {
    config: Config,
    partners: HashMap<String, Partner>,
    queue: Queue,
    /// Partners' answers kept for later requests about the same person.
    cache: AnswerCache,
    http: reqwest::Client,
    /// In-process callers waiting for a queued request's outcome, by job id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
}

impl Gateway {
    /// Connects to Redis when the configuration names it; otherwise everything is in process.
    pub async fn build(config: Config) -> Result<Arc<Self>, IntegrationError> {
        let (semaphore, queue, cache) = match &config.redis_url {
            Some(url) => (
                Semaphore::Redis(RedisSemaphore::connect(url, &config.key_prefix).await?),
                Queue::Redis(
                    RedisQueue::connect(
                        url,
                        config.queue_prefix.as_deref().unwrap_or(&config.key_prefix),
                        config.max_queue,
                        queue_seal(&config)?,
                        QueueTtl {
                            // A worker ends a job past `job_ttl_secs` itself, telling its
                            // caller; the queue drops what is left (a job no worker took)
                            // later, as a backstop.
                            job: Duration::from_secs(config.job_ttl_secs) + SWEEP_GRACE,
                            dead_letter: Duration::from_secs(config.dead_letter_ttl_secs),
                        },
                    )
                    .await?,
                ),
                // Shared by every instance on the Redis (not under a process's own queue
                // prefix), sealed with keys made from the queue's.
                AnswerCache::redis(
                    url,
                    &config.key_prefix,
                    config.queue_key.as_ref().expect("checked by queue_seal"),
                )
                .await?,
            ),
            None => (
                Semaphore::Local(LocalSemaphore::new()),
                Queue::Local(LocalQueue::new(config.max_queue)),
                AnswerCache::memory(),
            ),
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            // Below the core API's idle timeout (10 s by default), which its callbacks reach,
            // so a pooled connection is not reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            // A partner or a callback that redirects is answered as it is (a failure): a
            // redirect could send a person's data, or our token, somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| IntegrationError::Config(format!("HTTP client: {e}")))?;
        let lease = Duration::from_millis(config.lease_ms);
        let partners = config
            .partners
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Partner::new(p.clone(), http.clone(), semaphore.clone(), lease),
                )
            })
            .collect();
        Ok(Arc::new(Gateway {
            config,
            partners,
            queue,
            cache,
            http,
            waiting: Mutex::default(),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn partner(&self, name: &str) -> Option<&Partner> {
        self.partners.get(name)
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Tries the request now; queues it when the partner cannot take it now.
    pub async fn submit(&self, request: PartnerRequest) -> Result<Submitted, IntegrationError> {
        let partner = self
            .partners
            .get(&request.partner)
            .ok_or_else(|| IntegrationError::UnknownPartner(request.partner.clone()))?;
        let digits = request.cpf.digits();
        if !request.fresh && !partner.config().cache_ttl().is_zero() {
            let name = self.cache.name(
                &request.cache_scope,
                &request.partner,
                &digits,
                &request.params,
            );
            if let Some((data, cached)) = self.cache.get(&name).await {
                return Ok(Submitted::Now(Outcome {
                    request_id: request.request_id,
                    partner: request.partner,
                    status: "ok".into(),
                    data: Some(data),
                    error: None,
                    attempts: 0,
                    cached: Some(cached),
                }));
            }
        }
        if request.callback_url.is_none() {
            if let Queue::Redis(queue) = &self.queue {
                let id = Job::key(&request.request_id, &request.partner, &request.params);
                let id = match request.caller.as_str() {
                    "" => id,
                    caller => format!("{caller}/{id}"),
                };
                if let Some(found) = self.already_asked(queue, &id).await? {
                    return Ok(found);
                }
            }
        }
        let attempt = partner.attempt(&request.cpf, &request.params).await;
        let mut job = Job::new(
            request.request_id,
            request.partner,
            request.cpf.digits(),
            request.params,
            request.callback_url,
        );
        if !request.caller.is_empty() {
            job.id = format!("{}/{}", request.caller, job.id);
        }
        job.cache_scope = request.cache_scope;
        let (reason, retry_in) = match attempt {
            Attempt::Defer { reason, retry_in } => (reason, retry_in),
            Attempt::Failed { error } => {
                job.attempts = 1;
                job.last_error = Some(error);
                let retry = &partner.config().retry;
                if job.attempts >= retry.max_attempts {
                    return Ok(Submitted::Now(outcome_of(
                        &job,
                        Err(job.last_error.clone().unwrap_or_default()),
                    )));
                }
                let delay = backoff(
                    job.attempts,
                    Duration::from_millis(retry.base_ms),
                    Duration::from_millis(retry.cap_ms),
                );
                (DeferReason::PartnerFailed, delay)
            }
            other => {
                job.attempts = 1;
                let outcome = outcome_of(&job, final_result(other));
                self.remember(&job, &outcome).await;
                return Ok(Submitted::Now(outcome));
            }
        };
        // Due again by the end of its TTL at the latest, as in `reschedule`.
        let retry_in = retry_in.min(self.ttl_left(&job));
        let receiver = if job.callback_url.is_none() {
            let (tx, rx) = oneshot::channel();
            let mut waiting = self.waiting.lock().expect("waiting lock");
            // Callers that gave up (their receiver is gone) leave, whatever became of their
            // jobs: looked for each time the map doubles, so the cost per request stays flat.
            if waiting.len() >= 64 && waiting.len().is_power_of_two() {
                waiting.retain(|_, tx| !tx.is_closed());
            }
            waiting.insert(job.id.clone(), tx);
            Some(rx)
        } else {
            None
        };
        if let Err(e) = self.queue.enqueue(&job, retry_in).await {
            self.waiting.lock().expect("waiting lock").remove(&job.id);
            return Err(e);
        }
        Ok(Submitted::Queued {
            reason,
            retry_in,
            receiver,
        })
    }

    /// For an in-process caller on a shared queue: the request `id` asked before (by an
    /// earlier run of the same analysis, maybe on another instance) is not asked again. Its
    /// outcome if it is already kept, or a wait for the queued job; none if neither.
    async fn already_asked(
        &self,
        queue: &RedisQueue,
        id: &str,
    ) -> Result<Option<Submitted>, IntegrationError> {
        // Waiting before looking: an outcome kept after the look-up reaches the collector.
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(id.to_string(), tx);
        let forget = || self.waiting.lock().expect("waiting lock").remove(id);
        match queue.take_outcomes(&[id.to_string()]).await {
            Ok(mut kept) if !kept.is_empty() => {
                forget();
                return Ok(Some(Submitted::Now(kept.remove(0).1)));
            }
            Ok(_) => {}
            Err(e) => {
                forget();
                return Err(e);
            }
        }
        match queue.holds(id).await {
            Ok(true) => Ok(Some(Submitted::Queued {
                reason: DeferReason::AlreadyQueued,
                retry_in: Duration::ZERO,
                receiver: Some(rx),
            })),
            Ok(false) => {
                forget();
                Ok(None)
            }
            Err(e) => {
                forget();
                Err(e)
            }
        }
    }

    /// Partners' and queue's state.
    pub async fn status(&self) -> Result<GatewayStatus, IntegrationError> {
        let mut partners = Vec::with_capacity(self.partners.len());
        for p in &self.config.partners {
            partners.push(self.partners[&p.name].status().await);
        }
        Ok(GatewayStatus {
            partners,
            queue: self.queue.stats().await?,
            cache: self.cache.stats(),
        })
    }

    /// Whether the stores answer (Redis, when configured).
    pub async fn ready(&self) -> bool {
        match &self.queue {
            Queue::Local(_) => true,
            Queue::Redis(q) => q.ping().await,
        }
    }

    /// Drains the queue until `shutdown` turns true. Then the jobs in hand that are waiting for
    /// a permit or calling their partner are given back to the queue, due now, so another
    /// instance takes them at once rather than when their leases run out; their calls are
    /// abandoned and their permits released before this returns. A job whose outcome is
    /// already had is delivered first (each delivery bounded by the callback timeout): given
    /// back, it would be called and delivered again.
    pub async fn run_worker(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let collector = tokio::spawn(self.clone().run_collector(shutdown.clone()));
        let lease = Duration::from_millis(self.config.lease_ms);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let batch = match self.queue.lease(32, lease).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "Retry queue unavailable; retrying in a second.");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.queue.wait(Duration::from_millis(250)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let tasks: Vec<_> = batch
                .into_iter()
                .map(|leased| {
                    let gw = self.clone();
                    let stop = shutdown.clone();
                    // The job sees the stop itself rather than being dropped mid-way: dropped,
                    // a permit it was taking or giving back could stay held in Redis, and an
                    // outcome it was delivering could be given back and delivered twice.
                    tokio::spawn(async move { gw.work(leased, &stop).await })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        }
        let _ = collector.await;
        tracing::info!("Retry worker stopped.");
    }

    /// Hands this process's in-process callers the outcomes that other processes' workers
    /// kept on Redis for them (the queue is shared, so any worker may run a job), every
    /// [`COLLECT_EVERY`], until `shutdown`. Nothing to do with an in-process queue.
    pub async fn run_collector(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Queue::Redis(queue) = &self.queue else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(COLLECT_EVERY) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let ids: Vec<String> = {
                let mut waiting = self.waiting.lock().expect("waiting lock");
                waiting.retain(|_, tx| !tx.is_closed());
                waiting.keys().cloned().collect()
            };
            for chunk in ids.chunks(256) {
                match queue.take_outcomes(chunk).await {
                    Ok(found) => {
                        let mut waiting = self.waiting.lock().expect("waiting lock");
                        for (id, outcome) in found {
                            if let Some(tx) = waiting.remove(&id) {
                                let _ = tx.send(outcome);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Could not look for outcomes on Redis; trying again.");
                        break;
                    }
                }
            }
        }
    }

    async fn work(&self, leased: Leased, stop: &watch::Receiver<bool>) {
        let mut job = leased.job.clone();
        if job.outcome.is_none() && self.ttl_left(&job).is_zero() {
            // Past its TTL: its caller is told it failed, rather than left waiting on a job
            // the queue is about to drop.
            let error = format!(
                "expired: no answer within job_ttl_secs ({} s) of queueing",
                self.config.job_ttl_secs
            );
            return self.end_as_failed(&leased, job, error).await;
        }
        if job.outcome.is_none() {
            let Some(partner) = self.partners.get(&job.partner) else {
                let error = format!("unknown partner `{}`", job.partner);
                return self.end_as_failed(&leased, job, error).await;
            };
            let Ok(cpf) = Cpf::parse(&job.cpf) else {
                let error = "the queued CPF is not valid".to_string();
                return self.end_as_failed(&leased, job, error).await;
            };
            // Wait for a permit for part of the lease: woken by releases, the job starts as
            // soon as the partner has room, and the lease is not outlived.
            let permit_wait = Duration::from_millis(self.config.lease_ms / 3);
            let attempt = partner
                .attempt_until(&cpf, &job.params, permit_wait, stop)
                .await;
            let Some(attempt) = attempt else {
                // Stopping: the job goes back due now, so another instance takes it at once
                // rather than when its lease runs out.
                return self.reschedule(&leased, &job, Duration::ZERO).await;
            };
            match attempt {
                Attempt::Defer { retry_in, .. } => {
                    return self.reschedule(&leased, &job, retry_in).await;
                }
                Attempt::Failed { error } => {
                    job.attempts += 1;
                    job.last_error = Some(error.clone());
                    let retry = &partner.config().retry;
                    if job.attempts < retry.max_attempts {
                        let delay = backoff(
                            job.attempts,
                            Duration::from_millis(retry.base_ms),
                            Duration::from_millis(retry.cap_ms),
                        );
                        return self.reschedule(&leased, &job, delay).await;
                    }
                    job.outcome = Some(outcome_of(&job, Err(error)));
                    return self.deliver_and_close(&leased, job, true).await;
                }
                other => {
                    job.attempts += 1;
                    let outcome = outcome_of(&job, final_result(other));
                    self.remember(&job, &outcome).await;
                    job.outcome = Some(outcome);
                }
            }
        }
        self.deliver_and_close(&leased, job, false).await
    }

    /// Ends a job that will never be answered: `error` is its last error and its caller's
    /// failed outcome, and once delivered the job is a dead letter.
    async fn end_as_failed(&self, leased: &Leased, mut job: Job, error: String) {
        job.outcome = Some(outcome_of(&job, Err(error.clone())));
        job.last_error = Some(error);
        self.deliver_and_close(leased, job, true).await
    }

    /// Caches a partner's answer for its partner's `cache_ttl`. Failures are not cached; a
    /// partner that now says it has no record of the person removes what was cached.
    async fn remember(&self, job: &Job, outcome: &Outcome) {
        let Some(partner) = self.partners.get(&job.partner) else {
            return;
        };
        let ttl = partner.config().cache_ttl();
        if ttl.is_zero() {
            return;
        }
        let name = self
            .cache
            .name(&job.cache_scope, &job.partner, &job.cpf, &job.params);
        let not_found = outcome
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("not_found"));
        match &outcome.data {
            Some(data) if outcome.status == "ok" => {
                self.cache.put(&job.cache_scope, &name, data, ttl).await
            }
            _ if not_found => self.cache.forget(&name).await,
            _ => {}
        }
    }

    /// Erases what this gateway keeps of one analysis of one person: the answers cached
    /// within `cache_scope`, and the queued requests and dead letters whose request ids start
    /// with `request_prefix` (the caller's, when `caller` is set). How many of each.
    pub async fn erase(
        &self,
        caller: &str,
        cache_scope: &str,
        request_prefix: &str,
    ) -> Result<(usize, u64), IntegrationError> {
        // The queue first: a job purged cannot answer into the cache after it was emptied.
        let prefix = match caller {
            "" => request_prefix.to_string(),
            caller => format!("{caller}/{request_prefix}"),
        };
        let jobs = self.queue.purge(&prefix).await?;
        let cached = self.cache.forget_scope(cache_scope).await?;
        Ok((cached, jobs))
    }

    /// How long `job` may still wait for an answer (`job_ttl_secs` from its queueing).
    fn ttl_left(&self, job: &Job) -> Duration {
        let age = Duration::from_millis(now_ms().saturating_sub(job.enqueued_at_ms));
        Duration::from_secs(self.config.job_ttl_secs).saturating_sub(age)
    }

    async fn reschedule(&self, leased: &Leased, job: &Job, delay: Duration) {
        // A job still waiting for the partner is due again by the end of its TTL at the
        // latest (a partner's Retry-After may be an hour), so its caller hears on time.
        let delay = if job.outcome.is_none() {
            delay.min(self.ttl_left(job))
        } else {
            delay
        };
        match self.queue.reschedule(leased, job, delay).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job = %job.id, "Lease lost before rescheduling; another worker has the job.")
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "Could not reschedule; the lease will return the job.")
            }
        }
    }

    /// Delivers the job's outcome; finishes (or buries, for a request that finally failed) the
    /// job once delivered, or keeps it for another delivery attempt.
    async fn deliver_and_close(&self, leased: &Leased, mut job: Job, bury: bool) {
        let outcome = job.outcome.clone().expect("an outcome to deliver");
        if let Err(e) = self.deliver(&job, &outcome).await {
            job.failed_deliveries += 1;
            if job.failed_deliveries >= self.config.max_deliveries.max(1) {
                tracing::warn!(job = %job.id, deliveries = job.failed_deliveries, error = %e, "Delivery failed for the last time; the job goes to the dead letters.");
                job.last_error = Some(format!(
                    "the callback failed {} times, the last: {e}",
                    job.failed_deliveries
                ));
                if let Err(e) = self.queue.bury(leased, &job).await {
                    tracing::warn!(job = %job.id, error = %e, "Could not bury the job; the lease will return it.");
                }
                return;
            }
            tracing::warn!(job = %job.id, error = %e, "Delivery failed; will retry.");
            let delay = backoff(
                job.failed_deliveries,
                Duration::from_millis(500),
                Duration::from_secs(30),
            );
            return self.reschedule(leased, &job, delay).await;
        }
        let closed = if bury {
            self.queue.bury(leased, &job).await
        } else {
            self.queue.finish(leased).await
        };
        if let Err(e) = closed {
            tracing::warn!(job = %job.id, error = %e, "Delivered but could not close the job; it may be delivered again.");
        }
    }

    async fn deliver(&self, job: &Job, outcome: &Outcome) -> Result<(), String> {
        match &job.callback_url {
            Some(url) => {
                let r = self
                    .http
                    .post(url)
                    .timeout(Duration::from_secs(5))
                    .json(outcome)
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            "callback timed out".to_string()
                        } else {
                            "callback unreachable".to_string()
                        }
                    })?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("callback answered {}", r.status().as_u16()))
                }
            }
            None => {
                let waiter = self.waiting.lock().expect("waiting lock").remove(&job.id);
                // Handed to a caller here, unless it gave up (its run was handed on): then a
                // successor may wait elsewhere, as when nobody here waits.
                let delivered = waiter.is_some_and(|tx| tx.send(outcome.clone()).is_ok());
                match &self.queue {
                    _ if delivered => {}
                    // The queue is shared: the caller may wait in another process, whose
                    // collector takes the outcome from Redis (see `run_collector`).
                    Queue::Redis(q) => {
                        let keep = Duration::from_secs(self.config.job_ttl_secs).min(OUTCOME_TTL);
                        q.store_outcome(&job.id, outcome, keep)
                            .await
                            .map_err(|e| format!("keeping the outcome on Redis: {e}"))?;
                    }
                    // A caller that gave up is not an error: nobody is left to tell.
                    Queue::Local(_) => {
                        tracing::info!(job = %job.id, "Outcome ready but nobody waits for it in this process.")
                    }
                }
                Ok(())
            }
        }
    }
}

fn final_result(attempt: Attempt) -> Result<serde_json::Value, String> {
    match attempt {
        Attempt::Done(data) => Ok(serde_json::to_value(data).expect("partner data serialise")),
        Attempt::NotFound => Err("not_found: the partner has no record of this CPF".into()),
        Attempt::Refused { status } => Err(format!("refused: the partner answered {status}")),
        Attempt::Failed { error } => Err(error),
        Attempt::Defer { reason, .. } => Err(format!("deferred: {}", reason.as_str())),
    }
}

fn outcome_of(job: &Job, result: Result<serde_json::Value, String>) -> Outcome {
    let (status, data, error) = match result {
        Ok(d) => ("ok", Some(d), None),
        Err(e) => ("failed", None, Some(e)),
    };
    Outcome {
        request_id: job.request_id.clone(),
        partner: job.partner.clone(),
        status: status.into(),
        data,
        error,
        attempts: job.attempts,
        cached: None,
    }
}
