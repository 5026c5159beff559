//! How the core API reaches the partner bureaus: the integrations gateway in process (the
//! embedded shape), or a separate integrations service over HTTP (`INTEGRATIONS_URL`), which
//! answers at once or later through a callback to this instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use integrations::gateway::{Gateway, PartnerRequest, Submitted};
use integrations::partner::DeferReason;
use integrations::queue::Outcome;
use integrations::Kind;
use serde::Deserialize;
use tokio::sync::oneshot;

/// The partner side, as the settings chose it.
#[derive(Clone)]
pub enum Partners {
    InProcess(Arc<Gateway>),
    Remote(Arc<Remote>),
}

/// A separate integrations service.
pub struct Remote {
    base: String,
    http: reqwest::Client,
    /// Partner names by kind, as the service reported them at start.
    names: Vec<(String, Kind)>,
    /// Where the service POSTs outcomes: this instance's callback route, with its secret.
    callback_url: String,
    callback_secret: String,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
}

#[derive(Deserialize)]
struct PartnerInfo {
    name: String,
    kind: Kind,
}

#[derive(Deserialize)]
struct StatusInfo {
    partners: Vec<PartnerInfo>,
}

#[derive(Deserialize)]
struct Queued {
    reason: String,
    next_attempt_in_ms: u64,
}

fn hex_sha256(text: &str) -> String {
    integrations::auth::secret_hash(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn waiter_key(request_id: &str, partner: &str) -> String {
    format!("{request_id}/{partner}")
}

impl Remote {
    /// Asks the service which partners it has; `public_url` is where it can reach us, and
    /// `secret` is ours as one of its callers (sent with every request).
    pub async fn connect(
        base: &str,
        public_url: &str,
        secret: &crate::config::Secret,
    ) -> anyhow::Result<Arc<Self>> {
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", secret.expose()))
                .context("INTEGRATIONS_SECRET: not a valid header value")?;
        // Kept out of debug output and HTTP/2 header compression tables.
        bearer.set_sensitive(true);
        let headers =
            reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, bearer)]);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            // Below the integrations service's idle timeout (10 s by default), so a pooled
            // connection is not reused just as the service closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            // Only the configured service: a redirect is an error, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = base.trim_end_matches('/').to_string();
        let status: StatusInfo = http
            .get(format!("{base}/v1/partners"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| {
                anyhow::anyhow!(
                    "INTEGRATIONS_URL: the integrations service did not answer /v1/partners ({e})"
                )
            })?
            .json()
            .await?;
        let secret = crate::auth::Auth::generate_key();
        Ok(Arc::new(Remote {
            names: status
                .partners
                .into_iter()
                .map(|p| (p.name, p.kind))
                .collect(),
            callback_url: format!(
                "{}/internal/partner-results?secret={secret}",
                public_url.trim_end_matches('/')
            ),
            callback_secret: secret,
            base,
            http,
            waiting: Mutex::default(),
        }))
    }

    /// Hands an outcome to the run waiting for it; `false` when the secret is wrong.
    pub fn deliver(&self, secret: &str, outcome: Outcome) -> bool {
        if !crate::auth::constant_time_eq(secret.as_bytes(), self.callback_secret.as_bytes()) {
            return false;
        }
        let key = waiter_key(&outcome.request_id, &outcome.partner);
        match self.waiting.lock().expect("waiting lock").remove(&key) {
            Some(tx) => {
                let _ = tx.send(outcome);
            }
            // Delivered twice (at-least-once) or for a run that ended: nothing to do.
            None => {
                tracing::info!(request = %outcome.request_id, "Outcome for nobody waiting; ignored.")
            }
        }
        true
    }

    async fn submit(&self, request: PartnerRequest) -> Result<Submitted, String> {
        let key = waiter_key(&request.request_id, &request.partner);
        let (tx, rx) = oneshot::channel();
        // Registered before asking: the callback can come before the 202 does.
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(key.clone(), tx);
        let body = serde_json::json!({
            "request_id": request.request_id,
            "partner": request.partner,
            "cpf": request.cpf.digits(),
            "params": request.params,
            "callback_url": self.callback_url,
            "fresh": request.fresh,
            // The tenant as a fixed-length hash: any tenant name fits the service's bound,
            // and the service never learns the names.
            "cache_scope": hex_sha256(&request.cache_scope),
        });
        let response = self
            .http
            .post(format!("{}/v1/partner-requests", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|_| "the integrations service is unreachable".to_string());
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.waiting.lock().expect("waiting lock").remove(&key);
                return Err(e);
            }
        };
        match response.status().as_u16() {
            200 => {
                self.waiting.lock().expect("waiting lock").remove(&key);
                let outcome: Outcome = response
                    .json()
                    .await
                    .map_err(|_| "the integrations service answered nonsense".to_string())?;
                Ok(Submitted::Now(outcome))
            }
            202 => {
                let q: Queued = response
                    .json()
                    .await
                    .map_err(|_| "the integrations service answered nonsense".to_string())?;
                let reason = match q.reason.as_str() {
                    "no_permit" => DeferReason::NoPermit,
                    "circuit_open" => DeferReason::CircuitOpen,
                    "rate_limited" => DeferReason::RateLimited,
                    "partner_busy" => DeferReason::PartnerBusy,
                    "already_queued" => DeferReason::AlreadyQueued,
                    _ => DeferReason::PartnerFailed,
                };
                Ok(Submitted::Queued {
                    reason,
                    retry_in: Duration::from_millis(q.next_attempt_in_ms),
                    receiver: Some(rx),
                })
            }
            status => {
                self.waiting.lock().expect("waiting lock").remove(&key);
                tracing::warn!(
                    status,
                    "The integrations service refused a partner request."
                );
                Err(format!("the integrations service answered {status}"))
            }
        }
    }
}

