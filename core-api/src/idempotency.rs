//! Idempotent starts: `POST /v1/analyses` with an `Idempotency-Key` header answers the same
//! analysis to every request with that key and the same body, for 24 hours, so a lender's
//! back end that retries a request that timed out does not start (and pay the bureaus for) a
//! second analysis.
//!
//! A key belongs to a tenant: two tenants' equal keys never meet. What is kept per key is the
//! analysis id and a fingerprint of the body (a keyed hash: the CPF is never kept in clear), on
//! Redis when it is configured (so every instance answers alike) and in memory otherwise.
//! Claiming a key is one atomic step (`SET NX` on Redis, a lock in memory), so of two
//! requests arriving together with one key exactly one starts an analysis.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How long a key is remembered.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Keys kept at most in memory (the embedded shape); past it the oldest is forgotten early,
/// with a warning. An instance starting this many analyses a day belongs on Redis.
const MAX_LOCAL_KEYS: usize = 100_000;

/// The longest key accepted, as the IETF draft's examples and Stripe's 255.
pub const MAX_KEY_LEN: usize = 255;

/// What a claimed key said.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: the caller starts the analysis with the id it offered, then
    /// [`Idempotency::confirm`]s it (or [`Idempotency::release`]s the key if it could not).
    New,
    /// The key was used with the same body for this analysis; `started` once its first
    /// request confirmed the start (until then the analysis may not exist yet).
    Replay { id: String, started: bool },
    /// The key was used with another body.
    Mismatch,
}

/// Why a key could not be looked up.
#[derive(Debug, thiserror::Error)]
#[error("idempotency keys: {0}")]
pub struct IdempotencyError(String);

/// How long a claimed key waits for its start to be confirmed: a request that died while
/// starting (its process killed) leaves a key that lets a retry start afresh this soon after.
pub const PENDING_TTL: Duration = Duration::from_secs(30);

/// The keys seen, per tenant.
#[derive(Clone)]
pub struct Idempotency {
    store: Keys,
}

#[derive(Clone)]
enum Keys {
    Local(Arc<Mutex<Local>>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

#[derive(Default)]
struct Local {
    /// The held value (`{fingerprint}:{id}:{p|s}`) and until when, by stored key.
    keys: HashMap<String, (String, Instant)>,
    /// Stored keys with the time they were set to end, oldest first, one queue per TTL
    /// (pending, confirmed) so each stays in time order; an entry whose key was set again
    /// since is skipped when it comes up.
    order: [VecDeque<(Instant, String)>; 2],
}

/// Checks a header value: 1 to 255 visible ASCII characters.
pub fn parse_key(raw: &[u8]) -> Result<&str, String> {
    if raw.is_empty() || raw.len() > MAX_KEY_LEN {
        return Err(format!("must be 1 to {MAX_KEY_LEN} characters"));
    }
    if !raw.iter().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters, no spaces".into());
    }
    Ok(std::str::from_utf8(raw).expect("ASCII"))
}

/// The fingerprint of a start request's body: a keyed hash of its parts as sent (the CPF's
/// digits, so `529.982.247-25` and `52998224725` are one body), never the CPF itself.
pub fn fingerprint(secret: &[u8], parts: &[Option<&str>]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(b"idempotency v1");
    for part in parts {
        // Length-prefixed, so no two lists of parts hash alike.
        match part {
            Some(p) => {
                mac.update(&(p.len() as u64 + 1).to_be_bytes());
                mac.update(p.as_bytes());
            }
            None => mac.update(&0u64.to_be_bytes()),
        }
    }
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a tenant's key is kept: hashed, so no client-chosen text becomes a Redis key.
fn stored_key(tenant: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    hex(&h.finalize())
}

/// KEYS key; ARGV pending value, pending ttl_s. Nil when claimed, else what the key holds.
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
";

/// KEYS key; ARGV expected value, new value (empty: delete), ttl_s. 1 when the key held the
/// expected value (and now holds the new one, or nothing), else 0.
const SWAP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
";

impl Idempotency {
    pub fn memory() -> Self {
        Idempotency {
            store: Keys::Local(Arc::default()),
        }
    }

    pub fn redis(conn: redis::aio::ConnectionManager, prefix: &str) -> Self {
        Idempotency {
            store: Keys::Redis {
                conn,
                prefix: prefix.to_string(),
            },
        }
    }

    /// Claims `key` for `tenant` with the body's `fingerprint` and the analysis `id` the
    /// caller would start (pending for [`PENDING_TTL`]); or says what the key holds.
    pub async fn claim(
        &self,
        tenant: &str,
        key: &str,
        fingerprint: &str,
        id: &str,
    ) -> Result<Claim, IdempotencyError> {
        let stored = stored_key(tenant, key);
        let pending = format!("{fingerprint}:{id}:p");
        let held = match &self.store {
            Keys::Local(local) => {
                let mut local = local.lock().expect("idempotency lock");
                local.forget_expired();
                match local.keys.get(&stored) {
                    Some((held, _)) => held.clone(),
                    None => {
                        local.set(stored, pending, PENDING_TTL);
                        return Ok(Claim::New);
                    }
                }
            }
            Keys::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let held: Option<String> = redis::Script::new(CLAIM)
                    .key(format!("{prefix}:idem:{stored}"))
                    .arg(&pending)
                    .arg(PENDING_TTL.as_secs())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| IdempotencyError(e.to_string()))?;
                match held {
                    None => return Ok(Claim::New),
                    Some(h) => h,
                }
            }
        };
        let mut parts = held.splitn(3, ':');
        let (fp, held_id, state) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        Ok(if fp == fingerprint && !held_id.is_empty() {
            Claim::Replay {
                id: held_id.to_string(),
                started: state == "s",
            }
        } else {
            Claim::Mismatch
        })
    }

