//! Durable runs, in the Redis shape: an analysis is a unit of work with an owner and a lease,
//! so when the instance running it dies another instance takes it over and goes on from what
//! was recorded, instead of leaving it `running` for ever.
//!
//! Per analysis, Redis holds `{prefix}:run:{id}`: who and what the analysis is about (tenant,
//! CPF, window; sealed, since it holds the CPF) and its progress (the partner answers had, the
//! next movements cursor and the running tally of stored pages; sealed too, since it holds a
//! person's bureau record), expiring after a day whatever happens. `{prefix}:runs` orders the
//! running analyses by when their lease runs out, and the event log's meta hash names the
//! lease's holder (`owner`). The owner renews its lease every third of the lease time; every
//! instance looks for leases that ran out a few times a second and claims them one script at a
//! time, which makes it the owner: from then on the old owner's events and progress writes are
//! refused (the log's append script checks `owner`), so a run that was only slow, not dead,
//! stops instead of writing beside its successor. A clean shutdown hands its runs on at once
//! (their leases are marked run out) rather than failing them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use integrations::queue::JobSeal;
use integrations::Cpf;
use redis::aio::ConnectionManager;
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::run::{PartnerResult, Subject};
use crate::config::Secret;
use crate::domain::summary::Tally;
use crate::domain::Window;

/// A run's record lives at most this long, like the running event log it belongs to.
const RECORD_TTL_SECS: u64 = 24 * 3600;

/// Lua that sets `now` to the Redis server's time in milliseconds, so every instance agrees
/// on when a lease runs out whatever its own clock says.
const NOW_MS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS run, meta, runs; ARGV subject, token, lease_ms, ttl_s, id.
const REGISTER: &str = r"
redis.call('HSET', KEYS[1], 'subject', ARGV[1], 'gen', 0)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('HSET', KEYS[2], 'owner', ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[5])
return 1
";

/// KEYS meta, runs; ARGV token, lease_ms, id. 1 when renewed, 0 when the run has another
/// owner (or has ended).
const RENEW: &str = r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), ARGV[3])
return 1
";

/// KEYS meta, run; ARGV token, progress. 1 when saved, 0 when another instance owns the run,
/// -1 when its record is gone (expired): a save never makes a record without its expiry.
const SAVE: &str = r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('HSET', KEYS[2], 'progress', ARGV[2])
return 1
";

/// KEYS meta, runs, run; ARGV token, id. The run ended: out of `runs`, its record deleted;
/// only by its owner, so an old owner cannot end its successor's run.
const END: &str = r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
return 1
";

/// KEYS runs; ARGV key prefix, instance, lease_ms, max. Claims up to `max` runs whose lease
/// ran out: returns id, token, generation for each. A run whose record or log is gone, or
/// whose log says it ended, is dropped from `runs` (and its record deleted) instead. The run
/// and log keys are built here from the prefix, so this needs a standalone Redis (or one
/// whose keys of a run share a hash slot), not a cluster.
const CLAIM: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local run = ARGV[1] .. ':run:' .. id
  local meta = ARGV[1] .. ':ev:' .. id .. ':meta'
  if redis.call('EXISTS', run) == 0 or redis.call('EXISTS', meta) == 0
      or redis.call('HGET', meta, 'finished') == '1' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', run)
  else
    local gen = redis.call('HINCRBY', run, 'gen', 1)
    local token = ARGV[2] .. ':' .. gen
    redis.call('HSET', meta, 'owner', token)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    table.insert(out, id)
    table.insert(out, token)
    table.insert(out, gen)
  end
end
return out
";

/// KEYS meta, runs; ARGV token, id. Marks the lease run out, so another instance claims the
/// run at once (a clean shutdown hands its runs on).
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', 0, ARGV[2])
return 1
";

/// Who and what a run is about, as sealed in its record.
#[derive(Serialize, Deserialize)]
struct Record {
    tenant: String,
    cpf: String,
    fresh: bool,
    from: NaiveDate,
    to: NaiveDate,
}

