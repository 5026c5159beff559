//! Partner configuration: a TOML file, then environment overrides, validated at start.
//!
//! ```toml
//! [[partners]]
//! name = "bureau-a"            # unique; used in metrics, logs and queue keys
//! kind = "consumer"            # consumer | rating | movements
//! base_url = "https://bureau-a.example"
//! token_env = "BUREAU_A_TOKEN" # the environment variable holding the bearer token
//! max_concurrency = 4          # requests at once, across every instance
//! rate_per_sec = 20            # requests per second, per instance
//! timeout_ms = 2000
//! breaker = { failure_threshold = 5, open_ms = 5000 }
//! retry = { max_attempts = 6, base_ms = 500, cap_ms = 60000 }
//! ```
//!
//! `REDIS_URL` selects Redis for the semaphore and the retry queue; without it both run in
//! process. `PARTNER_<NAME>_BASE_URL`, `_MAX_CONCURRENCY`, `_RATE_PER_SEC` and `_TIMEOUT_MS`
//! (name upper-cased, `-` as `_`) override a partner's fields. A bad value stops the start with
//! a message naming the key.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::contract::Kind;
use crate::error::IntegrationError;

/// A secret read from the environment; printing it shows `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A service allowed to call `integrations serve` (the core API, usually).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Names the caller in logs.
    pub name: String,
    /// The environment variable holding the caller's secret (at least 16 characters); the
    /// file never holds the secret itself.
    pub secret_env: String,
    /// Hosts (`host`, or `host:port` for one port only) the caller's callback URLs may point
    /// at: outcomes, which carry personal data, go nowhere else.
    pub callback_hosts: Vec<String>,
    /// SHA-256 of the secret, read from `secret_env` at start; the secret is not kept.
    #[serde(skip)]
    pub secret_hash: [u8; 32],
}

/// When a partner's circuit opens and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures (5xx, timeouts, connection errors) that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe is let through, in milliseconds.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_ms: 5_000,
        }
    }
}

/// How a failed or deferred request is retried.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; after the last the request is dead-lettered.
    pub max_attempts: u32,
    /// The first backoff, in milliseconds; it doubles per attempt, with full jitter.
    pub base_ms: u64,
    /// The largest backoff, in milliseconds.
    pub cap_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            base_ms: 500,
            cap_ms: 60_000,
        }
    }
}

/// One partner bureau.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// Unique name; appears in metrics, logs and Redis keys.
    pub name: String,
    /// Which data the partner serves.
    pub kind: Kind,
    /// Where the contract's paths are rooted, e.g. `https://bureau.example`.
    pub base_url: String,
    /// The environment variable that holds the partner's bearer token; none sends no token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Requests at once the partner accepts, counting every instance of the service.
    pub max_concurrency: u32,
    /// Requests per second this instance sends at most.
    pub rate_per_sec: u32,
    /// How long one request may take, in milliseconds.
    pub timeout_ms: u64,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// How long the partner's answer about a person is kept, in seconds, so the next analysis
    /// of the same person within that time does not call the partner (a request can ask for a
    /// fresh answer). 0 keeps nothing. Default: a day for `consumer` and `rating` partners;
    /// off for `movements`, whose history changes every day and is asked page by page.
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
    /// The token, read from `token_env` at load time.
    #[serde(skip)]
    pub token: Option<Secret>,
}

