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
        crate::http::routes::analyses::start_analysis,
        crate::http::routes::analyses::get_analysis,
        crate::http::routes::analyses::erase_analysis,
        crate::http::routes::audit::list,
        crate::http::routes::audit::search,
        crate::http::routes::audit::export,
        crate::http::routes::audit::export_search,
        crate::http::routes::webhooks::create,
        crate::http::routes::webhooks::list,
        crate::http::routes::webhooks::delete,
        crate::http::routes::webhooks::deliveries,
        crate::http::routes::webhooks::resend,
        crate::http::routes::events::events,
        crate::http::routes::transactions::list,
        crate::http::routes::transactions::categories,
        crate::http::routes::classify::classify,
        crate::http::routes::classify_stream::classify_stream,
    ),
    components(schemas(
        crate::http::routes::analyses::StartBody,
        crate::http::routes::analyses::Started,
        crate::http::error::Problem,
        crate::http::routes::audit::AuditEntry,
        crate::http::routes::audit::AuditPageView,
        crate::http::routes::audit::AuditSearch,
        crate::http::routes::webhooks::EndpointBody,
        crate::http::routes::webhooks::EndpointView,
        crate::http::routes::webhooks::EndpointList,
        crate::http::routes::webhooks::DeliveryView,
        crate::http::routes::webhooks::DeliveryList,
        crate::webhooks::DeliveryStatus,
        crate::http::routes::transactions::TransactionView,
        crate::http::routes::transactions::TransactionsPage,
        crate::http::routes::transactions::Categories,
        crate::store::LabelTotal,
        crate::http::routes::classify::ClassifyItem,
        crate::http::routes::classify::ClassifyBody,
        crate::http::routes::classify::ClassifyResponse,
        crate::http::routes::classify::Classified,
        crate::http::routes::classify::RunnerUp,
        crate::domain::Snapshot,
        crate::domain::PartnerState,
        crate::domain::PartnerStatus,
        crate::domain::Status,
        crate::domain::Summary,
        crate::domain::summary::SummaryWindow,
        crate::domain::summary::Risk,
        crate::domain::AnalysisEvent,
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
