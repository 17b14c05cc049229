//! Redaction (issue 15): `POST /v1/events/{id}/redact` erases a record's content from the
//! store while the chain, its proofs, its checkpoints and every verifier still hold; the
//! erased bytes leave the data directory; a SIGKILL between the redaction and the
//! erasure is finished at the restart.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::merkle::{Hash, record_leaf};
use sealtrail_core::note::NoteVerifier;
use sealtrail_core::proof::{verify_consistency, verify_inclusion};
use serde_json::{Value, json};

/// Marks the personal data of this run, to search the data directory for.
fn mark() -> String {
    format!("pii{:x}", std::process::id() as u64 * 7919 + 17)
}

/// Event `i`: its actor id, email and metadata carry `<kind>-<mark>-<i>`.
fn personal(mark: &str, kind: &str, i: usize) -> Value {
    json!({
        "id": format!("e{i}"),
        "actor": {"id": format!("{kind}-{mark}-{i}"), "type": "human", "email": format!("{kind}-{mark}-{i}@example.com")},
        "action": "document.delete",
        "resource": {"id": format!("doc-{i}"), "type": "document"},
        "outcome": "success",
        "metadata": {"note": format!("{kind}-note-{mark}-{i}")},
    })
}

async fn redact(api: &Api, id: &str, reason: &str) -> (u16, Value) {
    api.post(
        &format!("/v1/events/{id}/redact"),
        &json!({ "reason": reason }),
    )
    .await
}

