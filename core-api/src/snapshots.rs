//! The analyses' snapshots, what `GET /v1/analyses/{id}` answers: kept in memory by the
//! instance running each analysis and, when Redis is configured, written through to it so any
//! instance can answer for any analysis.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::domain::Snapshot;

/// The analyses' snapshots: in memory, and written through to Redis (`{prefix}:an:{id}`)
/// when it is configured, so any instance can answer for any analysis. Only the instance
/// running an analysis writes its snapshot.
#[derive(Clone, Default)]
pub struct Analyses {
    local: Arc<Mutex<HashMap<String, Snapshot>>>,
    /// For a durable run's snapshot in `local`: the lease token of the run that keeps it, so
    /// a run of an earlier lease on this instance cannot drop its successor's copy.
    holders: Arc<Mutex<HashMap<String, String>>>,
    /// The analyses that ended on this instance, oldest first, with when: their snapshots
    /// leave this instance's memory after the retention ([`Analyses::expire`]).
    ended: Arc<Mutex<VecDeque<(Instant, String)>>>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

/// How a snapshot is kept in Redis: with its tenant, which the API never shows.
#[derive(Serialize, Deserialize)]
struct Stored {
    tenant: String,
    #[serde(default)]
    cpf_hash: String,
    snapshot: Snapshot,
}

/// Snapshots stay in Redis this long.
const SNAPSHOT_TTL_SECS: u64 = 24 * 3600;

/// KEYS snapshot, event-log meta; ARGV json, ttl_s, owner ('' for none). Writes unless an
/// owner is given and the log names another (the run was taken over): 1 written, 0 not.
const WRITE: &str = r"
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], 'owner') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
";

impl Analyses {
    pub fn with_redis(conn: redis::aio::ConnectionManager, prefix: &str) -> Self {
        Analyses {
            local: Arc::default(),
            holders: Arc::default(),
            ended: Arc::default(),
            redis: Some((conn, prefix.to_string())),
        }
    }

    async fn write_through(&self, s: &Snapshot, owner: Option<&str>) {
        if let Err(e) = self.try_write_through(s, owner).await {
            tracing::warn!(analysis = %s.id, error = %e, "Snapshot not written to Redis.");
        }
    }

