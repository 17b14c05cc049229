//! A committed record written as a `sealtrail.v1.Record` message straight from the core
//! record (issue 11): the bytes [`record_with_metadata`](crate::record_with_metadata)
//! then prost would write, without building the message first. An `Ingest` stream
//! acknowledges each event with its record; building the message cloned a dozen strings
//! per record only to copy them once more into the frame and free them, ~7% of the
//! server's CPU in the streaming benchmark.
//!
//! The contract is byte equality with prost's encoding of the built message (fields in
//! number order, proto3 defaults left out, `optional` fields present when set), checked
//! by the tests below on every shape of record.

use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use sealtrail_core::record::Record;

use crate::convert::{actor_type_from_core, outcome_from_core};

/// A core record with its `metadata` as JSON text (its canonical form, or what
/// `serde_json` writes for it), as the `Record` message.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub record: &'a Record,
    /// Valid UTF-8 JSON text; ignored for a redacted record (the message has none).
    pub metadata_json: &'a [u8],
}

impl RecordRef<'_> {
    /// Length of the message's encoding (without a key or length prefix).
    pub fn encoded_len(&self) -> usize {
        let r = self.record;
        let mut len = str_len(1, &r.id)
            + str_len(2, &r.tenant_id)
            + u64_len(3, r.sequence_number)
            + str_len(11, &r.prev_hash)
            + str_len(12, &r.hash);
        if let Some(by) = &r.redacted {
            return len + message_len(13, redaction_len(by));
        }
        len += str_len(4, &r.timestamp)
            + str_len(5, &r.created_at)
            + message_len(6, self.actor_len())
            + str_len(7, &r.action)
            + message_len(8, self.resource_len())
            + enum_len(9, outcome_from_core(r.outcome) as i32)
            + bytes_len(10, self.metadata_json);
        len
    }

    /// Writes the message's fields (without a key or length prefix).
    pub fn encode_raw(&self, buf: &mut impl BufMut) {
        let r = self.record;
        put_str(1, &r.id, buf);
        put_str(2, &r.tenant_id, buf);
        put_u64(3, r.sequence_number, buf);
        if let Some(by) = &r.redacted {
            put_str(11, &r.prev_hash, buf);
            put_str(12, &r.hash, buf);
            put_message_header(13, redaction_len(by), buf);
            put_str(1, &by.event_id, buf);
            put_u64(2, by.sequence_number, buf);
            return;
        }
        put_str(4, &r.timestamp, buf);
        put_str(5, &r.created_at, buf);
        put_message_header(6, self.actor_len(), buf);
        put_str(1, &r.actor.id, buf);
        put_enum(2, actor_type_from_core(r.actor.actor_type) as i32, buf);
        put_optional_str(3, r.actor.email.as_deref(), buf);
        put_str(7, &r.action, buf);
        put_message_header(8, self.resource_len(), buf);
        put_str(1, &r.resource.id, buf);
        put_str(2, &r.resource.resource_type, buf);
        put_optional_str(3, r.resource.name.as_deref(), buf);
        put_enum(9, outcome_from_core(r.outcome) as i32, buf);
        put_bytes(10, self.metadata_json, buf);
        put_str(11, &r.prev_hash, buf);
        put_str(12, &r.hash, buf);
    }

    fn actor_len(&self) -> usize {
        let a = &self.record.actor;
        str_len(1, &a.id)
            + enum_len(2, actor_type_from_core(a.actor_type) as i32)
            + optional_str_len(3, a.email.as_deref())
    }

    fn resource_len(&self) -> usize {
        let r = &self.record.resource;
        str_len(1, &r.id) + str_len(2, &r.resource_type) + optional_str_len(3, r.name.as_deref())
    }
}

fn redaction_len(by: &sealtrail_core::record::Redaction) -> usize {
    str_len(1, &by.event_id) + u64_len(2, by.sequence_number)
}

// proto3: a string, bytes, integer or enum field equal to its default is not written; an
// `optional` field is written whenever it is set; a message field whenever it is set.

fn bytes_len(tag: u32, value: &[u8]) -> usize {
    if value.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

fn str_len(tag: u32, value: &str) -> usize {
    bytes_len(tag, value.as_bytes())
}

fn optional_str_len(tag: u32, value: Option<&str>) -> usize {
    value.map_or(0, |v| {
        key_len(tag) + encoded_len_varint(v.len() as u64) + v.len()
    })
}

fn u64_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn enum_len(tag: u32, value: i32) -> usize {
    // prost writes an int32 as the varint of its sign extension.
    u64_len(tag, value as i64 as u64)
}

fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_bytes(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.put_slice(value);
    }
}

fn put_str(tag: u32, value: &str, buf: &mut impl BufMut) {
    put_bytes(tag, value.as_bytes(), buf);
}

fn put_optional_str(tag: u32, value: Option<&str>, buf: &mut impl BufMut) {
    if let Some(v) = value {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(v.len() as u64, buf);
        buf.put_slice(v.as_bytes());
    }
}

