//! End-to-end harness: runs the real `sealtrail` binary on free ports and talks to it
//! over real HTTP.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_sealtrail");

pub struct Server {
    pub child: Child,
    pub base: String,
    /// The gRPC endpoint, `http://127.0.0.1:PORT`.
    pub grpc: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

/// A port for a server the test is about to start, from 20000-32599: below Linux's
/// ephemeral range (32768-60999), so neither an outgoing connection nor another `bind(0)`
/// can take it between this call and the server's bind (CI saw exactly that race with
/// `bind(0)`: "Address already in use"). Each process walks its own stretch of the range
/// (by pid), and a port someone already listens on is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_600;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

impl Server {
    pub async fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[]).await
    }

    pub async fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_logging_to(data_dir, None, extra).await
    }

    /// [`Server::start_with`] with the server's stderr in `log_path` (default: beside the
    /// data directory).
    pub async fn start_logging_to(
        data_dir: &Path,
        log_path: Option<&Path>,
        extra: &[&str],
    ) -> Server {
        Self::spawn(data_dir, log_path, extra, None, &[]).await
    }

    /// [`Server::start_with`] with extra environment variables.
    pub async fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(data_dir, None, extra, None, env).await
    }

    /// [`Server::start_with`] under a file-descriptor limit (soft and hard, via `prlimit`).
    pub async fn start_with_fd_limit(data_dir: &Path, fd_limit: u64, extra: &[&str]) -> Server {
        Self::spawn(data_dir, None, extra, Some(fd_limit), &[]).await
    }

    async fn spawn(
        data_dir: &Path,
        log_path: Option<&Path>,
        extra: &[&str],
        fd_limit: Option<u64>,
        env: &[(&str, &str)],
    ) -> Server {
        let port = free_port();
        let grpc_port = free_port();
        let log_path = log_path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.with_extension(format!("{port}.log")));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = match fd_limit {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--grpc-addr",
                &format!("127.0.0.1:{grpc_port}"),
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sealtrail");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            data_dir: data_dir.to_path_buf(),
            log_path,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "server exited with {status}: {}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server not ready: {}",
                std::fs::read_to_string(&self.log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn sigterm_and_wait(&mut self) -> bool {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap().success()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a key with the CLI (works while the server runs) and returns it.
pub fn create_key(data_dir: &Path, tenant: &str, scopes: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--tenant",
            tenant,
            "--scopes",
            scopes,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("alk_live_"), "{stdout}");
    key
}

pub fn event(id: &str) -> Value {
    json!({
        "id": id,
        "actor": {"id": "user_1", "type": "human", "email": "u@example.com"},
        "action": "document.delete",
        "resource": {"id": "doc_1", "type": "document", "name": "Plan"},
        "outcome": "success",
        "metadata": {"ip": "127.0.0.1"}
    })
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub fn new(server: &Server, key: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            key: key.to_string(),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PUT, path, body).await
    }

    /// `method path` with `body` as JSON: the status and the JSON answer (`Null` if none).
    async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get_text(path).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// A GET answered as text (checkpoints, exports, error bodies).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Every record of the tenant, via cursor paging.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let (s, mut page) = self.get("/v1/events?page_size=1000").await;
        assert_eq!(s, 200, "{page}");
        loop {
            out.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => {
                    let (s, next) = self
                        .get(&format!("/v1/events?page_size=1000&cursor={c}"))
                        .await;
                    assert_eq!(s, 200, "{next}");
                    page = next;
                }
                None => break,
            }
        }
        out
    }
}

/// Asserts the tenant's records form a gapless chain 1..n and the server's verify agrees.
pub async fn assert_chain_ok(api: &Api) -> Vec<Value> {
    let events = api.all_events().await;
    let mut prev = "0".repeat(64);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["sequence_number"].as_u64(),
            Some(i as u64 + 1),
            "gap or duplicate at {i}"
        );
        assert_eq!(
            e["prev_hash"].as_str(),
            Some(prev.as_str()),
            "broken link at {i}"
        );
        prev = e["hash"].as_str().unwrap().to_string();
    }
    let (s, v) = api.get("/v1/verify").await;
    assert_eq!(s, 200);
    assert_eq!(v["valid"], json!(true), "{v}");
    assert_eq!(v["events_checked"].as_u64(), Some(events.len() as u64));
    events
}

