//! Where classified transactions are kept, and how they are read back.
//!
//! [`TransactionStore`] is the seam, with two implementations: [`SqliteStore`], embedded
//! (SQLite through rusqlite's bundled build, so nothing needs installing), the default; and
//! [`ElasticStore`], Elasticsearch (or an OpenSearch-compatible server), chosen by
//! `ELASTICSEARCH_URL`. [`Store`] is whichever the settings chose. Each row carries the
//! analysis, the tenant, a keyed hash of the CPF (never the CPF), the date, description, amount
//! in cents, label, probability and confidence. Writes are idempotent: the same analysis and
//! movement make the same row. Both answer the same [`TransactionQuery`] the same way, which
//! `tests/store_contract.rs` checks against each of them.

mod audit;
mod elastic;
mod model;
mod sqlite;

pub use audit::{
    actions, AccessRecord, AuditPage, AuditPosition, AuditQuery, AuditTrail, Expired, SERVICE,
};
pub use elastic::{ElasticSettings, ElasticStore};
pub use model::{
    words, LabelTotal, Page, Position, StoreError, StoredTransaction, TransactionQuery,
    TransactionStore,
};
pub use sqlite::SqliteStore;

/// The store the settings chose.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Elastic(ElasticStore),
}

impl TransactionStore for Store {
    async fn put(&self, rows: Vec<StoredTransaction>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.put(rows).await,
            Store::Elastic(s) => s.put(rows).await,
        }
    }

    async fn searchable(&self, analysis_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.searchable(analysis_id).await,
            Store::Elastic(s) => s.searchable(analysis_id).await,
        }
    }

    async fn count(&self, analysis_id: &str) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.count(analysis_id).await,
            Store::Elastic(s) => s.count(analysis_id).await,
        }
    }

    async fn totals(&self, analysis_id: &str) -> Result<Vec<LabelTotal>, StoreError> {
        match self {
            Store::Sqlite(s) => s.totals(analysis_id).await,
            Store::Elastic(s) => s.totals(analysis_id).await,
        }
    }

    async fn query(&self, q: TransactionQuery) -> Result<Page, StoreError> {
        match self {
            Store::Sqlite(s) => s.query(q).await,
            Store::Elastic(s) => s.query(q).await,
        }
    }

    async fn ready(&self) -> bool {
        match self {
            Store::Sqlite(s) => s.ready().await,
            Store::Elastic(s) => s.ready().await,
        }
    }

    async fn erase(&self, analysis_id: &str) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.erase(analysis_id).await,
            Store::Elastic(s) => s.erase(analysis_id).await,
        }
    }

    async fn expired(
        &self,
        before_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Expired>, Option<String>), StoreError> {
        match self {
            Store::Sqlite(s) => s.expired(before_ms, after, limit).await,
            Store::Elastic(s) => s.expired(before_ms, after, limit).await,
        }
    }
}

impl AuditTrail for Store {
    async fn record(&self, r: AccessRecord) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.record(r).await,
            Store::Elastic(s) => s.record(r).await,
        }
    }

    async fn audit(&self, q: AuditQuery) -> Result<AuditPage, StoreError> {
        match self {
            Store::Sqlite(s) => s.audit(q).await,
            Store::Elastic(s) => s.audit(q).await,
        }
    }

    async fn expire_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.expire_audit(before_ms).await,
            Store::Elastic(s) => s.expire_audit(before_ms).await,
        }
    }
}
