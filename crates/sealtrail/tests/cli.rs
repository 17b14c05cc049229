//! The command line as a user meets it: help, configuration layering, and errors that
//! say what to do.

mod common;

use std::process::Command;

use common::BIN;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_lists_every_command_and_flag() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for cmd in ["serve", "keys", "config"] {
        assert!(out.contains(cmd), "{out}");
    }
    let (_, out, _) = run(&["serve", "--help"], &[]);
    for flag in [
        "--data-dir",
        "--http-addr",
        "--grpc-addr",
        "--partitions",
        "--store",
        "--config",
    ] {
        assert!(out.contains(flag), "serve --help lacks {flag}: {out}");
    }
}

#[test]
fn configuration_layers_defaults_file_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sealtrail.toml");
    std::fs::write(
        &file,
        "[chainer]\npartitions = 3\n[api]\nhttp_addr = \"127.0.0.1:9001\"\ncommit_timeout = \"1234ms\"\nmax_connections = 100\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "config",
            "show",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            "/srv/audit",
            "--set",
            "api.max_connections=200",
            "--set",
            "embedded.fjall_cache=64MiB",
        ],
        &[
            ("SEALTRAIL_API_HTTP_ADDR", "127.0.0.1:9002"),
            ("SEALTRAIL_STORE", "sqlite"),
            ("SEALTRAIL_API_MAX_CONNECTIONS", "150"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "no warning: {err}");
    let shown: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(
        shown["chainer"]["partitions"].as_integer(),
        Some(3),
        "file: {out}"
    );
    assert_eq!(
        shown["api"]["commit_timeout"].as_str(),
        Some("1s 234ms"),
        "file: {out}"
    );
    assert_eq!(
        shown["api"]["http_addr"].as_str(),
        Some("127.0.0.1:9002"),
        "env beats file: {out}"
    );
    assert_eq!(shown["store"].as_str(), Some("sqlite"), "env: {out}");
    assert_eq!(
        shown["data_dir"].as_str(),
        Some("/srv/audit"),
        "flag: {out}"
    );
    assert_eq!(
        shown["api"]["max_connections"].as_integer(),
        Some(200),
        "--set beats env and file: {out}"
    );
    assert_eq!(
        shown["embedded"]["fjall_cache"].as_str(),
        Some("64 MiB"),
        "{out}"
    );
    let (code, defaults, _) = run(&["config", "defaults"], &[]);
    assert_eq!(code, 0);
    let defaults: toml::Table = toml::from_str(&defaults).unwrap();
    assert_eq!(
        defaults["api"]["http_addr"].as_str(),
        Some("127.0.0.1:8080")
    );
    assert_eq!(defaults["store"].as_str(), Some("fjall"));

    // A file of before the sections still loads, with a warning per moved key.
    std::fs::write(&file, "partitions = 3\ncommit_timeout_ms = 1234\n").unwrap();
    let (code, out, err) = run(
        &["config", "show", "--config", file.to_str().unwrap()],
        &[("SEALTRAIL_RATE_LIMIT_PER_KEY", "7")],
    );
    assert_eq!(code, 0, "{err}");
    let shown: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(
        shown["chainer"]["partitions"].as_integer(),
        Some(3),
        "{out}"
    );
    assert_eq!(
        shown["api"]["commit_timeout"].as_str(),
        Some("1s 234ms"),
        "{out}"
    );
    assert_eq!(
        shown["api"]["rate_limit_per_key"].as_integer(),
        Some(7),
        "{out}"
    );
    assert!(
        err.contains("`commit_timeout_ms` is now `commit_timeout = \"1234ms\"` in [api]")
            && err.contains("SEALTRAIL_RATE_LIMIT_PER_KEY is now SEALTRAIL_API_RATE_LIMIT_PER_KEY"),
        "{err}"
    );
}

