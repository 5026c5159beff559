//! Who may call `integrations serve`: named callers, each with a secret (kept only as its
//! SHA-256) and the hosts its callback URLs may point at. Every route but `/healthz` and
//! `/readyz` needs `Authorization: Bearer <secret>`: the service hands out people's bureau
//! records for a CPF, so it never answers an anonymous request.

use sha2::{Digest, Sha256};

use crate::config::CallerConfig;

/// Compares two byte strings without an early exit, so the time taken does not say how much
/// of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The SHA-256 of a secret: what the configuration keeps instead of the secret.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The caller whose secret `presented` is, comparing against every caller in constant time.
pub fn caller<'a>(callers: &'a [CallerConfig], presented: &str) -> Option<&'a CallerConfig> {
    let hash = secret_hash(presented);
    let mut found = None;
    for c in callers {
        // No early exit: each caller is compared whoever matched.
        if constant_time_eq(&c.secret_hash, &hash) {
            found = Some(c);
        }
    }
    found
}

/// Whether `url`'s host (and port, when the entry names one) is one of `hosts`.
pub fn callback_allowed(hosts: &[String], url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default();
    hosts.iter().any(|allowed| match allowed.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
            h.eq_ignore_ascii_case(host) && p.parse::<u16>().ok() == port
        }
        _ => allowed.eq_ignore_ascii_case(host),
    })
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme is matched
/// without regard to case, as HTTP says (`bearer`, `BEARER`), and spaces around the token
/// are dropped; `None` for another scheme or an empty token.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_start().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any header: no panic, and a token is never empty, never padded, always part of
        /// the header, and only read after a Bearer scheme.
        #[test]
        fn a_token_is_read_only_from_a_bearer_header(header in "\\PC{0,40}|[Bb][Ee][Aa][Rr][Ee][Rr][ \t]{0,3}[ -~]{0,20}") {
            if let Some(token) = bearer(&header) {
                proptest::prop_assert!(!token.is_empty());
                proptest::prop_assert_eq!(token, token.trim());
                proptest::prop_assert!(header.contains(token));
                proptest::prop_assert!(header.trim_start()[..6].eq_ignore_ascii_case("bearer"));
            }
        }
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_nothing_else_is_a_token() {
        for header in ["Bearer tok", "bearer tok", "BEARER  tok ", "Bearer\ttok"] {
            assert_eq!(bearer(header), Some("tok"), "{header:?}");
        }
        for header in [
            "Basic dG9rOg==",
            "Bearer",
            "Bearer   ",
            "Bearertok",
            "",
            "tok",
        ] {
            assert_eq!(bearer(header), None, "{header:?}");
        }
    }

    fn caller_config(name: &str, secret: &str) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            secret_env: "X".into(),
            callback_hosts: vec![],
            secret_hash: secret_hash(secret),
        }
    }

    #[test]
    fn a_secret_finds_its_caller_and_nothing_else_does() {
        let callers = [
            caller_config("a", "secret-of-a-0123456789"),
            caller_config("b", "secret-of-b-0123456789"),
        ];
        assert_eq!(
            caller(&callers, "secret-of-b-0123456789").unwrap().name,
            "b"
        );
        assert!(caller(&callers, "secret-of-c-0123456789").is_none());
        assert!(caller(&callers, "").is_none());
    }

    #[test]
    fn callbacks_go_only_to_the_callers_hosts_and_ports() {
        let hosts = vec!["core-api-1:8080".to_string(), "localhost".to_string()];
        let ok = |u: &str| callback_allowed(&hosts, &reqwest::Url::parse(u).unwrap());
        assert!(ok("http://core-api-1:8080/internal/partner-results"));
        assert!(!ok("http://core-api-1:9999/x"), "another port");
        assert!(ok("http://LOCALHOST:1234/x"), "any port when none is named");
        assert!(!ok("http://evil.example/x"));
        assert!(!ok("http://core-api-1.evil.example:8080/x"));
    }
}
