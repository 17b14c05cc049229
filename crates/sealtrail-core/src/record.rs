//! The committed record, its canonical form and hash, and the chain step.
//!
//! `hash` = lowercase hex SHA-256 of the RFC 8785 (JCS) canonical form of the record
//! without its `hash` member (DESIGN.md §2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{Actor, CanonicalParts, NormalizedEvent, Outcome, Parts, Resource};

/// `prev_hash` of sequence number 1.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A committed record, exactly the members of DESIGN.md §2. Fields are declared in JCS
/// order, so serde_json's output of a record is already sorted at the top level.
///
/// A **redacted** record (`redacted` is set, issue 15) keeps `id`, `tenant_id`,
/// `sequence_number`, `prev_hash` and `hash`; every other member was erased from the store
/// and is left empty here, and it serializes as exactly
/// `{"hash","id","prev_hash","redacted","sequence_number","tenant_id"}` (see
/// [`Redaction`]). Its hash can no longer be recomputed; the next record's `prev_hash` and
/// its Merkle leaf still bind it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub action: String,
    pub actor: Actor,
    pub created_at: String,
    /// Absent in the canonical (unhashed) form; see [`Record::from_canonical`].
    #[serde(default)]
    pub hash: String,
    pub id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Map<String, Value>,
    pub outcome: Outcome,
    pub prev_hash: String,
    pub resource: Resource,
    pub sequence_number: u64,
    pub tenant_id: String,
    pub timestamp: String,
    /// Set on a redacted record: which record of the chain redacted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<Redaction>,
}

/// The action of the audit event that `POST /v1/events/{id}/redact` appends to the
/// tenant's chain. Actions under `sealtrail.` are the server's own: ingest refuses them
/// from clients, so a record with this action was written by the server.
pub const REDACT_ACTION: &str = "sealtrail.event.redact";

/// The audit event that redacts record `target_sequence_number` (id `target_id`) of a
/// chain: `actor` did `sealtrail.event.redact` to resource `{"type":"event","id":target_id}`
/// with `metadata` `{"reason","sequence_number"}`. Validated by the caller's rules for
/// ordinary events except the reserved action, which only this builds.
pub fn redaction_input(
    actor: Actor,
    target_id: &str,
    target_sequence_number: u64,
    reason: &str,
) -> crate::event::EventInput {
    let mut metadata = Map::new();
    metadata.insert("reason".into(), Value::String(reason.to_string()));
    metadata.insert(
        "sequence_number".into(),
        Value::Number(target_sequence_number.into()),
    );
    crate::event::EventInput {
        action: REDACT_ACTION.to_string(),
        actor,
        id: None,
        metadata,
        outcome: Outcome::Success,
        resource: Resource {
            id: target_id.to_string(),
            name: None,
            resource_type: "event".into(),
        },
        timestamp: None,
    }
}

/// The action of the audit event that retention (issue 15) appends to a tenant's chain
/// when it removes the tenant's oldest records: every record before
/// `metadata.before_sequence_number` (the new **retention boundary**) leaves the store.
/// Like a redaction, the removal is itself in the chain, after the records it removes:
/// a verifier that starts at a boundary requires a later prune event naming it, so a
/// removal nobody recorded is still a failure.
pub const PRUNE_ACTION: &str = "sealtrail.retention.prune";

/// The audit event that prunes `tenant`'s records before `before` (so record `before` is
/// the first kept): actor `{"id":"sealtrail.retention","type":"system"}`, resource
/// `{"type":"chain","id":<tenant>}`, `metadata` `{"before_sequence_number", "policy"}`
/// where `policy` is what decided it (`{"days"}` and/or `{"events"}`).
pub fn prune_input(
    tenant_id: &str,
    before: u64,
    policy: Map<String, Value>,
) -> crate::event::EventInput {
    let mut metadata = Map::new();
    metadata.insert(
        "before_sequence_number".into(),
        Value::Number(before.into()),
    );
    metadata.insert("policy".into(), Value::Object(policy));
    crate::event::EventInput {
        action: PRUNE_ACTION.to_string(),
        actor: Actor {
            email: None,
            id: "sealtrail.retention".into(),
            actor_type: Some(crate::event::ActorType::System),
        },
        id: None,
        metadata,
        outcome: Outcome::Success,
        resource: Resource {
            id: tenant_id.to_string(),
            name: None,
            resource_type: "chain".into(),
        },
        timestamp: None,
    }
}