/// The whole integrations configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Redis for the semaphore and retry queue; in process when absent. `REDIS_URL` overrides.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several deployments (or tests) can share one Redis.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Prefix of the retry queue's keys when it must differ from `key_prefix`. A process that
    /// takes outcomes in process (the core API's embedded integrations) keeps a queue of its
    /// own, since only it can deliver to its waiting callers; the semaphore stays shared.
    #[serde(skip)]
    pub queue_prefix: Option<String>,
    /// How long a semaphore permit or a queue lease lives without being refreshed, in
    /// milliseconds: the time after which a crashed process's permits and jobs come back.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Jobs the retry queue holds at most; beyond it requests fail with a clear error.
    #[serde(default = "default_max_queue")]
    pub max_queue: u64,
    /// `integrations serve`: how long a connection may take to send a request head, and may
    /// sit idle between requests, in milliseconds; then it is closed.
    #[serde(default = "default_header_read_ms")]
    pub header_read_ms: u64,
    /// `integrations serve`: connections served at once; a connection over it is answered
    /// 503 (`Retry-After: 1`) and closed. Lowered at start, if need be, to leave a tenth of
    /// the process's file limit (raised to its hard limit first) for everything else.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Deliveries of an outcome to its callback URL before the job goes to the dead letters
    /// (where it can be read and replayed): a callback that never answers 2xx does not keep
    /// its job in the queue for ever.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
    /// How long a queued partner request may wait for an answer, in seconds, counted from
    /// when it was first queued (or replayed). The next worker to take it after that ends it
    /// as failed (`expired: ...`), tells its caller (callback or in-process waiter) and leaves
    /// it in the dead letters; a Redis queue also drops, CPF and all, whatever is still there
    /// an hour later (a job no worker took). By then the analysis that asked for it has long
    /// given up.
    #[serde(default = "default_job_ttl_secs")]
    pub job_ttl_secs: u64,
    /// How long a dead letter is kept for an operator to read or replay, in seconds; then it
    /// is dropped. Every Redis key of the queue also expires this long after its last write,
    /// so a queue nobody serves any more disappears on its own.
    #[serde(default = "default_dead_letter_ttl_secs")]
    pub dead_letter_ttl_secs: u64,
    /// The secret the Redis queue seals jobs with (at least 32 characters), from the
    /// environment variable `QUEUE_KEY`; needed when the queue is on Redis. Every instance
    /// sharing a queue needs the same one, and a job sealed under another key is dropped.
    #[serde(skip)]
    pub queue_key: Option<Secret>,
    /// A token that opens `GET /metrics` and nothing else (`METRICS_TOKEN`), for a
    /// Prometheus server; callers' secrets open it too.
    #[serde(skip)]
    pub metrics_token: Option<Secret>,
    /// Who may call `integrations serve` (which refuses to start without one).
    #[serde(default)]
    pub callers: Vec<CallerConfig>,
    pub partners: Vec<PartnerConfig>,
}

fn default_prefix() -> String {
    "credit".into()
}
fn default_lease_ms() -> u64 {
    10_000
}
fn default_max_queue() -> u64 {
    100_000
}
fn default_header_read_ms() -> u64 {
    10_000
}
fn default_max_deliveries() -> u32 {
    // With the delivery backoff (0.5 s doubling to 30 s), about three minutes of trying.
    10
}
fn default_job_ttl_secs() -> u64 {
    24 * 3600
}
fn default_dead_letter_ttl_secs() -> u64 {
    7 * 24 * 3600
}
fn default_max_connections() -> usize {
    // Its callers are a few core API instances: far fewer connections than file descriptors.
    1_000
}

/// The longest a partner's answers may be cached: a bureau record older than a month is not
/// what a lender asks for, and a bound keeps every expiry computable.
pub const MAX_CACHE_TTL_SECS: u64 = 30 * 24 * 3600;

impl PartnerConfig {
    /// How long this partner's answers are cached: `cache_ttl_secs`, or its kind's default.
    pub fn cache_ttl(&self) -> std::time::Duration {
        let default = match self.kind {
            Kind::Consumer | Kind::Rating => 24 * 3600,
            Kind::Movements => 0,
        };
        std::time::Duration::from_secs(self.cache_ttl_secs.unwrap_or(default))
    }
}

