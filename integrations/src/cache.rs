//! The partner answer cache: a bureau's answer about a person, kept for a while so the next
//! analysis of the same person within that time does not pay the bureau again.
//!
//! An answer is reused only within its scope (the core API's tenant): a lender must not learn
//! from a cache hit that another lender looked the same person up.
//!
//! How long is the partner's `cache_ttl_secs` (a day for identity and income by default; off
//! for movements, which change every day and are asked page by page). Entries are found by a
//! keyed hash of the partner, the CPF and the request's parameters, so neither a CPF nor
//! anything a client chose becomes a key; and they are stored sealed (XChaCha20-Poly1305, the
//! entry's key as associated data), since they hold a person's name, address and debts. On
//! Redis when the gateway uses Redis (shared by every instance, with the queue's key, so all
//! instances read each other's entries) and in memory otherwise, bounded. Every entry expires
//! on its own; a cache that fails (Redis restarting) is a miss, never a failed request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::Secret;
use crate::error::IntegrationError;
use crate::partner::RequestParams;
use crate::queue::{now_ms, JobSeal};

/// Answers kept at most in memory; past it the oldest go first. Sized for an instance's day
/// of analyses (two cached kinds each), a few KiB apiece.
pub const MAX_MEMORY_ANSWERS: usize = 20_000;

/// Bytes of sealed answers kept at most in memory: movement pages, if an operator caches
/// them, are far larger than a record, and the count alone would not bound them.
pub const MAX_MEMORY_BYTES: usize = 64 << 20;

/// Where an answer came from the cache: when it was stored and how old it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// When the partner gave the answer, RFC 3339.
    pub stored_at: String,
    pub age_secs: u64,
}

/// An entry as sealed.
#[derive(Serialize, Deserialize)]
struct Entry {
    stored_at_ms: u64,
    data: serde_json::Value,
}

/// Hits, misses and stores since start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
}

/// The cache, in memory or on Redis.
pub struct AnswerCache {
    /// Key of the keyed hash that names entries.
    naming: Vec<u8>,
    seal: JobSeal,
    store: Store,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
}

enum Store {
    Memory(Mutex<Memory>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

#[derive(Default)]
struct Memory {
    /// Sealed entries and when they expire, by name.
    entries: HashMap<String, (Instant, String)>,
    /// Names with when their entry expires, oldest stored first; an entry stored again since
    /// (another expiry) is skipped when it comes up.
    order: VecDeque<(Instant, String)>,
    /// Bytes of the sealed entries.
    bytes: usize,
    /// Names stored under each scope (by the scope's tag), so a scope can be forgotten; and
    /// each name's scope, so an entry that goes leaves its scope's set.
    scopes: HashMap<String, HashSet<String>>,
    scope_of: HashMap<String, String>,
}

impl Memory {
    fn remove(&mut self, name: &str) {
        if let Some((_, sealed)) = self.entries.remove(name) {
            self.bytes -= sealed.len();
        }
        if let Some(tag) = self.scope_of.remove(name) {
            if let Some(names) = self.scopes.get_mut(&tag) {
                names.remove(name);
                if names.is_empty() {
                    self.scopes.remove(&tag);
                }
            }
        }
    }

    /// Files `name` under the scope tagged `tag`.
    fn file(&mut self, tag: String, name: &str) {
        self.scopes
            .entry(tag.clone())
            .or_default()
            .insert(name.to_string());
        self.scope_of.insert(name.to_string(), tag);
    }

    /// Drops the oldest stored entry (skipping stale names); whether there was one.
    fn drop_oldest(&mut self) -> bool {
        while let Some((until, name)) = self.order.pop_front() {
            if self.entries.get(&name).is_some_and(|(u, _)| *u == until) {
                self.remove(&name);
                return true;
            }
        }
        false
    }

    /// Drops, from the oldest stored, what has expired; then the oldest until within bounds.
    fn make_room(&mut self, incoming: usize) {
        let now = Instant::now();
        while let Some((until, name)) = self.order.front().cloned() {
            let live = self.entries.get(&name).is_some_and(|(u, _)| *u == until);
            if live && until > now {
                break;
            }
            self.order.pop_front();
            if live {
                self.remove(&name);
            }
        }
        while self.entries.len() >= MAX_MEMORY_ANSWERS || self.bytes + incoming > MAX_MEMORY_BYTES {
            if !self.drop_oldest() {
                break;
            }
        }
        // Stale names (entries stored again, or looked up past their time) never outnumber
        // the entries by much.
        if self.order.len() > 2 * MAX_MEMORY_ANSWERS {
            let entries = &self.entries;
            self.order
                .retain(|(u, n)| entries.get(n).is_some_and(|(until, _)| until == u));
        }
    }
}

/// KEYS entry, scope index; ARGV sealed entry, ttl ms, name. Stores the entry and adds it to
/// its scope's index, which lives as long as its longest-lived entry.
const PUT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
end
";

/// KEYS scope index; ARGV the entries' key prefix. Deletes the scope's entries and its index;
/// how many names it held. It names keys it was not given, so it needs a standalone Redis (as
/// the durable runs do), not a cluster.
const FORGET_SCOPE: &str = r"
local names = redis.call('SMEMBERS', KEYS[1])
for _, n in ipairs(names) do redis.call('DEL', ARGV[1] .. n) end
redis.call('DEL', KEYS[1])
return #names
";

/// The scripts, hashed once.
static PUT_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(PUT));
static FORGET_SCOPE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(FORGET_SCOPE));

