//! Readers see whole commits only (issue 9): while sync batches commit, readers polling
//! fresh checkpoints and proofs never get a 5xx, and every checkpoint served is a prefix
//! of the log as it stands afterwards. On fjall a reader used to see a chain head before
//! the tree nodes written with it (21% of fresh checkpoints were 500s under batch load).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::merkle::{MemoryTree, record_leaf};
use sealtrail_core::note::NoteVerifier;
use serde_json::{Value, json};

const WRITERS: usize = 3;
const READERS: usize = 3;

async fn readers_see_whole_commits_only(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let server = Server::start_with(&data, &["--store", store]).await;
    let api = Arc::new(Api::new(&server, &key));
    let stop = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (api, stop) = (api.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let events: Vec<Value> = (0..50).map(|k| event(&format!("w{w}-{n}-{k}"))).collect();
                let (s, v) = api
                    .post("/v1/events/batch?sync=true", &json!({ "events": events }))
                    .await;
                assert_eq!(s, 200, "{v}");
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (api, stop) = (api.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let (mut checks, mut failures, mut notes) = (0, Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let path = match (checks + r) % 3 {
                    0 => "/v1/checkpoint?fresh=true",
                    1 => "/v1/proof/consistency?from=1",
                    _ => "/v1/proof/inclusion?sequence_number=1",
                };
                let (status, body) = api.get_text(path).await;
                checks += 1;
                match status {
                    200 if path.starts_with("/v1/checkpoint") => notes.push(body),
                    200 => {}
                    // An empty log has no proofs yet: fine before the first commit.
                    400 | 404 if body.contains("tree") || body.contains("size") => {}
                    _ => failures.push(format!("{path} → {status}: {body}")),
                }
            }
            (checks, failures, notes)
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let (mut checks, mut failures, mut notes) = (0, Vec::new(), Vec::new());
    for r in readers {
        let (c, f, n) = r.await.unwrap();
        checks += c;
        failures.extend(f);
        notes.extend(n);
    }
    assert!(
        failures.is_empty(),
        "{} of {checks} reads failed while batches committed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(checks >= 30, "the readers made too few reads ({checks})");
    assert!(!notes.is_empty(), "no checkpoint was served");

    // Every served checkpoint commits to a prefix of the log as it is now.
    let (_, log_key) = api.get("/v1/log/key").await;
    let verifier = NoteVerifier::parse(log_key["verifier_key"].as_str().unwrap()).unwrap();
    let checkpoints: Vec<Checkpoint> = notes
        .iter()
        .map(|n| Checkpoint::open(n, &verifier, log_key["origin"].as_str()).unwrap())
        .collect();
    let events = assert_chain_ok(&api).await;
    let mut tree = MemoryTree::new();
    let mut roots = vec![tree.root()];
    for e in &events {
        tree.push(&record_leaf(e["hash"].as_str().unwrap()).unwrap());
        roots.push(tree.root());
    }
    for cp in checkpoints {
        let root = roots.get(cp.size as usize).unwrap_or_else(|| {
            panic!(
                "a checkpoint of size {} exceeds the log ({})",
                cp.size,
                events.len()
            )
        });
        assert_eq!(
            &cp.root, root,
            "the checkpoint of size {} contradicts the log",
            cp.size
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_whole_commits_only_fjall() {
    readers_see_whole_commits_only("fjall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_whole_commits_only_sqlite() {
    readers_see_whole_commits_only("sqlite").await;
}
