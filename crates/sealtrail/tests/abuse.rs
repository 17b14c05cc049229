//! The edge under abuse (issue 10), against the real binary.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// More concurrent evidence packs than the runtime has blocking threads (8), from clients
/// that do not read their bodies at first, while writes continue: nothing hangs. Each pack
/// used to hold a blocking thread while it waited for a store read that needed another,
/// so eight of them froze every store operation of every tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_evidence_packs_do_not_stall_the_store() {
    const PACKS: usize = 12;
    // ~16 KB of incompressible-ish metadata each: a pack of ~25 MB, far more than the
    // socket buffers and the body channel hold, so producers really wait for clients.
    const RECORDS: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let server = Server::start(&data).await;
    let api = Api::new(&server, &key);
    let noise = |seed: String| -> String {
        use sha2::Digest;
        let mut out = String::new();
        let mut h = sha2::Sha256::digest(seed.as_bytes());
        while out.len() < 16_000 {
            h = sha2::Sha256::digest(h);
            out.extend(h.iter().map(|b| format!("{b:02x}")));
        }
        out
    };
    for b in 0..RECORDS / 200 {
        let events: Vec<Value> = (0..200)
            .map(|k| {
                let mut e = event(&format!("seed-{b}-{k}"));
                e["metadata"] = json!({ "noise": noise(format!("{b}-{k}")) });
                e
            })
            .collect();
        let (status, body) = api
            .post("/v1/events/batch?sync=true", &json!({ "events": events }))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    let http = reqwest::Client::new();
    let mut responses = Vec::new();
    for _ in 0..PACKS {
        let response = http
            .get(server.url("/v1/export/evidence-pack"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        responses.push(response);
    }
    // The packs' producers are now all running (or waiting for their clients, who do not
    // read yet). Writes and reads of the store must go on.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for n in 0..20 {
        let started = Instant::now();
        let response = quick
            .post(server.url("/v1/events?sync=true"))
            .bearer_auth(&key)
            .json(&event(&format!("during-{n}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("write {n} while packs stream: {e}"));
        assert_eq!(response.status(), 201);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let (status, _) = api.get("/v1/events?page_size=10").await;
    assert_eq!(status, 200);

    // Every pack then completes, whole.
    let reads = responses.into_iter().map(|response| {
        tokio::time::timeout(Duration::from_secs(60), async move {
            response.bytes().await.expect("the pack streams to its end")
        })
    });
    for pack in futures::future::join_all(reads).await {
        let pack = pack.expect("a pack finished in time");
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pack.to_vec())).unwrap();
        let mut records = String::new();
        zip.by_name(sealtrail_core::pack::RECORDS)
            .unwrap()
            .read_to_string(&mut records)
            .unwrap();
        assert!(records.lines().count() >= RECORDS);
    }
}

/// A commit that is not confirmed in time has an unknown outcome. Its `504` names the ids
/// the server minted for events sent without one, so the client retries exactly those:
/// each event ends up stored once, never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_timeout_names_the_minted_ids_and_their_retry_stores_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    // 1 ms: nearly every sync commit outlives the wait.
    let cfg = dir.path().join("sealtrail.toml");
    std::fs::write(&cfg, "commit_timeout_ms = 1\n").unwrap();
    let server = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]).await;
    let api = Api::new(&server, &key);
    let without_id = |n: usize| {
        let mut e = event("unused");
        e.as_object_mut().unwrap().remove("id");
        // Large events, so a commit (chaining, hashing, fsync) outlives 1 ms for sure.
        e["metadata"] = json!({ "n": n, "padding": "p".repeat(3000) });
        e
    };
    const BATCH: usize = 200;
    let mut timed_out = Vec::new();
    for n in 0..5 {
        let events: Vec<Value> = (0..BATCH).map(|k| without_id(n * BATCH + k)).collect();
        let (status, body) = api
            .post("/v1/events/batch?sync=true", &json!({ "events": events }))
            .await;
        if status != 504 {
            continue;
        }
        let error = &body["error"];
        assert_eq!(error["code"], "commit_timeout", "{body}");
        assert!(error["message"].as_str().unwrap().contains("event_ids"));
        assert!(error["receipt_id"].is_string(), "{body}");
        let ids: Vec<String> = error["event_ids"]
            .as_array()
            .expect("a 504 names the event ids")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), BATCH);
        timed_out.push((n, ids));
    }
    assert!(!timed_out.is_empty(), "no commit outlived a 1 ms wait");
    // The client retries each timed-out batch with the ids it was told (the retry may time
    // out too: it is idempotent all the same); then every event is stored exactly once.
    for (n, ids) in &timed_out {
        let events: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| {
                let mut e = without_id(n * BATCH + k);
                e["id"] = json!(id);
                e
            })
            .collect();
        let (status, body) = api
            .post("/v1/events/batch", &json!({ "events": events }))
            .await;
        assert!(matches!(status, 200 | 202 | 504), "{status} {body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = assert_chain_ok(&api).await;
    assert_eq!(events.len(), 5 * BATCH, "each event stored once");
    let stored: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    for (_, ids) in &timed_out {
        for id in ids {
            assert!(stored.contains(id.as_str()), "{id} was not stored");
        }
    }
}
