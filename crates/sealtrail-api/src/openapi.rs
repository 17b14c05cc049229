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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parameter is declared where it is: a path parameter names a `{segment}` of
    /// its path, everything else is an optional query parameter (or a header). The
    /// document used to declare all 26 query parameters `in: path, required: true`.
    #[test]
    fn parameters_are_declared_where_they_are() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut queries = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for param in op["parameters"].as_array().into_iter().flatten() {
                    let name = param["name"].as_str().unwrap();
                    match param["in"].as_str().unwrap() {
                        "path" => assert!(
                            path.contains(&format!("{{{name}}}")),
                            "{method} {path}: {name} is not a path segment"
                        ),
                        "query" => {
                            queries += 1;
                            assert_ne!(
                                param["required"],
                                serde_json::json!(true),
                                "{method} {path}: query parameter {name} is optional"
                            );
                        }
                        "header" => {}
                        other => panic!("{method} {path}: {name} in {other}"),
                    }
                }
            }
        }
        assert!(queries >= 20, "only {queries} query parameters declared");
    }
}
