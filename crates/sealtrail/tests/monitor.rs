//! `sealtrail monitor` against a live log (the real binary over HTTP): it verifies a
//! growing log round after round from its own state, and reports each case of the tamper
//! matrix precisely with exit 1: a record edited or deleted behind the server's back (in
//! its SQLite database, while it runs), a rewritten history under the same key (longer:
//! `fork`; shorter: `rollback`), and a checkpoint not signed by the key it trusts.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn monitor(url: &str, api_key: &str, log_key: &str, state: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["monitor", "--once", "--url", url, "--key", log_key])
        .arg("--state-dir")
        .arg(state)
        .env("SEALTRAIL_API_KEY", api_key)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Edits the body of record `seq` of tenant `acme` in the SQLite store (the server runs);
/// returns the original body.
fn edit_record(data: &Path, seq: u64) -> Vec<u8> {
    let db = rusqlite::Connection::open(data.join("sealtrail.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let body: Vec<u8> = db
        .query_row(
            "SELECT body FROM events WHERE tenant_id='acme' AND seq=?1",
            [seq],
            |r| r.get(0),
        )
        .unwrap();
    let edited = String::from_utf8(body.clone())
        .unwrap()
        .replace("\"success\"", "\"failure\"");
    assert_ne!(edited.as_bytes(), &body[..]);
    set_body(data, seq, edited.as_bytes());
    body
}

fn set_body(data: &Path, seq: u64, body: &[u8]) {
    let db = rusqlite::Connection::open(data.join("sealtrail.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE events SET body=?1 WHERE tenant_id='acme' AND seq=?2",
        rusqlite::params![body, seq],
    )
    .unwrap();
}

fn delete_record(data: &Path, seq: u64) {
    let db = rusqlite::Connection::open(data.join("sealtrail.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute(
        "DELETE FROM events WHERE tenant_id='acme' AND seq=?1",
        [seq],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_follows_a_growing_log_and_reports_every_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("log");
    let server = Server::start_with(&data, &["--store", "sqlite"]).await;
    let key = create_key(&data, "acme", "read,write");
    let api = Api::new(&server, &key);
    let vkey = log_verifier_key(&api).await;
    let url = server.base.clone();

    // A growing log, verified incrementally from the monitor's own state.
    let state = tmp.path().join("state");
    ingest_named(&api, "a", 5).await;
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("verified records 1..=5 of sealtrail.local/acme"),
        "{out}"
    );
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no new records"), "{out}");
    ingest_named(&api, "b", 7).await;
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified records 6..=12"), "{out}");

    // Each tampering is tried on a copy of the state, so the cases do not mask each other.
    let copy = |name: &str| {
        let to = tmp.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(state.join("monitor.json"), to.join("monitor.json")).unwrap();
        to
    };
    ingest_named(&api, "c", 4).await; // records 13..=16, not verified yet

    // 1. a record edited in the database: its hash no longer matches its content
    let original = edit_record(&data, 14);
    let (code, out) = monitor(&url, &key, &vkey, &copy("edited"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("INCONSISTENT [hash_mismatch] record 14"),
        "{out}"
    );
    set_body(&data, 14, &original);
    let (code, out) = monitor(&url, &key, &vkey, &copy("restored"));
    assert_eq!(code, 0, "the edit undone, the log verifies again: {out}");

    // 2. a record deleted from the database: a gap in the sequence
    delete_record(&data, 15);
    let (code, out) = monitor(&url, &key, &vkey, &copy("deleted"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("INCONSISTENT [sequence_gap] expected sequence_number 15, got record 16"),
        "{out}"
    );

    // 3. a rewritten history under the same key: a fresh log with the key file
    let forged_dir = tmp.path().join("forged");
    data_dir_with_key_of(&data, &forged_dir);
    let forged = Server::start(&forged_dir).await;
    let fkey = create_key(&forged_dir, "acme", "read,write");
    let fapi = Api::new(&forged, &fkey);
    assert_eq!(log_verifier_key(&fapi).await, vkey);
    // shorter than what was verified: a rollback
    ingest_named(&fapi, "x", 3).await;
    let (code, out) = monitor(&forged.base, &fkey, &vkey, &copy("shorter"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INCONSISTENT [rollback]"), "{out}");
    assert!(
        out.contains("size 3") && out.contains("12 records were verified"),
        "{out}"
    );
    // the same size with another root: a fork
    ingest_named(&fapi, "y", 9).await;
    let (code, out) = monitor(&forged.base, &fkey, &vkey, &copy("same-size"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("INCONSISTENT [fork]") && out.contains("size 12"),
        "{out}"
    );
    // longer: the consistency proof from the verified size fails
    ingest_named(&fapi, "z", 2).await;
    let (code, out) = monitor(&forged.base, &fkey, &vkey, &copy("longer"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("INCONSISTENT [fork] the checkpoint of size 14 is not consistent with the verified one of size 12"),
        "{out}"
    );

    // 4. a log signed by another key than the one the monitor trusts
    let other = tmp.path().join("other");
    let other_server = Server::start(&other).await;
    let okey = create_key(&other, "acme", "read,write");
    ingest_named(&Api::new(&other_server, &okey), "o", 1).await;
    let (code, out) = monitor(&other_server.base, &okey, &vkey, &tmp.path().join("fresh"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INCONSISTENT [bad_signature]"), "{out}");

    // No failed round advanced the state it was given.
    let kept: Value =
        serde_json::from_slice(&std::fs::read(state.join("monitor.json")).unwrap()).unwrap();
    assert_eq!(kept["size"], 12);

    // Bad usage exits 2.
    let (code, out) = monitor(&url, &key, "not-a-key", &tmp.path().join("x"));
    assert_eq!(code, 2, "{out}");
}

/// A running `sealtrail monitor --witness` (stdout and stderr to `log`).
fn spawn_monitor(
    url: &str,
    api_key: &str,
    log_key: &str,
    state: &Path,
    addr: &str,
    log: &Path,
) -> std::process::Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(BIN)
        .args([
            "monitor",
            "--interval",
            "3600",
            "--url",
            url,
            "--key",
            log_key,
        ])
        .args(["--witness", addr, "--state-dir"])
        .arg(state)
        .env("SEALTRAIL_API_KEY", api_key)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

async fn wait_listening(addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reqwest::get(format!("http://{addr}/healthz"))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor's witness never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `sealtrail monitor --witness` as a log's witness: records written after its first round
/// (it runs rounds only every hour, or when a checkpoint it is asked to cosign is beyond
/// what it verified) are cosigned only after it verified them; a record edited while it
/// was stopped is found by the round the next submission wakes, and that checkpoint is
/// never cosigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_as_a_witness_cosigns_only_what_it_verified() {
    use sealtrail_core::cosignature::{CosignatureVerifier, count_cosignatures};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("log");
    let state = tmp.path().join("state");
    let out = Command::new(BIN)
        .args(["witness", "init", "--name", "monitor.example", "--data-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let witness_key = CosignatureVerifier::parse(stdout.lines().last().unwrap()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let spec = format!("http://{addr}={witness_key}");
    let server = Server::start_with(&data, &["--store", "sqlite", "--witness", &spec]).await;
    let key = create_key(&data, "acme", "read,write");
    let api = Api::new(&server, &key);
    let vkey = log_verifier_key(&api).await;
    let log = tmp.path().join("monitor.log");

    let mut monitor = spawn_monitor(&server.base, &key, &vkey, &state, &addr, &log);
    wait_listening(&addr).await;
    ingest_named(&api, "a", 5).await;
    let (s, note) = api.get_text("/v1/checkpoint?fresh=true&witnesses=1").await;
    assert_eq!(s, 200, "{note}\n{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(note.lines().nth(1), Some("5"), "{note}");
    assert_eq!(
        count_cosignatures(&note, std::slice::from_ref(&witness_key)),
        1,
        "{note}"
    );
    let verified: Value =
        serde_json::from_slice(&std::fs::read(state.join("monitor.json")).unwrap()).unwrap();
    assert_eq!(
        verified["size"], 5,
        "cosigned before it verified: {verified}"
    );
    let monitor_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        monitor_log.contains("verified records 1..=5"),
        "{monitor_log}"
    );
    Command::new("kill")
        .args(["-TERM", &monitor.id().to_string()])
        .status()
        .unwrap();
    assert!(monitor.wait().unwrap().success());

    // records 6..=10, record 8 edited, all while the monitor is down
    ingest_named(&api, "b", 5).await;
    edit_record(&data, 8);
    let mut monitor = spawn_monitor(&server.base, &key, &vkey, &state, &addr, &log);
    let (s, body) = api.get("/v1/checkpoint?fresh=true&witnesses=1").await;
    assert_eq!(s, 503, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let code = loop {
        if let Some(status) = monitor.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let monitor_log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(1), "{monitor_log}");
    assert!(
        monitor_log.contains("INCONSISTENT [hash_mismatch] record 8"),
        "{monitor_log}"
    );
    let (_, note) = api.get_text("/v1/checkpoint?fresh=true").await;
    assert_eq!(note.lines().nth(1), Some("10"), "{note}");
    assert_eq!(
        count_cosignatures(&note, std::slice::from_ref(&witness_key)),
        0,
        "{note}"
    );
}

/// Redacted records (issue 15) verify by their links: the monitor accepts real
/// redactions (of a record it verified in an earlier round, and of one it verifies in the
/// same round as the redaction) and reports a record marked redacted by an event that is
/// not its redaction. (A redaction event past the verified checkpoint is kept in the
/// monitor's state and checked when a later round reaches it.)
/// A SQLite server (its pruner running every second) with tenant acme's read-write and
/// admin keys, and a state directory for the monitor.
struct Fixture {
    tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    server: Server,
    key: String,
    api: Api,
    admin: Api,
    vkey: String,
    url: String,
    state: std::path::PathBuf,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("log");
    let server = Server::start_with_env(
        &data,
        &["--store", "sqlite"],
        &[("SEALTRAIL_RETENTION_INTERVAL", "1000ms")],
    )
    .await;
    let key = create_key(&data, "acme", "read,write");
    let api = Api::new(&server, &key);
    let admin = Api::new(&server, &create_key(&data, "acme", "admin"));
    let vkey = log_verifier_key(&api).await;
    let url = server.base.clone();
    let state = tmp.path().join("state");
    Fixture {
        tmp,
        data,
        server,
        key,
        api,
        admin,
        vkey,
        url,
        state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_accepts_real_redactions_and_reports_forged_ones() {
    let Fixture {
        tmp,
        data,
        server: _server,
        key,
        api,
        admin,
        vkey,
        url,
        state,
    } = fixture().await;
    let redact = |id: String| {
        let admin = &admin;
        async move {
            let (s, v) = admin
                .post(
                    &format!("/v1/events/{id}/redact"),
                    &serde_json::json!({"reason": "test"}),
                )
                .await;
            assert_eq!(s, 200, "{v}");
        }
    };
    let events = |api: &Api| {
        let api = Api {
            http: api.http.clone(),
            base: api.base.clone(),
            key: api.key.clone(),
        };
        async move { api.all_events().await }
    };

    ingest_named(&api, "a", 5).await;
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "{out}");
    // record 3 (verified before) and record 7 (not yet) are redacted by 8 and 9
    ingest_named(&api, "b", 2).await;
    let all = events(&api).await;
    redact(all[2]["id"].as_str().unwrap().to_string()).await;
    redact(all[6]["id"].as_str().unwrap().to_string()).await;
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified records 6..=9"), "{out}");

    // A record marked redacted, in the database, by a record that is no redaction of it.
    ingest_named(&api, "c", 3).await; // 10..=12
    let record = |seq: u64| {
        let db = rusqlite::Connection::open(data.join("sealtrail.db")).unwrap();
        db.query_row(
            "SELECT body FROM events WHERE tenant_id='acme' AND seq=?1",
            [seq],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .unwrap()
    };
    let mut forged: Value = serde_json::from_slice(&record(10)).unwrap();
    let id = forged["id"].clone();
    let marked = serde_json::json!({
        "id": id, "prev_hash": forged["prev_hash"].take(),
        "redacted": {"event_id": "x", "sequence_number": 12},
        "sequence_number": 10, "tenant_id": "acme",
    });
    let original = record(10);
    set_body(&data, 10, &serde_json::to_vec(&marked).unwrap());
    let copy = tmp.path().join("forged");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(state.join("monitor.json"), copy.join("monitor.json")).unwrap();
    let (code, out) = monitor(&url, &key, &vkey, &copy);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[redaction_unconfirmed]"), "{out}");
    set_body(&data, 10, &original);
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "the forgery undone, the log verifies again: {out}");

    // A record passed off as redacted by the same genuine redaction event as another: 14
    // is really redacted by 15, and 13 is marked redacted by 15 too.
    ingest_named(&api, "d", 2).await; // 13..=14
    let all = events(&api).await;
    redact(all[13]["id"].as_str().unwrap().to_string()).await; // 15
    let genuine: Value = serde_json::from_slice(&record(14)).unwrap();
    assert_eq!(genuine["redacted"]["sequence_number"], 15, "{genuine}");
    let mut whole: Value = serde_json::from_slice(&record(13)).unwrap();
    let marked = serde_json::json!({
        "id": whole["id"].take(), "prev_hash": whole["prev_hash"].take(),
        "redacted": genuine["redacted"].clone(),
        "sequence_number": 13, "tenant_id": "acme",
    });
    let original = record(13);
    set_body(&data, 13, &serde_json::to_vec(&marked).unwrap());
    let copy = tmp.path().join("forged2");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(state.join("monitor.json"), copy.join("monitor.json")).unwrap();
    let (code, out) = monitor(&url, &key, &vkey, &copy);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[redaction_unconfirmed]") && out.contains("already names"),
        "{out}"
    );
    set_body(&data, 13, &original);
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "the forgery undone, the log verifies again: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_goes_on_past_records_retention_removed_and_reports_a_silent_removal() {
    let Fixture {
        tmp: _tmp,
        data,
        server: _server,
        key,
        api,
        admin,
        vkey,
        url,
        state,
    } = fixture().await;
    ingest_named(&api, "a", 300).await;
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "{out}");

    // Records 301..=400 arrive, and retention removes 1..=350 before the monitor reads
    // them (the prune event is 401): it goes on from 351 on the log's hash tiles (leaves
    // 300..=349 straddle the first two tiles' edge), and the prune event confirms it.
    ingest_named(&api, "b", 100).await;
    let (s, v) = admin
        .put("/v1/retention", &serde_json::json!({"events": 50}))
        .await;
    assert_eq!(s, 200, "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while admin.get("/v1/retention").await.1["retained_from"] != 351 {
        assert!(std::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("records 301..=350 were removed by retention")
            && out.contains("verified records 301..=401"),
        "{out}"
    );
    let (s, _) = admin.put("/v1/retention", &serde_json::json!({})).await;
    assert_eq!(s, 200);

    // Records deleted behind the server's back, with no prune event: the monitor goes on
    // past them (the tree still adds up), then, in the round it runs right after (the
    // prune event would be in that round's checkpoint), reports the boundary nobody
    // recorded.
    ingest_named(&api, "c", 20).await; // 402..=421
    for seq in 402..=410 {
        delete_record(&data, seq);
    }
    let (code, out) = monitor(&url, &key, &vkey, &state);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("records 402..=410 were removed")
            && out.contains("INCONSISTENT [boundary_unconfirmed]"),
        "{out}"
    );
}
