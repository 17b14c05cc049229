//! The OpenAPI document, generated from the handlers' annotations and the wire types.
//!
//! What the handlers take is declared here too: the request bodies (fact0's
//! `AuditEventInput` and the batch envelope) as schemas that mirror the validation in
//! `sealtrail_core::event::parse_input`, which has the final word. The Python suite runs
//! schemathesis against the document as served (`tests/python/test_openapi_contract.py`).

use axum::Json;
use sealtrail_core::event::{ActorType, Outcome};
use serde::Deserialize;
use utoipa::openapi::content::Content;
use utoipa::openapi::header::Header;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Ref, Schema, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{PathItem, RefOr};
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
        crate::redact::redact_event,
        crate::retention::get_retention,
        crate::retention::set_retention,
        crate::retention::clear_retention,
        crate::stream::stream_events,
        crate::tlog::get_checkpoint,
        crate::tlog::get_log_key,
        crate::tlog::get_inclusion_proof,
        crate::tlog::get_consistency_proof,
        crate::tiles::get_checkpoint,
        crate::tiles::get_tile,
        crate::export::export,
        crate::export::evidence_pack,
        crate::streams::create_destination,
        crate::streams::list_destinations,
        crate::streams::get_destination,
        crate::streams::delete_destination,
        crate::streams::resume_destination,
    ),
    components(schemas(
        sealtrail_core::Record,
        sealtrail_core::Receipt,
        sealtrail_core::ItemError,
        AuditEventInput,
        ActorInput,
        ResourceInput,
        BatchInput,
        crate::ingest::BatchResult,
        crate::query::EventListResponse,
        crate::query::SingleVerifyResult,
        crate::query::VerifyResult,
        crate::query::BrokenEvent,
        crate::error::ErrorBody,
        crate::redact::RedactRequest,
        crate::redact::RedactResult,
        crate::retention::RetentionStatus,
        crate::retention::RetentionPolicyBody,
        sealtrail_core::record::Redaction,
        crate::tlog::LogKey,
        crate::tlog::InclusionProofResponse,
        crate::tlog::ConsistencyProofResponse,
        crate::streams::CreateBody,
        crate::streams::ResumeBody,
        crate::streams::CreatedDestination,
        crate::streams::DestinationView,
        crate::streams::DestinationList,
    )),
    modifiers(&BearerAuth, &RecordShapes, &SharedErrors),
    tags((name = "Ingest"), (name = "Query"), (name = "Verify"), (name = "Stream"), (name = "Verifiable log"), (name = "Redaction"), (name = "Retention"), (name = "Log streams"))
)]
pub struct ApiDoc;

/// fact0's `AuditEventInput`: the body of `POST /v1/events` and each item of a batch.
/// Lengths are limits in UTF-8 bytes (`sealtrail_core::limits`); strings must not be
/// blank nor hold control characters.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a declaration only: `parse_input` reads the body
pub struct AuditEventInput {
    /// The idempotency key: the same id with the same content answers the original
    /// record, with other content `409`. Default: a server-generated UUIDv7.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$"
    )]
    id: Option<String>,
    /// When it happened, RFC 3339 with any offset (stored as UTC with microseconds).
    /// Default: when sealtrail accepted it.
    #[schema(format = DateTime)]
    timestamp: Option<String>,
    actor: ActorInput,
    /// Dot-notation, e.g. `document.delete`: no whitespace, no empty segment.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\s.\x00-\x1f\x7f-\x9f]+(\.[^\s.\x00-\x1f\x7f-\x9f]+)*$"
    )]
    action: String,
    resource: ResourceInput,
    outcome: Outcome,
    /// Any JSON object, at most 32 KiB once serialized; I-JSON (integers within
    /// ±(2^53−1), no duplicate keys). Default: `{}`.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Who did it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ActorInput {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    id: String,
    #[serde(rename = "type")]
    actor_type: Option<ActorType>,
    #[schema(
        min_length = 1,
        max_length = 320,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    email: Option<String>,
}

/// What it was done to.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ResourceInput {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    id: String,
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    resource_type: String,
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
}

/// The body of `POST /v1/events/batch`. An invalid item is rejected by its index in the
/// answer while the others are committed.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchInput {
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<AuditEventInput>,
}

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