    /// Writes the snapshot to Redis; with `owner` (a durable run's lease token) only while
    /// that run still owns the analysis: `Ok(false)` when another instance took it over, so
    /// a run that lost its lease never overwrites its successor's snapshot.
    async fn try_write_through(
        &self,
        s: &Snapshot,
        owner: Option<&str>,
    ) -> Result<bool, redis::RedisError> {
        let Some((conn, prefix)) = &self.redis else {
            return Ok(true);
        };
        let stored = Stored {
            tenant: s.tenant.clone(),
            cpf_hash: s.cpf_hash.clone(),
            snapshot: s.clone(),
        };
        let json = serde_json::to_string(&stored).expect("snapshots serialise");
        let mut conn = conn.clone();
        let written: i64 = redis::Script::new(WRITE)
            .key(format!("{prefix}:an:{}", s.id))
            .key(format!("{prefix}:ev:{}:meta", s.id))
            .arg(json)
            .arg(SNAPSHOT_TTL_SECS)
            .arg(owner.unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        Ok(written == 1)
    }

    pub async fn insert(&self, s: Snapshot) {
        self.local
            .lock()
            .expect("analyses lock")
            .insert(s.id.clone(), s.clone());
        self.write_through(&s, None).await;
    }

    /// An analysis, from this instance or (when configured) Redis, whoever owns it.
    async fn find(&self, id: &str) -> Option<Snapshot> {
        let local = self.local.lock().expect("analyses lock").get(id).cloned();
        match (local, &self.redis) {
            // An ended analysis may have been erased through another instance: Redis says
            // (when it can; else this instance's copy answers).
            // (A Redis copy still `running` wins too: another instance may have taken the run
            // over; if it is only an end Redis missed, the analysis looks running, and cannot
            // be erased, until that copy expires: the safer of the two mistakes.)
            (Some(s), Some(_)) if s.status != crate::domain::Status::Running => {
                self.read_redis(id).await.unwrap_or(Some(s))
            }
            (Some(s), _) => Some(s),
            (None, Some(_)) => self.read_redis(id).await.ok().flatten(),
            (None, None) => None,
        }
    }

    /// The snapshot Redis keeps of `id`.
    async fn read_redis(&self, id: &str) -> Result<Option<Snapshot>, redis::RedisError> {
        let Some((conn, prefix)) = &self.redis else {
            return Ok(None);
        };
        let mut conn = conn.clone();
        let raw: Option<String> =
            redis::AsyncCommands::get(&mut conn, format!("{prefix}:an:{id}")).await?;
        Ok(raw
            .and_then(|r| serde_json::from_str::<Stored>(&r).ok())
            .map(|st| Snapshot {
                tenant: st.tenant,
                cpf_hash: st.cpf_hash,
                ..st.snapshot
            }))
    }

    /// Takes on an analysis another run was keeping, for the run holding `owner` (from Redis
    /// into this instance's memory, where that run changes it from now on): its snapshot;
    /// `Ok(None)` when Redis has none, an error when Redis could not say (the caller tries
    /// again later rather than taking the snapshot for gone).
    pub async fn adopt(&self, id: &str, owner: &str) -> Result<Option<Snapshot>, String> {
        let Some((conn, prefix)) = &self.redis else {
            return Ok(None);
        };
        let mut conn = conn.clone();
        let raw: Option<String> = redis::AsyncCommands::get(&mut conn, format!("{prefix}:an:{id}"))
            .await
            .map_err(|e| e.to_string())?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_str(&raw).map_err(|e| e.to_string())?;
        let s = Snapshot {
            tenant: stored.tenant,
            cpf_hash: stored.cpf_hash,
            ..stored.snapshot
        };
        self.local
            .lock()
            .expect("analyses lock")
            .insert(id.to_string(), s.clone());
        self.hold(id, owner);
        Ok(Some(s))
    }

    /// Marks this instance's copy of `id` as kept by the run holding `owner`.
    pub fn hold(&self, id: &str, owner: &str) {
        self.holders
            .lock()
            .expect("analyses lock")
            .insert(id.to_string(), owner.to_string());
    }

    /// The analysis, whoever owns it (for the service's own work, never a client's read).
    pub async fn get_any(&self, id: &str) -> Option<Snapshot> {
        self.find(id).await
    }

    /// The analysis if `tenant` owns it: another tenant's analysis does not exist for them.
    pub async fn get(&self, id: &str, tenant: &str) -> Option<Snapshot> {
        self.find(id).await.filter(|s| s.tenant == tenant)
    }

    /// The last change of an analysis's snapshot: as [`Analyses::update`], but the write to
    /// Redis is retried for up to `within`, since other instances' followers of the analysis
    /// learn from it that the analysis ended. `false` when `owner` no longer owns the run
    /// (nothing was written, and this instance's copy is dropped).
    pub async fn finish(
        &self,
        id: &str,
        owner: Option<&str>,
        within: Duration,
        f: impl FnOnce(&mut Snapshot),
    ) -> bool {
        let Some(s) = self.change(id, f) else {
            return true;
        };
        self.ended
            .lock()
            .expect("analyses lock")
            .push_back((Instant::now(), id.to_string()));
        let deadline = tokio::time::Instant::now() + within;
        let written = crate::retry::until(
            "writing the last snapshot",
            deadline,
            |_| true,
            || self.try_write_through(&s, owner),
        )
        .await;
        match written {
            Ok(true) => true,
            Ok(false) => {
                if let Some(owner) = owner {
                    self.forget_local(id, owner);
                }
                false
            }
            Err(e) => {
                tracing::error!(analysis = %s.id, error = %e, "Last snapshot not written to Redis.");
                true
            }
        }
    }

    /// Drops this instance's copy of a snapshot the run holding `owner` no longer writes (it
    /// was handed on or taken over): reads then go to Redis, where the analysis's owner keeps
    /// it. A copy a later run (of another lease) keeps on this instance stays.
    pub fn forget_local(&self, id: &str, owner: &str) {
        if self.redis.is_none() {
            return;
        }
        // Locks in the order `expire` takes them: local, then holders.
        let mut local = self.local.lock().expect("analyses lock");
        let mut holders = self.holders.lock().expect("analyses lock");
        if holders.get(id).is_some_and(|h| h == owner) {
            holders.remove(id);
            local.remove(id);
        }
    }

    /// Changes this instance's snapshot of `id`; the changed snapshot, if there is one.
    fn change(&self, id: &str, f: impl FnOnce(&mut Snapshot)) -> Option<Snapshot> {
        let mut local = self.local.lock().expect("analyses lock");
        local.get_mut(id).map(|s| {
            f(s);
            s.clone()
        })
    }

    /// Drops from this instance's memory the snapshots of analyses that ended longer than
    /// `retention` ago (with Redis, the copy there stays until its own expiry); returns how
    /// many. Without this, memory would grow with every analysis ever run.
    pub fn expire(&self, retention: Duration) -> usize {
        let mut ended = self.ended.lock().expect("analyses lock");
        let mut local = self.local.lock().expect("analyses lock");
        let mut holders = self.holders.lock().expect("analyses lock");
        let mut dropped = 0;
        while ended
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= retention)
        {
            let (_, id) = ended.pop_front().expect("a front entry");
            holders.remove(&id);
            dropped += usize::from(local.remove(&id).is_some());
        }
        dropped
    }

