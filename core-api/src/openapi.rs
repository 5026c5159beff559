//! `GET /openapi.json`: the API described as OpenAPI 3, generated from the handlers' and
//! types' annotations (utoipa), so the document cannot drift from the code.

use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Credit-analysis streaming API",
        description = "Credit analyses of a person by CPF, streamed over Server-Sent Events; transaction classification."
    ),
    paths(
        crate::api::start_analysis,
        crate::api::get_analysis,
        crate::api::events,
        crate::transactions::list,
        crate::transactions::categories,
        crate::api::classify,
        crate::stream_classify::classify_stream,
    ),
    components(schemas(
        crate::api::StartBody,
        crate::api::Started,
        crate::api::Problem,
        crate::transactions::TransactionView,
        crate::transactions::TransactionsPage,
        crate::transactions::Categories,
        crate::store::LabelTotal,
        crate::api::ClassifyItem,
        crate::api::ClassifyBody,
        crate::api::ClassifyResponse,
        crate::api::Classified,
        crate::api::RunnerUp,
        crate::analysis::Snapshot,
        crate::analysis::PartnerState,
        crate::analysis::Status,
    )),
    modifiers(&ApiKey)
)]
pub struct ApiDoc;

/// Declares the bearer API key the operations refer to as `api_key`.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn serve() -> Response {
    Json(ApiDoc::openapi()).into_response()
}
