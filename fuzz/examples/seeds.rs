//! Writes the seed inputs of every fuzz target to `fuzz/seeds/<target>/`, made by the real
//! code: events validated and chained by sealtrail-core, their JSONL export, checkpoints
//! signed with the harnesses' fixed log key, the pack's proofs from the tree code.
//!
//! `cd fuzz && cargo run --example seeds` (the output is committed; rerun it when a format
//! changes).

use std::fs;
use std::path::{Path, PathBuf};

use sealtrail_core::audit::Checks;
use sealtrail_core::merkle::Hash;
use sealtrail_core::pack::check_proofs;
use sealtrail_core::proof::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};
use sealtrail_core::record::ChainedRecord;
use sealtrail_fuzz::{
    ExportCase, TENANT, audit, chain, decode_pack_case, decode_raw_case, encode_pack_case,
    encode_raw_case, export, ingest_one, pack_proofs, signed_checkpoint, tree, verifier,
};

const MINIMAL: &str = r#"{"actor":{"id":"user_1"},"action":"document.read","resource":{"id":"doc_1","type":"document"},"outcome":"success"}"#;

const FULL: &str = r#"{
  "id": "evt_0001",
  "timestamp": "2024-02-29T23:59:59.1234567+05:30",
  "actor": {"id": "user_42", "type": "human", "email": "ada@example.com"},
  "action": "invoice.approve",
  "resource": {"id": "inv_7", "type": "invoice", "name": "Q1 \"north\" invoice"},
  "outcome": "failure",
  "metadata": {"ip": "10.0.0.1", "amount": 1250.75, "count": 9007199254740991,
               "neg": -3, "tags": ["a", "b\u00e9", "\ud83d\ude00"], "nested": {"z": null, "a": [true, false, 1e-7]},
               "\ue000key": "private-use key", "empty": {}}
}"#;

const AGENT: &str = r#"{"id":"evt_0002","actor":{"id":"bot-7","type":"agent"},"action":"model.deploy","resource":{"id":"m","type":"model"},"outcome":"error","timestamp":"1999-12-31T23:59:59Z","metadata":{"big":1e300,"tiny":5e-324,"zero":-0.0}}"#;

const SYSTEM: &str = r#"{"actor":{"id":"cron","type":"system"},"action":"a.b.c.d","resource":{"id":"r","type":"t"},"outcome":"success","metadata":null}"#;

