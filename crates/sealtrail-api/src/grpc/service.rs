//! `sealtrail.v1.AuditLog`: each call authenticates like REST, then calls the same
//! function the REST handler calls, and converts the answer.

use axum::http::HeaderValue;
use sealtrail_core::ValidationError;
use sealtrail_core::event::{EventFields, NormalizedEvent, normalize, validate_event};
use sealtrail_core::json::parse_strict_at;
use sealtrail_core::time::Micros;
use sealtrail_proto as pb;
use sealtrail_proto::audit_log_server::AuditLog;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::ingest::{self, BatchOutcome, EventOutcome};
use crate::query::{self, ListParams, VerifyParams};
use crate::redact;
use crate::stream;
use crate::streams;

/// Records buffered per `Tail` stream ahead of a slow reader.
const TAIL_BUFFER: usize = 500;

/// The gRPC service over the shared [`crate::Service`].
#[derive(Clone)]
pub struct AuditLogService {
    pub(crate) state: AppState,
}

impl AuditLogService {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    pub(crate) async fn caller<T>(
        &self,
        request: &Request<T>,
        scopes: &[Scope],
    ) -> Result<Caller, Status> {
        let value = authorization(request);
        Ok(self
            .state
            .keys
            .authenticate_value(self.state.store.as_ref(), value.as_ref(), scopes)
            .await?)
    }
}

/// The `authorization` metadata as an HTTP header value (the same bytes).
pub(crate) fn authorization<T>(request: &Request<T>) -> Option<HeaderValue> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
}

/// The JSON event a REST client would have sent for `input`, ready for the shared
/// validator. `metadata_json` is parsed by the same strict I-JSON parser as a REST body,
/// wrapped as `{"metadata": …}` so its depth counts exactly as inside a REST event; the
/// wrapper must come back with that single member, so text that is not one JSON value
/// (e.g. `{}, "x": 1`) is rejected rather than half-read.
pub(crate) fn event_value(input: &pb::AuditEventInput) -> Result<Value, ValidationError> {
    let mut event = pb::event_input_to_json(input);
    if let Some(metadata) = metadata_value(input)? {
        event.insert("metadata".into(), metadata);
    }
    Ok(Value::Object(event))
}

/// `metadata_json` parsed (see [`event_value`]); `None` when it is empty (not sent).
fn metadata_value(input: &pb::AuditEventInput) -> Result<Option<Value>, ValidationError> {
    if input.metadata_json.is_empty() {
        return Ok(None);
    }
    // Read at depth 2, where `metadata` sits in a REST body: the same nesting limit, and
    // the parser's own code (duplicate_key, number_out_of_range, …), as over REST; error
    // positions count from the start of `metadata_json`.
    parse_strict_at(input.metadata_json.as_bytes(), 2)
        .map(Some)
        .map_err(|e| ValidationError::new(e.code, format!("metadata_json: {}", e.message)))
}

/// Validates one gRPC event: exactly what [`event_value`] then `validate_event` give (the
/// rules of a REST body), without building the JSON value when the message passes every
/// check; anything else takes that general way, which names the error.
pub(crate) fn validate_message(
    input: &pb::AuditEventInput,
    now: Micros,
) -> Result<NormalizedEvent, ValidationError> {
    validate_owned(input.clone(), now)
}

/// [`validate_message`] for a message the caller owns (gRPC `Ingest`): the typed way moves
/// the strings out of the message instead of copying them, and puts them back before the
/// general way.
pub(crate) fn validate_owned(
    mut input: pb::AuditEventInput,
    now: Micros,
) -> Result<NormalizedEvent, ValidationError> {
    if let Some((fields, actor_type)) = take_fields(&mut input) {
        match fields.try_into_input() {
            Ok(checked) => return normalize(checked, now, ingest::new_id),
            Err(fields) => put_back(&mut input, *fields, actor_type),
        }
    }
    event_value(&input).and_then(|value| validate_event(value, now, ingest::new_id))
}

