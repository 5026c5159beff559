//! Erasure: `DELETE /v1/analyses/{id}` and the retention both come here. An analysis's
//! personal data lives in six places, and all of them go: the partners' side (cached answers
//! about the person within the tenant, queued requests and dead letters of the analysis), the
//! stored transactions (waited on, so a read right after finds none), the webhook deliveries,
//! the event log and, last, the snapshot (last, because it is what says whose the analysis is:
//! an erasure that fails half-way can be asked again). The erasure is recorded in the audit
//! trail (which keeps no personal data but the keyed CPF hash) before any of it.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::Status;
use crate::state::AppState;
use crate::store::{actions, AccessRecord, AuditTrail, TransactionStore, SERVICE};

/// Why an analysis was not erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// Its run is still writing; it ends within the analysis deadline.
    #[error("the analysis is still running")]
    Running,
    /// A store failed; what was erased stays erased, and the erasure can be asked again.
    #[error("erasing {what}: {cause}")]
    Backend { what: &'static str, cause: String },
}

fn failed(what: &'static str) -> impl Fn(String) -> EraseError {
    move |cause| EraseError::Backend { what, cause }
}

/// Analyses the retention erases per look-up; it looks again until none is left.
const RETENTION_BATCH: usize = 100;

/// Erases analysis `id` of `tenant`, whose person's keyed CPF hash is `cpf_hash`, and records
/// `record` (the access that asked for it) once it is done.
pub async fn erase(
    state: &AppState,
    id: &str,
    tenant: &str,
    cpf_hash: &str,
    record: AccessRecord,
) -> Result<(), EraseError> {
    if let Some(s) = state.analyses.get(id, tenant).await {
        if s.status == Status::Running {
            return Err(EraseError::Running);
        }
    }
    // Recorded first, failing closed: an erasure that stops half-way is in the trail, and
    // one that cannot be recorded does not start.
    state
        .store
        .record(record.about(id, cpf_hash))
        .await
        .map_err(|e| failed("the audit record of the erasure")(e.to_string()))?;
    // Without the person's hash (a snapshot from before it was kept) the queue is purged all
    // the same; the scope then names no cached answer.
    let scope = crate::analyses::run::cache_scope(tenant, cpf_hash);
    state
        .partners
        .erase(&scope, id)
        .await
        .map_err(failed("the partners' cached answers and queued requests"))?;
    state
        .store
        .erase(id)
        .await
        .map_err(|e| failed("the stored transactions")(e.to_string()))?;
    state
        .webhooks
        .store()
        .erase_analysis(id)
        .await
        .map_err(|e| failed("the webhook deliveries")(e.to_string()))?;
    state
        .events
        .erase(id)
        .await
        .map_err(|e| failed("the event log")(e.to_string()))?;
    state
        .analyses
        .erase(id)
        .await
        .map_err(failed("the snapshot"))?;
    tracing::info!(analysis = %id, "Analysis erased.");
    Ok(())
}

/// Erases, every `retention_sweep_secs`, the analyses stored longer than `retention_days` ago
/// and the audit records older than `audit_retention_days`, until the service stops.
pub fn watch_retention(state: Arc<AppState>) {
    tokio::spawn(async move {
        let stop = state.shutdown_signal();
        tokio::pin!(stop);
        let every = Duration::from_secs(state.settings.retention_sweep_secs);
        loop {
            sweep(&state).await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => break,
            }
        }
    });
}

/// Milliseconds since the epoch, `days` ago.
fn days_ago(days: f64) -> i64 {
    chrono::Utc::now().timestamp_millis() - (days * 86_400_000.0) as i64
}

/// One pass of the retention.
async fn sweep(state: &AppState) {
    let before = days_ago(state.settings.retention_days);
    // Page by page in the store's order, so analyses that cannot be erased now (running again
    // after a takeover, a store failing) are passed over, not looked at for ever.
    let mut after = None;
    loop {
        let (expired, next) = match state.store.expired(before, after, RETENTION_BATCH).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "Could not look for analyses past their retention.");
                return;
            }
        };
        for e in expired {
            let record = AccessRecord::now(&e.tenant, SERVICE, actions::RETENTION_ERASE);
            if let Err(err) = erase(state, &e.analysis_id, &e.tenant, &e.cpf_hash, record).await {
                tracing::warn!(analysis = %e.analysis_id, error = %err, "Analysis past its retention not erased yet; the next pass tries again.");
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let kept = crate::webhooks::store::DELIVERY_TTL.as_millis() as i64;
    if let Err(e) = state
        .webhooks
        .store()
        .expire(chrono::Utc::now().timestamp_millis() - kept)
        .await
    {
        tracing::warn!(error = %e, "Could not remove old webhook deliveries.");
    }
    match state
        .store
        .expire_audit(days_ago(state.settings.audit_retention_days))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(records = n, "Audit records past their retention removed."),
        Err(e) => {
            tracing::warn!(error = %e, "Could not remove audit records past their retention.")
        }
    }
}
