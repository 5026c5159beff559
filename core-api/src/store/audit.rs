//! The access audit trail: who read or changed a person's data, when, from where.
//!
//! LGPD (art. 37) asks a controller to keep a record of the processing of personal data, and a
//! person may ask who looked at theirs. Every read or write of an analysis's data (its start,
//! snapshot, events, transactions, categories, webhook deliveries, erasure) is one
//! [`AccessRecord`]: the tenant, the key's id (never the key), the action, the analysis, the
//! time and the client's address, with the keyed hash of the person's CPF (never the CPF) so an
//! operator given a CPF can find every access to that person's analyses. Records are only ever
//! added, from the API's point of view; the audit retention (`AUDIT_RETENTION_DAYS`) is the one
//! thing that removes them.
//!
//! Kept where the transactions are: a table of the embedded SQLite file, or an Elasticsearch
//! index of its own (`ELASTICSEARCH_AUDIT_INDEX`, not under the transactions' template).

use std::future::Future;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::model::StoreError;

/// The actions the trail records.
pub mod actions {
    pub const START: &str = "analysis.start";
    /// A start answered with the analysis an earlier request with its Idempotency-Key began.
    pub const START_REPLAYED: &str = "analysis.start_replayed";
    pub const READ: &str = "analysis.read";
    pub const EVENTS: &str = "analysis.events";
    pub const TRANSACTIONS: &str = "transactions.read";
    pub const CATEGORIES: &str = "categories.read";
    pub const ERASE: &str = "analysis.erase";
    /// The service erased an analysis at the end of its retention.
    pub const RETENTION_ERASE: &str = "analysis.retention_erase";
    /// A webhook telling a lender an analysis ended was sent (or tried).
    pub const WEBHOOK_DELIVERY: &str = "webhook.delivery";
    /// An analysis's webhook delivery log was read.
    pub const WEBHOOK_LOG: &str = "webhook.deliveries.read";
    /// A webhook delivery was queued again by hand.
    pub const WEBHOOK_RESEND: &str = "webhook.resend";
}

/// The key id of what the service does on its own (the retention, webhook deliveries).
pub const SERVICE: &str = "service";

/// One access to a person's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// `au_` and 32 hex digits.
    pub id: String,
    /// Milliseconds since the epoch, UTC: the order of the trail.
    pub at_ms: i64,
    pub tenant: String,
    /// The key's id (a prefix of its hash), `events-token` for a stream opened with an
    /// `events_url` token, or `service` for what the service does on its own (the
    /// retention, webhook deliveries).
    pub key_id: String,
    pub action: String,
    #[serde(default)]
    pub analysis_id: Option<String>,
    /// The keyed hash of the person's CPF, when the access concerns one person.
    #[serde(default)]
    pub cpf_hash: Option<String>,
    /// The client's address, as the connection (or a trusted proxy) gave it.
    #[serde(default)]
    pub client: Option<String>,
}

impl AccessRecord {
    /// A record of `action` now, with a new id.
    pub fn now(tenant: &str, key_id: &str, action: &str) -> Self {
        AccessRecord {
            id: format!("au_{}", uuid::Uuid::new_v4().simple()),
            at_ms: chrono::Utc::now().timestamp_millis(),
            tenant: tenant.into(),
            key_id: key_id.into(),
            action: action.into(),
            analysis_id: None,
            cpf_hash: None,
            client: None,
        }
    }

    /// The analysis and person the access concerns.
    pub fn about(mut self, analysis_id: &str, cpf_hash: &str) -> Self {
        self.analysis_id = Some(analysis_id.into());
        self.cpf_hash = Some(cpf_hash.into()).filter(|h: &String| !h.is_empty());
        self
    }

    /// The client's address.
    pub fn from_client(mut self, client: Option<String>) -> Self {
        self.client = client;
        self
    }

    /// RFC 3339, UTC, milliseconds.
    pub fn at(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

/// Which records to read: every filter optional, newest first, paged with `before`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    pub analysis_id: Option<String>,
    pub cpf_hash: Option<String>,
    /// Inclusive, milliseconds.
    pub from_ms: Option<i64>,
    /// Exclusive, milliseconds.
    pub to_ms: Option<i64>,
    /// Only records older than this place (the previous page's last).
    pub before: Option<AuditPosition>,
    pub limit: usize,
}

/// A place in the newest-first order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPosition {
    pub at_ms: i64,
    pub id: String,
}

impl AuditPosition {
    pub fn cursor(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}|{}", self.at_ms, self.id))
    }

    /// A cursor made by [`AuditPosition::cursor`]; `None` for anything else.
    pub fn from_cursor(cursor: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (at, id) = raw.split_once('|')?;
        Some(AuditPosition {
            at_ms: at.parse().ok()?,
            id: id.strip_prefix("au_").map(|_| id.to_string())?,
        })
    }
}

/// One page of the trail, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub records: Vec<AccessRecord>,
    pub next: Option<AuditPosition>,
}

impl AuditPage {
    /// The page from `rows` read with one more than `limit`, so a next page is known.
    pub fn from_rows(mut rows: Vec<AccessRecord>, limit: usize) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = rows.last().filter(|_| more).map(|r| AuditPosition {
            at_ms: r.at_ms,
            id: r.id.clone(),
        });
        AuditPage {
            records: rows,
            next,
        }
    }
}

/// An analysis whose transactions are older than a retention: what erasing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub analysis_id: String,
    pub tenant: String,
    pub cpf_hash: String,
}

/// The audit trail's storage.
pub trait AuditTrail: Send + Sync + 'static {
    /// Adds a record (never replaces one).
    fn record(&self, r: AccessRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// One page of the records that pass `q`, newest first.
    fn audit(&self, q: AuditQuery) -> impl Future<Output = Result<AuditPage, StoreError>> + Send;
    /// Removes the records older than `before_ms` (the audit retention); how many.
    fn expire_audit(&self, before_ms: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_cursor_comes_back_as_its_position_and_anything_else_is_refused() {
        let p = AuditPosition {
            at_ms: 1_763_800_000_123,
            id: "au_0123".into(),
        };
        assert_eq!(AuditPosition::from_cursor(&p.cursor()), Some(p));
        assert_eq!(AuditPosition::from_cursor("nope"), None);
        let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("12|x");
        assert_eq!(AuditPosition::from_cursor(&other), None);
    }
}