/// How a prune event's canonical form starts (JCS sorts `action` first): a cheap test
/// before parsing a row as one.
pub const PRUNE_PREFIX: &[u8] = b"{\"action\":\"sealtrail.retention.prune\"";

/// What a redacted record says about its redaction: the audit event (in the same chain,
/// later) that redacted it, which names the caller, the reason and the time.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    /// The `id` of the redaction event.
    pub event_id: String,
    /// Its `sequence_number`.
    pub sequence_number: u64,
}

/// The stored form of a redacted record, in place of its canonical bytes: the JCS object
/// `{"id","prev_hash","redacted","sequence_number","tenant_id"}` (the record as reads
/// return it, without `hash`). A record's canonical form always starts with `{"action":`,
/// this one with `{"id":`, so the two never pass for each other ([`is_redacted`]).
#[derive(Serialize)]
struct RedactedUnhashed<'a> {
    id: &'a str,
    prev_hash: &'a str,
    redacted: &'a Redaction,
    sequence_number: u64,
    tenant_id: &'a str,
}

#[derive(Serialize)]
struct RedactedView<'a> {
    hash: &'a str,
    id: &'a str,
    prev_hash: &'a str,
    redacted: &'a Redaction,
    sequence_number: u64,
    tenant_id: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactedStored {
    id: String,
    prev_hash: String,
    redacted: Redaction,
    sequence_number: u64,
    tenant_id: String,
}

/// Whether stored canonical bytes are those of a redacted record ([`Record::redact`]).
pub fn is_redacted(canonical: &[u8]) -> bool {
    canonical.starts_with(b"{\"id\":")
}

/// The record as serialized when it is not redacted: every member, `hash` included.
#[derive(Serialize)]
struct FullView<'a> {
    action: &'a str,
    actor: &'a Actor,
    created_at: &'a str,
    hash: &'a str,
    id: &'a str,
    metadata: &'a Map<String, Value>,
    outcome: Outcome,
    prev_hash: &'a str,
    resource: &'a Resource,
    sequence_number: u64,
    tenant_id: &'a str,
    timestamp: &'a str,
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.redacted {
            Some(redacted) => RedactedView {
                hash: &self.hash,
                id: &self.id,
                prev_hash: &self.prev_hash,
                redacted,
                sequence_number: self.sequence_number,
                tenant_id: &self.tenant_id,
            }
            .serialize(s),
            None => FullView {
                action: &self.action,
                actor: &self.actor,
                created_at: &self.created_at,
                hash: &self.hash,
                id: &self.id,
                metadata: &self.metadata,
                outcome: self.outcome,
                prev_hash: &self.prev_hash,
                resource: &self.resource,
                sequence_number: self.sequence_number,
                tenant_id: &self.tenant_id,
                timestamp: &self.timestamp,
            }
            .serialize(s),
        }
    }
}

/// The record without `hash`: what is canonicalized and hashed.
#[derive(Serialize)]
struct Unhashed<'a> {
    action: &'a str,
    actor: &'a Actor,
    created_at: &'a str,
    id: &'a str,
    metadata: &'a Map<String, Value>,
    outcome: Outcome,
    prev_hash: &'a str,
    resource: &'a Resource,
    sequence_number: u64,
    tenant_id: &'a str,
    timestamp: &'a str,
}

impl Record {
    /// The JCS canonical bytes of this record without its `hash` member.
    pub fn canonical_unhashed(&self) -> Vec<u8> {
        let view = Unhashed {
            action: &self.action,
            actor: &self.actor,
            created_at: &self.created_at,
            id: &self.id,
            metadata: &self.metadata,
            outcome: self.outcome,
            prev_hash: &self.prev_hash,
            resource: &self.resource,
            sequence_number: self.sequence_number,
            tenant_id: &self.tenant_id,
            timestamp: &self.timestamp,
        };
        canonical_bytes(&view, &self.metadata)
    }

    /// Rebuilds a record from its stored canonical bytes (without `hash`) and stored hash;
    /// the stored form of a redacted record gives the redacted record.
    pub fn from_canonical(canonical: &[u8], hash: &str) -> Result<Self, serde_json::Error> {
        if is_redacted(canonical) {
            let r: RedactedStored = serde_json::from_slice(canonical)?;
            return Ok(Self::redacted_shell(
                r.id,
                r.tenant_id,
                r.sequence_number,
                r.prev_hash,
                hash.to_string(),
                r.redacted,
            ));
        }
        let mut record: Record = serde_json::from_slice(canonical)?;
        record.hash = hash.to_string();
        Ok(record)
    }

