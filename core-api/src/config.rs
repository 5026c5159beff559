//! Settings: built-in defaults, then an optional TOML file, then environment variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CORE_API_CONFIG` | a TOML file of the settings below (same names, lower case) | none |
//! | `HOST` | address to listen on | `127.0.0.1` (always, when no key is configured) |
//! | `PORT` | port to listen on | `8080` |
//! | `API_KEYS` | `tenant:key,tenant:key`; none: a development key is generated and printed | none |
//! | `REDIS_URL` | Redis for the partner semaphore and retry queue | in process |
//! | `INTEGRATIONS_URL` | a separate integrations service, called over HTTP | in process |
//! | `PUBLIC_URL` | how that service reaches this instance for callbacks | `http://<bound address>` |
//! | `PARTNERS_CONFIG` | a partner file as for `integrations serve` | the bundled simulator |
//! | `MODEL_PATH` | the classifier model file | `models/default.json` |
//! | `DATA_DIR` | where the embedded transaction store keeps its file | `data` |
//! | `CPF_HASH_KEY` | key of the keyed CPF hash in the store | generated per run |
//! | `EVENTS_TOKEN_KEY` | key of the `events_url` tokens; shared by instances on one Redis | generated per run |
//! | `METRICS_TOKEN` | when set, `GET /metrics` needs it as a bearer token | none: open |
//! | `QUEUE_KEY` | with `REDIS_URL`: seals the personal data kept on Redis (durable runs, and with partners in process queued requests and cached answers); shared by instances | none (needed then) |
//! | `RUN_LEASE_MS` | with `REDIS_URL`: how long an analysis's owner may go silent before another instance takes it over | `5000` |
//! | `ANALYSIS_DEADLINE_SECS` | an analysis that takes longer fails | `120` |
//! | `RATE_PER_KEY` | requests per second per API key | `50` |
//! | `STREAM_OPENS_PER_SEC` | event streams a tenant may open per second (bursts of ten times as many) | `1000` |
//! | `MAX_STREAMS_PER_TENANT` | event streams a tenant may have open on one instance | `20000` |
//! | `RETENTION_DAYS` | an analysis's stored transactions are erased this long after they were stored (fractions allowed) | `180` |
//! | `AUDIT_RETENTION_DAYS` | access audit records are kept this long | `1825` (5 years) |
//! | `RETENTION_SWEEP_SECS` | how often the retention looks for what to erase | `3600` |
//! | `ELASTICSEARCH_AUDIT_INDEX` | the audit trail's index, with `ELASTICSEARCH_URL` | `credit-audit` |
//! | `WEBHOOK_ALLOWED_HOSTS` | host names, addresses or networks webhook endpoints may use although private or loopback | none |
//! | `WEBHOOK_RETRY_BASE_MS` | the wait after a webhook's first failed attempt; each next one is six times longer (at most 6 h) | `5000` |
//! | `WEBHOOK_MAX_ATTEMPTS` | attempts of one webhook delivery, then it is kept as failed | `8` |
//! | `TRUSTED_PROXIES` | addresses or networks (`10.0.0.0/8`) of proxies whose `X-Forwarded-For` names the client in the audit trail | none |

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// A secret; printing it shows `[redacted]`.
pub use integrations::Secret;

