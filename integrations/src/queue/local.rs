//! The in-process retry queue of the embedded shape: the same semantics as Redis, in memory.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{now_ms, DeadLetter, Job, Leased, QueueStats, RetryQueue};
use crate::error::IntegrationError;

#[derive(Default)]
struct State {
    jobs: HashMap<String, Job>,
    due: BTreeSet<(u64, String)>,
    /// id → (lease expiry, token).
    leased: HashMap<String, (u64, String)>,
    /// Oldest first, at most `max_depth`: beyond, the oldest goes.
    dead: VecDeque<Job>,
    next_token: u64,
}

impl State {
    fn reclaim_expired(&mut self, now: u64) {
        let expired: Vec<String> = self
            .leased
            .iter()
            .filter(|(_, (expiry, _))| *expiry <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.leased.remove(&id);
            self.due.insert((now, id));
        }
    }

    fn owns(&self, leased: &Leased) -> bool {
        self.leased
            .get(&leased.job.id)
            .is_some_and(|(_, token)| *token == leased.token)
    }
}

/// Jobs kept in this process's memory.
#[derive(Clone)]
pub struct LocalQueue {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    max_depth: u64,
}

impl LocalQueue {
    pub fn new(max_depth: u64) -> Self {
        LocalQueue {
            state: Arc::default(),
            changed: Arc::new(Notify::new()),
            max_depth,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("queue lock")
    }
}

impl RetryQueue for LocalQueue {
    async fn enqueue(&self, job: &Job, delay: Duration) -> Result<bool, IntegrationError> {
        {
            let mut s = self.lock();
            if s.jobs.contains_key(&job.id) {
                return Ok(false);
            }
            if s.jobs.len() as u64 >= self.max_depth {
                return Err(IntegrationError::QueueFull(self.max_depth));
            }
            s.jobs.insert(job.id.clone(), job.clone());
            s.due
                .insert((now_ms() + delay.as_millis() as u64, job.id.clone()));
        }
        self.changed.notify_waiters();
        Ok(true)
    }

    async fn lease(&self, max: usize, lease: Duration) -> Result<Vec<Leased>, IntegrationError> {
        let now = now_ms();
        let mut s = self.lock();
        s.reclaim_expired(now);
        let ready: Vec<(u64, String)> = s
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(ready.len());
        for entry in ready {
            s.due.remove(&entry);
            let id = entry.1;
            if let Some(job) = s.jobs.get(&id).cloned() {
                s.next_token += 1;
                let token = s.next_token.to_string();
                s.leased
                    .insert(id, (now + lease.as_millis() as u64, token.clone()));
                out.push(Leased { job, token });
            }
        }
        Ok(out)
    }

    async fn finish(&self, leased: &Leased) -> Result<bool, IntegrationError> {
        let mut s = self.lock();
        if !s.owns(leased) {
            return Ok(false);
        }
        s.leased.remove(&leased.job.id);
        s.jobs.remove(&leased.job.id);
        Ok(true)
    }

    async fn reschedule(
        &self,
        leased: &Leased,
        job: &Job,
        delay: Duration,
    ) -> Result<bool, IntegrationError> {
        {
            let mut s = self.lock();
            if !s.owns(leased) {
                return Ok(false);
            }
            s.leased.remove(&leased.job.id);
            s.jobs.insert(job.id.clone(), job.clone());
            s.due
                .insert((now_ms() + delay.as_millis() as u64, job.id.clone()));
        }
        self.changed.notify_waiters();
        Ok(true)
    }

    async fn bury(&self, leased: &Leased, job: &Job) -> Result<bool, IntegrationError> {
        let mut s = self.lock();
        if !s.owns(leased) {
            return Ok(false);
        }
        s.leased.remove(&leased.job.id);
        s.jobs.remove(&leased.job.id);
        s.dead.push_back(job.clone());
        // In memory the dead letters have no TTL: bounded like the queue, the oldest
        // dropped (CPF and all) to make room.
        while s.dead.len() as u64 > self.max_depth {
            s.dead.pop_front();
        }
        Ok(true)
    }

    async fn replay(&self, id: Option<&str>, scope: &str) -> Result<u64, IntegrationError> {
        let n = {
            let mut s = self.lock();
            let (replay, keep): (Vec<Job>, Vec<Job>) = std::mem::take(&mut s.dead)
                .into_iter()
                .partition(|j| j.id.starts_with(scope) && id.is_none_or(|id| j.id == id));
            s.dead = keep.into();
            let now = now_ms();
            let n = replay.len() as u64;
            for mut job in replay {
                job.attempts = 0;
                job.outcome = None;
                job.failed_deliveries = 0;
                job.enqueued_at_ms = now;
                s.due.insert((now, job.id.clone()));
                s.jobs.insert(job.id.clone(), job);
            }
            n
        };
        self.changed.notify_waiters();
        Ok(n)
    }

    async fn purge(&self, prefix: &str) -> Result<u64, IntegrationError> {
        let mut s = self.lock();
        let ids: Vec<String> = s
            .jobs
            .keys()
            .filter(|id| id.starts_with(prefix))
            .cloned()
            .collect();
        for id in &ids {
            s.jobs.remove(id);
            s.leased.remove(id);
        }
        s.due.retain(|(_, id)| !id.starts_with(prefix));
        let dead = s.dead.len();
        s.dead.retain(|j| !j.id.starts_with(prefix));
        Ok((ids.len() + dead - s.dead.len()) as u64)
    }

    async fn dead_letters(
        &self,
        max: usize,
        scope: &str,
    ) -> Result<Vec<DeadLetter>, IntegrationError> {
        Ok(self
            .lock()
            .dead
            .iter()
            .filter(|j| j.id.starts_with(scope))
            .take(max)
            .map(DeadLetter::from)
            .collect())
    }

    async fn stats(&self) -> Result<QueueStats, IntegrationError> {
        let s = self.lock();
        let now = now_ms();
        Ok(QueueStats {
            due: s.due.len() as u64,
            leased: s.leased.len() as u64,
            dead: s.dead.len() as u64,
            oldest_age_ms: s
                .jobs
                .values()
                .map(|j| now.saturating_sub(j.enqueued_at_ms))
                .max()
                .unwrap_or(0),
        })
    }

    async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }
}
