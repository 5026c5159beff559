//! The embedded store: one SQLite file, through rusqlite's bundled build.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};

use super::audit::{AccessRecord, AuditPage, AuditQuery, AuditTrail, Expired};
use super::model::{
    words, LabelTotal, Page, Position, StoreError, StoredTransaction, TransactionQuery,
    TransactionStore,
};

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
                stored_at INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (analysis_id, movement_id)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS audit (
                id TEXT PRIMARY KEY,
                at_ms INTEGER NOT NULL,
                tenant TEXT NOT NULL,
                key_id TEXT NOT NULL,
                action TEXT NOT NULL,
                analysis_id TEXT,
                cpf_hash TEXT,
                client TEXT
             );
             CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, at_ms, id);
             CREATE INDEX IF NOT EXISTS audit_by_person ON audit (cpf_hash, at_ms, id);",
        )
        .map_err(backend)?;
        // A file from before retention has no `stored_at`: its rows count from now.
        let has_stored_at = conn
            .prepare("SELECT stored_at FROM transactions LIMIT 0")
            .is_ok();
        if !has_stored_at {
            let now = chrono::Utc::now().timestamp_millis();
            conn.execute_batch(&format!(
                "ALTER TABLE transactions ADD COLUMN stored_at INTEGER NOT NULL DEFAULT {now}"
            ))
            .map_err(backend)?;
        }
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS transactions_by_age ON transactions (stored_at, analysis_id);",
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
                    "INSERT OR REPLACE INTO transactions (analysis_id, movement_id, tenant, \
                     cpf_hash, date, description, amount_cents, label, probability, confidence, \
                     stored_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                let now = chrono::Utc::now().timestamp_millis();
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
                        r.confidence,
                        now
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

    async fn searchable(&self, _analysis_id: &str) -> Result<(), StoreError> {
        Ok(()) // a committed transaction is visible at once
    }

    async fn query(&self, q: TransactionQuery) -> Result<Page, StoreError> {
        self.blocking(move |c| {
            // The filters SQL can use an index for; the words of the text are matched here,
            // as words (see `words`), the same way Elasticsearch's match query does.
            let mut sql = String::from(
                "SELECT analysis_id, movement_id, tenant, cpf_hash, date, description,
                        amount_cents, label, probability, confidence
                 FROM transactions WHERE analysis_id = ?1",
            );
            let mut args: Vec<rusqlite::types::Value> = vec![q.analysis_id.clone().into()];
            let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
                args.push(v);
                sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
            };
            if let Some(l) = &q.label {
                arg(&mut sql, " AND label = ?", l.clone().into());
            }
            if let Some(d) = &q.from {
                arg(&mut sql, " AND date >= ?", d.clone().into());
            }
            if let Some(d) = &q.to {
                arg(&mut sql, " AND date <= ?", d.clone().into());
            }
            if let Some(v) = q.min_cents {
                arg(&mut sql, " AND amount_cents >= ?", v.into());
            }
            if let Some(v) = q.max_cents {
                arg(&mut sql, " AND amount_cents <= ?", v.into());
            }
            if let Some(p) = &q.after {
                arg(&mut sql, " AND (date > ?", p.date.clone().into());
                arg(&mut sql, " OR (date = ?", p.date.clone().into());
                arg(
                    &mut sql,
                    " AND movement_id > ?))",
                    p.movement_id.clone().into(),
                );
            }
            sql.push_str(" ORDER BY date, movement_id");
            let wanted = q.text.as_deref().map(words).unwrap_or_default();
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut out = Vec::with_capacity(q.limit.min(1024));
            let mut more = false;
            while let Some(r) = rows.next()? {
                let description: String = r.get(5)?;
                if !wanted.is_empty() {
                    let have = words(&description);
                    if !wanted.iter().all(|w| have.contains(w)) {
                        continue;
                    }
                }
                if out.len() == q.limit {
                    more = true;
                    break;
                }
                out.push(StoredTransaction {
                    analysis_id: r.get(0)?,
                    movement_id: r.get(1)?,
                    tenant: r.get(2)?,
                    cpf_hash: r.get(3)?,
                    date: r.get(4)?,
                    description,
                    amount_cents: r.get(6)?,
                    label: r.get(7)?,
                    probability: r.get::<_, f64>(8)? as f32,
                    confidence: r.get(9)?,
                });
            }
            let next = out.last().filter(|_| more).map(|last| Position {
                date: last.date.clone(),
                movement_id: last.movement_id.clone(),
            });
            Ok(Page {
                transactions: out,
                next,
            })
        })
        .await
    }

    async fn ready(&self) -> bool {
        self.blocking(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .await
            .is_ok()
    }

    async fn erase(&self, analysis_id: &str) -> Result<u64, StoreError> {
        let id = analysis_id.to_string();
        self.blocking(move |c| {
            c.execute("DELETE FROM transactions WHERE analysis_id = ?1", [id])
                .map(|n| n as u64)
        })
        .await
    }

    async fn expired(
        &self,
        before_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Expired>, Option<String>), StoreError> {
        self.blocking(move |c| {
            // The `stored_at` index finds the old rows without reading the rest.
            let mut stmt = c.prepare_cached(
                "SELECT analysis_id, MIN(tenant), MIN(cpf_hash) FROM transactions
                 WHERE stored_at < ?1 AND analysis_id > ?2
                 GROUP BY analysis_id ORDER BY analysis_id LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![before_ms, after.unwrap_or_default(), limit as i64],
                |r| {
                    Ok(Expired {
                        analysis_id: r.get(0)?,
                        tenant: r.get(1)?,
                        cpf_hash: r.get(2)?,
                    })
                },
            )?;
            let rows = rows.collect::<Result<Vec<_>, _>>()?;
            let next = (rows.len() == limit)
                .then(|| rows.last().map(|e| e.analysis_id.clone()))
                .flatten();
            Ok((rows, next))
        })
        .await
    }
}

