//! The in-process semaphore: the same lease semantics as Redis, for the embedded shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::PermitStore;
use crate::error::IntegrationError;

#[derive(Default)]
struct Partner {
    holders: HashMap<String, Instant>,
    released: Arc<Notify>,
}

/// Permits kept in this process.
#[derive(Clone, Default)]
pub struct LocalSemaphore {
    partners: Arc<Mutex<HashMap<String, Partner>>>,
}

impl LocalSemaphore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, partner: &str, f: impl FnOnce(&mut Partner, Instant) -> R) -> R {
        let mut map = self.partners.lock().expect("semaphore lock");
        let p = map.entry(partner.to_string()).or_default();
        let now = Instant::now();
        p.holders.retain(|_, expiry| *expiry > now);
        f(p, now)
    }
}

impl PermitStore for LocalSemaphore {
    async fn try_acquire(
        &self,
        partner: &str,
        limit: u32,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, IntegrationError> {
        Ok(self.with(partner, |p, now| {
            if p.holders.contains_key(holder) || p.holders.len() < limit as usize {
                p.holders.insert(holder.to_string(), now + lease);
                true
            } else {
                false
            }
        }))
    }

    async fn refresh(
        &self,
        partner: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, IntegrationError> {
        Ok(
            self.with(partner, |p, now| match p.holders.get_mut(holder) {
                Some(expiry) => {
                    *expiry = now + lease;
                    true
                }
                None => false,
            }),
        )
    }

    async fn release(&self, partner: &str, holder: &str) -> Result<(), IntegrationError> {
        self.with(partner, |p, _| {
            p.holders.remove(holder);
            p.released.notify_one();
        });
        Ok(())
    }

    async fn in_use(&self, partner: &str) -> Result<u32, IntegrationError> {
        Ok(self.with(partner, |p, _| p.holders.len() as u32))
    }

    async fn wait_for_release(&self, partner: &str, timeout: Duration) {
        let notify = self.with(partner, |p, _| p.released.clone());
        let _ = tokio::time::timeout(timeout, notify.notified()).await;
    }
}
