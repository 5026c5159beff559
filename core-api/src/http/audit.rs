//! What handlers need to keep the access audit trail (`store::AuditTrail`): the client's
//! address ([`Client`]) and [`record`], which a handler awaits before it answers with a
//! person's data. A read that cannot be recorded is not served: the trail is what lets a person
//! learn who saw their data, so it fails closed (503, the cause logged).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{AccessRecord, AuditTrail};

/// The client's address: the connection's peer or, when that peer is one of the operator's
/// `TRUSTED_PROXIES`, the address that proxy put last in `X-Forwarded-For`.
#[derive(Debug, Clone, Default)]
pub struct Client(pub Option<String>);

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Client(client_address(
            peer,
            parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .next_back(),
            &state.settings.trusted_proxies,
        )))
    }
}

/// The address to record for a request from `peer` with `forwarded` (the last
/// `X-Forwarded-For` header): the forwarded address only from a trusted proxy, and only when
/// it is an address.
fn client_address(
    peer: Option<IpAddr>,
    forwarded: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> Option<String> {
    let peer = peer?;
    if trusted.iter().any(|net| net.contains(&peer)) {
        if let Some(ip) = forwarded
            .and_then(|f| f.rsplit(',').next())
            .and_then(|last| last.trim().parse::<IpAddr>().ok())
        {
            return Some(ip.to_string());
        }
    }
    Some(peer.to_string())
}

/// Adds `record` to the trail; a failure is a 503 (the cause logged), so nothing is served
/// unrecorded.
pub async fn record(state: &AppState, record: AccessRecord) -> Result<(), ApiError> {
    let action = record.action.clone();
    state
        .store
        .record(record)
        .await
        .map_err(|e| ApiError::Unavailable(format!("recording `{action}` in the audit trail: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let forwarded = Some("203.0.113.9, 198.51.100.7");
        assert_eq!(
            client_address(Some(proxy), forwarded, &trusted).as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            client_address(Some(proxy), forwarded, &[]).as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            client_address(Some(proxy), Some("not an address"), &trusted).as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(client_address(None, forwarded, &trusted), None);
    }
}
