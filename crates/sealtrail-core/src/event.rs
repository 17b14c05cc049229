//! The ingest input: validation and normalization of one event.
//!
//! The gateway runs [`validate_event`] on every event before it is published, so the
//! chainer only ever sees [`NormalizedEvent`]s; the id and acceptance time are passed in
//! (the core has no clock and no randomness).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::limits::*;
use crate::time;

/// A rejected input. `code` is the machine-readable error code sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<crate::json::JsonError> for ValidationError {
    fn from(err: crate::json::JsonError) -> Self {
        Self {
            code: err.code,
            message: err.message,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorType {
    Human,
    Agent,
    System,
}

impl ActorType {
    pub const ALL: [&'static str; 3] = ["human", "agent", "system"];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Agent => "agent",
            Self::System => "system",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "human" => Some(Self::Human),
            "agent" => Some(Self::Agent),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Error,
}

impl Outcome {
    pub const ALL: [&'static str; 3] = ["success", "failure", "error"];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Error => "error",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// Who did it. Fields are declared in JCS order so plain serde output is sorted too.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub actor_type: Option<ActorType>,
}

/// What it was done to.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub resource_type: String,
}

/// The client-supplied part of an event, as validated (wire shape of `AuditEventInput`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventInput {
    pub action: String,
    pub actor: Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub metadata: Map<String, Value>,
    pub outcome: Outcome,
    pub resource: Resource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// An event ready to be chained: validated, normalized, with its id, `timestamp` and
/// `created_at` resolved at the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizedEvent {
    pub id: String,
    pub timestamp: String,
    pub created_at: String,
    pub actor: Actor,
    pub action: String,
    pub resource: Resource,
    pub outcome: Outcome,
    pub metadata: Map<String, Value>,
    /// Hex SHA-256 of the JCS form of what the client sent (normalized), used to tell an
    /// idempotent retry (same digest) from a conflicting reuse of an id (DESIGN.md §4.5).
    /// Server-filled defaults (a generated id, a defaulted timestamp) are not part of it,
    /// so a retry that again omits `timestamp` matches.
    pub input_digest: String,
    /// For an event whose client sent an id the server could have minted (a UUIDv7): the
    /// digest of the same input without the id, which is what was stored for an event
    /// whose id the server minted. A client that lost an answer sends the minted ids back
    /// (a `504` and every receipt name them); such a retry is the same event, answered
    /// with the stored record, not a conflict. (A stored digest of a client-chosen id covers the id, so it never equals
    /// this one.) Absent on the wire when none, so older chainers read entries unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted_digest: Option<String>,
    /// Whether the client chose the id. A server-generated id (a fresh UUIDv7) cannot
    /// already be stored, so the chainer skips its idempotency lookup.
    #[serde(default = "client_chosen")]
    pub client_id: bool,
    /// The canonical bytes of `actor`, `metadata` and `resource`, written once for the
    /// digest and used again for the record ([`crate::record::chain_step`]). Not on the
    /// wire (an event read from Kafka has none: its record is written whole) and not
    /// part of equality.
    #[serde(skip)]
    pub parts: CanonicalParts,
}

/// See [`NormalizedEvent::parts`]. Empty when `metadata` needs the general JCS writer
/// (a float, or a key at or above U+E000: `record::canonical_bytes`).
#[derive(Clone, Default)]
pub struct CanonicalParts(pub(crate) Option<Box<Parts>>);

#[derive(Clone)]
pub(crate) struct Parts {
    pub actor: Vec<u8>,
    pub metadata: Vec<u8>,
    pub resource: Vec<u8>,
}

impl PartialEq for CanonicalParts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for CanonicalParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CanonicalParts(..)"
        } else {
            "CanonicalParts(none)"
        })
    }
}

fn client_chosen() -> bool {
    true
}

const TOP_LEVEL: [&str; 7] = [
    "id",
    "timestamp",
    "actor",
    "action",
    "resource",
    "outcome",
    "metadata",
];

/// Validates one event object and resolves it into a [`NormalizedEvent`].
///
/// `created_at` is the acceptance time in UTC microseconds; `new_id` is called only when
/// the client sent no `id`.
pub fn validate_event(
    value: Value,
    created_at: time::Micros,
    new_id: impl FnOnce() -> String,
) -> Result<NormalizedEvent, ValidationError> {
    normalize(parse_input(value)?, created_at, new_id)
}

