//! Where webhook endpoints and deliveries are kept: a SQLite file of its own in the data folder
//! (the embedded shape), or Redis (with `REDIS_URL`, shared by every instance, so any
//! instance's worker delivers what any other queued).
//!
//! On Redis: `{prefix}:wh:ep:{tenant}` (hash id → endpoint, its secret sealed with
//! `QUEUE_KEY`), `{prefix}:wh:d:{id}` (a delivery), `{prefix}:wh:due` (pending deliveries by
//! their next attempt), `{prefix}:wh:an:{analysis}` (an analysis's deliveries). Deliveries and
//! their per-analysis sets expire after [`DELIVERY_TTL`].

use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use integrations::queue::JobSeal;
use redis::aio::ConnectionManager;
use redis::Script;
use rusqlite::{params, Connection, OptionalExtension};

use super::{Delivery, Endpoint};

/// How long a delivery (and its log entry) is kept.
pub const DELIVERY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
#[error("webhook store: {0}")]
pub struct WebhookStoreError(pub String);

fn backend(e: impl std::fmt::Display) -> WebhookStoreError {
    WebhookStoreError(e.to_string())
}

/// The store the settings chose.
#[derive(Clone)]
pub enum WebhookStore {
    Sqlite(Arc<Mutex<Connection>>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
        seal: Arc<JobSeal>,
    },
}

/// KEYS due; ARGV now, lease ms, max. Takes up to `max` due deliveries, pushing their next
/// attempt a lease ahead so no other worker takes them meanwhile.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
end
return ids
",
    )
});

/// KEYS delivery, analysis's set, due; ARGV json, ttl s, id, next ms. Adds a delivery unless
/// one with its id is there (a run ended twice, by a successor): 1 added, 0 not.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) then return 0 end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[3])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2]))
return 1
",
    )
});

/// KEYS delivery, due; ARGV json, pending ('1' or '0'), next ms, id. Changes a delivery that
/// is still there (not erased, not expired), keeping its expiry: 1 changed, 0 gone.
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return 1
",
    )
});