    fn redacted_shell(
        id: String,
        tenant_id: String,
        sequence_number: u64,
        prev_hash: String,
        hash: String,
        redacted: Redaction,
    ) -> Self {
        Record {
            action: String::new(),
            actor: Actor {
                email: None,
                id: String::new(),
                actor_type: None,
            },
            created_at: String::new(),
            hash,
            id,
            metadata: Map::new(),
            outcome: Outcome::Success,
            prev_hash,
            resource: Resource {
                id: String::new(),
                name: None,
                resource_type: String::new(),
            },
            sequence_number,
            tenant_id,
            timestamp: String::new(),
            redacted: Some(redacted),
        }
    }

    /// The stored form of this record redacted by `by` (unpadded; see
    /// [`Record::redacted_canonical`]).
    pub fn redacted_stored(&self, by: &Redaction) -> Vec<u8> {
        serde_json::to_vec(&RedactedUnhashed {
            id: &self.id,
            prev_hash: &self.prev_hash,
            redacted: by,
            sequence_number: self.sequence_number,
            tenant_id: &self.tenant_id,
        })
        .expect("records serialize")
    }

    /// What a redaction event (`action` [`REDACT_ACTION`]) orders: the sequence number
    /// and id of the record it redacts (its `metadata.sequence_number` and resource id),
    /// and the [`Redaction`] the redacted record will name. `None` for any other record.
    pub fn redaction_order(&self) -> Option<(u64, &str, Redaction)> {
        if self.action != REDACT_ACTION {
            return None;
        }
        let seq = self.metadata.get("sequence_number")?.as_u64()?;
        Some((
            seq,
            &self.resource.id,
            Redaction {
                event_id: self.id.clone(),
                sequence_number: self.sequence_number,
            },
        ))
    }

    /// What a prune event (`action` [`PRUNE_ACTION`]) orders: the new retention boundary
    /// (the first record kept). `None` for any other record, or a boundary that is not
    /// before the event itself.
    pub fn prune_order(&self) -> Option<u64> {
        if self.action != PRUNE_ACTION {
            return None;
        }
        let before = self.metadata.get("before_sequence_number")?.as_u64()?;
        (before >= 1 && before < self.sequence_number).then_some(before)
    }

    /// This record redacted by `by`: what stays of it.
    pub fn redact(&self, by: Redaction) -> Self {
        Self::redacted_shell(
            self.id.clone(),
            self.tenant_id.clone(),
            self.sequence_number,
            self.prev_hash.clone(),
            self.hash.clone(),
            by,
        )
    }

    /// The stored form of this record redacted by `by`, padded with spaces (which JSON
    /// ignores) to `len` bytes so it can take the place of the canonical bytes it erases;
    /// `None` if it does not fit in `len` (a record's canonical form is always longer:
    /// it repeats these members and has seven more).
    pub fn redacted_canonical(&self, by: &Redaction, len: usize) -> Option<Vec<u8>> {
        let mut out = self.redacted_stored(by);
        if out.len() > len {
            return None;
        }
        out.resize(len, b' ');
        Some(out)
    }

    /// Recomputes the hash from the record's members (ignores the stored `hash`).
    pub fn compute_hash(&self) -> String {
        hash_hex(&self.canonical_unhashed())
    }
}

/// JCS (RFC 8785) bytes of `value`, whose only free-form part is `metadata`.
///
/// serde_json's compact output already *is* the JCS form when (1) every object's members
/// are emitted in sorted order — true for our structs (fields declared in order) and for
/// `metadata` (a `BTreeMap`, sorted by UTF-8 bytes, which orders keys exactly as JCS's
/// UTF-16 order unless a key holds a character at or above U+E000) — and (2) no number
/// is a float (integers print identically; floats need ECMAScript formatting). When
/// `metadata` breaks either condition the `serde_json_canonicalizer` crate produces the
/// bytes; `fast_path_matches_the_jcs_crate` checks the two agree.
pub fn canonical_bytes<T: Serialize>(value: &T, metadata: &Map<String, Value>) -> Vec<u8> {
    if plain_is_canonical(metadata) {
        let mut out = Vec::with_capacity(640);
        serde_json::to_writer(&mut out, value).expect("records serialize");
        out
    } else {
        serde_json_canonicalizer::to_vec(value).expect("records serialize")
    }
}