/// Parses one event from its JSON bytes and validates it: exactly the result of
/// [`crate::json::parse_strict`] followed by [`validate_event`] (the same event, or the
/// same error), in about half the time for a valid event.
///
/// A valid event is read straight into typed fields ([`fast_input`]) instead of through a
/// `serde_json::Value` tree, which allocates a map per object and a string per member
/// name. Anything the typed reader does not accept as it stands — a missing or mistyped
/// member, an unknown or repeated one, a `null` where a value is required, a value that
/// fails a check — goes the general way, which then names the error. So the fast way
/// only has to accept nothing the general way refuses, and build the same input from what
/// it accepts; a property test and the `ingest_event` fuzz target compare the two.
pub fn validate_event_json(
    bytes: &[u8],
    created_at: time::Micros,
    new_id: impl FnOnce() -> String,
) -> Result<NormalizedEvent, ValidationError> {
    match fast_input(bytes) {
        Some(input) => normalize(input, created_at, new_id),
        None => validate_event(crate::json::parse_strict(bytes)?, created_at, new_id),
    }
}

/// Resolves a checked input into a [`NormalizedEvent`]: its digest, its id (`new_id`
/// when the client sent none), its timestamp (the acceptance time when none was sent).
pub fn normalize(
    input: EventInput,
    created_at: time::Micros,
    new_id: impl FnOnce() -> String,
) -> Result<NormalizedEvent, ValidationError> {
    let parts = crate::record::canonical_parts(&input.actor, &input.metadata, &input.resource);
    let input_digest = digest_input(&input, parts.0.as_deref());
    let minted_digest = input
        .id
        .as_deref()
        .is_some_and(could_be_minted)
        .then(|| minted_digest(&input, parts.0.as_deref()));
    let created_at = time::format_micros(created_at);
    let client_id = input.id.is_some();
    Ok(NormalizedEvent {
        client_id,
        id: input.id.unwrap_or_else(new_id),
        timestamp: input.timestamp.unwrap_or_else(|| created_at.clone()),
        created_at,
        actor: input.actor,
        action: input.action,
        resource: input.resource,
        outcome: input.outcome,
        metadata: input.metadata,
        input_digest,
        minted_digest,
        parts,
    })
}

/// Whether `id` could be one the server minted: those are UUIDv7s, hyphenated and
/// lowercase (`sealtrail_api::ingest::new_id`). Only such an id needs a
/// [`NormalizedEvent::minted_digest`]; other client ids skip a second digest.
fn could_be_minted(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36 && b[14] == b'7' && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
}

/// The digest `input` would have had without its id (see [`NormalizedEvent::minted_digest`]).
fn minted_digest(input: &EventInput, parts: Option<&Parts>) -> String {
    let canonical = match parts {
        Some(parts) => crate::record::input_canonical_without_id(input, parts),
        None => {
            let without = EventInput {
                id: None,
                ..input.clone()
            };
            crate::record::canonical_bytes(&without, &without.metadata)
        }
    };
    const_hex::encode(Sha256::digest(&canonical))
}

fn digest_input(input: &EventInput, parts: Option<&Parts>) -> String {
    // The same canonical bytes as records get: the digest must not depend on member
    // order in the request, and must stay stable across versions (it is stored).
    let canonical = match parts {
        Some(parts) => {
            let c = crate::record::input_canonical(input, parts);
            debug_assert_eq!(c, crate::record::canonical_bytes(input, &input.metadata));
            c
        }
        None => crate::record::canonical_bytes(input, &input.metadata),
    };
    const_hex::encode(Sha256::digest(&canonical))
}

