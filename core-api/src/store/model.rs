//! What both stores share: the stored row, the query and its page, the per-label totals, the
//! error, and the [`TransactionStore`] trait each store implements.

use std::future::Future;

use base64::Engine;
use serde::Serialize;
use utoipa::ToSchema;

/// One classified movement, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StoredTransaction {
    pub analysis_id: String,
    pub movement_id: String,
    pub tenant: String,
    pub cpf_hash: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub description: String,
    pub amount_cents: i64,
    pub label: String,
    pub probability: f32,
    pub confidence: String,
}

/// Count and total per label.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LabelTotal {
    pub label: String,
    pub count: u64,
    /// Sum of the signed amounts, in cents.
    pub total_cents: i64,
}

/// Which of an analysis's transactions to read: every filter is optional and they all hold
/// together; results are sorted by date, then movement id, and paged with `after`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransactionQuery {
    pub analysis_id: String,
    pub label: Option<String>,
    /// Inclusive, `YYYY-MM-DD`.
    pub from: Option<String>,
    /// Inclusive, `YYYY-MM-DD`.
    pub to: Option<String>,
    /// Inclusive, signed cents.
    pub min_cents: Option<i64>,
    /// Inclusive, signed cents.
    pub max_cents: Option<i64>,
    /// Words that must all appear in the description (as words, case-insensitive). Data,
    /// never query syntax.
    pub text: Option<String>,
    /// Only transactions after this position (from the previous page's cursor).
    pub after: Option<Position>,
    pub limit: usize,
}

/// A place in the date-then-movement order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub date: String,
    pub movement_id: String,
}

impl Position {
    /// The opaque cursor a client sends back for the next page.
    pub fn cursor(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}|{}", self.date, self.movement_id))
    }

    /// A cursor made by [`Position::cursor`]; `None` for anything else.
    pub fn from_cursor(cursor: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (date, movement_id) = raw.split_once('|')?;
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        Some(Position {
            date: date.into(),
            movement_id: movement_id.into(),
        })
    }
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub transactions: Vec<StoredTransaction>,
    /// Where the next page starts, when there may be one.
    pub next: Option<Position>,
}

/// The words of a text, as both stores compare them: lower case, split at anything that is
/// not a letter or digit (as Elasticsearch's standard analyser does for these texts).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("transaction store: {0}")]
    Backend(String),
    /// Some rows of a write were refused for good (not retriable); the others were written.
    #[error("transaction store refused {refused} of {total} rows (first: {first})")]
    Refused {
        refused: usize,
        total: usize,
        first: String,
    },
}

/// Storage of classified transactions.
pub trait TransactionStore: Send + Sync + 'static {
    /// Writes a batch; rows already there (same analysis and movement) are replaced. Ok only
    /// when every row was written.
    fn put(
        &self,
        rows: Vec<StoredTransaction>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Makes everything written for the analysis visible to queries (a no-op where writes are
    /// visible at once).
    fn searchable(&self, analysis_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Transactions stored for an analysis (as far as queries see them).
    fn count(&self, analysis_id: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Count and total per label of an analysis, by label.
    fn totals(
        &self,
        analysis_id: &str,
    ) -> impl Future<Output = Result<Vec<LabelTotal>, StoreError>> + Send;
    /// One page of an analysis's transactions.
    fn query(&self, q: TransactionQuery) -> impl Future<Output = Result<Page, StoreError>> + Send;
    /// Whether the store answers.
    fn ready(&self) -> impl Future<Output = bool> + Send;
    /// Removes every transaction of the analysis, visibly to queries once it returns; how
    /// many there were (as far as the store can tell).
    fn erase(&self, analysis_id: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Up to `limit` analyses with transactions stored before `before_ms` (milliseconds since
    /// the epoch), what the retention erases, in a stable order from `after` (the previous
    /// page's opaque position); with the position of the next page, if there may be one.
    fn expired(
        &self,
        before_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<super::audit::Expired>, Option<String>), StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_comes_back_as_its_position_and_anything_else_is_refused() {
        let p = Position {
            date: "2026-10-01".into(),
            movement_id: "m|7".into(),
        };
        assert_eq!(Position::from_cursor(&p.cursor()), Some(p));
        assert_eq!(Position::from_cursor("not a cursor"), None);
        assert_eq!(
            Position::from_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x|y")),
            None
        );
    }

    #[test]
    fn words_are_lower_case_letters_and_digits() {
        assert_eq!(
            words("PIX*IFOOD Pedido-123 \"OR\""),
            ["pix", "ifood", "pedido", "123", "or"]
        );
        assert!(words("*** ").is_empty());
    }
}
