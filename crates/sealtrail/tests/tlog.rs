//! The verifiable log end to end, over real HTTP against the real binary: checkpoints
//! and the log key, inclusion and consistency proofs checked with the core's verifier,
//! exports, and `sealtrail verify` on an exported log and an evidence pack (clean,
//! tampered, truncated against a kept checkpoint). Both stores.

mod common;

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::merkle::{Hash, record_leaf};
use sealtrail_core::note::NoteVerifier;
use sealtrail_core::proof::{verify_consistency, verify_inclusion};
use serde_json::{Value, json};

fn h(v: &Value) -> Hash {
    B64.decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

async fn bytes(api: &Api, path: &str) -> Vec<u8> {
    let r = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

async fn ingest(api: &Api, from: usize, n: usize) {
    let events: Vec<Value> = (from..from + n).map(|i| event(&format!("e-{i}"))).collect();
    let (s, v) = api
        .post("/v1/events/batch?sync=true", &json!({ "events": events }))
        .await;
    assert_eq!(s, 200, "{v}");
}

fn verify_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).arg("verify").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn the_log_is_verifiable(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["--store", store]).await;
    let api = Api::new(&server, &create_key(&data, "acme", "read,write"));
    assert!(
        data.join("log-key.private").exists(),
        "the key is made on first start"
    );

    let (s, key) = api.get("/v1/log/key").await;
    assert_eq!(s, 200, "{key}");
    assert_eq!(key["origin"], json!("sealtrail.local/acme"));
    let verifier = NoteVerifier::parse(key["verifier_key"].as_str().unwrap()).unwrap();

    // empty log: a checkpoint of size 0
    let (s, note) = api.get_text("/v1/checkpoint").await;
    assert_eq!(s, 200);
    let cp0 = Checkpoint::open(&note, &verifier, Some("sealtrail.local/acme")).unwrap();
    assert_eq!(cp0.size, 0);

    ingest(&api, 0, 13).await;
    let (_, kept_note) = api.get_text("/v1/checkpoint?fresh=true").await;
    let kept = Checkpoint::open(&kept_note, &verifier, None).unwrap();
    assert_eq!(kept.size, 13);
    ingest(&api, 13, 20).await;
    let (_, note) = api.get_text("/v1/checkpoint?fresh=true").await;
    let cp = Checkpoint::open(&note, &verifier, None).unwrap();
    assert_eq!(cp.size, 33);

    // every inclusion proof verifies against the signed root
    let events = assert_chain_ok(&api).await;
    for e in &events {
        let seq = e["sequence_number"].as_u64().unwrap();
        let (s, p) = api
            .get(&format!(
                "/v1/proof/inclusion?sequence_number={seq}&tree_size=33"
            ))
            .await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["leaf_index"], json!(seq - 1));
        assert_eq!(h(&p["root_hash"]), cp.root);
        let path: Vec<Hash> = p["hashes"].as_array().unwrap().iter().map(h).collect();
        let leaf = record_leaf(e["hash"].as_str().unwrap()).unwrap();
        verify_inclusion(&leaf, seq - 1, 33, &path, &cp.root).unwrap();
    }
    // the later checkpoint extends the kept one
    let (s, c) = api.get("/v1/proof/consistency?from=13&to=33").await;
    assert_eq!(s, 200, "{c}");
    let path: Vec<Hash> = c["hashes"].as_array().unwrap().iter().map(h).collect();
    verify_consistency(13, 33, &path, &kept.root, &cp.root).unwrap();

    // sync ingest may carry the checkpoint and the record's inclusion proof
    let (s, r) = api
        .post("/v1/events?sync=true&proof=true", &event("with-proof"))
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["sequence_number"], json!(34));
    let cp34 = Checkpoint::open(r["checkpoint"].as_str().unwrap(), &verifier, None).unwrap();
    assert_eq!(cp34.size, 34);
    let p = &r["inclusion_proof"];
    let path: Vec<Hash> = p["hashes"].as_array().unwrap().iter().map(h).collect();
    let leaf = record_leaf(r["hash"].as_str().unwrap()).unwrap();
    verify_inclusion(&leaf, 33, 34, &path, &cp34.root).unwrap();
    let (s, plain) = api
        .post("/v1/events?sync=true", &event("without-proof"))
        .await;
    assert_eq!(s, 201);
    assert!(plain.get("checkpoint").is_none());

    // bad requests are 400 with the error shape
    for bad in [
        "/v1/proof/inclusion?sequence_number=0",
        "/v1/proof/inclusion?sequence_number=36",
        "/v1/proof/inclusion?sequence_number=3&tree_size=99",
        "/v1/proof/inclusion?sequence_number=x",
        "/v1/proof/inclusion",
        "/v1/proof/consistency?from=0&to=5",
        "/v1/proof/consistency?from=9&to=5",
        "/v1/export?format=xml",
        "/v1/checkpoint?fresh=maybe",
    ] {
        let (s, v) = api.get(bad).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["error"]["code"].is_string(), "{bad}: {v}");
    }

    // exports
    let (s, jsonl) = api.get_text("/v1/export?format=jsonl").await;
    assert_eq!(s, 200);
    assert_eq!(jsonl.lines().count(), 35);
    let (s, csv) = api.get_text("/v1/export?format=csv&from=2&to=4").await;
    assert_eq!(s, 200);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("sequence_number,id,"));

    // offline verification of the export and of the evidence pack
    let files = dir.path();
    std::fs::write(files.join("log.jsonl"), &jsonl).unwrap();
    std::fs::write(files.join("cp.txt"), &note).unwrap();
    std::fs::write(files.join("kept.txt"), &kept_note).unwrap();
    let vkey = key["verifier_key"].as_str().unwrap();
    let f = |n: &str| files.join(n).to_str().unwrap().to_string();
    let (code, out) = verify_cli(&[
        &f("log.jsonl"),
        "--checkpoint",
        &f("cp.txt"),
        "--key",
        vkey,
        "--trusted",
        &f("kept.txt"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: 35 records"), "{out}");
    std::fs::write(
        files.join("pack.zip"),
        bytes(&api, "/v1/export/evidence-pack").await,
    )
    .unwrap();
    let (code, out) = verify_cli(&[&f("pack.zip"), "--key", vkey, "--trusted", &f("kept.txt")]);
    assert_eq!(code, 0, "{out}");

    // a pack with one record changed, and a pack checked with another log's key
    let pack = std::fs::read(files.join("pack.zip")).unwrap();
    std::fs::write(
        files.join("bad-pack.zip"),
        repack(&pack, "\"outcome\":\"success\"", "\"outcome\":\"error\""),
    )
    .unwrap();
    let (code, out) = verify_cli(&[&f("bad-pack.zip"), "--key", vkey]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[hash_mismatch] record 1"), "{out}");
    let other = sealtrail_core::note::NoteSigner::from_seed("sealtrail.local", [9; 32]).unwrap();
    let (code, out) = verify_cli(&[&f("pack.zip"), "--key", &other.verifier().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[bad_signature]"), "{out}");

    // tampered: one changed byte in a record
    let tampered = jsonl.replacen("\"outcome\":\"success\"", "\"outcome\":\"failure\"", 1);
    std::fs::write(files.join("bad.jsonl"), tampered).unwrap();
    let (code, out) = verify_cli(&[&f("bad.jsonl"), "--checkpoint", &f("cp.txt"), "--key", vkey]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[hash_mismatch] record 1"), "{out}");
    // truncated below the kept checkpoint
    let cut: String = jsonl.lines().take(10).map(|l| format!("{l}\n")).collect();
    std::fs::write(files.join("cut.jsonl"), cut).unwrap();
    let (code, out) = verify_cli(&[&f("cut.jsonl"), "--key", vkey, "--trusted", &f("kept.txt")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[rollback]"), "{out}");
    // unusable input
    let (code, _) = verify_cli(&[&f("missing.jsonl")]);
    assert_eq!(code, 2);
    let (code, _) = verify_cli(&[
        &f("log.jsonl"),
        "--checkpoint",
        &f("cp.txt"),
        "--key",
        "nonsense",
    ]);
    assert_eq!(code, 2);
}

#[tokio::test]
async fn the_log_is_verifiable_fjall() {
    the_log_is_verifiable("fjall").await;
}

#[tokio::test]
async fn the_log_is_verifiable_sqlite() {
    the_log_is_verifiable("sqlite").await;
}

/// The pack with `from` replaced by `to` (once) in its records.
fn repack(pack: &[u8], from: &str, to: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pack)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        if name == sealtrail_core::pack::RECORDS {
            text = text.replacen(from, to, 1);
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(text.as_bytes()).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// A failure early in a large input stops the verifier at once (regression: the reader
/// must not wait forever on a full pipeline once the checks have stopped).
#[test]
fn an_early_failure_in_a_large_input_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jsonl");
    let mut text = String::from("not json\n");
    text.push_str(&"{}\n".repeat(300_000));
    std::fs::write(&path, text).unwrap();
    let (code, out) = verify_cli(&[path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[unreadable_record] record 1"), "{out}");
}

/// A pack is untrusted input: a member the verifier reads whole (here a checkpoint that
/// inflates to 2 MiB from a few KiB) is refused past its bound instead of being read
/// into memory without limit.
#[test]
fn an_oversized_pack_member_is_refused() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(sealtrail_core::pack::CHECKPOINT, deflated)
        .unwrap();
    zip.write_all(&vec![b'a'; 2 << 20]).unwrap();
    zip.start_file(sealtrail_core::pack::RECORDS, deflated)
        .unwrap();
    zip.finish().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 64 * 1024);
    let (code, out) = verify_cli(&[path.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("checkpoint.txt in the pack is larger than"),
        "{out}"
    );
}

/// The tiled API (C2SP tlog-tiles) checked with an independent implementation: every
/// tile of the tree is fetched and authenticated by `tlog_tiles` against the signed
/// checkpoint's root, and every entry bundle checked ([`fetch_tiles`]); proofs `tlog_tiles`
/// computes from the tiles must be the ones `/v1/proof/*` serves; tiles do not change as
/// the log grows; bad requests get clear errors.
async fn tiles_agree_with_tlog_tiles(store: &str, n: usize) {
    use tlog_tiles::tlog;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["--store", store]).await;
    let api = Api::new(&server, &create_key(&data, "acme", "read,write"));

    // 300 records: a full level-0 tile and a partial one of 44, kept for later
    ingest(&api, 0, 300).await;
    let early_partial = tile(&api, "acme", "tile/0/001.p/44").await;
    assert_eq!(early_partial.status(), 200);
    let early_partial = early_partial.bytes().await.unwrap().to_vec();
    assert_eq!(early_partial.len(), 44 * 32);
    let early_entries = tile(&api, "acme", "tile/entries/001.p/44")
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    for from in (300..n).step_by(1000) {
        ingest(&api, from, (n - from).min(1000)).await;
    }

    let events = api.all_events().await;
    assert_eq!(events.len(), n);
    let tiles = fetch_tiles(&api, "acme", &events).await;
    let size = tiles.size;
    assert_eq!(size, n as u64);
    let hashes = tlog_tiles::tile::TileHashReader::new(size, tiles.root, &tiles);

    // proofs computed from the tiles are the ones the API serves
    for index in [0, 1, 255, 256, 299, size / 2, size - 2, size - 1] {
        let proof = tlog::prove_record(size, index, &hashes).unwrap();
        let (s, p) = api
            .get(&format!(
                "/v1/proof/inclusion?sequence_number={}",
                index + 1
            ))
            .await;
        assert_eq!(s, 200, "{p}");
        let served: Vec<Hash> = p["hashes"].as_array().unwrap().iter().map(h).collect();
        assert_eq!(
            proof.iter().map(|h| h.0).collect::<Vec<_>>(),
            served,
            "record {index}"
        );
        let leaf = record_leaf(events[index as usize]["hash"].as_str().unwrap()).unwrap();
        tlog::check_record(&proof, size, tiles.root, index, tlog::record_hash(&leaf)).unwrap();
    }
    for old in [1, 44, 256, 300, size / 3, size - 1] {
        let proof = tlog::prove_tree(size, old, &hashes).unwrap();
        let (s, c) = api
            .get(&format!("/v1/proof/consistency?from={old}&to={size}"))
            .await;
        assert_eq!(s, 200, "{c}");
        let served: Vec<Hash> = c["hashes"].as_array().unwrap().iter().map(h).collect();
        assert_eq!(
            proof.iter().map(|h| h.0).collect::<Vec<_>>(),
            served,
            "from {old}"
        );
        let old_root = tlog::tree_hash(old, &hashes).unwrap();
        tlog::check_tree(&proof, size, tiles.root, old, old_root).unwrap();
    }

    // tiles are immutable: the early partial tile and bundle are served the same, and
    // are the start of the full ones
    assert_eq!(
        tile(&api, "acme", "tile/0/001.p/44")
            .await
            .bytes()
            .await
            .unwrap(),
        early_partial
    );
    assert_eq!(&tiles.tiles["tile/0/001"][..44 * 32], &early_partial[..]);
    assert_eq!(
        tile(&api, "acme", "tile/entries/001.p/44")
            .await
            .bytes()
            .await
            .unwrap(),
        early_entries
    );

    // past the end, malformed, another tenant, no key
    let full0 = tile_index(size / 256);
    for (path, status, code) in [
        (format!("tile/0/{full0}"), 404, "tile_not_found"),
        (
            format!("tile/entries/{full0}.p/{}", size % 256 + 1),
            404,
            "tile_not_found",
        ),
        (
            "tile/1/001".to_string(),
            if size >= 2 * 65536 { 200 } else { 404 },
            "tile_not_found",
        ),
        ("tile/8/000.p/1".to_string(), 404, "tile_not_found"),
        ("tile/0/x000/001".to_string(), 400, "invalid_path"),
        ("tile/0/000.p/256".to_string(), 400, "invalid_path"),
        ("tile/00/000".to_string(), 400, "invalid_path"),
        ("tile/data/000".to_string(), 400, "invalid_path"),
    ] {
        let r = tile(&api, "acme", &path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        if status != 200 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], json!(code), "{path}: {v}");
        }
    }
    let other = Api::new(&server, &create_key(&data, "other", "read"));
    assert_eq!(tile(&other, "acme", "tile/0/000").await.status(), 404);
    assert_eq!(tile(&other, "acme", "checkpoint").await.status(), 404);
    let r = api
        .http
        .get(format!("{}/v1/tlog/acme/checkpoint", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let write_only = Api::new(&server, &create_key(&data, "acme", "write"));
    assert_eq!(tile(&write_only, "acme", "tile/0/000").await.status(), 403);
}

/// 66,341 records: 259 full level-0 tiles and one of 37, a full level-1 tile and one of
/// 3, a level-2 tile of 1. The fjall store keeps nodes of level 8 and up only, which the
/// level-1 tiles are made of.
#[tokio::test]
async fn tiles_agree_with_tlog_tiles_fjall() {
    tiles_agree_with_tlog_tiles("fjall", 256 * 256 + 3 * 256 + 37).await;
}

#[tokio::test]
async fn tiles_agree_with_tlog_tiles_sqlite() {
    tiles_agree_with_tlog_tiles("sqlite", 1_000).await;
}
