//! The embedded store against the shared conformance suite, plus SQLite-specific checks.

use sealtrail_store::conformance::{self, make_chain};
use sealtrail_store::sqlite::SqliteStore;
use sealtrail_store::{CommitBatch, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    conformance::run_all(&store).await;
    conformance::racing_writers_leave_one_chain(&store, &store, "race").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let recs = make_chain("reopen", None, 3);
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .append(CommitBatch {
                records: recs.clone(),
                receipts: vec![],
                ..Default::default()
            })
            .await
            .unwrap();
        store.close();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let heads = store.heads(vec!["reopen".into()]).await.unwrap();
    assert_eq!(heads["reopen"], recs[2].head());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = format!("group-{t}");
            let recs = make_chain(&tenant, None, 40);
            for chunk in recs.chunks(4) {
                store
                    .append(CommitBatch {
                        records: chunk.to_vec(),
                        receipts: vec![],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for t in 0..8 {
        assert_eq!(
            store
                .scan_chain(&format!("group-{t}"), 0, 100)
                .await
                .unwrap()
                .len(),
            40
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_store_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealtrail_store::fjall::FjallStore::open(dir.path()).unwrap();
    conformance::run_all(&store).await;
    conformance::racing_writers_leave_one_chain(&store, &store, "race").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let recs = make_chain("reopen", None, 3);
    {
        let store = sealtrail_store::fjall::FjallStore::open(dir.path()).unwrap();
        store
            .append(CommitBatch {
                records: recs.clone(),
                receipts: vec![],
                ..Default::default()
            })
            .await
            .unwrap();
        store.close();
    }
    let store = sealtrail_store::fjall::FjallStore::open(dir.path()).unwrap();
    let heads = store
        .heads(vec!["reopen".into(), "reope".into(), "reopenx".into()])
        .await
        .unwrap();
    assert_eq!(heads.len(), 1, "tenants sharing a name prefix stay apart");
    assert_eq!(heads["reopen"], recs[2].head());
}
