//! End-to-end tests of the gRPC API over real sockets against the real binary, with the
//! Rust SDK (and the generated client where a test needs the raw status).

mod common;

use std::time::Duration;

use common::*;
use sealtrail_client::proto::{self as pb, record_to_json};
use sealtrail_client::{Client, ClientError, Event, RetryPolicy};
use serde_json::{Value, json};
use sha2::Digest;
use tokio_stream::StreamExt;
use tonic::Code;

async fn setup() -> (tempfile::TempDir, Server, Api, Client) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data).await;
    let key = create_key(&data, "acme", "read,write");
    let api = Api::new(&server, &key);
    let client = sdk(&server, &key);
    (dir, server, api, client)
}

fn sdk(server: &Server, key: &str) -> Client {
    Client::builder(server.grpc.clone(), key)
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        })
        .build()
        .unwrap()
}

/// Lowercase hex SHA-256 of the JCS form of `record` without `hash` (DESIGN.md §2),
/// computed with an independent JCS implementation.
fn jcs_hash(record: &Value) -> String {
    let mut without = record.as_object().unwrap().clone();
    without.remove("hash");
    let canonical = serde_json_canonicalizer::to_vec(&without).unwrap();
    hex(&sha2::Sha256::digest(&canonical))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn code_of(err: &ClientError) -> Code {
    err.status().map(|s| s.code()).unwrap_or(Code::Unknown)
}

fn reason_of(err: &ClientError) -> String {
    err.status()
        .and_then(|s| s.metadata().get("sealtrail-error-code"))
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

const METADATA: &str = r#"{"big":9007199254740991,"neg":-42,"float":1.5,"exp":1e-7,"s":"é😀\u0000","nested":{"b":[true,null,0.1],"a":{}}}"#;

#[tokio::test]
async fn a_record_fetched_over_grpc_is_the_rest_record_and_hashes_to_its_hash() {
    let (_d, _s, api, client) = setup().await;
    let record = client
        .log_event(
            Event::new("user_1", "document.delete", "doc_1", "document")
                .id("evt-1")
                .actor_type(pb::ActorType::Human)
                .actor_email("u@example.com")
                .resource_name("Plan")
                .outcome(pb::Outcome::Failure)
                .timestamp("2024-01-02T03:04:05.6789+02:00")
                .build()
                .with_metadata(METADATA),
        )
        .await
        .unwrap();
    assert_eq!(record.sequence_number, 1);
    assert_eq!(record.tenant_id, "acme");
    assert_eq!(record.timestamp, "2024-01-02T01:04:05.678900Z");
    let fetched = client.get_event("evt-1").await.unwrap();
    assert_eq!(fetched, record);
    let from_grpc = record_to_json(&fetched).unwrap();
    let (status, from_rest) = api.get("/v1/events/evt-1").await;
    assert_eq!(status, 200);
    assert_eq!(from_grpc, from_rest);
    assert_eq!(jcs_hash(&from_grpc), fetched.hash);
    // The metadata integer kept its exact value (not a double).
    assert_eq!(from_grpc["metadata"]["big"], json!(9007199254740991i64));

    // An event ingested over REST reads back the same over gRPC.
    let (status, rest_record) = api.post("/v1/events?sync=true", &event("evt-2")).await;
    assert_eq!(status, 201);
    let over_grpc = record_to_json(&client.get_event("evt-2").await.unwrap()).unwrap();
    assert_eq!(over_grpc, rest_record);
    assert_eq!(jcs_hash(&over_grpc), rest_record["hash"].as_str().unwrap());
}

trait WithMetadata {
    fn with_metadata(self, json: &str) -> Self;
}

impl WithMetadata for pb::AuditEventInput {
    fn with_metadata(mut self, json: &str) -> Self {
        self.metadata_json = json.to_string();
        self
    }
}

#[tokio::test]
async fn ingest_stream_acknowledges_every_event_in_order() {
    let (_d, _s, api, client) = setup().await;
    // A committed id, to be reused: once with the same content, once with other content.
    let first = client
        .log_event(Event::new("u", "a.b", "r", "doc").id("dup").build())
        .await
        .unwrap();
    let total = 3000u64;
    let events: Vec<pb::IngestRequest> = (0..total)
        .map(|i| {
            let event = match i {
                7 => Event::new("u", "a.b", "r", "doc").id("dup").build(),
                8 => Event::new("u", "a.c", "r", "doc").id("dup").build(),
                9 => Event::new("u", "a.b", "r", "doc")
                    .build()
                    .with_metadata(r#"{"n": 9007199254740993}"#),
                10 => Event::new("u", "a.b", "r", "doc")
                    .outcome(pb::Outcome::Unspecified)
                    .build(),
                11 => Event::new("u", "stream.event", "r11", "doc")
                    .id("s-11")
                    .build()
                    .with_metadata(r#"{"z": [1, 2.50, "é\u0001"], "a": {"b": null}}"#),
                _ => Event::new("u", "stream.event", &format!("r{i}"), "doc")
                    .id(format!("s-{i}"))
                    .build(),
            };
            pb::IngestRequest { event: Some(event) }
        })
        .collect();
    let mut acks = client.ingest(tokio_stream::iter(events)).await.unwrap();
    let mut last_seq = first.sequence_number;
    let mut committed = 0;
    let mut index = 0u64;
    let mut acked = Vec::new();
    while let Some(ack) = acks.next().await {
        let ack = ack.unwrap();
        assert_eq!(ack.index, index, "acks come in stream order");
        match (index, ack.result.unwrap()) {
            (7, pb::ingest_response::Result::Record(r)) => assert_eq!(r, first),
            (8, pb::ingest_response::Result::Error(e)) => {
                assert_eq!(e.code, "conflict");
                assert!(!e.retryable);
            }
            (9, pb::ingest_response::Result::Error(e)) => assert_eq!(e.code, "number_out_of_range"),
            (10, pb::ingest_response::Result::Error(e)) => assert_eq!(e.code, "missing_field"),
            (i, pb::ingest_response::Result::Record(r)) => {
                assert_eq!(r.id, format!("s-{i}"));
                assert_eq!(ack.id, r.id);
                assert!(r.sequence_number > last_seq);
                last_seq = r.sequence_number;
                committed += 1;
                if i % 500 == 11 {
                    acked.push(r);
                }
            }
            (i, other) => panic!("event {i}: unexpected {other:?}"),
        }
        index += 1;
    }
    assert_eq!(index, total, "one ack per event");
    assert_eq!(committed, total - 4);
    // An acknowledgement carries the record exactly as it is read back later.
    assert_eq!(acked.len(), 6);
    assert_eq!(
        acked[0].metadata_json,
        r#"{"a":{"b":null},"z":[1,2.5,"é\u0001"]}"#
    );
    for record in &acked {
        assert_eq!(&client.get_event(&record.id).await.unwrap(), record);
    }
    let chain = assert_chain_ok(&api).await;
    assert_eq!(chain.len() as u64, 1 + committed);
}

#[tokio::test]
async fn errors_map_to_the_grpc_codes_of_their_rest_statuses() {
    let (_d, server, api, client) = setup().await;
    let other = create_key(&server.data_dir, "other-tenant", "read,write");
    let read_only = create_key(&server.data_dir, "acme", "read");
    let write_only = create_key(&server.data_dir, "acme", "write");
    api.post("/v1/events?sync=true", &event("e1")).await;

    let bad = sdk(&server, "alk_live_not_a_key");
    let err = bad.get_event("e1").await.unwrap_err();
    assert_eq!(code_of(&err), Code::Unauthenticated);
    let err = sdk(&server, &read_only)
        .log_event(Event::new("u", "a.b", "r", "doc").build())
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::PermissionDenied);
    let err = sdk(&server, &write_only).get_event("e1").await.unwrap_err();
    assert_eq!(code_of(&err), Code::PermissionDenied);
    // Another tenant's id is NOT_FOUND, never PERMISSION_DENIED.
    let err = sdk(&server, &other).get_event("e1").await.unwrap_err();
    assert_eq!(code_of(&err), Code::NotFound);
    let err = client.get_receipt("no-such-receipt").await.unwrap_err();
    assert_eq!(code_of(&err), Code::NotFound);

    let conflicting = Event::new("someone-else", "a.b", "r", "doc")
        .id("e1")
        .build();
    let err = client.log_event(conflicting).await.unwrap_err();
    assert_eq!(code_of(&err), Code::AlreadyExists);
    assert_eq!(reason_of(&err), "conflict");

    let invalid = Event::new("u", "not an action!", "r", "doc").build();
    let err = client.log_event(invalid).await.unwrap_err();
    assert_eq!(code_of(&err), Code::InvalidArgument);
    let duplicate_keys = Event::new("u", "a.b", "r", "doc")
        .build()
        .with_metadata(r#"{"a":1,"a":2}"#);
    let err = client.log_event(duplicate_keys).await.unwrap_err();
    assert_eq!(reason_of(&err), "duplicate_key");
    let smuggled = Event::new("u", "a.b", "r", "doc")
        .build()
        .with_metadata(r#"{}, "x": 1"#);
    let err = client.log_event(smuggled).await.unwrap_err();
    assert_eq!(code_of(&err), Code::InvalidArgument);
    assert_eq!(reason_of(&err), "invalid_json");

    // The raw client without a key.
    let mut raw = pb::audit_log_client::AuditLogClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let status = raw
        .get_event(pb::GetEventRequest { id: "e1".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn batches_receipts_lists_and_verification_match_rest() {
    let (_d, _s, api, client) = setup().await;
    let mut events: Vec<pb::AuditEventInput> = (0..5)
        .map(|i| {
            Event::new(&format!("actor{}", i % 2), "doc.read", "r", "doc")
                .id(format!("b{i}"))
                .actor_type(if i % 2 == 0 {
                    pb::ActorType::Human
                } else {
                    pb::ActorType::Agent
                })
                .build()
        })
        .collect();
    events.push(Event::new("u", "", "r", "doc").build());
    let batch = client.log_batch(events).await.unwrap();
    let receipt = batch.receipt.unwrap();
    assert_eq!((receipt.accepted, receipt.rejected), (5, 1));
    assert_eq!(receipt.errors[0].index, 5);
    assert_eq!(batch.records.len(), 5);
    let polled = client.get_receipt(&receipt.receipt_id).await.unwrap();
    assert_eq!(polled.status, pb::ReceiptStatus::Committed as i32);

    // Pages, filters and cursor: the same records as REST.
    let mut cursor = None;
    let mut over_grpc = Vec::new();
    loop {
        let page = client
            .list_events(pb::ListEventsRequest {
                page_size: 2,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.total, 5);
        over_grpc.extend(page.events.iter().map(|r| record_to_json(r).unwrap()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(over_grpc, api.all_events().await);
    let agents = client
        .list_events(pb::ListEventsRequest {
            actor_type: pb::ActorType::Agent as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, rest_agents) = api.get("/v1/events?actor_type=agent").await;
    assert_eq!(agents.total, rest_agents["total"].as_u64().unwrap());
    assert_eq!(agents.total, 2);
    let err = client
        .list_events(pb::ListEventsRequest {
            from: Some("yesterday".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::InvalidArgument);

    let one = client.verify_event("b3").await.unwrap();
    assert!(one.valid && one.prev_hash_valid, "{one:?}");
    assert_eq!(one.computed_hash, one.stored_hash);
    let chain = client.verify_chain(Default::default()).await.unwrap();
    let (_, rest) = api.get("/v1/verify").await;
    assert!(chain.valid);
    assert_eq!(chain.events_checked, 5);
    assert_eq!(chain.root_hash, rest["root_hash"].as_str().unwrap());
}

// Multi-threaded: the client's connection must keep running (answer the server's
// graceful-close PING) while the test thread blocks waiting for the server to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_resumes_from_a_sequence_number_and_ends_at_shutdown() {
    let (_d, mut server, _api, client) = setup().await;
    for i in 1..=3 {
        client
            .log_event(
                Event::new("u", "a.b", "r", "doc")
                    .id(format!("t{i}"))
                    .build(),
            )
            .await
            .unwrap();
    }
    let mut tail = client.tail(Some(1)).await.unwrap();
    for seq in [2, 3] {
        let record = next(&mut tail).await.unwrap().unwrap().record.unwrap();
        assert_eq!(record.sequence_number, seq);
    }
    client
        .log_event(Event::new("u", "a.b", "r", "doc").id("t4").build())
        .await
        .unwrap();
    let live = next(&mut tail).await.unwrap().unwrap().record.unwrap();
    assert_eq!(live.id, "t4");
    // An open tail does not hold the server up: it stops cleanly, the stream ends.
    assert!(server.sigterm_and_wait(), "{}", server.log());
    let end = next(&mut tail).await;
    assert!(matches!(end, None | Some(Err(_))), "{end:?}");
}

async fn next(
    tail: &mut tonic::Streaming<pb::TailResponse>,
) -> Option<Result<pb::TailResponse, tonic::Status>> {
    tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("a record in time")
}

#[tokio::test]
async fn async_log_event_answers_a_receipt() {
    let (_d, _s, _api, client) = setup().await;
    let mut raw = client.raw();
    let answer = raw
        .log_event(pb::LogEventRequest {
            event: Some(Event::new("u", "a.b", "r", "doc").id("async-1").build()),
            sync: false,
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::log_event_response::Result::Receipt(receipt)) = answer.result else {
        panic!("an async LogEvent answers a receipt: {answer:?}");
    };
    assert_eq!(receipt.ids, vec!["async-1".to_string()]);
    // Embedded mode acknowledges only durable events, so the receipt is already final.
    assert_eq!(receipt.status, pb::ReceiptStatus::Committed as i32);
    let polled = client.get_receipt(&receipt.receipt_id).await.unwrap();
    assert_eq!(polled.status, pb::ReceiptStatus::Committed as i32);
}

// Multi-threaded for the same reason as the tail test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_ingest_stream_ends_with_unavailable_at_shutdown_after_its_acks() {
    let (_d, mut server, _api, client) = setup().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestRequest>(16);
    let mut acks = client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    for i in 0..20 {
        let event = Event::new("u", "a.b", "r", "doc")
            .id(format!("open-{i}"))
            .build();
        tx.send(pb::IngestRequest { event: Some(event) })
            .await
            .unwrap();
    }
    for i in 0..20u64 {
        let ack = tokio::time::timeout(Duration::from_secs(10), acks.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ack.index, i);
        assert!(matches!(
            ack.result,
            Some(pb::ingest_response::Result::Record(_))
        ));
    }
    // The client keeps its side open; the server still stops, and says why.
    assert!(server.sigterm_and_wait(), "{}", server.log());
    let end = tokio::time::timeout(Duration::from_secs(10), acks.next())
        .await
        .unwrap();
    match end {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    drop(tx);
}

// Multi-threaded: the CLI call below blocks the test thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_key_ends_an_open_ingest_stream() {
    let (_d, server, _api, _client) = setup().await;
    let key = create_key(&server.data_dir, "revoked-tenant", "write");
    let client = sdk(&server, &key);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestRequest>(16);
    let mut acks = client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    let send = |i: u32| {
        let event = Event::new("u", "a.b", "r", "doc")
            .id(format!("rk-{i}"))
            .build();
        tx.send(pb::IngestRequest { event: Some(event) })
    };
    send(0).await.unwrap();
    let ack = acks.next().await.unwrap().unwrap();
    assert!(matches!(
        ack.result,
        Some(pb::ingest_response::Result::Record(_))
    ));

    let list = std::process::Command::new(BIN)
        .args(["keys", "list", "--tenant", "revoked-tenant", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    let listing = String::from_utf8(list.stdout).unwrap();
    let key_id = listing
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .next()
                .filter(|w| w.starts_with("key_"))
        })
        .expect("a key id in `keys list`");
    let revoked = std::process::Command::new(BIN)
        .args(["keys", "revoke", key_id, "--data-dir"])
        .arg(&server.data_dir)
        .status()
        .unwrap();
    assert!(revoked.success());
    // The key cache forgets within a second; the next batch is refused and the stream ends.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(1).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), acks.next())
        .await
        .unwrap();
    match end {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

/// RedactEvent (issue 15) needs the `admin` scope, answers the redacted record and the
/// redaction event, and reads then return the redacted record; its refusals map to the
/// gRPC codes of their REST statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_event_redacts_over_grpc_with_an_admin_key_only() {
    let (_d, server, api, client) = setup().await;
    let admin = sdk(&server, &create_key(&server.data_dir, "acme", "admin"));
    let original = client
        .log_event(
            Event::new("user_1", "document.delete", "doc_1", "document")
                .id("e1")
                .actor_email("u@example.com")
                .build()
                .with_metadata(r#"{"ip":"203.0.113.7"}"#),
        )
        .await
        .unwrap();
    client
        .log_event(Event::new("u", "a.b", "r", "doc").id("e2").build())
        .await
        .unwrap();

    let answer = admin
        .redact_event("e1", "GDPR Art. 17 request 2026-114")
        .await
        .unwrap();
    assert!(answer.erased, "{answer:?}");
    let record = answer.record.unwrap();
    let redaction = answer.redaction.unwrap();
    assert_eq!(redaction.sequence_number, 3);
    assert_eq!(redaction.action, "sealtrail.event.redact");
    assert_eq!(redaction.resource.as_ref().unwrap().id, "e1");
    assert!(
        redaction
            .metadata_json
            .contains("GDPR Art. 17 request 2026-114"),
        "{redaction:?}"
    );
    assert_eq!(
        record.redacted,
        Some(pb::Redaction {
            event_id: redaction.id.clone(),
            sequence_number: 3,
        })
    );
    // Its place in the chain stays; its content is gone.
    assert_eq!(
        (
            &record.id,
            record.sequence_number,
            &record.prev_hash,
            &record.hash
        ),
        (
            &original.id,
            original.sequence_number,
            &original.prev_hash,
            &original.hash
        )
    );
    let fetched = client.get_event("e1").await.unwrap();
    assert_eq!(fetched, record);
    assert_eq!(fetched.actor, None);
    assert_eq!(fetched.action, "");
    assert_eq!(fetched.resource, None);
    assert!(
        !fetched.metadata_json.contains("203.0.113.7"),
        "{fetched:?}"
    );
    let (status, over_rest) = api.get("/v1/events/e1").await;
    assert_eq!(status, 200);
    assert_eq!(record_to_json(&fetched).unwrap(), over_rest);
    let checked = client.verify_event("e1").await.unwrap();
    assert!(checked.valid, "{checked:?}");
    assert!(client.verify_chain(Default::default()).await.unwrap().valid);

    // Again: the existing redaction, nothing appended.
    let again = admin.redact_event("e1", "twice").await.unwrap();
    assert_eq!(again.redaction.unwrap().id, redaction.id);
    assert_eq!(
        client
            .verify_chain(Default::default())
            .await
            .unwrap()
            .events_checked,
        3
    );

    // Refusals.
    let err = client
        .redact_event("e2", "no admin scope")
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::PermissionDenied);
    let err = admin.redact_event("nope", "unknown").await.unwrap_err();
    assert_eq!(
        (code_of(&err), reason_of(&err)),
        (Code::NotFound, "not_found".into())
    );
    for blank in ["", "  \n "] {
        let err = admin.redact_event("e2", blank).await.unwrap_err();
        assert_eq!(
            (code_of(&err), reason_of(&err)),
            (Code::InvalidArgument, "invalid_field".into())
        );
    }
    let err = admin
        .redact_event("e2", &"x".repeat(1025))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Code::InvalidArgument);
    let err = admin
        .redact_event(&redaction.id, "the redaction")
        .await
        .unwrap_err();
    assert_eq!(
        (code_of(&err), reason_of(&err)),
        (Code::FailedPrecondition, "not_redactable".into())
    );
    // None of that touched e2.
    assert_eq!(client.get_event("e2").await.unwrap().redacted, None);
}
