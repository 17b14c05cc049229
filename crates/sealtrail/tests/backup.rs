//! `sealtrail backup` under load and `sealtrail restore` (issue 11): a backup taken while
//! writers commit restores into a directory whose server serves a prefix of the original
//! log — the same records, hashes and checkpoint roots — verifies, and continues the
//! log. Both embedded engines; plus the refusals (a non-empty target).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::merkle::{MemoryTree, record_leaf};
use sealtrail_core::note::NoteVerifier;
use serde_json::{Value, json};

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn backup_under_load_restores_a_prefix_that_continues(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backup = dir.path().join("backup");
    let restored = dir.path().join("restored");
    let key = create_key(&data, "acme", "read,write");
    let mut server = Server::start_with(&data, &["--store", store]).await;
    let api = Arc::new(Api::new(&server, &key));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (api, stop) = (api.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let events: Vec<Value> = (0..20).map(|k| event(&format!("w{w}-{i}-{k}"))).collect();
                let (s, v) = api
                    .post("/v1/events/batch?sync=true", &json!({ "events": events }))
                    .await;
                assert_eq!(s, 200, "{v}");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (ok, out) = tokio::task::spawn_blocking({
        let (data, backup) = (data.clone(), backup.clone());
        move || run(&["backup", "--data-dir", path(&data), "--to", path(&backup)])
    })
    .await
    .unwrap();
    assert!(ok, "backup under load failed: {out}");
    if store == "fjall" {
        assert!(out.contains("server running"), "{out}");
        // The copy is not left in the page cache (it is not read again soon).
        let mut segments = 0;
        for entry in std::fs::read_dir(backup.join("log")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "seg") {
                segments += 1;
                assert_eq!(cached_bytes(&path), 0, "{} is cached", path.display());
            }
        }
        assert!(segments > 0, "no segment in the backup");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let original = assert_chain_ok(&api).await;
    let (_, log_key) = api.get("/v1/log/key").await;
    assert!(server.sigterm_and_wait());

    // A backup goes only into a new or empty directory.
    let (ok, out) = run(&["backup", "--data-dir", path(&data), "--to", path(&backup)]);
    assert!(!ok && out.contains("not empty"), "{out}");

    let (ok, out) = run(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(&restored),
    ]);
    assert!(ok, "restore failed: {out}");
    let (ok, out) = run(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(&restored),
    ]);
    assert!(
        !ok && out.contains("not empty"),
        "restoring over data: {out}"
    );

    let server = Server::start_with(&restored, &["--store", store]).await;
    let api = Api::new(&server, &key);
    let events = assert_chain_ok(&api).await;
    assert!(
        events.len() >= 100 && events.len() <= original.len(),
        "the backup holds {} of {} events",
        events.len(),
        original.len()
    );
    for (got, want) in events.iter().zip(&original) {
        assert_eq!(
            (&got["id"], &got["hash"]),
            (&want["id"], &want["hash"]),
            "the restored log is a prefix of the original"
        );
    }
    assert_tree_matches(&api, &events).await;

    // Its checkpoint is the original log's root at that size, signed with the same key.
    let (_, restored_key) = api.get("/v1/log/key").await;
    assert_eq!(restored_key, log_key);
    let verifier = NoteVerifier::parse(log_key["verifier_key"].as_str().unwrap()).unwrap();
    let (status, note) = api.get_text("/v1/checkpoint?fresh=true").await;
    assert_eq!(status, 200, "{note}");
    let cp = Checkpoint::open(&note, &verifier, log_key["origin"].as_str()).unwrap();
    assert_eq!(cp.size, events.len() as u64);
    let mut tree = MemoryTree::new();
    for e in &original[..events.len()] {
        tree.push(&record_leaf(e["hash"].as_str().unwrap()).unwrap());
    }
    assert_eq!(cp.root, tree.root());

    // The log continues.
    for i in 0..5 {
        let (s, v) = api
            .post("/v1/events?sync=true", &event(&format!("after-{i}")))
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["sequence_number"], json!(events.len() + i + 1), "{v}");
    }
    let (_, verify) = api.get("/v1/verify").await;
    assert_eq!(verify["valid"], json!(true), "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_a_prefix_that_continues_fjall() {
    backup_under_load_restores_a_prefix_that_continues("fjall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_a_prefix_that_continues_sqlite() {
    backup_under_load_restores_a_prefix_that_continues("sqlite").await;
}

#[test]
fn a_directory_without_a_server_ever_started_is_not_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(&[
        "backup",
        "--data-dir",
        path(&dir.path().join("nothing")),
        "--to",
        path(&dir.path().join("b")),
    ]);
    assert!(
        !ok && out.contains("not a sealtrail data directory"),
        "{out}"
    );
    let (ok, out) = run(&[
        "restore",
        "--from",
        path(dir.path()),
        "--data-dir",
        path(&dir.path().join("r")),
    ]);
    assert!(
        !ok && out.contains("not a complete sealtrail backup"),
        "{out}"
    );
}
