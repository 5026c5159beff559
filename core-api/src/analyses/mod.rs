//! Analyses: starting one ([`start`]) and running it to its end ([`run`]). This layer uses the
//! stores, the event log and the partners through [`AppState`]; the HTTP layer calls it and
//! knows nothing of how an analysis is carried out.

pub mod durable;
pub mod erase;
pub mod run;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{AnalysisEvent, Snapshot, Status, Window};
use crate::events::AppendError;
use crate::state::AppState;

/// How long the end of an analysis (its last snapshot, then its final event) is retried
/// while Redis fails: followers of the analysis wait for the final event.
pub fn final_retry(state: &AppState) -> Duration {
    Duration::from_secs(state.settings.final_retry_secs)
}

/// How long after an analysis's snapshot says it ended its final event can still be
/// recorded: both retries, and a margin.
pub fn ending_within(state: &AppState) -> Duration {
    2 * final_retry(state) + Duration::from_secs(5)
}

/// A new analysis id.
pub fn new_id() -> String {
    format!("an_{}", uuid::Uuid::new_v4().simple())
}

/// Starts the analysis of `subject` (its id from [`new_id`]) over `window`: its snapshot, its
/// event log with `analysis.accepted` as event 1, and its run in the background.
pub async fn start(
    state: &Arc<AppState>,
    subject: run::Subject,
    window: Window,
) -> Result<(), AppendError> {
    let (id, tenant, cpf) = (subject.id.clone(), subject.tenant.as_str(), &subject.cpf);
    state
        .analyses
        .insert(Snapshot {
            id: id.clone(),
            tenant: tenant.to_string(),
            cpf_hash: run::cpf_hash(state, cpf),
            status: Status::Running,
            cpf: cpf.masked(),
            from: window.from,
            to: window.to,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            partners: Default::default(),
            classified: 0,
            stored: 0,
            summary: None,
            error: None,
            events_url: None,
        })
        .await;
    state.events.create(&id).await?;
    state
        .events
        .record(
            &id,
            &AnalysisEvent::Accepted {
                id: id.clone(),
                cpf: cpf.masked(),
                from: window.from,
                to: window.to,
            },
        )
        .await?;
    // Durable from here: if this instance dies, another takes the run over. Registered only
    // once the analysis is accepted, so a start that failed never runs behind its caller's
    // back; and if registering fails, the analysis ends failed rather than `running`.
    let lease = match &state.runs {
        Some(runs) => match runs.register(&subject, window).await {
            Ok(lease) => {
                state.analyses.hold(&id, lease.token());
                Some(lease)
            }
            Err(e) => {
                // One try each (Redis has just failed): the caller is waiting for its answer.
                let reason = "the analysis could not be started".to_string();
                state
                    .analyses
                    .finish(&id, None, Duration::ZERO, |s| {
                        s.status = Status::Failed;
                        s.error = Some(reason.clone());
                    })
                    .await;
                let failed = AnalysisEvent::Failed {
                    id: id.clone(),
                    reason,
                };
                let _ = state.events.record(&id, &failed).await;
                return Err(AppendError::Backend(e.to_string()));
            }
        },
        None => None,
    };
    tracing::info!(analysis = %id, tenant = %tenant, "Analysis accepted.");
    crate::metrics::ANALYSES_STARTED.fetch_add(1, Ordering::Relaxed);
    let run = run::Run::new(state.clone(), subject, window, lease, Default::default());
    tokio::spawn(run.run(Duration::ZERO));
    Ok(())
}

/// Goes on with a run taken over from an instance that stopped renewing its lease: adopts its
/// snapshot (running again, its counters from the progress), says so (`analysis.resumed`)
/// and runs it from its progress, within what is left of its deadline.
pub async fn resume(state: Arc<AppState>, claimed: durable::Claimed) {
    let durable::Claimed {
        subject,
        window,
        progress,
        lease,
    } = claimed;
    let id = subject.id.clone();
    let snapshot = match state.analyses.adopt(&id, lease.token()).await {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return fail_unresumable(&state, &id, lease, "its snapshot is gone").await,
        // Redis could not say: the lease lapses and the analysis is claimed again later.
        Err(e) => {
            tracing::warn!(analysis = %id, error = %e, "Snapshot of a claimed analysis not read; it will be claimed again.");
            return;
        }
    };
    let spent = chrono::DateTime::parse_from_rfc3339(&snapshot.created_at)
        .map(|created| {
            (chrono::Utc::now() - created.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    tracing::info!(analysis = %id, generation = lease.generation, "Analysis taken over; resuming.");
    crate::metrics::ANALYSES_RESUMED.fetch_add(1, Ordering::Relaxed);
    // Where the progress says the run is: its predecessor may have died between saving a
    // page and counting it in the snapshot, or after writing a last snapshot.
    let (classified, stored) = (progress.movements.classified, progress.movements.stored);
    state
        .analyses
        .update(&id, Some(lease.token()), |s| {
            s.status = Status::Running;
            s.error = None;
            s.summary = None;
            s.classified = classified;
            s.stored = stored;
        })
        .await;
    let event = AnalysisEvent::Resumed {
        id: id.clone(),
        partners_done: progress.partners_done(),
        pages_done: progress.movements.pages,
    };
    let run = run::Run::new(state, subject, window, Some(lease), progress);
    run.emit(event).await;
    run.run(spent).await;
}

/// Queues the webhooks of an analysis's end for `tenant`'s endpoints (thin payloads: no
/// personal data is queued). A failure is logged: the analysis has ended all the same.
pub async fn tell_webhooks(
    state: &AppState,
    tenant: &str,
    id: &str,
    cpf_hash: &str,
    status: Status,
) {
    let (event, status) = match status {
        Status::Completed => ("analysis.completed", "completed"),
        _ => ("analysis.failed", "failed"),
    };
    if let Err(e) = state
        .webhooks
        .analysis_ended(tenant, id, cpf_hash, event, status)
        .await
    {
        tracing::error!(analysis = %id, error = %e, "Webhooks for the analysis's end not queued.");
    }
}

/// Ends as failed a run that was claimed but cannot go on (its record does not open, or its
/// snapshot is gone), so it is not claimed again at every lease and its followers hear why.
pub async fn fail_unresumable(state: &AppState, id: &str, lease: durable::Lease, why: &str) {
    tracing::error!(analysis = %id, why = %why, "Claimed analysis cannot be resumed; ending it as failed.");
    // Its snapshot into this instance's memory if there is one, so the failure reaches Redis.
    if let Err(e) = state.analyses.adopt(id, lease.token()).await {
        tracing::warn!(analysis = %id, error = %e, "Snapshot of an unresumable analysis not read; it will be claimed again.");
        return;
    }
    let reason = "the analysis could not be resumed after its instance stopped".to_string();
    let whose = state
        .analyses
        .get_any(id)
        .await
        .map(|s| (s.tenant, s.cpf_hash));
    let owned = state
        .analyses
        .finish(id, Some(lease.token()), final_retry(state), |s| {
            s.status = Status::Failed;
            s.error = Some(reason.clone());
        })
        .await;
    let failed = AnalysisEvent::Failed {
        id: id.to_string(),
        reason,
    };
    if owned {
        if let Some((tenant, person)) = &whose {
            tell_webhooks(state, tenant, id, person, Status::Failed).await;
        }
    }
    if owned
        && state
            .events
            .record_as(id, Some(lease.token()), &failed)
            .await
            .is_ok()
    {
        crate::metrics::ANALYSES_FAILED.fetch_add(1, Ordering::Relaxed);
    }
    lease.end().await;
}
