//! Writes the seed inputs of every fuzz target to `fuzz/seeds/<target>/`, made by the real
//! code: events validated and chained by sealtrail-core, their JSONL export, checkpoints
//! signed with the harnesses' fixed log key, the pack's proofs from the tree code.
//!
//! `cd fuzz && cargo run --example seeds` (the output is committed; rerun it when a format
//! changes).

use std::fs;
use std::path::{Path, PathBuf};

use sealtrail_core::merkle::Hash;
use sealtrail_core::proof::{consistency_proof, inclusion_proof};
use sealtrail_core::record::ChainedRecord;
use sealtrail_fuzz::{
    TENANT, chain, export, ingest_one, pack_proofs, signed_checkpoint, tree, verifier,
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

const INVALID: [&str; 8] = [
    r#"{"actor":{"id":"u"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success","tenant_id":"other"}"#,
    r#"{"actor":{"id":"u","role":"admin"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success"}"#,
    r#"{"actor":{"id":"u"},"action":"x..y","resource":{"id":"r","type":"t"},"outcome":"maybe"}"#,
    r#"{"actor":{"id":"u"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success","timestamp":"0001-01-01T00:00:00+00:01"}"#,
    r#"{"actor":{"id":"u"},"action":"x.y","resource":{"id":"r","type":"t"},"outcome":"success","id":"has space"}"#,
    r#"{"a":1,"a":2}"#,
    r#"{"n":9007199254740992}"#,
    r#"[1, 2.5, "x", null, true, {"k": "\u0000\t"}]"#,
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

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
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
    write(&dir, "00-records-only", &joined(&[&[0, 0], &jsonl]));
    write(
        &dir,
        "01-signed-notes",
        &joined(&[&[0, 0], &jsonl, checkpoint.as_bytes(), kept.as_bytes()]),
    );
    write(
        &dir,
        "02-texts-signed-by-the-harness",
        &joined(&[
            &[3, 0],
            &jsonl,
            text_of(&checkpoint).as_bytes(),
            text_of(&kept).as_bytes(),
        ]),
    );
    write(
        &dir,
        "03-with-key",
        &joined(&[
            &[0, 0],
            &jsonl,
            checkpoint.as_bytes(),
            kept.as_bytes(),
            key.as_bytes(),
        ]),
    );
    // the same records, not in JCS form (pretty-free serde output, CRLF): the slow path
    let mut plain = Vec::new();
    for r in &recs {
        plain.extend(serde_json::to_vec(&r.record).unwrap());
        plain.extend(b"\r\n");
    }
    write(
        &dir,
        "04-not-jcs",
        &joined(&[&[0, 0], &plain, checkpoint.as_bytes()]),
    );
    write(
        &dir,
        "05-checks-off",
        &joined(&[&[0, 0xff], &jsonl, text_of(&checkpoint).as_bytes()]),
    );

    // bytes that are not UTF-8 in a string (such a line once passed for JCS)
    let mut not_utf8 = export(&recs[..1]);
    let at = not_utf8.windows(5).position(|w| w == b"read\"").unwrap();
    not_utf8.splice(at..at + 4, *b"\xff\xfe\xed\xa0");
    write(&dir, "06-not-utf8", &joined(&[&[0, 0], &not_utf8]));

    let dir = root.join("verify_proofs");
    let cp_text = text_of(&checkpoint);
    write(
        &dir,
        "00-pack",
        &joined(&[&[0], pack_proofs(&recs).as_bytes(), cp_text.as_bytes()]),
    );
    let big = records(13);
    let big_tree = tree(&big);
    write(
        &dir,
        "01-pack-13",
        &joined(&[&[0], pack_proofs(&big).as_bytes()]),
    );
    // the edges of u64 (a leaf_index of u64::MAX once overflowed)
    let edge = format!(
        r#"{{"inclusion":[{{"sequence_number":0,"hash":"{}","leaf_index":18446744073709551615,"tree_size":18446744073709551615,"root_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","hashes":[]}}]}}"#,
        "0".repeat(64)
    );
    write(&dir, "04-pack-u64-edges", &joined(&[&[0], edge.as_bytes()]));
    let leaf =
        |i: usize| -> Hash { sealtrail_core::merkle::record_leaf(&big[i].record.hash).unwrap() };
    let raw = |index: u64, size: u64, from: u64, to: u64, hashes: &[Hash]| -> Vec<u8> {
        let mut out = vec![1u8];
        for w in [index, size, from, to] {
            out.extend(w.to_le_bytes());
        }
        for h in hashes {
            out.extend(h);
        }
        out
    };
    let path = inclusion_proof(&big_tree, 5, 13).unwrap();
    let mut hashes = vec![leaf(5), big_tree.root(), [0; 32], [0; 32]];
    hashes.extend(path);
    write(&dir, "02-raw-inclusion", &raw(5, 13, 0, 0, &hashes));
    let proof = consistency_proof(&big_tree, 6, 13).unwrap();
    let mut hashes = vec![[0; 32], [0; 32], tree(&big[..6]).root(), big_tree.root()];
    hashes.extend(proof);
    write(&dir, "03-raw-consistency", &raw(0, 0, 6, 13, &hashes));

    println!("seeds written to {} (tenant {TENANT})", root.display());
}