/// The canonical bytes of an event's `actor`, `metadata` and `resource`, or none when
/// `metadata` needs the general JCS writer (see [`canonical_bytes`]).
pub(crate) fn canonical_parts(
    actor: &Actor,
    metadata: &Map<String, Value>,
    resource: &Resource,
) -> CanonicalParts {
    if !plain_is_canonical(metadata) {
        return CanonicalParts(None);
    }
    fn json<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        serde_json::to_writer(&mut out, v).expect("event parts serialize");
        out
    }
    CanonicalParts(Some(Box::new(Parts {
        actor: json(actor),
        metadata: json(metadata),
        resource: json(resource),
    })))
}

/// Appends `"name":`, after a comma unless it is the object's first member.
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(if out.len() == 1 { b"\"" } else { b",\"" });
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends the member `name` with the JSON of `value`.
fn member<T: Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
    key(out, name);
    serde_json::to_writer(&mut *out, value).expect("event members serialize");
}

/// Appends the member `name` with JSON already written.
fn member_raw(out: &mut Vec<u8>, name: &str, json: &[u8]) {
    key(out, name);
    out.extend_from_slice(json);
}

/// [`canonical_bytes`] of an event input, from its parts: the same bytes (its members in
/// sorted order, `id` and `timestamp` only when the client sent them).
pub(crate) fn input_canonical(input: &crate::event::EventInput, parts: &Parts) -> Vec<u8> {
    write_input(input, parts, input.id.as_deref())
}

/// [`input_canonical`] as if the client had sent no id.
pub(crate) fn input_canonical_without_id(
    input: &crate::event::EventInput,
    parts: &Parts,
) -> Vec<u8> {
    write_input(input, parts, None)
}

fn write_input(input: &crate::event::EventInput, parts: &Parts, id: Option<&str>) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(parts.actor.len() + parts.metadata.len() + parts.resource.len() + 192);
    out.push(b'{');
    member(&mut out, "action", input.action.as_str());
    member_raw(&mut out, "actor", &parts.actor);
    if let Some(id) = id {
        member(&mut out, "id", id);
    }
    member_raw(&mut out, "metadata", &parts.metadata);
    member(&mut out, "outcome", &input.outcome);
    member_raw(&mut out, "resource", &parts.resource);
    if let Some(timestamp) = &input.timestamp {
        member(&mut out, "timestamp", timestamp.as_str());
    }
    out.push(b'}');
    out
}

/// [`Record::canonical_unhashed`] of a record just chained, from its event's parts.
fn record_canonical(r: &Record, parts: &Parts) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(parts.actor.len() + parts.metadata.len() + parts.resource.len() + 384);
    out.push(b'{');
    member(&mut out, "action", r.action.as_str());
    member_raw(&mut out, "actor", &parts.actor);
    member(&mut out, "created_at", r.created_at.as_str());
    member(&mut out, "id", r.id.as_str());
    member_raw(&mut out, "metadata", &parts.metadata);
    member(&mut out, "outcome", &r.outcome);
    member(&mut out, "prev_hash", r.prev_hash.as_str());
    member_raw(&mut out, "resource", &parts.resource);
    member(&mut out, "sequence_number", &r.sequence_number);
    member(&mut out, "tenant_id", r.tenant_id.as_str());
    member(&mut out, "timestamp", r.timestamp.as_str());
    out.push(b'}');
    out
}

fn plain_is_canonical(map: &Map<String, Value>) -> bool {
    fn value_ok(v: &Value) -> bool {
        match v {
            Value::Number(n) => !n.is_f64(),
            Value::Array(items) => items.iter().all(value_ok),
            Value::Object(map) => plain_is_canonical(map),
            _ => true,
        }
    }
    map.iter()
        .all(|(k, v)| k.chars().all(|c| c < '\u{E000}') && value_ok(v))
}

/// Lowercase hex SHA-256 (`const_hex`: the `hex` crate's char-by-char encoder was a
/// visible share of the ingest profile).
pub fn hash_hex(bytes: &[u8]) -> String {
    const_hex::encode(Sha256::digest(bytes))
}

/// The tip of a tenant's chain: what the next chain step needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub sequence_number: u64,
    pub hash: String,
}

