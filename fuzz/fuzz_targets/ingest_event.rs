//! One event body as `POST /v1/events` takes it (`validate_event_json`, which must agree
//! exactly with strict parsing then `validate_event`, as gRPC takes it), then, for an
//! accepted event, the chain step and the export line.
//!
//! Beyond "never panics": the typed and the general reading give the same event or the
//! same error; an error has a code and a message; an accepted event is
//! normalized (re-validating what it became yields the same event), and its record is
//! verifiable offline: the JSONL export line and plain serde output both hash, through
//! `audit::digest_line`, to the record's hash, which matches an independent JCS hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::audit::{Checks, digest_line};
use sealtrail_core::event::validate_event;
use sealtrail_core::json::parse_strict;
use sealtrail_core::merkle::record_leaf;
use sealtrail_core::record::{Record, ZERO_HASH};
use sealtrail_core::time;
use sealtrail_fuzz::{NOW, TENANT, chain, export, ingest_one, slow_record_hash};

fuzz_target!(|data: &[u8]| {
    let event = match ingest_one(data, "generated-id") {
        Ok(event) => event,
        Err(err) => {
            assert!(!err.code.is_empty() && !err.message.is_empty());
            return;
        }
    };
    assert_eq!(event.created_at, time::format_micros(NOW));
    assert_eq!(
        time::normalize(&event.timestamp).as_ref(),
        Ok(&event.timestamp)
    );
    assert_eq!(event.input_digest.len(), 64);

    // Normalization is idempotent: what the event became is a valid input of itself.
    let resent = serde_json::json!({
        "id": event.id, "timestamp": event.timestamp, "actor": event.actor,
        "action": event.action, "resource": event.resource, "outcome": event.outcome,
        "metadata": event.metadata,
    });
    let resent = parse_strict(&serde_json::to_vec(&resent).expect("serializes"))
        .expect("a normalized event is strict I-JSON");
    let again = validate_event(resent, NOW, || unreachable!("the id is set"))
        .expect("a normalized event validates again");
    assert_eq!(
        (&again.id, &again.timestamp, &again.actor, &again.action),
        (&event.id, &event.timestamp, &event.actor, &event.action)
    );
    assert_eq!(
        (&again.resource, again.outcome, &again.metadata),
        (&event.resource, event.outcome, &event.metadata)
    );

    // The chain step, and the record as the offline verifier sees it.
    let records = chain([event]);
    let chained = &records[0];
    let record = &chained.record;
    assert_eq!(
        (record.sequence_number, record.prev_hash.as_str()),
        (1, ZERO_HASH)
    );
    assert_eq!(record.compute_hash(), record.hash);
    assert_eq!(
        sealtrail_core::record::hash_hex(&chained.canonical),
        record.hash
    );
    let stored = record_leaf(&record.hash).expect("a record hash is 64 hex digits");
    let mut line = export(&records);
    line.pop(); // the newline
    let plain = serde_json::to_vec(record).expect("records serialize");
    for text in [&line, &plain] {
        let digest = digest_line(text).expect("an exported record is readable");
        assert_eq!(
            digest.computed_hash, stored,
            "the verifier rehashes it differently"
        );
        assert_eq!(digest.stored_hash, stored);
        assert_eq!(
            (digest.tenant_id.as_str(), digest.id.as_str()),
            (TENANT, record.id.as_str())
        );
        assert_eq!(slow_record_hash(text), Some(stored), "JCS disagrees");
    }
    // An export line reads back as the record; its metadata numbers in JCS form (`-0.0`
    // is written `0`, `1.0` is written `1`), which hashes the same.
    let mut back: Record = serde_json::from_slice(&line).expect("an export line is a record");
    assert_eq!(back.compute_hash(), record.hash);
    back.metadata.clone_from(&record.metadata);
    assert_eq!(&back, record);
    sealtrail_fuzz::audit(Checks::default(), None, None, None, &line)
        .expect("a record the ingest accepted audits clean");
});