fn put_u64(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn put_enum(tag: u32, value: i32, buf: &mut impl BufMut) {
    put_u64(tag, value as i64 as u64, buf);
}

fn put_message_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// An `IngestResponse` that acknowledges event `index` (id `id`) of a stream with its
/// committed record.
#[derive(Debug, Clone, Copy)]
pub struct RecordAck<'a> {
    pub index: u64,
    pub id: &'a str,
    pub record: RecordRef<'a>,
}

impl RecordAck<'_> {
    pub fn encoded_len(&self) -> usize {
        u64_len(1, self.index) + str_len(2, self.id) + message_len(3, self.record.encoded_len())
    }

    pub fn encode_raw(&self, buf: &mut impl BufMut) {
        put_u64(1, self.index, buf);
        put_str(2, self.id, buf);
        put_message_header(3, self.record.encoded_len(), buf);
        self.record.encode_raw(buf);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use sealtrail_core::event::{Actor, ActorType, Outcome, Resource};
    use sealtrail_core::record::Redaction;
    use serde_json::json;

    use super::*;
    use crate::record_with_metadata;

    fn record() -> Record {
        Record {
            action: "document.delete".into(),
            actor: Actor {
                email: Some("ada@example.com".into()),
                id: "user_4821".into(),
                actor_type: Some(ActorType::Human),
            },
            created_at: "2026-12-05T20:00:00.000001Z".into(),
            hash: "ab".repeat(32),
            id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            metadata: json!({"ip": "203.0.113.7", "n": 1})
                .as_object()
                .unwrap()
                .clone(),
            outcome: Outcome::Failure,
            prev_hash: "0".repeat(64),
            resource: Resource {
                id: "doc_99231".into(),
                name: Some("Q3 board deck".into()),
                resource_type: "document".into(),
            },
            sequence_number: 300,
            tenant_id: "acme".into(),
            timestamp: "2026-12-05T19:59:59.999999Z".into(),
            redacted: None,
        }
    }

    /// Every shape: defaults left out or not, optional fields set to "" or absent, long
    /// fields (two-byte lengths), a redacted record, sequence number 0 and huge.
    fn shapes() -> Vec<(Record, String)> {
        let meta = r#"{"ip":"203.0.113.7","n":1}"#.to_string();
        let mut out = vec![(record(), meta.clone())];
        let mut r = record();
        r.actor.email = None;
        r.actor.actor_type = None;
        r.resource.name = Some(String::new());
        r.outcome = Outcome::Success;
        r.sequence_number = 0;
        out.push((r, "{}".into()));
        let mut r = record();
        r.actor.email = Some(String::new());
        r.actor.actor_type = Some(ActorType::System);
        r.resource.name = None;
        r.outcome = Outcome::Error;
        r.action = "a".repeat(300);
        r.sequence_number = u64::MAX;
        out.push((r, format!(r#"{{"big":"{}"}}"#, "x".repeat(20_000))));
        let mut r = record();
        r.actor.actor_type = Some(ActorType::Agent);
        r.id = String::new();
        r.tenant_id = String::new();
        r.hash = String::new();
        out.push((r, String::new()));
        let mut r = record();
        r.redacted = Some(Redaction {
            event_id: "0193a1b2-0000-7000-8000-000000000000".into(),
            sequence_number: 301,
        });
        out.push((r.clone(), meta.clone()));
        r.redacted = Some(Redaction {
            event_id: String::new(),
            sequence_number: 0,
        });
        out.push((r, meta));
        out
    }

    #[test]
    fn a_record_encodes_to_the_bytes_of_the_built_message() {
        for (record, metadata) in shapes() {
            let built = record_with_metadata(&record, Some(&metadata));
            let view = RecordRef {
                record: &record,
                metadata_json: metadata.as_bytes(),
            };
            let mut direct = Vec::new();
            view.encode_raw(&mut direct);
            assert_eq!(direct, built.encode_to_vec(), "{record:?}");
            assert_eq!(view.encoded_len(), built.encoded_len(), "{record:?}");
            assert_eq!(crate::Record::decode(&direct[..]).unwrap(), built);
        }
    }

    #[test]
    fn an_acknowledgement_encodes_to_the_bytes_of_the_built_message() {
        for (record, metadata) in shapes() {
            for index in [0, 7, 1 << 40] {
                let built = crate::IngestResponse {
                    index,
                    id: record.id.clone(),
                    result: Some(crate::ingest_response::Result::Record(
                        record_with_metadata(&record, Some(&metadata)),
                    )),
                };
                let ack = RecordAck {
                    index,
                    id: &record.id,
                    record: RecordRef {
                        record: &record,
                        metadata_json: metadata.as_bytes(),
                    },
                };
                let mut direct = Vec::new();
                ack.encode_raw(&mut direct);
                assert_eq!(direct, built.encode_to_vec(), "{record:?}");
                assert_eq!(ack.encoded_len(), built.encoded_len());
            }
        }
    }
}