/// `Record` has two shapes (issue 15), declared as `oneOf`:
/// - `UnredactedRecord`: every member of DESIGN.md §2 (the derived schema of
///   `sealtrail_core::Record`, without `redacted`);
/// - `RedactedRecord`: `hash`, `id`, `prev_hash`, `redacted`, `sequence_number`,
///   `tenant_id` and nothing else.
///
/// A record is exactly one of them (the first has `action` and no `redacted`, the second
/// the reverse). `RecordWithProof`: the `201` of `POST /v1/events?sync=true&proof=true` is
/// a record just committed (never redacted) plus `checkpoint` and `inclusion_proof` (a
/// sealtrail extension), a copy of `UnredactedRecord` with those two, kept in step by
/// construction.
struct RecordShapes;

impl Modify for RecordShapes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let Some(RefOr::T(Schema::Object(mut record))) = components.schemas.get("Record").cloned()
        else {
            panic!("the Record schema is an object");
        };
        record
            .properties
            .remove("redacted")
            .expect("Record declares redacted");
        record.description = Some(
            "A committed record: every member of the record and hash spec (DESIGN.md §2)".into(),
        );
        if !record.required.iter().any(|r| r == "hash") {
            record.required.push("hash".into());
            record.required.sort();
        }
        if let Some(RefOr::T(Schema::Object(hash))) = record.properties.get_mut("hash") {
            hash.description = Some(
                "Lowercase hex SHA-256 of the record's JCS canonical form without `hash`".into(),
            );
        }

        let mut with_proof = record.clone();
        with_proof.description = Some(
            "A committed record; with `proof=true`, also the signed checkpoint of the log up to it and its inclusion proof in that checkpoint".into(),
        );
        with_proof.properties.insert(
            "checkpoint".into(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "C2SP signed note of the tenant's log up to this record",
                ))
                .into(),
        );
        with_proof.properties.insert(
            "inclusion_proof".into(),
            Ref::from_schema_name("InclusionProofResponse").into(),
        );

        let mut redacted = ObjectBuilder::new()
            .description(Some(
                "A redacted record: its content was erased for good by the redaction event it names (a later record of the same chain). `hash` is the hash it was committed with; the next record's `prev_hash` and the Merkle tree still bind it, but it can no longer be recomputed",
            ))
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
        for (name, schema) in [
            (
                "hash",
                ObjectBuilder::new().schema_type(Type::String).into(),
            ),
            ("id", ObjectBuilder::new().schema_type(Type::String).into()),
            (
                "prev_hash",
                ObjectBuilder::new().schema_type(Type::String).into(),
            ),
            ("redacted", Ref::from_schema_name("Redaction").into()),
            (
                "sequence_number",
                record
                    .properties
                    .get("sequence_number")
                    .cloned()
                    .expect("Record declares sequence_number"),
            ),
            (
                "tenant_id",
                ObjectBuilder::new().schema_type(Type::String).into(),
            ),
        ] {
            redacted = redacted.property(name, schema).required(name);
        }

        let either = OneOfBuilder::new()
            .item(Ref::from_schema_name("UnredactedRecord"))
            .item(Ref::from_schema_name("RedactedRecord"))
            .description(Some(
                "A committed record as reads return it: whole, or redacted (its content erased, its place in the chain kept)",
            ));
        components
            .schemas
            .insert("UnredactedRecord".into(), record.into());
        components.schemas.insert(
            "RedactedRecord".into(),
            Schema::Object(redacted.build()).into(),
        );
        components
            .schemas
            .insert("Record".into(), Schema::OneOf(either.build()).into());
        components
            .schemas
            .insert("RecordWithProof".into(), with_proof.into());
    }
}

/// The errors every authenticated operation may answer, whatever it does: the key
/// (`401`, `403`), its rate (`429`), and a store or log that is down or overloaded
/// (`503`). Each operation's annotation declares its own errors on top.
struct SharedErrors;

const SHARED_ERRORS: [(&str, &str, bool); 4] = [
    ("401", "Missing, unknown or revoked API key", false),
    ("403", "The key lacks the scope this operation needs", false),
    (
        "429",
        "Over the key's or tenant's request rate, or its concurrent exports/streams; retry after Retry-After",
        true,
    ),
    (
        "503",
        "The store or the log is unavailable or overloaded; retry after Retry-After",
        true,
    ),
];

