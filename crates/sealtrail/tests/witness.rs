//! `sealtrail witness` (C2SP tlog-witness) against real processes: witnesses and an
//! embedded log over HTTP. The test plays the log's client side of the protocol with the
//! log's own checkpoints and consistency proofs; cosignatures are checked with the core's
//! cosignature verifier and by hand against the spec's message layout.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::cosignature::{CosignatureVerifier, count_cosignatures, split_note};
use sealtrail_core::merkle::{EMPTY_ROOT, Hash, record_leaf, root_of_leaf_hashes};
use sealtrail_core::note::NoteSigner;
use serde_json::Value;

struct Witness {
    child: Option<Child>,
    url: String,
    dir: std::path::PathBuf,
    vkey: CosignatureVerifier,
    logs: Vec<String>,
}

fn witness_init(dir: &Path, name: &str) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["witness", "init", "--name", name, "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

impl Witness {
    async fn start(dir: &Path, name: &str, logs: &[String]) -> Witness {
        let (ok, stdout, stderr) = witness_init(dir, name);
        assert!(ok, "witness init failed: {stderr}");
        let vkey = CosignatureVerifier::parse(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(vkey.name(), name);
        let mut w = Witness {
            child: None,
            url: String::new(),
            dir: dir.to_path_buf(),
            vkey,
            logs: logs.to_vec(),
        };
        w.spawn(&[]).await;
        w
    }

    async fn spawn(&mut self, env: &[(&str, &str)]) {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(BIN);
        cmd.args(["witness", "serve", "--addr", &addr, "--data-dir"])
            .arg(&self.dir);
        for log in &self.logs {
            cmd.args(["--log", log]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.url = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", self.url)).await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "witness did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `POST /add-checkpoint`: (status, content type, body).
    async fn add(&self, old: u64, proof: &[String], note: &str) -> (u16, String, String) {
        self.add_raw(submission(old, proof, note)).await
    }

    async fn add_raw(&self, body: String) -> (u16, String, String) {
        let r = reqwest::Client::new()
            .post(format!("{}/add-checkpoint", self.url))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ctype, r.text().await.unwrap())
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn submission(old: u64, proof: &[String], note: &str) -> String {
    let mut body = format!("old {old}\n");
    for h in proof {
        body.push_str(h);
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

/// The log's fresh checkpoint note and its parsed tree head.
async fn checkpoint(api: &Api) -> (String, Checkpoint) {
    let (s, note) = api.get_text("/v1/checkpoint?fresh=true").await;
    assert_eq!(s, 200, "{note}");
    let (text, _) = split_note(&note).unwrap();
    (note.clone(), Checkpoint::parse(text).unwrap())
}

async fn consistency(api: &Api, from: u64, to: u64) -> Vec<String> {
    let (s, v) = api
        .get(&format!("/v1/proof/consistency?from={from}&to={to}"))
        .await;
    assert_eq!(s, 200, "{v}");
    v["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

/// The witness's answer is one cosignature line by its key over the checkpoint's text.
fn assert_cosigned(w: &Witness, note: &str, answer: &(u16, String, String)) -> String {
    assert_eq!(answer.0, 200, "{answer:?}");
    let line = &answer.2;
    assert!(
        line.starts_with("\u{2014} ") && line.ends_with('\n'),
        "{line:?}"
    );
    assert_eq!(line.lines().count(), 1);
    let (text, _) = split_note(note).unwrap();
    let ts = w.vkey.verify_line(text, line).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ts <= now && ts + 60 > now, "timestamp {ts}, now {now}");
    line.clone()
}

#[tokio::test]
async fn two_witnesses_cosign_a_growing_log_and_refuse_a_rewritten_one() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let log = Server::start(&log_dir).await;
    let api = Api::new(&log, &create_key(&log_dir, "acme", "read,write"));
    let vkey = log_verifier_key(&api).await;
    let w1 = Witness::start(
        &tmp.path().join("w1"),
        "w1.example",
        std::slice::from_ref(&vkey),
    )
    .await;
    let w2 = Witness::start(
        &tmp.path().join("w2"),
        "w2.example",
        std::slice::from_ref(&vkey),
    )
    .await;
    let both = [w1.vkey.clone(), w2.vkey.clone()];

    // A witness that never saw the origin answers 409 with size 0 to a client that
    // guesses wrong, then cosigns from 0.
    ingest_named(&api, "a", 5).await;
    let (note5, cp5) = checkpoint(&api).await;
    assert_eq!(cp5.size, 5);
    let conflict = w1.add(3, &consistency(&api, 3, 5).await, &note5).await;
    assert_eq!(conflict, (409, "text/x.tlog.size".into(), "0\n".into()));
    let mut cosigned = note5.clone();
    for w in [&w1, &w2] {
        let answer = w.add(0, &[], &note5).await;
        cosigned.push_str(&assert_cosigned(w, &note5, &answer));
    }
    assert_eq!(count_cosignatures(&cosigned, &both), 2);

    // The log grows; each step is cosigned with a proof from the last cosigned size.
    let mut size = 5;
    for (round, n) in [(1, 1), (2, 7), (3, 20)] {
        ingest_named(&api, &format!("r{round}"), n).await;
        let (note, cp) = checkpoint(&api).await;
        let proof = consistency(&api, size, cp.size).await;
        let mut cosigned = note.clone();
        for w in [&w1, &w2] {
            let answer = w.add(size, &proof, &note).await;
            cosigned.push_str(&assert_cosigned(w, &note, &answer));
        }
        assert_eq!(count_cosignatures(&cosigned, &both), 2);
        // the same checkpoint again (a retry) is cosigned again; an older size is a 409
        let again = w1.add(cp.size, &[], &note).await;
        assert_cosigned(&w1, &note, &again);
        let stale = w1.add(size, &proof, &note).await;
        assert_eq!(stale.0, 409);
        assert_eq!(stale.2, format!("{}\n", cp.size));
        size = cp.size;
    }

    // A rewritten history under the same key: a fresh data directory with the log's key
    // file and other events. Its checkpoints are validly signed, but inconsistent with
    // what the witnesses cosigned.
    let forged_dir = tmp.path().join("forged");
    data_dir_with_key_of(&log_dir, &forged_dir);
    let forged = Server::start(&forged_dir).await;
    let fapi = Api::new(&forged, &create_key(&forged_dir, "acme", "read,write"));
    assert_eq!(log_verifier_key(&fapi).await, vkey);
    ingest_named(&fapi, "other", size as usize + 4).await;
    let (fnote, fcp) = checkpoint(&fapi).await;
    assert_eq!(fcp.origin, cp5.origin);
    let fproof = consistency(&fapi, size, fcp.size).await;
    for w in [&w1, &w2] {
        // from the size the witness holds: the proof does not reach its root
        let refused = w.add(size, &fproof, &fnote).await;
        assert_eq!(refused.0, 422, "{refused:?}");
        // from scratch: the witness names the size it holds
        let refused = w.add(0, &[], &fnote).await;
        assert_eq!(
            refused,
            (409, "text/x.tlog.size".into(), format!("{size}\n"))
        );
    }

    // Offline: `sealtrail verify --witness … --quorum N` takes the honest pack's
    // checkpoint with both cosignatures, not with one; the forged pack's checkpoint has
    // none (the witnesses refused it) and is rejected.
    let vdir = tmp.path().join("verify");
    std::fs::create_dir_all(&vdir).unwrap();
    let (pack, pack_note) = evidence_pack(&api, &vdir.join("pack.zip")).await;
    let mut lines = Vec::new();
    for w in [&w1, &w2] {
        let answer = w.add(size, &[], &pack_note).await;
        lines.push(assert_cosigned(w, &pack_note, &answer));
    }
    let both_file = vdir.join("cosigned-both.txt");
    std::fs::write(&both_file, format!("{pack_note}{}{}", lines[0], lines[1])).unwrap();
    let one_file = vdir.join("cosigned-one.txt");
    std::fs::write(&one_file, format!("{pack_note}{}", lines[0])).unwrap();
    let (w1k, w2k) = (w1.vkey.to_string(), w2.vkey.to_string());
    let verify = |input: &Path, checkpoint: Option<&Path>, quorum: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("verify")
            .arg(input)
            .args(["--key", &vkey, "--witness", &w1k, "--witness", &w2k]);
        if let Some(cp) = checkpoint {
            cmd.arg("--checkpoint").arg(cp);
        }
        if let Some(q) = quorum {
            cmd.args(["--quorum", q]);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out) = verify(&pack, Some(&both_file), Some("2"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("cosigned by 2 of the 2 witnesses given (w1.example, w2.example)"),
        "{out}"
    );
    let (code, out) = verify(&pack, Some(&one_file), None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("[witness_quorum]") && out.contains("1 of the 2"),
        "{out}"
    );
    assert_eq!(verify(&pack, Some(&one_file), Some("1")).0, Some(0));
    // the pack's own checkpoint carries no cosignature
    let (code, out) = verify(&pack, None, Some("1"));
    assert_eq!(code, Some(1), "{out}");
    // a forged cosignature line (w2's line on another checkpoint) does not count
    let (forged_pack, forged_note) = evidence_pack(&fapi, &vdir.join("forged.zip")).await;
    let stolen = vdir.join("forged-stolen.txt");
    std::fs::write(&stolen, format!("{forged_note}{}{}", lines[0], lines[1])).unwrap();
    let (code, out) = verify(&forged_pack, Some(&stolen), Some("1"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cosigned by 0 of the 2"), "{out}");
    let (code, _) = verify(&forged_pack, None, Some("2"));
    assert_eq!(code, Some(1));
    // usage errors exit 2
    assert_eq!(verify(&pack, Some(&both_file), Some("3")).0, Some(2));

    // The witnesses' state survives a restart (SIGKILL): still the same size.
    drop(w2);
    let mut w1 = w1;
    w1.sigkill();
    w1.spawn(&[]).await;
    let refused = w1.add(0, &[], &fnote).await;
    assert_eq!(refused.2, format!("{size}\n"));
}

/// A witness SIGKILLed after persisting a checkpoint and before answering never cosigns a
/// different checkpoint of that size, nor goes back to the older one.
#[tokio::test]
async fn a_witness_killed_between_persisting_and_answering_never_cosigns_a_fork() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let log = Server::start(&log_dir).await;
    let api = Api::new(&log, &create_key(&log_dir, "acme", "read,write"));
    let vkey = log_verifier_key(&api).await;
    let mut w = Witness::start(&tmp.path().join("w"), "w.example", &[vkey]).await;

    ingest_named(&api, "a", 4).await;
    let (note4, _) = checkpoint(&api).await;
    assert_cosigned(&w, &note4, &w.add(0, &[], &note4).await);

    // Another history of the same size under the same key (a fresh data directory with
    // the log's key file and other events).
    let fork_dir = tmp.path().join("fork");
    data_dir_with_key_of(&log_dir, &fork_dir);
    let fork = Server::start(&fork_dir).await;
    let fapi = Api::new(&fork, &create_key(&fork_dir, "acme", "read,write"));
    ingest_named(&api, "b", 6).await;
    ingest_named(&fapi, "forked", 10).await;
    let (note10, cp10) = checkpoint(&api).await;
    let (fnote10, fcp10) = checkpoint(&fapi).await;
    assert_eq!((cp10.size, fcp10.size), (10, 10));
    assert_ne!(cp10.root, fcp10.root);
    let proof = consistency(&api, 4, 10).await;
    let fproof = consistency(&fapi, 4, 10).await;

    // Submit checkpoint 10 to a witness that stalls after persisting, and kill it there.
    w.sigkill();
    w.spawn(&[("SEALTRAIL_TEST_WITNESS_STALL_MS", "60000")])
        .await;
    let pending = {
        let (url, body) = (w.url.clone(), submission(4, &proof, &note10));
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/add-checkpoint"))
                .body(body)
                .send()
                .await
        })
    };
    // the state file is replaced before the stall: wait for it
    let state = w.dir.join("state");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .collect();
        if stored.iter().any(|s| s == &note10) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the witness never persisted size 10"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.sigkill();
    assert!(
        pending.await.unwrap().is_err(),
        "the killed witness answered"
    );

    // Restarted: the fork of the same size is refused however it is submitted...
    w.spawn(&[]).await;
    let from4 = w.add(4, &fproof, &fnote10).await;
    assert_eq!(from4, (409, "text/x.tlog.size".into(), "10\n".into()));
    let from10 = w.add(10, &[], &fnote10).await;
    assert_eq!(from10.0, 422, "{from10:?}");
    // ...and the log's retry of what it sent gets its cosignature.
    let retry = w.add(10, &[], &note10).await;
    assert_cosigned(&w, &note10, &retry);
    assert!(!w.vkey.is_mine(&fnote10));
}

/// Protocol refusals, per C2SP tlog-witness, with checkpoints the test signs itself with
/// the log's key (read from its data directory).
#[tokio::test]
async fn refusals_follow_the_tlog_witness_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let log = Server::start(&log_dir).await;
    let api = Api::new(&log, &create_key(&log_dir, "acme", "read,write"));
    let vkey = log_verifier_key(&api).await;
    let signer =
        NoteSigner::parse(&std::fs::read_to_string(log_dir.join("log-key.private")).unwrap())
            .unwrap();
    let w = Witness::start(&tmp.path().join("w"), "w.example", &[vkey]).await;
    let origin = format!("{}/acme", signer.name());
    let leaves: Vec<Hash> = (0..8u8)
        .map(|i| record_leaf(&hex_of(&[i; 32])).unwrap())
        .collect();
    let cp = |size: usize, root: Hash| {
        Checkpoint::new(origin.clone(), size as u64, root)
            .sign(&signer)
            .unwrap()
    };
    let root = |n: usize| root_of_leaf_hashes(&leaves[..n]);

    // unknown origin: 404 (another log's name, or the log's name itself without a tenant)
    let other = NoteSigner::from_seed("other.example", [5; 32]).unwrap();
    let foreign = Checkpoint::new("other.example/acme", 1, root(1))
        .sign(&other)
        .unwrap();
    assert_eq!(w.add(0, &[], &foreign).await.0, 404);
    let bare = Checkpoint::new(signer.name(), 1, root(1))
        .sign(&signer)
        .unwrap();
    assert_eq!(w.add(0, &[], &bare).await.0, 404);
    // known origin, signed by another key of the same name: 403; a bad signature: 403
    let impostor = NoteSigner::from_seed(signer.name(), [6; 32]).unwrap();
    let by_impostor = Checkpoint::new(origin.clone(), 1, root(1))
        .sign(&impostor)
        .unwrap();
    assert_eq!(w.add(0, &[], &by_impostor).await.0, 403);
    let tampered = cp(1, root(1)).replacen("\n1\n", "\n2\n", 1);
    assert_eq!(w.add(0, &[], &tampered).await.0, 403);
    // malformed bodies: 400
    for body in [
        String::new(),
        "old 01\n\n".to_string() + &cp(1, root(1)),
        "old -1\n\n".to_string() + &cp(1, root(1)),
        "new 0\n\n".to_string() + &cp(1, root(1)),
        "old 0\nnot-base64\n\n".to_string() + &cp(1, root(1)),
        "old 0\n".to_string() + &cp(1, root(1)),
        submission(0, &vec![B64.encode([1; 32]); 64], &cp(8, root(8))),
    ] {
        assert_eq!(w.add_raw(body.clone()).await.0, 400, "{body:?}");
    }
    // old size above the checkpoint's: 400
    assert_eq!(w.add(3, &[], &cp(2, root(2))).await.0, 400);
    // size 0 must have the empty root; a proof from 0 must be empty: 422
    assert_eq!(w.add(0, &[], &cp(0, [9; 32])).await.0, 422);
    assert_eq!(
        w.add(0, &[B64.encode([1; 32])], &cp(2, root(2))).await.0,
        422
    );
    let empty = cp(0, EMPTY_ROOT);
    assert_cosigned(&w, &empty, &w.add(0, &[], &empty).await);
    // a first checkpoint, then one whose proof is wrong: 422, state unchanged
    let four = cp(4, root(4));
    assert_cosigned(&w, &four, &w.add(0, &[], &four).await);
    let bogus = [B64.encode([1; 32]), B64.encode([2; 32])];
    assert_eq!(w.add(4, &bogus, &cp(8, root(8))).await.0, 422);
    // same size, other root: 422
    assert_eq!(w.add(4, &[], &cp(4, root(3))).await.0, 422);
    assert_eq!(w.add(0, &[], &four).await.2, "4\n");
}

/// Downloads the tenant's evidence pack to `path`; returns its path and its checkpoint.
async fn evidence_pack(api: &Api, path: &Path) -> (std::path::PathBuf, String) {
    let r = api
        .http
        .get(format!("{}/v1/export/evidence-pack", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    std::fs::write(path, r.bytes().await.unwrap()).unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut note = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name(sealtrail_core::pack::CHECKPOINT).unwrap(),
        &mut note,
    )
    .unwrap();
    (path.to_path_buf(), note)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn init_refuses_an_existing_key_and_prints_the_verifier_key_last() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let (ok, stdout, _) = witness_init(&dir, "w.example/one");
    assert!(ok);
    let vkey = stdout.lines().last().unwrap();
    assert!(vkey.starts_with("w.example/one+"), "{vkey}");
    CosignatureVerifier::parse(vkey).unwrap();
    let (ok, _, stderr) = witness_init(&dir, "w.example/one");
    assert!(!ok);
    assert!(stderr.contains("already holds a witness key"), "{stderr}");
    assert!(stderr.contains(vkey), "{stderr}");
    let (ok, _, stderr) = witness_init(&tmp.path().join("x"), "bad name");
    assert!(!ok);
    assert!(stderr.contains("--name"), "{stderr}");
    // serve without a log, or with a key that is not a log key: refused with a hint
    let out = Command::new(BIN)
        .args(["witness", "serve", "--data-dir"])
        .arg(&dir)
        .args(["--log", vkey])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GET /v1/log/key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The log's side: a log started with `--witness` sends its checkpoints to both
/// witnesses and serves them cosigned (`?witnesses=N` waits for N); a rewritten history
/// under the same key (shorter, then longer than what the witnesses hold) gets no
/// cosignature, `?witnesses=1` is a `503`, and `/healthz` and `/metrics` raise the alarm
/// naming the origin and the sizes.
#[tokio::test]
async fn a_log_serves_cosigned_checkpoints_and_raises_the_alarm_on_a_rewrite() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let mut first = Server::start(&log_dir).await;
    let key = create_key(&log_dir, "acme", "read,write");
    let vkey = log_verifier_key(&Api::new(&first, &key)).await;
    assert!(first.sigterm_and_wait());
    let w1 = Witness::start(
        &tmp.path().join("w1"),
        "w1.example",
        std::slice::from_ref(&vkey),
    )
    .await;
    let w2 = Witness::start(
        &tmp.path().join("w2"),
        "w2.example",
        std::slice::from_ref(&vkey),
    )
    .await;
    let both = [w1.vkey.clone(), w2.vkey.clone()];
    let specs = [
        format!("{}={}", w1.url, w1.vkey),
        format!("{}={}", w2.url, w2.vkey),
    ];
    let args = ["--witness", &specs[0], "--witness", &specs[1]];
    let log = Server::start_with(&log_dir, &args).await;
    let api = Api::new(&log, &key);
    let verifier = sealtrail_core::note::NoteVerifier::parse(&vkey).unwrap();

    let mut size = 0;
    for (round, n) in [(0, 5), (1, 9), (2, 1)] {
        ingest_named(&api, &format!("r{round}"), n).await;
        size += n as u64;
        let (s, note) = api.get_text("/v1/checkpoint?fresh=true&witnesses=2").await;
        assert_eq!(s, 200, "{note}");
        let text = verifier.open(&note).unwrap();
        assert_eq!(Checkpoint::parse(text).unwrap().size, size);
        assert_eq!(count_cosignatures(&note, &both), 2, "{note}");
    }
    // without ?witnesses the served checkpoint carries the cosignatures once they are in
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, note) = api.get_text("/v1/checkpoint").await;
        if count_cosignatures(&note, &both) == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never cosigned: {note}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, body) = api.get("/v1/checkpoint?witnesses=3").await;
    assert_eq!(s, 400, "{body}");
    // the evidence pack carries its checkpoint cosigned, for `sealtrail verify --quorum`
    let r = api
        .http
        .get(format!("{}/v1/export/evidence-pack?witnesses=2", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pack = tmp.path().join("cosigned-pack.zip");
    std::fs::write(&pack, r.bytes().await.unwrap()).unwrap();
    let out = Command::new(BIN)
        .arg("verify")
        .arg(&pack)
        .args(["--key", &vkey, "--quorum", "2"])
        .args([
            "--witness",
            &w1.vkey.to_string(),
            "--witness",
            &w2.vkey.to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cosigned by 2 of the 2 witnesses given"),
        "{stdout}"
    );
    let (s, body) = api.get("/healthz").await;
    assert_eq!((s, body["status"].as_str()), (200, Some("ok")), "{body}");

    // The same key on a rewritten history: first shorter than what the witnesses hold...
    let forged_dir = tmp.path().join("forged");
    data_dir_with_key_of(&log_dir, &forged_dir);
    let forged = Server::start_with(&forged_dir, &args).await;
    let fapi = Api::new(&forged, &create_key(&forged_dir, "acme", "read,write"));
    ingest_named(&fapi, "other", 3).await;
    let (s, body) = fapi.get("/v1/checkpoint?fresh=true&witnesses=1").await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["error"]["code"], "witnesses_unavailable", "{body}");
    let origin = format!("{}/acme", verifier.name());
    let alarms = |body: &Value| -> Vec<(String, String, String)> {
        body["witness_alarms"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["witness"].as_str().unwrap().to_string(),
                    a["origin"].as_str().unwrap().to_string(),
                    a["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (_, health) = fapi.get("/healthz").await;
    assert_eq!(health["status"], "witness_alarm", "{health}");
    let found = alarms(&health);
    assert_eq!(found.len(), 2, "{health}");
    for (witness, (w, o, m)) in ["w1.example", "w2.example"].iter().zip(&found) {
        assert_eq!((w.as_str(), o), (*witness, &origin));
        assert!(
            m.contains(&format!("size {size}")) && m.contains("only 3 records"),
            "{m}"
        );
    }
    let (_, metrics) = fapi.get_text("/metrics").await;
    assert!(
        metrics.contains("sealtrail_witness_alarms{witness=\"w1.example\"} 1"),
        "{metrics}"
    );
    // ...then longer: the witnesses refuse its proof from their size
    ingest_named(&fapi, "more", size as usize).await;
    let (s, body) = fapi.get("/v1/checkpoint?fresh=true&witnesses=1").await;
    assert_eq!(s, 503, "{body}");
    let (_, health) = fapi.get("/healthz").await;
    for (_, _, m) in alarms(&health) {
        assert!(
            m.contains("inconsistent") && m.contains(&format!("size {size}")),
            "{m}"
        );
    }
    // the honest log is still cosigned
    ingest_named(&api, "r3", 2).await;
    let (s, note) = api.get_text("/v1/checkpoint?fresh=true&witnesses=2").await;
    assert_eq!(s, 200, "{note}");
    assert_eq!(count_cosignatures(&note, &both), 2);
    drop(first);
}

/// The size of `origin` the witness holds, from its state file (`None`: never cosigned).
fn witnessed_size(w: &Witness, origin: &str) -> Option<u64> {
    use sha2::Digest;
    let path = w
        .dir
        .join("state")
        .join(hex::encode(sha2::Sha256::digest(origin.as_bytes())));
    let note = std::fs::read_to_string(path).ok()?;
    Some(
        Checkpoint::parse(split_note(&note).unwrap().0)
            .unwrap()
            .size,
    )
}

async fn wait_witnessed(w: &Witness, origin: &str, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while witnessed_size(w, origin) != Some(size) {
        assert!(
            Instant::now() < deadline,
            "{origin}: the witness holds {:?}, not {size}",
            witnessed_size(w, origin)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every tenant's log reaches the witnesses whether or not anyone reads its checkpoint:
/// tenants written to (async and sync) and never read are cosigned up to their size, and
/// again after they grow.
#[tokio::test]
async fn tenants_nobody_reads_are_witnessed_too() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let mut first = Server::start(&log_dir).await;
    let key_a = create_key(&log_dir, "quiet-a", "write");
    let key_b = create_key(&log_dir, "quiet-b", "write");
    let vkey = log_verifier_key(&Api::new(&first, &create_key(&log_dir, "x", "read"))).await;
    assert!(first.sigterm_and_wait());
    let w = Witness::start(
        &tmp.path().join("w"),
        "w.example",
        std::slice::from_ref(&vkey),
    )
    .await;
    let spec = format!("{}={}", w.url, w.vkey);
    let log = Server::start_with(&log_dir, &["--witness", &spec]).await;
    let (a, b) = (Api::new(&log, &key_a), Api::new(&log, &key_b));
    let name = vkey.split('+').next().unwrap();

    for i in 0..7 {
        let (s, v) = a.post("/v1/events", &event(&format!("a-{i}"))).await;
        assert_eq!(s, 202, "{v}");
    }
    ingest_named(&b, "b", 4).await;
    wait_witnessed(&w, &format!("{name}/quiet-a"), 7).await;
    wait_witnessed(&w, &format!("{name}/quiet-b"), 4).await;
    for i in 7..10 {
        let (s, v) = a.post("/v1/events", &event(&format!("a-{i}"))).await;
        assert_eq!(s, 202, "{v}");
    }
    wait_witnessed(&w, &format!("{name}/quiet-a"), 10).await;
    assert_eq!(witnessed_size(&w, &format!("{name}/x")), None);
}
