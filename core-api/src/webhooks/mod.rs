//! Webhooks: a lender's back end is told when an analysis has ended, the way open-finance
//! peers (Plaid, Pluggy, Belvo) do it, instead of following the SSE stream.
//!
//! A tenant registers endpoints (`POST /v1/webhook-endpoints`), each with the events it wants
//! (`analysis.completed`, `analysis.failed`) and a secret shown once. When an analysis ends,
//! one delivery per subscribed endpoint is queued ([`Webhooks::analysis_ended`]) in the
//! durable [`store`] and a worker on every instance sends it, signed as the Standard Webhooks
//! specification says (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">` with the secret's bytes), so any of its verifier
//! libraries checks it. Failed attempts are retried with backoff, at most `WEBHOOK_MAX_ATTEMPTS` times,
//! then the delivery is kept as failed; each can be sent again by hand.
//!
//! The payload is thin: the event, the analysis id and status, and where to read it. It holds
//! no personal data, so the queue and the delivery log keep none (the receiver reads the
//! analysis with its API key, which the audit trail records). Outbound calls go only to public
//! addresses, checked when the endpoint is registered and again at every connection (a
//! resolver that drops private, loopback and link-local addresses, against DNS rebinding),
//! unless the operator lists the host in `WEBHOOK_ALLOWED_HOSTS`; redirects are not followed;
//! each attempt has a timeout.

pub mod store;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::store::{actions, AccessRecord, AuditTrail, Store, SERVICE};
pub use store::{WebhookStore, WebhookStoreError};

/// The events an endpoint may subscribe to.
pub const EVENTS: [&str; 2] = ["analysis.completed", "analysis.failed"];
/// Endpoints a tenant may have.
pub const MAX_ENDPOINTS: usize = 10;
/// How long one attempt may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is held by its worker before another may take it.
const LEASE: Duration = Duration::from_secs(60);
/// Deliveries one worker sends at once.
const BATCH: usize = 16;
/// How long one attempt may take in all (the endpoint read, the call, saving and recording),
/// well inside [`LEASE`], so no other worker sends it meanwhile.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(30);

/// An endpoint, as kept (its debug output leaves the secret out).
#[derive(Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_` and the base64 of 24 random bytes.
    pub secret: String,
    pub created_ms: i64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

/// One message to one endpoint, and how its attempts went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// The `webhook-id`: `msg_` and 32 hex digits, the same for every attempt.
    pub id: String,
    pub tenant: String,
    pub endpoint_id: String,
    pub url: String,
    pub analysis_id: String,
    /// The keyed hash of the person's CPF, for the audit trail.
    #[serde(default)]
    pub cpf_hash: String,
    pub event: String,
    /// The body sent, as JSON text (the signature covers these exact bytes).
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_ms: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub delivered_ms: Option<i64>,
}

/// Why an endpoint's URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlRefused {
    #[error("url must be an http or https URL of at most 2048 characters")]
    Malformed,
    #[error("url must not carry a user name or password")]
    Credentials,
    #[error("url's host does not resolve")]
    Unresolved,
    #[error(
        "url points at a private, loopback or link-local address; an operator may allow the \
         host in WEBHOOK_ALLOWED_HOSTS"
    )]
    Private,
}

/// Hosts the operator allows although they resolve to private addresses.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    names: Vec<String>,
    nets: Vec<ipnet::IpNet>,
}

impl Allowed {
    /// From `WEBHOOK_ALLOWED_HOSTS` entries: host names, addresses or networks.
    pub fn new(entries: &[String]) -> Self {
        let mut a = Allowed::default();
        for e in entries {
            if let Ok(net) = e.parse::<ipnet::IpNet>() {
                a.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                a.nets.push(ip.into());
            } else {
                a.names.push(e.to_ascii_lowercase());
            }
        }
        a
    }

