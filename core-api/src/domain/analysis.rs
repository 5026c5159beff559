//! An analysis as clients see it: its status, where each partner kind is, and the snapshot
//! `GET /v1/analyses/{id}` answers with.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::summary::Summary;

/// Where an analysis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
    Failed,
}

/// Where one partner kind is within an analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartnerStatus {
    /// Asked, no answer yet.
    Requested,
    /// The partner could not take the request now; it waits in the retry queue.
    Queued,
    /// The partner answered with data.
    Completed,
    /// The partner has no record of this person.
    NotFound,
    /// The partner failed for good (retries spent, or a permanent error).
    Failed,
}

/// One partner kind within an analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PartnerState {
    /// The configured partner serving this kind.
    pub partner: String,
    pub state: PartnerStatus,
    /// Why it is queued, not found or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Set when the data came from the answer cache rather than a call to the partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<Cached>,
}

/// A partner's answer reused from the cache: when the partner gave it, and how old it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cached {
    /// RFC 3339, UTC.
    pub stored_at: String,
    pub age_secs: u64,
}

impl From<integrations::cache::CachedAnswer> for Cached {
    fn from(c: integrations::cache::CachedAnswer) -> Self {
        Cached {
            stored_at: c.stored_at,
            age_secs: c.age_secs,
        }
    }
}

/// What `GET /v1/analyses/{id}` shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub id: String,
    #[serde(skip, default)]
    pub tenant: String,
    /// The keyed hash of the person's CPF, for the audit trail; never shown either.
    #[serde(skip, default)]
    pub cpf_hash: String,
    pub status: Status,
    /// The CPF masked (`***.982.247-**`): the service never shows it whole.
    pub cpf: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// RFC 3339, UTC, milliseconds.
    pub created_at: String,
    /// By partner kind: `consumer`, `rating`, `movements`.
    pub partners: BTreeMap<String, PartnerState>,
    pub classified: u64,
    pub stored: u64,
    /// Income, spend by category, net flow and risk signals, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The SSE stream with a fresh 15-minute token, so a client whose `events_url` expired
    /// can follow again; filled when a snapshot is read, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_url: Option<String>,
}