/// The message's members moved out as typed fields, with the actor's enum value (for
/// [`put_back`]); `None`, the message untouched, for a message the typed way does not take
/// (a missing actor, resource or outcome, an unknown enum value, metadata that does not
/// parse).
fn take_fields(input: &mut pb::AuditEventInput) -> Option<(EventFields, i32)> {
    let actor_type = input.actor.as_ref()?.r#type;
    input.resource.as_ref()?;
    let actor_name = pb::actor_type_name(actor_type).ok()?;
    let outcome = pb::outcome_name(input.outcome).ok()??;
    let metadata = metadata_value(input).ok()?;
    let actor = input.actor.take()?;
    let resource = input.resource.take()?;
    let fields = EventFields {
        id: input.id.take(),
        timestamp: input.timestamp.take(),
        actor_id: actor.id,
        actor_type: actor_name.map(str::to_string),
        actor_email: actor.email,
        action: std::mem::take(&mut input.action),
        resource_id: resource.id,
        resource_type: resource.r#type,
        resource_name: resource.name,
        outcome: outcome.to_string(),
        metadata,
    };
    Some((fields, actor_type))
}

/// Undoes [`take_fields`] (`outcome` and `metadata_json` never left the message).
fn put_back(input: &mut pb::AuditEventInput, fields: EventFields, actor_type: i32) {
    input.id = fields.id;
    input.timestamp = fields.timestamp;
    input.action = fields.action;
    input.actor = Some(pb::Actor {
        id: fields.actor_id,
        r#type: actor_type,
        email: fields.actor_email,
    });
    input.resource = Some(pb::Resource {
        id: fields.resource_id,
        r#type: fields.resource_type,
        name: fields.resource_name,
    });
}

fn missing_event() -> ApiError {
    ApiError::bad_request("missing_field", "event is required")
}

fn name_or_unknown(name: Result<Option<&'static str>, i32>) -> Option<String> {
    match name {
        Ok(name) => name.map(str::to_string),
        // The shared parser rejects it with the list of valid values.
        Err(n) => Some(format!("enum value {n}")),
    }
}

