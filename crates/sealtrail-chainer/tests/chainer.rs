//! The chainer fed through the in-process log into the SQLite store: the effects of
//! entries on the chain, idempotency, conflicts, replay and restart.

use std::sync::Arc;
use std::time::Duration;

use sealtrail_chainer::{Chainer, ChainerConfig, CommitSignal};
use sealtrail_core::event::validate_event;
use sealtrail_core::receipt::ReceiptStatus;
use sealtrail_core::verify::ChainWalker;
use sealtrail_log::memory::MemoryLog;
use sealtrail_log::{Correlator, EntryOutcome, IndexedEvent, LogEntry, LogProducer};
use sealtrail_store::Store;
use sealtrail_store::sqlite::SqliteStore;
use serde_json::json;

struct Harness {
    log: Option<MemoryLog>,
    correlator: Arc<Correlator>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start(store: Arc<dyn Store>, partitions: u32) -> Harness {
    let (log, consumers) = MemoryLog::new(partitions, 1024);
    let correlator = Arc::new(Correlator::new("test-gw"));
    let tasks = consumers
        .into_iter()
        .map(|c| {
            let chainer = Chainer::new(
                c,
                store.clone(),
                correlator.clone(),
                CommitSignal::default(),
                ChainerConfig::default(),
            );
            tokio::spawn(async move { chainer.run().await.unwrap() })
        })
        .collect();
    Harness {
        log: Some(log),
        correlator,
        tasks,
    }
}

impl Harness {
    async fn send(&self, tenant: &str, events: Vec<serde_json::Value>) -> EntryOutcome {
        self.send_with(tenant, events, false).await
    }

    /// [`Self::send`] with the entry's `reply_only` flag (a caller never given the
    /// receipt id: sync singles, gRPC `Ingest`).
    async fn send_with(
        &self,
        tenant: &str,
        events: Vec<serde_json::Value>,
        reply_only: bool,
    ) -> EntryOutcome {
        let waiter = self.correlator.register();
        let entry = LogEntry {
            tenant_id: tenant.into(),
            receipt_id: uuidish(),
            created_at: "2024-05-01T00:00:00.000000Z".into(),
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, v)| IndexedEvent {
                    index: i as u32,
                    event: validate_event(v, 1_714_521_600_000_000, uuidish).unwrap(),
                })
                .collect(),
            rejected: vec![],
            reply_to: Some(waiter.address.clone()),
            reply_only,
            resent: false,
        };
        self.log.as_ref().unwrap().append(entry).await.unwrap();
        waiter.wait(Duration::from_secs(10)).await.expect("a reply")
    }

    async fn stop(mut self) {
        self.log.take();
        for t in self.tasks.drain(..) {
            t.await.unwrap();
        }
    }
}

fn uuidish() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("gen-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn ev(id: &str, action: &str) -> serde_json::Value {
    json!({"id": id, "actor": {"id": "u"}, "action": action, "resource": {"id": "r", "type": "t"}, "outcome": "success"})
}

fn committed(o: EntryOutcome) -> (sealtrail_core::Receipt, Vec<sealtrail_core::Record>) {
    match o {
        EntryOutcome::Committed { receipt, records } => (receipt, records.into_records()),
        other => panic!("expected committed, got {other:?}"),
    }
}