/// What a run has done that a successor need not do again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub consumer: Option<PartnerResult>,
    pub rating: Option<PartnerResult>,
    pub movements: MovementsProgress,
}

/// Where the movements are: the pages classified and stored so far, added up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MovementsProgress {
    /// The next page's cursor; none before the first page (or after the last, with `done`).
    pub cursor: Option<String>,
    pub pages: u32,
    pub classified: u64,
    pub stored: u64,
    pub tally: Tally,
    /// The movements partner has given its last page, or failed (`failed` says why).
    pub done: bool,
    pub failed: Option<String>,
    /// Pages that came from the answer cache, and the oldest of them: when every page did,
    /// `partner.completed` says so.
    #[serde(default)]
    pub cached_pages: u32,
    #[serde(default)]
    pub oldest_cached: Option<crate::domain::analysis::Cached>,
}

impl Progress {
    /// The partner kinds already answered, for `analysis.resumed`.
    pub fn partners_done(&self) -> Vec<String> {
        let mut done = Vec::new();
        if self.consumer.is_some() {
            done.push("consumer".to_string());
        }
        if self.rating.is_some() {
            done.push("rating".to_string());
        }
        if self.movements.done {
            done.push("movements".to_string());
        }
        done
    }
}

/// The durable runs of one deployment, on its Redis.
pub struct Runs {
    conn: ConnectionManager,
    prefix: String,
    seal: JobSeal,
    lease: Duration,
    /// This process's name in lease tokens.
    instance: String,
    scripts: Scripts,
}

/// The runs' Lua scripts, each hashed once (renewals and saves run several times a second).
struct Scripts {
    register: Script,
    renew: Script,
    save: Script,
    claim: Script,
    release: Script,
    end: Script,
}

/// A run taken over: what it is about, and how far it got.
pub struct Claimed {
    pub subject: Subject,
    pub window: Window,
    pub progress: Progress,
    pub lease: Lease,
}

/// What a claim came to.
pub enum Claim {
    /// A run to resume.
    Resume(Box<Claimed>),
    /// A run whose record does not open (another `QUEUE_KEY`, or damaged): it cannot go on,
    /// and is ended as failed rather than claimed again at every lease.
    Unreadable { id: String, lease: Lease },
}

/// Why the runs' store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("durable runs: {0}")]
pub struct RunsError(String);

fn backend(e: redis::RedisError) -> RunsError {
    RunsError(e.to_string())
}

impl Runs {
    /// `secret` seals what runs keep (`QUEUE_KEY`); `lease` is how long a run's owner may go
    /// without renewing before another instance takes it over.
    pub fn new(
        conn: ConnectionManager,
        prefix: &str,
        secret: &Secret,
        lease: Duration,
    ) -> Result<Self, String> {
        Ok(Runs {
            conn,
            prefix: prefix.to_string(),
            seal: JobSeal::with_label(secret, b"credit-analysis durable run v1")?,
            lease,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            scripts: Scripts {
                register: Self::script(REGISTER),
                renew: Self::script(RENEW),
                save: Self::script(SAVE),
                claim: Self::script(CLAIM),
                release: Self::script(RELEASE),
                end: Self::script(END),
            },
        })
    }

    pub fn lease_time(&self) -> Duration {
        self.lease
    }

    fn run_key(&self, id: &str) -> String {
        format!("{}:run:{id}", self.prefix)
    }

    fn meta_key(&self, id: &str) -> String {
        format!("{}:ev:{id}:meta", self.prefix)
    }

    fn runs_key(&self) -> String {
        format!("{}:runs", self.prefix)
    }

    fn script(body: &str) -> Script {
        Script::new(&format!("{NOW_MS}{body}"))
    }