/// The signed checkpoint's root is the Merkle root of the chain's hashes: the tree nodes
/// written with the records survived the crash with them.
pub async fn assert_tree_matches(api: &Api, events: &[serde_json::Value]) {
    use sealtrail_core::checkpoint::Checkpoint;
    use sealtrail_core::merkle::{MemoryTree, record_leaf};
    use sealtrail_core::note::NoteVerifier;
    let (_, key) = api.get("/v1/log/key").await;
    let verifier = NoteVerifier::parse(key["verifier_key"].as_str().unwrap()).unwrap();
    let (_, note) = api.get_text("/v1/checkpoint?fresh=true").await;
    let cp = Checkpoint::open(&note, &verifier, key["origin"].as_str()).unwrap();
    let mut tree = MemoryTree::new();
    for e in events {
        tree.push(&record_leaf(e["hash"].as_str().unwrap()).unwrap());
    }
    assert_eq!(cp.size, events.len() as u64);
    assert_eq!(
        cp.root,
        tree.root(),
        "the stored tree disagrees with the chain"
    );
}

/// Every acknowledged id of every tenant is stored exactly once, each chain is whole and
/// its tree matches; returns how many records are stored in all.
pub async fn assert_all_present_once(
    server: &Server,
    keys: &[(String, String)],
    acked: &std::collections::HashMap<String, Vec<String>>,
) -> usize {
    let mut total = 0;
    for (tenant, key) in keys {
        let api = Api::new(server, key);
        let events = assert_chain_ok(&api).await;
        assert_tree_matches(&api, &events).await;
        let stored: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let unique: std::collections::HashSet<&str> = stored.iter().copied().collect();
        assert_eq!(
            unique.len(),
            stored.len(),
            "{tenant}: an event id is stored twice"
        );
        for id in acked.get(tenant).into_iter().flatten() {
            assert!(
                unique.contains(id.as_str()),
                "{tenant}: acknowledged event {id} was lost"
            );
        }
        total += stored.len();
    }
    total
}

/// Runs `serve` on `data` (with `extra` flags) expecting it to refuse to start; returns
/// its stderr.
pub fn refused_to_start(data: &Path, extra: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "serve {extra:?} exited 0: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "serve {extra:?} started on {} instead of refusing",
                data.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Appends `n` events `<prefix>-0..n` in one sync batch.
pub async fn ingest_named(api: &Api, prefix: &str, n: usize) {
    let events: Vec<Value> = (0..n).map(|i| event(&format!("{prefix}-{i}"))).collect();
    let (s, v) = api
        .post("/v1/events/batch?sync=true", &json!({ "events": events }))
        .await;
    assert_eq!(s, 200, "{v}");
}

/// The log's verifier key, as `GET /v1/log/key` gives it.
pub async fn log_verifier_key(api: &Api) -> String {
    let (s, v) = api.get("/v1/log/key").await;
    assert_eq!(s, 200, "{v}");
    v["verifier_key"].as_str().unwrap().to_string()
}

/// A new data directory `to` holding the log key of the data directory `from`: a server
/// started on it signs another history with the same key (a rewritten log).
pub fn data_dir_with_key_of(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("log-key.private"), to.join("log-key.private")).unwrap();
}

/// A tenant's tree as fetched over the tiled API (C2SP tlog-tiles): the signed
/// checkpoint's size and root and every tile of it by path (`tile/<L>/<N>[.p/<W>]`). As a
/// `tlog_tiles` tile reader it serves those tiles, which `tlog_tiles` authenticates
/// against the root it is given before using them.
pub struct TileSet {
    pub size: u64,
    pub root: tlog_tiles::tlog::Hash,
    pub tiles: std::collections::HashMap<String, Vec<u8>>,
}

impl tlog_tiles::tile::TileReader for TileSet {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(
        &self,
        tiles: &[tlog_tiles::tile::Tile],
    ) -> Result<Vec<Vec<u8>>, tlog_tiles::tlog::Error> {
        tiles
            .iter()
            .map(|t| {
                self.tiles
                    .get(&c2sp_path(t))
                    .cloned()
                    .ok_or(tlog_tiles::tlog::Error::IndexesNotInTree)
            })
            .collect()
    }
    fn save_tiles(&self, _: &[tlog_tiles::tile::Tile], _: &[Vec<u8>]) {}
}

