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
    // One key, so its concurrency limit is raised above the number of packs.
    let cfg = dir.path().join("sealtrail.toml");
    std::fs::write(&cfg, format!("[api]\nmax_heavy_per_key = {PACKS}\n")).unwrap();
    let server = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]).await;
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
    std::fs::write(&cfg, "[api]\ncommit_timeout = \"1ms\"\n").unwrap();
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

/// Hundreds of idle and slow-header connections (more than the cap) while a normal client
/// keeps working: the server closes a connection whose request head does not arrive in
/// time, never holds more than `max_connections`, answers an oversized head `431`, and
/// normal requests keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_bounded_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CAP: usize = 64;
    const ATTACKERS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let cfg = dir.path().join("sealtrail.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nmax_connections = {CAP}\nheader_read_timeout = \"1s\"\nmax_header_size = \"16 KiB\"\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]).await;
    let api = Api::new(&server, &key);
    let addr = server.base.trim_start_matches("http://").to_string();

    // Half send nothing, half an unfinished request head, byte by byte.
    let mut attackers = Vec::new();
    for n in 0..ATTACKERS {
        let addr = addr.clone();
        attackers.push(tokio::spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                return None;
            };
            let opened = Instant::now();
            if n % 2 == 1 {
                let _ = stream
                    .write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n")
                    .await;
            }
            // Trickle a header byte per 200 ms until the server hangs up.
            let mut buf = [0u8; 64];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return Some(opened.elapsed()),
                        Ok(_) => {} // a 408/400 before closing is fine
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if n % 2 == 1 && stream.write_all(b"X").await.is_err() {
                            return Some(opened.elapsed());
                        }
                        if opened.elapsed() > Duration::from_secs(30) {
                            return None;
                        }
                    }
                }
            }
        }));
    }
    let open_connections = |metrics: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("sealtrail_connections_open "))
            .expect("the open-connections gauge")
            .trim()
            .parse()
            .unwrap()
    };
    let mut peak: f64 = 0.0;
    // A normal client meanwhile (it may wait for a slot while the cap is reached).
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for n in 0..10 {
        let started = Instant::now();
        let response = quick
            .post(server.url("/v1/events?sync=true"))
            .bearer_auth(&key)
            .json(&event(&format!("normal-{n}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("a normal request during the attack: {e}"));
        assert_eq!(response.status(), 201);
        assert!(started.elapsed() < Duration::from_secs(10));
        let metrics = quick
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        peak = peak.max(open_connections(&metrics));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(peak <= CAP as f64, "{peak} connections open, cap {CAP}");
    assert!(
        peak >= (CAP / 2) as f64,
        "the attack did not reach the cap ({peak})"
    );
    let mut closed = 0;
    for attacker in attackers {
        if let Some(after) = attacker.await.unwrap() {
            closed += 1;
            assert!(after < Duration::from_secs(30));
        }
    }
    assert_eq!(
        closed, ATTACKERS,
        "every stalled connection was closed by the server"
    );

    // An oversized request head is refused.
    let response = quick
        .get(server.url("/v1/events"))
        .bearer_auth(&key)
        .header("x-big", "b".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    // hyper answers that one before any handler runs; it still carries the envelope.
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{response:?}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
    // Just over the limit (hyper alone let heads within its last read through) and a
    // long target: the same answer.
    for (target, header) in [
        ("/v1/events".to_string(), 16 * 1024),
        (format!("/v1/events?actor_id={}", "u".repeat(17 * 1024)), 0),
    ] {
        let response = quick
            .get(server.url(&target))
            .bearer_auth(&key)
            .header("x-big", "b".repeat(header))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 431);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
    }
    let response = quick
        .get(server.url("/v1/events?page_size=1"))
        .bearer_auth(&key)
        .header("x-fits", "f".repeat(15 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // So does hyper's 400 for a head that is not HTTP.
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer)
        .await
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(head.contains("content-type: application/json"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let (status, _) = api.get("/v1/events?page_size=1").await;
    assert_eq!(status, 200);
}

/// Under a low file-descriptor limit, hundreds of idle connections cannot take the
/// descriptors the store needs: the connection cap is lowered below the limit, the store
/// keeps flushing (a 1 MiB write buffer flushes constantly) and every write succeeds.
/// Idle connections used to exhaust descriptors until fjall's flush worker failed and
/// poisoned the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_fd_limit_never_poisons_the_store() {
    const FD_LIMIT: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let cfg = dir.path().join("sealtrail.toml");
    std::fs::write(
        &cfg,
        "[embedded]\nfjall_write_buffer = \"1 MiB\"\n[api]\nheader_read_timeout = \"2s\"\n",
    )
    .unwrap();
    let server =
        Server::start_with_fd_limit(&data, FD_LIMIT, &["--config", cfg.to_str().unwrap()]).await;
    assert!(
        server.log().contains("max_connections lowered"),
        "the cap is lowered to fit the limit: {}",
        server.log()
    );
    let addr = server.base.trim_start_matches("http://").to_string();
    // More idle connections than the limit allows descriptors.
    let mut idle = Vec::new();
    for _ in 0..FD_LIMIT + 100 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(stream)) => idle.push(stream),
            _ => break, // the backlog is full: the server is not accepting more
        }
    }
    // Writes that keep the store flushing (~2 KB each, 1 MiB write buffer).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let padding = "p".repeat(2000);
    // The idle connections hold every slot until the server closes them (2 s without a
    // request head); the writes get in after them.
    for b in 0..20 {
        let events: Vec<Value> = (0..100)
            .map(|k| {
                let mut e = event(&format!("fd-{b}-{k}"));
                e["metadata"] = json!({ "padding": padding });
                e
            })
            .collect();
        let response = http
            .post(server.url("/v1/events/batch?sync=true"))
            .bearer_auth(&key)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("batch {b} under the fd limit: {e}"));
        assert_eq!(response.status(), 200, "batch {b}");
    }
    drop(idle);
    let api = Api::new(&server, &key);
    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    let events = assert_chain_ok(&api).await;
    assert_eq!(events.len(), 2000);
}

/// A key over its request rate gets `429 rate_limited` with `Retry-After` over REST and
/// `RESOURCE_EXHAUSTED` with the same retry delay over gRPC; one key's budget is not
/// another's. A key may run only so many exports/packs/verifications and streams at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_concurrency_limits_answer_429_on_rest_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let other = create_key(&data, "acme", "read,write");
    let cfg = dir.path().join("sealtrail.toml");
    std::fs::write(
        &cfg,
        "[api]\nrate_limit_per_key = 5\nrate_limit_per_tenant = 0\nmax_heavy_per_key = 1\nmax_streams_per_key = 1\n",
    )
    .unwrap();
    let server = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]).await;
    let http = reqwest::Client::new();
    let get = |key: &str, path: &str| {
        http.get(server.url(path))
            .bearer_auth(key.to_string())
            .send()
    };
    let mut limited = None;
    for _ in 0..20 {
        let r = get(&key, "/v1/events").await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let r = limited.expect("the key's burst (10) was spent");
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(get(&other, "/v1/events").await.unwrap().status(), 200);

    // gRPC: the same budget, spent.
    let mut raw =
        sealtrail_client::proto::audit_log_client::AuditLogClient::connect(server.grpc.clone())
            .await
            .unwrap();
    let mut status = None;
    for _ in 0..20 {
        let mut request =
            tonic::Request::new(sealtrail_client::proto::GetEventRequest { id: "none".into() });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        match raw.get_event(request).await {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                status = Some(s);
                break;
            }
            _ => {}
        }
    }
    let status = status.expect("RESOURCE_EXHAUSTED over gRPC");
    assert!(status.metadata().get("retry-after").is_some());

    // Concurrency: one evidence pack at a time for `other`, whose reader is not done.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events: Vec<Value> = (0..1000).map(|k| event(&format!("pack-{k}"))).collect();
    let r = http
        .post(server.url("/v1/events/batch?sync=true"))
        .bearer_auth(&other)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = get(&other, "/v1/export/evidence-pack").await.unwrap();
    assert_eq!(first.status(), 200);
    let second = get(&other, "/v1/export/evidence-pack").await.unwrap();
    assert_eq!(second.status(), 429);
    let body: Value = second.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already has 1"),
        "{body}"
    );
    // Finishing the first frees the slot.
    first.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get(&other, "/v1/export/evidence-pack")
            .await
            .unwrap()
            .status(),
        200
    );
    // Streams: one at a time.
    let stream = get(&other, "/v1/events/stream").await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        get(&other, "/v1/events/stream").await.unwrap().status(),
        429
    );
    drop(stream);
}