    /// Removes an analysis's snapshot, here and on Redis (an erasure).
    pub async fn erase(&self, id: &str) -> Result<(), String> {
        {
            let mut local = self.local.lock().expect("analyses lock");
            let mut holders = self.holders.lock().expect("analyses lock");
            local.remove(id);
            holders.remove(id);
        }
        if let Some((conn, prefix)) = &self.redis {
            let mut conn = conn.clone();
            redis::AsyncCommands::del::<_, ()>(&mut conn, format!("{prefix}:an:{id}"))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Changes this instance's snapshot of `id` and writes it through; with `owner` (a
    /// durable run's lease token) only while that run owns the analysis.
    pub async fn update(&self, id: &str, owner: Option<&str>, f: impl FnOnce(&mut Snapshot)) {
        if let Some(s) = self.change(id, f) {
            self.write_through(&s, owner).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;

    fn snapshot(id: &str) -> Snapshot {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "id": id, "status": "running", "cpf": "***.***.***-25",
            "from": "2026-08-01", "to": "2026-10-31", "created_at": "2026-11-21T00:00:00Z",
            "partners": {}, "classified": 0, "stored": 0,
        }))
        .expect("a snapshot");
        // Not part of the snapshot's JSON: the API never shows it.
        s.tenant = "acme".into();
        s
    }

    #[tokio::test]
    async fn snapshots_of_ended_analyses_leave_memory_after_the_retention() {
        let analyses = Analyses::default();
        analyses.insert(snapshot("done")).await;
        analyses.insert(snapshot("running")).await;
        analyses
            .finish("done", None, Duration::from_secs(1), |s| {
                s.status = Status::Completed
            })
            .await;
        assert_eq!(analyses.expire(Duration::from_secs(3600)), 0);
        assert!(analyses.get("done", "acme").await.is_some());
        assert_eq!(analyses.expire(Duration::ZERO), 1);
        assert!(analyses.get("done", "acme").await.is_none());
        assert!(analyses.get("running", "acme").await.is_some());
    }
}
