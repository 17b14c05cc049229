//! The fjall engine keeps its records in a segment log and derives every index from it
//! (issue 11). These tests run the real server on such a directory:
//! - every acknowledged write is readable at once (by id, in a filtered list with its
//!   total, by receipt, with an inclusion proof) while the indexer lags far behind;
//! - a torn frame at the end of the log (a crash mid-write) is cut off at start, and every
//!   earlier record kept;
//! - a flipped byte inside the log refuses the start, naming the segment and the offset;
//! - indexes that went through SIGKILLs at random points, with the indexer lagging, are
//!   exactly the indexes a full rebuild from the log makes;
//! - an index directory of an older layout is rebuilt from the log at start.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The indexer sleeps this long before each batch: it lags the log by up to the tail's
/// limit, so reads must find acknowledged records in the unindexed tail.
const LAGGING: (&str, &str) = ("SEALTRAIL_TEST_INDEXER_PAUSE_MS", "300");

fn event_by(id: &str, actor: &str) -> Value {
    let mut e = event(id);
    e["actor"]["id"] = json!(actor);
    e
}

/// The segment files of a data directory, in log order.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// (offset, payload length) of each frame of a segment (up to the zero-filled space the
/// last segment may end in: `embedded.log_preallocation`).
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() && bytes[at..at + 4] == 0x5345_414Cu32.to_le_bytes() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 12 + len + 4;
    }
    out
}

async fn fill(data: &Path, key: &str, n: usize) {
    let mut server = Server::start(data).await;
    let api = Api::new(&server, key);
    for i in 0..n {
        let (s, v) = api
            .post("/v1/events?sync=true", &event(&format!("e{i}")))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    assert!(server.sigterm_and_wait());
}

/// A data directory (in `dir`) whose tenant `acme` (key returned) holds ten events, e0..e9,
/// each its own frame; no server running.
async fn acme_with_ten_events() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    fill(&data, &key, 10).await;
    (dir, data, key)
}