    /// Records a new run (after its event log exists) with this instance as its owner.
    pub async fn register(
        self: &Arc<Self>,
        subject: &Subject,
        window: Window,
    ) -> Result<Lease, RunsError> {
        let record = Record {
            tenant: subject.tenant.clone(),
            cpf: subject.cpf.digits(),
            fresh: subject.fresh,
            from: window.from,
            to: window.to,
        };
        let sealed = self.seal.seal(
            &subject.id,
            &serde_json::to_string(&record).expect("records serialise"),
        );
        let token = format!("{}:0", self.instance);
        let mut conn = self.conn.clone();
        self.scripts
            .register
            .key(self.run_key(&subject.id))
            .key(self.meta_key(&subject.id))
            .key(self.runs_key())
            .arg(sealed)
            .arg(&token)
            .arg(self.lease.as_millis() as u64)
            .arg(RECORD_TTL_SECS)
            .arg(&subject.id)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(backend)?;
        Ok(Lease::new(self.clone(), &subject.id, token, 0))
    }

    /// Claims up to `max` runs whose lease ran out, with what each is about and how far it
    /// got.
    pub async fn claim(self: &Arc<Self>, max: usize) -> Result<Vec<Claim>, RunsError> {
        let mut conn = self.conn.clone();
        let raw: Vec<redis::Value> = self
            .scripts
            .claim
            .key(self.runs_key())
            .arg(&self.prefix)
            .arg(&self.instance)
            .arg(self.lease.as_millis() as u64)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        let mut claimed = Vec::new();
        for chunk in raw.chunks(3) {
            let [id, token, gen] = chunk else { continue };
            let (Ok(id), Ok(token), Ok(gen)) = (
                redis::from_redis_value::<String>(id.clone()),
                redis::from_redis_value::<String>(token.clone()),
                redis::from_redis_value::<u32>(gen.clone()),
            ) else {
                continue;
            };
            let lease = Lease::new(self.clone(), &id, token, gen);
            match self.load(&id).await {
                Ok(Some((subject, window, progress))) => {
                    claimed.push(Claim::Resume(Box::new(Claimed {
                        subject,
                        window,
                        progress,
                        lease,
                    })))
                }
                Ok(None) => {
                    tracing::error!(analysis = %id, "Claimed a run whose record does not open; ending it as failed.");
                    claimed.push(Claim::Unreadable { id, lease });
                }
                Err(e) => {
                    // Its lease runs out again and someone claims it once Redis answers.
                    tracing::warn!(analysis = %id, error = %e, "Claimed a run but could not read its record.")
                }
            }
        }
        Ok(claimed)
    }

    async fn load(&self, id: &str) -> Result<Option<(Subject, Window, Progress)>, RunsError> {
        let mut conn = self.conn.clone();
        let (subject, progress): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.run_key(id))
            .arg("subject")
            .arg("progress")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let record = subject
            .and_then(|s| self.seal.open(id, &s))
            .and_then(|clear| serde_json::from_str::<Record>(&clear).ok());
        let Some(record) = record else {
            return Ok(None);
        };
        let Ok(cpf) = Cpf::parse(&record.cpf) else {
            return Ok(None);
        };
        let progress = match progress {
            None => Progress::default(),
            Some(p) => match self
                .seal
                .open(id, &p)
                .and_then(|clear| serde_json::from_str(&clear).ok())
            {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        Ok(Some((
            Subject {
                id: id.to_string(),
                tenant: record.tenant,
                cpf,
                fresh: record.fresh,
            },
            Window {
                from: record.from,
                to: record.to,
            },
            progress,
        )))
    }
}

/// A run's lease: renewed in the background while the run works; lost when another instance
/// took the run over (or could not be renewed before it ran out).
#[derive(Clone)]
pub struct Lease {
    runs: Arc<Runs>,
    id: String,
    token: String,
    /// How many times the run was taken over: 0 for the first owner.
    pub generation: u32,
    lost: Arc<(AtomicBool, Notify)>,
}

impl Lease {
    fn new(runs: Arc<Runs>, id: &str, token: String, generation: u32) -> Self {
        Lease {
            runs,
            id: id.to_string(),
            token,
            generation,
            lost: Arc::default(),
        }
    }

    /// The token the event log checks before each append.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Says the lease is lost: the run stops.
    pub fn lose(&self) {
        self.lost.0.store(true, Ordering::SeqCst);
        self.lost.1.notify_waiters();
    }