/// Checks the shape and limits of one event object (see [`crate::limits`]).
pub fn parse_input(value: Value) -> Result<EventInput, ValidationError> {
    let Value::Object(mut body) = value else {
        return Err(ValidationError::new(
            "invalid_body",
            format!("an event must be a JSON object, not {}", kind(&value)),
        ));
    };
    if let Some(unknown) = body.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(ValidationError::new(
            "unknown_field",
            format!(
                "unknown member {unknown:?}; an event may only set {} (tenant_id, sequence_number, hashes and created_at are set by sealtrail)",
                TOP_LEVEL.join(", ")
            ),
        ));
    }
    let id = optional_string(&mut body, "id", MAX_ID_LEN)?;
    if let Some(id) = &id {
        check_token("id", id)?;
    }
    let timestamp = optional_string(&mut body, "timestamp", 64)?
        .map(|t| {
            time::normalize(&t)
                .map_err(|m| ValidationError::new("invalid_timestamp", format!("timestamp: {m}")))
        })
        .transpose()?;
    let action = required_string(&mut body, "action", MAX_ACTION_LEN)?;
    check_action(&action)?;
    let outcome_text = required_string(&mut body, "outcome", 32)?;
    let outcome = Outcome::parse(&outcome_text).ok_or_else(|| {
        ValidationError::new(
            "invalid_field",
            format!(
                "outcome {outcome_text:?} is not one of {}",
                Outcome::ALL.join(", ")
            ),
        )
    })?;

    let mut actor_obj = required_object(&mut body, "actor")?;
    reject_unknown(&actor_obj, "actor", &["id", "type", "email"])?;
    let actor_id = required_string(&mut actor_obj, "actor.id", MAX_OBJECT_ID_LEN)?;
    let actor_type = optional_string(&mut actor_obj, "actor.type", 32)?
        .map(|t| {
            ActorType::parse(&t).ok_or_else(|| {
                ValidationError::new(
                    "invalid_field",
                    format!(
                        "actor.type {t:?} is not one of {}",
                        ActorType::ALL.join(", ")
                    ),
                )
            })
        })
        .transpose()?;
    let email = optional_string(&mut actor_obj, "actor.email", MAX_EMAIL_LEN)?;

    let mut resource_obj = required_object(&mut body, "resource")?;
    reject_unknown(&resource_obj, "resource", &["id", "type", "name"])?;
    let resource_id = required_string(&mut resource_obj, "resource.id", MAX_OBJECT_ID_LEN)?;
    let resource_type = required_string(&mut resource_obj, "resource.type", MAX_TYPE_LEN)?;
    let name = optional_string(&mut resource_obj, "resource.name", MAX_NAME_LEN)?;

    let metadata = match body.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => {
            let size = serialized_len(&map);
            if size > MAX_METADATA_BYTES {
                return Err(ValidationError::new(
                    "field_too_long",
                    format!(
                        "metadata is {size} bytes once serialized; the limit is {MAX_METADATA_BYTES}"
                    ),
                ));
            }
            map
        }
        Some(other) => {
            return Err(ValidationError::new(
                "invalid_field",
                format!("metadata must be a JSON object, not {}", kind(&other)),
            ));
        }
    };

    Ok(EventInput {
        action,
        actor: Actor {
            email,
            id: actor_id,
            actor_type,
        },
        id,
        metadata,
        outcome,
        resource: Resource {
            id: resource_id,
            name,
            resource_type,
        },
        timestamp,
    })
}

/// The length of `map`'s compact JSON form, without building it.
fn serialized_len(map: &Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, map) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// The typed reading of an event body (see [`validate_event_json`]): `None` for anything
/// but a well-formed, valid event, which the general way then reads and names the error.
/// Every check below is the one [`parse_input`] makes on the same member.
fn fast_input(bytes: &[u8]) -> Option<EventInput> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Input {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        timestamp: Option<String>,
        actor: ObjectOnly<ActorIn>,
        action: String,
        resource: ObjectOnly<ResourceIn>,
        outcome: String,
        #[serde(default, deserialize_with = "metadata_member")]
        metadata: Option<Value>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ActorIn {
        #[serde(default)]
        email: Option<String>,
        id: String,
        #[serde(rename = "type", default)]
        actor_type: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ResourceIn {
        id: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(rename = "type")]
        resource_type: String,
    }
    /// `metadata` sits at depth 2 of the body; read by the strict parser itself.
    fn metadata_member<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        crate::json::strict_value_at(d, 2).map(Some)
    }

    // The strict parser's checks that typed reading does not make by itself: integer
    // literals beyond the I-JSON range (inside `metadata`, the only place a number is
    // accepted) and trailing input.
    crate::json::reject_big_integer_literals(bytes).ok()?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let ObjectOnly(input) = ObjectOnly::<Input>::deserialize(&mut de).ok()?;
    de.end().ok()?;

    let ObjectOnly(actor) = input.actor;
    let ObjectOnly(resource) = input.resource;
    EventFields {
        id: input.id,
        timestamp: input.timestamp,
        actor_id: actor.id,
        actor_type: actor.actor_type,
        actor_email: actor.email,
        action: input.action,
        resource_id: resource.id,
        resource_type: resource.resource_type,
        resource_name: resource.name,
        outcome: input.outcome,
        metadata: input.metadata,
    }
    .into_input()
}

