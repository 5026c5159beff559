//! What every request handler and analysis run shares: the settings and one handle on each
//! service below them (auth, event log, snapshots, partners, classifier, store).

use std::sync::Arc;

use classifier::Scorer;
use integrations::Kind;
use tokio::sync::watch;

use crate::analyses::durable::Runs;
use crate::auth::Auth;
use crate::config::{Secret, Settings};
use crate::events::EventLog;
use crate::idempotency::Idempotency;
use crate::limits::OpenPerCaller;
use crate::partners::Partners;
use crate::snapshots::Analyses;
use crate::store::Store;

pub struct AppState {
    pub settings: Settings,
    pub auth: Arc<Auth>,
    pub events: EventLog,
    pub analyses: Analyses,
    /// Durable runs (the Redis shape): leases, progress, takeover.
    pub runs: Option<Arc<Runs>>,
    /// Analysis runs in progress on this instance: a shutdown waits for them to hand on.
    pub active_runs: Arc<std::sync::atomic::AtomicUsize>,
    /// `Idempotency-Key`s of analysis starts, per tenant.
    pub idempotency: Idempotency,
    pub partners: Partners,
    pub scorer: Arc<Scorer>,
    pub store: Store,
    /// Webhook endpoints, deliveries and their sender.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub cpf_hash_key: Secret,
    /// Movements an analysis may hold at most.
    pub max_transactions: usize,
    pub shutdown: watch::Receiver<bool>,
    /// Classification streams open per API key.
    pub batch_streams: Arc<OpenPerCaller>,
    /// Event streams open per tenant (capped by `max_streams_per_tenant`).
    pub event_streams: Arc<OpenPerCaller>,
    /// Event stream opens per tenant (`stream_opens_per_sec`): a token skips the key's rate
    /// limit, so opens are counted by tenant too.
    pub stream_opens: governor::DefaultKeyedRateLimiter<String>,
}

impl AppState {
    /// The configured partner serving `kind` (the first one, if several).
    pub fn partner_for(&self, kind: Kind) -> Option<String> {
        self.partners.partner_for(kind)
    }

    /// Resolves when the service starts shutting down.
    pub async fn shutdown_signal(&self) {
        crate::shutdown::stopped(&self.shutdown).await
    }

    /// As [`AppState::shutdown_signal`], for a task that does not hold the state.
    pub fn shutdown_signal_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = self.shutdown.clone();
        async move { crate::shutdown::stopped(&rx).await }
    }
}