/// `tlog_tiles` writes Go's `tile/<H>/<L>/…`; C2SP tlog-tiles has no height element.
pub fn c2sp_path(t: &tlog_tiles::tile::Tile) -> String {
    t.path().replacen("tile/8/", "tile/", 1)
}

/// `<N>` of a tile path: 3-digit groups, all but the last prefixed with `x`.
pub fn tile_index(n: u64) -> String {
    let t = tlog_tiles::tile::Tile::new(8, 0, n, 256, false);
    t.path()["tile/8/0/".len()..].to_string()
}

/// `GET /v1/tlog/<tenant>/<path>` with the api's key.
pub async fn tile(api: &Api, tenant: &str, path: &str) -> reqwest::Response {
    api.http
        .get(format!("{}/v1/tlog/{tenant}/{path}", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap()
}

/// Fetches `tenant`'s checkpoint (its signature checked with the log key) and every tile
/// of the tree it names, with their headers checked; `tlog_tiles` must authenticate them
/// all against the checkpoint's root (whose parsing by `tlog_tiles` must agree with
/// ours); every entry bundle must hold `events`' hashes (the tenant's records in order)
/// and hash, entry by entry, to its level-0 tile.
pub async fn fetch_tiles(api: &Api, tenant: &str, events: &[Value]) -> TileSet {
    use tlog_tiles::tlog;
    let verifier = sealtrail_core::note::NoteVerifier::parse(&log_verifier_key(api).await).unwrap();
    let r = tile(api, tenant, "checkpoint").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let note = r.text().await.unwrap();
    let origin = format!("{}/{tenant}", verifier.name());
    let ours =
        sealtrail_core::checkpoint::Checkpoint::open(&note, &verifier, Some(&origin)).unwrap();
    let body = note.split("\n\n").next().unwrap().to_string() + "\n";
    let theirs = tlog_tiles::checkpoint::Checkpoint::from_bytes(body.as_bytes()).unwrap();
    assert_eq!((theirs.size(), theirs.hash().0), (ours.size, ours.root));
    let size = theirs.size();
    assert!(
        events.len() as u64 >= size,
        "{} events, checkpoint of {size}",
        events.len()
    );

    let mut set = TileSet {
        size,
        root: *theirs.hash(),
        tiles: std::collections::HashMap::new(),
    };
    let all = tlog_tiles::tile::Tile::new_tiles(8, 0, size);
    for t in &all {
        let path = c2sp_path(t);
        let r = tile(api, tenant, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(
            r.headers()["cache-control"],
            "private, max-age=31536000, immutable",
            "{path}"
        );
        let bytes = r.bytes().await.unwrap().to_vec();
        assert_eq!(bytes.len(), t.width() as usize * 32, "{path}");
        set.tiles.insert(path, bytes);
    }
    let hashes = tlog_tiles::tile::TileHashReader::new(size, set.root, &set);
    if size > 0 {
        assert_eq!(tlog::tree_hash(size, &hashes).unwrap(), set.root);
    }
    for t in all.iter().filter(|t| t.level() == 0) {
        let path = c2sp_path(t).replacen("tile/0/", "tile/entries/", 1);
        let r = tile(api, tenant, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        let bundle = r.bytes().await.unwrap();
        let level0 = &set.tiles[&c2sp_path(t)];
        let mut at = 0;
        for i in 0..t.width() as usize {
            assert_eq!(&bundle[at..at + 2], &[0, 32], "{path} entry {i}");
            let entry = &bundle[at + 2..at + 34];
            at += 34;
            let record = events[t.level_index() as usize * 256 + i]["hash"]
                .as_str()
                .unwrap();
            assert_eq!(
                entry,
                sealtrail_core::merkle::record_leaf(record).unwrap(),
                "{path} entry {i}"
            );
            assert_eq!(
                tlog::record_hash(entry).0,
                level0[i * 32..i * 32 + 32],
                "{path} entry {i}"
            );
        }
        assert_eq!(at, bundle.len(), "{path}");
    }
    set
}

/// Files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// A base64 hash as the API serves it (proofs, checkpoints), decoded.
pub fn h(v: &Value) -> sealtrail_core::merkle::Hash {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// Bytes of `path` in the page cache, by util-linux's `fincore`.
pub fn cached_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("this test needs `fincore` (util-linux)");
    assert!(out.status.success(), "fincore: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