impl Config {
    /// Reads a TOML file, applies the environment, validates.
    pub fn load(path: &Path) -> Result<Self, IntegrationError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| IntegrationError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text, |k| std::env::var(k).ok())
    }

    /// Parses TOML text with `env` as the environment (tests pass a map).
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, IntegrationError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| IntegrationError::Config(e.message().to_string() + &span_of(&e)))?;
        config.apply_env(&env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), IntegrationError> {
        if let Some(url) = env("REDIS_URL").filter(|u| !u.is_empty()) {
            self.redis_url = Some(url);
        }
        if let Some(prefix) = env("KEY_PREFIX").filter(|p| !p.is_empty()) {
            self.key_prefix = prefix;
        }
        if let Some(key) = env("QUEUE_KEY").filter(|k| !k.is_empty()) {
            let key = Secret::new(key);
            crate::queue::JobSeal::from_secret(&key)
                .map_err(|why| IntegrationError::Config(format!("QUEUE_KEY: {why}")))?;
            self.queue_key = Some(key);
        }
        if let Some(token) = env("METRICS_TOKEN").filter(|t| !t.is_empty()) {
            if token.chars().count() < 16 {
                return Err(IntegrationError::Config(
                    "METRICS_TOKEN: must hold a secret of at least 16 characters".into(),
                ));
            }
            self.metrics_token = Some(Secret::new(token));
        }
        for (i, c) in self.callers.iter_mut().enumerate() {
            let secret = env(&c.secret_env).unwrap_or_default();
            if secret.chars().count() < 16 {
                return Err(IntegrationError::Config(format!(
                    "callers[{i}].secret_env: `{}` must hold a secret of at least 16 characters",
                    c.secret_env
                )));
            }
            c.secret_hash = crate::auth::secret_hash(&secret);
        }
        for p in &mut self.partners {
            let key = |field: &str| {
                format!(
                    "PARTNER_{}_{field}",
                    p.name.to_uppercase().replace('-', "_")
                )
            };
            if let Some(v) = env(&key("BASE_URL")) {
                p.base_url = v;
            }
            let number = |field: &str| -> Result<Option<u64>, IntegrationError> {
                let k = key(field);
                env(&k)
                    .map(|v| {
                        v.trim().parse::<u64>().map_err(|_| {
                            IntegrationError::Config(format!("{k}: `{v}` is not a whole number"))
                        })
                    })
                    .transpose()
            };
            if let Some(v) = number("MAX_CONCURRENCY")? {
                p.max_concurrency = u32::try_from(v).unwrap_or(u32::MAX);
            }
            if let Some(v) = number("RATE_PER_SEC")? {
                p.rate_per_sec = u32::try_from(v).unwrap_or(u32::MAX);
            }
            if let Some(v) = number("TIMEOUT_MS")? {
                p.timeout_ms = v;
            }
            if let Some(var) = &p.token_env {
                p.token = env(var).filter(|t| !t.is_empty()).map(Secret::new);
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), IntegrationError> {
        let err = |key: String, why: &str| Err(IntegrationError::Config(format!("{key}: {why}")));
        if self.partners.is_empty() {
            return err(
                "partners".into(),
                "at least one [[partners]] table is needed",
            );
        }
        if self.lease_ms < 100 {
            return err("lease_ms".into(), "must be at least 100");
        }
        if self.job_ttl_secs == 0 {
            return err("job_ttl_secs".into(), "must be at least 1");
        }
        if self.dead_letter_ttl_secs == 0 {
            return err("dead_letter_ttl_secs".into(), "must be at least 1");
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return err("key_prefix".into(), "must be a non-empty word");
        }
        let mut callers = HashSet::new();
        for (i, c) in self.callers.iter().enumerate() {
            // The name starts its jobs' ids (`{name}/...`): a `/` in it would reach into
            // another caller's.
            let word = |ch: char| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_';
            if c.name.is_empty() || !c.name.chars().all(word) {
                return err(
                    format!("callers[{i}].name"),
                    "must be letters, digits, `-` or `_`",
                );
            }
            if !callers.insert(c.name.clone()) {
                return err(format!("callers[{i}].name"), "must be a name used once");
            }
            if c.callback_hosts.iter().all(|h| h.trim().is_empty()) {
                return err(
                    format!("callers[{i}].callback_hosts"),
                    "must name at least one host its callbacks may go to",
                );
            }
            for (j, host) in c.callback_hosts.iter().enumerate() {
                if !is_host_and_port(host) {
                    return err(
                        format!("callers[{i}].callback_hosts[{j}]"),
                        &format!("`{host}` is not a host or host:port (no scheme, path or user)"),
                    );
                }
            }
        }
        let mut names = HashSet::new();
        for (i, p) in self.partners.iter().enumerate() {
            let at = |field: &str| format!("partners[{i}].{field}");
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return err(at("name"), "must be letters, digits, `-` or `_`");
            }
            if !names.insert(p.name.clone()) {
                return err(at("name"), &format!("`{}` is used twice", p.name));
            }
            match reqwest::Url::parse(&p.base_url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => return err(at("base_url"), "must be an http or https URL"),
            }
            if p.cache_ttl_secs.is_some_and(|t| t > MAX_CACHE_TTL_SECS) {
                return err(
                    at("cache_ttl_secs"),
                    &format!("must be at most {MAX_CACHE_TTL_SECS} (30 days)"),
                );
            }
            if p.max_concurrency == 0 {
                return err(at("max_concurrency"), "must be at least 1");
            }
            if p.rate_per_sec == 0 {
                return err(at("rate_per_sec"), "must be at least 1");
            }
            if p.timeout_ms == 0 {
                return err(at("timeout_ms"), "must be at least 1");
            }
            if p.breaker.failure_threshold == 0 {
                return err(at("breaker.failure_threshold"), "must be at least 1");
            }
            if p.retry.max_attempts == 0 {
                return err(at("retry.max_attempts"), "must be at least 1");
            }
            if p.retry.base_ms == 0 || p.retry.cap_ms < p.retry.base_ms {
                return err(
                    at("retry"),
                    "base_ms must be at least 1 and cap_ms at least base_ms",
                );
            }
        }
        Ok(())
    }

    /// The configuration of the embedded shape: one partner of each kind, all served by the
    /// bundled simulator at `simulator_url`.
    pub fn embedded(simulator_url: &str) -> Self {
        let partner = |name: &str, kind| PartnerConfig {
            name: name.into(),
            kind,
            base_url: simulator_url.into(),
            token_env: None,
            max_concurrency: 8,
            rate_per_sec: 200,
            timeout_ms: 5_000,
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            cache_ttl_secs: None,
            token: None,
        };
        Config {
            redis_url: None,
            key_prefix: default_prefix(),
            queue_prefix: None,
            lease_ms: default_lease_ms(),
            max_queue: default_max_queue(),
            header_read_ms: default_header_read_ms(),
            max_connections: default_max_connections(),
            max_deliveries: default_max_deliveries(),
            job_ttl_secs: default_job_ttl_secs(),
            dead_letter_ttl_secs: default_dead_letter_ttl_secs(),
            queue_key: None,
            metrics_token: None,
            callers: Vec::new(),
            partners: vec![
                partner("consumer-sim", Kind::Consumer),
                partner("rating-sim", Kind::Rating),
                partner("movements-sim", Kind::Movements),
            ],
        }
    }

    pub fn partner(&self, name: &str) -> Option<&PartnerConfig> {
        self.partners.iter().find(|p| p.name == name)
    }
}

