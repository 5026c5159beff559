//! What every module of this suite uses: the service started on port 0 with its test keys
//! (`spawn_app`, `spawn_app_with`, `ACME`, `BETA`, `READER`), its requests and its SSE
//! streams. These are the black-box helpers of `tests/common`, shared with `browser.rs`, so
//! each exists once.

#[path = "../common/mod.rs"]
mod common;

pub use common::*;
