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
    /// The key is new: the caller starts the analysis with the id it offered.
    New,
    /// The key was used with the same body: this is its analysis.
    Replay(String),
    /// The key was used with another body.
    Mismatch,
}

/// Why a key could not be looked up.
#[derive(Debug, thiserror::Error)]
#[error("idempotency keys: {0}")]
pub struct IdempotencyError(String);

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
    /// `(fingerprint, analysis id, remembered until)` by stored key.
    keys: HashMap<String, (String, String, Instant)>,
    /// Stored keys, oldest first, to forget them in order.
    order: VecDeque<(Instant, String)>,
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
    /// caller would start; or says what the key already holds.
    pub async fn claim(
        &self,
        tenant: &str,
        key: &str,
        fingerprint: &str,
        id: &str,
    ) -> Result<Claim, IdempotencyError> {
        let stored = stored_key(tenant, key);
        let value = format!("{fingerprint}:{id}");
        let held = match &self.store {
            Keys::Local(local) => {
                let mut local = local.lock().expect("idempotency lock");
                local.forget_expired();
                match local.keys.get(&stored) {
                    Some((fp, id, _)) => format!("{fp}:{id}"),
                    None => {
                        local.remember(stored, fingerprint, id);
                        return Ok(Claim::New);
                    }
                }
            }
            Keys::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let name = format!("{prefix}:idem:{stored}");
                // SET NX, or what is there: one script, so a key expiring between the two
                // steps cannot leave us with neither.
                let script = redis::Script::new(
                    r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
                        return false
                      end
                      return redis.call('GET', KEYS[1])",
                );
                let held: Option<String> = script
                    .key(name)
                    .arg(&value)
                    .arg(KEY_TTL.as_secs())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| IdempotencyError(e.to_string()))?;
                match held {
                    None => return Ok(Claim::New),
                    Some(h) => h,
                }
            }
        };
        let (fp, held_id) = held.split_once(':').unwrap_or(("", ""));
        Ok(if fp == fingerprint && !held_id.is_empty() {
            Claim::Replay(held_id.to_string())
        } else {
            Claim::Mismatch
        })
    }

    /// Forgets a key whose analysis could not be started, so a retry starts one.
    pub async fn release(&self, tenant: &str, key: &str) {
        let stored = stored_key(tenant, key);
        match &self.store {
            Keys::Local(local) => {
                local.lock().expect("idempotency lock").keys.remove(&stored);
            }
            Keys::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let name = format!("{prefix}:idem:{stored}");
                if let Err(e) = redis::AsyncCommands::del::<_, ()>(&mut conn, name).await {
                    tracing::warn!(error = %e, "Idempotency key not released; it expires in 24 h.");
                }
            }
        }
    }
}

impl Local {
    fn forget_expired(&mut self) {
        let now = Instant::now();
        while self.order.front().is_some_and(|(until, _)| *until <= now) {
            let (until, key) = self.order.pop_front().expect("a front entry");
            // A key released and claimed again has a later time: only its own entry goes.
            if self.keys.get(&key).is_some_and(|(_, _, u)| *u == until) {
                self.keys.remove(&key);
            }
        }
    }

    fn remember(&mut self, stored: String, fingerprint: &str, id: &str) {
        if self.keys.len() >= MAX_LOCAL_KEYS {
            tracing::warn!(
                kept = MAX_LOCAL_KEYS,
                "Idempotency keys full in memory; the oldest is forgotten before its 24 h."
            );
            while let Some((until, key)) = self.order.pop_front() {
                if self.keys.get(&key).is_some_and(|(_, _, u)| *u == until) {
                    self.keys.remove(&key);
                    break;
                }
            }
        }
        let until = Instant::now() + KEY_TTL;
        self.order.push_back((until, stored.clone()));
        self.keys
            .insert(stored, (fingerprint.to_string(), id.to_string(), until));
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
        assert_eq!(
            keys.claim("acme", "k1", &a, "an_1").await.unwrap(),
            Claim::New
        );
        assert_eq!(
            keys.claim("acme", "k1", &a, "an_2").await.unwrap(),
            Claim::Replay("an_1".into())
        );
        assert_eq!(
            keys.claim("acme", "k1", &b, "an_3").await.unwrap(),
            Claim::Mismatch
        );
        // Another tenant's equal key is another key.
        assert_eq!(
            keys.claim("beta", "k1", &b, "an_4").await.unwrap(),
            Claim::New
        );
        // A released key starts afresh.
        keys.release("acme", "k1").await;
        assert_eq!(
            keys.claim("acme", "k1", &b, "an_5").await.unwrap(),
            Claim::New
        );
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