/// An event's members as a typed reader took them — a REST body read into typed fields
/// ([`validate_event_json`]), a gRPC message — before any check. Absent optional members
/// are `None`; `metadata` is the value given (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct EventFields {
    pub id: Option<String>,
    pub timestamp: Option<String>,
    pub actor_id: String,
    pub actor_type: Option<String>,
    pub actor_email: Option<String>,
    pub action: String,
    pub resource_id: String,
    pub resource_type: String,
    pub resource_name: Option<String>,
    pub outcome: String,
    pub metadata: Option<Value>,
}

impl EventFields {
    /// The event these members make if it passes every check [`parse_input`] makes on the
    /// same members; `None` otherwise, and the caller then takes the general way
    /// ([`validate_event`] on the JSON value), which names the error. A typed reader
    /// thus never needs error messages of its own.
    pub fn into_input(self) -> Option<EventInput> {
        self.try_into_input().ok()
    }

    /// [`Self::into_input`], giving the members back when they do not pass, so a caller
    /// that moved them out of its own message can put them back for the general way (boxed:
    /// that way is the rare one).
    pub fn try_into_input(self) -> Result<EventInput, Box<Self>> {
        let Some((timestamp, outcome, actor_type)) = self.checked() else {
            return Err(Box::new(self));
        };
        let metadata = match self.metadata {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Ok(EventInput {
            action: self.action,
            actor: Actor {
                email: self.actor_email,
                id: self.actor_id,
                actor_type,
            },
            id: self.id,
            metadata,
            outcome,
            resource: Resource {
                id: self.resource_id,
                name: self.resource_name,
                resource_type: self.resource_type,
            },
            timestamp,
        })
    }

    /// Every check of [`Self::into_input`], by reference: the normalized timestamp, the
    /// outcome and the actor type when the members pass, `None` otherwise.
    fn checked(&self) -> Option<(Option<String>, Outcome, Option<ActorType>)> {
        let ok = |path: &str, text: &str, max: usize| check_string(path, text, max).is_ok();
        if let Some(id) = &self.id
            && !(ok("id", id, MAX_ID_LEN) && check_token("id", id).is_ok())
        {
            return None;
        }
        let timestamp = match &self.timestamp {
            Some(t) if ok("timestamp", t, 64) => Some(time::normalize(t).ok()?),
            Some(_) => return None,
            None => None,
        };
        if !(ok("action", &self.action, MAX_ACTION_LEN) && check_action(&self.action).is_ok()) {
            return None;
        }
        if !ok("outcome", &self.outcome, 32) {
            return None;
        }
        let outcome = Outcome::parse(&self.outcome)?;
        if !ok("actor.id", &self.actor_id, MAX_OBJECT_ID_LEN) {
            return None;
        }
        let actor_type = match &self.actor_type {
            Some(t) if ok("actor.type", t, 32) => Some(ActorType::parse(t)?),
            Some(_) => return None,
            None => None,
        };
        if let Some(email) = &self.actor_email
            && !ok("actor.email", email, MAX_EMAIL_LEN)
        {
            return None;
        }
        if !(ok("resource.id", &self.resource_id, MAX_OBJECT_ID_LEN)
            && ok("resource.type", &self.resource_type, MAX_TYPE_LEN))
        {
            return None;
        }
        if let Some(name) = &self.resource_name
            && !ok("resource.name", name, MAX_NAME_LEN)
        {
            return None;
        }
        match &self.metadata {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) if serialized_len(map) <= MAX_METADATA_BYTES => {}
            Some(_) => return None,
        }
        Some((timestamp, outcome, actor_type))
    }
}