#[tonic::async_trait]
impl AuditLog for AuditLogService {
    async fn log_event(
        &self,
        request: Request<pb::LogEventRequest>,
    ) -> Result<Response<pb::LogEventResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Write]).await?;
        let request = request.into_inner();
        let input = request.event.ok_or_else(missing_event)?;
        let result = match ingest::ingest_event(
            &self.state,
            caller.tenant_id,
            ingest::EventBody::Message(&input),
            request.sync,
        )
        .await?
        {
            EventOutcome::Accepted(receipt) => {
                pb::log_event_response::Result::Receipt(pb::receipt_from_core(receipt))
            }
            EventOutcome::Committed(committed) => {
                let record = committed.first().expect("one committed record");
                pb::log_event_response::Result::Record(pb::record_with_metadata(
                    record.record,
                    record.metadata_json(),
                ))
            }
        };
        Ok(Response::new(pb::LogEventResponse {
            result: Some(result),
        }))
    }

    async fn log_batch(
        &self,
        request: Request<pb::LogBatchRequest>,
    ) -> Result<Response<pb::LogBatchResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Write]).await?;
        let request = request.into_inner();
        ingest::check_batch_len(request.events.len())?;
        let items = request
            .events
            .iter()
            .map(|event| Ok(ingest::EventBody::Message(event)))
            .collect();
        let (receipt, records) =
            match ingest::ingest_batch(&self.state, caller.tenant_id, items, request.sync).await? {
                BatchOutcome::Accepted(receipt) => (receipt, Default::default()),
                BatchOutcome::Committed { receipt, records } => (receipt, records),
            };
        Ok(Response::new(pb::LogBatchResponse {
            receipt: Some(pb::receipt_from_core(receipt)),
            records: records
                .iter()
                .map(|r| pb::record_with_metadata(r.record, r.metadata_json()))
                .collect(),
        }))
    }

    type IngestStream = super::ingest::IngestStream;

    async fn ingest(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        super::ingest::start_messages(self, request).await
    }

    async fn get_receipt(
        &self,
        request: Request<pb::GetReceiptRequest>,
    ) -> Result<Response<pb::GetReceiptResponse>, Status> {
        // A write-only key may poll the receipts of what it wrote.
        let caller = self.caller(&request, &[Scope::Read, Scope::Write]).await?;
        let id = request.into_inner().receipt_id;
        let receipt = self
            .state
            .store
            .get_receipt(&caller.tenant_id, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("no receipt {id:?}")))?;
        Ok(Response::new(pb::GetReceiptResponse {
            receipt: Some(pb::receipt_from_core(receipt)),
        }))
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> Result<Response<pb::GetEventResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Read]).await?;
        let id = request.into_inner().id;
        // Another tenant's id is simply not found (never PERMISSION_DENIED).
        let stored = self
            .state
            .store
            .get_event(&caller.tenant_id, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("no event {id:?}")))?;
        Ok(Response::new(pb::GetEventResponse {
            record: Some(pb::record_from_core(&stored.record)),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Read]).await?;
        let r = request.into_inner();
        // Proto3 zero values mean "not given", as an absent query parameter does.
        let params = ListParams {
            actor_id: r.actor_id,
            actor_type: name_or_unknown(pb::actor_type_name(r.actor_type)),
            action: r.action,
            resource_id: r.resource_id,
            outcome: name_or_unknown(pb::outcome_name(r.outcome)),
            from: r.from,
            to: r.to,
            page: (r.page != 0).then(|| r.page.to_string()),
            page_size: (r.page_size != 0).then(|| r.page_size.to_string()),
            cursor: r.cursor,
        };
        let list = query::list(&self.state, &caller.tenant_id, params).await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: list.events.iter().map(pb::record_from_core).collect(),
            total: list.total,
            page: list.page,
            page_size: list.page_size,
            next_cursor: list.next_cursor,
        }))
    }

    async fn verify_event(
        &self,
        request: Request<pb::VerifyEventRequest>,
    ) -> Result<Response<pb::VerifyEventResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Read]).await?;
        let id = request.into_inner().id;
        let v = query::verify_one(&self.state, &caller.tenant_id, &id).await?;
        Ok(Response::new(pb::VerifyEventResponse {
            valid: v.valid,
            event_id: v.event_id,
            sequence_number: v.sequence_number,
            stored_hash: v.stored_hash,
            computed_hash: v.computed_hash,
            prev_hash_valid: v.prev_hash_valid,
            reason: v.reason,
        }))
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Read]).await?;
        let r = request.into_inner();
        let params = VerifyParams {
            from: r.from,
            to: r.to,
            scan_all: r.scan_all.then(|| "true".to_string()),
            full: r.full.then(|| "true".to_string()),
        };
        let _slot = self.state.keys.slot(&caller, crate::quota::Heavy::Bulk)?;
        let v = query::verify_walk(&self.state, &caller.tenant_id, params).await?;
        Ok(Response::new(pb::VerifyChainResponse {
            valid: v.valid,
            tenant_id: v.tenant_id,
            events_checked: v.events_checked,
            newly_checked: v.newly_checked,
            resumed_from: v.resumed_from,
            root_hash: v.root_hash,
            from: v.from,
            to: v.to,
            first_broken_event_id: v.first_broken_event_id,
            reason: v.reason,
            broken_count: v.broken_count,
            all_broken_events: v
                .all_broken_events
                .unwrap_or_default()
                .into_iter()
                .map(|b| pb::BrokenEvent {
                    event_id: b.event_id,
                    sequence_number: b.sequence_number,
                    timestamp: b.timestamp,
                    action: b.action,
                    actor_id: b.actor_id,
                    reason: b.reason,
                })
                .collect(),
        }))
    }

    type TailStream = ReceiverStream<Result<pb::TailResponse, Status>>;

    async fn tail(
        &self,
        request: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let caller = self.caller(&request, &[Scope::Read]).await?;
        let slot = self.state.keys.slot(&caller, crate::quota::Heavy::Stream)?;
        let after = match request.into_inner().after_sequence_number {
            Some(after) => after,
            None => stream::head_sequence(&self.state, &caller.tenant_id).await?,
        };
        let (tx, rx) = mpsc::channel(TAIL_BUFFER);
        let feed = stream::feed(
            self.state.clone(),
            caller.tenant_id,
            after,
            tx,
            |_, record| {
                Ok(pb::TailResponse {
                    record: Some(pb::record_from_core(&record)),
                })
            },
        );
        // The slot is held as long as the stream runs.
        tokio::spawn(async move {
            feed.await;
            drop(slot);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn redact_event(
        &self,
        request: Request<pb::RedactEventRequest>,
    ) -> Result<Response<pb::RedactEventResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Admin]).await?;
        let r = request.into_inner();
        let reason = redact::checked_reason(&r.reason)?;
        // REST's 200 and 202 are both OK here; `erased` tells them apart.
        let (_, result) = redact::redact(
            &self.state,
            &caller.tenant_id,
            &caller.key_id,
            &r.id,
            reason,
        )
        .await?;
        Ok(Response::new(pb::RedactEventResponse {
            record: Some(pb::record_from_core(&result.record)),
            redaction: Some(pb::record_from_core(&result.redaction)),
            erased: result.erased,
        }))
    }

    async fn create_destination(
        &self,
        request: Request<pb::CreateDestinationRequest>,
    ) -> Result<Response<pb::CreateDestinationResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Admin]).await?;
        let r = request.into_inner();
        let spec = streams::sink::Spec {
            kind: r.r#type,
            url: r.url,
            token: r.token,
            host: r.host,
            tls: r.tls,
        };
        let created = streams::create(&self.state, &caller.tenant_id, spec).await?;
        Ok(Response::new(pb::CreateDestinationResponse {
            destination: Some(destination(created.destination)),
            secret: created.secret,
        }))
    }

    async fn list_destinations(
        &self,
        request: Request<pb::ListDestinationsRequest>,
    ) -> Result<Response<pb::ListDestinationsResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Admin]).await?;
        let list = streams::list(&self.state, &caller.tenant_id).await?;
        Ok(Response::new(pb::ListDestinationsResponse {
            destinations: list.destinations.into_iter().map(destination).collect(),
        }))
    }

    async fn get_destination(
        &self,
        request: Request<pb::GetDestinationRequest>,
    ) -> Result<Response<pb::GetDestinationResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Admin]).await?;
        let id = request.into_inner().id;
        let d = streams::get(&self.state, &caller.tenant_id, &id).await?;
        Ok(Response::new(pb::GetDestinationResponse {
            destination: Some(destination(d)),
        }))
    }

    async fn delete_destination(
        &self,
        request: Request<pb::DeleteDestinationRequest>,
    ) -> Result<Response<pb::DeleteDestinationResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Admin]).await?;
        let id = request.into_inner().id;
        streams::delete(&self.state, &caller.tenant_id, &id).await?;
        Ok(Response::new(pb::DeleteDestinationResponse {}))
    }

    async fn resume_destination(
        &self,
        request: Request<pb::ResumeDestinationRequest>,
    ) -> Result<Response<pb::ResumeDestinationResponse>, Status> {
        let caller = self.caller(&request, &[Scope::Admin]).await?;
        let r = request.into_inner();
        let d = streams::resume(&self.state, &caller.tenant_id, &r.id, r.from_sequence).await?;
        Ok(Response::new(pb::ResumeDestinationResponse {
            destination: Some(destination(d)),
        }))
    }
}