/// The cache's two keys from one secret: labels keep them apart from each other and from the
/// queue's seal made from the same secret.
fn keys(secret: &Secret) -> Result<(Vec<u8>, JobSeal), String> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| "the secret cannot key HMAC".to_string())?;
    mac.update(b"credit-analysis partner answer cache: names v1");
    let naming = mac.finalize().into_bytes().to_vec();
    let seal = JobSeal::with_label(secret, b"credit-analysis partner answer cache: seal v1")?;
    Ok((naming, seal))
}

impl AnswerCache {
    /// A cache in this process's memory, under a key drawn now (nothing outlives the process).
    pub fn memory() -> Self {
        let secret = Secret::new(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ));
        let (naming, seal) = keys(&secret).expect("a long random secret");
        Self::with(naming, seal, Store::Memory(Mutex::default()))
    }

    /// A cache on Redis under `{prefix}:cache:`, sealed with keys made from `secret` (the
    /// queue's key, the same on every instance).
    pub async fn redis(url: &str, prefix: &str, secret: &Secret) -> Result<Self, IntegrationError> {
        let (naming, seal) =
            keys(secret).map_err(|why| IntegrationError::Config(format!("QUEUE_KEY: {why}")))?;
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client).await?;
        Ok(Self::with(
            naming,
            seal,
            Store::Redis {
                conn,
                prefix: prefix.to_string(),
            },
        ))
    }

    fn with(naming: Vec<u8>, seal: JobSeal, store: Store) -> Self {
        AnswerCache {
            naming,
            seal,
            store,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
        }
    }

    /// The name of `partner`'s answer about `cpf` (its digits) to `params`, within `scope`.
    pub fn name(&self, scope: &str, partner: &str, cpf: &str, params: &RequestParams) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.naming).expect("any length");
        let params = serde_json::to_string(params).expect("parameters serialise");
        for part in [scope, partner, cpf, params.as_str()] {
            // Length-prefixed, so no two lists of parts name alike.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The tag under which the names of a scope's entries are kept.
    fn scope_tag(&self, scope: &str) -> String {
        self.name(scope, "", "", &RequestParams::default())
    }

    /// Forgets every answer stored within `scope` (an erasure); how many names it held.
    pub async fn forget_scope(&self, scope: &str) -> Result<usize, IntegrationError> {
        let tag = self.scope_tag(scope);
        match &self.store {
            Store::Memory(m) => {
                let mut m = m.lock().expect("cache lock");
                let names = m.scopes.get(&tag).cloned().unwrap_or_default();
                for n in &names {
                    m.remove(n);
                }
                Ok(names.len())
            }
            Store::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let index = format!("{prefix}:cache:scope:{tag}");
                // One script: an answer stored meanwhile is either gone with the rest or
                // under a new index, never left without one.
                let n: usize = FORGET_SCOPE_SCRIPT
                    .key(index)
                    .arg(format!("{prefix}:cache:"))
                    .invoke_async(&mut conn)
                    .await?;
                Ok(n)
            }
        }
    }

    /// The answer stored under `name`, with its age; none when there is none, it expired, or
    /// it does not open (another key).
    pub async fn get(&self, name: &str) -> Option<(serde_json::Value, CachedAnswer)> {
        let sealed = match &self.store {
            Store::Memory(m) => {
                let mut m = m.lock().expect("cache lock");
                match m.entries.get(name) {
                    Some((until, _)) if *until <= Instant::now() => {
                        m.remove(name);
                        None
                    }
                    Some((_, sealed)) => Some(sealed.clone()),
                    None => None,
                }
            }
            Store::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                redis::AsyncCommands::get::<_, Option<String>>(
                    &mut conn,
                    format!("{prefix}:cache:{name}"),
                )
                .await
                .inspect_err(
                    |e| tracing::warn!(error = %e, "Answer cache unavailable; asking the partner."),
                )
                .ok()
                .flatten()
            }
        };
        let entry = sealed
            .and_then(|s| self.seal.open(name, &s))
            .and_then(|clear| serde_json::from_str::<Entry>(&clear).ok());
        let Some(entry) = entry else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.hits.fetch_add(1, Ordering::Relaxed);
        let stored_at = chrono::DateTime::from_timestamp_millis(entry.stored_at_ms as i64)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let age_secs = now_ms().saturating_sub(entry.stored_at_ms) / 1000;
        Some((
            entry.data,
            CachedAnswer {
                stored_at,
                age_secs,
            },
        ))
    }

    /// Stores `data` under `name`, within `scope`, for `ttl`.
    pub async fn put(&self, scope: &str, name: &str, data: &serde_json::Value, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let entry = Entry {
            stored_at_ms: now_ms(),
            data: data.clone(),
        };
        let sealed = self.seal.seal(
            name,
            &serde_json::to_string(&entry).expect("entries serialise"),
        );
        match &self.store {
            Store::Memory(m) => {
                let mut m = m.lock().expect("cache lock");
                m.remove(name);
                if sealed.len() > MAX_MEMORY_BYTES {
                    return;
                }
                m.make_room(sealed.len());
                let until = Instant::now() + ttl;
                m.bytes += sealed.len();
                m.order.push_back((until, name.to_string()));
                m.entries.insert(name.to_string(), (until, sealed));
                m.file(self.scope_tag(scope), name);
            }
            Store::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let ms = ttl.as_millis().min(u64::MAX as u128) as u64;
                // One script: the entry, and its scope's index, which lives as long as its
                // longest-lived entry.
                let index = format!("{prefix}:cache:scope:{}", self.scope_tag(scope));
                let stored = PUT_SCRIPT
                    .key(format!("{prefix}:cache:{name}"))
                    .key(&index)
                    .arg(sealed)
                    .arg(ms)
                    .arg(name)
                    .invoke_async::<()>(&mut conn)
                    .await;
                if let Err(e) = stored {
                    tracing::warn!(error = %e, "Answer not cached; the next analysis asks the partner again.");
                    return;
                }
            }
        }
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets the answer under `name` (the partner now says it has no record).
    pub async fn forget(&self, name: &str) {
        match &self.store {
            Store::Memory(m) => m.lock().expect("cache lock").remove(name),
            Store::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let gone =
                    redis::AsyncCommands::del::<_, ()>(&mut conn, format!("{prefix}:cache:{name}"))
                        .await;
                if let Err(e) = gone {
                    tracing::warn!(error = %e, "Stale cached answer not removed; it expires with its TTL.");
                }
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(cursor: Option<&str>) -> RequestParams {
        RequestParams {
            cursor: cursor.map(String::from),
            ..RequestParams::default()
        }
    }

    #[tokio::test]
    async fn an_answer_comes_back_until_it_expires_and_names_hide_the_cpf() {
        let cache = AnswerCache::memory();
        let name = cache.name("acme", "bureau", "52998224725", &params(None));
        assert!(!name.contains("52998224725"));
        for other in [
            cache.name("acme", "bureau", "52998224725", &params(Some("p2"))),
            cache.name("acme", "other", "52998224725", &params(None)),
            cache.name("acme", "bureau", "11144477735", &params(None)),
            cache.name("beta", "bureau", "52998224725", &params(None)),
        ] {
            assert_ne!(name, other);
        }
        assert!(cache.get(&name).await.is_none());
        let data = serde_json::json!({"nome": "Maria"});
        cache
            .put("s", &name, &data, Duration::from_millis(300))
            .await;
        let (got, cached) = cache.get(&name).await.expect("a hit");
        assert_eq!(got, data);
        assert!(cached.age_secs < 2, "{cached:?}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(cache.get(&name).await.is_none(), "expired");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.stored), (1, 2, 1));
    }

    #[tokio::test]
    async fn another_processs_entries_do_not_open_and_zero_ttl_keeps_nothing() {
        let (a, b) = (AnswerCache::memory(), AnswerCache::memory());
        let name = a.name("acme", "bureau", "52998224725", &params(None));
        a.put("s", &name, &serde_json::json!(1), Duration::ZERO)
            .await;
        assert!(a.get(&name).await.is_none());
        // B's key differs: an entry copied across would not open.
        a.put("s", &name, &serde_json::json!(1), Duration::from_secs(60))
            .await;
        let sealed = match &a.store {
            Store::Memory(m) => m.lock().unwrap().entries[&name].1.clone(),
            Store::Redis { .. } => unreachable!(),
        };
        assert!(!sealed.contains("1}"));
        if let Store::Memory(m) = &b.store {
            m.lock().unwrap().entries.insert(
                name.clone(),
                (Instant::now() + Duration::from_secs(60), sealed),
            );
        }
        assert!(b.get(&name).await.is_none());
    }

    #[tokio::test]
    async fn forgetting_a_scope_removes_its_answers_only() {
        let cache = AnswerCache::memory();
        let json = serde_json::json!(1);
        let ttl = Duration::from_secs(60);
        cache.put("acme\nperson", "a1", &json, ttl).await;
        cache.put("acme\nperson", "a2", &json, ttl).await;
        cache.put("acme\nother", "b1", &json, ttl).await;
        assert_eq!(cache.forget_scope("acme\nperson").await.unwrap(), 2);
        assert!(cache.get("a1").await.is_none() && cache.get("a2").await.is_none());
        assert!(cache.get("b1").await.is_some());
        assert_eq!(cache.forget_scope("acme\nperson").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn memory_holds_at_most_its_bound() {
        let cache = AnswerCache::memory();
        for i in 0..MAX_MEMORY_ANSWERS + 10 {
            let name = format!("n{i}");
            cache
                .put("s", &name, &serde_json::json!(i), Duration::from_secs(60))
                .await;
        }
        let Store::Memory(m) = &cache.store else {
            unreachable!()
        };
        assert_eq!(m.lock().unwrap().entries.len(), MAX_MEMORY_ANSWERS);
        // The scope's index follows the entries: what was evicted left it.
        assert_eq!(
            m.lock()
                .unwrap()
                .scopes
                .values()
                .map(HashSet::len)
                .sum::<usize>(),
            MAX_MEMORY_ANSWERS
        );
        assert!(cache.get("n0").await.is_none());
        assert!(cache
            .get(&format!("n{}", MAX_MEMORY_ANSWERS + 9))
            .await
            .is_some());
    }

    #[tokio::test]
    async fn churn_keeps_memory_bounded_and_a_name_stored_again_is_not_evicted_for_its_old_self() {
        let cache = AnswerCache::memory();
        // The same few names stored over and over, as repeated people with fresh requests
        // do: the bookkeeping stays near the entries' number.
        for round in 0..(3 * MAX_MEMORY_ANSWERS) {
            let name = format!("n{}", round % 10);
            cache
                .put(
                    "s",
                    &name,
                    &serde_json::json!(round),
                    Duration::from_secs(60),
                )
                .await;
        }
        let Store::Memory(m) = &cache.store else {
            unreachable!()
        };
        {
            let m = m.lock().unwrap();
            assert_eq!(m.entries.len(), 10);
            assert!(
                m.order.len() <= 2 * MAX_MEMORY_ANSWERS + 1,
                "{}",
                m.order.len()
            );
            let bytes: usize = m.entries.values().map(|(_, s)| s.len()).sum();
            assert_eq!(m.bytes, bytes);
        }
        cache
            .put(
                "s",
                "n0",
                &serde_json::json!("fresh"),
                Duration::from_secs(60),
            )
            .await;
        // A refreshed name is the newest: filling up evicts the others first.
        for i in 0..MAX_MEMORY_ANSWERS - 5 {
            cache
                .put(
                    "s",
                    &format!("x{i}"),
                    &serde_json::json!(i),
                    Duration::from_secs(60),
                )
                .await;
        }
        assert!(cache.get("n1").await.is_none(), "older names went first");
        assert!(cache.get("n0").await.is_some(), "the refreshed name stays");
    }
}