    fn host(&self, host: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    fn ip(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Whether `ip` is reachable only from inside (loopback, private, link-local, unspecified,
/// shared, multicast, documentation, unique local): no webhook goes there unless allowed.
fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // 0.0.0.0/8 "this network", 100.64.0.0/10 carrier-grade NAT, 192.0.0.0/24
                // protocol assignments, 198.18.0.0/15 benchmarking, 240.0.0.0/4 reserved.
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // An IPv4 address inside an IPv6 one (mapped, compatible, NAT64 64:ff9b::/96,
            // 6to4 2002::/16) is judged as that IPv4 address.
            let embedded = match s {
                [0, 0, 0, 0, 0, 0xffff, h, l] => Some((h, l)),
                // `::a.b.c.d`, but not `::` and `::1`, judged as IPv6 below.
                [0, 0, 0, 0, 0, 0, h, l] if h != 0 || l > 1 => Some((h, l)),
                [0x64, 0xff9b, 0, 0, 0, 0, h, l] => Some((h, l)),
                [0x2002, h, l, ..] => Some((h, l)),
                _ => None,
            };
            if let Some((h, l)) = embedded {
                let v4 = std::net::Ipv4Addr::new((h >> 8) as u8, h as u8, (l >> 8) as u8, l as u8);
                return internal(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // fec0::/10, the deprecated site-local range.
                || (s[0] & 0xffc0) == 0xfec0
        }
    }
}

/// A resolver that keeps only the addresses webhooks may reach: every connection is checked,
/// so a name that resolved to a public address at registration cannot later lead inside.
struct PublicOnly(Arc<Allowed>);

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let host_allowed = allowed.host(&host);
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| host_allowed || allowed.ip(a.ip()) || !internal(a.ip()))
                .collect();
            if ok.is_empty() {
                return Err("no address webhooks may reach".into());
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks an endpoint URL as given: its form, and where its host resolves now.
pub async fn check_url(url: &str, allowed: &Allowed) -> Result<reqwest::Url, UrlRefused> {
    if url.len() > 2048 {
        return Err(UrlRefused::Malformed);
    }
    let u = reqwest::Url::parse(url).map_err(|_| UrlRefused::Malformed)?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(UrlRefused::Malformed);
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(UrlRefused::Credentials);
    }
    let host = match u.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err(UrlRefused::Malformed),
    };
    if allowed.host(&host) {
        return Ok(u);
    }
    let port = u.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| UrlRefused::Unresolved)?
    .map_err(|_| UrlRefused::Unresolved)?
    .collect();
    if addrs.is_empty() {
        return Err(UrlRefused::Unresolved);
    }
    if addrs
        .iter()
        .any(|a| internal(a.ip()) && !allowed.ip(a.ip()))
    {
        return Err(UrlRefused::Private);
    }
    Ok(u)
}