/// Walks the chain, and checks that the stored Merkle tree nodes give the frontier (and
/// root) of the tree of the chain's hashes.
async fn verify(store: &dyn Store, tenant: &str) -> u64 {
    use sealtrail_core::merkle::{Frontier, MemoryTree, record_leaf};
    let rows = store.scan_chain(tenant, 0, 100_000).await.unwrap();
    let mut walker = ChainWalker::new(tenant);
    let mut tree = MemoryTree::new();
    for row in &rows {
        walker.check(&row.hash, &row.canonical).unwrap();
        tree.push(&record_leaf(&row.hash).unwrap());
    }
    let n = rows.len() as u64;
    let stored: Vec<[u8; 32]> = store
        .tree_nodes(tenant, Frontier::ids(n))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.expect("every frontier node is stored"))
        .collect();
    assert_eq!(Frontier::from_nodes(n, stored).unwrap().root(), tree.root());
    walker.checked()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_many_tenants_gaplessly_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let h = Arc::new(start(store.clone(), 3));
    let mut tasks = Vec::new();
    for t in 0..6 {
        for k in 0..20 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                h.send(
                    &format!("tenant-{t}"),
                    vec![ev(&format!("t{t}-e{k}"), "a.b")],
                )
                .await
            }));
        }
    }
    for t in tasks {
        let (receipt, records) = committed(t.await.unwrap());
        assert_eq!(receipt.status, ReceiptStatus::Committed);
        assert_eq!(records.len(), 1);
    }
    for t in 0..6 {
        assert_eq!(verify(store.as_ref(), &format!("tenant-{t}")).await, 20);
    }
    Arc::into_inner(h).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_same_content_returns_original_and_different_content_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let h = start(store.clone(), 2);
    let (_, first) = committed(h.send("t", vec![ev("dup", "a.b")]).await);
    let (receipt, again) = committed(h.send("t", vec![ev("dup", "a.b")]).await);
    assert_eq!(receipt.status, ReceiptStatus::Committed);
    assert_eq!(
        again, first,
        "an idempotent retry returns the original record"
    );

    let (receipt, records) = committed(h.send("t", vec![ev("dup", "a.changed")]).await);
    assert_eq!(receipt.status, ReceiptStatus::Failed);
    assert_eq!(receipt.errors[0].code, "conflict");
    assert!(records.is_empty());

    // within one batch: the second copy is an idempotent repeat, the third conflicts
    let (receipt, records) = committed(
        h.send("t", vec![ev("b1", "x.y"), ev("b1", "x.y"), ev("b1", "x.z")])
            .await,
    );
    assert_eq!((receipt.accepted, receipt.rejected), (2, 1));
    assert_eq!(receipt.errors[0].index, 2);
    assert_eq!(records[0], records[1]);
    assert_eq!(
        verify(store.as_ref(), "t").await,
        2,
        "only two records were chained"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_chainer_continues_the_chain_and_replays_are_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let h = start(store.clone(), 1);
    for k in 0..5 {
        h.send("t", vec![ev(&format!("e{k}"), "a.b")]).await;
    }
    h.stop().await;

    // A fresh chainer (cold head cache) gets a redelivery of e3, e4 and then new events.
    let h = start(store.clone(), 1);
    let (_, replayed) = committed(h.send("t", vec![ev("e3", "a.b"), ev("e4", "a.b")]).await);
    assert_eq!(
        replayed
            .iter()
            .map(|r| r.sequence_number)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    let (_, fresh) = committed(h.send("t", vec![ev("e5", "a.b")]).await);
    assert_eq!(fresh[0].sequence_number, 6);
    assert_eq!(fresh[0].prev_hash, replayed[1].hash);
    assert_eq!(verify(store.as_ref(), "t").await, 6);
    h.stop().await;
}

/// A store that fails its next appends, either before writing (nothing stored) or after
/// writing (stored, but the caller hears an error: an unknown outcome), like sunlight's
/// test backend.
struct FlakyStore {
    inner: Arc<dyn Store>,
    fail_before: std::sync::atomic::AtomicU32,
    fail_after: std::sync::atomic::AtomicU32,
    /// What a failing append answers.
    error: fn(String) -> sealtrail_store::StoreError,
    /// Appends wait for this lock before writing: a test holds it to hold "the fsync".
    hold: Arc<tokio::sync::RwLock<()>>,
    /// Told when an append is waiting for `hold`.
    entered: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn append_shared(
        &self,
        batch: Arc<sealtrail_store::CommitBatch>,
    ) -> sealtrail_store::StoreResult<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let take = |n: &std::sync::atomic::AtomicU32| {
            n.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1)).is_ok()
        };
        self.entered.notify_one();
        let _held = self.hold.read().await;
        if take(&self.fail_before) {
            return Err((self.error)("injected: before writing".into()));
        }
        self.inner.append_shared(batch).await?;
        if take(&self.fail_after) {
            return Err(sealtrail_store::StoreError::Unavailable(
                "injected: after writing".into(),
            ));
        }
        Ok(())
    }
    async fn heads(
        &self,
        t: Vec<String>,
    ) -> sealtrail_store::StoreResult<std::collections::HashMap<String, sealtrail_core::ChainHead>>
    {
        self.inner.heads(t).await
    }
    async fn find_events(
        &self,
        k: Vec<(String, String)>,
    ) -> sealtrail_store::StoreResult<Vec<sealtrail_store::StoredEvent>> {
        self.inner.find_events(k).await
    }
    async fn get_event(
        &self,
        t: &str,
        id: &str,
    ) -> sealtrail_store::StoreResult<Option<sealtrail_store::StoredEvent>> {
        self.inner.get_event(t, id).await
    }
    async fn get_receipt(
        &self,
        t: &str,
        id: &str,
    ) -> sealtrail_store::StoreResult<Option<sealtrail_core::Receipt>> {
        self.inner.get_receipt(t, id).await
    }
    async fn list_events(
        &self,
        t: &str,
        q: sealtrail_store::EventQuery,
    ) -> sealtrail_store::StoreResult<sealtrail_store::EventPage> {
        self.inner.list_events(t, q).await
    }
    async fn scan_chain(
        &self,
        t: &str,
        after: u64,
        limit: usize,
    ) -> sealtrail_store::StoreResult<Vec<sealtrail_store::ChainRow>> {
        self.inner.scan_chain(t, after, limit).await
    }
    async fn tree_nodes(
        &self,
        t: &str,
        ids: Vec<sealtrail_core::merkle::NodeId>,
    ) -> sealtrail_store::StoreResult<Vec<Option<sealtrail_core::merkle::Hash>>> {
        self.inner.tree_nodes(t, ids).await
    }
    async fn create_key(&self, k: sealtrail_store::ApiKey) -> sealtrail_store::StoreResult<()> {
        self.inner.create_key(k).await
    }
    async fn find_key(
        &self,
        h: &str,
    ) -> sealtrail_store::StoreResult<Option<sealtrail_store::ApiKey>> {
        self.inner.find_key(h).await
    }
    async fn list_keys(
        &self,
        t: Option<&str>,
    ) -> sealtrail_store::StoreResult<Vec<sealtrail_store::ApiKey>> {
        self.inner.list_keys(t).await
    }
    async fn revoke_key(&self, id: &str, at: &str) -> sealtrail_store::StoreResult<bool> {
        self.inner.revoke_key(id, at).await
    }
}