fn destination(d: streams::DestinationView) -> pb::Destination {
    pb::Destination {
        id: d.id,
        r#type: d.kind,
        url: d.url,
        created_at: d.created_at,
        status: d.status.to_string(),
        delivered_through: d.delivered_through,
        lag: d.lag,
        last_error: d.last_error,
        failing_since: d.failing_since,
        last_success_at: d.last_success_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    fn text(choices: &'static [&'static str]) -> impl Strategy<Value = String> {
        select(choices).prop_map(str::to_string)
    }

    fn message() -> impl Strategy<Value = pb::AuditEventInput> {
        let strings: &'static [&'static str] =
            &["u1", "", " ", "a b", "x\u{1}", "doc", "d\u{e9}j\u{e0}"];
        let actor = (
            text(strings),
            prop_oneof![Just(0), Just(1), Just(2), Just(3), Just(9)],
            proptest::option::of(text(&["a@example.com", "", "  "])),
        )
            .prop_map(|(id, r#type, email)| pb::Actor { id, r#type, email });
        let resource = (
            text(strings),
            text(&["document", "", "t"]),
            proptest::option::of(text(&["Q3", "", "n"])),
        )
            .prop_map(|(id, r#type, name)| pb::Resource { id, r#type, name });
        (
            proptest::option::of(text(&["e1", "", "a b", "evt_2"])),
            proptest::option::of(text(&[
                "2024-05-01T12:00:00+02:00",
                "2024-13-01T00:00:00Z",
                "",
                "yesterday",
            ])),
            proptest::option::of(actor),
            text(&["document.delete", "", "a..b", "a b", "x"]),
            proptest::option::of(resource),
            prop_oneof![Just(0), Just(1), Just(2), Just(3), Just(7)],
            text(&[
                "",
                "{}",
                "null",
                "[]",
                "1",
                r#"{"ip":"203.0.113.7","n":[1,2.5]}"#,
                r#"{"a":1,"a":2}"#,
                r#"{"n":18446744073709551616}"#,
                r#"{"n":9007199254740993}"#,
                r#"{}, "x": 1"#,
                r#"{"a":"#,
            ]),
        )
            .prop_map(
                |(id, timestamp, actor, action, resource, outcome, metadata_json)| {
                    pb::AuditEventInput {
                        id,
                        timestamp,
                        actor,
                        action,
                        resource,
                        outcome,
                        metadata_json,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The typed way through a gRPC message gives exactly what the general way (the
        /// JSON value a REST client would send, validated) gives: the same event or the
        /// same error.
        #[test]
        fn a_message_validates_as_its_json_would(input in message()) {
            let general = event_value(&input)
                .and_then(|value| validate_event(value, 7, || "gen".into()));
            let same_id = |e: Result<NormalizedEvent, ValidationError>| e.map(|mut e| {
                if !e.client_id {
                    e.id = "gen".into();
                }
                e
            });
            // By reference, and by value (`Ingest`: moved out, put back on the general way).
            let typed = same_id(validate_message(&input, 7));
            prop_assert_eq!(&typed, &general, "{:?}", input);
            let owned = same_id(validate_owned(input.clone(), 7));
            prop_assert_eq!(owned, general, "{:?}", input);
        }
    }

    /// A valid event message with `metadata_json` as given.
    fn message_with_metadata(metadata_json: &str) -> pb::AuditEventInput {
        pb::AuditEventInput {
            id: Some("e1".into()),
            timestamp: None,
            actor: Some(pb::Actor {
                id: "u1".into(),
                r#type: 1,
                email: None,
            }),
            action: "document.delete".into(),
            resource: Some(pb::Resource {
                id: "d1".into(),
                r#type: "document".into(),
                name: None,
            }),
            outcome: 1,
            metadata_json: metadata_json.into(),
        }
    }

    /// `metadata_json` is read as the `metadata` member of a REST body would be: the
    /// same nesting limit (to the level) and the same error codes, whatever the text.
    #[test]
    fn metadata_json_has_the_rules_of_a_rest_body() {
        let nested = |levels: usize| "{\"d\":".repeat(levels) + "1" + &"}".repeat(levels);
        let limit = sealtrail_core::limits::MAX_DEPTH;
        let cases = [
            nested(limit - 2),
            nested(limit - 1),
            nested(limit),
            r#"{"a":1,"a":2}"#.to_string(),
            r#"{"n":9007199254740993}"#.to_string(),
            r#"{"a":[1,{"b":null}]}"#.to_string(),
            r#"{"a":"#.to_string(),
            "[1]".to_string(),
        ];
        let mut accepted = 0;
        for metadata_json in cases {
            let input = message_with_metadata(&metadata_json);
            let body = format!(
                r#"{{"id":"e1","actor":{{"id":"u1","type":"human"}},"action":"document.delete","resource":{{"id":"d1","type":"document"}},"outcome":"success","metadata":{metadata_json}}}"#
            );
            let rest =
                sealtrail_core::event::validate_event_json(body.as_bytes(), 7, || "gen".into());
            let grpc = validate_message(&input, 7);
            match (&grpc, &rest) {
                (Ok(g), Ok(r)) => {
                    assert_eq!(g, r, "{metadata_json}");
                    accepted += 1;
                }
                (Err(g), Err(r)) => assert_eq!(g.code, r.code, "{metadata_json}: {g:?} vs {r:?}"),
                _ => panic!("{metadata_json}: gRPC {grpc:?}, REST {rest:?}"),
            }
        }
        // The two nestings within the limit and the plain object; the rest are refused.
        assert_eq!(accepted, 3);
        // Text after the one value is not JSON: it cannot add members to the event.
        let mut input = message_with_metadata(r#"{}, "metadata": 1"#);
        assert_eq!(
            validate_message(&input, 7).unwrap_err().code,
            "invalid_json"
        );
        input.metadata_json = r#"{} {}"#.into();
        assert_eq!(
            validate_message(&input, 7).unwrap_err().code,
            "invalid_json"
        );
    }

    /// The common message takes the typed way (else the saving is lost, silently).
    #[test]
    fn a_plain_message_takes_the_typed_way() {
        let input = message_with_metadata(r#"{"ip":"203.0.113.7"}"#);
        let original = input.clone();
        let mut taken = input;
        let (fields, actor_type) = take_fields(&mut taken).expect("the typed way takes it");
        let mut back = taken.clone();
        put_back(&mut back, fields.clone(), actor_type);
        assert_eq!(back, original, "put_back restores the message");
        assert!(fields.into_input().is_some());
    }
}