    pub fn is_lost(&self) -> bool {
        self.lost.0.load(Ordering::SeqCst)
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&self) {
        loop {
            let notified = self.lost.1.notified();
            if self.is_lost() {
                return;
            }
            notified.await;
        }
    }

    /// Renews the lease every third of its time until it is lost; run it beside the run and
    /// stop it when the run has ended. A renewal Redis refuses (another owner) loses the
    /// lease; one that fails or hangs (Redis away or slow) is tried again at the next tick,
    /// and the lease is lost once it may have run out: counted from before the last renewal
    /// was sent, so this side never believes it holds the lease longer than Redis does.
    pub async fn keep(self) {
        let every = self.runs.lease / 3;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = tokio::time::Instant::now();
        loop {
            ticks.tick().await;
            let sent = tokio::time::Instant::now();
            let mut conn = self.runs.conn.clone();
            let mut invocation = self.runs.scripts.renew.key(self.runs.meta_key(&self.id));
            invocation
                .key(self.runs.runs_key())
                .arg(&self.token)
                .arg(self.runs.lease.as_millis() as u64)
                .arg(&self.id);
            let renewal = invocation.invoke_async::<i64>(&mut conn);
            let r = match tokio::time::timeout(every, renewal).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("no answer within a third of the lease".to_string()),
            };
            match r {
                Ok(1) => renewed = sent,
                Ok(_) => {
                    tracing::warn!(analysis = %self.id, "Another instance took the analysis over; stopping here.");
                    return self.lose();
                }
                Err(e) if renewed.elapsed() >= self.runs.lease => {
                    tracing::warn!(analysis = %self.id, error = %e, "Lease not renewed in time; stopping here, another instance takes the analysis over.");
                    return self.lose();
                }
                Err(e) => {
                    tracing::warn!(analysis = %self.id, error = %e, "Lease not renewed; trying again.")
                }
            }
        }
    }

    /// Saves how far the run got; `false` when another instance owns the run now (the lease
    /// is then lost). A write Redis fails is logged and the run goes on: only a successor
    /// would have needed it.
    pub async fn save(&self, progress: &Progress) -> bool {
        let sealed = self.runs.seal.seal(
            &self.id,
            &serde_json::to_string(progress).expect("progress serialises"),
        );
        let mut conn = self.runs.conn.clone();
        let r: Result<i64, _> = self
            .runs
            .scripts
            .save
            .key(self.runs.meta_key(&self.id))
            .key(self.runs.run_key(&self.id))
            .arg(&self.token)
            .arg(sealed)
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok(1) => true,
            Ok(-1) => {
                // Only a record past its day's expiry: the run goes on, unresumable.
                tracing::warn!(analysis = %self.id, "Run record gone; progress not saved.");
                true
            }
            Ok(_) => {
                self.lose();
                false
            }
            Err(e) => {
                tracing::warn!(analysis = %self.id, error = %e, "Progress not saved; a successor would redo this step.");
                true
            }
        }
    }

    /// Hands the run on at once (a clean shutdown): its lease is marked run out.
    pub async fn release(&self) {
        let mut conn = self.runs.conn.clone();
        let r: Result<i64, _> = self
            .runs
            .scripts
            .release
            .key(self.runs.meta_key(&self.id))
            .key(self.runs.runs_key())
            .arg(&self.token)
            .arg(&self.id)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(analysis = %self.id, error = %e, "Run not handed on; another instance takes it when its lease runs out.");
        }
    }

    /// The run ended (its final event is recorded): out of the runs to watch, and its record
    /// (CPF, partner answers) deleted; only while this lease still owns the run.
    pub async fn end(&self) {
        let mut conn = self.runs.conn.clone();
        let ended: Result<i64, _> = self
            .runs
            .scripts
            .end
            .key(self.runs.meta_key(&self.id))
            .key(self.runs.runs_key())
            .key(self.runs.run_key(&self.id))
            .arg(&self.token)
            .arg(&self.id)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = ended {
            tracing::warn!(analysis = %self.id, error = %e, "Ended run not cleared; its record expires within a day.");
        }
    }
}