/// Events with server-generated ids (no idempotency key to fall back on), through appends
/// that fail before or after writing: every event is committed exactly once.
async fn flaky_appends_commit_each_event_once(fail_before: u32, fail_after: u32) {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let store: Arc<dyn Store> = Arc::new(FlakyStore {
        inner: inner.clone(),
        fail_before: fail_before.into(),
        fail_after: fail_after.into(),
        error: sealtrail_store::StoreError::Unavailable,
        hold: Default::default(),
        entered: Default::default(),
    });
    let h = start(store, 1);
    let mut ids = Vec::new();
    for k in 0..4 {
        let mut e = ev("unused", "a.b");
        e.as_object_mut().unwrap().remove("id");
        e["metadata"] = json!({ "k": k });
        let (receipt, records) = committed(h.send("t", vec![e]).await);
        assert_eq!(receipt.status, ReceiptStatus::Committed);
        ids.push(records[0].id.clone());
    }
    h.stop().await;
    let rows = inner.scan_chain("t", 0, 100).await.unwrap();
    let stored: Vec<String> = rows.iter().map(|r| r.record().unwrap().id).collect();
    assert_eq!(stored, ids, "each event stored once, in order");
    assert_eq!(verify(inner.as_ref(), "t").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_failing_before_writing_are_retried() {
    flaky_appends_commit_each_event_once(3, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_failing_after_writing_are_resubmitted_not_rechained() {
    flaky_appends_commit_each_event_once(0, 3).await;
}

/// While the store fails, the chainer's partition is reported unhealthy; once a write goes
/// through, it is healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_partition_while_its_store_writes_fail() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let flaky = Arc::new(FlakyStore {
        inner,
        fail_before: 4.into(),
        fail_after: 0.into(),
        error: sealtrail_store::StoreError::Unavailable,
        hold: Default::default(),
        entered: Default::default(),
    });
    let health = sealtrail_chainer::Health::default();
    let (log, mut consumers) = MemoryLog::new(1, 16);
    let correlator = Arc::new(Correlator::new("test-gw"));
    let chainer = Chainer::new(
        consumers.remove(0),
        flaky.clone(),
        correlator.clone(),
        CommitSignal::default(),
        ChainerConfig::default(),
    )
    .with_health(health.clone());
    let task = tokio::spawn(chainer.run());
    assert!(health.problems().is_empty());

    let waiter = correlator.register();
    let entry = LogEntry {
        tenant_id: "t".into(),
        receipt_id: "r1".into(),
        created_at: "2024-05-01T00:00:00.000000Z".into(),
        events: vec![IndexedEvent {
            index: 0,
            event: validate_event(ev("h1", "a.b"), 1, uuidish).unwrap(),
        }],
        rejected: vec![],
        reply_to: Some(waiter.address.clone()),
        reply_only: false,
        resent: false,
    };
    log.append(entry).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let problems = health.problems();
        if let Some((partition, error)) = problems.first() {
            assert_eq!(*partition, 0);
            assert!(error.contains("injected"), "{error}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failure was never reported"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    committed(
        waiter
            .wait(Duration::from_secs(10))
            .await
            .expect("committed after the store recovers"),
    );
    assert!(
        health.problems().is_empty(),
        "healthy again: {:?}",
        health.problems()
    );
    log.close();
    task.await.unwrap().unwrap();
}

/// Nothing is visible before the store write is durable: while the store holds the write
/// (as a slow fsync would), the waiter has no answer, the commit signal (which wakes live
/// streams) has not moved and no store read shows the records; once it lets go, all three
/// do. The chainer keeps no state of its own that readers could see early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_answered_or_signalled_before_the_store_write_returns() {
    /// Records the replies the chainer sends.
    #[derive(Default)]
    struct Replies(std::sync::Mutex<Vec<EntryOutcome>>);
    #[async_trait::async_trait]
    impl sealtrail_log::ReplySink for Replies {
        async fn send(&self, _to: &sealtrail_log::ReplyAddress, outcome: EntryOutcome) {
            self.0.lock().unwrap().push(outcome);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let store = Arc::new(FlakyStore {
        inner: inner.clone(),
        fail_before: 0.into(),
        fail_after: 0.into(),
        error: sealtrail_store::StoreError::Unavailable,
        hold: Default::default(),
        entered: Default::default(),
    });
    let signal = CommitSignal::default();
    let commits = signal.subscribe();
    let (log, mut consumers) = MemoryLog::new(1, 16);
    let replies = Arc::new(Replies::default());
    let chainer = Chainer::new(
        consumers.remove(0),
        store.clone(),
        replies.clone(),
        signal,
        ChainerConfig::default(),
    );
    let task = tokio::spawn(chainer.run());
    let held = store.hold.clone().write_owned().await;
    log.append(LogEntry {
        tenant_id: "t".into(),
        receipt_id: "r-held".into(),
        created_at: "2024-05-01T00:00:00.000000Z".into(),
        events: vec![IndexedEvent {
            index: 0,
            event: validate_event(ev("held-1", "a.b"), 1, uuidish).unwrap(),
        }],
        rejected: vec![],
        reply_to: Some(sealtrail_log::ReplyAddress {
            gateway: "test-gw".into(),
            correlation_id: 1,
        }),
        reply_only: false,
        resent: false,
    })
    .await
    .unwrap();
    store.entered.notified().await;
    // The write is in the store's hands and held there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        replies.0.lock().unwrap().is_empty(),
        "answered before durable"
    );
    assert!(!commits.has_changed().unwrap(), "signalled before durable");
    assert!(inner.heads(vec!["t".into()]).await.unwrap().is_empty());
    assert!(inner.get_event("t", "held-1").await.unwrap().is_none());
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while replies.0.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outcome = replies.0.lock().unwrap().pop().unwrap();
    committed(outcome);
    assert!(commits.has_changed().unwrap(), "signalled once durable");
    assert_eq!(
        inner.heads(vec!["t".into()]).await.unwrap()["t"].sequence_number,
        1
    );
    log.close();
    task.await.unwrap().unwrap();
}

/// A chainer on a `FlakyStore` that fails its first `fail_before` appends with `error`,
/// with one entry of one event sent; returns the chainer's task, the waiter's outcome
/// (within 5 s) and the log.
async fn one_entry_on_a_failing_store(
    fail_before: u32,
    error: fn(String) -> sealtrail_store::StoreError,
) -> (
    tokio::task::JoinHandle<Result<(), sealtrail_chainer::ChainerError>>,
    Option<EntryOutcome>,
    MemoryLog,
    sealtrail_chainer::Health,
) {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let flaky = Arc::new(FlakyStore {
        inner,
        fail_before: fail_before.into(),
        fail_after: 0.into(),
        error,
        hold: Default::default(),
        entered: Default::default(),
    });
    let health = sealtrail_chainer::Health::default();
    let (log, mut consumers) = MemoryLog::new(1, 16);
    let correlator = Arc::new(Correlator::new("test-gw"));
    let chainer = Chainer::new(
        consumers.remove(0),
        flaky,
        correlator.clone(),
        CommitSignal::default(),
        ChainerConfig::default(),
    )
    .with_health(health.clone());
    let task = tokio::spawn(chainer.run());
    let waiter = correlator.register();
    let entry = LogEntry {
        tenant_id: "t".into(),
        receipt_id: "r1".into(),
        created_at: "2024-05-01T00:00:00.000000Z".into(),
        events: vec![IndexedEvent {
            index: 0,
            event: validate_event(ev("f1", "a.b"), 1, uuidish).unwrap(),
        }],
        rejected: vec![],
        reply_to: Some(waiter.address.clone()),
        reply_only: false,
        resent: false,
    };
    log.append(entry).await.unwrap();
    let outcome = waiter.wait(Duration::from_secs(5)).await;
    std::mem::forget(dir); // the store outlives this helper
    (task, outcome, log, health)
}

/// Errors retrying cannot fix stop the chainer at once (crash-only), each reported as what
/// it is, and the waiter hears it instead of timing out; an embedded fork is a refusal,
/// not "fenced".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_retrying_cannot_fix_stop_the_chainer() {
    use sealtrail_chainer::ChainerError;
    use sealtrail_store::StoreError;
    use sealtrail_store::rule::{Refusal, RefusalKind};
    fn refused(_: String) -> StoreError {
        StoreError::Refused(Refusal {
            tenant: "t".into(),
            sequence_number: 1,
            kind: RefusalKind::Fork,
        })
    }
    type MakeError = fn(String) -> StoreError;
    let cases: [(MakeError, &str); 4] = [
        (StoreError::Corrupt, "corrupt"),
        (StoreError::Fatal, "fatal"),
        (StoreError::Fenced, "fenced"),
        (refused, "refused"),
    ];
    for (error, kind) in cases {
        let (task, outcome, _log, health) = one_entry_on_a_failing_store(1, error).await;
        assert!(
            matches!(
                outcome,
                Some(EntryOutcome::Unavailable {
                    no_space: false,
                    ..
                })
            ),
            "{kind}: the waiter is told at once: {outcome:?}"
        );
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the chainer stops instead of retrying")
            .unwrap();
        match (kind, result) {
            ("corrupt" | "fatal", Err(ChainerError::Fatal(e))) => assert_eq!(e.kind(), kind),
            ("fenced", Err(ChainerError::Fenced(_))) => {}
            ("refused", Err(ChainerError::Refused(r))) => {
                assert_eq!(r.kind, RefusalKind::Fork);
            }
            (kind, other) => panic!("{kind}: stopped with {other:?}"),
        }
        let problems = health.problems();
        assert!(
            problems.first().is_some_and(|(_, e)| e.starts_with(kind)),
            "{kind}: {problems:?}"
        );
    }
}

/// A full disk is retryable: the waiter hears `no_space` at once, the chainer keeps the
/// batch and commits it when space is back; and a chainer stuck retrying lets go when the
/// log closes (shutdown is not held hostage by a failing store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_retried_and_shutdown_is_not_held() {
    use sealtrail_store::StoreError;
    let (task, outcome, log, health) = one_entry_on_a_failing_store(3, StoreError::NoSpace).await;
    assert!(
        matches!(
            outcome,
            Some(EntryOutcome::Unavailable { no_space: true, .. })
        ),
        "{outcome:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !health.problems().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "never committed: {:?}",
            health.problems()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.close();
    task.await.unwrap().unwrap();

    let (task, _, log, _) = one_entry_on_a_failing_store(u32::MAX, StoreError::Unavailable).await;
    log.close();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("a closing log ends the retries")
        .unwrap();
    assert!(
        result.is_ok(),
        "shutting down while the store fails is not a failure: {result:?}"
    );
}

/// A chain stored without tree nodes (written before the tree existed) gets them rebuilt
/// when its tenant is next chained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tree_nodes_are_backfilled_from_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let old = sealtrail_store::conformance::make_chain("legacy", None, 37);
    store
        .append(sealtrail_store::CommitBatch {
            records: old,
            ..Default::default()
        })
        .await
        .unwrap();
    let h = start(store.clone(), 1);
    let (receipt, _) = committed(h.send("legacy", vec![ev("new-1", "a.b")]).await);
    assert_eq!(receipt.status, ReceiptStatus::Committed);
    assert_eq!(verify(store.as_ref(), "legacy").await, 38);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_only_entry_commits_its_events_and_stores_no_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let h = start(store.clone(), 1);
    let (kept, _) = committed(h.send_with("t", vec![ev("kept-1", "a.b")], false).await);
    let (reply_only, records) = committed(
        h.send_with("t", vec![ev("reply-1", "a.b"), ev("reply-2", "a.b")], true)
            .await,
    );
    h.stop().await;

    // The caller still gets the whole outcome in the reply.
    assert_eq!(reply_only.status, ReceiptStatus::Committed);
    assert_eq!(reply_only.ids, vec!["reply-1", "reply-2"]);
    assert_eq!(records.len(), 2);
    assert!(
        store
            .get_receipt("t", &kept.receipt_id)
            .await
            .unwrap()
            .is_some(),
        "an entry whose caller holds the receipt id stores the receipt"
    );
    assert!(
        store
            .get_receipt("t", &reply_only.receipt_id)
            .await
            .unwrap()
            .is_none(),
        "a reply-only entry stores no receipt"
    );
    assert_eq!(verify(store.as_ref(), "t").await, 3);
}

/// An entry the gateway published twice (its Kafka producer was replaced while the entry,
/// already written once, waited for a retry): the copy is marked `resent`, and its events —
/// here with ids the server minted, which the chainer otherwise never looks up on a fresh
/// entry — are answered from the stored originals, in a later poll and in the same poll,
/// never chained twice. The CI saw a minted id chained twice after a Kafka SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_copy_of_an_entry_is_never_chained_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let h = start(store.clone(), 1);
    let minted = |n: u32| {
        let mut e = ev("unused", "a.b");
        e.as_object_mut().unwrap().remove("id");
        IndexedEvent {
            index: n,
            event: validate_event(e, 1_714_521_600_000_000, uuidish).unwrap(),
        }
    };
    let entry = |events: Vec<IndexedEvent>, resent: bool, reply_to| LogEntry {
        tenant_id: "t".into(),
        receipt_id: "r-twice".into(),
        created_at: "2024-05-01T00:00:00.000000Z".into(),
        events,
        rejected: vec![],
        reply_to,
        reply_only: false,
        resent,
    };
    let log = h.log.as_ref().unwrap();
    let original = vec![minted(0), minted(1)];
    assert!(original.iter().all(|e| !e.event.client_id));

    // The copy in a later poll than the original.
    let first = h.correlator.register();
    log.append(entry(original.clone(), false, Some(first.address.clone())))
        .await
        .unwrap();
    let (_, stored) = committed(first.wait(Duration::from_secs(10)).await.expect("a reply"));
    let copy = h.correlator.register();
    log.append(entry(original.clone(), true, Some(copy.address.clone())))
        .await
        .unwrap();
    let (receipt, again) = committed(copy.wait(Duration::from_secs(10)).await.expect("a reply"));
    assert_eq!(receipt.accepted, 2);
    assert_eq!(
        again, stored,
        "the copy is answered with the stored records"
    );

    // The copy in the same poll as the original (appended back to back, before the
    // chainer wakes: the memory log hands both over in one poll when it can).
    let twice = vec![minted(0)];
    let a = h.correlator.register();
    let b = h.correlator.register();
    log.append(entry(twice.clone(), false, Some(a.address.clone())))
        .await
        .unwrap();
    log.append(entry(twice, true, Some(b.address.clone())))
        .await
        .unwrap();
    let (_, one) = committed(a.wait(Duration::from_secs(10)).await.expect("a reply"));
    let (_, other) = committed(b.wait(Duration::from_secs(10)).await.expect("a reply"));
    assert_eq!(one, other);
    h.stop().await;
    assert_eq!(
        verify(store.as_ref(), "t").await,
        3,
        "three events, each chained once"
    );
}
