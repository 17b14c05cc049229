//! The store against a real Cassandra (or Scylla): the shared conformance suite, then the
//! fencing of stale writers. Needs a node at `SEALTRAIL_TEST_CASSANDRA` (default
//! 127.0.0.1:9042); `make test-distributed` starts one. Each test uses its own keyspace.

use std::sync::Arc;
use std::time::Duration;

use scylla::statement::Consistency;
use sealtrail_core::merkle::{Frontier, NodeId};
use sealtrail_core::record::ChainHead;
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
async fn destination_claims_fence_a_stale_delivery_task() {
    let store = fresh_store("claims", 1).await;
    conformance::destination_claims_fence_stale_tasks(&store).await;
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

/// `claimed_at` of log partition 0.
async fn claimed_at(store: &ScyllaStore, keyspace: &str) -> Option<i64> {
    store
        .session()
        .query_unpaged(
            format!("SELECT claimed_at FROM {keyspace}.heads WHERE log_partition = 0 LIMIT 1"),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .maybe_first_row::<(Option<i64>,)>()
        .unwrap()
        .and_then(|(at,)| at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_a_keyspace_of_schema_version_2_and_claims_stamp_their_epochs() {
    let (store, keyspace) = fresh_keyspace("schema_v2", 1).await;
    // A keyspace as schema version 2 left it: `heads` without `claimed_at`, a claim made.
    let session = store.session().clone();
    session
        .query_unpaged(format!("ALTER TABLE {keyspace}.heads DROP claimed_at"), ())
        .await
        .unwrap();
    session
        .query_unpaged(
            format!("UPDATE {keyspace}.heads SET epoch = 7, owner = 'old' WHERE log_partition = 0"),
            (),
        )
        .await
        .unwrap();
    let err = ScyllaStore::with_session(session.clone(), &keyspace)
        .await
        .err()
        .expect("a keyspace without claimed_at is refused");
    assert!(err.to_string().contains("sealtrail migrate"), "{err}");

    migrate(&session, &keyspace, &Replication::Simple(1), 1)
        .await
        .unwrap();
    let store = ScyllaStore::with_session(session.clone(), &keyspace)
        .await
        .unwrap();
    assert_eq!(
        store.meta("schema_version").await.unwrap().as_deref(),
        Some("3")
    );
    assert_eq!(claimed_at(&store, &keyspace).await, None);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    };
    // The first claim after the upgrade: the present (there is no earlier base).
    let before = now();
    let first = store.fenced(0, "chainer-1").await.unwrap();
    assert_eq!(first.epoch().unwrap().epoch, 8);
    let at1 = claimed_at(&store, &keyspace)
        .await
        .expect("claimed_at written");
    assert!((before..=now()).contains(&at1), "{at1} not the present");
    // The next one, right after: at least CLAIM_SPAN above, though the clock moved less.
    let second = store.fenced(0, "chainer-2").await.unwrap();
    assert_eq!(second.epoch().unwrap().epoch, 9);
    let at2 = claimed_at(&store, &keyspace).await.unwrap();
    assert!(
        at2 >= at1 + sealtrail_scylla::fence::CLAIM_SPAN,
        "{at2} vs {at1}"
    );
    // And the chain works on the upgraded keyspace.
    let recs = make_chain("upgraded", None, 5);
    second
        .append(CommitBatch {
            records: recs.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = store
        .get_event("upgraded", &recs[4].record.id)
        .await
        .unwrap();
    assert_eq!(got.unwrap().record, recs[4].record);
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

/// Appends through one handle, reads through another: a chainer's fenced handle and a
/// gateway's unfenced one.
struct WriterReader {
    writer: ScyllaStore,
    reader: ScyllaStore,
}

#[async_trait::async_trait]
impl Store for WriterReader {
    async fn append_shared(&self, batch: Arc<CommitBatch>) -> sealtrail_store::StoreResult<()> {
        self.writer.append_shared(batch).await
    }
    async fn heads(
        &self,
        tenants: Vec<String>,
    ) -> sealtrail_store::StoreResult<std::collections::HashMap<String, ChainHead>> {
        self.reader.heads(tenants).await
    }
    async fn find_events(
        &self,
        keys: Vec<(String, String)>,
    ) -> sealtrail_store::StoreResult<Vec<sealtrail_store::StoredEvent>> {
        self.reader.find_events(keys).await
    }
    async fn get_event(
        &self,
        tenant_id: &str,
        event_id: &str,
    ) -> sealtrail_store::StoreResult<Option<sealtrail_store::StoredEvent>> {
        self.reader.get_event(tenant_id, event_id).await
    }
    async fn get_receipt(
        &self,
        tenant_id: &str,
        receipt_id: &str,
    ) -> sealtrail_store::StoreResult<Option<sealtrail_core::receipt::Receipt>> {
        self.reader.get_receipt(tenant_id, receipt_id).await
    }
    async fn list_events(
        &self,
        tenant_id: &str,
        query: sealtrail_store::EventQuery,
    ) -> sealtrail_store::StoreResult<sealtrail_store::EventPage> {
        self.reader.list_events(tenant_id, query).await
    }
    async fn scan_chain(
        &self,
        tenant_id: &str,
        after: u64,
        limit: usize,
    ) -> sealtrail_store::StoreResult<Vec<sealtrail_store::ChainRow>> {
        self.reader.scan_chain(tenant_id, after, limit).await
    }
    async fn tree_nodes(
        &self,
        tenant_id: &str,
        ids: Vec<NodeId>,
    ) -> sealtrail_store::StoreResult<Vec<Option<sealtrail_core::merkle::Hash>>> {
        self.reader.tree_nodes(tenant_id, ids).await
    }
    async fn create_key(&self, key: sealtrail_store::ApiKey) -> sealtrail_store::StoreResult<()> {
        self.reader.create_key(key).await
    }
    async fn find_key(
        &self,
        key_hash: &str,
    ) -> sealtrail_store::StoreResult<Option<sealtrail_store::ApiKey>> {
        self.reader.find_key(key_hash).await
    }
    async fn list_keys(
        &self,
        tenant_id: Option<&str>,
    ) -> sealtrail_store::StoreResult<Vec<sealtrail_store::ApiKey>> {
        self.reader.list_keys(tenant_id).await
    }
    async fn revoke_key(
        &self,
        key_id: &str,
        revoked_at: &str,
    ) -> sealtrail_store::StoreResult<bool> {
        self.reader.revoke_key(key_id, revoked_at).await
    }
    fn erases_redacted(&self) -> bool {
        self.writer.erases_redacted()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_handle_reads_its_own_appends_before_their_derived_rows_are_written() {
    // The chainer's view: ids and tree nodes still queued for derivation (the deriver is
    // held) are found by its idempotency checks and frontier loads.
    let store = fresh_store("own", 1).await;
    let fenced = store.fenced(0, "chainer-own").await.unwrap();
    fenced.pause_deriving(true);
    conformance::run_all_but_erasure(&fenced).await;
    // Erasures happen when the deriver writes: let it.
    fenced.pause_deriving(false);
    conformance::redactions_erase_and_keep_the_links(&fenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_readers_see_committed_records_before_their_derived_rows_are_written() {
    // A gateway's view: appends by a chainer whose derived rows are not written (held
    // here; a crash or a slow store in production) are read by id, listed and proved
    // from the committed records past the watermark.
    let (store, keyspace) = fresh_keyspace("tail", 1).await;
    let writer = store.fenced(0, "chainer-tail").await.unwrap();
    writer.pause_deriving(true);
    let reader = ScyllaStore::with_session(store.session().clone(), &keyspace)
        .await
        .unwrap();
    let both = WriterReader { writer, reader };
    conformance::run_all_but_erasure(&both).await;
    both.writer.pause_deriving(false);
    conformance::redactions_erase_and_keep_the_links(&both).await;
}

async fn derived_to(store: &ScyllaStore, keyspace: &str, tenant: &str) -> Option<i64> {
    store
        .session()
        .query_unpaged(
            format!("SELECT derived_to FROM {keyspace}.derived WHERE log_partition = 0 AND tenant_id = ?"),
            (tenant,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .maybe_first_row::<(Option<i64>,)>()
        .unwrap()
        .and_then(|(d,)| d)
}

async fn id_rows(store: &ScyllaStore, keyspace: &str) -> usize {
    let rows = store
        .session()
        .query_unpaged(format!("SELECT event_id FROM {keyspace}.ids"), ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    rows.rows::<(String,)>().unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_owner_derives_what_a_dead_owner_committed_and_a_zombie_cannot_undo_it() {
    let (store, keyspace) = fresh_keyspace("derive", 1).await;
    let recs = make_chain("derive-t", None, 300);
    let mut frontier = Frontier::new();
    let old = store.fenced(0, "chainer-old").await.unwrap();
    // The old owner commits 200 records in batches, but dies before writing any derived
    // row (held here).
    old.pause_deriving(true);
    for chunk in recs[..200].chunks(37) {
        let nodes = conformance::tree_nodes_of(&mut frontier, chunk);
        old.append(CommitBatch {
            records: chunk.to_vec(),
            tree_nodes: nodes,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(derived_to(&store, &keyspace, "derive-t").await, None);
    assert_eq!(id_rows(&store, &keyspace).await, 0, "nothing derived yet");

    // The next owner derives them at its claim, before it appends.
    let new = store.fenced(0, "chainer-new").await.unwrap();
    assert_eq!(derived_to(&store, &keyspace, "derive-t").await, Some(200));
    assert_eq!(id_rows(&store, &keyspace).await, 200);
    let nodes = conformance::tree_nodes_of(&mut frontier, &recs[200..]);
    new.append(CommitBatch {
        records: recs[200..].to_vec(),
        tree_nodes: nodes,
        ..Default::default()
    })
    .await
    .unwrap();
    // Its own deriver writes the rest behind the acknowledgement.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while derived_to(&store, &keyspace, "derive-t").await != Some(300) {
        assert!(
            std::time::Instant::now() < deadline,
            "derived rows never written"
        );
        tokio::time::sleep(ScyllaStore::DERIVE_LINGER).await;
    }

    // The zombie cannot commit (a record 201 of its own, by the head it last knew), and
    // its late deriver (released now) writes only rows of what it committed, equal to the
    // chain's, and cannot move the watermark back.
    let mut fork = make_chain("derive-x", Some(recs[199].head()), 1);
    fork[0].record.tenant_id = "derive-t".into();
    let err = old
        .append(CommitBatch {
            records: fork,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
    old.pause_deriving(false);
    tokio::time::sleep(ScyllaStore::DERIVE_LINGER * 10).await;
    assert_eq!(derived_to(&store, &keyspace, "derive-t").await, Some(300));
    assert_eq!(id_rows(&store, &keyspace).await, 300);

    // Every derived row equals the chain: ids, and every complete node of the tree,
    // read from the tables (the watermark is at the head, so nothing is computed).
    let reader = ScyllaStore::with_session(store.session().clone(), &keyspace)
        .await
        .unwrap();
    for rec in &recs {
        let got = reader.get_event("derive-t", &rec.record.id).await.unwrap();
        assert_eq!(got.unwrap().record, rec.record);
    }
    let mut all = Vec::new();
    conformance::tree_nodes_of(&mut Frontier::new(), &recs)
        .into_iter()
        .for_each(|n| all.push(n));
    let ids: Vec<NodeId> = all.iter().map(|n| n.id).collect();
    let got = reader.tree_nodes("derive-t", ids).await.unwrap();
    for (node, got) in all.iter().zip(got) {
        assert_eq!(got, Some(node.hash), "node {:?}", node.id);
    }
}

/// What a list must answer, computed from the records themselves.
fn expected(
    recs: &[sealtrail_core::record::ChainedRecord],
    query: &sealtrail_store::EventQuery,
) -> (Vec<u64>, u64) {
    use sealtrail_store::Paging;
    let matching: Vec<u64> = recs
        .iter()
        .filter(|r| query.matches(&r.record))
        .map(|r| r.record.sequence_number)
        .collect();
    match query.paging {
        Paging::Page { page, page_size } => {
            let skip = (page.max(1) as usize - 1) * page_size as usize;
            let page: Vec<u64> = matching
                .iter()
                .skip(skip)
                .take(page_size as usize)
                .copied()
                .collect();
            (page, matching.len() as u64)
        }
        Paging::After { after, page_size } => {
            let rest: Vec<u64> = matching.iter().copied().filter(|s| *s > after).collect();
            let total = rest.len() as u64;
            (rest.into_iter().take(page_size as usize).collect(), total)
        }
    }
}

fn queries() -> Vec<sealtrail_store::EventQuery> {
    use sealtrail_core::event::{ActorType, Outcome};
    use sealtrail_store::{EventQuery, Paging};
    let page = |page, page_size| Paging::Page { page, page_size };
    let mut out = Vec::new();
    for paging in [
        page(1, 50),
        page(3, 100),
        page(20, 50),
        Paging::After {
            after: 1500,
            page_size: 70,
        },
    ] {
        let base = EventQuery {
            paging,
            ..Default::default()
        };
        out.push(EventQuery {
            actor_id: Some("actor-1".into()),
            ..base.clone()
        });
        out.push(EventQuery {
            action: Some("document.delete".into()),
            ..base.clone()
        });
        out.push(EventQuery {
            resource_id: Some("doc-2".into()),
            ..base.clone()
        });
        out.push(EventQuery {
            resource_id: Some("doc-none".into()),
            ..base.clone()
        });
        out.push(EventQuery {
            actor_type: Some(ActorType::Agent),
            ..base.clone()
        });
        out.push(EventQuery {
            outcome: Some(Outcome::Failure),
            ..base.clone()
        });
        out.push(EventQuery {
            actor_id: Some("actor-2".into()),
            action: Some("document.read".into()),
            ..base.clone()
        });
        out.push(EventQuery {
            from: Some("2024-01-01T00:00:10.000000Z".into()),
            to: Some("2024-01-01T00:00:40.000000Z".into()),
            ..base.clone()
        });
        out.push(EventQuery {
            resource_id: Some("doc-1".into()),
            from: Some("2024-01-01T00:00:30.000000Z".into()),
            ..base.clone()
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_lists_read_the_facets_and_agree_with_the_records() {
    // 2,600 records: two complete blocks of 1,024 with facet rows, and a tail read
    // directly; every filter, combinations, time ranges and both kinds of paging must
    // answer exactly what filtering the records gives — through the facets (derived) and
    // through the records alone (a writer whose derived rows are held).
    let (store, keyspace) = fresh_keyspace("facets", 1).await;
    let derived = make_chain("facets-d", None, 2600);
    for chunk in derived.chunks(300) {
        store
            .append(CommitBatch {
                records: chunk.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let rows = store
        .session()
        .query_unpaged(format!("SELECT block FROM {keyspace}.facets"), ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let blocks: std::collections::BTreeSet<i64> = rows
        .rows::<(i64,)>()
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(
        blocks.into_iter().collect::<Vec<_>>(),
        vec![0, 1],
        "complete blocks only"
    );

    let writer = store.fenced(0, "chainer-facets").await.unwrap();
    writer.pause_deriving(true);
    let held = make_chain("facets-h", None, 2600);
    for chunk in held.chunks(300) {
        writer
            .append(CommitBatch {
                records: chunk.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for (tenant, recs) in [("facets-d", &derived), ("facets-h", &held)] {
        for query in queries() {
            let page = store.list_events(tenant, query.clone()).await.unwrap();
            let got: Vec<u64> = page.events.iter().map(|r| r.sequence_number).collect();
            let (want, total) = expected(recs, &query);
            assert_eq!((got, page.total), (want, total), "{tenant}: {query:?}");
        }
    }
}

/// The node's data directory and `nodetool` (deploy/local/cassandra.sh, which `make
/// test-distributed` starts): `None` when the node is not the local one.
fn local_node() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let infra = std::env::var_os("SEALTRAIL_INFRA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join(".build/infra"));
    let data = infra.join("cassandra/data/data");
    let script = repo.join("deploy/local/cassandra.sh");
    (data.is_dir() && std::env::var_os("SEALTRAIL_TEST_CASSANDRA").is_none())
        .then_some((data, script))
}

fn nodetool(script: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(script)
        .arg("nodetool")
        .args(args)
        .output()
        .expect("run nodetool");
    assert!(
        out.status.success(),
        "nodetool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tenant`'s records whose actor id is `actor`.
async fn by_actor(store: &ScyllaStore, tenant: &str, actor: &str) -> sealtrail_store::EventPage {
    store
        .list_events(
            tenant,
            sealtrail_store::EventQuery {
                actor_id: Some(actor.to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// `before` records of `tenant`, then one made from `marked` (an event's JSON), then
/// `after` more, chained.
fn chain_around(
    tenant: &str,
    before: usize,
    marked: serde_json::Value,
    after: usize,
) -> Vec<sealtrail_core::record::ChainedRecord> {
    let mut recs = make_chain(tenant, None, before);
    let event =
        sealtrail_core::event::validate_event(marked, 1_704_067_200_000_000, || unreachable!())
            .unwrap();
    let head = recs.last().map(|r| r.head());
    recs.push(sealtrail_core::record::chain_step(
        head.as_ref(),
        tenant,
        event,
    ));
    let head = recs.last().map(|r| r.head());
    recs.extend(make_chain(tenant, head, after));
    recs
}

/// Sets `gc_grace_seconds` of `tables` to 0: their tombstones go at the next compaction.
async fn no_gc_grace(store: &ScyllaStore, keyspace: &str, tables: &[&str]) {
    for table in tables {
        store
            .session()
            .query_unpaged(
                format!("ALTER TABLE {keyspace}.{table} WITH gc_grace_seconds = 0"),
                (),
            )
            .await
            .unwrap();
    }
}

/// Waits (up to 20 s) until `tenant`'s watermark is `to`.
async fn wait_derived(store: &ScyllaStore, keyspace: &str, tenant: &str, to: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while derived_to(store, keyspace, tenant).await != Some(to) {
        assert!(
            std::time::Instant::now() < deadline,
            "not derived to {to} in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Flushes `keyspace`, checks that `mark` is in its SSTables (else the caller's test
/// proves nothing), compacts it, and checks that `mark` is then in none of its data files.
async fn gone_after_a_compaction(
    script: &std::path::Path,
    data: &std::path::Path,
    keyspace: &str,
    mark: &str,
) {
    let in_keyspace = || -> Vec<String> {
        files_containing(data, mark.as_bytes())
            .into_iter()
            .filter(|f| f.contains(keyspace))
            .collect()
    };
    nodetool(script, &["flush", keyspace]);
    assert!(
        !in_keyspace().is_empty(),
        "the SSTables flushed before the removal should still hold the content"
    );
    // A tombstone is purged once its deletion second is before now - gc_grace (0 in these
    // tests): let a second pass. A major compaction skips SSTables an automatic one holds
    // at the time, so a second one follows if the first left any.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut after = Vec::new();
    for _ in 0..2 {
        nodetool(script, &["compact", keyspace]);
        after = in_keyspace();
        if after.is_empty() {
            break;
        }
        eprintln!("still in {after:?} after a compaction; compacting again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        after.is_empty(),
        "removed bytes are still in the keyspace's data files after a compaction: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacted_records_content_leaves_the_data_files_after_a_compaction() {
    // Issue 15: the erased bytes are gone from the node's data files once compacted —
    // the record's cell in `events` and, past gc_grace_seconds, the tombstones of the
    // filter-index rows of values only it had (set to 0 here to compact them away now).
    let Some((data, script)) = local_node() else {
        eprintln!("skipped: not the local node of deploy/local (SEALTRAIL_TEST_CASSANDRA set)");
        return;
    };
    let (store, keyspace) = fresh_keyspace("erase", 1).await;
    no_gc_grace(&store, &keyspace, &["facets"]).await;
    let fenced = store.fenced(0, "chainer-erase").await.unwrap();
    let tenant = "erase";
    let mark = format!("pii{:x}", std::process::id() as u64 * 7919 + 3);
    // 1,030 records (a complete facet block); record 500 carries the personal data in
    // its actor id (a filter value only it has), email, resource name and metadata.
    let recs = chain_around(
        tenant,
        499,
        serde_json::json!({
            "id": format!("{tenant}-personal"),
            "timestamp": "2024-01-01T00:00:05Z",
            "actor": {"id": format!("subject-{mark}"), "type": "human", "email": format!("{mark}@example.com")},
            "action": "profile.update",
            "resource": {"id": "profile-1", "type": "profile", "name": format!("Profile of {mark}")},
            "outcome": "success",
            "metadata": {"note": format!("note-{mark}")},
        }),
        530,
    );
    let head = Some(recs[1029].head());
    let mut frontier = Frontier::new();
    append_all(&fenced, &mut frontier, &recs).await;
    let target = &recs[499].record;
    assert!(target.actor.id.contains(&mark));
    // Derived (the block's facet rows written), then flushed: the content is in SSTables.
    wait_derived(&store, &keyspace, tenant, 1030).await;
    nodetool(&script, &["flush", &keyspace]);
    let redaction = conformance::redaction_of(tenant, head.as_ref().unwrap(), target);
    let nodes = conformance::tree_nodes_of(&mut frontier, std::slice::from_ref(&redaction));
    fenced
        .append(CommitBatch {
            records: vec![redaction],
            tree_nodes: nodes,
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = fenced.get_event(tenant, &target.id).await.unwrap().unwrap();
        if got.record.redacted.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not erased in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filtered = by_actor(&fenced, tenant, &target.actor.id).await;
    assert_eq!(
        filtered.total, 0,
        "a filter still finds the redacted record"
    );

    gone_after_a_compaction(&script, &data, &keyspace, &mark).await;
    // What stays is what proofs need: the record reads redacted, with its hash.
    let got = fenced.get_event(tenant, &target.id).await.unwrap().unwrap();
    assert_eq!(got.record.hash, target.hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_owner_finishes_an_erasure_a_dead_owner_left() {
    // The old owner commits records and a redaction event naming record 7, and dies
    // before deriving anything (held here): the record is whole, its redaction past the
    // watermark. The next owner's catch-up finds the redaction event and erases it
    // before its first append.
    let (store, keyspace) = fresh_keyspace("erase_owner", 1).await;
    let tenant = "erase-owner";
    let recs = make_chain(tenant, None, 40);
    let mut frontier = Frontier::new();
    let old = store.fenced(0, "chainer-old").await.unwrap();
    old.pause_deriving(true);
    let nodes = conformance::tree_nodes_of(&mut frontier, &recs);
    old.append(CommitBatch {
        records: recs.clone(),
        tree_nodes: nodes,
        ..Default::default()
    })
    .await
    .unwrap();
    let target = &recs[6].record;
    let redaction = conformance::redaction_of(tenant, &recs[39].head(), target);
    let nodes = conformance::tree_nodes_of(&mut frontier, std::slice::from_ref(&redaction));
    old.append(CommitBatch {
        records: vec![redaction.clone()],
        tree_nodes: nodes,
        ..Default::default()
    })
    .await
    .unwrap();
    let reader = ScyllaStore::with_session(store.session().clone(), &keyspace)
        .await
        .unwrap();
    let got = reader.get_event(tenant, &target.id).await.unwrap().unwrap();
    assert!(
        got.record.redacted.is_none(),
        "nothing derived, nothing erased yet"
    );

    let _new = store.fenced(0, "chainer-new").await.unwrap();
    assert_eq!(derived_to(&store, &keyspace, tenant).await, Some(41));
    let got = reader.get_event(tenant, &target.id).await.unwrap().unwrap();
    let (_, _, by) = redaction.record.redaction_order().unwrap();
    assert_eq!(
        got.record,
        target.redact(by),
        "the catch-up erased record 7"
    );
    let filtered = by_actor(&reader, tenant, &target.actor.id).await;
    assert!(filtered.events.iter().all(|e| e.id != target.id));
    // The zombie's late deriver, released, erases again (a no-op) and changes nothing.
    old.pause_deriving(false);
    tokio::time::sleep(ScyllaStore::DERIVE_LINGER * 10).await;
    let again = reader.get_event(tenant, &target.id).await.unwrap().unwrap();
    assert_eq!(again.record, got.record);
}

/// Waits (up to 20 s) until `held()` is `want`.
async fn wait_held(held: impl Fn() -> usize, want: usize, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while held() != want {
        assert!(std::time::Instant::now() < deadline, "{what}: not in 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owners_late_facet_rows_cannot_bring_an_erased_value_back() {
    late_facet_rows_of_a_former_owner("zombie_erase", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owners_late_facet_rows_cannot_bring_removed_records_back() {
    late_facet_rows_of_a_former_owner("zombie_prune", true).await;
}

/// 1,030 records of `tenant`: block 0 (1..=1024) is complete; record 300 alone has actor
/// `unique`.
fn one_actor_chain(tenant: &str, unique: &str) -> Vec<sealtrail_core::record::ChainedRecord> {
    chain_around(
        tenant,
        299,
        serde_json::json!({
            "id": format!("{tenant}-personal"),
            "timestamp": "2024-01-01T00:00:05Z",
            "actor": {"id": unique, "type": "human"},
            "action": "profile.update",
            "resource": {"id": "profile-1", "type": "profile"},
            "outcome": "success",
        }),
        730,
    )
}

/// After [`one_actor_chain`]: a redaction of record 300, or (`prune`) a removal of records
/// 1..=499.
fn removal_of(
    prune: bool,
    recs: &[sealtrail_core::record::ChainedRecord],
) -> sealtrail_core::record::ChainedRecord {
    let (tenant, head) = (recs[1029].record.tenant_id.as_str(), recs[1029].head());
    if prune {
        conformance::prune_of(tenant, &head, 500)
    } else {
        conformance::redaction_of(tenant, &head, &recs[299].record)
    }
}

/// After [`removal_of`]: no filter finds record 300 by its `unique` actor, which has no
/// facet row; block 0 lists the records kept; record 300 reads redacted (`prune`: is gone).
async fn removal_done(
    store: &ScyllaStore,
    keyspace: &str,
    recs: &[sealtrail_core::record::ChainedRecord],
    unique: &str,
    prune: bool,
    label: &str,
) {
    let (tenant, target) = (recs[299].record.tenant_id.as_str(), &recs[299].record);
    assert_eq!(
        by_actor(store, tenant, unique).await.total,
        0,
        "{label}: a filter finds the record"
    );
    assert!(
        facet_blocks(store, keyspace, tenant, 1, unique)
            .await
            .is_empty(),
        "{label}: the value only it had has a facet row"
    );
    assert_eq!(
        facet_blocks(store, keyspace, tenant, 0, "").await,
        vec![(0, if prune { 525 } else { 1023 })],
        "{label}: block 0 lists the records kept"
    );
    let got = store.get_event(tenant, &target.id).await.unwrap();
    if prune {
        assert!(got.is_none(), "{label}: a removed record is found by id");
    } else {
        assert!(
            got.unwrap().record.redacted.is_some(),
            "{label}: not redacted"
        );
    }
}

/// The window a deposed owner used to have: its gather passed the ownership check, read
/// a block's records, and writes the block's facet rows only after the next owner erased
/// one of them (or, with `prune`, removed the records before 500 by retention). Its rows
/// carry its claim's write timestamps, below every one of the next owner's (`fence.rs`),
/// so they lose: no filter finds the record by the value only it had.
async fn late_facet_rows_of_a_former_owner(name: &str, prune: bool) {
    let (store, keyspace) = fresh_keyspace(name, 1).await;
    let tenant = "zombie-facets";
    let unique = "subject-erased-later";
    let recs = one_actor_chain(tenant, unique);
    let target = &recs[299].record;
    assert_eq!(target.actor.id, unique);
    let old = store.fenced(0, "chainer-old").await.unwrap();
    old.hold_facet_writes(true);
    let mut frontier = Frontier::new();
    append_all(&old, &mut frontier, &recs).await;
    // The old owner's deriver has read block 0 (record 300 whole) and waits to write.
    wait_held(|| old.facet_writes_held(), 1, "the old owner's facet write").await;

    // The next owner's catch-up derives block 0; then it erases record 300 (or removes
    // records 1..=499).
    let new = store.fenced(0, "chainer-new").await.unwrap();
    assert_eq!(by_actor(&new, tenant, unique).await.total, 1);
    let removal = removal_of(prune, &recs);
    let nodes = conformance::tree_nodes_of(&mut frontier, std::slice::from_ref(&removal));
    new.append(CommitBatch {
        records: vec![removal],
        tree_nodes: nodes,
        ..Default::default()
    })
    .await
    .unwrap();
    wait_derived(&store, &keyspace, tenant, 1031).await;
    removal_done(&new, &keyspace, &recs, unique, prune, "after the removal").await;

    // The old owner's write, from the records it read before the erasure, lands now.
    old.hold_facet_writes(false);
    wait_held(
        || old.facet_writes_held(),
        0,
        "the old owner's released write",
    )
    .await;
    tokio::time::sleep(ScyllaStore::DERIVE_LINGER * 10).await;
    removal_done(
        &new,
        &keyspace,
        &recs,
        unique,
        prune,
        "after the old owner's late write",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owners_facet_rows_leave_out_a_record_a_former_owner_erases_meanwhile() {
    new_owner_while_a_former_owner_removes("catch_up_erased", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owners_facet_rows_leave_out_records_a_former_owner_removes_meanwhile() {
    new_owner_while_a_former_owner_removes("catch_up_pruned", true).await;
}

/// The other side of the window: the old owner committed a block and a redaction of its
/// record 300 (with `prune`: a removal of records 1..=499) and died (or stalled) before
/// deriving. The new owner's catch-up reads the block with the records whole; before it
/// writes the block's facet rows, the former owner's erasure (removal) lands — simulated:
/// the record's row made redacted (the rows emptied and the boundary moved), as its
/// erasure (removal) does last. The catch-up's own erasure (removal) then finds that done
/// and skips those records, so its facet rows must already leave them out.
async fn new_owner_while_a_former_owner_removes(name: &str, prune: bool) {
    let (store, keyspace) = fresh_keyspace(name, 1).await;
    let tenant = "catch-up-doomed";
    let unique = "subject-removed-meanwhile";
    let recs = one_actor_chain(tenant, unique);
    let target = &recs[299].record;
    let old = store.fenced(0, "chainer-old").await.unwrap();
    old.pause_deriving(true);
    let mut frontier = Frontier::new();
    append_all(&old, &mut frontier, &recs).await;
    let removal = removal_of(prune, &recs);
    append_all(&old, &mut frontier, std::slice::from_ref(&removal)).await;

    store.hold_facet_writes(true);
    let claimer = store.clone();
    let claim = tokio::spawn(async move { claimer.fenced(0, "chainer-new").await });
    wait_held(
        || store.facet_writes_held(),
        1,
        "the catch-up's facet write",
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let session = store.session();
    if prune {
        for seq in 1..500i64 {
            session
                .query_unpaged(
                    format!(
                        "UPDATE {keyspace}.events USING TIMESTAMP ? SET canonical = 0x, \
                         input_digest = '', event_id = '' \
                         WHERE tenant_id = ? AND bucket = 0 AND sequence_number = ?"
                    ),
                    (now, tenant, seq),
                )
                .await
                .unwrap();
        }
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.retention (tenant_id, retained_from, previous) \
                     VALUES (?, 500, 1) USING TIMESTAMP 500"
                ),
                (tenant,),
            )
            .await
            .unwrap();
    } else {
        let (_, _, by) = removal.record.redaction_order().unwrap();
        session
            .query_unpaged(
                format!(
                    "UPDATE {keyspace}.events USING TIMESTAMP ? SET canonical = ? \
                     WHERE tenant_id = ? AND bucket = 0 AND sequence_number = 300"
                ),
                (now, target.redacted_stored(&by), tenant),
            )
            .await
            .unwrap();
    }
    store.hold_facet_writes(false);
    let new = claim.await.unwrap().unwrap();

    assert_eq!(derived_to(&store, &keyspace, tenant).await, Some(1031));
    removal_done(&new, &keyspace, &recs, unique, prune, "after the catch-up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_used_again_after_retention_removed_its_record_is_found() {
    // Within one claim, rows derived after a removal are stamped above its tombstones
    // (`fence.rs`): the `ids` row of a record that takes the id of a removed one is
    // written after the removal deleted the old row, and must not be shadowed by it.
    let (store, keyspace) = fresh_keyspace("id_again", 1).await;
    let tenant = "id-again";
    let fenced = store.fenced(0, "chainer-id-again").await.unwrap();
    let recs = make_chain(tenant, None, 20);
    let mut frontier = Frontier::new();
    append_all(&fenced, &mut frontier, &recs).await;
    let prune = conformance::prune_of(tenant, &recs[19].head(), 11);
    append_all(&fenced, &mut frontier, std::slice::from_ref(&prune)).await;
    wait_derived(&store, &keyspace, tenant, 21).await;
    let reused = recs[0].record.id.clone();
    let reader = ScyllaStore::with_session(store.session().clone(), &keyspace)
        .await
        .unwrap();
    assert!(reader.get_event(tenant, &reused).await.unwrap().is_none());

    let event = sealtrail_core::event::validate_event(
        serde_json::json!({
            "id": reused,
            "timestamp": "2024-01-01T00:01:00Z",
            "actor": {"id": "actor-again", "type": "human"},
            "action": "document.read",
            "resource": {"id": "doc-1", "type": "document"},
            "outcome": "success",
        }),
        1_704_067_500_000_000,
        || unreachable!(),
    )
    .unwrap();
    let again = sealtrail_core::record::chain_step(Some(&prune.head()), tenant, event);
    assert_eq!(again.record.sequence_number, 22);
    append_all(&fenced, &mut frontier, std::slice::from_ref(&again)).await;
    wait_derived(&store, &keyspace, tenant, 22).await;
    // The watermark is past it: the reader answers from the `ids` table.
    let got = reader.get_event(tenant, &reused).await.unwrap();
    assert_eq!(got.map(|e| e.record.sequence_number), Some(22));
    let row = store
        .session()
        .query_unpaged(
            format!(
                "SELECT sequence_number FROM {keyspace}.ids \
                 WHERE tenant_id = ? AND bucket = ? AND event_id = ?"
            ),
            (
                tenant,
                sealtrail_scylla::schema::id_bucket(&reused),
                reused.as_str(),
            ),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .maybe_first_row::<(i64,)>()
        .unwrap();
    assert_eq!(row, Some((22,)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chainer_out_of_removal_stamps_stops_and_the_next_owner_erases() {
    // A claim's write timestamps allow 2,097,151 erasures and removals; past that the
    // deriver stops, the chainer's next append fails for good (a restart claims anew),
    // and the next owner derives and erases what was left.
    let (store, keyspace) = fresh_keyspace("out_of_stamps", 1).await;
    let tenant = "out-of-stamps";
    let recs = make_chain(tenant, None, 20);
    let target = &recs[4].record;
    let old = store.fenced(0, "chainer-old").await.unwrap();
    old.use_up_removal_stamps();
    let mut frontier = Frontier::new();
    append_all(&old, &mut frontier, &recs).await;
    let redaction = conformance::redaction_of(tenant, &recs[19].head(), target);
    append_all(&old, &mut frontier, std::slice::from_ref(&redaction)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let err = loop {
        let more = make_chain(tenant, Some(redaction.head()), 1);
        match old
            .append(CommitBatch {
                records: more,
                ..Default::default()
            })
            .await
        {
            Err(err) => break err,
            Ok(()) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the deriver never stopped"
                );
                tokio::time::sleep(ScyllaStore::DERIVE_LINGER).await;
            }
        }
    };
    assert!(matches!(err, StoreError::Fatal(_)), "{err:?}");
    assert!(err.to_string().contains("restart"), "{err}");
    let reader = ScyllaStore::with_session(store.session().clone(), &keyspace)
        .await
        .unwrap();
    let got = reader.get_event(tenant, &target.id).await.unwrap().unwrap();
    assert!(
        got.record.redacted.is_none(),
        "not erased by the stopped deriver"
    );

    let _new = store.fenced(0, "chainer-new").await.unwrap();
    let got = reader.get_event(tenant, &target.id).await.unwrap().unwrap();
    assert!(got.record.redacted.is_some(), "the next owner erased it");
}

/// `(block, count)` of `tenant`'s facet rows of `kind` and `value` (blocks 0..1,024).
async fn facet_blocks(
    store: &ScyllaStore,
    keyspace: &str,
    tenant: &str,
    kind: i32,
    value: &str,
) -> Vec<(i64, i32)> {
    store
        .session()
        .query_unpaged(
            format!(
                "SELECT block, count FROM {keyspace}.facets WHERE tenant_id = ? AND kind = ? \
                 AND grp = 0 AND value = ?"
            ),
            (tenant, kind, value),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(i64, i32)>()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Appends `records` through `store` in chunks, with their tree nodes.
async fn append_all(
    store: &ScyllaStore,
    frontier: &mut Frontier,
    records: &[sealtrail_core::record::ChainedRecord],
) {
    for chunk in records.chunks(256) {
        let nodes = conformance::tree_nodes_of(frontier, chunk);
        store
            .append(CommitBatch {
                records: chunk.to_vec(),
                tree_nodes: nodes,
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_owner_finishes_a_removal_a_dead_owner_left() {
    removal_left_by_a_dead_owner("prune_owner", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_owner_finishes_a_removal_a_dead_owner_began() {
    // The old owner died right after writing the new boundary (step 2 of a removal), so
    // reads already start at it but every record is still whole.
    removal_left_by_a_dead_owner("prune_began", true).await;
}

async fn removal_left_by_a_dead_owner(name: &str, boundary_written: bool) {
    // Retention (issue 15) across facet blocks: 2,600 records, then a prune event with
    // boundary 1,500, so block 0 (1..=1024) goes whole, block 1 (1025..=2048) keeps its
    // last 549 records and block 2 is not complete. The old owner commits it all and dies
    // before deriving anything; the next owner's catch-up removes the records. Then the old
    // owner's late deriver (a zombie) runs its gather again and changes nothing.
    let (store, keyspace) = fresh_keyspace(name, 1).await;
    let tenant = "prune-owner";
    let recs = make_chain(tenant, None, 2600);
    let mut frontier = Frontier::new();
    let old = store.fenced(0, "chainer-old").await.unwrap();
    old.pause_deriving(true);
    append_all(&old, &mut frontier, &recs).await;
    let prune = conformance::prune_of(tenant, &recs[2599].head(), 1500);
    append_all(&old, &mut frontier, std::slice::from_ref(&prune)).await;
    let reader = ScyllaStore::with_session(store.session().clone(), &keyspace)
        .await
        .unwrap();
    assert_eq!(
        reader.retained_from(tenant).await.unwrap(),
        1,
        "nothing derived yet"
    );
    assert!(
        reader
            .get_event(tenant, &recs[0].record.id)
            .await
            .unwrap()
            .is_some()
    );
    if boundary_written {
        store
            .session()
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.retention (tenant_id, retained_from, previous) \
                     VALUES (?, 1500, 1) USING TIMESTAMP 1500"
                ),
                (tenant,),
            )
            .await
            .unwrap();
        let first = reader.scan_chain(tenant, 0, 1).await.unwrap();
        assert_eq!(
            first[0].sequence_number, 1500,
            "reads start at the boundary"
        );
    }

    let _new = store.fenced(0, "chainer-new").await.unwrap();
    let check = |label: &'static str| {
        let (reader, keyspace, recs, prune) = (&reader, &keyspace, &recs, &prune);
        async move {
            assert_eq!(reader.retained_from(tenant).await.unwrap(), 1500, "{label}");
            for i in [0usize, 700, 1024, 1498] {
                assert!(
                    reader
                        .get_event(tenant, &recs[i].record.id)
                        .await
                        .unwrap()
                        .is_none(),
                    "{label}: record {} by id",
                    i + 1
                );
            }
            assert!(
                reader
                    .get_event(tenant, &recs[1499].record.id)
                    .await
                    .unwrap()
                    .is_some()
            );
            assert_eq!(
                id_rows(reader, keyspace).await,
                2601 - 1499,
                "{label}: ids rows"
            );
            let rows = reader.scan_chain(tenant, 0, 3).await.unwrap();
            assert_eq!(rows[0].sequence_number, 1500, "{label}");
            // Block 0 has no facet rows left; block 1 lists its kept records only.
            assert_eq!(
                facet_blocks(reader, keyspace, tenant, 0, "").await,
                vec![(1, 549)],
                "{label}: kind-0 rows"
            );
            for actor in ["actor-0", "actor-1", "actor-2"] {
                let blocks = facet_blocks(reader, keyspace, tenant, 1, actor).await;
                assert!(
                    blocks.iter().all(|(b, _)| *b == 1),
                    "{label}: {actor} {blocks:?}"
                );
                let page = by_actor(reader, tenant, actor).await;
                let want = recs[1499..]
                    .iter()
                    .chain(std::iter::once(prune))
                    .filter(|r| r.record.actor.id == actor)
                    .count() as u64;
                assert_eq!(page.total, want, "{label}: {actor}");
                assert!(page.events.iter().all(|e| e.sequence_number >= 1500));
            }
            let all = reader
                .list_events(tenant, Default::default())
                .await
                .unwrap();
            assert_eq!(all.total, 1102, "{label}");
            assert_eq!(all.events[0].sequence_number, 1500, "{label}");
        }
    };
    check("after the catch-up").await;
    // The tree is whole, over removed records too.
    let hashes: Vec<_> = reader
        .tree_nodes(tenant, Frontier::ids(2601))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.expect("frontier node"))
        .collect();
    assert_eq!(Frontier::from_nodes(2601, hashes).unwrap(), frontier);
    let over_removed = vec![
        NodeId::new(0, 5),
        NodeId::new(1, 700),
        NodeId::new(2, 100),
        NodeId::new(10, 0),
    ];
    assert!(
        reader
            .tree_nodes(tenant, over_removed)
            .await
            .unwrap()
            .iter()
            .all(Option::is_some)
    );

    old.pause_deriving(false);
    tokio::time::sleep(ScyllaStore::DERIVE_LINGER * 20).await;
    check("after the zombie's late derivation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_records_content_leaves_the_data_files_after_a_compaction() {
    // Issue 15: what retention removes is gone from the node's data files once compacted
    // (gc_grace_seconds set to 0 here so the tombstones of the id and facet rows go now).
    let Some((data, script)) = local_node() else {
        eprintln!("skipped: not the local node of deploy/local (SEALTRAIL_TEST_CASSANDRA set)");
        return;
    };
    let (store, keyspace) = fresh_keyspace("prune_files", 1).await;
    no_gc_grace(&store, &keyspace, &["facets", "ids"]).await;
    let fenced = store.fenced(0, "chainer-prune").await.unwrap();
    let tenant = "prune";
    let mark = format!("old{:x}", std::process::id() as u64 * 7919 + 5);
    // Record 300 of 1,100 carries the marker in its id, actor, email and metadata.
    let recs = chain_around(
        tenant,
        299,
        serde_json::json!({
            "id": format!("evt-{mark}"),
            "timestamp": "2024-01-01T00:00:05Z",
            "actor": {"id": format!("subject-{mark}"), "type": "human", "email": format!("{mark}@example.com")},
            "action": "profile.update",
            "resource": {"id": "profile-1", "type": "profile"},
            "outcome": "success",
            "metadata": {"note": format!("note-{mark}")},
        }),
        800,
    );
    let mut frontier = Frontier::new();
    append_all(&fenced, &mut frontier, &recs).await;
    wait_derived(&store, &keyspace, tenant, 1100).await;
    nodetool(&script, &["flush", &keyspace]);
    let prune = conformance::prune_of(tenant, &recs[1099].head(), 1050);
    append_all(&fenced, &mut frontier, std::slice::from_ref(&prune)).await;
    wait_derived(&store, &keyspace, tenant, 1101).await;
    assert_eq!(fenced.retained_from(tenant).await.unwrap(), 1050);
    gone_after_a_compaction(&script, &data, &keyspace, &mark).await;
    // What proofs need stays: the tree over the removed records reaches the same root.
    let hashes: Vec<_> = fenced
        .tree_nodes(tenant, Frontier::ids(1101))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.expect("frontier node"))
        .collect();
    assert_eq!(Frontier::from_nodes(1101, hashes).unwrap(), frontier);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_has_a_lease_until_it_expires() {
    // The retention lease (gateways' pruners): taken by one, renewed by it, refused to
    // others until it expires.
    let store = fresh_store("lease", 1).await;
    // Cassandra counts a TTL in whole seconds (an expiry can come up to 1 s early), and CI
    // machines are busy: every check below is at least 1.5 s from an expiry.
    let ttl = Duration::from_secs(10);
    let started = std::time::Instant::now();
    let at = |secs: f64| tokio::time::sleep_until((started + Duration::from_secs_f64(secs)).into());
    assert!(store.lease("retention", "gw-a", ttl).await.unwrap());
    assert!(!store.lease("retention", "gw-b", ttl).await.unwrap());
    assert!(
        store.lease("other", "gw-b", ttl).await.unwrap(),
        "leases are by name"
    );
    at(5.0).await;
    assert!(
        store.lease("retention", "gw-a", ttl).await.unwrap(),
        "renewed by its holder"
    );
    // Past the first expiry (at most 10 s), before the renewed one (at least 14 s).
    at(11.5).await;
    assert!(
        !store.lease("retention", "gw-b", ttl).await.unwrap(),
        "the renewal moved the expiry"
    );
    // Past the renewed one (at most 15 s after the start, plus the renewal's own time).
    at(17.0).await;
    assert!(
        store.lease("retention", "gw-b", ttl).await.unwrap(),
        "expired: taken over"
    );
    assert!(!store.lease("retention", "gw-a", ttl).await.unwrap());
}