/// An API key as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub tenant: String,
    /// The key itself; kept only as a hash once loaded.
    pub key: String,
    /// `analyses:write`, `analyses:read`, `classify`, `analyses:erase`, `audit:read`,
    /// `webhooks`; all of them when omitted.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// Everything the service reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub api_keys: Vec<ApiKeyConfig>,
    pub redis_url: Option<String>,
    pub integrations_url: Option<String>,
    /// How a separate integrations service reaches this instance for callbacks.
    pub public_url: Option<String>,
    /// The partner bureaus (an integrations TOML file); none runs the bundled simulator.
    pub partners_config: Option<PathBuf>,
    /// How the bundled simulator behaves when it is the partners (latency, faults, volume).
    pub simulator: integrations::simulator::SimulatorSettings,
    pub model_path: PathBuf,
    pub data_dir: PathBuf,
    #[serde(skip)]
    pub cpf_hash_key: Option<Secret>,
    /// Key of the `events_url` tokens; instances sharing a Redis must share it.
    #[serde(skip)]
    pub events_token_key: Option<Secret>,
    /// This instance's secret as a caller of the integrations service (`INTEGRATIONS_SECRET`,
    /// one of the service's `[[callers]]`); needed with `integrations_url`.
    #[serde(skip)]
    pub integrations_secret: Option<Secret>,
    /// Seals the personal data this instance keeps on Redis (`QUEUE_KEY`, at least 32
    /// characters, the same on every instance): a durable run's CPF and partner answers, and,
    /// when it calls the partners itself, queued requests and cached answers. Needed with
    /// `redis_url`.
    #[serde(skip)]
    pub queue_key: Option<Secret>,
    /// With Redis, how long an analysis's owner may go without renewing its lease before
    /// another instance takes the analysis over, in milliseconds (`RUN_LEASE_MS`, 5000). The
    /// owner renews every third of it; a takeover comes within this plus the look-up interval
    /// (a quarter of it, at most half a second).
    pub run_lease_ms: u64,
    /// When set (`METRICS_TOKEN`), `GET /metrics` needs it as a bearer token (a Prometheus
    /// server's); unset, the metrics are open, as on a developer's machine.
    #[serde(skip)]
    pub metrics_token: Option<Secret>,
    pub analysis_deadline_secs: u64,
    /// How long the end of an analysis (its last snapshot, then its final event) is retried
    /// while Redis fails (`FINAL_RETRY_SECS`, 60). A follower of an analysis that has ended
    /// waits at most twice this, plus 5 s, for its final event.
    pub final_retry_secs: u64,
    /// How long a connection may take to send a whole request head, and how long it may sit
    /// idle between two requests (`HEADER_READ_TIMEOUT_SECS`, 10); then it is closed.
    pub header_read_timeout_secs: u64,
    pub rate_per_key: u32,
    /// Event streams a tenant may open per second, with bursts of ten times as many (a
    /// lender's dashboards reconnecting after a deploy), whether with a key or a token.
    pub stream_opens_per_sec: u32,
    /// Event streams a tenant may have open at once on one instance.
    pub max_streams_per_tenant: usize,
    /// Redis key prefix, so deployments and tests can share a Redis.
    pub key_prefix: String,
    /// Elasticsearch for the transactions instead of the embedded SQLite store.
    pub elasticsearch_url: Option<String>,
    pub elasticsearch_user: Option<String>,
    #[serde(skip)]
    pub elasticsearch_password: Option<Secret>,
    /// An encoded API key (instead of user and password).
    #[serde(skip)]
    pub elasticsearch_api_key: Option<Secret>,
    /// The index of the transactions (and its template's pattern).
    pub elasticsearch_index: String,
    /// The index of the access audit trail; it must not start with `elasticsearch_index`,
    /// whose template would claim it.
    pub elasticsearch_audit_index: String,
    /// How long after an analysis's transactions were stored the service erases the analysis
    /// (its transactions; its snapshot and events have gone after a day), in days, fractions
    /// allowed. LGPD asks that personal data be kept no longer than its purpose needs; a
    /// lender's credit decision is made within days, so half a year is a generous default.
    pub retention_days: f64,
    /// How long the access audit trail keeps a record, in days (five years by default: the
    /// limitation period of consumer claims under the Código de Defesa do Consumidor, art. 27).
    pub audit_retention_days: f64,
    /// How often an instance looks for analyses and audit records past their retention.
    pub retention_sweep_secs: u64,
    /// Proxies (addresses or networks) whose last `X-Forwarded-For` entry is the client's
    /// address in the audit trail; from any other peer the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Webhook endpoints may not point at private, loopback or link-local addresses (the
    /// service's own network) unless their host is listed here: a host name, an address or a
    /// network (`10.1.0.0/16`).
    pub webhook_allowed_hosts: Vec<String>,
    /// The wait after a webhook's first failed attempt, in milliseconds; each next wait is six
    /// times longer, at most six hours.
    pub webhook_retry_base_ms: u64,
    /// Attempts of one webhook delivery, the first included; then it is kept as failed.
    pub webhook_max_attempts: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            api_keys: Vec::new(),
            redis_url: None,
            integrations_url: None,
            public_url: None,
            partners_config: None,
            simulator: integrations::simulator::SimulatorSettings::default(),
            model_path: PathBuf::from("models/default.json"),
            data_dir: PathBuf::from("data"),
            cpf_hash_key: None,
            events_token_key: None,
            integrations_secret: None,
            queue_key: None,
            metrics_token: None,
            run_lease_ms: 5_000,
            analysis_deadline_secs: 120,
            final_retry_secs: 60,
            header_read_timeout_secs: 10,
            rate_per_key: 50,
            stream_opens_per_sec: 1_000,
            max_streams_per_tenant: 20_000,
            key_prefix: "credit".into(),
            elasticsearch_url: None,
            elasticsearch_user: None,
            elasticsearch_password: None,
            elasticsearch_api_key: None,
            elasticsearch_index: "credit-transactions".into(),
            elasticsearch_audit_index: "credit-audit".into(),
            retention_days: 180.0,
            audit_retention_days: 1825.0,
            retention_sweep_secs: 3600,
            trusted_proxies: Vec::new(),
            webhook_allowed_hosts: Vec::new(),
            webhook_retry_base_ms: 5_000,
            webhook_max_attempts: 8,
        }
    }
}