impl Partners {
    /// The configured partner serving `kind` (the first, if several).
    pub fn partner_for(&self, kind: Kind) -> Option<String> {
        match self {
            Partners::InProcess(g) => g
                .config()
                .partners
                .iter()
                .find(|p| p.kind == kind)
                .map(|p| p.name.clone()),
            Partners::Remote(r) => r
                .names
                .iter()
                .find(|(_, k)| *k == kind)
                .map(|(n, _)| n.clone()),
        }
    }

    pub async fn submit(&self, request: PartnerRequest) -> Result<Submitted, String> {
        match self {
            Partners::InProcess(g) => g.submit(request).await.map_err(|e| e.to_string()),
            Partners::Remote(r) => r.submit(request).await,
        }
    }

    /// Whether partner calls go to a separate integrations service (whose queued jobs are
    /// answered by callback to the instance that asked).
    pub fn is_remote(&self) -> bool {
        matches!(self, Partners::Remote(_))
    }

    pub async fn ready(&self) -> bool {
        match self {
            Partners::InProcess(g) => g.ready().await,
            Partners::Remote(r) => r
                .http
                .get(format!("{}/readyz", r.base))
                .send()
                .await
                .is_ok_and(|resp| resp.status().is_success()),
        }
    }

    /// Erases what the partners' side keeps of analysis `id` of the person whose cached
    /// answers live in `cache_scope`: those answers, and the analysis's queued requests and
    /// dead letters.
    pub async fn erase(&self, cache_scope: &str, id: &str) -> Result<(), String> {
        match self {
            Partners::InProcess(g) => g
                .erase("", cache_scope, id)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Partners::Remote(r) => {
                let response = r
                    .http
                    .post(format!("{}/v1/erasures", r.base))
                    .json(&serde_json::json!({
                        "cache_scope": hex_sha256(cache_scope),
                        "request_prefix": id,
                    }))
                    .send()
                    .await
                    .map_err(|_| "the integrations service is unreachable".to_string())?;
                match response.status().as_u16() {
                    200 => Ok(()),
                    status => Err(format!("the integrations service answered {status}")),
                }
            }
        }
    }

    /// Partner call counters, when in process.
    pub async fn status(&self) -> Option<integrations::gateway::GatewayStatus> {
        match self {
            Partners::InProcess(g) => g.status().await.ok(),
            Partners::Remote(_) => None,
        }
    }
}