fn operations_mut(
    item: &mut PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in operations_mut(item) {
                if op.security.as_ref().is_none_or(Vec::is_empty) {
                    continue;
                }
                for (status, description, retry_after) in SHARED_ERRORS {
                    let response = op
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(error_response(description, retry_after)));
                    if let RefOr::T(response) = response
                        && response.description.is_empty()
                    {
                        response.description = description.into();
                    }
                }
                // An operation's own 429/503/507 carries Retry-After as well (`ApiError`).
                for status in ["429", "503", "507"] {
                    if let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) {
                        response
                            .headers
                            .entry("Retry-After".into())
                            .or_insert_with(retry_after_header);
                    }
                }
            }
        }
    }
}

fn retry_after_header() -> Header {
    let mut header = Header::new(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1)),
    );
    header.description = Some("seconds".into());
    header
}

/// An error answer: the `ErrorBody` envelope, and `Retry-After` (seconds) when it says when
/// to retry.
fn error_response(description: &str, retry_after: bool) -> utoipa::openapi::Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    if retry_after {
        response = response.header("Retry-After", retry_after_header());
    }
    response.build()
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn doc() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn operations(doc: &Value) -> impl Iterator<Item = (String, String, &Value)> {
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .iter()
                    .map(move |(method, op)| (path.clone(), method.clone(), op))
            })
    }

    /// Every parameter is declared where it is: a path parameter names a `{segment}` of
    /// its path, everything else is a query parameter (or a header), optional unless the
    /// handler answers `400` without it. The document used to declare all 26 query
    /// parameters `in: path, required: true`.
    #[test]
    fn parameters_are_declared_where_they_are() {
        let doc = doc();
        let required_queries = [
            ("/v1/proof/inclusion", "sequence_number"),
            ("/v1/proof/consistency", "from"),
        ];
        let mut queries = 0;
        for (path, method, op) in operations(&doc) {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                match param["in"].as_str().unwrap() {
                    "path" => assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: {name} is not a path segment"
                    ),
                    "query" => {
                        queries += 1;
                        assert_eq!(
                            param["required"] == json!(true),
                            required_queries.contains(&(path.as_str(), name)),
                            "{method} {path}: query parameter {name} is required only if the handler needs it"
                        );
                    }
                    "header" => {}
                    other => panic!("{method} {path}: {name} in {other}"),
                }
            }
        }
        assert!(queries >= 20, "only {queries} query parameters declared");
    }

    /// The bodies are declared, not `{"type":"object"}`: fact0's `AuditEventInput` for one
    /// event, `{"events": [AuditEventInput, …]}` for a batch, with the members and limits
    /// the validation enforces.
    #[test]
    fn request_bodies_have_real_schemas() {
        let doc = doc();
        for (path, schema) in [
            ("/v1/events", "AuditEventInput"),
            ("/v1/events/batch", "BatchInput"),
        ] {
            let body = &doc["paths"][path]["post"]["requestBody"];
            assert_eq!(body["required"], json!(true), "{path}");
            assert_eq!(
                body["content"]["application/json"]["schema"]["$ref"],
                json!(format!("#/components/schemas/{schema}")),
                "{path}"
            );
        }
        let schemas = &doc["components"]["schemas"];
        let event = &schemas["AuditEventInput"];
        let mut required: Vec<_> = event["required"].as_array().unwrap().clone();
        required.sort_by_key(|v| v.to_string());
        assert_eq!(
            required,
            vec![
                json!("action"),
                json!("actor"),
                json!("outcome"),
                json!("resource")
            ]
        );
        for name in [
            "AuditEventInput",
            "ActorInput",
            "ResourceInput",
            "BatchInput",
        ] {
            assert_eq!(
                schemas[name]["additionalProperties"],
                json!(false),
                "{name}: unknown members are refused"
            );
        }
        assert_eq!(event["properties"]["id"]["maxLength"], json!(128));
        assert_eq!(
            schemas["BatchInput"]["properties"]["events"]["maxItems"],
            json!(1000)
        );
        assert_eq!(
            schemas["BatchInput"]["properties"]["events"]["items"]["$ref"],
            json!("#/components/schemas/AuditEventInput")
        );
    }

    /// Every error an operation declares is the `{"error":{"code","message"}}` envelope,
    /// and every authenticated operation declares the errors of authentication and rate
    /// limits.
    #[test]
    fn errors_are_declared_with_the_envelope() {
        let doc = doc();
        for (path, method, op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            for status in ["401", "403", "429", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not declare {status}"
                );
            }
            assert!(
                responses["429"]["headers"]["Retry-After"].is_object(),
                "{method} {path}: 429 without Retry-After"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        json!("#/components/schemas/ErrorBody"),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    /// Every `$ref` names a schema the document has (a parameter's enum once pointed
    /// nowhere, and schemathesis skipped it).
    #[test]
    fn every_reference_resolves() {
        fn walk(value: &Value, doc: &Value, at: &str) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let pointer = target.strip_prefix('#').unwrap_or(target);
                        assert!(
                            doc.pointer(pointer).is_some(),
                            "{at}: {target} does not resolve"
                        );
                    }
                    for (k, v) in map {
                        walk(v, doc, &format!("{at}/{k}"));
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, doc, at)),
                _ => {}
            }
        }
        let doc = doc();
        walk(&doc, &doc, "");
    }

    /// No parameter is declared nullable: a header or query value is text, never `null`.
    #[test]
    fn parameters_are_not_nullable() {
        let doc = doc();
        for (path, method, op) in operations(&doc) {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let ty = &param["schema"]["type"];
                assert!(
                    !ty.as_array().is_some_and(|t| t.contains(&json!("null"))),
                    "{method} {path}: {} is nullable",
                    param["name"]
                );
            }
        }
    }

    /// The sync `201` with `proof=true` carries two members `Record` does not admit; it is
    /// declared as `RecordWithProof`, Record's members and those two.
    #[test]
    fn the_sync_record_with_proof_is_declared() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let record = schemas["UnredactedRecord"]["properties"]
            .as_object()
            .unwrap();
        let with_proof = schemas["RecordWithProof"]["properties"]
            .as_object()
            .unwrap();
        for name in record.keys() {
            assert!(with_proof.contains_key(name), "{name}");
        }
        assert!(
            with_proof.contains_key("checkpoint") && with_proof.contains_key("inclusion_proof")
        );
        assert_eq!(
            schemas["RecordWithProof"]["required"],
            schemas["UnredactedRecord"]["required"]
        );
        assert_eq!(
            doc["paths"]["/v1/events"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
                ["$ref"],
            json!("#/components/schemas/RecordWithProof")
        );
    }

    /// A record read back is exactly one of `Record`'s two shapes, member for member: a
    /// whole record has every member of `UnredactedRecord` and no `redacted`; a redacted one
    /// has exactly the members of `RedactedRecord`. Both shapes admit nothing else.
    #[test]
    fn a_record_is_declared_whole_or_redacted() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["Record"]["oneOf"],
            json!([
                {"$ref": "#/components/schemas/UnredactedRecord"},
                {"$ref": "#/components/schemas/RedactedRecord"}
            ])
        );
        let record: sealtrail_core::Record = serde_json::from_value(json!({
            "action": "document.update",
            "actor": {"id": "u1", "type": "human"},
            "created_at": "2026-12-03T00:00:00.000000Z",
            "hash": "ab".repeat(32),
            "id": "evt-1",
            "metadata": {},
            "outcome": "success",
            "prev_hash": sealtrail_core::ZERO_HASH,
            "resource": {"id": "doc-1", "type": "document"},
            "sequence_number": 1,
            "tenant_id": "acme",
            "timestamp": "2026-12-03T00:00:00.000000Z",
        }))
        .unwrap();
        let redacted = record.redact(sealtrail_core::record::Redaction {
            event_id: "evt-9".into(),
            sequence_number: 9,
        });
        for (value, shape) in [(&record, "UnredactedRecord"), (&redacted, "RedactedRecord")] {
            let value = serde_json::to_value(value).unwrap();
            let members: Vec<&String> = value.as_object().unwrap().keys().collect();
            let declared: Vec<&String> = schemas[shape]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            let mut required: Vec<&str> = schemas[shape]["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            required.sort();
            assert_eq!(members, declared, "{shape}");
            assert_eq!(
                members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                required,
                "{shape}"
            );
            assert_eq!(
                schemas[shape]["additionalProperties"],
                json!(false),
                "{shape}"
            );
        }
    }
}