/// A setting that could not be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Reads the file named by `CORE_API_CONFIG` (if any), then the environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_sources(|k| std::env::var(k).ok())
    }

    pub fn from_sources(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut s = match env("CORE_API_CONFIG") {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError(format!("CORE_API_CONFIG {path}: {e}")))?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError(format!("{path}: {}", e.message())))?
            }
            None => Settings::default(),
        };
        if let Some(v) = env("HOST") {
            s.host = v
                .parse()
                .map_err(|_| ConfigError(format!("HOST: `{v}` is not an IP address")))?;
        }
        if let Some(v) = env("PORT") {
            s.port = v
                .parse()
                .map_err(|_| ConfigError(format!("PORT: `{v}` is not a port number")))?;
        }
        if let Some(v) = env("API_KEYS").filter(|v| !v.trim().is_empty()) {
            s.api_keys = parse_api_keys(&v)?;
        }
        if let Some(v) = env("REDIS_URL").filter(|v| !v.is_empty()) {
            s.redis_url = Some(v);
        }
        if let Some(v) = env("INTEGRATIONS_URL").filter(|v| !v.is_empty()) {
            s.integrations_url = Some(v);
        }
        if let Some(v) = env("PARTNERS_CONFIG").filter(|v| !v.is_empty()) {
            s.partners_config = Some(v.into());
        }
        if let Some(v) = env("MODEL_PATH") {
            s.model_path = v.into();
        }
        if let Some(v) = env("DATA_DIR") {
            s.data_dir = v.into();
        }
        if let Some(v) = env("CPF_HASH_KEY").filter(|v| !v.is_empty()) {
            s.cpf_hash_key = Some(Secret::new(v));
        }
        if let Some(v) = env("EVENTS_TOKEN_KEY").filter(|v| !v.is_empty()) {
            s.events_token_key = Some(Secret::new(v));
        }
        if let Some(v) = env("INTEGRATIONS_SECRET").filter(|v| !v.is_empty()) {
            s.integrations_secret = Some(Secret::new(v));
        }
        if let Some(v) = env("QUEUE_KEY").filter(|v| !v.is_empty()) {
            s.queue_key = Some(Secret::new(v));
        }
        if let Some(v) = env("METRICS_TOKEN").filter(|v| !v.is_empty()) {
            // As the integrations service asks, so one token serves both.
            if v.chars().count() < 16 {
                return Err(ConfigError(
                    "METRICS_TOKEN: must hold a secret of at least 16 characters".into(),
                ));
            }
            s.metrics_token = Some(Secret::new(v));
        }
        // Whole-number settings: a value that does not parse (or fit) stops the start, naming it.
        fn whole<T: std::str::FromStr>(
            env: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<T>, ConfigError> {
            env(name)
                .map(|v| {
                    v.parse()
                        .map_err(|_| ConfigError(format!("{name}: `{v}` is not a whole number")))
                })
                .transpose()
        }
        if let Some(v) = whole(&env, "ANALYSIS_DEADLINE_SECS")? {
            s.analysis_deadline_secs = v;
        }
        if let Some(v) = whole(&env, "RUN_LEASE_MS")? {
            s.run_lease_ms = v;
        }
        if let Some(v) = whole(&env, "FINAL_RETRY_SECS")? {
            s.final_retry_secs = v;
        }
        if let Some(v) = whole(&env, "HEADER_READ_TIMEOUT_SECS")? {
            s.header_read_timeout_secs = v;
        }
        if let Some(v) = whole(&env, "RATE_PER_KEY")? {
            s.rate_per_key = v;
        }
        if let Some(v) = whole(&env, "STREAM_OPENS_PER_SEC")? {
            s.stream_opens_per_sec = v;
        }
        if let Some(v) = whole(&env, "MAX_STREAMS_PER_TENANT")? {
            s.max_streams_per_tenant = v;
        }
        if let Some(v) = env("KEY_PREFIX").filter(|v| !v.is_empty()) {
            s.key_prefix = v;
        }
        if let Some(v) = env("PUBLIC_URL").filter(|v| !v.is_empty()) {
            s.public_url = Some(v);
        }
        if let Some(v) = env("ELASTICSEARCH_URL").filter(|v| !v.is_empty()) {
            s.elasticsearch_url = Some(v);
        }
        if let Some(v) = env("ELASTICSEARCH_USER").filter(|v| !v.is_empty()) {
            s.elasticsearch_user = Some(v);
        }
        if let Some(v) = env("ELASTICSEARCH_PASSWORD").filter(|v| !v.is_empty()) {
            s.elasticsearch_password = Some(Secret::new(v));
        }
        if let Some(v) = env("ELASTICSEARCH_API_KEY").filter(|v| !v.is_empty()) {
            s.elasticsearch_api_key = Some(Secret::new(v));
        }
        if let Some(v) = env("ELASTICSEARCH_INDEX").filter(|v| !v.is_empty()) {
            s.elasticsearch_index = v;
        }
        if let Some(v) = env("ELASTICSEARCH_AUDIT_INDEX").filter(|v| !v.is_empty()) {
            s.elasticsearch_audit_index = v;
        }
        for (name, field) in [
            ("RETENTION_DAYS", &mut s.retention_days),
            ("AUDIT_RETENTION_DAYS", &mut s.audit_retention_days),
        ] {
            if let Some(v) = env(name) {
                *field = v
                    .parse()
                    .map_err(|_| ConfigError(format!("{name}: `{v}` is not a number of days")))?;
            }
        }
        if let Some(v) = whole(&env, "RETENTION_SWEEP_SECS")? {
            s.retention_sweep_secs = v;
        }
        if let Some(v) = env("TRUSTED_PROXIES") {
            s.trusted_proxies = list(&v)
                .map(|p| {
                    p.parse::<ipnet::IpNet>()
                        .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            ConfigError(format!(
                                "TRUSTED_PROXIES: `{p}` is not an address or a network"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = env("WEBHOOK_ALLOWED_HOSTS") {
            s.webhook_allowed_hosts = list(&v).map(String::from).collect();
        }
        if let Some(v) = whole(&env, "WEBHOOK_RETRY_BASE_MS")? {
            s.webhook_retry_base_ms = v;
        }
        if let Some(v) = whole(&env, "WEBHOOK_MAX_ATTEMPTS")? {
            s.webhook_max_attempts = v;
        }
        if s.webhook_max_attempts == 0 || s.webhook_max_attempts > 20 {
            return Err(ConfigError("webhook_max_attempts: must be 1 to 20".into()));
        }
        if s.webhook_retry_base_ms == 0 {
            return Err(ConfigError(
                "webhook_retry_base_ms: must be at least 1".into(),
            ));
        }
        for (name, days) in [
            ("retention_days", s.retention_days),
            ("audit_retention_days", s.audit_retention_days),
        ] {
            // At most a century, so a time computed from it never overflows.
            if !(days > 0.0 && days <= 36_500.0) {
                return Err(ConfigError(format!(
                    "{name}: must be more than 0 and at most 36500 days"
                )));
            }
        }
        if s.retention_sweep_secs == 0 {
            return Err(ConfigError(
                "retention_sweep_secs: must be at least 1".into(),
            ));
        }
        for (name, url) in [
            ("INTEGRATIONS_URL", &s.integrations_url),
            ("PUBLIC_URL", &s.public_url),
            ("ELASTICSEARCH_URL", &s.elasticsearch_url),
        ] {
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(ConfigError(format!("{name}: must be an http or https URL")));
                }
            }
        }
        let index = &s.elasticsearch_index;
        if index.is_empty()
            || !index
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(ConfigError(
                "ELASTICSEARCH_INDEX: lower-case letters, digits, `-` and `_` only".into(),
            ));
        }
        let audit = &s.elasticsearch_audit_index;
        if audit.is_empty()
            || !audit
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            || audit.starts_with(index.as_str())
        {
            return Err(ConfigError(
                "ELASTICSEARCH_AUDIT_INDEX: lower-case letters, digits, `-` and `_` only, and \
                 not starting with ELASTICSEARCH_INDEX (its template would claim it)"
                    .into(),
            ));
        }
        if s.stream_opens_per_sec == 0 || s.max_streams_per_tenant == 0 {
            return Err(ConfigError(
                "stream_opens_per_sec and max_streams_per_tenant: must be at least 1".into(),
            ));
        }
        if s.rate_per_key == 0 {
            return Err(ConfigError("rate_per_key: must be at least 1".into()));
        }
        if s.header_read_timeout_secs == 0 {
            return Err(ConfigError(
                "header_read_timeout_secs: must be at least 1".into(),
            ));
        }
        if s.analysis_deadline_secs == 0 {
            return Err(ConfigError(
                "analysis_deadline_secs: must be at least 1".into(),
            ));
        }
        Ok(s)
    }
}

/// The entries of a comma-separated list, trimmed, empty ones left out.
fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn parse_api_keys(v: &str) -> Result<Vec<ApiKeyConfig>, ConfigError> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, pair)| match pair.split_once(':') {
            Some((tenant, key)) if !tenant.is_empty() && key.len() >= 16 => Ok(ApiKeyConfig {
                tenant: tenant.to_string(),
                key: key.to_string(),
                scopes: None,
            }),
            _ => Err(ConfigError(format!(
                "API_KEYS: entry {} must be tenant:key with a key of at least 16 characters",
                i + 1
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_environment_sets_port_keys_and_redis() {
        let s = Settings::from_sources(env(&[
            ("PORT", "9000"),
            ("API_KEYS", "acme:0123456789abcdef, beta:fedcba9876543210"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ]))
        .unwrap();
        assert_eq!(s.port, 9000);
        assert_eq!(s.api_keys.len(), 2);
        assert_eq!(s.api_keys[1].tenant, "beta");
        assert_eq!(s.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
    }

    #[test]
    fn bad_settings_name_the_variable_and_never_echo_a_key() {
        let e = Settings::from_sources(env(&[("PORT", "eighty")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PORT"));
        let e = Settings::from_sources(env(&[("API_KEYS", "acme:short")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("API_KEYS: entry 1") && !e.contains("short"));
    }
}