/// The contract served is the contract kept: one rule for boolean parameters and the sync
/// header (a `400` for anything but true/false/1/0), only the documented batch envelope,
/// and the JSON envelope on a path that is not valid UTF-8. None of the refused writes
/// stores anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_envelopes_and_paths_follow_one_rule() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let server = Server::start(&data).await;
    let api = Api::new(&server, &key);
    for path in [
        "/v1/events?sync=banana",
        "/v1/events?proof=",
        "/v1/events?sync=true&proof=maybe",
    ] {
        let (status, body) = api.post(path, &event("flag-1")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{path}: {body}");
    }
    let r = api
        .http
        .post(server.url("/v1/events"))
        .bearer_auth(&key)
        .header("x-fact0-sync", "maybe")
        .json(&event("flag-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_header", "{body}");
    for path in ["/v1/checkpoint?fresh=maybe", "/v1/verify?scan_all=yes"] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, _) = api.post("/v1/events?sync=1", &event("flag-ok")).await;
    assert_eq!(status, 201);

    // A batch as an array of arrays used to commit (serde reads a struct from an array).
    let (status, body) = api
        .post("/v1/events/batch?sync=true", &json!([[event("arr-1")]]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");

    let (status, body) = api.get_text("/v1/events/%FF").await;
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).expect("the JSON envelope");
    assert_eq!(body["error"]["code"], "invalid_path");

    let events = assert_chain_ok(&api).await;
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["flag-ok"], "only the valid request stored anything");
}

/// A client that sends its headers and then trickles (or stops sending) its body gets
/// `408 request_timeout` once `api.body_read_timeout` has passed; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_a_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    let cfg = dir.path().join("sealtrail.toml");
    std::fs::write(&cfg, "[api]\nbody_read_timeout = \"500ms\"\n").unwrap();
    let server = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/events?sync=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"id\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("request_timeout") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer before 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let api = Api::new(&server, &key);
    assert!(assert_chain_ok(&api).await.is_empty());
}