/// A struct read only from a JSON object: serde's derived readers also take an array
/// (the members in declaration order), which an event, its actor and its resource are not.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Objects<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Objects<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Objects(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn reject_unknown(
    obj: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> Result<(), ValidationError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(ValidationError::new(
            "unknown_field",
            format!(
                "unknown member {path}.{unknown}; {path} may only set {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn required_object(
    obj: &mut Map<String, Value>,
    path: &str,
) -> Result<Map<String, Value>, ValidationError> {
    match obj.remove(leaf(path)) {
        Some(Value::Object(map)) => Ok(map),
        None | Some(Value::Null) => Err(ValidationError::new(
            "missing_field",
            format!("{path} is required"),
        )),
        Some(other) => Err(ValidationError::new(
            "invalid_field",
            format!("{path} must be an object, not {}", kind(&other)),
        )),
    }
}

fn optional_string(
    obj: &mut Map<String, Value>,
    path: &str,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    match obj.remove(leaf(path)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            check_string(path, &text, max)?;
            Ok(Some(text))
        }
        Some(other) => Err(ValidationError::new(
            "invalid_field",
            format!("{path} must be a string, not {}", kind(&other)),
        )),
    }
}

fn required_string(
    obj: &mut Map<String, Value>,
    path: &str,
    max: usize,
) -> Result<String, ValidationError> {
    optional_string(obj, path, max)?
        .ok_or_else(|| ValidationError::new("missing_field", format!("{path} is required")))
}

fn check_string(path: &str, text: &str, max: usize) -> Result<(), ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::new(
            "missing_field",
            format!("{path} must not be empty"),
        ));
    }
    if text.len() > max {
        return Err(ValidationError::new(
            "field_too_long",
            format!("{path} is {} bytes; the limit is {max}", text.len()),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "invalid_field",
            format!("{path} must not contain control characters"),
        ));
    }
    Ok(())
}

fn check_token(path: &str, text: &str) -> Result<(), ValidationError> {
    if text.chars().any(char::is_whitespace) {
        return Err(ValidationError::new(
            "invalid_field",
            format!("{path} must not contain whitespace"),
        ));
    }
    Ok(())
}

/// Actions the server writes itself (`crate::record::REDACT_ACTION`); clients may not.
pub const RESERVED_ACTION_PREFIX: &str = "sealtrail.";

fn check_action(action: &str) -> Result<(), ValidationError> {
    check_token("action", action)?;
    if action.starts_with(RESERVED_ACTION_PREFIX) {
        return Err(ValidationError::new(
            "reserved_action",
            format!(
                "action {action:?}: actions starting with {RESERVED_ACTION_PREFIX:?} are written by sealtrail itself (such as a redaction); choose another prefix"
            ),
        ));
    }
    if action.split('.').any(str::is_empty) {
        return Err(ValidationError::new(
            "invalid_field",
            format!(
                "action {action:?} must be dot-notation such as document.delete (no empty segment)"
            ),
        ));
    }
    Ok(())
}

