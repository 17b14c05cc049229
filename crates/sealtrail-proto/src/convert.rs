//! Conversions between the `sealtrail.v1` messages and the core types.

use sealtrail_core::event::{self, ActorType as CoreActorType, Outcome as CoreOutcome};
use sealtrail_core::receipt::{self, ReceiptStatus as CoreStatus};
use sealtrail_core::record;
use serde_json::{Map, Value};

use crate::{
    Actor, ActorType, AuditEventInput, ItemError, Outcome, Receipt, ReceiptStatus, Record,
    Redaction, Resource,
};

/// Why a message cannot become a core value (a malformed record from a server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionError(pub String);

impl std::fmt::Display for ConversionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConversionError {}

pub fn actor_type_from_core(t: Option<CoreActorType>) -> ActorType {
    match t {
        None => ActorType::Unspecified,
        Some(CoreActorType::Human) => ActorType::Human,
        Some(CoreActorType::Agent) => ActorType::Agent,
        Some(CoreActorType::System) => ActorType::System,
    }
}

pub fn outcome_from_core(o: CoreOutcome) -> Outcome {
    match o {
        CoreOutcome::Success => Outcome::Success,
        CoreOutcome::Failure => Outcome::Failure,
        CoreOutcome::Error => Outcome::Error,
    }
}

/// The JSON name of an actor type enum value; `Ok(None)` for unspecified, `Err` with the
/// raw number for a value this version does not know.
pub fn actor_type_name(value: i32) -> Result<Option<&'static str>, i32> {
    match ActorType::try_from(value) {
        Ok(ActorType::Unspecified) => Ok(None),
        Ok(ActorType::Human) => Ok(Some("human")),
        Ok(ActorType::Agent) => Ok(Some("agent")),
        Ok(ActorType::System) => Ok(Some("system")),
        Err(_) => Err(value),
    }
}

/// The JSON name of an outcome enum value (see [`actor_type_name`]).
pub fn outcome_name(value: i32) -> Result<Option<&'static str>, i32> {
    match Outcome::try_from(value) {
        Ok(Outcome::Unspecified) => Ok(None),
        Ok(Outcome::Success) => Ok(Some("success")),
        Ok(Outcome::Failure) => Ok(Some("failure")),
        Ok(Outcome::Error) => Ok(Some("error")),
        Err(_) => Err(value),
    }
}

