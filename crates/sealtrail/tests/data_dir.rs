//! The data directory keeps its identity (issue 9): the other engine is refused (it would
//! re-chain every tenant from sequence 1 and sign contradicting checkpoints), also on a
//! directory from before the identity was recorded; a lost or swapped log key is refused
//! unless the operator asks for a new key, and then the new key sticks.

mod common;

use std::path::Path;

use common::*;

fn refused(data: &Path, extra: &[&str]) -> String {
    refused_to_start(data, extra)
}

async fn fill(data: &Path, key: &str, store: &str, n: usize) {
    let mut server = Server::start_with(data, &["--store", store]).await;
    let api = Api::new(&server, key);
    for i in 0..n {
        let (s, v) = api
            .post("/v1/events?sync=true", &event(&format!("e{i}")))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    assert!(server.sigterm_and_wait());
}

async fn assert_holds(data: &Path, key: &str, store: &str, n: usize) {
    let server = Server::start_with(data, &["--store", store]).await;
    assert_eq!(assert_chain_ok(&Api::new(&server, key)).await.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_engine_is_refused_on_a_data_dir() {
    for (held, other) in [("fjall", "sqlite"), ("sqlite", "fjall")] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = create_key(&data, "acme", "read,write");
        fill(&data, &key, held, 3).await;

        let err = refused(&data, &["--store", other]);
        assert!(
            err.contains(&format!("holds a {held} event store"))
                && err.contains(&format!("--store {held}")),
            "{err}"
        );
        // A directory from before the identity was recorded: told by what it holds.
        std::fs::remove_file(data.join("data-dir.json")).unwrap();
        let err = refused(&data, &["--store", other]);
        assert!(
            err.contains(&format!("holds a {held} event store")),
            "{err}"
        );
        assert_holds(&data, &key, held, 3).await;
        let identity = std::fs::read_to_string(data.join("data-dir.json")).unwrap();
        assert!(identity.contains(&format!("\"{held}\"")), "{identity}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_swapped_log_key_is_refused_unless_replaced_deliberately() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "read,write");
    fill(&data, &key, "fjall", 2).await;
    let key_file = data.join("log-key.private");
    let original = std::fs::read_to_string(&key_file).unwrap();

    // Another directory's key in its place.
    let other = dir.path().join("other");
    drop(Server::start(&other).await);
    std::fs::copy(other.join("log-key.private"), &key_file).unwrap();
    let err = refused(&data, &[]);
    assert!(err.contains("is not the key this data directory"), "{err}");

    // No key at all.
    std::fs::remove_file(&key_file).unwrap();
    let err = refused(&data, &[]);
    assert!(
        err.contains("is missing") && err.contains("--new-log-key"),
        "{err}"
    );
    assert!(!key_file.exists(), "a refused start must not make a key");

    // The original back: it starts as before.
    std::fs::write(&key_file, &original).unwrap();
    assert_holds(&data, &key, "fjall", 2).await;

    // Deliberately replaced: a new key, which then sticks.
    std::fs::remove_file(&key_file).unwrap();
    let mut server = Server::start_with(&data, &["--new-log-key"]).await;
    assert!(
        server.log().contains("log signing key changed"),
        "the change is logged: {}",
        server.log()
    );
    let renewed = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(renewed, original);
    assert!(server.sigterm_and_wait());
    assert_holds(&data, &key, "fjall", 2).await;
}
