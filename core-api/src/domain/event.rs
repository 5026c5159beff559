//! The events of an analysis: one enum, the whole public contract of the SSE stream (see
//! `docs/events.md`). The run creates them, the event log stores them as the frames every
//! client receives, and `/openapi.json` documents each payload from this same type, so the
//! code, the schema and the stream cannot disagree.
//!
//! Serialised externally tagged: `{"partner.started": {"kind": ..., "partner": ...}}`. The tag
//! becomes the SSE `event:` line and the payload its `data:` line, to which the event log adds
//! `at`, the time the event was recorded.

use chrono::NaiveDate;
use integrations::Kind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::summary::Summary;

/// One event of an analysis's stream: the SSE `event:` name is the tag, the `data:` line the
/// payload, to which every event adds `at` (an integer, ms since the Unix epoch: when it was
/// recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub enum AnalysisEvent {
    /// Event 1, sent by `POST /v1/analyses` before it answers `202`.
    #[serde(rename = "analysis.accepted")]
    Accepted {
        /// The analysis id, `an_` and 32 hex digits.
        id: String,
        /// The masked CPF, `***.DDD.DDD-**`.
        cpf: String,
        from: NaiveDate,
        to: NaiveDate,
    },
    /// The run made its first request for a kind.
    #[serde(rename = "partner.started")]
    PartnerStarted {
        /// `consumer`, `rating` or `movements`.
        #[schema(value_type = String)]
        kind: Kind,
        /// The partner's configured name.
        partner: String,
    },
    /// A request could not be made at once and waits in the retry queue.
    #[serde(rename = "partner.queued")]
    PartnerQueued {
        #[schema(value_type = String)]
        kind: Kind,
        partner: String,
        /// `no_permit`, `circuit_open`, `rate_limited`, `partner_busy` or `partner_failed`.
        reason: String,
        /// When the first retry is due: RFC 3339, UTC, milliseconds.
        next_attempt_at: String,
        /// `null` for a kind's first request; a later movements page's cursor.
        page: Option<String>,
    },
    /// A kind has all its data.
    #[serde(rename = "partner.completed")]
    PartnerCompleted {
        #[schema(value_type = String)]
        kind: Kind,
        partner: String,
        /// `consumer` only: debts in the record, paid ones included.
        #[serde(skip_serializing_if = "Option::is_none")]
        debts: Option<u64>,
        /// `movements` only: movements classified over all pages.
        #[serde(skip_serializing_if = "Option::is_none")]
        movements: Option<u64>,
        /// `movements` only: pages received.
        #[serde(skip_serializing_if = "Option::is_none")]
        pages: Option<u32>,
        /// Set when the answer came from the cache (no partner call): its time and age.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cached: Option<super::analysis::Cached>,
    },
    /// A kind ended without its data; the analysis goes on without it.
    #[serde(rename = "partner.failed")]
    PartnerFailed {
        #[schema(value_type = String)]
        kind: Kind,
        /// `""` when no partner serves the kind.
        partner: String,
        /// What happened, for a person to read.
        reason: String,
        /// Always `true`: the kind is not tried again in this analysis.
        #[serde(rename = "final")]
        is_final: bool,
    },
    /// A movements page was classified (sent before it is stored).
    #[serde(rename = "classification.progress")]
    ClassificationProgress {
        /// Pages received so far, from 1.
        page: u32,
        /// Movements classified so far.
        classified: u64,
        /// Movements in this page.
        in_page: u64,
        /// More pages follow.
        more: bool,
    },
    /// A page's transactions were written to the store.
    #[serde(rename = "transactions.stored")]
    TransactionsStored {
        /// Transactions stored so far for this analysis.
        stored: u64,
    },
    /// Another instance took the analysis over, the one running it having stopped (a crash,
    /// or a shutdown that handed it on), and goes on from what was recorded: partner kinds
    /// already answered are not asked again, movement pages already stored are not fetched
    /// again, and event ids go on from the last one.
    #[serde(rename = "analysis.resumed")]
    Resumed {
        id: String,
        /// Partner kinds already answered (`consumer`, `rating`, `movements`).
        partners_done: Vec<String>,
        /// Movement pages already classified and stored.
        pages_done: u32,
    },
    /// Final: the analysis finished and its summary is ready.
    #[serde(rename = "analysis.completed")]
    Completed { id: String, summary: Summary },
    /// Final: the analysis cannot finish.
    #[serde(rename = "analysis.failed")]
    Failed {
        id: String,
        /// Why, for a person to read.
        reason: String,
    },
}

impl AnalysisEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            AnalysisEvent::Accepted { .. } => "analysis.accepted",
            AnalysisEvent::PartnerStarted { .. } => "partner.started",
            AnalysisEvent::PartnerQueued { .. } => "partner.queued",
            AnalysisEvent::PartnerCompleted { .. } => "partner.completed",
            AnalysisEvent::PartnerFailed { .. } => "partner.failed",
            AnalysisEvent::ClassificationProgress { .. } => "classification.progress",
            AnalysisEvent::TransactionsStored { .. } => "transactions.stored",
            AnalysisEvent::Resumed { .. } => "analysis.resumed",
            AnalysisEvent::Completed { .. } => "analysis.completed",
            AnalysisEvent::Failed { .. } => "analysis.failed",
        }
    }

    /// Whether the analysis ends with this event.
    pub fn is_final(&self) -> bool {
        is_final(self.name())
    }

    /// The payload as a JSON object (the SSE `data:` line before the log adds `at`).
    pub fn data(&self) -> serde_json::Map<String, serde_json::Value> {
        // Every variant has named fields of plain data, so the tagged value is always an
        // object holding one object; the empty fallbacks only keep this free of panics.
        let Ok(serde_json::Value::Object(mut tagged)) = serde_json::to_value(self) else {
            return serde_json::Map::new();
        };
        match tagged.remove(self.name()) {
            Some(serde_json::Value::Object(payload)) => payload,
            _ => serde_json::Map::new(),
        }
    }
}

/// Whether an event of this name ends its analysis.
pub fn is_final(name: &str) -> bool {
    name == "analysis.completed" || name == "analysis.failed"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_the_event_name_and_the_payload_its_data() {
        let e = AnalysisEvent::PartnerFailed {
            kind: Kind::Rating,
            partner: "rating-sim".into(),
            reason: "not_found: the partner has no record of this CPF".into(),
            is_final: true,
        };
        let tagged = serde_json::to_value(&e).unwrap();
        assert!(tagged.get(e.name()).is_some(), "{tagged}");
        let data = e.data();
        assert_eq!(data["kind"], "rating");
        assert_eq!(data["final"], true);
        assert!(!e.is_final());
        let done = AnalysisEvent::Failed {
            id: "an_1".into(),
            reason: "x".into(),
        };
        assert!(done.is_final());
    }

    #[test]
    fn a_first_request_has_a_null_page_and_optional_counts_are_left_out() {
        let q = AnalysisEvent::PartnerQueued {
            kind: Kind::Movements,
            partner: "p".into(),
            reason: "no_permit".into(),
            next_attempt_at: "2026-11-21T13:20:01.250Z".into(),
            page: None,
        };
        assert_eq!(q.data()["page"], serde_json::Value::Null);
        let c = AnalysisEvent::PartnerCompleted {
            kind: Kind::Consumer,
            partner: "p".into(),
            debts: Some(2),
            movements: None,
            pages: None,
            cached: None,
        };
        let data = c.data();
        assert_eq!(data["debts"], 2);
        assert!(!data.contains_key("movements") && !data.contains_key("pages"));
        assert!(!data.contains_key("cached"));
    }
}
