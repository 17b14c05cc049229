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

/// A checkpoint served before a crash still holds after it: while sync batches commit,
/// fresh checkpoints are polled and the server is SIGKILLed, several times; afterwards
/// every checkpoint ever served is the root of a prefix of the log, and the server proves
/// it consistent with its current checkpoint. (A checkpoint signed over records a crash
/// then erased would be equivocation by the log itself.)
async fn checkpoints_served_before_a_crash_hold_after_it(store: &str) {
    const CYCLES: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let mut notes: Vec<String> = Vec::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for cycle in 0..CYCLES {
        let mut server = Server::start_with(&data, &["--store", store]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..2 {
            let (http, key, base, stop) =
                (http.clone(), key.clone(), server.base.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let events: Vec<Value> = (0..20)
                        .map(|k| event(&format!("c{cycle}-w{w}-{n}-{k}")))
                        .collect();
                    // The server dies mid-request at some point: errors are expected.
                    let _ = http
                        .post(format!("{base}/v1/events/batch?sync=true"))
                        .bearer_auth(&key)
                        .json(&json!({ "events": events }))
                        .send()
                        .await;
                }
            }));
        }
        let poller = {
            let (http, key, base, stop) =
                (http.clone(), key.clone(), server.base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut served = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = http
                        .get(format!("{base}/v1/checkpoint?fresh=true"))
                        .bearer_auth(&key)
                        .send()
                        .await
                        && r.status() == 200
                        && let Ok(text) = r.text().await
                    {
                        served.push(text);
                    }
                }
                served
            })
        };
        tokio::time::sleep(Duration::from_millis(700 + 300 * cycle as u64)).await;
        server.sigkill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        notes.extend(poller.await.unwrap());
    }
    assert!(
        notes.len() >= CYCLES,
        "too few checkpoints served ({})",
        notes.len()
    );

    let server = Server::start_with(&data, &["--store", store]).await;
    let api = Api::new(&server, &key);
    let (_, log_key) = api.get("/v1/log/key").await;
    let verifier = NoteVerifier::parse(log_key["verifier_key"].as_str().unwrap()).unwrap();
    let origin = log_key["origin"].as_str();
    let events = assert_chain_ok(&api).await;
    let mut tree = MemoryTree::new();
    let mut roots = vec![tree.root()];
    for e in &events {
        tree.push(&record_leaf(e["hash"].as_str().unwrap()).unwrap());
        roots.push(tree.root());
    }
    let (_, latest) = api.get_text("/v1/checkpoint?fresh=true").await;
    let latest = Checkpoint::open(&latest, &verifier, origin).unwrap();
    assert_eq!(latest.size, events.len() as u64);
    let mut sizes = std::collections::BTreeSet::new();
    for note in &notes {
        let cp = Checkpoint::open(note, &verifier, origin).expect("signed by the log key");
        let root = roots.get(cp.size as usize).unwrap_or_else(|| {
            panic!(
                "a checkpoint of size {} was served, but after the crashes the log has {}",
                cp.size,
                events.len()
            )
        });
        assert_eq!(
            &cp.root, root,
            "the checkpoint of size {} contradicts the log",
            cp.size
        );
        if cp.size > 0 && sizes.insert(cp.size) {
            let (status, proof) = api
                .get(&format!(
                    "/v1/proof/consistency?from={}&to={}",
                    cp.size, latest.size
                ))
                .await;
            assert_eq!(status, 200, "{proof}");
            let hashes: Vec<[u8; 32]> = proof["hashes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(h.as_str().unwrap())
                        .unwrap()
                        .try_into()
                        .unwrap()
                })
                .collect();
            sealtrail_core::proof::verify_consistency(
                cp.size,
                latest.size,
                &hashes,
                &cp.root,
                &latest.root,
            )
            .unwrap_or_else(|e| panic!("size {} is not consistent with the log: {e:?}", cp.size));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_served_before_a_crash_hold_after_it_fjall() {
    checkpoints_served_before_a_crash_hold_after_it("fjall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_served_before_a_crash_hold_after_it_sqlite() {
    checkpoints_served_before_a_crash_hold_after_it("sqlite").await;
}
