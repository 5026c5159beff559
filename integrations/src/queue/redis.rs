//! The retry queue on Redis: every state change is one Lua script, so a job is always in
//! exactly one of due, leased or dead, whatever process dies when.
//!
//! Keys under `{prefix}:q:`: `jobs` (hash id → sealed job), `due` (sorted by due time),
//! `leased` (sorted by lease expiry), `owner` (hash id → lease token), `age` (sorted by first
//! enqueue), `dead` (hash id → sealed job) with `dead:order` (sorted by burial), and `wake`, a
//! list workers block on. A job is stored only sealed (see [`JobSeal`]): it holds a person's
//! CPF, and once answered their bureau record.
//!
//! Nothing here is kept for ever either.
//! Every lease first drops the jobs queued longer than the job TTL and the dead letters buried
//! longer than the dead-letter TTL (a hundred of each at a time), and every write sets each key
//! it touches to expire after the longer of the two, so a queue no process serves any more
//! (an instance that crashed) goes away on its own.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};

use super::{now_ms, DeadLetter, Job, JobSeal, Leased, QueueStats, RetryQueue};
use crate::error::IntegrationError;
use crate::redis_wake::NOW_MS;

/// Sets every key a script names to expire after `ttl` milliseconds; scripts that write call
/// it with their last argument.
const KEEP: &str = r"
local function keep(ttl)
  for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ttl) end
end
";

/// KEYS jobs, due, wake, age; ARGV id, json, delay_ms, max_depth, enqueued_at, key ttl.
const ENQUEUE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZADD', KEYS[4], tonumber(ARGV[5]), ARGV[1])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 63)
keep(ARGV[6])
return 1
";

/// KEYS jobs, due, leased, owner, age, dead, dead order; ARGV max, lease_ms, token prefix,
/// job ttl, dead-letter ttl, key ttl (milliseconds).
const LEASE: &str = r"
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[4]), 'LIMIT', 0, 100)
for _, id in ipairs(old) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
end
local buried = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now - tonumber(ARGV[5]), 'LIMIT', 0, 100)
for _, id in ipairs(buried) do
  redis.call('HDEL', KEYS[6], id)
  redis.call('ZREM', KEYS[7], id)
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZADD', KEYS[2], now, id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for i, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  local job = redis.call('HGET', KEYS[1], id)
  if job then
    local token = ARGV[3] .. ':' .. i
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), id)
    redis.call('HSET', KEYS[4], id, token)
    table.insert(out, id)
    table.insert(out, job)
    table.insert(out, token)
  end
end
if #out > 0 then keep(ARGV[6]) end
return out
";

/// KEYS jobs, leased, owner, age; ARGV id, token.
const FINISH: &str = r"
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
";

/// KEYS jobs, due, leased, owner, wake; ARGV id, token, json, delay_ms, key ttl.
const RESCHEDULE: &str = r"
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 63)
keep(ARGV[5])
return 1
";

/// KEYS jobs, leased, owner, age, dead, dead order; ARGV id, token, json, key ttl.
const BURY: &str = r"
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[6], now, ARGV[1])
keep(ARGV[4])
return 1
";

/// KEYS jobs, due, age, dead, dead order, wake; ARGV ids to replay (their new JSON follows
/// each id), then the key ttl.
const REPLAY: &str = r"
local n = 0
for i = 1, #ARGV - 1, 2 do
  local id = ARGV[i]
  if redis.call('HDEL', KEYS[4], id) == 1 then
    redis.call('ZREM', KEYS[5], id)
    redis.call('HSET', KEYS[1], id, ARGV[i + 1])
    redis.call('ZADD', KEYS[2], now, id)
    redis.call('ZADD', KEYS[3], now, id)
    n = n + 1
  end