#[test]
fn bad_configuration_and_bad_arguments_fail_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "partitons = 3\n").unwrap();
    let (code, _, err) = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("partitons") && err.contains("config defaults"),
        "{err}"
    );
    let (code, _, err) = run(
        &[
            "serve",
            "--http-addr",
            "localhost",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2, "a usage error: {err}");
    assert!(err.contains("HOST:PORT"), "{err}");
    let (code, _, err) = run(&["config", "show", "--set", "api.commit_timeout=5000"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a duration"), "{err}");
    let data = dir.path().join("data");
    let (code, _, err) = run(
        &[
            "keys",
            "create",
            "--tenant",
            "bad tenant",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("must be 1-128 characters"), "{err}");
    let (code, _, err) = run(
        &[
            "keys",
            "create",
            "--tenant",
            "t",
            "--scopes",
            "root",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("unknown scope"), "{err}");
    let (code, _, err) = run(
        &[
            "keys",
            "revoke",
            "key_nope",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("keys list"), "{err}");
}

#[test]
fn a_taken_port_is_reported_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(
        &[
            "serve",
            "--http-addr",
            &addr,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot listen on") && err.contains("--http-addr"),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for engine in ["fjall", "sqlite"] {
        let data = dir.path().join(format!("data-{engine}"));
        let first = common::Server::start_with(&data, &["--store", engine]).await;
        // Its very addresses too: the data directory is checked before anything binds,
        // so the answer names the real conflict.
        let (code, _, err) = run(
            &[
                "serve",
                "--store",
                engine,
                "--data-dir",
                data.to_str().unwrap(),
                "--http-addr",
                first.base.trim_start_matches("http://"),
                "--grpc-addr",
                first.grpc.trim_start_matches("http://"),
            ],
            &[],
        );
        assert_eq!(code, 1, "{engine}: {err}");
        assert!(err.contains("already serving"), "{engine}: {err}");
        drop(first);
    }
}

/// `keys create --tenants-from FILE` makes one key per listed tenant in one go; a bad name
/// anywhere creates none and says which line; each printed key works for its tenant only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_in_bulk_from_a_file_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let list = dir.path().join("tenants.txt");
    std::fs::write(&list, "alpha\nbeta\n\nbad tenant\n").unwrap();
    let bulk = |file: &std::path::Path| {
        run(
            &[
                "keys",
                "create",
                "--tenants-from",
                file.to_str().unwrap(),
                "--data-dir",
                data_arg,
            ],
            &[],
        )
    };
    let (code, out, err) = bulk(&list);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("line 4") && err.contains("no key was created"),
        "{err}"
    );
    let (_, listed, _) = run(&["keys", "list", "--data-dir", data_arg], &[]);
    assert!(!listed.contains("alpha"), "none created: {listed}");

    let names: Vec<String> = (0..300).map(|i| format!("bulk-{i}")).collect();
    std::fs::write(&list, names.join("\n")).unwrap();
    let (code, out, err) = bulk(&list);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("created 300 keys"), "{err}");
    let lines: Vec<(&str, &str)> = out
        .lines()
        .map(|l| l.split_once('\t').expect("TENANT<TAB>KEY"))
        .collect();
    assert_eq!(lines.len(), 300);
    assert!(
        lines.iter().zip(&names).all(|((t, _), n)| t == n),
        "input order"
    );

    let server = common::Server::start(&data).await;
    for (i, (tenant, key)) in [lines[0], lines[299]].into_iter().enumerate() {
        let api = common::Api::new(&server, key);
        let (s, v) = api
            .post("/v1/events?sync=true", &common::event(&format!("e{i}")))
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["tenant_id"], serde_json::json!(tenant));
        let (_, page) = api.get("/v1/events").await;
        assert_eq!(
            page["total"],
            serde_json::json!(1),
            "{tenant} sees its own event only"
        );
    }
}

/// `sealtrail redact` redacts through a running server's REST API with an admin key (from
/// the flag or `SEALTRAIL_API_KEY`), prints the redacted record and its redaction event,
/// and exits 1 with the server's message when refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_erases_a_record_through_the_server_and_reports_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::Server::start(&data).await;
    let rw = common::create_key(&data, "acme", "read,write");
    let admin = common::create_key(&data, "acme", "admin");
    let api = common::Api::new(&server, &rw);
    for id in ["e1", "e2"] {
        let (s, v) = api.post("/v1/events?sync=true", &common::event(id)).await;
        assert_eq!(s, 201, "{v}");
    }
    let url = server.base.as_str();

    // A read,write key is refused: exit 1 with the server's message, nothing redacted.
    let (code, out, err) = run(
        &[
            "redact",
            "e1",
            "--reason",
            "erasure request",
            "--url",
            url,
            "--api-key",
            &rw,
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("this key lacks the admin scope"), "{err}");
    let (code, _, err) = run(
        &[
            "redact", "nope", "--reason", "x", "--url", url, "--key", &admin,
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no event \"nope\""), "{err}");
    let (_, e1) = api.get("/v1/events/e1").await;
    assert!(e1.get("redacted").is_none(), "{e1}");

    // The admin key, from the environment.
    let (code, out, err) = run(
        &[
            "redact",
            "e1",
            "--reason",
            "GDPR Art. 17 request 2026-114",
            "--url",
            url,
        ],
        &[("SEALTRAIL_API_KEY", &admin)],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (_, e1) = api.get("/v1/events/e1").await;
    let by = &e1["redacted"];
    assert_eq!(by["sequence_number"], serde_json::json!(3), "{e1}");
    assert!(e1.get("actor").is_none(), "{e1}");
    let event_id = by["event_id"].as_str().unwrap();
    assert!(
        out.contains(&format!("redaction event: {event_id} (sequence 3)")),
        "{out}"
    );
    assert!(out.contains("record e1 (sequence 1) is redacted"), "{out}");
    // The record printed is the record as read now (the JSON before the summary lines).
    let printed: serde_json::Value =
        serde_json::from_str(out.split("\nredaction event:").next().unwrap()).unwrap();
    assert_eq!(printed, e1);

    let (code, out, _) = run(&["redact", "--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--reason",
        "--url",
        "--api-key",
        "SEALTRAIL_API_KEY",
        "admin",
    ] {
        assert!(out.contains(flag), "redact --help lacks {flag}: {out}");
    }
}
