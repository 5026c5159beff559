//! The API's one error type: RFC 9457 problem details. A 4xx tells the client what it did
//! wrong (and, on 422, which field); a 5xx says only "something went wrong" while the cause
//! goes to the log.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Denied, Scope};

/// An error as RFC 9457 problem details.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What was wrong, for a person to read.
    pub detail: String,
    /// The request field at fault, on 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The one error type of the API: a 4xx says what the client did wrong; a 5xx says only that
/// something went wrong, and the cause goes to the log.
#[derive(Debug)]
pub enum ApiError {
    Unauthenticated,
    Forbidden(Scope),
    NotFound(&'static str),
    RateLimited(Duration),
    Invalid {
        field: &'static str,
        detail: String,
    },
    Rejected(StatusCode, String),
    Internal(String),
    /// A dependency the request needs is down (the cause is logged, never shown).
    Unavailable(String),
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated => ApiError::Unauthenticated,
            Denied::Forbidden(s) => ApiError::Forbidden(s),
            Denied::RateLimited(w) => ApiError::RateLimited(w),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut field = None;
        let (status, detail) = match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "an API key is needed: `Authorization: Bearer <key>`".to_string(),
            ),
            ApiError::Forbidden(s) => (
                StatusCode::FORBIDDEN,
                format!("this key lacks the `{}` scope", s.as_str()),
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, format!("no such {what}")),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests for this key".to_string(),
            ),
            ApiError::Invalid { field: f, detail } => {
                field = Some(f);
                (StatusCode::UNPROCESSABLE_ENTITY, detail)
            }
            // A refusal may quote what was refused (serde's reasons do): never the value.
            ApiError::Rejected(status, detail) => {
                (status, integrations::service::without_values(&detail))
            }
            ApiError::Unavailable(cause) => {
                tracing::error!(cause = %cause, "Request refused: a dependency is down.");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service cannot serve this now; try again later".to_string(),
                )
            }
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "Request failed.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong".to_string(),
                )
            }
        };
        let body = Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail,
            field: field.map(String::from),
        };
        let body = serde_json::to_string(&body).expect("problems serialise");
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub fn invalid(field: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// A body axum could not read as JSON: its status (400, 413, 415, 422) and axum's reason.
pub fn rejected(e: JsonRejection) -> ApiError {
    ApiError::Rejected(e.status(), e.body_text())
}
