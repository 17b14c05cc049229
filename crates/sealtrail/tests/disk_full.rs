//! A full disk (issue 9): the real server on a small tmpfs.
//!
//! 1. **Below the free-space floor** writes are refused with `507 insufficient_storage`
//!    (nothing half-written), `/healthz` says why, `/metrics` shows it, reads keep
//!    working; once space is freed, writes resume by themselves and the refused ids can
//!    be retried. SIGTERM then stops the server promptly.
//! 2. **Without a floor** the disk fills under the log: the frame that did not fit is cut
//!    off and writes are refused until space is freed, then resume without a restart — or,
//!    if fjall's flush met the full disk first and poisoned it, the server exits non-zero by
//!    itself (crash-only, for a supervisor to restart it) instead of hanging. Either way a
//!    restart has every acknowledged event, once, in a chain that verifies.
//!
//! Needs root (it mounts a tmpfs), as CI runs; it fails, never skips, without it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const MIB: u64 = 1024 * 1024;
const TENANT: &str = "disk-t";

struct TmpFs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl TmpFs {
    fn mount(size_mib: u64) -> TmpFs {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill it, which needs root (CI runs as root); \
             run it as root, e.g. `sudo -E cargo test -p sealtrail --test disk_full`"
        );
        TmpFs {
            path,
            _parent: parent,
        }
    }

    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }

    /// A file taking `bytes` (allocated, so the space is really gone). The server may
    /// be writing meanwhile: if the space is gone by the time of the call, it asks for a
    /// little less, a few times.
    fn fill(&self, bytes: u64) -> PathBuf {
        let path = self.path.join("filler");
        for attempt in 0..8u64 {
            let want = bytes.saturating_sub(attempt * 256 * 1024);
            let status = Command::new("fallocate")
                .args(["-l", &want.to_string()])
                .arg(&path)
                .status()
                .unwrap();
            if status.success() {
                return path;
            }
        }
        panic!("fallocate {bytes} bytes (free now: {})", self.free());
    }
}

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn config(dir: &Path, floor_mib: u64) -> PathBuf {
    let path = dir.join(format!("sealtrail-{floor_mib}.toml"));
    std::fs::write(
        &path,
        format!(
            "[embedded]\nmin_free_disk = \"{floor_mib} MiB\"\nfjall_write_buffer = \"1 MiB\"\nfjall_journal = \"64 MiB\"\n"
        ),
    )
    .unwrap();
    path
}

