//! Analyses: starting one ([`start`]) and running it to its end ([`run`]). This layer uses the
//! stores, the event log and the partners through [`AppState`]; the HTTP layer calls it and
//! knows nothing of how an analysis is carried out.

pub mod durable;
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
    // Durable from here: if this instance dies, another takes the run over.
    let lease = match &state.runs {
        Some(runs) => Some(
            runs.register(&subject, window)
                .await
                .map_err(|e| AppendError::Backend(e.to_string()))?,
        ),
        None => None,
    };
    state
        .events
        .record_as(
            &id,
            lease.as_ref().map(durable::Lease::token),
            &AnalysisEvent::Accepted {
                id: id.clone(),
                cpf: cpf.masked(),
                from: window.from,
                to: window.to,
            },
        )
        .await?;
    tracing::info!(analysis = %id, tenant = %tenant, "Analysis accepted.");
    crate::metrics::ANALYSES_STARTED.fetch_add(1, Ordering::Relaxed);
    let run = run::Run::new(state.clone(), subject, window, lease, Default::default());
    tokio::spawn(run.run(Duration::ZERO));
    Ok(())
}

/// Goes on with a run taken over from an instance that stopped renewing its lease: adopts its
/// snapshot, says so (`analysis.resumed`) and runs it from its progress, within what is left
/// of its deadline.
pub async fn resume(state: Arc<AppState>, claimed: durable::Claimed) {
    let durable::Claimed {
        subject,
        window,
        progress,
        lease,
    } = claimed;
    let id = subject.id.clone();
    let Some(snapshot) = state.analyses.adopt(&id).await else {
        // Without its snapshot nobody can read the analysis: let the claim lapse and expire.
        tracing::warn!(analysis = %id, "Claimed an analysis without a snapshot; not resumed.");
        return;
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
    let event = AnalysisEvent::Resumed {
        id: id.clone(),
        partners_done: progress.partners_done(),
        pages_done: progress.movements.pages,
    };
    let run = run::Run::new(state, subject, window, Some(lease), progress);
    run.emit(event).await;
    run.run(spent).await;
}
