//! Where classified transactions are kept.
//!
//! [`TransactionStore`] is the seam; [`SqliteStore`] is the embedded implementation (SQLite
//! through rusqlite's bundled build, so nothing needs installing). Each row carries the
//! analysis, the tenant, a keyed hash of the CPF (never the CPF), the date, description, amount
//! in cents, label, probability and confidence. Writes are idempotent: the same analysis and
//! movement make the same row.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};
use serde::Serialize;

/// One classified movement, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelTotal {
    pub label: String,
    pub count: u64,
    pub total_cents: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("transaction store: {0}")]
    Backend(String),
}

/// Storage of classified transactions.
pub trait TransactionStore: Send + Sync + 'static {
    /// Writes a batch; rows already there (same analysis and movement) are replaced.
    fn put(
        &self,
        rows: Vec<StoredTransaction>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Transactions stored for an analysis.
    fn count(&self, analysis_id: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Count and total per label of an analysis.
    fn totals(
        &self,
        analysis_id: &str,
    ) -> impl Future<Output = Result<Vec<LabelTotal>, StoreError>> + Send;
    /// Whether the store answers.
    fn ready(&self) -> impl Future<Output = bool> + Send;
}

/// The embedded store: one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/transactions.sqlite`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| backend(format!("{}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join("transactions.sqlite")).map_err(backend)?;
        // WAL: readers do not wait for the writer; NORMAL sync is durable across crashes of
        // the process, which is what an embedded single-machine store needs.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS transactions (
                analysis_id TEXT NOT NULL,
                movement_id TEXT NOT NULL,
                tenant TEXT NOT NULL,
                cpf_hash TEXT NOT NULL,
                date TEXT NOT NULL,
                description TEXT NOT NULL,
                amount_cents INTEGER NOT NULL,
                label TEXT NOT NULL,
                probability REAL NOT NULL,
                confidence TEXT NOT NULL,
                PRIMARY KEY (analysis_id, movement_id)
             ) WITHOUT ROWID;",
        )
        .map_err(backend)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().map_err(|_| backend("connection poisoned"))?;
            f(&mut c).map_err(backend)
        })
        .await
        .map_err(backend)?
    }
}

impl TransactionStore for SqliteStore {
    async fn put(&self, rows: Vec<StoredTransaction>) -> Result<(), StoreError> {
        self.blocking(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO transactions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for r in &rows {
                    stmt.execute(params![
                        r.analysis_id,
                        r.movement_id,
                        r.tenant,
                        r.cpf_hash,
                        r.date,
                        r.description,
                        r.amount_cents,
                        r.label,
                        r.probability as f64,
                        r.confidence
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn count(&self, analysis_id: &str) -> Result<u64, StoreError> {
        let id = analysis_id.to_string();
        self.blocking(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM transactions WHERE analysis_id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
        .await
    }

    async fn totals(&self, analysis_id: &str) -> Result<Vec<LabelTotal>, StoreError> {
        let id = analysis_id.to_string();
        self.blocking(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT label, COUNT(*), SUM(amount_cents) FROM transactions
                 WHERE analysis_id = ?1 GROUP BY label ORDER BY label",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(LabelTotal {
                    label: r.get(0)?,
                    count: r.get::<_, i64>(1)? as u64,
                    total_cents: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn ready(&self) -> bool {
        self.blocking(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(movement: &str, label: &str, cents: i64) -> StoredTransaction {
        StoredTransaction {
            analysis_id: "an_1".into(),
            movement_id: movement.into(),
            tenant: "acme".into(),
            cpf_hash: "h".into(),
            date: "2026-10-01".into(),
            description: "X".into(),
            amount_cents: cents,
            label: label.into(),
            probability: 0.9,
            confidence: "HIGH".into(),
        }
    }

    #[tokio::test]
    async fn writes_are_idempotent_and_totals_group_by_label() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .put(vec![
                row("m1", "INCOME", 10_000),
                row("m2", "BANK_FEES", -500),
            ])
            .await
            .unwrap();
        store
            .put(vec![
                row("m1", "INCOME", 10_000),
                row("m3", "BANK_FEES", -700),
            ])
            .await
            .unwrap();
        assert_eq!(store.count("an_1").await.unwrap(), 3);
        let totals = store.totals("an_1").await.unwrap();
        assert_eq!(
            totals[0],
            LabelTotal {
                label: "BANK_FEES".into(),
                count: 2,
                total_cents: -1_200
            }
        );
        assert_eq!(totals[1].total_cents, 10_000);
        assert!(store.ready().await);
    }
}