/// Posts one sync event with ~2 KB of metadata; returns the status and body.
async fn post(api: &Api, id: &str) -> (u16, serde_json::Value) {
    let mut e = event(id);
    e["metadata"] = json!({"padding": "p".repeat(2000)});
    api.post("/v1/events?sync=true", &e).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_then_resumes_or_exits_and_loses_nothing() {
    let fs = TmpFs::mount(160);
    let outside = tempfile::tempdir().unwrap();
    let data = fs.path.join("data");
    std::fs::create_dir(&data).unwrap();
    let key = create_key(&data, TENANT, "read,write");
    let mut acked: Vec<String> = Vec::new();

    // ---- 1. the floor ----
    let floor = 24;
    let log = outside.path().join("server-1.log");
    let cfg = config(outside.path(), floor);
    let mut server =
        Server::start_logging_to(&data, Some(&log), &["--config", cfg.to_str().unwrap()]).await;
    let api = Api::new(&server, &key);
    for n in 0..50 {
        let id = format!("before-{n}");
        assert_eq!(post(&api, &id).await.0, 201);
        acked.push(id);
    }
    // Leave 8 MiB under the floor.
    let filler = fs.fill(fs.free() - (floor - 8) * MIB);
    let mut refused = None;
    for n in 0..40 {
        let id = format!("full-{n}");
        match post(&api, &id).await {
            (201, _) => acked.push(id),
            (507, body) => {
                assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("embedded.min_free_disk"), "{message}");
                refused = Some(id);
                break;
            }
            other => panic!("below the floor a write gets 201 or 507, not {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("writes below the floor are refused with 507");
    let (status, ready) = api.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["problems"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["component"] == "disk")),
        "{ready}"
    );
    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["writes_refused"]
            .as_str()
            .is_some_and(|r| r.contains("below the floor")),
        "{health}"
    );
    let (_, metrics) = api.get_text("/metrics").await;
    assert!(
        metrics.contains("sealtrail_store_writes_blocked 1"),
        "metrics: {metrics}"
    );
    let (status, _) = api.get("/v1/events?page_size=5").await;
    assert_eq!(status, 200, "reads keep working");
    // A batch is refused whole.
    let (status, _) = api
        .post(
            "/v1/events/batch?sync=true",
            &json!({"events": [event("batch-a"), event("batch-b")]}),
        )
        .await;
    assert_eq!(status, 507);

    // Space comes back: writes resume by themselves, and the refused id goes in once.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match post(&api, &refused).await.0 {
            201 | 200 => break,
            507 | 503 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("after space is freed the retry gets {other}"),
        }
    }
    acked.push(refused);
    for n in 0..20 {
        let id = format!("after-{n}");
        assert_eq!(post(&api, &id).await.0, 201);
        acked.push(id);
    }
    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, ready) = api.get("/readyz").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &serde_json::json!("ready"))
    );
    let started = Instant::now();
    assert!(server.sigterm_and_wait(), "{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "SIGTERM took {:?}",
        started.elapsed()
    );

    // ---- 2. no floor: the log meets the full disk ----
    let log = outside.path().join("server-2.log");
    let cfg = config(outside.path(), 0);
    let mut server =
        Server::start_logging_to(&data, Some(&log), &["--config", cfg.to_str().unwrap()]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let filler = fs.fill(fs.free());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refusing_since: Option<Instant> = None;
    // Batches until writes have been refused for 3 s on end (the log cannot append), or
    // the server exits (fjall's flush met the full disk and poisoned it).
    let exited = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(!status.success(), "a poisoned store is a failure exit");
            let text = server.log();
            assert!(text.contains("restart"), "the exit says what to do: {text}");
            break true;
        }
        if refusing_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "with a full disk the server kept acknowledging writes: {}",
            server.log()
        );
        let id = format!("nofloor-{}", acked.len());
        let events: Vec<_> = (0..20)
            .map(|k| {
                let mut e = event(&format!("{id}-{k}"));
                e["metadata"] = json!({"padding": "p".repeat(2000)});
                e
            })
            .collect();
        // The server may exit at any moment: a refused connection is expected here.
        let sent = http
            .post(server.url("/v1/events/batch?sync=true"))
            .bearer_auth(&key)
            .json(&json!({ "events": events }))
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            acked.extend((0..20).map(|k| format!("{id}-{k}")));
            refusing_since = None;
        } else if refusing_since.is_none() {
            refusing_since = Some(Instant::now());
        }
    };
    std::fs::remove_file(&filler).unwrap();
    if !exited {
        // The log cut its partial frame off and stays usable: writes resume by themselves
        // once space is back, without a restart.
        let api = Api::new(&server, &key);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut n = 0;
        loop {
            let id = format!("resumed-{n}");
            match post(&api, &id).await.0 {
                201 => {
                    acked.push(id);
                    break;
                }
                _ if Instant::now() < deadline => {
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => panic!(
                    "after space is freed writes still get {other}: {}",
                    server.log()
                ),
            }
        }
        assert!(server.sigterm_and_wait(), "{}", server.log());
    }

    // Restart: everything acknowledged is there, once, in a whole chain.
    let log = outside.path().join("server-3.log");
    let cfg = config(outside.path(), floor);
    let server =
        Server::start_logging_to(&data, Some(&log), &["--config", cfg.to_str().unwrap()]).await;
    let acked = HashMap::from([(TENANT.to_string(), acked)]);
    let total =
        assert_all_present_once(&server, &[(TENANT.to_string(), key.clone())], &acked).await;
    assert!(total >= acked[TENANT].len());
}
