//! `POST /v1/classifications`: label up to 10,000 movements in one request and answer them
//! all at once, in order; a bad movement is a 422 naming its index.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Scope;
use crate::http::error::{invalid, rejected, ApiError, Problem};
use crate::http::extract::api_key;
use crate::state::AppState;

/// Transactions one `POST /v1/classifications` may carry.
pub const MAX_CLASSIFY: usize = 10_000;

/// One movement to classify.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyItem {
    /// The caller's id, echoed in the result.
    pub id: String,
    /// The statement line, 1 to 1024 bytes.
    pub description: String,
    /// Signed amount in BRL; negative is money out.
    pub amount: f64,
    /// Merchant category code, 1 to 4 digits.
    #[serde(default)]
    pub mcc: Option<String>,
    /// The bureau's movement type (`pix`, `cartao`, ...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyBody {
    /// Up to 10,000 movements.
    pub transactions: Vec<ClassifyItem>,
}

/// A label the model did not pick.
#[derive(Serialize, ToSchema)]
pub struct RunnerUp {
    pub label: String,
    pub probability: f32,
}

/// The label of one movement.
#[derive(Serialize, ToSchema)]
pub struct Classified {
    pub id: String,
    /// One of the 19 PFC labels of taxonomy.md.
    pub label: String,
    pub probability: f32,
    /// `VERY_HIGH` (> 0.98), `HIGH` (> 0.90), `MEDIUM` (> 0.70) or `LOW`.
    pub confidence: String,
    /// The next two labels, best first.
    pub runners_up: Vec<RunnerUp>,
}

#[derive(Serialize, ToSchema)]
pub struct ClassifyResponse {
    pub results: Vec<Classified>,
}

/// Checks and classifies one movement; the error says what is wrong with it.
pub fn classify_one(
    state: &AppState,
    ws: &mut classifier::model::Workspace,
    t: &ClassifyItem,
) -> Result<Classified, String> {
    if t.description.trim().is_empty()
        || t.description.len() > classifier::data::MAX_DESCRIPTION_BYTES
    {
        return Err("description must be 1 to 1024 bytes".into());
    }
    if !t.amount.is_finite() {
        return Err("amount must be a number".into());
    }
    let mcc = match t.mcc.as_deref() {
        None => None,
        Some(m) => classifier::data::parse_mcc(m)?,
    };
    let p = state.scorer.predict_with(
        &classifier::features::MovementInput {
            description: &t.description,
            amount: t.amount,
            mcc,
            kind: t.kind.as_deref(),
        },
        ws,
    );
    crate::metrics::MOVEMENTS_CLASSIFIED.fetch_add(1, Ordering::Relaxed);
    Ok(Classified {
        id: t.id.clone(),
        label: p.label.as_str().into(),
        probability: p.probability,
        confidence: p.confidence.as_str().into(),
        runners_up: p
            .runners_up
            .iter()
            .flatten()
            .map(|a| RunnerUp {
                label: a.label.as_str().into(),
                probability: a.probability,
            })
            .collect(),
    })
}

#[utoipa::path(
    post,
    path = "/v1/classifications",
    request_body = ClassifyBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One result per movement, in order", body = ClassifyResponse),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `classify` scope", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "More than 10,000 movements", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A movement is invalid; `detail` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ClassifyBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    state.auth.authorize(api_key(&headers), Scope::Classify)?;
    let Json(body) = body.map_err(rejected)?;
    if body.transactions.len() > MAX_CLASSIFY {
        return Err(ApiError::Rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {MAX_CLASSIFY} transactions per request; this has {}",
                body.transactions.len()
            ),
        ));
    }
    let mut ws = classifier::model::Workspace::default();
    let results = body
        .transactions
        .iter()
        .enumerate()
        .map(|(i, t)| {
            classify_one(&state, &mut ws, t)
                .map_err(|e| invalid("transactions", format!("transactions[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ClassifyResponse { results }).into_response())
}
