//! The distributed semaphore on Redis.
//!
//! Each partner's permits are a sorted set `{prefix}:sem:{partner}` of holder ids scored by
//! lease expiry in Redis server milliseconds. Acquire, refresh and release are Lua scripts run
//! with EVALSHA, each atomic on the server: acquire first drops expired holders, then adds the
//! caller only if fewer than `limit` remain, so the count can never pass the limit whatever
//! the number of processes or the skew of their clocks. Release pushes a token onto
//! `{prefix}:sem:{partner}:wake`, on which waiters block with BLPOP: Redis hands each token to
//! the longest-waiting client, so waiters are served roughly in order and nobody polls.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Client, Script};

use super::PermitStore;
use crate::error::IntegrationError;
use crate::redis_wake::NOW_MS;

/// KEYS[1] permits; ARGV holder, limit, lease_ms. Returns 1 when the permit is held.
const ACQUIRE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  return 1
end
return 0
";

/// KEYS[1] permits; ARGV holder, lease_ms. Returns 1 when the lease was still held.
const REFRESH: &str = r"
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 2)
return 1
";

/// KEYS[1] permits, KEYS[2] wake list; ARGV holder.
const RELEASE: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, 63)
  redis.call('PEXPIRE', KEYS[2], 60000)
end
return 1
";

/// KEYS[1] permits. The number of unexpired holders.
const IN_USE: &str = r"
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
";

/// Permits shared by every process that uses the same Redis and key prefix. Cloning is cheap.
#[derive(Clone)]
pub struct RedisSemaphore(std::sync::Arc<Inner>);

struct Inner {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    acquire: Script,
    refresh: Script,
    release: Script,
    in_use: Script,
}

impl RedisSemaphore {
    /// Connects to Redis at `url`; keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, IntegrationError> {
        let client = Client::open(url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        let script = |body: &str| Script::new(&format!("{NOW_MS}{body}"));
        Ok(RedisSemaphore(std::sync::Arc::new(Inner {
            client,
            conn,
            prefix: prefix.to_string(),
            acquire: script(ACQUIRE),
            refresh: script(REFRESH),
            release: Script::new(RELEASE),
            in_use: script(IN_USE),
        })))
    }

    fn key(&self, partner: &str) -> String {
        format!("{}:sem:{partner}", self.0.prefix)
    }

    fn wake_key(&self, partner: &str) -> String {
        format!("{}:sem:{partner}:wake", self.0.prefix)
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

impl PermitStore for RedisSemaphore {
    async fn try_acquire(
        &self,
        partner: &str,
        limit: u32,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, IntegrationError> {
        let mut conn = self.0.conn.clone();
        let got: i64 = self
            .0
            .acquire
            .key(self.key(partner))
            .arg(holder)
            .arg(limit)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await?;
        Ok(got == 1)
    }

    async fn refresh(
        &self,
        partner: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, IntegrationError> {
        let mut conn = self.0.conn.clone();
        let held: i64 = self
            .0
            .refresh
            .key(self.key(partner))
            .arg(holder)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    async fn release(&self, partner: &str, holder: &str) -> Result<(), IntegrationError> {
        let mut conn = self.0.conn.clone();
        let _: i64 = self
            .0
            .release
            .key(self.key(partner))
            .key(self.wake_key(partner))
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn in_use(&self, partner: &str) -> Result<u32, IntegrationError> {
        let mut conn = self.0.conn.clone();
        let n: u32 = self
            .0
            .in_use
            .key(self.key(partner))
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }

    async fn wait_for_release(&self, partner: &str, timeout: Duration) {
        crate::redis_wake::wait_on(&self.0.client, self.wake_key(partner), timeout).await
    }
}
