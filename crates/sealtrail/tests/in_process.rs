//! The API layer in-process: embedded mode started with `sealtrail::serve::start` on
//! listeners this test bound to port 0 (no subprocess, no port race), spoken to over real
//! HTTP. Ingest, reads, proofs, authentication, the live stream, and a graceful stop and
//! restart in the same process. (SIGKILL and the command line stay subprocess tests.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Api, assert_chain_ok, assert_tree_matches, event};
use sealtrail::config::Config;
use sealtrail::serve::{Embedded, ServeOptions, start};
use serde_json::{Value, json};

/// Embedded mode with the default configuration on `data_dir`, on ports the OS picks.
async fn start_on(data_dir: &Path) -> anyhow::Result<Embedded> {
    start_with(Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    })
    .await
}

async fn start_with(config: Config) -> anyhow::Result<Embedded> {
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(config, ServeOptions::default(), Some((rest, grpc))).await
}

async fn embedded(data_dir: &Path) -> Embedded {
    start_on(data_dir).await.expect("embedded mode starts")
}

/// A key made as `sealtrail keys create` makes it, straight in the running server's store.
async fn key(server: &Embedded, tenant: &str, scopes: &[&str]) -> String {
    key_with_id(server, tenant, scopes).await.0
}

/// [`key`], and its id (what `keys revoke` takes).
async fn key_with_id(server: &Embedded, tenant: &str, scopes: &[&str]) -> (String, String) {
    let scopes = scopes.iter().map(|s| s.to_string()).collect();
    let (raw, key) = sealtrail_api::keys::generate(tenant, scopes, now()).unwrap();
    let id = key.key_id.clone();
    server.store.create_key(key).await.unwrap();
    (raw, id)
}

fn now() -> String {
    sealtrail_core::time::format_micros(sealtrail_store::now_micros())
}

