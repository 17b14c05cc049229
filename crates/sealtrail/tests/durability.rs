//! Durability end to end: nothing acknowledged is lost across SIGTERM, restart and SIGKILL
//! under concurrent load; chains stay gapless and verifiable; a restart continues them.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Runs `workers` concurrent clients (sync singles, async singles, sync batches, over
/// several tenants) until `stop` is set or the server goes away. Returns every event id
/// that was acknowledged with a 2xx, by tenant.
async fn load(
    base: String,
    keys: Vec<(String, String)>,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    run: u32,
) -> HashMap<String, Vec<String>> {
    let acked: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (tenant, key) = keys[w % keys.len()].clone();
        let (base, stop, acked) = (base.clone(), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let ids: Vec<String> = match w % 3 {
                    2 => (0..5).map(|k| format!("r{run}-w{w}-n{n}-k{k}")).collect(),
                    _ => vec![format!("r{run}-w{w}-n{n}")],
                };
                let request = match w % 3 {
                    0 => http
                        .post(format!("{base}/v1/events?sync=true"))
                        .json(&event(&ids[0])),
                    1 => http.post(format!("{base}/v1/events")).json(&event(&ids[0])),
                    _ => http
                        .post(format!("{base}/v1/events/batch?sync=true"))
                        .json(&json!({"events": ids.iter().map(|i| event(i)).collect::<Vec<_>>()})),
                };
                match request.bearer_auth(&key).send().await {
                    Ok(r) if r.status().is_success() => {
                        acked
                            .lock()
                            .unwrap()
                            .entry(tenant.clone())
                            .or_default()
                            .extend(ids);
                    }
                    Ok(r) => panic!(
                        "unexpected status {} under load: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(_) => return, // the server was killed
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

fn tenants(data: &std::path::Path, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("tenant-{i}"),
                create_key(data, &format!("tenant-{i}"), "read,write"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_concurrent_load_loses_no_acknowledged_event_fjall() {
    sigkill_under_load("fjall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_concurrent_load_loses_no_acknowledged_event_sqlite() {
    sigkill_under_load("sqlite").await;
}

async fn sigkill_under_load(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = tenants(&data, 3);
    let mut all_acked: HashMap<String, Vec<String>> = HashMap::new();
    let store = ["--store", engine];
    for run in 0..3 {
        let mut server = Server::start_with(&data, &store).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load_task = tokio::spawn(load(
            server.base.clone(),
            keys.clone(),
            24,
            stop.clone(),
            run,
        ));
        // Kill at a different moment each run, while requests are in flight.
        tokio::time::sleep(Duration::from_millis(700 + 300 * run as u64)).await;
        server.sigkill();
        let acked = load_task.await.unwrap();
        let count: usize = acked.values().map(Vec::len).sum();
        assert!(
            count > 50,
            "run {run}: the load made too little progress ({count} acknowledged)"
        );
        for (t, ids) in acked {
            all_acked.entry(t).or_default().extend(ids);
        }
        // Restart on the same data: everything acknowledged so far is there exactly once.
        let server = Server::start_with(&data, &store).await;
        assert_all_present_once(&server, &keys, &all_acked).await;
        drop(server);
    }
    // After the last restart the chains continue.
    let server = Server::start_with(&data, &store).await;
    let api = Api::new(&server, &keys[0].1);
    let before = api.all_events().await.len();
    let (status, rec) = api
        .post("/v1/events?sync=true", &event("after-crashes"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(rec["sequence_number"].as_u64(), Some(before as u64 + 1));
    assert_chain_ok(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = tenants(&data, 2);
    let mut server = Server::start(&data).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load_task = tokio::spawn(load(server.base.clone(), keys.clone(), 16, stop.clone(), 0));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = Instant::now();
    assert!(server.sigterm_and_wait(), "graceful exit: {}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(server.log().contains("stopped cleanly"), "{}", server.log());
    let acked = load_task.await.unwrap();
    let server = Server::start(&data).await;
    assert!(assert_all_present_once(&server, &keys, &acked).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_records_receipts_and_continues_chains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let mut server = Server::start(&data).await;
    let api = Api::new(&server, &key);
    let (_, receipt) = api.post("/v1/events", &event("a1")).await;
    let (_, rec2) = api.post("/v1/events?sync=true", &event("a2")).await;
    assert!(server.sigterm_and_wait());

    let server = Server::start(&data).await;
    let api = Api::new(&server, &key);
    let (status, polled) = api
        .get(&format!(
            "/v1/receipts/{}",
            receipt["receipt_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (status, polled["status"].clone()),
        (200, json!("committed"))
    );
    let (_, again) = api.post("/v1/events?sync=true", &event("a2")).await;
    assert_eq!(again, rec2, "idempotency survives a restart");
    let (_, rec3) = api.post("/v1/events?sync=true", &event("a3")).await;
    assert_eq!(rec3["sequence_number"], json!(3));
    assert_eq!(rec3["prev_hash"], rec2["hash"]);
    assert_eq!(assert_chain_ok(&api).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_detects_tampering_in_the_sqlite_store() {
    tamper_test("sqlite", |data| {
        // Whoever controls the database edits record 3 and deletes record 5.
        let db = rusqlite::Connection::open(data.join("sealtrail.db")).unwrap();
        let body: Vec<u8> = db
            .query_row(
                "SELECT body FROM events WHERE tenant_id='acme' AND seq=3",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let edited = String::from_utf8(body)
            .unwrap()
            .replace("\"success\"", "\"failure\"");
        db.execute(
            "UPDATE events SET body=?1 WHERE tenant_id='acme' AND seq=3",
            [edited.as_bytes()],
        )
        .unwrap();
        db.execute("DELETE FROM events WHERE tenant_id='acme' AND seq=5", [])
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_detects_tampering_in_the_fjall_store() {
    tamper_test("fjall", |data| {
        // The attacker rewrites record 3 in the log — and its frame's checksum, which
        // guards against torn writes, not against a deliberate edit — and removes record 5
        // from the index.
        for seg in std::fs::read_dir(data.join("log")).unwrap() {
            let seg = seg.unwrap().path();
            let mut bytes = std::fs::read(&seg).unwrap();
            let mut at = 0;
            while at + 12 <= bytes.len() {
                let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
                let payload = at + 12..at + 12 + len;
                let find =
                    |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
                if find(&bytes[payload.clone()], br#""id":"t3""#).is_some() {
                    let outcome = find(&bytes[payload.clone()], br#""success""#).unwrap();
                    let at_outcome = payload.start + outcome;
                    bytes[at_outcome..at_outcome + 9].copy_from_slice(br#""failure""#);
                    // The record entry's own checksum too: the first entry of the frame
                    // (after the format byte and the count), eight length-prefixed fields
                    // with the sequence number after the first.
                    let entry = payload.start + 5;
                    let mut end = entry;
                    for field in 0..8 {
                        let n = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
                        end += 4 + n as usize;
                        if field == 0 {
                            end += 8;
                        }
                    }
                    assert!(
                        entry < at_outcome && at_outcome < end,
                        "the edit is in the entry"
                    );
                    let crc = crc32fast::hash(&bytes[entry..end]);
                    bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
                    let crc = crc32fast::hash(&bytes[payload.clone()]);
                    bytes[payload.end..payload.end + 4].copy_from_slice(&crc.to_le_bytes());
                }
                at = payload.end + 4;
            }
            std::fs::write(&seg, bytes).unwrap();
        }
        // Each sync call was its own frame, so record 5 is a run of its own: the attacker
        // deletes the run and the `records` entry it names.
        let db = fjall::Database::builder(data.join("index")).open().unwrap();
        let open = |name| {
            db.keyspace(name, fjall::KeyspaceCreateOptions::default)
                .unwrap()
        };
        let (runs, records) = (open("runs"), open("records"));
        let key = |seq: u64| [&[4u8][..], b"acme", &seq.to_be_bytes()].concat();
        let run = runs.get(key(5)).unwrap().expect("record 5 starts a run");
        assert_eq!(&run[12..], &1u32.to_be_bytes(), "a run of one record");
        let record_key = &run[..12];
        assert!(
            records.get(record_key).unwrap().is_some(),
            "record 5 is indexed"
        );
        records.remove(record_key).unwrap();
        runs.remove(key(5)).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    })
    .await;
}

async fn tamper_test(engine: &str, tamper: impl FnOnce(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let store = ["--store", engine];
    let mut server = Server::start_with(&data, &store).await;
    let api = Api::new(&server, &key);
    for i in 1..=6 {
        let (status, _) = api
            .post("/v1/events?sync=true", &event(&format!("t{i}")))
            .await;
        assert_eq!(status, 201);
    }
    assert!(server.sigterm_and_wait());

    tamper(&data);

    let server = Server::start_with(&data, &store).await;
    let api = Api::new(&server, &key);
    let (_, first) = api.get("/v1/verify").await;
    assert_eq!(first["valid"], json!(false), "{first}");
    assert_eq!(first["first_broken_event_id"], json!("t3"));
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with("hash_mismatch"),
        "{first}"
    );
    let (_, all) = api.get("/v1/verify?scan_all=true").await;
    assert_eq!(all["broken_count"], json!(2), "{all}");
    assert_eq!(all["all_broken_events"][1]["event_id"], json!("t6"));
    assert!(
        all["all_broken_events"][1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("sequence_gap"),
        "{all}"
    );
    let (_, one) = api.get("/v1/events/t3/verify").await;
    assert_eq!(one["valid"], json!(false));
    assert_ne!(one["stored_hash"], one["computed_hash"]);
    let (_, fine) = api.get("/v1/events/t2/verify").await;
    assert_eq!(fine["valid"], json!(true));
}

/// `GET /v1/verify` resumes where the server last found the chain valid: a repeated call
/// checks only new records, yet a rewrite of the record it resumes at, or a chain cut
/// short behind it, is still caught; `full=true` re-walks everything and finds an older
/// rewrite the resumed walk (by design) does not re-hash. SQLite lets the test rewrite
/// records while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_resumes_where_it_left_off_and_still_catches_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let server = Server::start_with(&data, &["--store", "sqlite"]).await;
    let api = Api::new(&server, &key);
    let post = |i: u32| {
        let api = &api;
        async move {
            let (status, _) = api
                .post("/v1/events?sync=true", &event(&format!("v{i}")))
                .await;
            assert_eq!(status, 201);
        }
    };
    let verify = |query: &'static str| {
        let api = &api;
        async move {
            let (status, body) = api.get(&format!("/v1/verify{query}")).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    for i in 1..=6 {
        post(i).await;
    }
    let first = verify("").await;
    assert_eq!(
        (
            &first["valid"],
            &first["events_checked"],
            &first["newly_checked"]
        ),
        (&json!(true), &json!(6), &json!(6)),
        "{first}"
    );
    assert!(first.get("resumed_from").is_none(), "{first}");
    for i in 7..=9 {
        post(i).await;
    }
    let second = verify("").await;
    assert_eq!(
        (
            &second["valid"],
            &second["events_checked"],
            &second["newly_checked"],
            &second["resumed_from"]
        ),
        (&json!(true), &json!(9), &json!(3), &json!(6)),
        "{second}"
    );
    let again = verify("").await;
    assert_eq!(
        (
            &again["events_checked"],
            &again["newly_checked"],
            &again["resumed_from"]
        ),
        (&json!(9), &json!(0), &json!(9)),
        "{again}"
    );
    assert_eq!(again["root_hash"], second["root_hash"]);

    let db = rusqlite::Connection::open(data.join("sealtrail.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let rewrite = |seq: u32| {
        let body: Vec<u8> = db
            .query_row(
                &format!("SELECT body FROM events WHERE tenant_id='acme' AND seq={seq}"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        let edited = String::from_utf8(body)
            .unwrap()
            .replace("\"success\"", "\"failure\"");
        db.execute(
            &format!("UPDATE events SET body=?1 WHERE tenant_id='acme' AND seq={seq}"),
            [edited.as_bytes()],
        )
        .unwrap();
    };
    // An old record rewritten: only a full walk re-hashes it.
    rewrite(2);
    let resumed = verify("").await;
    assert_eq!(resumed["valid"], json!(true), "{resumed}");
    let full = verify("?full=true").await;
    assert_eq!(
        (
            &full["valid"],
            &full["first_broken_event_id"],
            &full["newly_checked"]
        ),
        (&json!(false), &json!("v2"), &json!(2)),
        "{full}"
    );
    assert!(full.get("resumed_from").is_none(), "{full}");
    assert!(
        full["reason"]
            .as_str()
            .unwrap()
            .starts_with("hash_mismatch"),
        "{full}"
    );
    // The record the walk resumes at rewritten.
    rewrite(9);
    let anchor = verify("").await;
    assert_eq!(
        (
            &anchor["valid"],
            &anchor["first_broken_event_id"],
            &anchor["resumed_from"]
        ),
        (&json!(false), &json!("v9"), &json!(9)),
        "{anchor}"
    );
    assert!(
        anchor["reason"]
            .as_str()
            .unwrap()
            .starts_with("changed_since_verified"),
        "{anchor}"
    );
    // The chain cut short behind the position found valid.
    db.execute("DELETE FROM events WHERE tenant_id='acme' AND seq>=8", [])
        .unwrap();
    let cut = verify("?scan_all=true").await;
    assert_eq!(
        (&cut["valid"], &cut["broken_count"]),
        (&json!(false), &json!(1)),
        "{cut}"
    );
    assert!(
        cut["reason"]
            .as_str()
            .unwrap()
            .starts_with("chain_truncated"),
        "{cut}"
    );
    assert!(cut.get("first_broken_event_id").is_none(), "{cut}");
    let (status, bad) = api.get("/v1/verify?full=maybe").await;
    assert_eq!(
        (status, &bad["error"]["code"]),
        (400, &json!("invalid_query")),
        "{bad}"
    );
}

/// Someone deletes the newest record of a tenant while the server runs (SQLite allows a
/// second writer). The chainer's next append would leave a gap; the store refuses it as a
/// fork, and the server must stop and say so rather than keep a stalled partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_chainer_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let mut server = Server::start_with(&data, &["--store", "sqlite"]).await;
    let api = Api::new(&server, &key);
    for i in 1..=3 {
        assert_eq!(
            api.post("/v1/events?sync=true", &event(&format!("f{i}")))
                .await
                .0,
            201
        );
    }
    let db = rusqlite::Connection::open(data.join("sealtrail.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute("DELETE FROM events WHERE tenant_id='acme' AND seq=3", [])
        .unwrap();
    drop(db);

    let (status, body) = api.post("/v1/events?sync=true", &event("f4")).await;
    assert_eq!(status, 503, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server kept running: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!exit.success());
    let log = server.log();
    assert!(log.contains("fatal") && log.contains("partition"), "{log}");
}

/// A record that cannot be read (corrupted behind the server's back) is skipped by a live
/// stream, which carries on with the records after it instead of ending or erroring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_moves_past_an_unreadable_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let server = Server::start_with(&data, &["--store", "sqlite"]).await;
    let api = Api::new(&server, &key);
    for i in 1..=3 {
        assert_eq!(
            api.post("/v1/events?sync=true", &event(&format!("s{i}")))
                .await
                .0,
            201
        );
    }
    let db = rusqlite::Connection::open(data.join("sealtrail.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE events SET body=X'6e6f74206a736f6e' WHERE tenant_id='acme' AND seq=2",
        [],
    )
    .unwrap();
    drop(db);

    let resp = api
        .http
        .get(api.base.clone() + "/v1/events/stream")
        .bearer_auth(&api.key)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("id: 3\n") {
                break;
            }
        }
        text
    })
    .await
    .expect("record 3 arrives after the unreadable record 2");
    assert!(
        text.contains("id: 1\n") && !text.contains("id: 2\n"),
        "{text}"
    );
}