async fn metric(api: &Api, name: &str) -> f64 {
    let (_, text) = api.get_text("/metrics").await;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_is_readable_at_once_while_the_indexer_lags() {
    const WRITERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let server = Server::start_with_env(&data, &[], &[LAGGING]).await;
    let api = Arc::new(Api::new(&server, &key));
    let stop = Arc::new(AtomicBool::new(false));
    let peak_unindexed = Arc::new(AtomicU64::new(0));

    let sampler = {
        let (api, stop, peak) = (api.clone(), stop.clone(), peak_unindexed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let bytes = metric(&api, "sealtrail_store_unindexed_bytes").await as u64;
                peak.fetch_max(bytes, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (api, stop) = (api.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let actor = format!("actor-{w}");
            let (mut mine, mut checks, mut failures) = (0u64, 0u32, Vec::<String>::new());
            let mut fail = |what: String| failures.push(what);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match i % 3 {
                    0 => {
                        let id = format!("w{w}-{i}");
                        let (s, rec) = api
                            .post("/v1/events?sync=true", &event_by(&id, &actor))
                            .await;
                        assert_eq!(s, 201, "{rec}");
                        mine += 1;
                        let (s, got) = api.get(&format!("/v1/events/{id}")).await;
                        if s != 200 || got["hash"] != rec["hash"] {
                            fail(format!("GET {id} right after its 201: {s} {got}"));
                        }
                        let (s, page) = api
                            .get(&format!("/v1/events?actor_id={actor}&page_size=1"))
                            .await;
                        if s != 200 || page["total"] != json!(mine) {
                            fail(format!("list of {actor} after {mine} writes: {s} {page}"));
                        }
                        let seq = rec["sequence_number"].as_u64().unwrap();
                        let (s, proof) = api
                            .get(&format!("/v1/proof/inclusion?sequence_number={seq}"))
                            .await;
                        if s != 200 {
                            fail(format!(
                                "inclusion proof of {seq} right after its 201: {s} {proof}"
                            ));
                        }
                        checks += 3;
                    }
                    1 => {
                        let id = format!("w{w}-{i}");
                        let (s, receipt) = api.post("/v1/events", &event_by(&id, &actor)).await;
                        assert_eq!(s, 202, "{receipt}");
                        mine += 1;
                        let rid = receipt["receipt_id"].as_str().unwrap();
                        let (s, got) = api.get(&format!("/v1/receipts/{rid}")).await;
                        if s != 200 {
                            fail(format!("receipt {rid} right after its 202: {s} {got}"));
                        }
                        checks += 1;
                    }
                    _ => {
                        let ids: Vec<String> = (0..20).map(|k| format!("w{w}-{i}-{k}")).collect();
                        let events: Vec<Value> =
                            ids.iter().map(|id| event_by(id, &actor)).collect();
                        let (s, v) = api
                            .post("/v1/events/batch?sync=true", &json!({ "events": events }))
                            .await;
                        assert_eq!(s, 200, "{v}");
                        mine += 20;
                        for id in [&ids[0], &ids[19]] {
                            let (s, got) = api.get(&format!("/v1/events/{id}")).await;
                            if s != 200 {
                                fail(format!("GET {id} right after its batch: {s} {got}"));
                            }
                        }
                        checks += 2;
                    }
                }
            }
            (checks, failures)
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut checks, mut failures) = (0, Vec::new());
    for w in writers {
        let (c, f) = w.await.unwrap();
        checks += c;
        failures.extend(f);
    }
    sampler.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {checks} reads right after an acknowledgement missed it, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(checks > 100, "too few checks ({checks})");
    assert!(
        peak_unindexed.load(Ordering::Relaxed) > 0,
        "the indexer never lagged: the test did not exercise the unindexed tail"
    );
    let events = assert_chain_ok(&api).await;
    assert_tree_matches(&api, &events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_frame_at_the_end_of_the_log_is_cut_off_at_start() {
    let (_dir, data, key) = acme_with_ten_events().await;

    // A crash mid-write: a valid header announcing 4,096 bytes, and only 1,000 of them,
    // where the next frame goes (in the zero-filled space past the last frame, if any).
    let last = segments(&data).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let end = frames(&bytes)
        .last()
        .map_or(0, |&(at, len)| at + 12 + len + 4);
    let mut torn = Vec::new();
    torn.extend_from_slice(&0x5345_414Cu32.to_le_bytes());
    torn.extend_from_slice(&4096u32.to_le_bytes());
    let crc = crc32fast::hash(&torn);
    torn.extend_from_slice(&crc.to_le_bytes());
    torn.extend_from_slice(&[0xAB; 1000]);
    bytes.truncate(end);
    bytes.extend_from_slice(&torn);
    bytes.resize(
        bytes
            .len()
            .max(std::fs::metadata(&last).unwrap().len() as usize),
        0,
    );
    std::fs::write(&last, bytes).unwrap();

    let mut server = Server::start(&data).await;
    assert!(
        server
            .log()
            .contains("cut a torn frame off the end of the log")
            && server.log().contains(&format!("from byte {end} ")),
        "the cut is logged: {}",
        server.log()
    );
    // The torn bytes are gone (the zero-filling thread may have filled past the end again).
    let after = std::fs::read(&last).unwrap();
    assert!(after.len() < end + torn.len() || after[end..end + torn.len()] != torn[..]);
    let api = Api::new(&server, &key);
    assert_eq!(assert_chain_ok(&api).await.len(), 10);
    for i in 10..15 {
        let (s, v) = api
            .post("/v1/events?sync=true", &event(&format!("e{i}")))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    assert!(server.sigterm_and_wait());
    let server = Server::start(&data).await;
    let api = Api::new(&server, &key);
    let events = assert_chain_ok(&api).await;
    assert_eq!(events.len(), 15);
    assert_tree_matches(&api, &events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_inside_the_log_refuses_the_start_naming_segment_and_offset() {
    let (_dir, data, key) = acme_with_ten_events().await;

    let seg = segments(&data).pop().unwrap();
    let original = std::fs::read(&seg).unwrap();
    let all = frames(&original);
    assert!(all.len() >= 10, "one frame per sync commit: {}", all.len());
    let (third, len) = all[2];
    let mut flipped = original.clone();
    flipped[third + 12 + len / 2] ^= 0x01;
    std::fs::write(&seg, &flipped).unwrap();

    let err = refused_to_start(&data, &[]);
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(&format!("{name} at byte {third}")),
        "the error names the segment and the frame's offset ({name}, {third}): {err}"
    );
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        flipped,
        "a refused start changes nothing"
    );

    std::fs::write(&seg, &original).unwrap();
    let server = Server::start(&data).await;
    assert_eq!(assert_chain_ok(&Api::new(&server, &key)).await.len(), 10);
}

/// Every key and value of a keyspace, in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every key and value of the index directory's keyspaces. The `unordered` keyspace's
/// entries are counted with the `ids` (kind 1) and `receipts` (kind 2) entries they
/// belong to: which of the two keyspaces holds an entry depends on when memtables were
/// sealed (and a replay may have written it to both), what it says does not.
fn dump_indexes(data: &Path) -> BTreeMap<String, Entries> {
    let mut out = dump_keyspaces(data);
    let unordered = out.remove("unordered").unwrap();
    for (key, value) in unordered {
        let name = match key[0] {
            1 => "ids",
            2 => "receipts",
            other => panic!("an unordered entry of kind {other}"),
        };
        out.get_mut(name).unwrap().push((key[1..].to_vec(), value));
    }
    for name in ["ids", "receipts"] {
        let entries = out.get_mut(name).unwrap();
        entries.sort();
        entries.dedup();
    }
    out
}

fn dump_keyspaces(data: &Path) -> BTreeMap<String, Entries> {
    let db = fjall::Database::builder(data.join("index")).open().unwrap();
    let mut out = BTreeMap::new();
    for name in [
        "records",
        "runs",
        "ids",
        "facets",
        "receipts",
        "tree",
        "unordered",
    ] {
        let ks = db
            .keyspace(name, fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let entries = ks
            .iter()
            .map(|item| {
                let (k, v) = item.into_inner().unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        out.insert(name.to_string(), entries);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_that_lived_through_sigkills_equal_a_rebuild_from_the_log() {
    const CYCLES: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let mut acked: HashMap<String, Vec<String>> = HashMap::new();
    for cycle in 0..CYCLES {
        let mut server = Server::start_with_env(&data, &[], &[LAGGING]).await;
        let base = server.base.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3 {
            let (stop, base, key) = (stop.clone(), base.clone(), key.clone());
            // The server dies under these requests: a failed request is expected.
            let http = reqwest::Client::new();
            let post = move |path: &str, body: Value| {
                http.post(format!("{base}{path}"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
            };
            writers.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let ids: Vec<String> =
                        (0..10).map(|k| format!("c{cycle}-w{w}-{i}-{k}")).collect();
                    let events: Vec<Value> = ids
                        .iter()
                        .map(|id| event_by(id, &format!("actor-{}", i % 5)))
                        .collect();
                    let sent =
                        post("/v1/events/batch?sync=true", json!({ "events": events })).await;
                    if sent.is_ok_and(|r| r.status() == 200) {
                        ok.extend(ids);
                    }
                    // Async writes too: their receipts are indexed from the log as well.
                    let _ = post("/v1/events", event(&format!("c{cycle}-w{w}-{i}-a"))).await;
                }
                ok
            }));
        }
        // A different point of the indexer's work each cycle.
        tokio::time::sleep(Duration::from_millis(700 + 450 * cycle)).await;
        server.sigkill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            acked
                .entry("acme".into())
                .or_default()
                .extend(w.await.unwrap());
        }
    }
    let mut server = Server::start(&data).await;
    let stored =
        assert_all_present_once(&server, &[("acme".to_string(), key.clone())], &acked).await;
    assert!(stored > 100, "too few events stored ({stored})");
    assert!(server.sigterm_and_wait());

    let lived = dump_indexes(&data);
    std::fs::rename(data.join("index"), dir.path().join("index.old")).unwrap();
    // The rebuild keeps the index's facet key (a new index would get its own, and its
    // facet entries would differ by it): only the file that holds it is carried over.
    std::fs::create_dir(data.join("index")).unwrap();
    std::fs::copy(
        dir.path().join("index.old/sealtrail-memtables.json"),
        data.join("index/sealtrail-memtables.json"),
    )
    .unwrap();
    let mut server = Server::start(&data).await;
    assert!(server.sigterm_and_wait());
    let rebuilt = dump_indexes(&data);
    // 64 record pointers of 44 bytes to a `records` entry.
    let pointers: usize = lived["records"].iter().map(|(_, v)| v.len() / 44).sum();
    assert_eq!(pointers, stored);
    assert!(
        lived["records"].len() < stored / 2,
        "pointers share entries"
    );
    for (name, entries) in &lived {
        assert!(
            entries == &rebuilt[name],
            "the {name} index differs from a rebuild ({} vs {} entries)",
            entries.len(),
            rebuilt[name].len()
        );
    }
}

/// An index directory written with another layout is deleted and rebuilt from the log at
/// start: the log is the store. The previous layout (4: no `unordered` keyspace), an
/// older one (3: one `records` entry per record) and the first one (keyed every record by
/// tenant; it recorded no layout).
/// Records with server-made ids (UUIDv7, keyed by their timestamp) and client ids are
/// found by id afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_an_older_layout_is_rebuilt_from_the_log() {
    let (_dir, data, key) = acme_with_ten_events().await;
    let mut server = Server::start(&data).await;
    let api = Api::new(&server, &key);
    let mut made = Vec::new();
    for _ in 0..3 {
        let mut e = event("x");
        e.as_object_mut().unwrap().remove("id");
        let (s, v) = api.post("/v1/events?sync=true", &e).await;
        assert_eq!(s, 201, "{v}");
        made.push(v["id"].as_str().unwrap().to_string());
    }
    assert!(made[0].as_bytes()[14] == b'7', "a UUIDv7: {}", made[0]);
    assert!(server.sigterm_and_wait());

    let triggers = data.join("index/sealtrail-memtables.json");
    let text = std::fs::read_to_string(&triggers).unwrap();
    assert!(text.contains("\"layout\":5"), "{text}");
    // Layout 4 had six keyspaces (no `unordered`), so six seal triggers.
    let mut layout4: Value = serde_json::from_str(&text).unwrap();
    layout4["layout"] = json!(4);
    layout4["seal_triggers"].as_array_mut().unwrap().truncate(6);
    let older = [
        layout4.to_string(),
        text.replace("\"layout\":5", "\"layout\":3"),
        "[67108864,67108864,67108864,67108864,67108864]".to_string(),
    ];
    for older in older {
        std::fs::write(&triggers, &older).unwrap();
        let mut server = Server::start(&data).await;
        assert!(
            server
                .log()
                .contains("has an older layout; rebuilding it from the log"),
            "{older}: {}",
            server.log()
        );
        let api = Api::new(&server, &key);
        let events = assert_chain_ok(&api).await;
        assert_eq!(events.len(), 13);
        assert_tree_matches(&api, &events).await;
        for id in made.iter().map(String::as_str).chain(["e0", "e9"]) {
            let (s, got) = api.get(&format!("/v1/events/{id}")).await;
            assert_eq!(s, 200, "{id}: {got}");
            assert_eq!(got["id"], json!(id));
        }
        let text = std::fs::read_to_string(&triggers).unwrap();
        assert!(text.contains("\"layout\":5"), "rewritten: {text}");
        assert!(server.sigterm_and_wait());
    }
}

/// A chain read joins the entries of neighbouring frames into one log read; where they
/// lie on both sides of a segment's end, that read spans two segment files. With 1 MiB
/// segments a ~3 MB chain crosses several: the walk, every page and `verify` answer, from
/// the indexes and the log (after a restart, nothing is in the in-memory tail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_reads_run_across_segment_ends() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let small = [("SEALTRAIL_EMBEDDED_SEGMENT_SIZE", "1 MiB")];
    let mut server = Server::start_with_env(&data, &[], &small).await;
    let api = Api::new(&server, &key);
    for b in 0..40 {
        ingest_named(&api, &format!("b{b}"), 100).await;
    }
    assert!(server.sigterm_and_wait());
    assert!(segments(&data).len() >= 3, "the log rolled over segments");
    let server = Server::start_with_env(&data, &[], &small).await;
    let api = Api::new(&server, &key);
    let events = assert_chain_ok(&api).await;
    assert_eq!(events.len(), 4000);
    assert_tree_matches(&api, &events).await;
}

/// `embedded.log_page_cache` reaches the log: with 1 MiB segments and a 1 MiB window, the
/// first segments leave the page cache while the server writes on, the last one stays,
/// and records in dropped segments are read (from the disk) like any others, before and
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_a_window_behind_leave_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let env = [
        ("SEALTRAIL_EMBEDDED_SEGMENT_SIZE", "1 MiB"),
        ("SEALTRAIL_EMBEDDED_LOG_PAGE_CACHE", "1 MiB"),
    ];
    let mut server = Server::start_with_env(&data, &[], &env).await;
    let api = Api::new(&server, &key);
    for b in 0..40 {
        ingest_named(&api, &format!("b{b}"), 100).await;
    }
    let files = segments(&data);
    assert!(files.len() >= 3, "the log rolled over segments: {files:?}");
    // The first segment ends about 1 MiB in, the log 2 MiB or more later: it is cold.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cached_bytes(&files[0]) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} is still in the page cache",
            files[0].display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let last = files.last().unwrap();
    assert!(cached_bytes(last) > 0, "{} was dropped", last.display());
    let (s, v) = api.get("/v1/events/b0-0").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["sequence_number"], json!(1), "{v}");
    assert!(server.sigterm_and_wait());
    let server = Server::start_with_env(&data, &[], &env).await;
    let api = Api::new(&server, &key);
    let events = assert_chain_ok(&api).await;
    assert_eq!(events.len(), 4000);
}