fn verify_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).arg("verify").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_erases_the_record_and_every_proof_still_holds_fjall() {
    a_redaction_erases_the_record_and_every_proof_still_holds("fjall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_erases_the_record_and_every_proof_still_holds_sqlite() {
    a_redaction_erases_the_record_and_every_proof_still_holds("sqlite").await;
}

async fn a_redaction_erases_the_record_and_every_proof_still_holds(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mark = mark();
    let mut server = Server::start_with(&data, &["--store", store]).await;
    let rw = Api::new(&server, &create_key(&data, "acme", "read,write"));
    let admin = Api::new(&server, &create_key(&data, "acme", "admin"));
    for i in 1..=20 {
        let kind = if [1, 10, 20].contains(&i) {
            "gone"
        } else {
            "kept"
        };
        let (s, r) = rw
            .post("/v1/events?sync=true", &personal(&mark, kind, i))
            .await;
        assert_eq!(s, 201, "{r}");
    }
    let (_, key) = rw.get("/v1/log/key").await;
    let vkey = key["verifier_key"].as_str().unwrap().to_string();
    let verifier = NoteVerifier::parse(&vkey).unwrap();
    let (_, kept_note) = rw.get_text("/v1/checkpoint?fresh=true").await;
    let kept = Checkpoint::open(&kept_note, &verifier, None).unwrap();
    assert_eq!(kept.size, 20);

    // who may, and what is refused
    let (s, body) = redact(&rw, "e10", "no admin scope").await;
    assert_eq!(s, 403, "{body}");
    let (s, body) = redact(&admin, "nope", "unknown").await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (404, json!("not_found")),
        "{body}"
    );
    let (s, body) = admin
        .post("/v1/events/e10/redact", &json!({"why": "x"}))
        .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (400, json!("invalid_body")),
        "{body}"
    );
    let (s, body) = redact(&admin, "e10", "   ").await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (400, json!("invalid_field")),
        "{body}"
    );
    // clients cannot write the redaction action themselves
    let mut forged = personal(&mark, "kept", 99);
    forged["action"] = json!("sealtrail.event.redact");
    let (s, body) = rw.post("/v1/events?sync=true", &forged).await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (400, json!("reserved_action")),
        "{body}"
    );

    // the middle, the first and the (former) head of the chain
    let mut redactions = Vec::new();
    for (id, by) in [("e10", 21), ("e1", 22), ("e20", 23)] {
        let (s, body) = redact(&admin, id, "GDPR Art. 17 request").await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["erased"], json!(true));
        let record = &body["record"];
        let keys: Vec<&str> = record
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "hash",
                "id",
                "prev_hash",
                "redacted",
                "sequence_number",
                "tenant_id"
            ]
        );
        assert_eq!(record["redacted"]["sequence_number"], json!(by));
        let redaction = &body["redaction"];
        assert_eq!(redaction["sequence_number"], json!(by));
        assert_eq!(redaction["action"], json!("sealtrail.event.redact"));
        assert_eq!(redaction["resource"], json!({"id": id, "type": "event"}));
        assert_eq!(
            redaction["metadata"]["reason"],
            json!("GDPR Art. 17 request")
        );
        assert_eq!(record["redacted"]["event_id"], redaction["id"]);
        redactions.push(redaction["id"].as_str().unwrap().to_string());
    }
    // again: the same redaction; a redaction itself: refused
    let (s, again) = redact(&admin, "e10", "twice").await;
    assert_eq!(
        (s, again["redaction"]["sequence_number"].clone()),
        (200, json!(21)),
        "{again}"
    );
    let (s, body) = redact(&admin, &redactions[0], "undo").await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (409, json!("not_redactable")),
        "{body}"
    );

    // reads: the redacted shape; filters no longer find it
    let (s, read) = rw.get("/v1/events/e10").await;
    assert_eq!(s, 200);
    assert!(
        read.get("actor").is_none() && read.get("metadata").is_none(),
        "{read}"
    );
    let events = rw.all_events().await;
    assert_eq!(events.len(), 23);
    assert_eq!(events[9], read);
    let (_, page) = rw.get(&format!("/v1/events?actor_id=gone-{mark}-10")).await;
    assert_eq!(page["total"], json!(0), "{page}");
    let (_, page) = rw.get("/v1/events?action=document.delete").await;
    assert_eq!(page["total"], json!(17), "{page}");
    let (_, page) = rw.get("/v1/events?outcome=success").await;
    assert_eq!(page["total"], json!(20), "{page}");

    // verification: the chain, the record, the tree, proofs, the kept checkpoint
    let (s, v) = rw.get("/v1/verify?full=true").await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["valid"].clone(), v["redacted_checked"].clone()),
        (json!(true), json!(3)),
        "{v}"
    );
    for id in ["e1", "e10", "e20"] {
        let (_, one) = rw.get(&format!("/v1/events/{id}/verify")).await;
        assert_eq!(one["valid"], json!(true), "{one}");
        assert!(one["redacted"].is_object(), "{one}");
    }
    let (_, one) = rw.get("/v1/events/e11/verify").await;
    assert_eq!(one["valid"], json!(true), "{one}");
    assert_tree_matches(&rw, &events).await;
    let (_, note) = rw.get_text("/v1/checkpoint?fresh=true").await;
    let cp = Checkpoint::open(&note, &verifier, None).unwrap();
    assert_eq!(cp.size, 23);
    for seq in [1u64, 10, 20] {
        let (s, p) = rw
            .get(&format!(
                "/v1/proof/inclusion?sequence_number={seq}&tree_size=23"
            ))
            .await;
        assert_eq!(s, 200, "{p}");
        let path: Vec<Hash> = p["hashes"].as_array().unwrap().iter().map(h).collect();
        let leaf = record_leaf(events[seq as usize - 1]["hash"].as_str().unwrap()).unwrap();
        verify_inclusion(&leaf, seq - 1, 23, &path, &cp.root).unwrap();
    }
    let (_, c) = rw.get("/v1/proof/consistency?from=20&to=23").await;
    let path: Vec<Hash> = c["hashes"].as_array().unwrap().iter().map(h).collect();
    verify_consistency(20, 23, &path, &kept.root, &cp.root).unwrap();

    // offline: the export and the evidence pack verify, the redacted records counted
    let (s, jsonl) = rw.get_text("/v1/export?format=jsonl").await;
    assert_eq!(s, 200);
    assert!(!jsonl.contains(&format!("gone-{mark}")));
    let (s, csv) = rw.get_text("/v1/export?format=csv").await;
    assert_eq!(s, 200);
    assert!(
        csv.lines().next().unwrap().ends_with(",hash,redacted_by"),
        "{csv}"
    );
    let row10 = csv.lines().nth(10).unwrap();
    assert!(
        row10.starts_with("10,e10,,,,,,,,,,,,") && row10.ends_with(",21"),
        "{row10}"
    );
    assert!(csv.lines().nth(11).unwrap().ends_with(','), "not redacted");
    assert!(!csv.contains(&format!("gone-{mark}")));
    let f = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(f("log.jsonl"), &jsonl).unwrap();
    std::fs::write(f("cp.txt"), &note).unwrap();
    std::fs::write(f("kept.txt"), &kept_note).unwrap();
    let (code, out) = verify_cli(&[
        &f("log.jsonl"),
        "--checkpoint",
        &f("cp.txt"),
        "--key",
        &vkey,
        "--trusted",
        &f("kept.txt"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("OK: 23 records") && out.contains("3 of them redacted"),
        "{out}"
    );
    // a record marked redacted by an event that is not its redaction is caught
    let forged = jsonl.replacen("\"sequence_number\":21},", "\"sequence_number\":22},", 1);
    assert_ne!(forged, jsonl);
    std::fs::write(f("forged.jsonl"), &forged).unwrap();
    let (code, out) = verify_cli(&[
        &f("forged.jsonl"),
        "--checkpoint",
        &f("cp.txt"),
        "--key",
        &vkey,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[redaction_unconfirmed]"), "{out}");
    // an earlier record passed off as redacted by the same (genuine) redaction event as
    // record 10: its links hold, but one redaction event redacts one record
    let lines: Vec<&str> = jsonl.lines().collect();
    let genuine: Value = serde_json::from_str(lines[9]).unwrap();
    assert_eq!(
        genuine["redacted"]["sequence_number"],
        json!(21),
        "{genuine}"
    );
    let whole: Value = serde_json::from_str(lines[4]).unwrap();
    assert!(whole.get("redacted").is_none(), "{whole}");
    let passed_off = json!({
        "hash": whole["hash"], "id": whole["id"], "prev_hash": whole["prev_hash"],
        "redacted": genuine["redacted"], "sequence_number": whole["sequence_number"],
        "tenant_id": whole["tenant_id"],
    });
    let mut forged: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    forged[4] = passed_off.to_string();
    std::fs::write(f("forged2.jsonl"), forged.join("\n") + "\n").unwrap();
    let (code, out) = verify_cli(&[
        &f("forged2.jsonl"),
        "--checkpoint",
        &f("cp.txt"),
        "--key",
        &vkey,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[redaction_unconfirmed]") && out.contains("already names"),
        "{out}"
    );

    // The erased bytes are gone from the data directory at once: the log entry was
    // overwritten in place, and the index never held record content in plain (its filter
    // keys are keyed hashes), so fjall's journal and tables have none to keep.
    for kept in [format!("kept-{mark}-5"), format!("kept-note-{mark}-5")] {
        assert!(
            !files_containing(&data, &kept).is_empty(),
            "the search finds what is kept"
        );
    }
    for i in [1, 10, 20] {
        for gone in [format!("gone-{mark}-{i}"), format!("gone-note-{mark}-{i}")] {
            let left = files_containing(&data, &gone);
            assert!(left.is_empty(), "{gone} is still in {left:?}");
        }
    }

    // a restart reads the same
    assert!(server.sigterm_and_wait());
    let server = Server::start_with(&data, &["--store", store]).await;
    let rw = Api::new(&server, &rw.key);
    assert_eq!(rw.all_events().await, events);
    let (_, v) = rw.get("/v1/verify?full=true").await;
    assert_eq!(v["valid"], json!(true), "{v}");
}

/// A SIGKILL after the redaction event is committed and before the record is erased
/// (the indexer held back): the restart erases it from the log it replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_cut_short_by_sigkill_is_finished_at_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mark = mark();
    let mut server =
        Server::start_with_env(&data, &[], &[("SEALTRAIL_TEST_INDEXER_PAUSE_MS", "3000")]).await;
    let rw = Api::new(&server, &create_key(&data, "acme", "read,write"));
    let admin = Api::new(&server, &create_key(&data, "acme", "admin"));
    for i in 1..=5 {
        let kind = if i == 3 { "gone" } else { "kept" };
        let (s, r) = rw
            .post("/v1/events?sync=true", &personal(&mark, kind, i))
            .await;
        assert_eq!(s, 201, "{r}");
    }
    let request = {
        let admin = Api {
            http: admin.http.clone(),
            base: admin.base.clone(),
            key: admin.key.clone(),
        };
        tokio::spawn(async move { redact(&admin, "e3", "erasure request").await })
    };
    // The redaction event is committed (listed) while the indexer sleeps.
    let started = Instant::now();
    loop {
        let (_, page) = rw.get("/v1/events?page_size=10").await;
        if page["total"] == json!(6) {
            assert!(
                page["events"][2].get("redacted").is_none(),
                "not erased yet: {page}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.sigkill();
    let _ = request.await;
    let server = Server::start(&data).await;
    let rw = Api::new(&server, &rw.key);
    let (s, read) = rw.get("/v1/events/e3").await;
    assert_eq!(s, 200);
    assert_eq!(read["redacted"]["sequence_number"], json!(6), "{read}");
    let events = assert_chain_ok(&rw).await;
    assert_eq!(events.len(), 6);
    assert_tree_matches(&rw, &events).await;
    let (_, page) = rw.get(&format!("/v1/events?actor_id=gone-{mark}-3")).await;
    assert_eq!(page["total"], json!(0), "{page}");
}