fn api(server: &Embedded, key: &str) -> Api {
    Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", server.http_addr),
        key: key.to_string(),
    }
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], json!(code), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reads_and_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let server = embedded(dir.path()).await;
    let api = api(&server, &key(&server, "acme", &["read", "write"]).await);

    // sync: 201 and the committed record, readable at once
    let (s, record) = api.post("/v1/events?sync=true", &event("e1")).await;
    assert_eq!(s, 201, "{record}");
    assert_eq!(record["sequence_number"], json!(1));
    assert_eq!(record["tenant_id"], json!("acme"));
    let (s, read) = api.get("/v1/events/e1").await;
    assert_eq!((s, &read), (200, &record));

    // async: 202 and a receipt that names the event (committed: embedded mode waits)
    let (s, receipt) = api.post("/v1/events", &event("e2")).await;
    assert_eq!(s, 202, "{receipt}");
    assert_eq!(receipt["ids"], json!(["e2"]));
    let (s, stored) = api
        .get(&format!(
            "/v1/receipts/{}",
            receipt["receipt_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 200, "{stored}");
    assert_eq!(stored["status"], json!("committed"));

    // a batch with one invalid item: the others commit, the bad one is named by index
    let mut bad = event("e4");
    bad["outcome"] = json!("maybe");
    let mut other = event("e5");
    other["action"] = json!("document.share");
    let batch = json!({"events": [event("e3"), bad, other]});
    let (s, result) = api.post("/v1/events/batch?sync=true", &batch).await;
    assert_eq!(s, 200, "{result}");
    assert_eq!(
        (result["accepted"].clone(), result["rejected"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(result["errors"][0]["index"], json!(1));
    assert_eq!(result["events"][1]["id"], json!("e5"));

    // a retry of a stored id is idempotent; the same id with other content is a conflict
    let (s, again) = api.post("/v1/events?sync=true", &event("e1")).await;
    assert_eq!((s, &again), (201, &record));
    let mut changed = event("e1");
    changed["outcome"] = json!("failure");
    let (s, body) = api.post("/v1/events?sync=true", &changed).await;
    assert_eq!(s, 409, "{body}");
    assert_error(&body, "conflict");

    // filtered list
    let (s, page) = api.get("/v1/events?action=document.share").await;
    assert_eq!(s, 200, "{page}");
    let ids: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, [&json!("e5")]);

    // the chain, the signed tree, one record's proof
    let events = assert_chain_ok(&api).await;
    assert_eq!(events.len(), 4);
    assert_tree_matches(&api, &events).await;
    let (s, verdict) = api.get("/v1/events/e3/verify").await;
    assert_eq!(s, 200, "{verdict}");
    assert_eq!(verdict["valid"], json!(true), "{verdict}");
    let (s, proof) = api.get("/v1/proof/inclusion?sequence_number=3").await;
    assert_eq!(s, 200, "{proof}");

    server.shutdown();
    server.wait().await.expect("stops cleanly");
}

/// A client that lost the answer to a request without ids (a `504` names the ids the
/// server minted) retries with those ids: that is the same event again, answered with the
/// original record, not a conflict and not a second record (DESIGN.md §4.5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_ids_the_server_minted_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let server = embedded(dir.path()).await;
    let api = api(&server, &key(&server, "acme", &["read", "write"]).await);
    let anonymous = |n: u32| {
        let mut e = event("x");
        e.as_object_mut().unwrap().remove("id");
        e["metadata"]["n"] = json!(n);
        e
    };

    let (s, record) = api.post("/v1/events?sync=true", &anonymous(1)).await;
    assert_eq!(s, 201, "{record}");
    let minted = record["id"].as_str().unwrap().to_string();
    let mut retry = anonymous(1);
    retry["id"] = json!(minted);
    let (s, again) = api.post("/v1/events?sync=true", &retry).await;
    assert_eq!((s, &again), (201, &record));
    // other content under the minted id is still a conflict
    let mut other = anonymous(2);
    other["id"] = json!(minted);
    let (s, body) = api.post("/v1/events?sync=true", &other).await;
    assert_eq!(s, 409, "{body}");
    assert_error(&body, "conflict");

    // a batch answered with a receipt, retried with the receipt's ids: nothing new
    let batch = json!({"events": [anonymous(3), anonymous(4)]});
    let (s, receipt) = api.post("/v1/events/batch", &batch).await;
    assert_eq!(s, 202, "{receipt}");
    let ids = receipt["ids"].as_array().unwrap().clone();
    let mut events = vec![anonymous(3), anonymous(4)];
    for (e, id) in events.iter_mut().zip(&ids) {
        e["id"] = id.clone();
    }
    let (s, result) = api
        .post("/v1/events/batch?sync=true", &json!({"events": events}))
        .await;
    assert_eq!(s, 200, "{result}");
    assert_eq!(result["accepted"], json!(2), "{result}");
    let seqs: Vec<&Value> = result["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["sequence_number"])
        .collect();
    assert_eq!(seqs, [&json!(2), &json!(3)]);
    assert_eq!(assert_chain_ok(&api).await.len(), 3);

    server.shutdown();
    server.wait().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_scopes_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let server = embedded(dir.path()).await;
    let writer = api(&server, &key(&server, "acme", &["write"]).await);
    let reader = api(&server, &key(&server, "acme", &["read"]).await);
    let other = api(&server, &key(&server, "globex", &["read", "write"]).await);
    let nobody = api(&server, "alk_live_not_a_key");

    let (s, body) = nobody.post("/v1/events", &event("x")).await;
    assert_eq!(s, 401, "{body}");
    assert_error(&body, "unauthorized");
    let (s, body) = reader.post("/v1/events", &event("x")).await;
    assert_eq!(s, 403, "{body}");
    assert_error(&body, "forbidden");
    let (s, body) = writer.get("/v1/events").await;
    assert_eq!(s, 403, "{body}");

    let (s, receipt) = writer.post("/v1/events", &event("secret-1")).await;
    assert_eq!(s, 202, "{receipt}");
    // a write-only key may poll what it wrote
    let path = format!("/v1/receipts/{}", receipt["receipt_id"].as_str().unwrap());
    assert_eq!(writer.get(&path).await.0, 200);
    assert_eq!(reader.get("/v1/events/secret-1").await.0, 200);

    // another tenant sees none of it, not even that it exists
    let (s, body) = other.get("/v1/events/secret-1").await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(other.get(&path).await.0, 404);
    let (s, page) = other.get("/v1/events").await;
    assert_eq!(s, 200);
    assert_eq!(page["events"], json!([]));
    // the same id in another tenant is another event
    let (s, record) = other.post("/v1/events?sync=true", &event("secret-1")).await;
    assert_eq!(s, 201, "{record}");
    assert_eq!(
        (
            record["tenant_id"].clone(),
            record["sequence_number"].clone()
        ),
        (json!("globex"), json!(1))
    );

    server.shutdown();
    server.wait().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_delivers_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = embedded(dir.path()).await;
    let api = api(&server, &key(&server, "acme", &["read", "write"]).await);
    assert_eq!(
        api.post("/v1/events?sync=true", &event("before")).await.0,
        201
    );

    // from the current head: only what commits after the stream opened
    let mut stream = api
        .http
        .get(format!("{}/v1/events/stream", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(
        api.post("/v1/events?sync=true", &event("live")).await.0,
        201
    );
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"live\"") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the commit arrives within 10 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("id: 2\n"), "{seen}");
    assert!(!seen.contains("\"before\""), "{seen}");
    drop(stream);

    server.shutdown();
    server.wait().await.expect("stops cleanly");
}

/// A graceful stop keeps everything acknowledged, and a second start in the same process
/// (the metrics recorder is the process's: shared, not installed twice) continues the chain
/// under the same log key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_again_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let server = embedded(dir.path()).await;
    let raw = key(&server, "acme", &["read", "write"]).await;
    let first = api(&server, &raw);
    let batch = json!({"events": (0..50).map(|i| event(&format!("b{i}"))).collect::<Vec<_>>()});
    assert_eq!(
        first.post("/v1/events/batch?sync=true", &batch).await.0,
        200
    );
    let (_, key_before) = first.get("/v1/log/key").await;
    // While it runs, it holds the data directory: a second server there is refused.
    let refused = start_on(dir.path())
        .await
        .err()
        .expect("a second server on a served directory is refused");
    assert!(
        refused.to_string().contains("already serving"),
        "{refused:#}"
    );
    server.shutdown();
    server.wait().await.expect("stops cleanly");

    let server = embedded(dir.path()).await;
    let again = api(&server, &raw);
    assert_eq!(assert_chain_ok(&again).await.len(), 50);
    let (s, record) = again.post("/v1/events?sync=true", &event("after")).await;
    assert_eq!(s, 201, "{record}");
    assert_eq!(record["sequence_number"], json!(51));
    let events = assert_chain_ok(&again).await;
    assert_tree_matches(&again, &events).await;
    assert_eq!(again.get("/v1/log/key").await.1, key_before);
    server.shutdown();
    server.wait().await.expect("stops cleanly");
}

/// `api.key_cache_ttl` bounds how long a revoked key keeps working, and a key is not asked
/// for in the store more often than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_working_within_the_key_cache_ttl() {
    for ttl_ms in [300u64, 60_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.api.key_cache_ttl = std::time::Duration::from_millis(ttl_ms);
        let server = start_with(config).await.unwrap();
        let (raw, id) = key_with_id(&server, "acme", &["read", "write"]).await;
        let api = api(&server, &raw);
        assert_eq!(api.get("/v1/events").await.0, 200);
        assert!(server.store.revoke_key(&id, &now()).await.unwrap());
        if ttl_ms > 400 {
            // Cached: still answering right after the revocation.
            assert_eq!(api.get("/v1/events").await.0, 200);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (s, body) = api.get("/v1/events").await;
        if ttl_ms < 400 {
            assert_eq!(s, 401, "{body}");
            assert_error(&body, "unauthorized");
        } else {
            assert_eq!(s, 200, "a key is trusted for the whole TTL: {body}");
        }
        server.shutdown();
        server.wait().await.unwrap();
    }
}