/// Whether `entry` is `host` or `host:port` and nothing more: a scheme, a path, a user or a
/// stray character would make it match nothing (or not what was meant).
fn is_host_and_port(entry: &str) -> bool {
    if entry.is_empty() || entry.contains(['/', '@', '?', '#', ' ', '\\']) {
        return false;
    }
    // Split as `auth::callback_allowed` splits it, and require the URL parser to read the
    // same host back: `127.1`, `host:` or a name it would rewrite could never match.
    let host = match entry.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') && p.parse::<u16>().is_ok() => h,
        Some((h, _)) if !h.contains(':') => return false,
        _ => entry,
    };
    match reqwest::Url::parse(&format!("http://{entry}/")) {
        Ok(url) => {
            url.path() == "/" && url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host))
        }
        Err(_) => false,
    }
}

fn span_of(e: &toml::de::Error) -> String {
    e.span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const GOOD: &str = r#"
        [[partners]]
        name = "bureau-a"
        kind = "consumer"
        base_url = "http://127.0.0.1:9000"
        token_env = "BUREAU_A_TOKEN"
        max_concurrency = 4
        rate_per_sec = 20
        timeout_ms = 2000
    "#;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_good_file_loads_with_defaults_and_the_token_from_the_environment() {
        let c = Config::from_toml(GOOD, env(&[("BUREAU_A_TOKEN", "s3cret")])).unwrap();
        let p = &c.partners[0];
        assert_eq!(p.breaker, BreakerConfig::default());
        assert_eq!(p.retry.max_attempts, 6);
        assert_eq!(p.token.as_ref().unwrap().expose(), "s3cret");
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "a token must never be printed"
        );
        assert_eq!(c.redis_url, None);
    }

    #[test]
    fn the_example_and_deploy_files_load_with_their_callers_secret() {
        let secret = ("INTEGRATIONS_SECRET", "example-secret-0123456789");
        let text = include_str!("../integrations.example.toml");
        let c = Config::from_toml(text, env(&[secret])).unwrap();
        assert_eq!(c.partners.len(), 3);
        assert_eq!(c.partners[2].kind, Kind::Movements);
        assert_eq!(c.callers[0].secret_hash, crate::auth::secret_hash(secret.1));
        let deploy = include_str!("../../deploy/partners.toml");
        assert_eq!(
            Config::from_toml(deploy, env(&[secret]))
                .unwrap()
                .callers
                .len(),
            1
        );
        // Without the caller's secret in the environment the start stops, naming the key.
        let e = Config::from_toml(text, env(&[])).unwrap_err().to_string();
        assert!(e.contains("callers[0].secret_env"), "{e}");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let c = Config::from_toml(
            GOOD,
            env(&[
                ("REDIS_URL", "redis://127.0.0.1:6379/3"),
                ("PARTNER_BUREAU_A_MAX_CONCURRENCY", "9"),
                ("PARTNER_BUREAU_A_BASE_URL", "http://10.0.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379/3"));
        assert_eq!(c.partners[0].max_concurrency, 9);
        assert_eq!(c.partners[0].base_url, "http://10.0.0.1");
    }

    #[test]
    fn bad_configuration_names_the_key() {
        let bad = |text: &str, envs: &[(&str, &str)]| {
            Config::from_toml(text, env(envs)).unwrap_err().to_string()
        };
        assert!(bad(
            &GOOD.replace("max_concurrency = 4", "max_concurrency = 0"),
            &[]
        )
        .contains("partners[0].max_concurrency"));
        assert!(bad(&GOOD.replace("http://127.0.0.1:9000", "ftp://x"), &[])
            .contains("partners[0].base_url"));
        assert!(
            bad(&GOOD.replace("kind = \"consumer\"", "kind = \"cars\""), &[])
                .contains("unknown variant `cars`")
        );
        assert!(bad(&format!("{GOOD}\nsurprise = 1"), &[]).contains("unknown field `surprise`"));
        assert!(bad(GOOD, &[("PARTNER_BUREAU_A_TIMEOUT_MS", "soon")])
            .contains("PARTNER_BUREAU_A_TIMEOUT_MS"));
        assert!(bad(&format!("{GOOD}\n{}", GOOD.trim()), &[]).contains("`bureau-a` is used twice"));
        for host in [
            "https://core-api",
            "core-api/x",
            "user@core-api",
            "core api",
            "core-api:port",
            "core-api:",
            "127.1",
        ] {
            let text = format!(
                "[[callers]]\nname = \"c\"\nsecret_env = \"S\"\ncallback_hosts = [\"ok\", \"{host}\"]\n{GOOD}"
            );
            let e = bad(&text, &[("S", "a-secret-of-16-or-more")]);
            assert!(e.contains("callers[0].callback_hosts[1]"), "{host}: {e}");
        }
        let short_key = bad(GOOD, &[("QUEUE_KEY", "too-short-for-a-key")]);
        assert!(
            short_key.contains("QUEUE_KEY") && short_key.contains("32 characters"),
            "{short_key}"
        );
        assert!(!short_key.contains("too-short"), "the secret is not echoed");
        assert!(bad(&format!("job_ttl_secs = 0\n{GOOD}"), &[]).contains("job_ttl_secs"));
        let forever = GOOD.replace(
            "max_concurrency = 4",
            "max_concurrency = 4\ncache_ttl_secs = 18446744073709551615",
        );
        assert!(bad(&forever, &[]).contains("partners[0].cache_ttl_secs"));
        let short_token = bad(GOOD, &[("METRICS_TOKEN", "short")]);
        assert!(short_token.contains("METRICS_TOKEN"), "{short_token}");
    }

    #[test]
    fn the_queue_key_and_ttls_come_from_the_environment_and_the_file() {
        let key = "q".repeat(32);
        let c = Config::from_toml(
            &format!("dead_letter_ttl_secs = 60\n{GOOD}"),
            env(&[("QUEUE_KEY", &key)]),
        )
        .unwrap();
        assert_eq!(c.queue_key, Some(Secret::new(key)));
        assert_eq!((c.job_ttl_secs, c.dead_letter_ttl_secs), (86_400, 60));
    }
}
