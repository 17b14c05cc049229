//! The store against a real Cassandra (or Scylla): the shared conformance suite, then the
//! fencing of stale writers. Needs a node at `SEALTRAIL_TEST_CASSANDRA` (default
//! 127.0.0.1:9042); `make test-distributed` starts one. Each test uses its own keyspace.

use std::sync::Arc;
use std::time::Duration;

use scylla::statement::Consistency;
use sealtrail_scylla::{Replication, ScyllaSettings, ScyllaStore, connect, migrate};
use sealtrail_store::conformance::{self, make_chain};
use sealtrail_store::{CommitBatch, Store, StoreError};

fn settings(keyspace: &str) -> ScyllaSettings {
    ScyllaSettings {
        nodes: vec![
            std::env::var("SEALTRAIL_TEST_CASSANDRA").unwrap_or_else(|_| "127.0.0.1:9042".into()),
        ],
        keyspace: keyspace.into(),
        consistency: Consistency::LocalQuorum,
        request_timeout: Duration::from_secs(10),
    }
}

async fn fresh_store(name: &str, partitions: u32) -> ScyllaStore {
    fresh_keyspace(name, partitions).await.0
}

async fn fresh_keyspace(name: &str, partitions: u32) -> (ScyllaStore, String) {
    let keyspace = format!(
        "t_{name}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000
    );
    let settings = settings(&keyspace);
    let session = Arc::new(connect(&settings).await.expect("cassandra is reachable"));
    migrate(&session, &keyspace, &Replication::Simple(1), partitions)
        .await
        .expect("migrate");
    // Migrating again is a no-op; another partition count is refused.
    migrate(&session, &keyspace, &Replication::Simple(1), partitions)
        .await
        .expect("migrate is idempotent");
    let err = migrate(&session, &keyspace, &Replication::Simple(1), partitions + 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("log partitions"), "{err}");
    let store = ScyllaStore::with_session(session, &keyspace).await.unwrap();
    (store, keyspace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cassandra_store_passes_the_conformance_suite() {
    let store = fresh_store("conf", 4).await;
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_leave_one_chain() {
    // Two chainers that both believe they own the partition: the later claim fences the
    // earlier, and the earlier's rows (written with its older epoch as their timestamp)
    // can never overwrite the winner's.
    let store = fresh_store("race", 1).await;
    let zombie = store.fenced(0, "chainer-zombie").await.unwrap();
    let owner = store.fenced(0, "chainer-owner").await.unwrap();
    conformance::racing_writers_leave_one_chain(&zombie, &owner, "race").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_an_unmigrated_keyspace_says_to_migrate() {
    let err = ScyllaStore::connect(&settings("never_migrated_ks"))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("sealtrail migrate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_cannot_commit_and_its_rows_stay_invisible() {
    let store = fresh_store("fence", 1).await;
    let old = store.fenced(0, "chainer-old").await.unwrap();
    let recs = make_chain("fence-t", None, 6);
    old.append(CommitBatch {
        records: recs[..3].to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();

    // A newer chainer claims the partition; the old one is now a zombie.
    let new = store.fenced(0, "chainer-new").await.unwrap();
    assert!(new.epoch().unwrap().epoch > old.epoch().unwrap().epoch);
    let err = old
        .append(CommitBatch {
            records: recs[3..5].to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced(m) if m.contains("claimed")),
        "{err:?}"
    );
    // Nothing of the zombie's batch is visible.
    assert_eq!(store.scan_chain("fence-t", 0, 100).await.unwrap().len(), 3);
    assert!(
        store
            .get_event("fence-t", &recs[3].record.id)
            .await
            .unwrap()
            .is_none()
    );

    // The new owner continues the chain (replaying what it already has is harmless).
    new.append(CommitBatch {
        records: recs[2..].to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let rows = store.scan_chain("fence-t", 0, 100).await.unwrap();
    assert_eq!(rows.len(), 6);
    for (row, rec) in rows.iter().zip(&recs) {
        assert_eq!(row.hash, rec.record.hash);
    }
    // And the zombie stays fenced even for a batch that would fit the head.
    let more = make_chain("fence-t", Some(recs[5].head()), 1);
    let err = old
        .append(CommitBatch {
            records: more,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_resubmitted_is_a_no_op() {
    // Another handle (its own head cache, like a restarted chainer) resubmits a batch the
    // first one committed, and then one that overlaps the head: both settle correctly.
    let (store, keyspace) = fresh_keyspace("replay", 2).await;
    let recs = make_chain("replay-t", None, 6);
    let batch = Arc::new(CommitBatch {
        records: recs[..4].to_vec(),
        ..Default::default()
    });
    store.append_shared(batch.clone()).await.unwrap();
    let restarted = ScyllaStore::with_session(store.session().clone(), &keyspace)
        .await
        .unwrap();
    restarted
        .append_shared(batch)
        .await
        .expect("replay is a no-op");
    restarted
        .append(CommitBatch {
            records: recs[2..].to_vec(),
            ..Default::default()
        })
        .await
        .expect("overlap then new records");
    let rows = store.scan_chain("replay-t", 0, 10).await.unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[5].hash, recs[5].record.hash);
    // A gap is refused.
    let gap = make_chain("replay-t", Some(recs[5].head()), 3);
    let err = restarted
        .append(CommitBatch {
            records: gap[1..].to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(r) if r.case() == "gap"),
        "{err:?}"
    );
}