/// The JSON object a REST client would send for `input`, except `metadata`, which stays
/// text: the caller parses it strictly (see the server's ingest). Absent optional fields
/// are left out, unspecified enums too (so the validator reports them as missing), and an
/// enum number this version does not know becomes a string the validator rejects.
pub fn event_input_to_json(input: &AuditEventInput) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(id) = &input.id {
        out.insert("id".into(), Value::String(id.clone()));
    }
    if let Some(ts) = &input.timestamp {
        out.insert("timestamp".into(), Value::String(ts.clone()));
    }
    if let Some(actor) = &input.actor {
        let mut a = Map::new();
        a.insert("id".into(), Value::String(actor.id.clone()));
        match actor_type_name(actor.r#type) {
            Ok(Some(name)) => {
                a.insert("type".into(), Value::String(name.into()));
            }
            Ok(None) => {}
            Err(n) => {
                a.insert("type".into(), Value::String(format!("enum value {n}")));
            }
        }
        if let Some(email) = &actor.email {
            a.insert("email".into(), Value::String(email.clone()));
        }
        out.insert("actor".into(), Value::Object(a));
    }
    out.insert("action".into(), Value::String(input.action.clone()));
    if let Some(resource) = &input.resource {
        let mut r = Map::new();
        r.insert("id".into(), Value::String(resource.id.clone()));
        r.insert("type".into(), Value::String(resource.r#type.clone()));
        if let Some(name) = &resource.name {
            r.insert("name".into(), Value::String(name.clone()));
        }
        out.insert("resource".into(), Value::Object(r));
    }
    match outcome_name(input.outcome) {
        Ok(Some(name)) => {
            out.insert("outcome".into(), Value::String(name.into()));
        }
        Ok(None) => {}
        Err(n) => {
            out.insert("outcome".into(), Value::String(format!("enum value {n}")));
        }
    }
    out
}

/// A core record as a message. `metadata_json` is serde_json's text of the metadata —
/// the same bytes the REST API writes for it.
pub fn record_from_core(r: &record::Record) -> Record {
    record_with_metadata(r, None)
}

/// [`record_from_core`] with the record's `metadata` already written as JSON text (its
/// canonical form: `sealtrail_core::committed::CommittedRef::metadata_json`), so it is
/// not serialized again.
pub fn record_with_metadata(r: &record::Record, metadata_json: Option<&str>) -> Record {
    if let Some(by) = &r.redacted {
        return Record {
            id: r.id.clone(),
            tenant_id: r.tenant_id.clone(),
            sequence_number: r.sequence_number,
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
            redacted: Some(Redaction {
                event_id: by.event_id.clone(),
                sequence_number: by.sequence_number,
            }),
            ..Default::default()
        };
    }
    Record {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        sequence_number: r.sequence_number,
        timestamp: r.timestamp.clone(),
        created_at: r.created_at.clone(),
        actor: Some(Actor {
            id: r.actor.id.clone(),
            r#type: actor_type_from_core(r.actor.actor_type) as i32,
            email: r.actor.email.clone(),
        }),
        action: r.action.clone(),
        resource: Some(Resource {
            id: r.resource.id.clone(),
            r#type: r.resource.resource_type.clone(),
            name: r.resource.name.clone(),
        }),
        outcome: outcome_from_core(r.outcome) as i32,
        metadata_json: match metadata_json {
            Some(text) => text.to_string(),
            None => serde_json::to_string(&r.metadata).expect("metadata serializes"),
        },
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
        redacted: None,
    }
}

/// A record message as the core record (and so as the REST JSON, through serde).
pub fn record_to_core(r: &Record) -> Result<record::Record, ConversionError> {
    let bad = |m: String| ConversionError(m);
    if let Some(by) = &r.redacted {
        let mut shell = record::Record::from_canonical(
            &serde_json::to_vec(&serde_json::json!({
                "id": r.id,
                "prev_hash": r.prev_hash,
                "redacted": {"event_id": by.event_id, "sequence_number": by.sequence_number},
                "sequence_number": r.sequence_number,
                "tenant_id": r.tenant_id,
            }))
            .expect("json"),
            &r.hash,
        )
        .map_err(|e| bad(format!("redacted record: {e}")))?;
        shell.hash = r.hash.clone();
        return Ok(shell);
    }
    let actor = r
        .actor
        .as_ref()
        .ok_or_else(|| bad("record without actor".into()))?;
    let resource = r
        .resource
        .as_ref()
        .ok_or_else(|| bad("record without resource".into()))?;
    let actor_type = actor_type_name(actor.r#type)
        .map_err(|n| bad(format!("unknown actor type {n}")))?
        .map(|t| CoreActorType::parse(t).expect("known name"));
    let outcome = outcome_name(r.outcome)
        .map_err(|n| bad(format!("unknown outcome {n}")))?
        .and_then(CoreOutcome::parse)
        .ok_or_else(|| bad("record without outcome".into()))?;
    let metadata: Map<String, Value> = if r.metadata_json.is_empty() {
        Map::new()
    } else {
        serde_json::from_str(&r.metadata_json).map_err(|e| bad(format!("metadata_json: {e}")))?
    };
    Ok(record::Record {
        action: r.action.clone(),
        actor: event::Actor {
            email: actor.email.clone(),
            id: actor.id.clone(),
            actor_type,
        },
        created_at: r.created_at.clone(),
        hash: r.hash.clone(),
        id: r.id.clone(),
        metadata,
        outcome,
        prev_hash: r.prev_hash.clone(),
        resource: event::Resource {
            id: resource.id.clone(),
            name: resource.name.clone(),
            resource_type: resource.r#type.clone(),
        },
        sequence_number: r.sequence_number,
        tenant_id: r.tenant_id.clone(),
        timestamp: r.timestamp.clone(),
        redacted: None,
    })
}

/// A record message as REST's JSON object (what hashes to `hash`, minus `hash`).
pub fn record_to_json(r: &Record) -> Result<Value, ConversionError> {
    let core = record_to_core(r)?;
    Ok(serde_json::to_value(core).expect("records serialize"))
}

pub fn receipt_status_from_core(s: CoreStatus) -> ReceiptStatus {
    match s {
        CoreStatus::Queued => ReceiptStatus::Queued,
        CoreStatus::Committed => ReceiptStatus::Committed,
        CoreStatus::Failed => ReceiptStatus::Failed,
    }
}

pub fn item_error_from_core(e: &receipt::ItemError) -> ItemError {
    ItemError {
        index: e.index,
        code: e.code.clone(),
        message: e.message.clone(),
    }
}

pub fn receipt_from_core(r: receipt::Receipt) -> Receipt {
    Receipt {
        receipt_id: r.receipt_id,
        status: receipt_status_from_core(r.status) as i32,
        accepted: r.accepted,
        rejected: r.rejected,
        ids: r.ids,
        errors: r.errors.iter().map(item_error_from_core).collect(),
        error_message: r.error_message,
        created_at: r.created_at,
        committed_at: r.committed_at,
    }
}

/// An event input from the REST JSON shape (the SDK's convenience for callers that hold
/// JSON). `metadata` is written as JSON text; unknown enum names become unspecified
/// values, which the server rejects.
pub fn event_input_from_json(value: &Value) -> AuditEventInput {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let actor = value.get("actor").map(|a| Actor {
        id: text(a, "id").unwrap_or_default(),
        r#type: text(a, "type")
            .and_then(|t| CoreActorType::parse(&t))
            .map_or(ActorType::Unspecified, |t| actor_type_from_core(Some(t)))
            as i32,
        email: text(a, "email"),
    });
    let resource = value.get("resource").map(|r| Resource {
        id: text(r, "id").unwrap_or_default(),
        r#type: text(r, "type").unwrap_or_default(),
        name: text(r, "name"),
    });
    AuditEventInput {
        id: text(value, "id"),
        timestamp: text(value, "timestamp"),
        actor,
        action: text(value, "action").unwrap_or_default(),
        resource,
        outcome: text(value, "outcome")
            .and_then(|o| CoreOutcome::parse(&o))
            .map_or(Outcome::Unspecified, outcome_from_core) as i32,
        metadata_json: value
            .get("metadata")
            .map(|m| m.to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealtrail_core::event::validate_event;
    use sealtrail_core::record::chain_step;
    use serde_json::json;

    fn sample() -> record::Record {
        let event = validate_event(
            json!({
                "id": "evt-1",
                "actor": {"id": "u1", "type": "agent", "email": "a@example.com"},
                "action": "document.delete",
                "resource": {"id": "d1", "type": "document"},
                "outcome": "failure",
                "metadata": {"big": 9007199254740991i64, "neg": -3, "f": 1.5, "s": "é😀\u{e000}", "nested": {"b": [true, null, 0.1]}}
            }),
            1_700_000_000_000_001,
            || unreachable!(),
        )
        .unwrap();
        chain_step(None, "acme", event).record
    }

    #[test]
    fn record_round_trips_and_hashes_to_its_hash() {
        let core = sample();
        let message = record_from_core(&core);
        let back = record_to_core(&message).unwrap();
        assert_eq!(back, core);
        assert_eq!(back.compute_hash(), core.hash);
        let encoded = prost::Message::encode_to_vec(&message);
        let decoded: Record = prost::Message::decode(encoded.as_slice()).unwrap();
        assert_eq!(
            record_to_json(&decoded).unwrap(),
            serde_json::to_value(&core).unwrap()
        );
    }

    #[test]
    fn event_input_maps_to_the_rest_json_shape() {
        let rest = json!({
            "id": "e1", "timestamp": "2024-01-01T00:00:00Z",
            "actor": {"id": "u", "type": "human", "email": "u@x"},
            "action": "a.b", "resource": {"id": "r", "type": "t", "name": "n"},
            "outcome": "success", "metadata": {"k": 1}
        });
        let input = event_input_from_json(&rest);
        assert_eq!(input.metadata_json, r#"{"k":1}"#);
        let mut back = event_input_to_json(&input);
        back.insert("metadata".into(), json!({"k": 1}));
        assert_eq!(Value::Object(back), rest);
    }

    #[test]
    fn unspecified_and_unknown_enums_are_left_for_the_validator() {
        let input = AuditEventInput {
            actor: Some(Actor {
                id: "u".into(),
                r#type: 42,
                email: None,
            }),
            ..Default::default()
        };
        let json = event_input_to_json(&input);
        assert!(json.get("outcome").is_none());
        assert_eq!(json["actor"]["type"], json!("enum value 42"));
    }
}