    /// The analysis `id` the key was claimed for has started: the key now answers it for
    /// [`KEY_TTL`].
    pub async fn confirm(
        &self,
        tenant: &str,
        key: &str,
        fingerprint: &str,
        id: &str,
    ) -> Result<(), IdempotencyError> {
        let new = format!("{fingerprint}:{id}:s");
        self.swap(tenant, key, &format!("{fingerprint}:{id}:p"), Some(&new))
            .await
            .map(|_| ())
    }

    /// Forgets the key if it still holds analysis `id`: a start that failed, or an analysis
    /// no longer kept, so a retry starts afresh. Someone else's later claim is left alone.
    pub async fn release(&self, tenant: &str, key: &str, fingerprint: &str, id: &str) {
        for state in ["p", "s"] {
            let held = format!("{fingerprint}:{id}:{state}");
            match self.swap(tenant, key, &held, None).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Idempotency key not released; it expires on its own.");
                    return;
                }
            }
        }
    }

    /// Replaces the key's value if it is `expected` (`None` deletes it); whether it was.
    async fn swap(
        &self,
        tenant: &str,
        key: &str,
        expected: &str,
        new: Option<&str>,
    ) -> Result<bool, IdempotencyError> {
        let stored = stored_key(tenant, key);
        match &self.store {
            Keys::Local(local) => {
                let mut local = local.lock().expect("idempotency lock");
                if local.keys.get(&stored).map(|(held, _)| held.as_str()) != Some(expected) {
                    return Ok(false);
                }
                match new {
                    Some(value) => local.set(stored, value.to_string(), KEY_TTL),
                    None => {
                        local.keys.remove(&stored);
                    }
                }
                Ok(true)
            }
            Keys::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let swapped: i64 = redis::Script::new(SWAP)
                    .key(format!("{prefix}:idem:{stored}"))
                    .arg(expected)
                    .arg(new.unwrap_or(""))
                    .arg(KEY_TTL.as_secs())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| IdempotencyError(e.to_string()))?;
                Ok(swapped == 1)
            }
        }
    }
}