/// The `webhook-id` of `event` of an analysis for an endpoint: the same however often the
/// analysis's end is told (a successor that ends a run again), so a receiver can tell a
/// message it has seen, and the queue keeps one.
fn delivery_id(analysis_id: &str, endpoint_id: &str, event: &str) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(format!("{analysis_id}\n{endpoint_id}\n{event}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// A new endpoint secret: `whsec_` and the base64 of 24 random bytes (Standard Webhooks).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// The `webhook-signature` of `payload` sent as message `id` at `timestamp` (seconds) with
/// `secret`: `v1,` and the base64 of HMAC-SHA256 over `id.timestamp.payload`, keyed with the
/// secret's bytes (the base64 after `whsec_`).
pub fn sign(secret: &str, id: &str, timestamp: i64, payload: &str) -> String {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.{payload}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The wait before attempt `n + 1` after `n` failed ones: `base` times 6 to the power of
/// `n - 1` (5 s, 30 s, 3 min, 18 min, ... with the default base), at most 6 h.
pub fn backoff(base: Duration, n: u32) -> Duration {
    let factor = 6u64.saturating_pow(n.saturating_sub(1).min(10));
    base.saturating_mul(factor.min(u32::MAX as u64) as u32)
        .min(Duration::from_secs(6 * 3600))
}

/// Endpoints, deliveries and the sender.
pub struct Webhooks {
    store: WebhookStore,
    http: reqwest::Client,
    allowed: Arc<Allowed>,
    /// The wait after the first failed attempt (`WEBHOOK_RETRY_BASE_MS`).
    retry_base: Duration,
    /// Attempts of one delivery (`WEBHOOK_MAX_ATTEMPTS`).
    max_attempts: u32,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Webhooks {
    pub fn new(
        store: WebhookStore,
        allowed: Allowed,
        retry_base: Duration,
        max_attempts: u32,
    ) -> Self {
        let allowed = Arc::new(allowed);
        let http = reqwest::Client::builder()
            // Never through a proxy from the environment: the proxy would resolve the target
            // itself, past the address check.
            .no_proxy()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicOnly(allowed.clone())))
            .user_agent("credit-analysis-webhooks/1")
            .build()
            .expect("a webhook client builds");
        Webhooks {
            store,
            http,
            allowed,
            retry_base,
            max_attempts,
        }
    }

    pub fn store(&self) -> &WebhookStore {
        &self.store
    }

    pub fn allowed(&self) -> &Allowed {
        &self.allowed
    }

    /// Queues one delivery per endpoint of `tenant` that subscribed to `event` (an analysis's
    /// final event), with the thin payload.
    pub async fn analysis_ended(
        &self,
        tenant: &str,
        analysis_id: &str,
        cpf_hash: &str,
        event: &str,
        status: &str,
    ) -> Result<usize, WebhookStoreError> {
        let endpoints = self.store.endpoints(tenant).await?;
        let now = now_ms();
        let mut queued = 0;
        for e in endpoints
            .iter()
            .filter(|e| e.events.iter().any(|x| x == event))
        {
            let payload = serde_json::json!({
                "type": event,
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": {
                    "analysis_id": analysis_id,
                    "status": status,
                    "analysis_url": format!("/v1/analyses/{analysis_id}"),
                },
            });
            let d = Delivery {
                id: delivery_id(analysis_id, &e.id, event),
                tenant: tenant.into(),
                endpoint_id: e.id.clone(),
                url: e.url.clone(),
                analysis_id: analysis_id.into(),
                cpf_hash: cpf_hash.into(),
                event: event.into(),
                payload: payload.to_string(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                next_ms: now,
                last_status: None,
                last_error: None,
                created_ms: now,
                delivered_ms: None,
            };
            queued += usize::from(self.store.insert(&d).await?);
        }
        Ok(queued)
    }

    /// Sends `d` once (within [`ATTEMPT_LIMIT`], well inside its lease) and records how it
    /// went.
    async fn attempt(&self, d: Delivery, audit: &Store) {
        let id = d.id.clone();
        if tokio::time::timeout(ATTEMPT_LIMIT, self.try_attempt(d, audit))
            .await
            .is_err()
        {
            tracing::warn!(delivery = %id, "Webhook attempt took too long; it is sent again after its lease.");
        }
    }

    async fn try_attempt(&self, mut d: Delivery, audit: &Store) {
        let secret = match self.store.endpoints(&d.tenant).await {
            Ok(eps) => eps
                .into_iter()
                .find(|e| e.id == d.endpoint_id)
                .map(|e| e.secret),
            Err(e) => {
                tracing::warn!(delivery = %d.id, error = %e, "Webhook endpoint not read; the delivery waits for its lease.");
                return;
            }
        };
        d.attempts += 1;
        let outcome = match secret {
            // The endpoint was deleted: nothing to send to any more.
            None => Err((None, "the endpoint was deleted".to_string(), true)),
            // A literal address is never looked up, so the resolver cannot check it: here,
            // with the allowed hosts as they are now.
            Some(_) if self.literal_refused(&d.url) => Err((
                None,
                "the endpoint's address is not one webhooks may reach".to_string(),
                true,
            )),
            Some(secret) => {
                let timestamp = chrono::Utc::now().timestamp();
                let signature = sign(&secret, &d.id, timestamp, &d.payload);
                let sent = self
                    .http
                    .post(&d.url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &d.id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .body(d.payload.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                    // Anything else, redirects included (never followed), is a failure.
                    Ok(r) => Err((
                        Some(r.status().as_u16()),
                        format!("the endpoint answered {}", r.status().as_u16()),
                        false,
                    )),
                    Err(e) => Err((None, describe(&e), false)),
                }
            }
        };
        match outcome {
            Ok(status) => {
                d.status = DeliveryStatus::Delivered;
                d.last_status = Some(status);
                d.last_error = None;
                d.delivered_ms = Some(now_ms());
            }
            Err((status, error, final_)) => {
                d.last_status = status;
                d.last_error = Some(error);
                if final_ || d.attempts >= self.max_attempts {
                    d.status = DeliveryStatus::Failed;
                } else {
                    d.next_ms = now_ms() + backoff(self.retry_base, d.attempts).as_millis() as i64;
                }
            }
        }
        match self.store.update(&d).await {
            Ok(true) => {}
            // Erased (or expired) while it was being sent: nothing is kept of it.
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(delivery = %d.id, error = %e, "Webhook delivery state not saved; it is sent again after its lease.");
            }
        }
        let record = AccessRecord::now(&d.tenant, SERVICE, actions::WEBHOOK_DELIVERY)
            .about(&d.analysis_id, &d.cpf_hash);
        if let Err(e) = audit.record(record).await {
            tracing::warn!(delivery = %d.id, error = %e, "Webhook delivery not recorded in the audit trail.");
        }
        tracing::info!(delivery = %d.id, analysis = %d.analysis_id, attempts = d.attempts, status = ?d.status, "Webhook attempted.");
    }

    /// Sends due deliveries until `stop` resolves: a few at a time, every quarter second.
    pub async fn run_worker(
        self: Arc<Self>,
        audit: Store,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = &mut stop => break,
            }
            let due = match self.store.claim(now_ms(), LEASE, BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not look for webhooks to send.");
                    continue;
                }
            };
            let sends = due.into_iter().map(|d| self.attempt(d, &audit));
            tokio::select! {
                _ = futures_util::future::join_all(sends) => {}
                _ = &mut stop => break,
            }
        }
    }

    /// Makes a delivery of `tenant`'s analysis pending again, with a fresh count of attempts.
    /// `false` when there is no such delivery.
    pub async fn resend(
        &self,
        tenant: &str,
        analysis_id: &str,
        id: &str,
    ) -> Result<bool, WebhookStoreError> {
        let Some(mut d) = self.store.delivery(id).await? else {
            return Ok(false);
        };
        if d.tenant != tenant || d.analysis_id != analysis_id {
            return Ok(false);
        }
        d.status = DeliveryStatus::Pending;
        d.attempts = 0;
        d.next_ms = now_ms();
        self.store.update(&d).await
    }

    /// Whether `url`'s host is an address literal webhooks may not reach.
    fn literal_refused(&self, url: &str) -> bool {
        let Ok(u) = reqwest::Url::parse(url) else {
            return true;
        };
        let host = u.host_str().unwrap_or_default();
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => internal(ip) && !self.allowed.ip(ip) && !self.allowed.host(host),
            Err(_) => false,
        }
    }
}

