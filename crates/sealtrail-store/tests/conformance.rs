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

/// The fjall index keeps 64 record pointers to a `records` entry. Frames whose tenants'
/// runs start and end inside entries and span several are read back from the index alone
/// (after a reopen nothing is in the in-memory tail): by id, as chain ranges from every
/// position, and as the tree's lower nodes, which are computed from the pointers' hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_reads_record_pointers_across_entries() {
    use sealtrail_core::merkle::Frontier;
    use sealtrail_core::record::ChainedRecord;
    let dir = tempfile::tempdir().unwrap();
    // In a frame's (tenant, seq) order: a at indexes 0 – 69 (entries 0 and 1), b at 70,
    // c at 71 – 200 (entries 1 to 3).
    let tenants = [("ptr-a", 70usize), ("ptr-b", 1), ("ptr-c", 130)];
    let mut chains: Vec<Vec<ChainedRecord>> = vec![Vec::new(); 3];
    let mut frontiers = [Frontier::new(), Frontier::new(), Frontier::new()];
    let mut nodes = vec![Vec::new(); 3];
    {
        let store = sealtrail_store::fjall::FjallStore::open(dir.path()).unwrap();
        for _ in 0..3 {
            let mut batch = CommitBatch::default();
            // c first: the frame sorts its records by tenant whatever the batch's order.
            for t in [2, 0, 1] {
                let (tenant, n) = tenants[t];
                let recs = make_chain(tenant, chains[t].last().map(|r| r.head()), n);
                let made = conformance::tree_nodes_of(&mut frontiers[t], &recs);
                nodes[t].extend(made.iter().cloned());
                batch.tree_nodes.extend(made);
                batch.records.extend(recs.iter().cloned());
                chains[t].extend(recs);
            }
            store.append(batch).await.unwrap();
        }
        store.close();
    }
    let store = sealtrail_store::fjall::FjallStore::open(dir.path()).unwrap();
    assert_eq!(
        store.unindexed_bytes(),
        0,
        "everything is read from the index"
    );
    for (t, (tenant, _)) in tenants.iter().enumerate() {
        let chain = &chains[t];
        let heads = store.heads(vec![tenant.to_string()]).await.unwrap();
        assert_eq!(heads[*tenant], chain.last().unwrap().head());
        for rec in chain {
            let got = store
                .get_event(tenant, &rec.record.id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{tenant} {}", rec.record.sequence_number));
            assert_eq!(got.record, rec.record);
        }
        for after in 0..=chain.len() {
            for limit in [1, 2, 65, chain.len()] {
                let rows = store.scan_chain(tenant, after as u64, limit).await.unwrap();
                let want = &chain[after..(after + limit).min(chain.len())];
                assert_eq!(
                    rows.len(),
                    want.len(),
                    "{tenant} after {after} limit {limit}"
                );
                for (row, rec) in rows.iter().zip(want) {
                    assert_eq!(row.sequence_number, rec.record.sequence_number);
                    assert_eq!(row.canonical, rec.canonical);
                }
            }
        }
        let ids = nodes[t].iter().map(|n| n.id).collect::<Vec<_>>();
        assert!(
            chain.len() < 128 || ids.iter().any(|id| id.level == 7),
            "{tenant}: nodes of 128 leaves, computed from pointers"
        );
        let got = store.tree_nodes(tenant, ids).await.unwrap();
        for (node, got) in nodes[t].iter().zip(got) {
            assert_eq!(got, Some(node.hash), "{tenant} node {:?}", node.id);
        }
    }
}