const INVALID: [&str; 9] = [
    r#"{"actor":{"id":"u"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success","tenant_id":"other"}"#,
    r#"{"actor":{"id":"u","role":"admin"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success"}"#,
    r#"{"actor":{"id":"u"},"action":"x..y","resource":{"id":"r","type":"t"},"outcome":"maybe"}"#,
    r#"{"actor":{"id":"u"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success","timestamp":"0001-01-01T00:00:00+00:01"}"#,
    r#"{"actor":{"id":"u"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success","id":"has space"}"#,
    r#"{"a":1,"a":2}"#,
    r#"{"n":9007199254740992}"#,
    r#"[1, 2.5, "x", null, true, {"k": "\u0000\t"}]"#,
    // a leap second at the end of year 9999: year 10000 once counted in microseconds
    r#"{"actor":{"id":"u"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success","timestamp":"9999-12-31T23:59:60Z"}"#,
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create the seed directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn records(n: usize) -> Vec<ChainedRecord> {
    let bodies = [MINIMAL, FULL, AGENT, SYSTEM];
    let events = (0..n).map(|i| {
        let body = bodies[i % bodies.len()];
        // distinct client ids where the body has one
        let body = body.replace("evt_000", &format!("evt_{i}_"));
        ingest_one(body.as_bytes(), &format!("gen-{i}")).expect("seed events are valid")
    });
    chain(events)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let _ = fs::remove_dir_all(&root);

    let dir = root.join("json_strict");
    let deep = "[".repeat(33) + &"]".repeat(33);
    let batch = format!(r#"{{"events":[{MINIMAL},{FULL}]}}"#);
    for (i, text) in [MINIMAL, FULL, AGENT, &batch, &deep]
        .into_iter()
        .chain(INVALID)
        .enumerate()
    {
        write(&dir, &format!("{i:02}.json"), text.as_bytes());
    }

    let dir = root.join("ingest_event");
    for (i, text) in [MINIMAL, FULL, AGENT, SYSTEM]
        .into_iter()
        .chain(INVALID)
        .enumerate()
    {
        write(&dir, &format!("{i:02}.json"), text.as_bytes());
    }

    let dir = root.join("ingest_batch");
    let mixed = format!(
        r#"{{"events": [{MINIMAL}, {FULL}, {}, {AGENT}, 17, {SYSTEM}]}}"#,
        INVALID[2]
    );
    write(
        &dir,
        "00.json",
        format!(r#"{{"events":[{MINIMAL}]}}"#).as_bytes(),
    );
    write(&dir, "01.json", mixed.as_bytes());
    write(&dir, "02.json", br#"{"events":[[1]],"extra":true}"#);

    // An export of 6 records, its tree, a checkpoint of it and one of its first 4.
    let recs = records(6);
    let jsonl = export(&recs);
    let full = tree(&recs);
    let checkpoint = signed_checkpoint(full.size(), full.root());
    let prefix = tree(&recs[..4]);
    let kept = signed_checkpoint(4, prefix.root());
    let text_of = |note: &str| note.split("\n\n").next().unwrap().to_string() + "\n";
    let key = verifier().to_string();
    let dir = root.join("verify_export");
    // Each seed is decoded as the target decodes it, and the clean ones audit clean.
    let export_seed = |name: &str, case: ExportCase| {
        let bytes = case.encode();
        assert_eq!(ExportCase::decode(&bytes), Some(case), "{name}");
        write(&dir, name, &bytes);
    };
    let clean = |checkpoint: Option<&str>, kept: Option<&str>, jsonl: &[u8]| {
        audit(
            Checks::default(),
            Some(&verifier()),
            checkpoint,
            kept,
            jsonl,
        )
        .expect("a clean seed audits clean");
    };
    let case = ExportCase {
        records: &jsonl,
        ..ExportCase::default()
    };
    clean(None, None, &jsonl);
    export_seed("00-records-only", case);
    let signed = ExportCase {
        checkpoint: Some(checkpoint.as_bytes()),
        kept: Some(kept.as_bytes()),
        ..case
    };
    clean(Some(&checkpoint), Some(&kept), &jsonl);
    export_seed("01-signed-notes", signed);
    let (cp_text, kept_text) = (text_of(&checkpoint), text_of(&kept));
    export_seed(
        "02-texts-signed-by-the-harness",
        ExportCase {
            mode: 3,
            checkpoint: Some(cp_text.as_bytes()),
            kept: Some(kept_text.as_bytes()),
            ..case
        },
    );
    export_seed(
        "03-with-key",
        ExportCase {
            key: Some(key.as_bytes()),
            ..signed
        },
    );
    // the same records, not in JCS form (plain serde output, CRLF): the slow path
    let mut plain = Vec::new();
    for r in &recs {
        plain.extend(serde_json::to_vec(&r.record).unwrap());
        plain.extend(b"\r\n");
    }
    clean(Some(&checkpoint), None, &plain);
    export_seed(
        "04-not-jcs",
        ExportCase {
            records: &plain,
            checkpoint: Some(checkpoint.as_bytes()),
            ..case
        },
    );
    export_seed(
        "05-checks-off",
        ExportCase {
            disabled: 0xff,
            checkpoint: Some(cp_text.as_bytes()),
            ..case
        },
    );
    // bytes that are not UTF-8 in a string (such a line once passed for JCS)
    let mut not_utf8 = export(&recs[..1]);
    let at = not_utf8.windows(5).position(|w| w == b"read\"").unwrap();
    not_utf8.splice(at..at + 4, *b"\xff\xfe\xed\xa0");
    let failure = audit(Checks::default(), None, None, None, &not_utf8).unwrap_err();
    assert_eq!(failure.code, "unreadable_record");
    export_seed(
        "06-not-utf8",
        ExportCase {
            records: &not_utf8,
            ..case
        },
    );

    let dir = root.join("verify_proofs");
    let pack_seed = |name: &str, proofs: &str, checkpoint: Option<&str>, ok: bool| {
        let bytes = encode_pack_case(proofs.as_bytes(), checkpoint.map(str::as_bytes));
        let (p, cp) = decode_pack_case(&bytes[1..]).expect("UTF-8");
        assert_eq!((p, cp.is_some()), (proofs, checkpoint.is_some()), "{name}");
        assert_eq!(check_proofs(p, cp.as_ref()).is_ok(), ok, "{name}");
        write(&dir, name, &bytes);
    };
    pack_seed("00-pack", &pack_proofs(&recs), Some(&cp_text), true);
    let big = records(13);
    let big_tree = tree(&big);
    pack_seed("01-pack-13", &pack_proofs(&big), None, true);
    // the edges of u64 (a leaf_index of u64::MAX once overflowed)
    let edge = format!(
        r#"{{"inclusion":[{{"sequence_number":0,"hash":"{}","leaf_index":18446744073709551615,"tree_size":18446744073709551615,"root_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","hashes":[]}}]}}"#,
        "0".repeat(64)
    );
    pack_seed("04-pack-u64-edges", &edge, None, false);
    let leaf =
        |i: usize| -> Hash { sealtrail_core::merkle::record_leaf(&big[i].record.hash).unwrap() };
    let path = inclusion_proof(&big_tree, 5, 13).unwrap();
    let mut hashes = vec![leaf(5), big_tree.root(), [0; 32], [0; 32]];
    hashes.extend(path);
    let bytes = encode_raw_case([5, 13, 0, 0], &hashes);
    let ([index, size, ..], h) = decode_raw_case(&bytes[1..]);
    verify_inclusion(&h[0], index, size, &h[4..], &h[1]).expect("an honest proof");
    write(&dir, "02-raw-inclusion", &bytes);
    let proof = consistency_proof(&big_tree, 6, 13).unwrap();
    let mut hashes = vec![[0; 32], [0; 32], tree(&big[..6]).root(), big_tree.root()];
    hashes.extend(proof);
    let bytes = encode_raw_case([0, 0, 6, 13], &hashes);
    let ([.., from, to], h) = decode_raw_case(&bytes[1..]);
    verify_consistency(from, to, &h[4..], &h[2], &h[3]).expect("an honest proof");
    write(&dir, "03-raw-consistency", &bytes);

    println!("seeds written to {} (tenant {TENANT})", root.display());
}