impl Local {
    fn forget_expired(&mut self) {
        let now = Instant::now();
        for order in &mut self.order {
            while order.front().is_some_and(|(until, _)| *until <= now) {
                let (until, key) = order.pop_front().expect("a front entry");
                // A key set again since has another time: only its own entry goes.
                if self.keys.get(&key).is_some_and(|(_, u)| *u == until) {
                    self.keys.remove(&key);
                }
            }
        }
    }

    /// Sets `stored` to `value` for `ttl` ([`PENDING_TTL`] or [`KEY_TTL`]).
    fn set(&mut self, stored: String, value: String, ttl: Duration) {
        let queue = usize::from(ttl != PENDING_TTL);
        if self.keys.len() >= MAX_LOCAL_KEYS && !self.keys.contains_key(&stored) {
            tracing::warn!(
                kept = MAX_LOCAL_KEYS,
                "Idempotency keys full in memory; the oldest is forgotten before its 24 h."
            );
            for order in &mut self.order {
                let mut forgot = false;
                while let Some((until, key)) = order.pop_front() {
                    if self.keys.get(&key).is_some_and(|(_, u)| *u == until) {
                        self.keys.remove(&key);
                        forgot = true;
                        break;
                    }
                }
                if forgot {
                    break;
                }
            }
        }
        let until = Instant::now() + ttl;
        self.order[queue].push_back((until, stored.clone()));
        self.keys.insert(stored, (value, until));
        // Entries of keys set again since wait for their time; should they pile up (keys
        // released and claimed over and over), they go, keeping the queues bounded.
        if self.order[1].len() > 2 * MAX_LOCAL_KEYS {
            let keys = &self.keys;
            self.order[1].retain(|(u, k)| keys.get(k).is_some_and(|(_, until)| until == u));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_answers_its_analysis_to_the_same_body_and_refuses_another() {
        let keys = Idempotency::memory();
        let a = fingerprint(b"k", &[Some("52998224725"), None, None]);
        let b = fingerprint(b"k", &[Some("52998224725"), Some("2026-01-01"), None]);
        assert_ne!(a, b);
        let claim = |tenant: &'static str, fp: &str, id: &'static str| {
            let (keys, fp) = (keys.clone(), fp.to_string());
            async move { keys.claim(tenant, "k1", &fp, id).await.unwrap() }
        };
        let replay = |started| Claim::Replay {
            id: "an_1".into(),
            started,
        };
        assert_eq!(claim("acme", &a, "an_1").await, Claim::New);
        // Until the start is confirmed, a replay knows the analysis may not exist yet.
        assert_eq!(claim("acme", &a, "an_2").await, replay(false));
        keys.confirm("acme", "k1", &a, "an_1").await.unwrap();
        assert_eq!(claim("acme", &a, "an_2").await, replay(true));
        assert_eq!(claim("acme", &b, "an_3").await, Claim::Mismatch);
        // Another tenant's equal key is another key.
        assert_eq!(claim("beta", &b, "an_4").await, Claim::New);
        // Releasing for another analysis leaves the key; for its own, it starts afresh.
        keys.release("acme", "k1", &a, "an_9").await;
        assert_eq!(claim("acme", &a, "an_2").await, replay(true));
        keys.release("acme", "k1", &a, "an_1").await;
        assert_eq!(claim("acme", &b, "an_5").await, Claim::New);
    }

    #[test]
    fn parts_are_length_prefixed_so_shifted_parts_differ() {
        let one = fingerprint(b"k", &[Some("ab"), Some("c")]);
        let two = fingerprint(b"k", &[Some("a"), Some("bc")]);
        let three = fingerprint(b"k", &[Some("abc"), None]);
        assert_ne!(one, two);
        assert_ne!(one, three);
        assert!(!one.contains("ab"));
    }

    #[test]
    fn keys_are_visible_ascii_of_at_most_255() {
        assert_eq!(parse_key(b"order-42/retry"), Ok("order-42/retry"));
        for bad in [
            &b""[..],
            b"has space",
            b"tab\there",
            &[b'a'; 256],
            "é".as_bytes(),
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
        assert!(parse_key(&[b'a'; 255]).is_ok());
    }
}
