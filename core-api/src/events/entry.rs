//! One recorded event, the bounds every log keeps to, and why an append can fail.

use std::sync::Arc;

use axum::body::Bytes;

use super::frame;
use crate::domain::event::is_final;

/// Events kept per analysis at most.
pub const MAX_EVENTS: usize = 10_000;

/// Frames a live client may have unread before it is cut off.
pub const CLIENT_BUFFER: usize = 64;

/// One event of an analysis. Cloning is cheap: every SSE client of an analysis gets the same
/// event, so its JSON is serialised once, when it is appended.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Increasing within the analysis, from 1.
    pub id: u64,
    /// `analysis.accepted`, `partner.started`, ...
    pub kind: Arc<str>,
    /// The event's data as JSON text.
    pub data: Arc<str>,
}

impl Event {
    /// Whether the analysis ends with this event.
    pub fn is_terminal(&self) -> bool {
        is_final(&self.kind)
    }

    /// The event as the SSE frame clients receive.
    pub fn frame(&self) -> Bytes {
        frame::event(self.id, &self.kind, &self.data)
    }
}

/// Why an append failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the analysis logged its {MAX_EVENTS} events allowed")]
    Full,
    #[error("the analysis already ended")]
    Finished,
    #[error("another instance runs the analysis now")]
    NotOwner,
    #[error("event log: {0}")]
    Backend(String),
}
