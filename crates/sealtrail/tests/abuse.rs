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