/// A record as the chainer produces it: the record and its canonical bytes (without
/// `hash`), which the store keeps so reads and verification need not re-canonicalize.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedRecord {
    pub record: Record,
    pub canonical: Vec<u8>,
    pub input_digest: String,
    /// Whether the client chose the id (a server-made UUIDv7 is known to be new).
    pub client_id: bool,
}

/// The chain step: appends `event` to the tenant's chain whose tip is `head` (`None` for
/// an empty chain). Pure and deterministic: same inputs, byte-identical output.
pub fn chain_step(
    head: Option<&ChainHead>,
    tenant_id: &str,
    event: NormalizedEvent,
) -> ChainedRecord {
    let (sequence_number, prev_hash) = match head {
        Some(h) => (h.sequence_number + 1, h.hash.clone()),
        None => (1, ZERO_HASH.to_string()),
    };
    let parts = event.parts.0;
    let mut record = Record {
        action: event.action,
        actor: event.actor,
        created_at: event.created_at,
        hash: String::new(),
        id: event.id,
        metadata: event.metadata,
        outcome: event.outcome,
        prev_hash,
        resource: event.resource,
        sequence_number,
        tenant_id: tenant_id.to_string(),
        timestamp: event.timestamp,
        redacted: None,
    };
    // The event's actor, metadata and resource were written once already, for its digest.
    let canonical = match parts {
        Some(parts) => {
            let c = record_canonical(&record, &parts);
            debug_assert_eq!(c, record.canonical_unhashed());
            c
        }
        None => record.canonical_unhashed(),
    };
    record.hash = hash_hex(&canonical);
    ChainedRecord {
        record,
        canonical,
        input_digest: event.input_digest,
        client_id: event.client_id,
    }
}

