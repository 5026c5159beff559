//! Reading back what an analysis stored: its transactions, filtered and paged, and the count
//! and total per label. The same on every store; tenancy holds (another tenant's analysis is
//! 404), and every query parameter is checked, a bad one named in a 422.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Caller, Scope};
use crate::http::audit::{self, Client};
use crate::http::error::{invalid, ApiError, Problem};
use crate::http::extract::api_key;
use crate::state::AppState;
use crate::store::{actions, AccessRecord};
use crate::store::{LabelTotal, Position, TransactionQuery, TransactionStore};

/// Rows per page by default and at most.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;

/// One classified transaction of an analysis.
#[derive(Serialize, ToSchema)]
pub struct TransactionView {
    pub movement_id: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub description: String,
    /// Signed, in cents; negative is money out.
    pub amount_cents: i64,
    pub label: String,
    pub probability: f32,
    pub confidence: String,
}

/// A page of transactions.
#[derive(Serialize, ToSchema)]
pub struct TransactionsPage {
    pub transactions: Vec<TransactionView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Count and total per label.
#[derive(Serialize, ToSchema)]
pub struct Categories {
    pub categories: Vec<LabelTotal>,
}

/// The caller's analysis, or 404 (also for another tenant's), as the caller and the keyed
/// hash of the person. Its snapshot says whose it is; once the snapshot has left memory (an
/// hour after the end, in the embedded shape), its stored transactions, which carry their
/// tenant, say so.
pub async fn own_analysis(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    scope: Scope,
) -> Result<(Caller, String), ApiError> {
    let caller = state.auth.authorize(api_key(headers), scope)?;
    if let Some(s) = state.analyses.get(id, &caller.tenant).await {
        return Ok((caller, s.cpf_hash));
    }
    let first = state
        .store
        .query(TransactionQuery {
            analysis_id: id.to_string(),
            limit: 1,
            ..TransactionQuery::default()
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match first.transactions.into_iter().next() {
        Some(t) if t.tenant == caller.tenant => Ok((caller, t.cpf_hash)),
        _ => Err(ApiError::NotFound("analysis")),
    }
}

fn date(field: &'static str, v: &str) -> Result<String, ApiError> {
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map(|d| d.to_string())
        .map_err(|_| invalid(field, format!("{field} must be a date as YYYY-MM-DD")))
}

fn cents(field: &'static str, v: &str) -> Result<i64, ApiError> {
    v.parse()
        .map_err(|_| invalid(field, format!("{field} must be a whole number of cents")))
}

/// The query the parameters describe, or the first parameter at fault.
fn parse_query(id: &str, params: &HashMap<String, String>) -> Result<TransactionQuery, ApiError> {
    let mut q = TransactionQuery {
        analysis_id: id.into(),
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    for name in names {
        let v = params[name].as_str();
        match name.as_str() {
            "label" => {
                let label = classifier::Label::from_str(&v.to_ascii_uppercase()).map_err(|_| {
                    invalid("label", "label must be one of the 19 transaction labels")
                })?;
                q.label = Some(label.as_str().into());
            }
            "from" => q.from = Some(date("from", v)?),
            "to" => q.to = Some(date("to", v)?),
            "min_amount_cents" => q.min_cents = Some(cents("min_amount_cents", v)?),
            "max_amount_cents" => q.max_cents = Some(cents("max_amount_cents", v)?),
            "q" => {
                if v.len() > 200 {
                    return Err(invalid("q", "q must be at most 200 bytes"));
                }
                q.text = Some(v.into());
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| invalid("limit", format!("limit must be 1 to {MAX_LIMIT}")))?;
            }
            "cursor" => {
                q.after = Some(Position::from_cursor(v).ok_or_else(|| {
                    invalid("cursor", "cursor must be a next_cursor this API returned")
                })?);
            }
            _ => {
                return Err(ApiError::Rejected(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown query parameter (known: label, from, to, min_amount_cents, max_amount_cents, q, limit, cursor)".into(),
                ))
            }
        }
    }
    if let (Some(f), Some(t)) = (&q.from, &q.to) {
        if f > t {
            return Err(invalid("from", "from must not be after to"));
        }
    }
    if let (Some(min), Some(max)) = (q.min_cents, q.max_cents) {
        if min > max {
            return Err(invalid(
                "min_amount_cents",
                "min_amount_cents must not be above max_amount_cents",
            ));
        }
    }
    Ok(q)
}

#[utoipa::path(
    get,
    path = "/v1/analyses/{id}/transactions",
    params(
        ("id" = String, Path, description = "The analysis id"),
        ("label" = Option<String>, Query, description = "Only this label"),
        ("from" = Option<String>, Query, description = "On or after this date (YYYY-MM-DD)"),
        ("to" = Option<String>, Query, description = "On or before this date (YYYY-MM-DD)"),
        ("min_amount_cents" = Option<i64>, Query, description = "Signed amount at least this"),
        ("max_amount_cents" = Option<i64>, Query, description = "Signed amount at most this"),
        ("q" = Option<String>, Query, description = "Words that must all appear in the description (plain text, case-insensitive)"),
        ("limit" = Option<usize>, Query, description = "Rows per page, 1 to 1000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Transactions by date, then movement id", body = TransactionsPage),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such analysis for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A query parameter is malformed or out of range; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<TransactionsPage>, ApiError> {
    let (caller, person) = own_analysis(&state, &headers, &id, Scope::AnalysesRead).await?;
    let q = parse_query(&id, &params)?;
    audit::record(
        &state,
        AccessRecord::now(&caller.tenant, &caller.key_id, actions::TRANSACTIONS)
            .about(&id, &person)
            .from_client(client.0),
    )
    .await?;
    let page = state
        .store
        .query(q)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(TransactionsPage {
        next_cursor: page.next.as_ref().map(Position::cursor),
        transactions: page
            .transactions
            .into_iter()
            .map(|t| TransactionView {
                movement_id: t.movement_id,
                date: t.date,
                description: t.description,
                amount_cents: t.amount_cents,
                label: t.label,
                probability: t.probability,
                confidence: t.confidence,
            })
            .collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/analyses/{id}/categories",
    params(("id" = String, Path, description = "The analysis id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Count and total per label, by label", body = Categories),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such analysis for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn categories(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<Categories>, ApiError> {
    let (caller, person) = own_analysis(&state, &headers, &id, Scope::AnalysesRead).await?;
    audit::record(
        &state,
        AccessRecord::now(&caller.tenant, &caller.key_id, actions::CATEGORIES)
            .about(&id, &person)
            .from_client(client.0),
    )
    .await?;
    let categories = state
        .store
        .totals(&id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(Categories { categories }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn field_of(e: ApiError) -> Option<&'static str> {
        match e {
            ApiError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        for (name, value) in [
            ("label", "FOOD"),
            ("from", "2026-13-01"),
            ("to", "yesterday"),
            ("min_amount_cents", "1.5"),
            ("max_amount_cents", "x"),
            ("limit", "0"),
            ("limit", "1001"),
            ("cursor", "!!"),
        ] {
            let e = parse_query("a", &params(&[(name, value)])).err().unwrap();
            assert_eq!(field_of(e), Some(name), "{name}={value}");
        }
        let e = parse_query(
            "a",
            &params(&[("from", "2026-10-02"), ("to", "2026-10-01")]),
        );
        assert_eq!(field_of(e.err().unwrap()), Some("from"));
        assert!(parse_query("a", &params(&[("sort", "x")])).is_err());
    }

    #[test]
    fn good_parameters_make_the_query() {
        let q = parse_query(
            "a",
            &params(&[
                ("label", "entertainment_casinos_and_gambling"),
                ("from", "2026-10-01"),
                ("min_amount_cents", "-500"),
                ("q", "bet \"OR\" *"),
                ("limit", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(
            q.label.as_deref(),
            Some("ENTERTAINMENT_CASINOS_AND_GAMBLING")
        );
        assert_eq!(q.min_cents, Some(-500));
        assert_eq!(q.limit, 5);
        assert_eq!(q.text.as_deref(), Some("bet \"OR\" *"));
    }

    const NAMES: [&str; 8] = [
        "label",
        "from",
        "to",
        "min_amount_cents",
        "max_amount_cents",
        "q",
        "limit",
        "cursor",
    ];

    proptest::proptest! {
        /// Any query parameters: no panic; either a query that keeps the API's bounds, or a
        /// 422 that names a known parameter (or lists them, for an unknown one).
        #[test]
        fn any_query_is_a_bounded_query_or_names_the_parameter_at_fault(
            pairs in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::sample::select(NAMES.to_vec()).prop_map(String::from),
                        "[a-z_]{1,10}",
                    ],
                    proptest::prop_oneof![
                        "-?[0-9]{1,20}",
                        "[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}",
                        "[A-Za-z_]{0,40}",
                        "\\PC{0,240}",
                        "[A-Za-z0-9_-]{0,40}",
                    ],
                ),
                0..6,
            ),
        ) {
            let params: HashMap<String, String> = pairs.into_iter().collect();
            match parse_query("a", &params) {
                Ok(q) => {
                    prop_assert!((1..=MAX_LIMIT).contains(&q.limit));
                    prop_assert!(q.text.as_ref().is_none_or(|t| t.len() <= 200));
                    if let (Some(f), Some(t)) = (&q.from, &q.to) {
                        prop_assert!(f <= t);
                    }
                    if let (Some(min), Some(max)) = (q.min_cents, q.max_cents) {
                        prop_assert!(min <= max);
                    }
                }
                Err(ApiError::Invalid { field, .. }) => prop_assert!(NAMES.contains(&field)),
                Err(ApiError::Rejected(status, _)) => {
                    prop_assert_eq!(status, axum::http::StatusCode::UNPROCESSABLE_ENTITY)
                }
                Err(other) => prop_assert!(false, "{:?}", other),
            }
        }

        /// A cursor this API made reads back to its place; anything else is no place.
        #[test]
        fn cursors_read_back_and_anything_else_is_refused(
            date in "(19[7-9][0-9]|20[0-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
            movement_id in "\\PC{0,40}",
            other in "\\PC{0,60}",
        ) {
            let p = Position { date, movement_id };
            proptest::prop_assert_eq!(Position::from_cursor(&p.cursor()), Some(p));
            let _ = Position::from_cursor(&other);
        }
    }
}