end
if n > 0 then
  redis.call('LPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], 0, 63)
  keep(ARGV[#ARGV])
end
return n
";

/// KEYS jobs, due, leased, owner, age, dead, dead order; ARGV id prefix. Removes every job
/// and dead letter whose id starts with the prefix (the hashes are bounded by the queue's
/// depth); how many.
const PURGE: &str = r"
local n = 0
local p = ARGV[1]
for _, h in ipairs({KEYS[1], KEYS[6]}) do
  for _, id in ipairs(redis.call('HKEYS', h)) do
    if string.sub(id, 1, #p) == p then
      redis.call('HDEL', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZREM', KEYS[3], id)
      redis.call('HDEL', KEYS[4], id)
      redis.call('ZREM', KEYS[5], id)
      redis.call('HDEL', KEYS[6], id)
      redis.call('ZREM', KEYS[7], id)
      n = n + 1
    end
  end
end
return n
";

struct Scripts {
    enqueue: Script,
    lease: Script,
    finish: Script,
    reschedule: Script,
    bury: Script,
    replay: Script,
    purge: Script,
}

/// How long jobs and dead letters are kept (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTtl {
    /// From a job's first enqueue (or replay) to its removal.
    pub job: Duration,
    /// From a job's burial to the removal of its dead letter.
    pub dead_letter: Duration,
}

impl QueueTtl {
    /// Every key expires this long after its last write.
    fn key_ms(&self) -> u64 {
        millis(self.job.max(self.dead_letter))
    }
}

/// The queue shared by every process that uses the same Redis and key prefix.
#[derive(Clone)]
pub struct RedisQueue(std::sync::Arc<Inner>);

struct Inner {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    max_depth: u64,
    seal: JobSeal,
    ttl: QueueTtl,
    scripts: Scripts,
}

/// The names of every key of a queue, for removing it whole.
const KEY_NAMES: [&str; 8] = [
    "jobs",
    "due",
    "leased",
    "owner",
    "age",
    "dead",
    "dead:order",
    "wake",
];

impl RedisQueue {
    pub async fn connect(
        url: &str,
        prefix: &str,
        max_depth: u64,
        seal: JobSeal,
        ttl: QueueTtl,
    ) -> Result<Self, IntegrationError> {
        let client = Client::open(url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        let with_now = |body: &str| Script::new(&format!("{NOW_MS}{KEEP}{body}"));
        Ok(RedisQueue(std::sync::Arc::new(Inner {
            client,
            conn,
            prefix: prefix.to_string(),
            max_depth,
            seal,
            ttl,
            scripts: Scripts {
                enqueue: with_now(ENQUEUE),
                lease: with_now(LEASE),
                finish: Script::new(FINISH),
                reschedule: with_now(RESCHEDULE),
                bury: with_now(BURY),
                replay: with_now(REPLAY),
                purge: Script::new(PURGE),
            },
        })))
    }

    fn key(&self, name: &str) -> String {
        format!("{}:q:{name}", self.0.prefix)
    }

    /// Names the keys a job's whole state lives in, in the order the lease and purge scripts
    /// take them: jobs, due, leased, owner, age, dead, dead order.
    fn state_keys(&self, script: &mut redis::ScriptInvocation<'_>) {
        // The queue's keys but `wake`, which no script of a job's state touches.
        for name in &KEY_NAMES[..7] {
            script.key(self.key(name));
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.0.conn.clone()
    }

    fn outcome_key(&self, job_id: &str) -> String {
        self.key(&format!("out:{job_id}"))
    }

    /// Keeps a job's outcome for an in-process caller waiting in another process (the queue
    /// is shared: any process's worker may have run the job), sealed, for `ttl`.
    pub async fn store_outcome(
        &self,
        job_id: &str,
        outcome: &super::Outcome,
        ttl: Duration,
    ) -> Result<(), IntegrationError> {
        let clear = serde_json::to_string(outcome).expect("outcomes serialise");
        let sealed = self.0.seal.seal(&format!("out:{job_id}"), &clear);
        let _: () = self
            .conn()
            .pset_ex(self.outcome_key(job_id), sealed, millis(ttl).max(1))
            .await?;
        Ok(())
    }

    /// Whether a job of this id is queued now (due, leased or being delivered).
    pub async fn holds(&self, job_id: &str) -> Result<bool, IntegrationError> {
        Ok(self.conn().hexists(self.key("jobs"), job_id).await?)
    }

    /// The outcomes stored for any of `job_ids`, each removed as it is taken (they hold a
    /// person's record: once delivered nobody needs them).
    pub async fn take_outcomes(
        &self,
        job_ids: &[String],
    ) -> Result<Vec<(String, super::Outcome)>, IntegrationError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = job_ids.iter().map(|id| self.outcome_key(id)).collect();
        let mut conn = self.conn();
        let found: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut out = Vec::new();
        let mut taken = Vec::new();
        for ((id, key), sealed) in job_ids.iter().zip(keys).zip(found) {
            let Some(sealed) = sealed else { continue };
            taken.push(key);
            let outcome = self
                .0
                .seal
                .open(&format!("out:{id}"), &sealed)
                .and_then(|clear| serde_json::from_str(&clear).ok());
            if let Some(outcome) = outcome {
                out.push((id.clone(), outcome));
            }
        }
        if !taken.is_empty() {
            let _: i64 = conn.del(taken).await?;
        }
        Ok(out)
    }

    /// Removes the whole queue, dead letters included (benchmarks and tests start afresh).
    pub async fn discard(&self) -> Result<(), IntegrationError> {
        let keys: Vec<String> = KEY_NAMES.iter().map(|n| self.key(n)).collect();
        let _: i64 = self.conn().del(keys).await?;
        Ok(())
    }

    /// What a job is stored as: the whole job sealed (see [`JobSeal`]), never in clear.
    fn stored(&self, job: &Job) -> String {
        let json = serde_json::to_string(job).expect("jobs serialise");
        self.0.seal.seal(&job.id, &json)
    }

    /// A stored job opened; an error names the job (never what it holds) when it does not
    /// open under this queue's key or is not a job.
    fn parse(&self, id: &str, raw: &str) -> Result<Job, IntegrationError> {
        let corrupt = |why: &str| IntegrationError::CorruptJob(format!("{id}: {why}"));
        let json = self
            .0
            .seal
            .open(id, raw)
            .ok_or_else(|| corrupt("it does not open with this QUEUE_KEY"))?;
        // serde's message may quote a field's value: it is not passed on.
        serde_json::from_str(&json).map_err(|_| corrupt("what it holds is not a job"))
    }

    /// Moves the job `id` leased with `token` to the dead letters as `stored`; `false` when
    /// the lease was lost.
    async fn bury_stored(
        &self,
        id: &str,
        token: &str,
        stored: &str,
    ) -> Result<bool, IntegrationError> {
        let r: i64 = self
            .0
            .scripts
            .bury
            .key(self.key("jobs"))
            .key(self.key("leased"))
            .key(self.key("owner"))
            .key(self.key("age"))
            .key(self.key("dead"))
            .key(self.key("dead:order"))
            .arg(id)
            .arg(token)
            .arg(stored)
            .arg(self.0.ttl.key_ms())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(r == 1)
    }

    /// Whether Redis answers, for readiness.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl RetryQueue for RedisQueue {
    async fn enqueue(&self, job: &Job, delay: Duration) -> Result<bool, IntegrationError> {
        let r: i64 = self
            .0
            .scripts
            .enqueue
            .key(self.key("jobs"))
            .key(self.key("due"))
            .key(self.key("wake"))
            .key(self.key("age"))
            .arg(&job.id)
            .arg(self.stored(job))
            .arg(millis(delay))
            .arg(self.0.max_depth)
            .arg(job.enqueued_at_ms)
            .arg(self.0.ttl.key_ms())
            .invoke_async(&mut self.conn())
            .await?;
        match r {
            -1 => Err(IntegrationError::QueueFull(self.0.max_depth)),
            n => Ok(n == 1),
        }
    }

    async fn lease(&self, max: usize, lease: Duration) -> Result<Vec<Leased>, IntegrationError> {
        let mut script = self.0.scripts.lease.prepare_invoke();
        self.state_keys(&mut script);
        let flat: Vec<String> = script
            .arg(max)
            .arg(millis(lease))
            .arg(crate::semaphore::new_holder())
            .arg(millis(self.0.ttl.job))
            .arg(millis(self.0.ttl.dead_letter))
            .arg(self.0.ttl.key_ms())
            .invoke_async(&mut self.conn())
            .await?;
        let mut leased = Vec::with_capacity(flat.len() / 3);
        for c in flat.chunks_exact(3) {
            let token = c[2].clone();
            match self.parse(&c[0], &c[1]) {
                Ok(job) => leased.push(Leased { job, token }),
                Err(e) => {
                    // A job this instance cannot open would come back after every lease for
                    // ever: it goes to the dead letters as it is (sealed), where an instance
                    // with the right key can replay it, until the dead-letter TTL.
                    tracing::error!(error = %e, "Unreadable queued job moved to the dead letters.");
                    self.bury_stored(&c[0], &token, &c[1]).await?;
                }
            }
        }
        Ok(leased)
    }

    async fn finish(&self, leased: &Leased) -> Result<bool, IntegrationError> {
        let r: i64 = self
            .0
            .scripts
            .finish
            .key(self.key("jobs"))
            .key(self.key("leased"))
            .key(self.key("owner"))
            .key(self.key("age"))
            .arg(&leased.job.id)
            .arg(&leased.token)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(r == 1)
    }

    async fn reschedule(
        &self,
        leased: &Leased,
        job: &Job,
        delay: Duration,
    ) -> Result<bool, IntegrationError> {
        let r: i64 = self
            .0
            .scripts
            .reschedule
            .key(self.key("jobs"))
            .key(self.key("due"))
            .key(self.key("leased"))
            .key(self.key("owner"))
            .key(self.key("wake"))
            .arg(&leased.job.id)
            .arg(&leased.token)
            .arg(self.stored(job))
            .arg(millis(delay))
            .arg(self.0.ttl.key_ms())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(r == 1)
    }

    async fn bury(&self, leased: &Leased, job: &Job) -> Result<bool, IntegrationError> {
        self.bury_stored(&leased.job.id, &leased.token, &self.stored(job))
            .await
    }
    async fn replay(&self, id: Option<&str>, scope: &str) -> Result<u64, IntegrationError> {
        let mut conn = self.conn();
        let entries: Vec<(String, String)> = match id {
            Some(id) if !id.starts_with(scope) => Vec::new(),
            Some(id) => {
                let job: Option<String> = conn.hget(self.key("dead"), id).await?;
                job.map(|j| vec![(id.to_string(), j)]).unwrap_or_default()
            }
            None => {
                let all: Vec<(String, String)> = conn.hgetall(self.key("dead")).await?;
                all.into_iter()
                    .filter(|(id, _)| id.starts_with(scope))
                    .collect()
            }
        };
        if entries.is_empty() {
            return Ok(0);
        }
        let mut script = self.0.scripts.replay.prepare_invoke();
        script
            .key(self.key("jobs"))
            .key(self.key("due"))
            .key(self.key("age"))
            .key(self.key("dead"))
            .key(self.key("dead:order"))
            .key(self.key("wake"));
        let mut any = false;
        for (id, raw) in entries {
            let mut job = match self.parse(&id, &raw) {
                Ok(job) => job,
                Err(e) => {
                    // Left where it is (it expires with the dead letters): an operator may
                    // still want to see that it existed.
                    tracing::error!(error = %e, "Unreadable dead letter not replayed.");
                    continue;
                }
            };
            job.attempts = 0;
            job.outcome = None;
            job.failed_deliveries = 0;
            job.enqueued_at_ms = now_ms();
            script.arg(&id).arg(self.stored(&job));
            any = true;
        }
        if !any {
            return Ok(0);
        }
        script.arg(self.0.ttl.key_ms());
        let n: u64 = script.invoke_async(&mut conn).await?;
        Ok(n)
    }

    async fn purge(&self, prefix: &str) -> Result<u64, IntegrationError> {
        let mut conn = self.conn();
        let mut script = self.0.scripts.purge.prepare_invoke();
        self.state_keys(&mut script);
        let n: u64 = script.arg(prefix).invoke_async(&mut conn).await?;
        // Outcomes kept for a caller in another process (a person's record): gone too. Job
        // ids are the queue's own text; glob characters are escaped all the same.
        let escaped: String = prefix
            .chars()
            .flat_map(|c| match c {
                '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let pattern = self.outcome_key(&format!("{escaped}*"));
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> = conn.scan_match(&pattern).await?;
            let mut keys = Vec::new();
            while let Some(k) = iter.next_item().await {
                keys.push(k?);
            }
            keys
        };
        if !keys.is_empty() {
            let _: () = conn.del(keys).await?;
        }
        Ok(n)
    }

    async fn dead_letters(
        &self,
        max: usize,
        scope: &str,
    ) -> Result<Vec<DeadLetter>, IntegrationError> {
        let mut conn = self.conn();
        // Every id, oldest first, then the scope's: ids are short, and the dead letters expire.
        let ids: Vec<String> = conn.zrange(self.key("dead:order"), 0, -1).await?;
        let ids = ids.into_iter().filter(|id| id.starts_with(scope)).take(max);
        let mut out = Vec::with_capacity(max.min(1024));
        for id in ids {
            let raw: Option<String> = conn.hget(self.key("dead"), &id).await?;
            if let Some(raw) = raw {
                match self.parse(&id, &raw) {
                    Ok(job) => out.push(DeadLetter::from(&job)),
                    Err(e) => out.push(DeadLetter {
                        id: id.clone(),
                        request_id: String::new(),
                        partner: String::new(),
                        attempts: 0,
                        last_error: Some(e.to_string()),
                    }),
                }
            }
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<QueueStats, IntegrationError> {
        let mut conn = self.conn();
        let (due, leased, dead, oldest): (u64, u64, u64, Vec<(String, f64)>) = redis::pipe()
            .zcard(self.key("due"))
            .zcard(self.key("leased"))
            .hlen(self.key("dead"))
            .zrange_withscores(self.key("age"), 0, 0)
            .query_async(&mut conn)
            .await?;
        let oldest_age_ms = oldest
            .first()
            .map(|(_, at)| now_ms().saturating_sub(*at as u64))
            .unwrap_or(0);
        Ok(QueueStats {
            due,
            leased,
            dead,
            oldest_age_ms,
        })
    }

    async fn wait(&self, timeout: Duration) {
        crate::redis_wake::wait_on(&self.0.client, self.key("wake"), timeout).await
    }
}
