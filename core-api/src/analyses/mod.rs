//! Analyses: starting one ([`start`]) and running it to its end ([`run`]). This layer uses the
//! stores, the event log and the partners through [`AppState`]; the HTTP layer calls it and
//! knows nothing of how an analysis is carried out.

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
    tracing::info!(analysis = %id, tenant = %tenant, "Analysis accepted.");
    crate::metrics::ANALYSES_STARTED.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(run::run(state.clone(), subject, window));
    Ok(())
}