impl ChainedRecord {
    pub fn head(&self) -> ChainHead {
        ChainHead {
            sequence_number: self.record.sequence_number,
            hash: self.record.hash.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate_event;
    use serde_json::json;

    fn event(n: u32) -> NormalizedEvent {
        validate_event(
            json!({
                "id": format!("evt-{n}"),
                "timestamp": "2024-01-02T03:04:05.678Z",
                "actor": {"id": "user_1", "type": "human"},
                "action": "document.delete",
                "resource": {"id": "doc_9", "type": "document", "name": "Q3 plan"},
                "outcome": "success",
                "metadata": {"ip": "10.0.0.1", "n": n, "f": 1.5, "nested": {"b": [true, null], "a": "é😀"}}
            }),
            1_704_164_645_678_901,
            || unreachable!(),
        )
        .unwrap()
    }

    /// An event's canonical parts, written once for its digest, give the very bytes (and
    /// so the digest and hash) the whole record and input would give.
    #[test]
    fn canonical_parts_give_the_same_bytes_as_the_whole_record() {
        let inputs = [
            json!({"actor": {"id": "u"}, "action": "a.b", "resource": {"id": "r", "type": "t"}, "outcome": "failure", "metadata": {}}),
            json!({"id": "x\"y\\zé", "timestamp": "2024-01-02T03:04:05Z",
                   "actor": {"id": "ü/<", "type": "agent", "email": "a@b.c"}, "action": "a.b",
                   "resource": {"id": "r", "type": "t", "name": "😀</script>"}, "outcome": "success",
                   "metadata": {"big": 18446744073709551615u64, "neg": -9007199254740993i64, "s": "\u{1f}\"",
                                "arr": [[], {}, [null, true, false, 0]], "nested": {"z": {"y": {"x": "w"}}}, "\u{d7ff}": 1}}),
        ];
        for input in inputs {
            let event = validate_event(input, 1_704_164_645_678_901, || "minted".into()).unwrap();
            assert!(event.parts.0.is_some(), "plain metadata has parts");
            let mut whole = event.clone();
            whole.parts = CanonicalParts(None);
            let head = ChainHead {
                sequence_number: 41,
                hash: "ab".repeat(32),
            };
            let (a, b) = (
                chain_step(Some(&head), "t\"1", event),
                chain_step(Some(&head), "t\"1", whole),
            );
            assert_eq!(a.canonical, b.canonical);
            assert_eq!(a.canonical, a.record.canonical_unhashed());
            assert_eq!(a.record.hash, b.record.hash);
        }
        // The digest: the same whether written from the parts or from the whole input
        // (the second metadata has a float: no parts).
        for metadata in [json!({"k": [1, "v"]}), json!({"f": 1.5})] {
            let input = json!({"id": "01a240bf-916b-7362-8f63-96234a5f08f2", "actor": {"id": "u", "type": "human"}, "action": "a.b",
                           "resource": {"id": "r", "type": "t"}, "outcome": "success", "metadata": metadata});
            let event = validate_event(input.clone(), 1, || unreachable!()).unwrap();
            let parsed = crate::event::parse_input(input.clone()).unwrap();
            let expected = hash_hex(&canonical_bytes(&parsed, &parsed.metadata));
            assert_eq!(event.input_digest, expected);
            // Its minted digest: what the same input without the id was stored with.
            let input_with_id = input.clone();
            let mut anonymous = input;
            anonymous.as_object_mut().unwrap().remove("id");
            let minted = validate_event(anonymous, 1, || "m".into()).unwrap();
            assert_eq!(minted.minted_digest, None);
            assert_eq!(
                event.minted_digest.as_deref(),
                Some(minted.input_digest.as_str())
            );
            assert_ne!(event.input_digest, minted.input_digest);
            // An id the server could not have minted needs no second digest.
            let mut named = input_with_id.clone();
            named["id"] = json!("evt-1");
            assert_eq!(
                validate_event(named, 1, || unreachable!())
                    .unwrap()
                    .minted_digest,
                None
            );
        }
    }

    /// Known-answer vector: the hash below was computed with Python's `rfc8785` package and
    /// `hashlib.sha256`, independently of this crate (see tests/python for the live check).
    #[test]
    fn known_answer_first_record() {
        let rec = chain_step(None, "tenant-a", event(1));
        assert_eq!(
            String::from_utf8(rec.canonical.clone()).unwrap(),
            r#"{"action":"document.delete","actor":{"id":"user_1","type":"human"},"created_at":"2024-01-02T03:04:05.678901Z","id":"evt-1","metadata":{"f":1.5,"ip":"10.0.0.1","n":1,"nested":{"a":"é😀","b":[true,null]}},"outcome":"success","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","resource":{"id":"doc_9","name":"Q3 plan","type":"document"},"sequence_number":1,"tenant_id":"tenant-a","timestamp":"2024-01-02T03:04:05.678000Z"}"#
        );
        assert_eq!(rec.record.hash, KNOWN_HASH_1);
    }
    const KNOWN_HASH_1: &str = "30a9ddbf35d287b6cf737dbaec61c53da423e467af016bed607663f7d39fa71f";

    #[test]
    fn fast_path_matches_the_jcs_crate() {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            any::<i32>().prop_map(|i| json!(i)),
            (-9007199254740991i64..=9007199254740991).prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(|s| json!(s)),
            any::<bool>().prop_map(|b| json!(b)),
            Just(Value::Null),
        ];
        let tree = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    "[a-z\\u{e000}-\\u{e010}\\u{1f600}-\\u{1f610}é]{0,4}",
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &prop::collection::btree_map("[a-z\\u{e000}\\u{1f600}]{1,3}", tree, 0..5),
                |meta| {
                    let mut rec = chain_step(None, "t", event(1)).record;
                    rec.metadata = meta.into_iter().collect();
                    let fast = rec.canonical_unhashed();
                    let view = serde_json::to_value(&rec).unwrap();
                    let mut without = view.as_object().unwrap().clone();
                    without.remove("hash");
                    let reference = serde_json_canonicalizer::to_vec(&without).unwrap();
                    prop_assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        String::from_utf8(reference).unwrap()
                    );
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn chain_links_and_is_deterministic() {
        let r1 = chain_step(None, "t", event(1));
        let r2 = chain_step(Some(&r1.head()), "t", event(2));
        assert_eq!(r2.record.sequence_number, 2);
        assert_eq!(r2.record.prev_hash, r1.record.hash);
        let again = chain_step(Some(&r1.head()), "t", event(2));
        assert_eq!(again, r2);
        assert_eq!(r2.record.compute_hash(), r2.record.hash);
    }

    #[test]
    fn serde_output_hashes_to_hash() {
        let r = chain_step(None, "t", event(3)).record;
        let json = serde_json::to_value(&r).unwrap();
        let mut without = json.as_object().unwrap().clone();
        without.remove("hash");
        let canon = serde_json_canonicalizer::to_vec(&without).unwrap();
        assert_eq!(hash_hex(&canon), r.hash);
        let back: Record = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }
}