/// An attempt's error for the delivery log: its kind, never a URL with its query.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the endpoint did not answer in time".into()
    } else if e.is_connect() {
        "the endpoint could not be reached".into()
    } else {
        "the request to the endpoint failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification's reference implementations.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = sign(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:0.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fec0::1",
            "0.1.2.3",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "200.160.2.3",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
        ] {
            assert!(!internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn backoff_grows_sixfold_and_is_capped() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, 2), Duration::from_secs(30));
        assert_eq!(backoff(base, 3), Duration::from_secs(180));
        assert_eq!(backoff(base, 30), Duration::from_secs(6 * 3600));
    }

    #[tokio::test]
    async fn loopback_urls_are_refused_unless_the_operator_allows_the_host() {
        let none = Allowed::default();
        assert!(matches!(
            check_url("http://127.0.0.1:9/hook", &none).await,
            Err(UrlRefused::Private)
        ));
        assert!(matches!(
            check_url("http://localhost/hook", &none).await,
            Err(UrlRefused::Private)
        ));
        assert!(matches!(
            check_url("ftp://example.com/", &none).await,
            Err(UrlRefused::Malformed)
        ));
        assert!(matches!(
            check_url("http://u:p@example.com/", &none).await,
            Err(UrlRefused::Credentials)
        ));
        let allowed = Allowed::new(&["127.0.0.0/8".into()]);
        assert!(check_url("http://127.0.0.1:9/hook", &allowed).await.is_ok());
        let by_name = Allowed::new(&["localhost".into()]);
        assert!(check_url("http://localhost:9/hook", &by_name).await.is_ok());
    }
}