impl AuditTrail for SqliteStore {
    async fn record(&self, r: AccessRecord) -> Result<(), StoreError> {
        self.blocking(move |c| {
            // A plain INSERT: a record is never replaced.
            c.prepare_cached("INSERT INTO audit VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
                .execute(params![
                    r.id,
                    r.at_ms,
                    r.tenant,
                    r.key_id,
                    r.action,
                    r.analysis_id,
                    r.cpf_hash,
                    r.client
                ])
                .map(|_| ())
        })
        .await
    }

    async fn audit(&self, q: AuditQuery) -> Result<AuditPage, StoreError> {
        self.blocking(move |c| {
            let mut sql = String::from(
                "SELECT id, at_ms, tenant, key_id, action, analysis_id, cpf_hash, client
                 FROM audit WHERE 1 = 1",
            );
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
                args.push(v);
                sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
            };
            if let Some(t) = &q.tenant {
                arg(&mut sql, " AND tenant = ?", t.clone().into());
            }
            if let Some(a) = &q.analysis_id {
                arg(&mut sql, " AND analysis_id = ?", a.clone().into());
            }
            if let Some(h) = &q.cpf_hash {
                arg(&mut sql, " AND cpf_hash = ?", h.clone().into());
            }
            if let Some(v) = q.from_ms {
                arg(&mut sql, " AND at_ms >= ?", v.into());
            }
            if let Some(v) = q.to_ms {
                arg(&mut sql, " AND at_ms < ?", v.into());
            }
            if let Some(p) = &q.before {
                arg(&mut sql, " AND (at_ms < ?", p.at_ms.into());
                arg(&mut sql, " OR (at_ms = ?", p.at_ms.into());
                arg(&mut sql, " AND id < ?))", p.id.clone().into());
            }
            arg(
                &mut sql,
                " ORDER BY at_ms DESC, id DESC LIMIT ?",
                (q.limit as i64 + 1).into(),
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                Ok(AccessRecord {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    tenant: r.get(2)?,
                    key_id: r.get(3)?,
                    action: r.get(4)?,
                    analysis_id: r.get(5)?,
                    cpf_hash: r.get(6)?,
                    client: r.get(7)?,
                })
            })?;
            let rows = rows.collect::<Result<Vec<_>, _>>()?;
            Ok(AuditPage::from_rows(rows, q.limit))
        })
        .await
    }

    async fn expire_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.blocking(move |c| {
            c.execute("DELETE FROM audit WHERE at_ms < ?1", [before_ms])
                .map(|n| n as u64)
        })
        .await
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
