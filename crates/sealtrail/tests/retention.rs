//! Retention (issue 15): a tenant's records past its policy are removed by the pruner,
//! which records each removal in the chain (`sealtrail.retention.prune`); the chain, the
//! proofs, a checkpoint kept from before and the offline verifier all still hold; a
//! SIGKILL mid-prune under load loses nothing kept and brings nothing removed back.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::merkle::{Hash, record_leaf};
use sealtrail_core::note::NoteVerifier;
use sealtrail_core::proof::{verify_consistency, verify_inclusion};
use serde_json::{Value, json};

const FAST: &[(&str, &str)] = &[("SEALTRAIL_RETENTION_INTERVAL", "1000ms")];

/// `sealtrail verify ARGS`, which must pass: what it said.
fn verify_cli(args: &[&str]) -> String {
    let out = Command::new(BIN).arg("verify").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "verify {args:?}: {text}");
    text
}

async fn retained_from(admin: &Api) -> u64 {
    let (s, r) = admin.get("/v1/retention").await;
    assert_eq!(s, 200, "{r}");
    r["retained_from"].as_u64().unwrap()
}

/// Waits until the boundary is `want`.
async fn wait_boundary(admin: &Api, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let at = retained_from(admin).await;
        if at == want {
            return;
        }
        assert!(Instant::now() < deadline, "boundary {at}, never {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn checkpoint(api: &Api, verifier: &NoteVerifier) -> (String, Checkpoint) {
    let (s, note) = api.get_text("/v1/checkpoint?fresh=true").await;
    assert_eq!(s, 200, "{note}");
    let cp = Checkpoint::open(&note, verifier, None).unwrap();
    (note, cp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_records_and_every_proof_still_holds_fjall() {
    retention_removes_old_records_and_every_proof_still_holds("fjall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_records_and_every_proof_still_holds_sqlite() {
    retention_removes_old_records_and_every_proof_still_holds("sqlite").await;
}

async fn retention_removes_old_records_and_every_proof_still_holds(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let archive_dir = dir.path().join("archive");
    let env = [
        FAST[0],
        (
            "SEALTRAIL_RETENTION_ARCHIVE_DIR",
            archive_dir.to_str().unwrap(),
        ),
    ];
    let server = Server::start_with_env(&data, &["--store", store], &env).await;
    let rw = Api::new(&server, &create_key(&data, "acme", "read,write"));
    let admin = Api::new(&server, &create_key(&data, "acme", "admin"));
    let other = Api::new(&server, &create_key(&data, "other", "read,write"));
    let mark = format!("pii{:x}", std::process::id() as u64 * 7919 + 29);
    for i in 1..=30 {
        let mut e = event(&format!("e{i}"));
        e["metadata"]["note"] = json!(format!("{mark}-{i:02}"));
        let (s, r) = rw.post("/v1/events?sync=true", &e).await;
        assert_eq!(s, 201, "{r}");
    }
    for i in 1..=3 {
        let (s, r) = other
            .post("/v1/events?sync=true", &event(&format!("o{i}")))
            .await;
        assert_eq!(s, 201, "{r}");
    }
    let (_, key) = rw.get("/v1/log/key").await;
    let vkey = key["verifier_key"].as_str().unwrap().to_string();
    let verifier = NoteVerifier::parse(&vkey).unwrap();
    let (kept_note, kept) = checkpoint(&rw, &verifier).await;
    assert_eq!(kept.size, 30);

    // Nothing is removed by default; a policy needs the admin scope and sane numbers.
    let (s, r) = admin.get("/v1/retention").await;
    assert_eq!(
        (
            s,
            r["source"].clone(),
            r["retained_from"].clone(),
            r["policy"].clone()
        ),
        (200, json!("default"), json!(1), json!({})),
        "{r}"
    );
    let (s, _) = rw.put("/v1/retention", &json!({"events": 10})).await;
    assert_eq!(s, 403);
    for bad in [json!({"events": 0}), json!({"days": 0}), json!({"keep": 3})] {
        let (s, r) = admin.put("/v1/retention", &bad).await;
        assert_eq!(s, 400, "{bad}: {r}");
    }
    let originals = rw.all_events().await;
    assert_eq!(originals.len(), 30);
    let (s, r) = admin.put("/v1/retention", &json!({"events": 10})).await;
    assert_eq!(
        (s, r["source"].clone(), r["policy"].clone()),
        (200, json!("tenant"), json!({"events": 10})),
        "{r}"
    );
    // The pruner's next run: records 1..=20 go, a prune event records it.
    wait_boundary(&admin, 21).await;
    for i in [1, 5, 20] {
        let (s, _) = rw.get(&format!("/v1/events/e{i}")).await;
        assert_eq!(s, 404, "record {i} was removed");
    }
    let events = rw.all_events().await;
    assert_eq!(events.len(), 11, "records 21..=30 and the prune event");
    assert_eq!(events[0]["id"], json!("e21"));
    let prune = &events[10];
    assert_eq!(
        prune["action"],
        json!("sealtrail.retention.prune"),
        "{prune}"
    );
    assert_eq!(
        prune["metadata"],
        json!({"before_sequence_number": 21, "policy": {"events": 10}})
    );
    assert_eq!(
        prune["actor"],
        json!({"id": "sealtrail.retention", "type": "system"})
    );
    // The other tenant is untouched.
    assert_eq!(other.all_events().await.len(), 3);
    // The removed records' content is gone from the data directory; the kept ones' is not.
    for i in [1, 10, 20] {
        let found = files_containing(&data, &format!("{mark}-{i:02}"));
        assert!(found.is_empty(), "removed record {i} still in {found:?}");
    }
    assert!(!files_containing(&data, &format!("{mark}-25")).is_empty());

    // The server's walk starts at the boundary and requires the prune event.
    let (_, v) = rw.get("/v1/verify?full=true").await;
    assert_eq!(
        (
            v["valid"].clone(),
            v["events_checked"].clone(),
            v["retained_from"].clone()
        ),
        (json!(true), json!(11), json!(21)),
        "{v}"
    );
    let (_, one) = rw.get("/v1/events/e21/verify").await;
    assert_eq!(one["valid"], json!(true), "{one}");
    let (_, one) = rw.get("/v1/events/e22/verify").await;
    assert_eq!(
        (one["valid"].clone(), one["prev_hash_valid"].clone()),
        (json!(true), json!(true)),
        "{one}"
    );

    // Proofs: the kept checkpoint is consistent with the new one; kept records are
    // included; so is a removed record's leaf, proved from the tree the store kept.
    let (note, cp) = checkpoint(&rw, &verifier).await;
    assert_eq!(cp.size, 31);
    let (s, c) = rw.get("/v1/proof/consistency?from=30&to=31").await;
    assert_eq!(s, 200, "{c}");
    let path: Vec<Hash> = c["hashes"].as_array().unwrap().iter().map(h).collect();
    verify_consistency(30, 31, &path, &kept.root, &cp.root).unwrap();
    let (s, p) = rw
        .get("/v1/proof/inclusion?sequence_number=25&tree_size=31")
        .await;
    assert_eq!(s, 200, "{p}");
    let path: Vec<Hash> = p["hashes"].as_array().unwrap().iter().map(h).collect();
    let leaf = record_leaf(events[4]["hash"].as_str().unwrap()).unwrap();
    verify_inclusion(&leaf, 24, 31, &path, &cp.root).unwrap();

    // Tiles: the hash tile still has every leaf (removed ones from the tree); the
    // entries tile of removed records is gone.
    let r = tile(&rw, "acme", "tile/0/000.p/31").await;
    assert_eq!(r.status().as_u16(), 200);
    let hashes = r.bytes().await.unwrap();
    let mut all: Vec<&Value> = originals.iter().collect();
    all.extend(events[10..].iter());
    for (i, rec) in all.iter().enumerate() {
        let leaf = record_leaf(rec["hash"].as_str().unwrap()).unwrap();
        assert_eq!(
            &hashes[i * 32..(i + 1) * 32],
            sealtrail_core::merkle::leaf_hash(&leaf).as_slice(),
            "leaf {i}"
        );
    }
    let r = tile(&rw, "acme", "tile/entries/000.p/31").await;
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], json!("pruned"), "{body}");

    // Offline: the evidence pack starts at the boundary and verifies.
    let pack = rw
        .http
        .get(format!("{}/v1/export/evidence-pack", rw.base))
        .bearer_auth(&rw.key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let f = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(f("pack.zip"), &pack).unwrap();
    std::fs::write(f("kept.txt"), &kept_note).unwrap();
    let text = verify_cli(&[&f("pack.zip"), "--key", &vkey, "--trusted", &f("kept.txt")]);
    assert!(
        text.contains("OK: 31 records")
            && text.contains("records 1..=20 were removed by retention"),
        "{text}"
    );
    let _ = note;

    // An idle tenant is not pruned again and again: the prune event does not count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(retained_from(&admin).await, 21);
    assert_eq!(rw.all_events().await.len(), 11);

    // Each removal was archived first, as an evidence pack of the removed slice that
    // `sealtrail verify` checks against its own signed checkpoint.
    let verify_archive = |name: &str| {
        let path = archive_dir.join("acme").join(name);
        verify_cli(&[path.to_str().unwrap(), "--key", &vkey])
    };
    let text = verify_archive("records-1-20.zip");
    assert!(
        text.contains("a retention archive: records 1..=20 are exactly those positions")
            && text.contains("size 20 verified"),
        "{text}"
    );
    // A second removal: its archive (records 21..=31, the first prune event among them)
    // is built on the tree of the first one's records.
    for i in 31..=35 {
        let (s, r) = rw
            .post("/v1/events?sync=true", &event(&format!("e{i}")))
            .await;
        assert_eq!(s, 201, "{r}");
    }
    let (s, r) = admin.put("/v1/retention", &json!({"events": 5})).await;
    assert_eq!(s, 200, "{r}");
    wait_boundary(&admin, 32).await;
    let text = verify_archive("records-21-31.zip");
    assert!(
        text.contains("a retention archive: records 21..=31 are exactly those positions")
            && text.contains("records 1..=20 are in earlier archives")
            && text.contains("size 31 verified"),
        "{text}"
    );
    let mut names: Vec<String> = std::fs::read_dir(archive_dir.join("acme"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["records-1-20.zip", "records-21-31.zip"]);

    // Back to the default (forever): nothing more goes; the CLI sees the same.
    let r = admin
        .http
        .delete(format!("{}/v1/retention", admin.base))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let out = Command::new(BIN)
        .args(["retention", "show", "--tenant", "acme", "--data-dir"])
        .arg(&data)
        .env("SEALTRAIL_STORE", store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("keep forever (the default)")
            && (store == "fjall" || text.contains("first record kept: 32")),
        "{text}"
    );
}

/// Two prune events in a row at the chain's end (here: the policy tightened right after a
/// prune; under load: events that arrived while a boundary was worked out) are both left
/// out of the count, so the boundary settles instead of moving by one at every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_prune_events_do_not_move_the_boundary_at_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_env(&data, &[], FAST).await;
    let rw = Api::new(&server, &create_key(&data, "acme", "read,write"));
    let admin = Api::new(&server, &create_key(&data, "acme", "admin"));
    for b in 0..2 {
        ingest_named(&rw, &format!("b{b}"), 20).await;
    }
    // 40 events; keep 30: records 11..=40 and the prune event (41).
    let (s, r) = admin.put("/v1/retention", &json!({"events": 30})).await;
    assert_eq!(s, 200, "{r}");
    wait_boundary(&admin, 11).await;
    // Keep 20: records 21..=40, prune events 41 and 42.
    let (s, r) = admin.put("/v1/retention", &json!({"events": 20})).await;
    assert_eq!(s, 200, "{r}");
    wait_boundary(&admin, 21).await;
    // Three more runs change nothing.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(retained_from(&admin).await, 21);
    let events = rw.all_events().await;
    let prunes: Vec<u64> = events
        .iter()
        .filter(|e| e["action"] == json!("sealtrail.retention.prune"))
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!((events.len(), prunes), (22, vec![41, 42]));
}

/// Sends single sync events `prefix-N` until `stop`; returns the acknowledged ones as
/// (id, sequence number, hash).
async fn load(
    api: Api,
    prefix: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(String, u64, String)> {
    let mut acked = Vec::new();
    let mut n = 0;
    while !*stop.borrow() {
        n += 1;
        let id = format!("{prefix}-{n}");
        let sent = api
            .http
            .post(format!("{}/v1/events?sync=true", api.base))
            .bearer_auth(&api.key)
            .json(&event(&id))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let Ok(r) = sent else { break };
        if r.status().as_u16() == 201 {
            let body: Value = r.json().await.unwrap();
            acked.push((
                id,
                body["sequence_number"].as_u64().unwrap(),
                body["hash"].as_str().unwrap().to_string(),
            ));
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_prune_under_load_loses_nothing_kept_and_brings_nothing_back_fjall() {
    a_sigkill_mid_prune_under_load_loses_nothing_kept_and_brings_nothing_back("fjall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_prune_under_load_loses_nothing_kept_and_brings_nothing_back_sqlite() {
    a_sigkill_mid_prune_under_load_loses_nothing_kept_and_brings_nothing_back("sqlite").await;
}

async fn a_sigkill_mid_prune_under_load_loses_nothing_kept_and_brings_nothing_back(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_with_env(&data, &["--store", store], FAST).await;
    let rw_key = create_key(&data, "acme", "read,write");
    let admin_key = create_key(&data, "acme", "admin");
    let rw = Api::new(&server, &rw_key);
    let mut acked: Vec<(String, u64, String)> = Vec::new();
    for b in 0..10 {
        ingest_named(&rw, &format!("b{b}"), 200).await;
    }
    for e in rw.all_events().await {
        acked.push((
            e["id"].as_str().unwrap().to_string(),
            e["sequence_number"].as_u64().unwrap(),
            e["hash"].as_str().unwrap().to_string(),
        ));
    }
    let (_, key) = rw.get("/v1/log/key").await;
    let verifier = NoteVerifier::parse(key["verifier_key"].as_str().unwrap()).unwrap();
    let (_, kept) = checkpoint(&rw, &verifier).await;
    assert_eq!(kept.size, 2000);
    let (s, r) = Api::new(&server, &admin_key)
        .put("/v1/retention", &json!({"events": 300}))
        .await;
    assert_eq!(s, 200, "{r}");

    // Kill the server while the pruner runs (its first run is 1 s after a start) and
    // events keep arriving; start it again; five times.
    let mut kills = 0;
    for cycle in 0..5u64 {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let loader = tokio::spawn(load(Api::new(&server, &rw_key), format!("c{cycle}"), stop));
        // 0.8 .. 2.3 s: around the pruner's run.
        let wait = 800 + (cycle * 7919 + std::process::id() as u64) % 1500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.sigkill();
        kills += 1;
        let _ = stop_tx.send(true);
        acked.extend(loader.await.unwrap());
        server = Server::start_with_env(&data, &["--store", store], FAST).await;
    }
    assert_eq!(kills, 5);

    // Let the pruner settle: the boundary stops moving.
    let admin = Api::new(&server, &admin_key);
    let rw = Api::new(&server, &rw_key);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let boundary = retained_from(&admin).await;
    assert!(boundary > 1, "nothing was ever pruned");
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");

    // Nothing kept is lost (every acknowledged record at or past the boundary is there,
    // unchanged); nothing removed comes back (every one before it is gone).
    let events = rw.all_events().await;
    assert_eq!(events[0]["sequence_number"], json!(boundary));
    let by_seq: std::collections::HashMap<u64, &Value> = events
        .iter()
        .map(|e| (e["sequence_number"].as_u64().unwrap(), e))
        .collect();
    for (id, seq, hash) in &acked {
        if *seq >= boundary {
            let e = by_seq
                .get(seq)
                .unwrap_or_else(|| panic!("acknowledged record {seq} ({id}) lost"));
            assert_eq!(
                (e["id"].as_str().unwrap(), e["hash"].as_str().unwrap()),
                (id.as_str(), hash.as_str())
            );
        } else {
            let (s, _) = rw.get(&format!("/v1/events/{id}")).await;
            assert_eq!(s, 404, "removed record {seq} ({id}) came back");
        }
    }
    // Every prune event names a boundary no later than the current one, and they only
    // grow along the chain.
    let prunes: Vec<u64> = events
        .iter()
        .filter(|e| e["action"] == json!("sealtrail.retention.prune"))
        .map(|e| e["metadata"]["before_sequence_number"].as_u64().unwrap())
        .collect();
    assert!(
        !prunes.is_empty() && prunes.contains(&boundary),
        "{prunes:?} / {boundary}"
    );
    assert!(prunes.windows(2).all(|w| w[0] <= w[1]), "{prunes:?}");

    // The chain verifies from the boundary; the checkpoint kept from before every prune
    // is consistent with today's; a kept record is included.
    let (_, v) = rw.get("/v1/verify?full=true").await;
    assert_eq!(
        (v["valid"].clone(), v["retained_from"].clone()),
        (json!(true), json!(boundary)),
        "{v}"
    );
    let (_, cp) = checkpoint(&rw, &verifier).await;
    let (s, c) = rw
        .get(&format!("/v1/proof/consistency?from=2000&to={}", cp.size))
        .await;
    assert_eq!(s, 200, "{c}");
    let path: Vec<Hash> = c["hashes"].as_array().unwrap().iter().map(h).collect();
    verify_consistency(2000, cp.size, &path, &kept.root, &cp.root).unwrap();
    let last = events.last().unwrap();
    let seq = last["sequence_number"].as_u64().unwrap();
    let (s, p) = rw
        .get(&format!(
            "/v1/proof/inclusion?sequence_number={seq}&tree_size={}",
            cp.size
        ))
        .await;
    assert_eq!(s, 200, "{p}");
    let path: Vec<Hash> = p["hashes"].as_array().unwrap().iter().map(h).collect();
    let leaf = record_leaf(last["hash"].as_str().unwrap()).unwrap();
    verify_inclusion(&leaf, seq - 1, cp.size, &path, &cp.root).unwrap();
}
