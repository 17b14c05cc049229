//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "sealtrail audit API", description = "Tamper-evident, fact0-compatible audit log. Authenticate with `Authorization: Bearer alk_live_…`."),
    paths(
        crate::ingest::log_event,
        crate::ingest::log_batch,
        crate::query::get_receipt,
        crate::query::list_events,
        crate::query::get_event,
        crate::query::verify_event,
        crate::query::verify_chain,
        crate::stream::stream_events,
        crate::tlog::get_checkpoint,
        crate::tlog::get_log_key,
        crate::tlog::get_inclusion_proof,
        crate::tlog::get_consistency_proof,
        crate::export::export,
        crate::export::evidence_pack,
    ),
    components(schemas(
        sealtrail_core::Record,
        sealtrail_core::Receipt,
        sealtrail_core::ItemError,
        crate::ingest::BatchResult,
        crate::query::EventListResponse,
        crate::query::SingleVerifyResult,
        crate::query::VerifyResult,
        crate::query::BrokenEvent,
        crate::error::ErrorBody,
        crate::tlog::LogKey,
        crate::tlog::InclusionProofResponse,
        crate::tlog::ConsistencyProofResponse,
    )),
    modifiers(&BearerAuth),
    tags((name = "Ingest"), (name = "Query"), (name = "Verify"), (name = "Stream"), (name = "Verifiable log"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("alk_live_…")
                    .build(),
            ),
        );
    }
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
