//! The event log of each analysis: every step appends an event; the SSE endpoint replays the
//! log from the client's last event id and then follows it.
//!
//! This is the in-memory log of the embedded shape: bounded per analysis (an analysis that
//! would log more fails rather than grow without limit), followers fed through a bounded
//! broadcast channel (a follower that falls behind is cut off, not buffered for), and a
//! finished analysis's log kept for a set time so a client can reconnect and catch up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept per analysis at most.
pub const MAX_EVENTS: usize = 10_000;
/// Events a follower may fall behind by before it is cut off.
pub const FOLLOWER_BUFFER: usize = 1024;

/// One event of an analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Increasing within the analysis, from 1.
    pub id: u64,
    /// `analysis.accepted`, `partner.started`, ...
    pub kind: String,
    pub data: serde_json::Value,
}

impl Event {
    /// Whether the analysis ends with this event.
    pub fn is_terminal(&self) -> bool {
        self.kind == "analysis.completed" || self.kind == "analysis.failed"
    }
}

struct Log {
    events: Vec<Event>,
    tx: broadcast::Sender<Event>,
    finished_at: Option<Instant>,
}

/// The logs of every analysis of this process.
#[derive(Clone)]
pub struct EventLog {
    logs: Arc<Mutex<HashMap<String, Log>>>,
    retention: Duration,
}

/// Why an append failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the analysis logged its {MAX_EVENTS} events allowed")]
    Full,
    #[error("the analysis already ended")]
    Finished,
}

impl EventLog {
    /// `retention`: how long a finished analysis's events stay readable.
    pub fn new(retention: Duration) -> Self {
        EventLog {
            logs: Arc::default(),
            retention,
        }
    }

    /// Starts an empty log for a new analysis.
    pub fn create(&self, analysis: &str) {
        let (tx, _) = broadcast::channel(FOLLOWER_BUFFER);
        self.logs.lock().expect("event log lock").insert(
            analysis.to_string(),
            Log {
                events: Vec::new(),
                tx,
                finished_at: None,
            },
        );
    }

    /// Appends an event; returns its id.
    pub fn append(
        &self,
        analysis: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<u64, AppendError> {
        let mut logs = self.logs.lock().expect("event log lock");
        let log = logs.get_mut(analysis).ok_or(AppendError::Finished)?;
        if log.finished_at.is_some() {
            return Err(AppendError::Finished);
        }
        // The last slot is kept for the terminal event, so an analysis can always end.
        let terminal = kind == "analysis.completed" || kind == "analysis.failed";
        if log.events.len() + usize::from(!terminal) >= MAX_EVENTS {
            return Err(AppendError::Full);
        }
        let event = Event {
            id: log.events.len() as u64 + 1,
            kind: kind.to_string(),
            data,
        };
        if terminal {
            log.finished_at = Some(Instant::now());
        }
        let id = event.id;
        // No follower is not an error.
        let _ = log.tx.send(event.clone());
        log.events.push(event);
        Ok(id)
    }

    /// The events after `after` and a receiver of the ones to come, taken together so that
    /// nothing falls between them; `None` for an unknown analysis.
    pub fn follow(
        &self,
        analysis: &str,
        after: u64,
    ) -> Option<(Vec<Event>, broadcast::Receiver<Event>)> {
        let logs = self.logs.lock().expect("event log lock");
        let log = logs.get(analysis)?;
        let rx = log.tx.subscribe();
        let past = log
            .events
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect();
        Some((past, rx))
    }

    /// The last event id, for reconnect checks; `None` for an unknown analysis.
    pub fn last_id(&self, analysis: &str) -> Option<u64> {
        let logs = self.logs.lock().expect("event log lock");
        logs.get(analysis).map(|l| l.events.len() as u64)
    }

    /// Drops the logs of analyses finished longer ago than the retention.
    pub fn expire(&self) -> usize {
        let mut logs = self.logs.lock().expect("event log lock");
        let before = logs.len();
        let retention = self.retention;
        logs.retain(|_, l| l.finished_at.is_none_or(|at| at.elapsed() < retention));
        before - logs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_followers_get_the_past_then_the_future() {
        let log = EventLog::new(Duration::from_secs(60));
        log.create("a");
        assert_eq!(
            log.append("a", "analysis.accepted", serde_json::json!({})),
            Ok(1)
        );
        assert_eq!(
            log.append("a", "partner.started", serde_json::json!({})),
            Ok(2)
        );
        let (past, mut rx) = log.follow("a", 1).unwrap();
        assert_eq!(past.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
        log.append("a", "analysis.completed", serde_json::json!({}))
            .unwrap();
        let next = rx.try_recv().unwrap();
        assert_eq!((next.id, next.is_terminal()), (3, true));
        assert_eq!(
            log.append("a", "late", serde_json::json!({})),
            Err(AppendError::Finished)
        );
        assert!(log.follow("nope", 0).is_none());
    }

    #[test]
    fn a_log_is_bounded_but_can_always_end() {
        let log = EventLog::new(Duration::from_secs(60));
        log.create("a");
        for _ in 0..MAX_EVENTS - 1 {
            log.append("a", "classification.progress", serde_json::json!({}))
                .unwrap();
        }
        assert_eq!(
            log.append("a", "classification.progress", serde_json::json!({})),
            Err(AppendError::Full)
        );
        assert!(log
            .append("a", "analysis.failed", serde_json::json!({}))
            .is_ok());
    }

    #[test]
    fn finished_logs_expire_after_the_retention() {
        let log = EventLog::new(Duration::ZERO);
        log.create("done");
        log.create("running");
        log.append("done", "analysis.completed", serde_json::json!({}))
            .unwrap();
        assert_eq!(log.expire(), 1);
        assert!(log.follow("done", 0).is_none());
        assert!(log.follow("running", 0).is_some());
    }
}
