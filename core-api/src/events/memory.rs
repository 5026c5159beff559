//! The in-memory event log of the embedded shape: each analysis's events and their frames in a
//! map, bounded per analysis, dropped a set time after the analysis ends. Live clients are
//! pushed each new frame as it is appended, so following costs no task per client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::mpsc;

use super::entry::{AppendError, Event, MAX_EVENTS};
use super::fanout::Fanout;
use crate::domain::event::is_final;

struct Log {
    events: Vec<Event>,
    /// Each event as an SSE frame, built once and shared by every client.
    frames: Vec<Bytes>,
    /// Clients following the log live: each append is pushed to them.
    live: Fanout,
    finished_at: Option<Instant>,
}

/// The in-memory log.
#[derive(Clone)]
pub struct MemoryLog {
    logs: Arc<Mutex<HashMap<String, Log>>>,
    retention: Duration,
}

impl MemoryLog {
    /// `retention`: how long a finished analysis's events stay readable.
    pub fn new(retention: Duration) -> Self {
        MemoryLog {
            logs: Arc::default(),
            retention,
        }
    }

    pub(super) fn create(&self, analysis: &str) {
        self.logs.lock().expect("event log lock").insert(
            analysis.to_string(),
            Log {
                events: Vec::new(),
                frames: Vec::new(),
                live: Fanout::default(),
                finished_at: None,
            },
        );
    }

    /// The frames after `after`, then every frame appended later, through one channel: the
    /// replay and the registration happen under the log's lock, so nothing falls between
    /// them. `None` for an unknown analysis. The channel closes after the final event. An
    /// `after` past the log's end is taken as its end: no client has events not yet written.
    pub fn subscribe(&self, analysis: &str, after: u64) -> Option<mpsc::Receiver<Bytes>> {
        let mut logs = self.logs.lock().expect("event log lock");
        let log = logs.get_mut(analysis)?;
        let after = after.min(log.frames.len() as u64);
        let past: Vec<Bytes> = log.frames.iter().skip(after as usize).cloned().collect();
        let live = log.finished_at.is_none();
        Some(log.live.subscribe(past, after, live))
    }

    pub(super) fn append(
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
        let terminal = is_final(kind);
        if log.events.len() + usize::from(!terminal) >= MAX_EVENTS {
            return Err(AppendError::Full);
        }
        let id = log.events.len() as u64 + 1;
        let event = Event {
            id,
            kind: kind.into(),
            data: data.to_string().into(),
        };
        let bytes = event.frame();
        log.events.push(event);
        log.frames.push(bytes.clone());
        log.live.push(id, &bytes);
        if terminal {
            log.finished_at = Some(Instant::now());
            // Every stream ends after the final event.
            log.live.close(None);
        }
        Ok(id)
    }

    pub(super) fn read_after(&self, analysis: &str, after: u64, max: usize) -> Option<Vec<Event>> {
        let logs = self.logs.lock().expect("event log lock");
        logs.get(analysis).map(|l| {
            l.events
                .iter()
                .filter(|e| e.id > after)
                .take(max)
                .cloned()
                .collect()
        })
    }

    pub(super) fn erase(&self, analysis: &str) {
        self.logs.lock().expect("event log lock").remove(analysis);
    }

    pub(super) fn expire(&self) -> usize {
        let mut logs = self.logs.lock().expect("event log lock");
        let before = logs.len();
        let retention = self.retention;
        logs.retain(|_, l| l.finished_at.is_none_or(|at| at.elapsed() < retention));
        before - logs.len()
    }
}
