//! The retry queue on Redis: every state change is one Lua script, so a job is always in
//! exactly one of due, leased or dead, whatever process dies when.
//!
//! Keys under `{prefix}:q:`: `jobs` (hash id → job JSON), `due` (sorted by due time), `leased`
//! (sorted by lease expiry), `owner` (hash id → lease token), `age` (sorted by first enqueue),
//! `dead` (hash id → job JSON) with `dead:order`, and `wake`, a list workers block on.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};

use super::{now_ms, DeadLetter, Job, Leased, QueueStats, RetryQueue};
use crate::error::IntegrationError;
use crate::redis_wake::NOW_MS;

/// KEYS jobs, due, wake, age; ARGV id, json, delay_ms, max_depth, enqueued_at.
const ENQUEUE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZADD', KEYS[4], tonumber(ARGV[5]), ARGV[1])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 63)
return 1
";

/// KEYS jobs, due, leased, owner; ARGV max, lease_ms, token prefix.
const LEASE: &str = r"
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

/// KEYS jobs, due, leased, owner, wake; ARGV id, token, json, delay_ms.
const RESCHEDULE: &str = r"
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 63)
return 1
";

/// KEYS jobs, leased, owner, age, dead, dead order; ARGV id, token, json.
const BURY: &str = r"
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[6], now, ARGV[1])
return 1
";

/// KEYS jobs, due, age, dead, dead order, wake; ARGV ids to replay (their new JSON follows
/// each id).
const REPLAY: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
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
}

/// The queue shared by every process that uses the same Redis and key prefix.
#[derive(Clone)]
pub struct RedisQueue(std::sync::Arc<Inner>);

struct Inner {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    max_depth: u64,
    scripts: Scripts,
}

impl RedisQueue {
    pub async fn connect(
        url: &str,
        prefix: &str,
        max_depth: u64,
    ) -> Result<Self, IntegrationError> {
        let client = Client::open(url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        let with_now = |body: &str| Script::new(&format!("{NOW_MS}{body}"));
        Ok(RedisQueue(std::sync::Arc::new(Inner {
            client,
            conn,
            prefix: prefix.to_string(),
            max_depth,
            scripts: Scripts {
                enqueue: with_now(ENQUEUE),
                lease: with_now(LEASE),
                finish: Script::new(FINISH),
                reschedule: with_now(RESCHEDULE),
                bury: with_now(BURY),
                replay: with_now(REPLAY),
            },
        })))
    }

    fn key(&self, name: &str) -> String {
        format!("{}:q:{name}", self.0.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.0.conn.clone()
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

fn json(job: &Job) -> String {
    serde_json::to_string(job).expect("jobs serialise")
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
            .arg(json(job))
            .arg(millis(delay))
            .arg(self.0.max_depth)
            .arg(job.enqueued_at_ms)
            .invoke_async(&mut self.conn())
            .await?;
        match r {
            -1 => Err(IntegrationError::QueueFull(self.0.max_depth)),
            n => Ok(n == 1),
        }
    }

    async fn lease(&self, max: usize, lease: Duration) -> Result<Vec<Leased>, IntegrationError> {
        let flat: Vec<String> = self
            .0
            .scripts
            .lease
            .key(self.key("jobs"))
            .key(self.key("due"))
            .key(self.key("leased"))
            .key(self.key("owner"))
            .arg(max)
            .arg(millis(lease))
            .arg(crate::semaphore::new_holder())
            .invoke_async(&mut self.conn())
            .await?;
        flat.chunks_exact(3)
            .map(|c| {
                let job: Job = serde_json::from_str(&c[1])
                    .map_err(|e| IntegrationError::CorruptJob(format!("{}: {e}", c[0])))?;
                Ok(Leased {
                    job,
                    token: c[2].clone(),
                })
            })
            .collect()
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
            .arg(json(job))
            .arg(millis(delay))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(r == 1)
    }

    async fn bury(&self, leased: &Leased, job: &Job) -> Result<bool, IntegrationError> {
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
            .arg(&leased.job.id)
            .arg(&leased.token)
            .arg(json(job))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(r == 1)
    }

    async fn replay(&self, id: Option<&str>) -> Result<u64, IntegrationError> {
        let mut conn = self.conn();
        let entries: Vec<(String, String)> = match id {
            Some(id) => {
                let job: Option<String> = conn.hget(self.key("dead"), id).await?;
                job.map(|j| vec![(id.to_string(), j)]).unwrap_or_default()
            }
            None => conn.hgetall(self.key("dead")).await?,
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
        for (id, raw) in entries {
            let mut job: Job = serde_json::from_str(&raw)
                .map_err(|e| IntegrationError::CorruptJob(format!("{id}: {e}")))?;
            job.attempts = 0;
            job.outcome = None;
            job.failed_deliveries = 0;
            job.enqueued_at_ms = now_ms();
            script.arg(id).arg(json(&job));
        }
        let n: u64 = script.invoke_async(&mut conn).await?;
        Ok(n)
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, IntegrationError> {
        let mut conn = self.conn();
        let ids: Vec<String> = conn
            .zrange(self.key("dead:order"), 0, max.saturating_sub(1) as isize)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let raw: Option<String> = conn.hget(self.key("dead"), &id).await?;
            if let Some(raw) = raw {
                let job: Job = serde_json::from_str(&raw)
                    .map_err(|e| IntegrationError::CorruptJob(format!("{id}: {e}")))?;
                out.push(DeadLetter::from(&job));
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