/// The 48-bit millisecond timestamp of a UUIDv7 in its text form (either case); `None`
/// for any other id. Stores key ids and receipts by it, so the entries written together
/// (ids minted together) sit together.
pub fn uuid7_millis(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if b.len() != 36
        || b[8] != b'-'
        || b[13] != b'-'
        || b[14] != b'7'
        || b[18] != b'-'
        || b[23] != b'-'
    {
        return None;
    }
    let mut ms = 0u64;
    for &c in b[..8].iter().chain(&b[9..13]) {
        ms = ms << 4 | u64::from((c as char).to_digit(16)?);
    }
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok_event() -> Value {
        json!({
            "actor": {"id": "u1", "type": "human", "email": "a@example.com"},
            "action": "document.delete",
            "resource": {"id": "d1", "type": "document"},
            "outcome": "success"
        })
    }

    fn code_of(v: Value) -> &'static str {
        validate_event(v, 0, || "gen".into()).unwrap_err().code
    }

    #[test]
    fn fills_defaults() {
        let e = validate_event(ok_event(), 1_700_000_000_123_456, || "gen-1".into()).unwrap();
        assert_eq!(e.id, "gen-1");
        assert_eq!(e.timestamp, "2023-11-14T22:13:20.123456Z");
        assert_eq!(e.created_at, e.timestamp);
        assert!(e.metadata.is_empty());
    }

    #[test]
    fn digest_ignores_server_defaults_but_not_content() {
        let a = validate_event(ok_event(), 1, || "x".into()).unwrap();
        let b = validate_event(ok_event(), 2, || "y".into()).unwrap();
        assert_eq!(a.input_digest, b.input_digest);
        let mut changed = ok_event();
        changed["outcome"] = json!("failure");
        let c = validate_event(changed, 1, || "x".into()).unwrap();
        assert_ne!(a.input_digest, c.input_digest);
        // metadata {} and absent are the same content
        let mut with_meta = ok_event();
        with_meta["metadata"] = json!({});
        assert_eq!(
            validate_event(with_meta, 1, || "x".into())
                .unwrap()
                .input_digest,
            a.input_digest
        );
    }

    #[test]
    fn rejects_each_error_class() {
        let mut v = ok_event();
        v["tenant_id"] = json!("other");
        assert_eq!(code_of(v), "unknown_field");
        let mut v = ok_event();
        v["actor"]["role"] = json!("admin");
        assert_eq!(code_of(v), "unknown_field");
        let mut v = ok_event();
        v.as_object_mut().unwrap().remove("action");
        assert_eq!(code_of(v), "missing_field");
        let mut v = ok_event();
        v["action"] = json!("  ");
        assert_eq!(code_of(v), "missing_field");
        let mut v = ok_event();
        v["outcome"] = json!("maybe");
        assert_eq!(code_of(v), "invalid_field");
        let mut v = ok_event();
        v["actor"]["type"] = json!("robot");
        assert_eq!(code_of(v), "invalid_field");
        let mut v = ok_event();
        v["metadata"] = json!([1]);
        assert_eq!(code_of(v), "invalid_field");
        let mut v = ok_event();
        v["timestamp"] = json!("2023-11-07 noon");
        assert_eq!(code_of(v), "invalid_timestamp");
        let mut v = ok_event();
        v["resource"]["id"] = json!("x".repeat(MAX_OBJECT_ID_LEN + 1));
        assert_eq!(code_of(v), "field_too_long");
        let mut v = ok_event();
        v["action"] = json!("document..delete");
        assert_eq!(code_of(v), "invalid_field");
        let mut v = ok_event();
        v["action"] = json!("sealtrail.event.redact");
        assert_eq!(code_of(v), "reserved_action");
        let mut v = ok_event();
        v["action"] = json!("sealtrailer.event");
        assert!(validate_event(v, 0, || "x".into()).is_ok());
        let mut v = ok_event();
        v["metadata"] = json!({"blob": "x".repeat(MAX_METADATA_BYTES)});
        assert_eq!(code_of(v), "field_too_long");
        assert_eq!(code_of(json!([1, 2])), "invalid_body");
        let mut v = ok_event();
        v["actor"] = json!("u1");
        assert_eq!(code_of(v), "invalid_field");
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::any;
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            "[a-z.]{0,6}".prop_map(Value::String),
            prop::sample::select(vec!["human", "success", "2024-01-01T00:00:00Z", "a.b", ""])
                .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "id",
                        "type",
                        "email",
                        "name",
                        "actor",
                        "action",
                        "resource",
                        "outcome",
                        "metadata",
                        "timestamp",
                        "x",
                    ])
                    .prop_map(str::to_string),
                    inner,
                    0..7
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An event body as text: a valid event's members, then `mutations` applied (each an
    /// index into [`MUTATIONS`] and a member to apply it to), so most bodies are near-valid.
    fn mutated_body(mutations: &[(usize, usize)]) -> String {
        let mut members: Vec<(String, String)> = [
            ("id", r#""evt_1""#),
            ("timestamp", r#""2024-05-01T12:00:00+02:00""#),
            (
                "actor",
                r#"{"id":"u1","type":"human","email":"a@example.com"}"#,
            ),
            ("action", r#""document.delete""#),
            ("resource", r#"{"id":"d1","type":"document","name":"Q3"}"#),
            ("outcome", r#""success""#),
            ("metadata", r#"{"ip":"203.0.113.7","n":[1,2.5,{"k":null}]}"#),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut trailing = "";
        for &(m, at) in mutations {
            let at = at % members.len().max(1);
            let values = MUTATIONS[m % MUTATIONS.len()];
            match values {
                "DROP" => {
                    members.remove(at);
                }
                "DUP" => {
                    let copy = members[at].clone();
                    members.push(copy);
                }
                "UNKNOWN" => members.push(("x".into(), "1".into())),
                "ESCAPED_KEY" => members[at].0 = members[at].0.replacen('i', "\\u0069", 1),
                "ACTOR_ARRAY" => members.push(("actor".into(), r#"["u1","human"]"#.into())),
                "ACTOR_EXTRA" => {
                    members.retain(|(k, _)| k != "actor");
                    members.push(("actor".into(), r#"{"id":"u1","x":1}"#.into()));
                }
                "ACTOR_DUP" => {
                    members.retain(|(k, _)| k != "actor");
                    members.push(("actor".into(), r#"{"id":"u1","id":"u2"}"#.into()));
                }
                "RESOURCE_NULL_NAME" => {
                    members.retain(|(k, _)| k != "resource");
                    members.push((
                        "resource".into(),
                        r#"{"id":"d","type":"t","name":null}"#.into(),
                    ));
                }
                "RESOURCE_NO_TYPE" => {
                    members.retain(|(k, _)| k != "resource");
                    members.push(("resource".into(), r#"{"id":"d"}"#.into()));
                }
                "META_DEEP" => {
                    let deep = "[".repeat(31) + &"]".repeat(31);
                    members.retain(|(k, _)| k != "metadata");
                    members.push(("metadata".into(), format!(r#"{{"d":{deep}}}"#)));
                }
                "META_DEEPER" => {
                    let deep = "[".repeat(30) + &"]".repeat(30);
                    members.retain(|(k, _)| k != "metadata");
                    members.push(("metadata".into(), format!(r#"{{"d":{deep}}}"#)));
                }
                "META_BIG_INT" => {
                    members.retain(|(k, _)| k != "metadata");
                    let n = [
                        "9007199254740993",
                        "18446744073709551616",
                        "-9223372036854775809",
                    ];
                    members.push(("metadata".into(), format!(r#"{{"n":{}}}"#, n[at % 3])));
                }
                "META_DUP" => {
                    members.retain(|(k, _)| k != "metadata");
                    members.push(("metadata".into(), r#"{"a":1,"b":{"c":1,"c":2}}"#.into()));
                }
                "META_LARGE" => {
                    members.retain(|(k, _)| k != "metadata");
                    // `{"a":"` and `"}` are 8 bytes: one over the limit
                    let big = "x".repeat(MAX_METADATA_BYTES - 7);
                    members.push(("metadata".into(), format!(r#"{{"a":"{big}"}}"#)));
                }
                "META_LIMIT" => {
                    members.retain(|(k, _)| k != "metadata");
                    let big = "x".repeat(MAX_METADATA_BYTES - 8); // exactly the limit
                    members.push(("metadata".into(), format!(r#"{{"a":"{big}"}}"#)));
                }
                "TRAILING" => trailing = [" 1", " {}", "  ", ","][at % 4],
                value => members[at].1 = value.to_string(),
            }
            if members.is_empty() {
                break;
            }
        }
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!(r#""{k}":{v}"#))
            .collect();
        format!("{{{}}}{trailing}", body.join(","))
    }

    const MUTATIONS: &[&str] = &[
        "DROP",
        "DUP",
        "UNKNOWN",
        "ESCAPED_KEY",
        "ACTOR_ARRAY",
        "ACTOR_EXTRA",
        "ACTOR_DUP",
        "RESOURCE_NULL_NAME",
        "RESOURCE_NO_TYPE",
        "META_DEEP",
        "META_DEEPER",
        "META_BIG_INT",
        "META_DUP",
        "META_LARGE",
        "META_LIMIT",
        "TRAILING",
        "null",
        "1",
        "1.5",
        "true",
        "[]",
        "{}",
        r#""""#,
        r#"" ""#,
        r#""a b""#,
        r#""a..b""#,
        r#""agent""#,
        r#""failure""#,
        r#""Human""#,
        r#""2024-01-01T00:00:00Z""#,
        r#""2024-13-01T00:00:00Z""#,
        r#""x\u0001""#,
        r#""d\u00e9j\u00e0.vu""#,
        r#""9007199254740993""#,
        "9007199254740993",
        "-0",
        "1e400",
        r#"{"id":"u2"}"#,
        r#"{"id":"u","type":"t"}"#,
        r#"{"a":{"b":[1,{"c":"d"}]}}"#,
    ];

    proptest::proptest! {
        // Cheap (~30 µs a case) and the mutations are many: 4,096 cases hit each one on
        // each member several times.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// The typed reading of a body gives exactly what the general one gives: the same
        /// event, or the same error (code and message).
        #[test]
        fn typed_reading_agrees_with_the_general_one(
            mutations in proptest::collection::vec((0..MUTATIONS.len(), 0usize..7), 0..4)
        ) {
            let body = mutated_body(&mutations);
            let fast = validate_event_json(body.as_bytes(), 7, || "gen".into());
            let general = crate::json::parse_strict(body.as_bytes())
                .map_err(ValidationError::from)
                .and_then(|v| validate_event(v, 7, || "gen".into()));
            proptest::prop_assert_eq!(fast, general, "body: {}", body);
        }

        /// Any JSON value at all, too (mostly invalid events).
        #[test]
        fn typed_reading_agrees_on_any_json(v in arb_json()) {
            let body = serde_json::to_vec(&v).unwrap();
            let fast = validate_event_json(&body, 7, || "gen".into());
            let general = crate::json::parse_strict(&body)
                .map_err(ValidationError::from)
                .and_then(|v| validate_event(v, 7, || "gen".into()));
            proptest::prop_assert_eq!(fast, general);
        }
    }

    /// The typed reading takes the common event (else the speed-up is lost, silently).
    #[test]
    fn typed_reading_takes_a_plain_event() {
        let body = mutated_body(&[]);
        assert!(fast_input(body.as_bytes()).is_some(), "{body}");
        let event = validate_event_json(body.as_bytes(), 7, || "gen".into()).unwrap();
        assert_eq!(event.timestamp, "2024-05-01T10:00:00.000000Z");
        assert_eq!(event.metadata["n"][1], json!(2.5));
        for (m, at) in [(16, 1), (16, 6), (26, 0), (27, 5)] {
            let body = mutated_body(&[(m, at)]);
            assert!(fast_input(body.as_bytes()).is_some(), "{body}");
        }
    }

    proptest::proptest! {
        /// Validation is total: any JSON gets a result, never a panic; an error always
        /// carries a code and a message; an accepted event is fully normalized.
        #[test]
        fn validation_never_panics_and_accepts_only_normalized_events(v in arb_json()) {
            match validate_event(v, 1_700_000_000_000_000, || "generated".into()) {
                Ok(e) => {
                    proptest::prop_assert!(!e.action.trim().is_empty() && !e.actor.id.trim().is_empty());
                    proptest::prop_assert!(crate::time::parse_rfc3339(&e.timestamp).is_ok());
                    proptest::prop_assert_eq!(crate::time::normalize(&e.timestamp).unwrap(), e.timestamp.clone());
                    proptest::prop_assert_eq!(e.input_digest.len(), 64);
                }
                Err(err) => proptest::prop_assert!(!err.code.is_empty() && !err.message.is_empty()),
            }
        }

        /// Member order in the request does not change the digest (idempotent retries from
        /// clients that serialize differently still match).
        #[test]
        fn digest_is_independent_of_member_order(action in "[a-z]{1,5}\\.[a-z]{1,5}", n in proptest::prelude::any::<i32>()) {
            let a = format!(r#"{{"action":"{action}","actor":{{"id":"u","type":"agent"}},"resource":{{"id":"r","type":"t"}},"outcome":"error","metadata":{{"n":{n},"z":[1]}}}}"#);
            let b = format!(r#"{{"metadata":{{"z":[1],"n":{n}}},"outcome":"error","resource":{{"type":"t","id":"r"}},"actor":{{"type":"agent","id":"u"}},"action":"{action}"}}"#);
            let da = validate_event(crate::json::parse_strict(a.as_bytes()).unwrap(), 1, || "x".into()).unwrap().input_digest;
            let db = validate_event(crate::json::parse_strict(b.as_bytes()).unwrap(), 2, || "y".into()).unwrap().input_digest;
            proptest::prop_assert_eq!(da, db);
        }
    }
}
