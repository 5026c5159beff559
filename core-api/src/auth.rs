//! API keys, tenants, scopes, per-key rate limits and the signed tokens of `events_url`.
//!
//! Keys are kept only as SHA-256 hashes. A key belongs to a tenant and carries scopes; an
//! analysis belongs to the tenant that started it, and any other tenant is told it does not
//! exist. A browser's EventSource cannot send headers, so the `events_url` of an analysis
//! carries a short-lived token, an HMAC of the analysis, the tenant and an expiry, that opens
//! that one stream and nothing else.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::config::ApiKeyConfig;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Start analyses.
    AnalysesWrite,
    /// Read analyses, their events and transactions.
    AnalysesRead,
    /// Classify transactions directly.
    Classify,
    /// Erase analyses (`DELETE /v1/analyses/{id}`).
    AnalysesErase,
    /// Read the tenant's access audit trail.
    AuditRead,
    /// Manage the tenant's webhook endpoints and resend deliveries.
    Webhooks,
}

impl Scope {
    /// Every scope: what a key configured without a list gets.
    pub const ALL: [Scope; 6] = [
        Scope::AnalysesWrite,
        Scope::AnalysesRead,
        Scope::Classify,
        Scope::AnalysesErase,
        Scope::AuditRead,
        Scope::Webhooks,
    ];
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "analyses:write" => Some(Scope::AnalysesWrite),
            "analyses:read" => Some(Scope::AnalysesRead),
            "classify" => Some(Scope::Classify),
            "analyses:erase" => Some(Scope::AnalysesErase),
            "audit:read" => Some(Scope::AuditRead),
            "webhooks" => Some(Scope::Webhooks),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AnalysesWrite => "analyses:write",
            Scope::AnalysesRead => "analyses:read",
            Scope::Classify => "classify",
            Scope::AnalysesErase => "analyses:erase",
            Scope::AuditRead => "audit:read",
            Scope::Webhooks => "webhooks",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    /// Identifies the key (a prefix of its hash) for rate limits and logs; not the key.
    pub key_id: String,
    pub scopes: Vec<Scope>,
}

/// Why a request was not authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No key, or not one we know (401).
    Unauthenticated,
    /// A known key without the scope (403).
    Forbidden(Scope),
    /// Over the key's rate (429) for this long.
    RateLimited(Duration),
}

struct KeyEntry {
    tenant: String,
    scopes: Vec<Scope>,
}

/// The configured keys and the token signer.
pub struct Auth {
    keys: HashMap<[u8; 32], KeyEntry>,
    signing_key: [u8; 32],
    limiter: DefaultKeyedRateLimiter<String>,
}

