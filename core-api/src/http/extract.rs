//! What handlers read off a request besides its body.

use axum::http::{header, HeaderMap};

/// The API key of a request: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(integrations::auth::bearer)
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
}
