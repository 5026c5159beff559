//! The browser page at `/`: a person starts a credit analysis and watches it happen.
//!
//! Plain HTML, CSS and JavaScript, embedded in the binary with `include_str!` so that
//! `cargo run --release` serves it with no build step and nothing fetched from elsewhere. The
//! page is a client of the public API like any other: it sends the API key the person typed
//! (kept in the tab's `sessionStorage`), follows `events_url` with `EventSource`, and reads the
//! query API for the table. The content security policy holds it to this origin, so the page
//! cannot load a script, a style or a font from outside even by mistake.

use axum::http::header::{HeaderName, CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Only this origin, no inline script or style, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            // Small, and changed with every release: revalidating costs little.
            (CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("content-security-policy"), POLICY),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
            (HeaderName::from_static("referrer-policy"), "no-referrer"),
        ],
        body,
    )
}

/// The page's three files.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}