impl WebhookStore {
    /// Opens (creating if needed) `dir/webhooks.sqlite`.
    pub fn sqlite(dir: &Path) -> Result<Self, WebhookStoreError> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let path = dir.join("webhooks.sqlite");
        let conn = Connection::open(&path).map_err(backend)?;
        // It holds the endpoints' signing secrets: the service's user only.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(backend)?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS endpoints (
                id TEXT PRIMARY KEY, tenant TEXT NOT NULL, json TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS endpoints_by_tenant ON endpoints (tenant);
             CREATE TABLE IF NOT EXISTS deliveries (
                id TEXT PRIMARY KEY, analysis_id TEXT NOT NULL, pending INTEGER NOT NULL,
                next_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, json TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (pending, next_ms);
             CREATE INDEX IF NOT EXISTS deliveries_by_analysis ON deliveries (analysis_id);",
        )
        .map_err(backend)?;
        Ok(WebhookStore::Sqlite(Arc::new(Mutex::new(conn))))
    }

    pub fn redis(conn: ConnectionManager, prefix: &str, seal: JobSeal) -> Self {
        WebhookStore::Redis {
            conn,
            prefix: prefix.to_string(),
            seal: Arc::new(seal),
        }
    }

    async fn sql<R: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, WebhookStoreError> {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().map_err(|_| backend("connection poisoned"))?;
            f(&mut c).map_err(backend)
        })
        .await
        .map_err(backend)?
    }

    pub async fn add_endpoint(&self, e: &Endpoint) -> Result<(), WebhookStoreError> {
        let json = serde_json::to_string(e).expect("endpoints serialise");
        match self {
            WebhookStore::Sqlite(c) => {
                let (id, tenant) = (e.id.clone(), e.tenant.clone());
                Self::sql(c, move |c| {
                    c.execute(
                        "INSERT INTO endpoints VALUES (?1, ?2, ?3)",
                        params![id, tenant, json],
                    )
                    .map(|_| ())
                })
                .await
            }
            WebhookStore::Redis { conn, prefix, seal } => {
                let mut conn = conn.clone();
                redis::AsyncCommands::hset::<_, _, _, ()>(
                    &mut conn,
                    format!("{prefix}:wh:ep:{}", e.tenant),
                    &e.id,
                    seal.seal(&e.id, &json),
                )
                .await
                .map_err(backend)
            }
        }
    }

    /// The tenant's endpoints, oldest first.
    pub async fn endpoints(&self, tenant: &str) -> Result<Vec<Endpoint>, WebhookStoreError> {
        let mut out: Vec<Endpoint> = match self {
            WebhookStore::Sqlite(c) => {
                let tenant = tenant.to_string();
                let rows = Self::sql(c, move |c| {
                    let mut stmt =
                        c.prepare_cached("SELECT json FROM endpoints WHERE tenant = ?1")?;
                    let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
                    rows.collect::<Result<Vec<_>, _>>()
                })
                .await?;
                rows.iter()
                    .map(|j| serde_json::from_str(j).map_err(backend))
                    .collect::<Result<_, _>>()?
            }
            WebhookStore::Redis { conn, prefix, seal } => {
                let mut conn = conn.clone();
                let all: Vec<(String, String)> =
                    redis::AsyncCommands::hgetall(&mut conn, format!("{prefix}:wh:ep:{tenant}"))
                        .await
                        .map_err(backend)?;
                // An endpoint that does not open (another QUEUE_KEY) is an error, never
                // taken for a deleted one: its deliveries wait instead of failing.
                all.iter()
                    .map(|(id, sealed)| {
                        seal.open(id, sealed)
                            .and_then(|j| serde_json::from_str(&j).ok())
                            .ok_or_else(|| backend("an endpoint does not open with QUEUE_KEY"))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// Removes one of the tenant's endpoints; whether there was one.
    pub async fn delete_endpoint(&self, tenant: &str, id: &str) -> Result<bool, WebhookStoreError> {
        match self {
            WebhookStore::Sqlite(c) => {
                let (tenant, id) = (tenant.to_string(), id.to_string());
                Self::sql(c, move |c| {
                    c.execute(
                        "DELETE FROM endpoints WHERE tenant = ?1 AND id = ?2",
                        params![tenant, id],
                    )
                    .map(|n| n > 0)
                })
                .await
            }
            WebhookStore::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let n: u64 =
                    redis::AsyncCommands::hdel(&mut conn, format!("{prefix}:wh:ep:{tenant}"), id)
                        .await
                        .map_err(backend)?;
                Ok(n > 0)
            }
        }
    }

    /// Adds a new delivery unless one with its id is there (the same analysis's end told
    /// twice); whether it was added.
    pub async fn insert(&self, d: &Delivery) -> Result<bool, WebhookStoreError> {
        let json = serde_json::to_string(d).expect("deliveries serialise");
        match self {
            WebhookStore::Sqlite(c) => {
                let (id, analysis, next, created) =
                    (d.id.clone(), d.analysis_id.clone(), d.next_ms, d.created_ms);
                Self::sql(c, move |c| {
                    c.execute(
                        "INSERT OR IGNORE INTO deliveries VALUES (?1, ?2, 1, ?3, ?4, ?5)",
                        params![id, analysis, next, created, json],
                    )
                    .map(|n| n > 0)
                })
                .await
            }
            WebhookStore::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let added: i64 = INSERT
                    .key(format!("{prefix}:wh:d:{}", d.id))
                    .key(format!("{prefix}:wh:an:{}", d.analysis_id))
                    .key(format!("{prefix}:wh:due"))
                    .arg(json)
                    .arg(DELIVERY_TTL.as_secs())
                    .arg(&d.id)
                    .arg(d.next_ms)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(backend)?;
                Ok(added == 1)
            }
        }
    }

    /// Stores how a delivery is now (attempted, resent), if it is still there: an erasure (or
    /// the expiry) in the meantime wins. Whether it was.
    pub async fn update(&self, d: &Delivery) -> Result<bool, WebhookStoreError> {
        let json = serde_json::to_string(d).expect("deliveries serialise");
        let pending = d.status == super::DeliveryStatus::Pending;
        match self {
            WebhookStore::Sqlite(c) => {
                let (id, next) = (d.id.clone(), d.next_ms);
                Self::sql(c, move |c| {
                    c.execute(
                        "UPDATE deliveries SET pending = ?2, next_ms = ?3, json = ?4 WHERE id = ?1",
                        params![id, pending, next, json],
                    )
                    .map(|n| n > 0)
                })
                .await
            }
            WebhookStore::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let changed: i64 = UPDATE
                    .key(format!("{prefix}:wh:d:{}", d.id))
                    .key(format!("{prefix}:wh:due"))
                    .arg(json)
                    .arg(if pending { "1" } else { "0" })
                    .arg(d.next_ms)
                    .arg(&d.id)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(backend)?;
                Ok(changed == 1)
            }
        }
    }

    /// Up to `max` pending deliveries due by `now_ms`, each held for `lease` (its next attempt
    /// pushed that far) so no other worker takes it meanwhile.
    pub async fn claim(
        &self,
        now_ms: i64,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, WebhookStoreError> {
        let lease_ms = lease.as_millis() as i64;
        match self {
            WebhookStore::Sqlite(c) => {
                let rows = Self::sql(c, move |c| {
                    let mut stmt = c.prepare_cached(
                        "UPDATE deliveries SET next_ms = ?1 + ?2 WHERE id IN (
                            SELECT id FROM deliveries WHERE pending = 1 AND next_ms <= ?1
                            ORDER BY next_ms LIMIT ?3
                         ) RETURNING json",
                    )?;
                    let rows = stmt.query_map(params![now_ms, lease_ms, max as i64], |r| {
                        r.get::<_, String>(0)
                    })?;
                    rows.collect::<Result<Vec<_>, _>>()
                })
                .await?;
                Ok(rows
                    .iter()
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect())
            }
            WebhookStore::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let ids: Vec<String> = CLAIM
                    .key(format!("{prefix}:wh:due"))
                    .arg(now_ms)
                    .arg(lease_ms)
                    .arg(max)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(backend)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let raw: Option<String> =
                        redis::AsyncCommands::get(&mut conn, format!("{prefix}:wh:d:{id}"))
                            .await
                            .map_err(backend)?;
                    match raw.and_then(|j| serde_json::from_str(&j).ok()) {
                        Some(d) => out.push(d),
                        // Expired or erased: nothing to deliver any more.
                        None => {
                            let _: Result<(), _> = redis::AsyncCommands::zrem(
                                &mut conn,
                                format!("{prefix}:wh:due"),
                                &id,
                            )
                            .await;
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// An analysis's deliveries, oldest first.
    pub async fn deliveries(&self, analysis_id: &str) -> Result<Vec<Delivery>, WebhookStoreError> {
        let mut out: Vec<Delivery> = match self {
            WebhookStore::Sqlite(c) => {
                let id = analysis_id.to_string();
                let rows = Self::sql(c, move |c| {
                    let mut stmt =
                        c.prepare_cached("SELECT json FROM deliveries WHERE analysis_id = ?1")?;
                    let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
                    rows.collect::<Result<Vec<_>, _>>()
                })
                .await?;
                rows.iter()
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect()
            }
            WebhookStore::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let ids: Vec<String> = redis::AsyncCommands::smembers(
                    &mut conn,
                    format!("{prefix}:wh:an:{analysis_id}"),
                )
                .await
                .map_err(backend)?;
                let mut out = Vec::new();
                for id in ids {
                    let raw: Option<String> =
                        redis::AsyncCommands::get(&mut conn, format!("{prefix}:wh:d:{id}"))
                            .await
                            .map_err(backend)?;
                    if let Some(d) = raw.and_then(|j| serde_json::from_str(&j).ok()) {
                        out.push(d);
                    }
                }
                out
            }
        };
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// One delivery.
    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>, WebhookStoreError> {
        let raw = match self {
            WebhookStore::Sqlite(c) => {
                let id = id.to_string();
                Self::sql(c, move |c| {
                    c.query_row("SELECT json FROM deliveries WHERE id = ?1", [id], |r| {
                        r.get::<_, String>(0)
                    })
                    .optional()
                })
                .await?
            }
            WebhookStore::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                redis::AsyncCommands::get(&mut conn, format!("{prefix}:wh:d:{id}"))
                    .await
                    .map_err(backend)?
            }
        };
        Ok(raw.and_then(|j: String| serde_json::from_str(&j).ok()))
    }

    /// Removes an analysis's deliveries (an erasure).
    pub async fn erase_analysis(&self, analysis_id: &str) -> Result<(), WebhookStoreError> {
        match self {
            WebhookStore::Sqlite(c) => {
                let id = analysis_id.to_string();
                Self::sql(c, move |c| {
                    c.execute("DELETE FROM deliveries WHERE analysis_id = ?1", [id])
                        .map(|_| ())
                })
                .await
            }
            WebhookStore::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let set = format!("{prefix}:wh:an:{analysis_id}");
                let ids: Vec<String> = redis::AsyncCommands::smembers(&mut conn, &set)
                    .await
                    .map_err(backend)?;
                let mut pipe = redis::pipe();
                pipe.atomic();
                for id in &ids {
                    pipe.del(format!("{prefix}:wh:d:{id}"))
                        .ignore()
                        .zrem(format!("{prefix}:wh:due"), id)
                        .ignore();
                }
                pipe.del(&set).ignore();
                pipe.query_async::<()>(&mut conn).await.map_err(backend)
            }
        }
    }

    /// Removes deliveries created before `before_ms` (Redis expires its own).
    pub async fn expire(&self, before_ms: i64) -> Result<(), WebhookStoreError> {
        match self {
            WebhookStore::Sqlite(c) => {
                Self::sql(c, move |c| {
                    c.execute("DELETE FROM deliveries WHERE created_ms < ?1", [before_ms])
                        .map(|_| ())
                })
                .await
            }
            WebhookStore::Redis { .. } => Ok(()),
        }
    }
}