/// How long an `events_url` token opens its stream.
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// Compares two secrets without an early exit (the integrations crate's, shared by both
/// services).
pub use integrations::auth::constant_time_eq;

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Auth {
    /// Builds from the configured keys; unknown scopes are a configuration error.
    /// `signing_key`: the key of `events_url` tokens; instances behind one load balancer must
    /// share it (`EVENTS_TOKEN_KEY`). Random when none is given.
    pub fn new(
        keys: &[ApiKeyConfig],
        rate_per_key: u32,
        signing_key: Option<&crate::config::Secret>,
    ) -> Result<Arc<Self>, String> {
        let mut map = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let scopes = match &k.scopes {
                None => Scope::ALL.to_vec(),
                Some(list) => list
                    .iter()
                    .map(|s| {
                        Scope::parse(s)
                            .ok_or_else(|| format!("api_keys[{i}].scopes: unknown scope `{s}`"))
                    })
                    .collect::<Result<_, _>>()?,
            };
            map.insert(
                hash(&k.key),
                KeyEntry {
                    tenant: k.tenant.clone(),
                    scopes,
                },
            );
        }
        let signing_key: [u8; 32] = match signing_key {
            Some(k) => Sha256::digest(k.expose().as_bytes()).into(),
            None => {
                let mut k = [0u8; 32];
                rand::rng().fill(&mut k);
                k
            }
        };
        let rate = NonZeroU32::new(rate_per_key).unwrap_or(NonZeroU32::MIN);
        Ok(Arc::new(Auth {
            keys: map,
            signing_key,
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
        }))
    }

    /// A random development key.
    pub fn generate_key() -> String {
        let mut bytes = [0u8; 24];
        rand::rng().fill(&mut bytes);
        format!("dev_{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Checks the key of a request and its scope, and counts it against the key's rate.
    pub fn authorize(&self, key: Option<&str>, scope: Scope) -> Result<Caller, Denied> {
        let key = key.ok_or(Denied::Unauthenticated)?;
        let digest = hash(key);
        let entry = self.keys.get(&digest).ok_or(Denied::Unauthenticated)?;
        let key_id: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        if let Err(not_until) = self.limiter.check_key(&key_id) {
            use governor::clock::{Clock, DefaultClock};
            return Err(Denied::RateLimited(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        if !entry.scopes.contains(&scope) {
            return Err(Denied::Forbidden(scope));
        }
        Ok(Caller {
            tenant: entry.tenant.clone(),
            key_id,
            scopes: entry.scopes.clone(),
        })
    }

    fn mac(&self, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.signing_key).expect("any key length");
        mac.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A token that opens `analysis`'s event stream for `tenant` until `TOKEN_TTL` from now.
    pub fn events_token(&self, analysis: &str, tenant: &str) -> String {
        let expires = chrono::Utc::now().timestamp() + TOKEN_TTL.as_secs() as i64;
        let payload = format!("{analysis}.{expires}");
        let sig = self.mac(&format!("{payload}.{tenant}"));
        format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(format!("{payload}.{tenant}"))
        )
    }

    /// The tenant a token was issued to, if it is genuine, unexpired and for `analysis`.
    pub fn check_events_token(&self, token: &str, analysis: &str) -> Option<String> {
        let (body, sig) = token.split_once('.')?;
        let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let expected = self.mac(&decoded);
        if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
            return None;
        }
        let mut parts = decoded.splitn(3, '.');
        let (id, expires, tenant) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: i64 = expires.parse().ok()?;
        (id == analysis && expires >= chrono::Utc::now().timestamp()).then(|| tenant.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Arc<Auth> {
        Auth::new(
            &[
                ApiKeyConfig {
                    tenant: "acme".into(),
                    key: "acme-key-0123456789".into(),
                    scopes: None,
                },
                ApiKeyConfig {
                    tenant: "beta".into(),
                    key: "beta-key-0123456789".into(),
                    scopes: Some(vec!["analyses:read".into()]),
                },
            ],
            1000,
            None,
        )
        .unwrap()
    }

    #[test]
    fn keys_map_to_tenants_and_scopes() {
        let a = auth();
        assert_eq!(
            a.authorize(Some("acme-key-0123456789"), Scope::Classify)
                .unwrap()
                .tenant,
            "acme"
        );
        assert_eq!(
            a.authorize(Some("nope"), Scope::Classify),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.authorize(None, Scope::Classify),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.authorize(Some("beta-key-0123456789"), Scope::AnalysesWrite),
            Err(Denied::Forbidden(Scope::AnalysesWrite))
        );
    }

    proptest::proptest! {
        /// A token changed anywhere (a byte replaced, cut short, lengthened) or made up opens
        /// nothing, and no text makes the check panic; API keys likewise.
        #[test]
        fn a_changed_or_made_up_token_opens_nothing(
            at in 0usize..200,
            byte in 0x20u8..0x7f,
            cut: bool,
            made_up in "\\PC{0,80}|[A-Za-z0-9_-]{1,60}\\.[A-Za-z0-9_-]{43}",
        ) {
            let a = auth();
            let token = a.events_token("an_1", "acme");
            let mut changed = token.clone().into_bytes();
            let at = at % changed.len();
            if cut {
                changed.truncate(at);
            } else if changed[at] == byte {
                changed.insert(at, byte);
            } else {
                changed[at] = byte;
            }
            let changed = String::from_utf8(changed).unwrap();
            proptest::prop_assert_eq!(a.check_events_token(&changed, "an_1"), None, "{}", changed);
            proptest::prop_assert_eq!(a.check_events_token(&made_up, "an_1"), None);
            proptest::prop_assert_eq!(
                a.authorize(Some(&made_up), Scope::AnalysesRead),
                Err(Denied::Unauthenticated)
            );
        }
    }

    #[test]
    fn an_events_token_opens_only_its_analysis() {
        let a = auth();
        let t = a.events_token("an_1", "acme");
        assert_eq!(a.check_events_token(&t, "an_1").as_deref(), Some("acme"));
        assert_eq!(a.check_events_token(&t, "an_2"), None);
        let mut forged = t.clone();
        forged.push('x');
        assert_eq!(a.check_events_token(&forged, "an_1"), None);
        assert_eq!(
            auth().check_events_token(&t, "an_1"),
            None,
            "another instance's key does not verify"
        );
    }

    #[test]
    fn a_key_over_its_rate_is_told_when_to_come_back() {
        let a = Auth::new(
            &[ApiKeyConfig {
                tenant: "t".into(),
                key: "k-0123456789abcdef".into(),
                scopes: None,
            }],
            2,
            None,
        )
        .unwrap();
        assert!(a
            .authorize(Some("k-0123456789abcdef"), Scope::Classify)
            .is_ok());
        assert!(a
            .authorize(Some("k-0123456789abcdef"), Scope::Classify)
            .is_ok());
        assert!(matches!(
            a.authorize(Some("k-0123456789abcdef"), Scope::Classify),
            Err(Denied::RateLimited(_))
        ));
    }
}
