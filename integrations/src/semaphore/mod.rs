//! Counting semaphores with leases: how many requests a partner has in flight, across every
//! instance of the service.
//!
//! A permit is held by a unique holder id until it is released or its lease runs out; the
//! holder refreshes the lease while its call runs, so a crashed process's permits come back
//! within one lease time and a process that loses its lease (paused, partitioned) learns it
//! and cancels the call. Two implementations share [`PermitStore`]: [`LocalSemaphore`] for one
//! process and [`RedisSemaphore`], whose acquire, refresh and release are atomic Lua scripts
//! on Redis server time, so no number of processes can hold more than the limit and client
//! clocks do not matter.

mod local;
mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use self::local::LocalSemaphore;
pub use self::redis::RedisSemaphore;
use crate::error::IntegrationError;

/// Storage of permits. `partner` names the semaphore; `limit` is its size.
pub trait PermitStore: Send + Sync + 'static {
    /// Takes a permit for `holder` if fewer than `limit` are held; `true` when taken.
    fn try_acquire(
        &self,
        partner: &str,
        limit: u32,
        holder: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, IntegrationError>> + Send;

    /// Extends `holder`'s lease; `false` when the permit was lost (its lease ran out).
    fn refresh(
        &self,
        partner: &str,
        holder: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, IntegrationError>> + Send;

    /// Gives the permit back and wakes one waiter.
    fn release(
        &self,
        partner: &str,
        holder: &str,
    ) -> impl Future<Output = Result<(), IntegrationError>> + Send;

    /// Permits held now (expired leases not counted).
    fn in_use(&self, partner: &str) -> impl Future<Output = Result<u32, IntegrationError>> + Send;

    /// Waits until a permit of `partner` may have been released, or `timeout` passes: no
    /// polling while nothing changes.
    fn wait_for_release(&self, partner: &str, timeout: Duration)
        -> impl Future<Output = ()> + Send;
}

/// The semaphore the configuration chose.
#[derive(Clone)]
pub enum Semaphore {
    Local(LocalSemaphore),
    Redis(RedisSemaphore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Semaphore::Local($s) => $e,
            Semaphore::Redis($s) => $e,
        }
    };
}

impl PermitStore for Semaphore {
    async fn try_acquire(
        &self,
        partner: &str,
        limit: u32,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, IntegrationError> {
        dispatch!(self, s => s.try_acquire(partner, limit, holder, lease).await)
    }
    async fn refresh(
        &self,
        partner: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, IntegrationError> {
        dispatch!(self, s => s.refresh(partner, holder, lease).await)
    }
    async fn release(&self, partner: &str, holder: &str) -> Result<(), IntegrationError> {
        dispatch!(self, s => s.release(partner, holder).await)
    }
    async fn in_use(&self, partner: &str) -> Result<u32, IntegrationError> {
        dispatch!(self, s => s.in_use(partner).await)
    }
    async fn wait_for_release(&self, partner: &str, timeout: Duration) {
        dispatch!(self, s => s.wait_for_release(partner, timeout).await)
    }
}

/// A new unique holder id.
pub fn new_holder() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether a stop signal is set: its value turned true, or its sender is gone (nobody is left
/// who could let the work go on).
pub fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Resolves once [`stopping`] would say so.
pub async fn stopped(stop: &watch::Receiver<bool>) {
    let _ = stop.clone().wait_for(|s| *s).await;
}

/// A held permit whose lease is refreshed in the background until it is released.
///
/// [`Permit::lost`] resolves if a refresh finds the lease gone: the caller must then abandon
/// its call, since another process may already hold the permit it thought it had.
pub struct Permit<S: PermitStore + Clone> {
    store: S,
    partner: String,
    holder: String,
    lost: watch::Receiver<bool>,
    refresher: tokio::task::JoinHandle<()>,
    released: bool,
}

impl<S: PermitStore + Clone> Permit<S> {
    /// Tries once to take a permit; `None` when all are held.
    pub async fn try_acquire(
        store: &S,
        partner: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Option<Self>, IntegrationError> {
        let holder = new_holder();
        if !store.try_acquire(partner, limit, &holder, lease).await? {
            return Ok(None);
        }
        Ok(Some(Self::held(store.clone(), partner, holder, lease)))
    }

    /// Waits for a permit, woken by releases rather than polling, for at most `max_wait`.
    pub async fn acquire(
        store: &S,
        partner: &str,
        limit: u32,
        lease: Duration,
        max_wait: Duration,
    ) -> Result<Option<Self>, IntegrationError> {
        let (_never, stop) = watch::channel(false);
        Self::acquire_until(store, partner, limit, lease, max_wait, &stop).await
    }

    /// Like [`Permit::acquire`], but gives up (`None`) once `stop` is set (see [`stopping`]).
    ///
    /// It gives up only between takes, never with one in flight: a take whose answer is
    /// dropped may still have taken a permit in Redis, under a holder nobody knows, which
    /// nobody would refresh or release until its lease ran out.
    pub async fn acquire_until(
        store: &S,
        partner: &str,
        limit: u32,
        lease: Duration,
        max_wait: Duration,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<Self>, IntegrationError> {
        let holder = new_holder();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            if store.try_acquire(partner, limit, &holder, lease).await? {
                return Ok(Some(Self::held(store.clone(), partner, holder, lease)));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline || stopping(stop) {
                return Ok(None);
            }
            // A crashed holder's permit frees itself without a release to wake us: wake up
            // at least once a lease to look again.
            tokio::select! {
                _ = store.wait_for_release(partner, (deadline - now).min(lease)) => {}
                _ = stopped(stop) => return Ok(None),
            }
        }
    }

    fn held(store: S, partner: &str, holder: String, lease: Duration) -> Self {
        let (tx, lost) = watch::channel(false);
        let refresher = {
            let (store, partner, holder) = (store.clone(), partner.to_string(), holder.clone());
            tokio::spawn(async move {
                let every = lease / 3;
                loop {
                    tokio::time::sleep(every).await;
                    match store.refresh(&partner, &holder, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(partner = %partner, "Semaphore lease lost; cancelling the call.");
                            let _ = tx.send(true);
                            return;
                        }
                        // Redis unreachable: keep trying; the lease still runs out on time if
                        // it stays down, and the next successful refresh tells.
                        Err(e) => {
                            tracing::warn!(partner = %partner, error = %e, "Semaphore lease refresh failed.")
                        }
                    }
                }
            })
        };
        Permit {
            store,
            partner: partner.to_string(),
            holder,
            lost,
            refresher,
            released: false,
        }
    }

    /// Resolves when the lease is lost; never resolves while it is held.
    pub async fn lost(&mut self) {
        if self.lost.wait_for(|l| *l).await.is_err() {
            // The refresher ended without losing the lease (released): wait forever.
            std::future::pending::<()>().await;
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Gives the permit back.
    pub async fn release(mut self) -> Result<(), IntegrationError> {
        self.released = true;
        self.refresher.abort();
        self.store.release(&self.partner, &self.holder).await
    }
}

impl<S: PermitStore + Clone> Drop for Permit<S> {
    fn drop(&mut self) {
        self.refresher.abort();
        if !self.released {
            // A permit dropped without release (a cancelled call): give it back in the
            // background rather than leave it until the lease runs out.
            let (store, partner, holder) = (
                self.store.clone(),
                self.partner.clone(),
                self.holder.clone(),
            );
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = store.release(&partner, &holder).await;
                });
            }
        }
    }
}

/// Shared handle type used by the rest of the crate.
pub type SharedSemaphore = Arc<Semaphore>;
