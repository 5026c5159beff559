//! The reference adapter: one HTTP request by the contract, and what its answer means.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PartnerConfig;
use crate::contract::{Kind, PartnerData};
use crate::cpf::Cpf;

/// What a movements request asks for; ignored by the other kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestParams {
    /// First day of the history, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Last day of the history, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The page to fetch, as the partner's `proximoCursor` gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Rows per page, 1 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Why a call gave no data. Messages carry no CPF and no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the partner has no record")]
    NotFound,
    #[error("the partner refused the request with {0}")]
    Refused(u16),
    #[error("the partner is over its limit (429)")]
    RateLimited(Duration),
    #[error("the partner answered {0}")]
    Server(u16),
    #[error("the partner did not answer in time")]
    Timeout,
    #[error("could not reach the partner: {0}")]
    Connection(String),
    #[error("the partner's answer does not follow the contract: {0}")]
    Malformed(String),
    #[error("the semaphore lease was lost during the call")]
    LeaseLost,
}

impl CallError {
    /// Whether the error says the partner is in trouble (and counts against its breaker).
    pub fn is_partner_failure(&self) -> bool {
        matches!(
            self,
            CallError::Server(_)
                | CallError::Timeout
                | CallError::Connection(_)
                | CallError::Malformed(_)
        )
    }
}

fn url(
    config: &PartnerConfig,
    cpf: &Cpf,
    params: &RequestParams,
) -> Result<reqwest::Url, CallError> {
    let base = config.base_url.trim_end_matches('/');
    let path = match config.kind {
        Kind::Consumer => "consumers",
        Kind::Rating => "ratings",
        Kind::Movements => "movements",
    };
    let mut url = reqwest::Url::parse(&format!("{base}/v1/{path}/{}", cpf.digits()))
        .map_err(|e| CallError::Connection(format!("bad base_url: {e}")))?;
    if config.kind == Kind::Movements {
        let mut q = url.query_pairs_mut();
        for (k, v) in [
            ("from", &params.from),
            ("to", &params.to),
            ("cursor", &params.cursor),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        if let Some(limit) = params.limit {
            q.append_pair("limit", &limit.to_string());
        }
    }
    Ok(url)
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's messages include the URL, and the URL holds the CPF: say what kind of error
    // it was and nothing else.
    if e.is_connect() {
        "connection refused or failed".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_body() || e.is_decode() {
        "the body could not be read".into()
    } else {
        "request failed".into()
    }
}

/// Retry-After in seconds (the contract's form); HTTP dates are not used by partners.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)))
        .unwrap_or(Duration::from_secs(1))
}

/// One request; the caller bounds its time.
pub async fn call(
    http: &reqwest::Client,
    config: &PartnerConfig,
    cpf: &Cpf,
    params: &RequestParams,
) -> Result<PartnerData, CallError> {
    let mut request = http.get(url(config, cpf, params)?);
    if let Some(token) = &config.token {
        request = request.bearer_auth(token.expose());
    }
    let response = request
        .send()
        .await
        .map_err(|e| CallError::Connection(describe(&e)))?;
    let status = response.status().as_u16();
    match status {
        200 => {
            let body = response
                .bytes()
                .await
                .map_err(|e| CallError::Connection(describe(&e)))?;
            // serde's messages can quote the body's values (names, CPFs): keep only where and
            // what kind of error it was.
            PartnerData::parse(config.kind, &body).map_err(|e| {
                CallError::Malformed(format!(
                    "{:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })
        }
        404 => Err(CallError::NotFound),
        429 => Err(CallError::RateLimited(retry_after(response.headers()))),
        500..=599 => Err(CallError::Server(status)),
        // 400, 401, 403, 422 and any other answer we do not expect: our side is wrong.
        _ => Err(CallError::Refused(status)),
    }
}
