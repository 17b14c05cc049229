//! End-to-end tests of every REST route and every error class, over real HTTP against
//! the real binary.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn setup() -> (tempfile::TempDir, Server, Api) {
    setup_with(&[]).await
}

async fn setup_with(extra: &[&str]) -> (tempfile::TempDir, Server, Api) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, extra).await;
    let key = create_key(&data, "acme", "read,write");
    let api = Api::new(&server, &key);
    (dir, server, api)
}

#[tokio::test]
async fn async_ingest_returns_a_receipt_that_reports_the_commit() {
    async_receipt_reports_the_commit(&[]).await;
}

#[tokio::test]
async fn async_ingest_returns_a_receipt_that_reports_the_commit_sqlite() {
    async_receipt_reports_the_commit(&["--store", "sqlite"]).await;
}

async fn async_receipt_reports_the_commit(server_args: &[&str]) {
    let (_d, _s, api) = setup_with(server_args).await;
    let (status, receipt) = api.post("/v1/events", &event("evt-1")).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["ids"], json!(["evt-1"]));
    assert_eq!(receipt["accepted"], json!(1));
    let id = receipt["receipt_id"].as_str().unwrap();
    let (status, polled) = api.get(&format!("/v1/receipts/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(polled["status"], json!("committed"));
    assert!(polled["committed_at"].as_str().unwrap().ends_with('Z'));
    // The `202` said committed: it names the same commit time as the stored receipt.
    assert_eq!(receipt["status"], json!("committed"), "{receipt}");
    assert_eq!(receipt["committed_at"], polled["committed_at"], "{receipt}");
    let (status, _) = api.get("/v1/receipts/no-such-receipt").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sync_ingest_by_header_or_query_returns_the_committed_record() {
    let (_d, _s, api) = setup().await;
    let r = api
        .http
        .post(api.base.clone() + "/v1/events")
        .bearer_auth(&api.key)
        .header("X-Fact0-Sync", "true")
        .json(&event("s1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rec: Value = r.json().await.unwrap();
    assert_eq!(rec["sequence_number"], json!(1));
    assert_eq!(rec["prev_hash"], json!("0".repeat(64)));
    assert_eq!(rec["tenant_id"], json!("acme"));
    let members: Vec<&str> = rec
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        members,
        vec![
            "action",
            "actor",
            "created_at",
            "hash",
            "id",
            "metadata",
            "outcome",
            "prev_hash",
            "resource",
            "sequence_number",
            "tenant_id",
            "timestamp"
        ]
    );
    let (status, rec2) = api.post("/v1/events?sync=true", &event("s2")).await;
    assert_eq!(status, 201);
    assert_eq!(rec2["prev_hash"], rec["hash"]);
    let (status, got) = api.get("/v1/events/s2").await;
    assert_eq!(status, 200);
    assert_eq!(got, rec2);
}

#[tokio::test]
async fn server_fills_id_timestamp_and_normalizes_client_timestamps() {
    let (_d, _s, api) = setup().await;
    let mut e = event("x");
    e.as_object_mut().unwrap().remove("id");
    e.as_object_mut().unwrap().remove("metadata");
    let (status, rec) = api.post("/v1/events?sync=true", &e).await;
    assert_eq!(status, 201);
    assert_eq!(rec["id"].as_str().unwrap().len(), 36, "a UUID");
    assert_eq!(rec["timestamp"], rec["created_at"]);
    assert_eq!(rec["metadata"], json!({}));
    let ts = rec["created_at"].as_str().unwrap();
    assert_eq!(ts.len(), 27, "microseconds and Z: {ts}");

    let mut e = event("tz");
    e["timestamp"] = json!("2024-03-10T12:00:00.5+02:00");
    let (_, rec) = api.post("/v1/events?sync=true", &e).await;
    assert_eq!(rec["timestamp"], json!("2024-03-10T10:00:00.500000Z"));
}

#[tokio::test]
async fn idempotent_ids_return_the_original_and_conflicts_are_409() {
    let (_d, _s, api) = setup().await;
    let (_, first) = api.post("/v1/events?sync=true", &event("dup")).await;
    let (status, again) = api.post("/v1/events?sync=true", &event("dup")).await;
    assert_eq!(status, 201);
    assert_eq!(again, first);
    let mut changed = event("dup");
    changed["outcome"] = json!("failure");
    let (status, body) = api.post("/v1/events?sync=true", &changed).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], json!("conflict"));
    // async: the receipt reports the conflict
    let (status, receipt) = api.post("/v1/events", &changed).await;
    assert_eq!(status, 202);
    assert_eq!(receipt["status"], json!("failed"));
    assert_eq!(receipt["errors"][0]["code"], json!("conflict"));
    let id = receipt["receipt_id"].as_str().unwrap();
    let (_, polled) = api.get(&format!("/v1/receipts/{id}")).await;
    assert_eq!(polled["status"], json!("failed"));
    assert!(
        polled["error_message"]
            .as_str()
            .unwrap()
            .contains("conflict")
    );
    assert_eq!(
        assert_chain_ok(&api).await.len(),
        1,
        "nothing was chained twice"
    );
}

#[tokio::test]
async fn batch_sync_and_async_with_per_item_errors() {
    let (_d, _s, api) = setup().await;
    let mut bad = event("b-bad");
    bad["outcome"] = json!("sideways");
    let batch = json!({"events": [event("b0"), bad, event("b2")]});
    let (status, result) = api.post("/v1/events/batch?sync=true", &batch).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        (result["accepted"].clone(), result["rejected"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(result["ids"], json!(["b0", "b2"]));
    assert_eq!(result["errors"][0]["index"], json!(1));
    assert_eq!(result["errors"][0]["code"], json!("invalid_field"));
    assert_eq!(result["events"].as_array().unwrap().len(), 2);
    assert_eq!(result["events"][1]["sequence_number"], json!(2));

    let (status, receipt) = api
        .post(
            "/v1/events/batch",
            &json!({"events": [event("b3"), event("b4")]}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(receipt["accepted"], json!(2));
    let (_, polled) = api
        .get(&format!(
            "/v1/receipts/{}",
            receipt["receipt_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(polled["status"], json!("committed"));
    assert_eq!(assert_chain_ok(&api).await.len(), 4);

    let too_many: Vec<Value> = (0..1001).map(|i| event(&format!("m{i}"))).collect();
    let (status, body) = api
        .post("/v1/events/batch", &json!({ "events": too_many }))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], json!("batch_too_large"));
    let (status, _) = api.post("/v1/events/batch", &json!({"events": []})).await;
    assert_eq!(status, 400);
    let (status, _) = api.post("/v1/events/batch", &json!({"events": {}})).await;
    assert_eq!(status, 400);
    let (status, _) = api
        .post("/v1/events/batch", &json!({"events": [], "sync": true}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        assert_chain_ok(&api).await.len(),
        4,
        "rejected batches wrote nothing"
    );
}

#[tokio::test]
async fn every_class_of_bad_input_is_a_clear_4xx_and_writes_nothing() {
    let (_d, _s, api) = setup().await;
    let deep = {
        let mut v = json!("leaf");
        for _ in 0..40 {
            v = json!({ "n": v });
        }
        v
    };
    let mut cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"actor\":".into(), 400, "invalid_json"),
        ("not an object", "[1,2]".into(), 400, "invalid_body"),
        ("empty body", "".into(), 400, "invalid_body"),
        (
            "duplicate keys",
            r#"{"action":"a.b","action":"c.d"}"#.into(),
            400,
            "duplicate_key",
        ),
        (
            "unsafe integer",
            r#"{"metadata":{"n":9007199254740993}}"#.into(),
            400,
            "number_out_of_range",
        ),
        (
            "lone surrogate",
            r#"{"action":"\ud800"}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "too deep",
            json!({"metadata": deep}).to_string(),
            400,
            "nesting_too_deep",
        ),
    ];
    let with = |f: &dyn Fn(&mut Value)| {
        let mut e = event("bad");
        f(&mut e);
        e.to_string()
    };
    cases.push((
        "missing action",
        with(&|e| {
            e.as_object_mut().unwrap().remove("action");
        }),
        400,
        "missing_field",
    ));
    cases.push((
        "empty actor id",
        with(&|e| e["actor"]["id"] = json!("")),
        400,
        "missing_field",
    ));
    cases.push((
        "unknown outcome",
        with(&|e| e["outcome"] = json!("meh")),
        400,
        "invalid_field",
    ));
    cases.push((
        "unknown actor type",
        with(&|e| e["actor"]["type"] = json!("robot")),
        400,
        "invalid_field",
    ));
    cases.push((
        "sets tenant_id",
        with(&|e| e["tenant_id"] = json!("other")),
        400,
        "unknown_field",
    ));
    cases.push((
        "sets hash",
        with(&|e| e["hash"] = json!("00")),
        400,
        "unknown_field",
    ));
    cases.push((
        "sets sequence_number",
        with(&|e| e["sequence_number"] = json!(7)),
        400,
        "unknown_field",
    ));
    cases.push((
        "bad timestamp",
        with(&|e| e["timestamp"] = json!("2024-02-30T00:00:00Z")),
        400,
        "invalid_timestamp",
    ));
    cases.push((
        "metadata not object",
        with(&|e| e["metadata"] = json!("x")),
        400,
        "invalid_field",
    ));
    cases.push((
        "long action",
        with(&|e| e["action"] = json!("a".repeat(300))),
        400,
        "field_too_long",
    ));
    cases.push((
        "long resource id",
        with(&|e| e["resource"]["id"] = json!("r".repeat(300))),
        400,
        "field_too_long",
    ));
    cases.push((
        "body too large",
        json!({"metadata": {"blob": "x".repeat(70_000)}}).to_string(),
        413,
        "body_too_large",
    ));
    for (name, body, want_status, want_code) in cases {
        let (status, err) = api.post_raw("/v1/events?sync=true", body).await;
        assert_eq!(status, want_status, "{name}: {err}");
        assert_eq!(err["error"]["code"], json!(want_code), "{name}: {err}");
        assert!(
            !err["error"]["message"].as_str().unwrap().is_empty(),
            "{name}"
        );
    }
    // A declared length over the batch limit is refused before the body is read (a raw
    // socket, because an HTTP client still writing the body may see the early close).
    let head = format!(
        "POST /v1/events/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n[",
        api.key,
        5 * 1024 * 1024
    );
    let mut sock = tokio::net::TcpStream::connect(api.base.trim_start_matches("http://"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = sock.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    // A batch item that is not I-JSON is rejected by index; the rest commit.
    let raw = format!(
        r#"{{"events":[{},{{"action":"a.b","metadata":{{"n":9007199254740993}}}},{}]}}"#,
        event("ij0"),
        event("ij2")
    );
    let (status, result) = api.post_raw("/v1/events/batch?sync=true", raw).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["errors"][0]["index"], json!(1));
    assert_eq!(result["errors"][0]["code"], json!("number_out_of_range"));
    assert_eq!(result["ids"], json!(["ij0", "ij2"]));
    let (status, health) = api.get("/healthz").await;
    assert_eq!(
        (status, health["status"].clone()),
        (200, json!("ok")),
        "server alive"
    );
    assert_eq!(
        api.all_events().await.len(),
        2,
        "only the two valid batch items were written"
    );
}

/// A body the server refuses unread (413) ends its connection *visibly*: the answer says
/// `Connection: close`, so a client does not put the half-read connection back in its pool
/// and fail its next request on it (CI saw `IncompleteMessage` on exactly that).
#[tokio::test]
async fn a_refused_body_closes_its_connection_and_the_next_request_succeeds() {
    let (_d, _s, api) = setup().await;
    let big = json!({"metadata": {"blob": "x".repeat(70_000)}}).to_string();
    for round in 0..40 {
        let r = api
            .http
            .post(format!("{}/v1/events?sync=true", api.base))
            .bearer_auth(&api.key)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the refused request failed: {e:?}"));
        assert_eq!(r.status().as_u16(), 413, "round {round}");
        assert_eq!(
            r.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "round {round}: a 413 says the connection closes"
        );
        let r = api
            .http
            .post(format!("{}/v1/events?sync=true", api.base))
            .bearer_auth(&api.key)
            .json(&event(&format!("after-413-{round}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the request after a 413 failed: {e:?}"));
        assert_eq!(r.status().as_u16(), 201, "round {round}");
        assert_eq!(
            r.headers().get("connection"),
            None,
            "round {round}: a request whose body was read keeps its connection"
        );
    }
}

#[tokio::test]
async fn auth_is_401_403_and_tenants_are_isolated_with_404() {
    let (d, _s, api) = setup().await;
    let data = d.path().join("data");
    let reader = Api {
        key: create_key(&data, "acme", "read"),
        ..Api::new(&_s, "")
    };
    let writer = Api {
        key: create_key(&data, "acme", "write"),
        ..Api::new(&_s, "")
    };
    let other = Api {
        key: create_key(&data, "globex", "read,write"),
        ..Api::new(&_s, "")
    };
    let nobody = Api {
        key: "alk_live_notakey".into(),
        ..Api::new(&_s, "")
    };

    let (status, rec) = api.post("/v1/events?sync=true", &event("secret")).await;
    assert_eq!(status, 201);
    let r = reqwest::Client::new()
        .get(api.base.clone() + "/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no Authorization header");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], json!("unauthorized"));
    assert_eq!(nobody.get("/v1/events").await.0, 401);
    assert_eq!(
        reader.post("/v1/events", &event("r1")).await.0,
        403,
        "read key cannot write"
    );
    assert_eq!(
        writer.get("/v1/events").await.0,
        403,
        "write key cannot read"
    );
    assert_eq!(
        writer.post("/v1/events?sync=true", &event("w1")).await.0,
        201
    );
    assert_eq!(reader.get("/v1/events/secret").await.1, rec);

    // another tenant sees nothing of acme and gets 404, not 403
    assert_eq!(other.get("/v1/events/secret").await.0, 404);
    assert_eq!(other.get("/v1/events/secret/verify").await.0, 404);
    let (_, list) = other.get("/v1/events").await;
    assert_eq!(list["total"], json!(0));
    // the same id in another tenant is a different event, not a conflict
    let (status, theirs) = other.post("/v1/events?sync=true", &event("secret")).await;
    assert_eq!(status, 201);
    assert_eq!(theirs["sequence_number"], json!(1));
    assert_eq!(theirs["tenant_id"], json!("globex"));

    // revocation (CLI while the server runs) takes effect within the key cache TTL
    let out = std::process::Command::new(BIN)
        .args(["keys", "list", "--tenant", "acme", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        !listing.contains(&reader.key),
        "keys list never shows a key"
    );
    let reader_id = listing
        .lines()
        .find(|l| l.contains(" read "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let st = std::process::Command::new(BIN)
        .args(["keys", "revoke", &reader_id, "--data-dir"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = reader.get("/v1/events").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn list_filters_pages_and_cursor() {
    let (_d, _s, api) = setup().await;
    let mut events = Vec::new();
    for i in 0..30 {
        let mut e = event(&format!("l{i}"));
        e["actor"]["id"] = json!(format!("actor-{}", i % 3));
        e["actor"]["type"] = json!(if i % 2 == 0 { "human" } else { "agent" });
        e["action"] = json!(if i % 4 == 0 {
            "user.login"
        } else {
            "document.read"
        });
        e["resource"]["id"] = json!(format!("res-{}", i % 5));
        e["outcome"] = json!(if i % 10 == 9 { "error" } else { "success" });
        e["timestamp"] = json!(format!("2024-01-01T00:00:{i:02}Z"));
        events.push(e);
    }
    let (status, _) = api
        .post("/v1/events/batch?sync=true", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200);
    let count = |v: &Value| {
        (
            v["total"].as_u64().unwrap(),
            v["events"].as_array().unwrap().len(),
        )
    };
    assert_eq!(
        count(&api.get("/v1/events?actor_id=actor-1").await.1),
        (10, 10)
    );
    assert_eq!(
        count(&api.get("/v1/events?actor_type=agent").await.1),
        (15, 15)
    );
    assert_eq!(
        count(&api.get("/v1/events?action=user.login").await.1),
        (8, 8)
    );
    assert_eq!(
        count(&api.get("/v1/events?resource_id=res-4").await.1),
        (6, 6)
    );
    assert_eq!(count(&api.get("/v1/events?outcome=error").await.1), (3, 3));
    let (_, ranged) = api
        .get("/v1/events?from=2024-01-01T00:00:10Z&to=2024-01-01T00:00:19.5Z")
        .await;
    assert_eq!(count(&ranged), (10, 10));
    assert_eq!(ranged["events"][0]["id"], json!("l10"));
    let (_, page) = api.get("/v1/events?page=3&page_size=7").await;
    assert_eq!(page["page"], json!(3));
    assert_eq!(page["events"][0]["sequence_number"], json!(15));
    assert_eq!(count(&page), (30, 7));
    let (_, p1) = api.get("/v1/events?page_size=12").await;
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = api
        .get(&format!("/v1/events?page_size=12&cursor={cursor}"))
        .await;
    assert_eq!(p2["events"][0]["sequence_number"], json!(13));
    for bad in [
        "page_size=1001",
        "page=0",
        "page_size=x",
        "outcome=meh",
        "actor_type=robot",
        "from=yesterday",
        "cursor=zzz",
    ] {
        let (status, err) = api.get(&format!("/v1/events?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert_eq!(err["error"]["code"], json!("invalid_query"), "{bad}");
    }
}

#[tokio::test]
async fn verify_routes_report_valid_chains() {
    let (_d, _s, api) = setup().await;
    for i in 0..5 {
        api.post("/v1/events?sync=true", &event(&format!("v{i}")))
            .await;
    }
    let (status, v) = api.get("/v1/events/v3/verify").await;
    assert_eq!(status, 200);
    assert_eq!(v["valid"], json!(true));
    assert_eq!(v["stored_hash"], v["computed_hash"]);
    assert_eq!(api.get("/v1/events/nope/verify").await.0, 404);
    let (_, all) = api.get("/v1/verify?scan_all=true").await;
    assert_eq!(all["valid"], json!(true));
    assert_eq!(all["events_checked"], json!(5));
    assert_eq!(all["broken_count"], json!(0));
    assert_eq!(all["all_broken_events"], json!([]));
    let (_, head) = api.get("/v1/events/v4").await;
    assert_eq!(all["root_hash"], head["hash"]);
    assert_eq!(api.get("/v1/verify?scan_all=maybe").await.0, 400);
}

#[tokio::test]
async fn stream_delivers_new_records_and_resumes_with_last_event_id() {
    let (_d, _s, api) = setup().await;
    api.post("/v1/events?sync=true", &event("before")).await;
    let resp = api
        .http
        .get(api.base.clone() + "/v1/events/stream")
        .bearer_auth(&api.key)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    for i in 0..3 {
        api.post("/v1/events", &event(&format!("live{i}"))).await;
    }
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.matches("data:").count() >= 4 {
                break;
            }
        }
        text
    })
    .await
    .expect("four records streamed");
    assert!(got.contains("id: 1\n") && got.contains("id: 4\n"), "{got}");
    let first: Value =
        serde_json::from_str(got.lines().find(|l| l.starts_with("data:")).unwrap()[5..].trim())
            .unwrap();
    assert_eq!(first["id"], json!("before"));
    assert_eq!(api.get("/v1/events/stream?after=abc").await.0, 400);
}

/// Made-up HTTP methods are counted under one `method="other"` label: a client that
/// invents methods must not grow the metrics (each label set is a series kept forever).
#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let (_d, _s, api) = setup().await;
    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let r = api
            .http
            .request(method, api.base.clone() + "/v1/events")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let (_, metrics) = api.get_text("/metrics").await;
    assert!(!metrics.contains("BREW"), "{metrics}");
    assert!(
        metrics.contains(
            r#"sealtrail_http_requests_total{method="other",route="/v1/events",status="405"} "#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn health_metrics_openapi_and_unknown_routes() {
    let (_d, _s, api) = setup().await;
    api.post("/v1/events?sync=true", &event("m")).await;
    let (_, metrics) = api.get_text("/metrics").await;
    assert!(
        metrics.contains("sealtrail_events_committed_total"),
        "{metrics}"
    );
    // Present, not counted: the other tests of this binary share the process's recorder.
    assert!(
        metrics.contains(
            r#"sealtrail_http_requests_total{method="POST",route="/v1/events",status="201"} "#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"sealtrail_http_request_seconds_count{method="POST",route="/v1/events"} "#),
        "{metrics}"
    );
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/events",
        "/v1/events/batch",
        "/v1/receipts/{id}",
        "/v1/events/{id}",
        "/v1/events/{id}/verify",
        "/v1/verify",
        "/v1/events/stream",
        "/v1/tlog/{tenant}/checkpoint",
        "/v1/tlog/{tenant}/tile/{path}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Record"].is_object());
    let (status, err) = api.get("/v1/nothing").await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let r = api
        .http
        .delete(api.base.clone() + "/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}
