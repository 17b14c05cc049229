//! Derived rows: the id index (`ids`), the Merkle tree (`tree`) and the filter index
//! (`facets`, see `facets.rs`), written behind the acknowledgement.
//!
//! An append is durable once its records are in `events` and the conditional batch has
//! moved the heads (`append.rs`); everything here is a pure function of those committed
//! records, so it can be written later, in large batches, and written again without harm.
//!
//! - A **fenced** handle (a chainer's) hands every committed append to its [`Deriver`]: a
//!   task that gathers what is queued (lingering up to [`LINGER`] for more), writes the
//!   id and tree rows of the whole gather as a few single-partition batches (and the facet
//!   rows of every block of 1,024 records the gather completes), then raises
//!   each tenant's watermark in `derived` (one batch per log partition). Until then the
//!   handle keeps the gather's ids and nodes in memory (`pending`), and its reads look
//!   there first, so the chainer's own idempotency check and frontier loads see them. The
//!   queue is bounded ([`QUEUE`] appends): a store that cannot keep up slows the appends.
//! - An **unfenced** handle (tests, tools) writes the derived rows before `append` returns.
//! - **Every other reader** (gateways) reads a tenant's watermark before its derived rows
//!   and, for what is past it, reads the committed records in `events` directly (`read.rs`):
//!   an acknowledged event is readable by id and provable the moment its head moved.
//! - **A new owner** of a log partition ([`ScyllaStore::fenced`]) first derives every
//!   tenant's records between its watermark and its head ([`ScyllaStore::catch_up`]), so
//!   its `pending` plus the tables are complete before its first append.
//!
//! - **Redaction events** (issue 15) are applied here too: after the facet rows of the
//!   gather, before the watermarks, the record each names is erased
//!   ([`ScyllaStore::erase`]). A catch-up finds them among the records it derives.
//!   So are **prune events** (retention), after the erasures: the records before the
//!   boundary each names are removed (`retention.rs`).
//!
//! Crash windows: a crash (or a lost write) anywhere here leaves committed records past a
//! tenant's watermark: readers consult them directly, and the partition's next owner
//! derives them (and finishes their erasures). A watermark is written only after every
//! row below it, and with its own value as the write timestamp, so it never moves back and
//! never passes a missing row. A former owner still deriving (a zombie) checks its claim
//! before each gather and writes nothing once it is deposed (the new owner's catch-up
//! derived everything it committed). A gather whose check passed just before the claim can
//! still be written after it. Its rows are the chain's — the same values the new owner
//! writes — with one exception: rows read before a redaction or a removal in them. Those
//! lose anyway: `ids` and `facets` rows carry their writer's claim's write timestamps, and
//! every one of an older claim is below every one of a newer claim (`fence.rs`), so a late
//! row cannot put a redacted record's values back in the filter index, or a removed
//! record's id back in `ids`. (Until schema version 3 these rows took the node's clock, and
//! this window was open.) Tree nodes and receipts are never removed: a late one is equal.
//! The other side of that window: the new owner's catch-up may read a block before the
//! former owner's late erasure or removal of a record in it lands, and then find the
//! record erased (removed) already and skip it. So the facet rows a derivation writes
//! leave out, from the start, every record a redaction or prune event in its range orders
//! erased or removed ([`Doomed`]); a catch-up first reads its whole range for those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scylla::statement::batch::{Batch, BatchType};
use sealtrail_core::backoff::Backoff;
use sealtrail_core::merkle::{Frontier, Hash, NodeId, record_leaf};
use sealtrail_core::record::{PRUNE_PREFIX, Record, Redaction, is_redacted};
use sealtrail_store::{CommitBatch, StoreError, StoreResult, TreeNode};
use tokio::sync::mpsc;

use crate::retention::Prune;
use crate::schema::{MIN_TREE_LEVEL, bucket, id_bucket, span};
use crate::{ScyllaStore, corrupt, run_bounded, unavailable};

/// Appends queued for derivation before `append` waits.
const QUEUE: usize = 64;
/// How long the deriver waits for more appends after the first, to write them together.
pub const LINGER: Duration = Duration::from_millis(50);
/// Records per gather, at most.
const MAX_GATHER: usize = 16_384;
/// Rows per single-partition batch (Cassandra warns above 5 KiB and refuses above 50 KiB
/// per batch by default; id and node rows are well under 100 bytes).
const ROWS_PER_BATCH: usize = 200;
const WRITE_CONCURRENCY: usize = 32;
/// Records a catch-up reads per round.
const CATCH_UP_PAGE: u64 = 4096;

/// What one committed append derives.
pub(crate) struct Item {
    /// `(tenant, event id, sequence number)` of every record.
    pub ids: Vec<(String, String, u64)>,
    pub nodes: Vec<TreeNode>,
    /// What its redaction events (issue 15) order erased.
    pub erasures: Vec<Erasure>,
    /// What its prune events (issue 15, retention) order removed.
    pub prunes: Vec<Prune>,
}

/// A redaction event's order: erase `tenant`'s record `seq`, if it is the event `id`.
pub(crate) struct Erasure {
    pub tenant: String,
    pub seq: u64,
    pub id: String,
    pub by: Redaction,
}

/// How a redaction event's canonical form starts (JCS sorts `action` first): catch-up
/// parses only the records that start so.
const REDACTION_PREFIX: &[u8] = b"{\"action\":\"sealtrail.event.redact\"";

/// The erasure `record` orders, if it is a redaction event.
fn erasure(record: &Record) -> Option<Erasure> {
    let (seq, id, by) = record.redaction_order()?;
    Some(Erasure {
        tenant: record.tenant_id.clone(),
        seq,
        id: id.to_string(),
        by,
    })
}

/// The removal `record` orders, if it is a prune event.
fn prune(record: &Record) -> Option<Prune> {
    Some(Prune {
        tenant: record.tenant_id.clone(),
        before: record.prune_order()?,
    })
}

impl Item {
    pub(crate) fn of(batch: &CommitBatch) -> Self {
        Self {
            ids: batch
                .records
                .iter()
                .map(|r| {
                    (
                        r.record.tenant_id.clone(),
                        r.record.id.clone(),
                        r.record.sequence_number,
                    )
                })
                .collect(),
            nodes: batch.tree_nodes.clone(),
            erasures: batch
                .records
                .iter()
                .filter_map(|r| erasure(&r.record))
                .collect(),
            prunes: batch
                .records
                .iter()
                .filter_map(|r| prune(&r.record))
                .collect(),
        }
    }
}

/// Records of one tenant that the facet rows a derivation writes leave out: the targets of
/// redaction events and the records before a prune event's boundary, among the records it
/// derives (a catch-up: anywhere in its range). Their erasure or removal follows in the
/// same derivation; left out from the start, the rows are right whenever the record is
/// read — a former owner erasing it concurrently makes the erasure here find it erased
/// already and skip the facet rows, which therefore must not have it.
#[derive(Default, Clone, Debug)]
pub(crate) struct Doomed {
    pub targets: std::collections::HashSet<u64>,
    /// Records before this are removed (0 and 1: none).
    pub before: u64,
}

impl Doomed {
    pub(crate) fn contains(&self, seq: u64) -> bool {
        seq < self.before || self.targets.contains(&seq)
    }

    /// Adds what `erasure` and `prune` order (of this `Doomed`'s tenant).
    fn add<'a>(
        &mut self,
        erasures: impl IntoIterator<Item = &'a Erasure>,
        prunes: impl IntoIterator<Item = &'a Prune>,
    ) {
        self.targets.extend(erasures.into_iter().map(|e| e.seq));
        for p in prunes {
            self.before = self.before.max(p.before);
        }
    }
}

/// Ids and nodes handed to the deriver and not yet written. An entry leaves only after
/// its row is written, so a reader that looks here before the table misses nothing. The
/// same key may be queued twice (a batch resubmitted after an unknown outcome); the first
/// write removes it, which is harmless: both carry the same value, now in the table.
#[derive(Default)]
pub(crate) struct Pending {
    ids: HashMap<(String, String), u64>,
    nodes: HashMap<(String, NodeId), Hash>,
}

/// A fenced handle's derivation task and what it has not written yet.
pub(crate) struct Deriver {
    queue: mpsc::Sender<Item>,
    pending: Arc<Mutex<Pending>>,
    paused: tokio::sync::watch::Sender<bool>,
    /// Why the task stopped, if a write failed for good.
    failed: Arc<Mutex<Option<String>>>,
}

impl Deriver {
    /// Starts the task; it ends once every handle holding this deriver is dropped and the
    /// queue is written.
    pub(crate) fn start(store: ScyllaStore) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (paused, paused_rx) = tokio::sync::watch::channel(false);
        let failed = Arc::new(Mutex::new(None));
        tokio::spawn(run(store, rx, pending.clone(), paused_rx, failed.clone()));
        Arc::new(Self {
            queue,
            pending,
            paused,
            failed,
        })
    }

    /// Queues a committed append (waits while the queue is full).
    pub(crate) async fn push(&self, item: Item) -> StoreResult<()> {
        {
            let mut pending = self.pending.lock().expect("pending lock");
            for (tenant, id, seq) in &item.ids {
                pending.ids.insert((tenant.clone(), id.clone()), *seq);
            }
            for node in item.nodes.iter().filter(|n| n.id.level >= MIN_TREE_LEVEL) {
                pending
                    .nodes
                    .insert((node.tenant_id.clone(), node.id), node.hash);
            }
        }
        self.queue.send(item).await.map_err(|_| {
            let why = self.failed.lock().expect("failed lock").clone();
            StoreError::Fatal(format!(
                "the deriver stopped: {}",
                why.as_deref().unwrap_or("its task ended")
            ))
        })
    }

    pub(crate) fn pending_id(&self, tenant: &str, id: &str) -> Option<u64> {
        let pending = self.pending.lock().expect("pending lock");
        pending
            .ids
            .get(&(tenant.to_string(), id.to_string()))
            .copied()
    }

    pub(crate) fn pending_node(&self, tenant: &str, id: NodeId) -> Option<Hash> {
        let pending = self.pending.lock().expect("pending lock");
        pending.nodes.get(&(tenant.to_string(), id)).copied()
    }

    /// Stops (or resumes) writing derived rows: tests use it to keep committed records
    /// past the watermark.
    pub(crate) fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }
}

async fn run(
    store: ScyllaStore,
    mut rx: mpsc::Receiver<Item>,
    pending: Arc<Mutex<Pending>>,
    mut paused: tokio::sync::watch::Receiver<bool>,
    failed: Arc<Mutex<Option<String>>>,
) {
    let mut deposed = false;
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        let mut records = items[0].ids.len();
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while records < MAX_GATHER {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => {
                        records += item.ids.len();
                        items.push(item);
                    }
                    None => break,
                },
                _ = &mut linger => break,
            }
        }
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        let started = std::time::Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            // A deposed owner writes nothing more: the new owner's catch-up derived every
            // record it committed (they were all committed before the claim), and its
            // removals and erasures must not be undone by rows read before them.
            let result = match store.still_owner().await {
                Ok(true) => store.write_derived(&items).await,
                Ok(false) => {
                    if !deposed {
                        tracing::warn!(
                            "this chainer's claim on its partition was taken over; leaving the derived rows to the new owner"
                        );
                        deposed = true;
                    }
                    Ok(())
                }
                Err(err) => Err(err),
            };
            let Err(err) = result else { break };
            if let StoreError::Fatal(reason) = &err {
                // Retrying cannot fix it: stop, so the next append fails and the chainer
                // stops too; the partition's next owner derives what is left.
                tracing::error!(%reason, "writing derived rows failed for good; the deriver stops");
                *failed.lock().expect("failed lock") = Some(reason.clone());
                return;
            }
            metrics::counter!("sealtrail_derive_retries_total").increment(1);
            let wait = backoff.wait();
            tracing::warn!(%err, retry_in_ms = wait.as_millis() as u64, "writing derived rows failed; retrying (reads use the committed records meanwhile)");
            tokio::time::sleep(wait).await;
        }
        metrics::histogram!("sealtrail_derive_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("sealtrail_derive_gather_records").record(records as f64);
        let mut pending = pending.lock().expect("pending lock");
        for item in &items {
            for (tenant, id, _) in &item.ids {
                pending.ids.remove(&(tenant.clone(), id.clone()));
            }
            for node in &item.nodes {
                pending.nodes.remove(&(node.tenant_id.clone(), node.id));
            }
        }
    }
}

impl ScyllaStore {
    /// Writes the id and tree rows of `items` (in commit order), then raises each tenant's
    /// watermark to its last record in them. Idempotent.
    pub(crate) async fn write_derived(&self, items: &[Item]) -> StoreResult<()> {
        self.write_derived_leaving_out(items, &HashMap::new()).await
    }

    /// [`write_derived`](Self::write_derived), the facet rows also leaving out `doomed`
    /// (a catch-up's whole range; see [`Doomed`]).
    pub(crate) async fn write_derived_leaving_out(
        &self,
        items: &[Item],
        doomed: &HashMap<String, Doomed>,
    ) -> StoreResult<()> {
        let mut doomed = doomed.clone();
        for item in items {
            for e in &item.erasures {
                doomed.entry(e.tenant.clone()).or_default().add([e], []);
            }
            for p in &item.prunes {
                doomed.entry(p.tenant.clone()).or_default().add([], [p]);
            }
        }
        let mut ids: HashMap<(&str, i64), Vec<(&str, u64)>> = HashMap::new();
        let mut last: HashMap<&str, u64> = HashMap::new();
        let mut first: HashMap<&str, u64> = HashMap::new();
        for (tenant, id, seq) in items.iter().flat_map(|i| i.ids.iter()) {
            ids.entry((tenant.as_str(), id_bucket(id)))
                .or_default()
                .push((id.as_str(), *seq));
            let at = last.entry(tenant.as_str()).or_default();
            *at = (*at).max(*seq);
            let at = first.entry(tenant.as_str()).or_insert(u64::MAX);
            *at = (*at).min(*seq);
        }
        let mut nodes: HashMap<(&str, i64), Vec<&TreeNode>> = HashMap::new();
        for node in items
            .iter()
            .flat_map(|i| i.nodes.iter())
            .filter(|n| n.id.level >= MIN_TREE_LEVEL)
        {
            nodes
                .entry((node.tenant_id.as_str(), span(node.id)))
                .or_default()
                .push(node);
        }
        // Below every later removal's tombstones (`fence.rs`): a zombie's late rows lose.
        let stamp = self.derived_timestamp();
        let session = &self.session;
        let mut writes = Vec::new();
        for ((tenant, shard), rows) in &ids {
            for chunk in rows.chunks(ROWS_PER_BATCH) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for (id, seq) in chunk {
                    batch.append_statement(self.stmts.insert_event_id.clone());
                    values.push((*tenant, *shard, *id, *seq as i64, stamp));
                }
                writes.push(Box::pin(async move { session.batch(&batch, values).await })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>);
            }
        }
        for ((tenant, span), group) in &nodes {
            for chunk in group.chunks(ROWS_PER_BATCH) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for node in chunk {
                    batch.append_statement(self.stmts.insert_node.clone());
                    values.push((
                        *tenant,
                        *span,
                        node.id.level as i32,
                        node.id.index as i64,
                        node.hash.as_slice(),
                    ));
                }
                writes.push(Box::pin(async move { session.batch(&batch, values).await }));
            }
        }
        run_bounded(writes, WRITE_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        // The facet rows of every block these records complete.
        let facets: Vec<_> = last
            .iter()
            .map(|(tenant, last)| {
                self.write_facets(tenant, first[tenant], *last, doomed.get(*tenant))
            })
            .collect();
        run_bounded(facets, 4).await?;
        // Then what redaction events order erased (after the facet rows: a block they
        // complete is written first, then rewritten without the erased record).
        for erasure in items.iter().flat_map(|i| i.erasures.iter()) {
            self.erase(erasure).await?;
        }
        // Then what prune events order removed (`retention.rs`), in chain order.
        let gathered: Vec<(String, String, u64)> = if items.iter().any(|i| !i.prunes.is_empty()) {
            items.iter().flat_map(|i| i.ids.iter().cloned()).collect()
        } else {
            Vec::new()
        };
        for prune in items.iter().flat_map(|i| i.prunes.iter()) {
            self.prune(prune, &gathered).await?;
        }
        // Only now the watermarks: every row below them is written, every erasure and
        // removal done.
        let mut by_partition: HashMap<i32, Vec<(&str, u64)>> = HashMap::new();
        for (tenant, seq) in last {
            by_partition
                .entry(self.partition_of(tenant))
                .or_default()
                .push((tenant, seq));
        }
        let mut marks = Vec::new();
        for (partition, tenants) in &by_partition {
            for chunk in tenants.chunks(ROWS_PER_BATCH) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for (tenant, seq) in chunk {
                    batch.append_statement(self.stmts.set_derived.clone());
                    values.push((*partition, *tenant, *seq as i64, *seq as i64));
                }
                marks.push(async move { session.batch(&batch, values).await });
            }
        }
        run_bounded(marks, WRITE_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Erases the record a redaction event names (issue 15), unless it is erased already:
    /// first its block's facet rows are written without it (no filter finds it any more),
    /// then its `canonical` becomes the redacted record's stored form
    /// ([`Record::redacted_stored`]), written with the present as timestamp (record rows
    /// carry small epoch-based ones), so no replay of the record's row can bring its
    /// content back. `hash`, `event_id` and the id index stay: reads return the redacted
    /// record.
    ///
    /// Crash windows: before the update, the record is whole and the redaction event is
    /// past the watermark (this runs before the watermark moves), so the next derivation
    /// (this deriver's retry, or a new owner's catch-up, which looks for redaction events)
    /// does it all again; the facet rows it rewrites are the same. After the update it is
    /// done. Cassandra keeps the old cell in its SSTables until compaction
    /// (`gc_grace_seconds` does not apply to an overwrite: the next compaction that merges
    /// the two drops it); `nodetool compact <keyspace> events` forces that.
    async fn erase(&self, erasure: &Erasure) -> StoreResult<()> {
        let Erasure {
            tenant,
            seq,
            id,
            by,
        } = erasure;
        let row = self
            .one_row::<(i64, String, Vec<u8>, String, String)>(
                &self.stmts.select_row,
                (tenant.as_str(), bucket(*seq), *seq as i64),
            )
            .await?;
        let Some((_, hash, canonical, _, event_id)) = row else {
            tracing::error!(
                tenant,
                seq,
                id,
                "a redaction names a record that is not stored; not erased"
            );
            return Ok(());
        };
        if event_id != *id {
            tracing::error!(
                tenant,
                seq,
                id,
                stored = event_id,
                "a redaction names a record by the wrong id; not erased"
            );
            return Ok(());
        }
        // Redacted already, or removed by retention (an empty row, `retention.rs`).
        if canonical.is_empty() || is_redacted(&canonical) {
            return Ok(());
        }
        let record = Record::from_canonical(&canonical, &hash)
            .map_err(|e| corrupt(format!("record {tenant}#{seq}: {e}")))?;
        let stamp = self.removal_timestamp()?;
        self.erase_facets(tenant, *seq, &record, by, stamp).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(i64::MAX, |d| d.as_micros() as i64);
        self.session
            .execute_unpaged(
                &self.stmts.erase_event,
                (
                    now,
                    record.redacted_stored(by),
                    tenant.as_str(),
                    bucket(*seq),
                    *seq as i64,
                ),
            )
            .await
            .map_err(unavailable)?;
        metrics::counter!("sealtrail_store_records_erased_total").increment(1);
        tracing::info!(tenant, seq, by = by.sequence_number, "record erased");
        Ok(())
    }

    /// Hands a committed append's derived rows on: to the deriver (fenced handle) or
    /// written now (unfenced).
    pub(crate) async fn derive(&self, batch: &CommitBatch) -> StoreResult<()> {
        if batch.records.is_empty() && batch.tree_nodes.is_empty() {
            return Ok(());
        }
        let item = Item::of(batch);
        match &self.deriver {
            Some(deriver) => deriver.push(item).await,
            None => self.write_derived(&[item]).await,
        }
    }

    /// A tenant's watermark: its records up to here have their derived rows.
    pub(crate) async fn derived_to(&self, tenant: &str) -> StoreResult<u64> {
        Ok(self
            .one_row::<(Option<i64>,)>(
                &self.stmts.select_derived,
                (self.partition_of(tenant), tenant),
            )
            .await?
            .and_then(|(d,)| d)
            .map_or(0, |d| d as u64))
    }

    /// Derives every record of `partition`'s tenants between their watermark and their
    /// head. Run by a new owner right after its claim, before its first append (its
    /// quorum reads then see every committed head: the claim completed any conditional
    /// write in flight, and later ones by others fail).
    pub(crate) async fn catch_up(&self, partition: u32) -> StoreResult<()> {
        use futures::StreamExt;
        let mut heads: HashMap<String, u64> = HashMap::new();
        let mut rows = self
            .session
            .execute_iter(
                self.stmts.select_partition_heads.clone(),
                (partition as i32,),
            )
            .await
            .map_err(unavailable)?
            .rows_stream::<(Option<String>, Option<i64>, Option<String>)>()
            .map_err(unavailable)?;
        while let Some(row) = rows.next().await {
            // A partition with no tenant yet has one row of static columns only.
            if let (Some(tenant), Some(seq), _) = row.map_err(unavailable)? {
                heads.insert(tenant, seq as u64);
            }
        }
        let mut derived: HashMap<String, u64> = HashMap::new();
        let mut rows = self
            .session
            .execute_iter(
                self.stmts.select_partition_derived.clone(),
                (partition as i32,),
            )
            .await
            .map_err(unavailable)?
            .rows_stream::<(String, Option<i64>)>()
            .map_err(unavailable)?;
        while let Some(row) = rows.next().await {
            let (tenant, to) = row.map_err(unavailable)?;
            derived.insert(tenant, to.unwrap_or(0) as u64);
        }
        let lagging: Vec<(String, u64, u64)> = heads
            .into_iter()
            .filter_map(|(tenant, head)| {
                let from = derived.get(&tenant).copied().unwrap_or(0);
                (head > from).then_some((tenant, from, head))
            })
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        let records: u64 = lagging.iter().map(|(_, from, head)| head - from).sum();
        let started = std::time::Instant::now();
        tracing::info!(
            partition,
            tenants = lagging.len(),
            records,
            "deriving the id index and tree of records past their watermark"
        );
        let jobs: Vec<_> = lagging
            .iter()
            .map(|(tenant, from, head)| self.catch_up_tenant(tenant, *from, *head))
            .collect();
        run_bounded(jobs, 4).await?;
        tracing::info!(
            partition,
            records,
            seconds = started.elapsed().as_secs_f64(),
            "derived rows complete"
        );
        Ok(())
    }

    async fn catch_up_tenant(&self, tenant: &str, from: u64, head: u64) -> StoreResult<()> {
        // First the erasures and removals the range orders, so that no facet row written
        // below leaves them in (see [`Doomed`]).
        let mut doomed = Doomed::default();
        let mut at = from;
        while at < head {
            let to = head.min(at + CATCH_UP_PAGE);
            for (seq, hash, _, canonical) in self.tail_records(tenant, at + 1, to).await? {
                if canonical.starts_with(REDACTION_PREFIX) || canonical.starts_with(PRUNE_PREFIX) {
                    let record = Record::from_canonical(&canonical, &hash)
                        .map_err(|e| corrupt(format!("record {seq}: {e}")))?;
                    doomed.add(&erasure(&record), &prune(&record));
                }
            }
            at = to;
        }
        let doomed = HashMap::from([(tenant.to_string(), doomed)]);
        let mut frontier = if from == 0 {
            Frontier::new()
        } else {
            // Nodes below the stored level come from the records (this handle has no
            // deriver, so `read_nodes` consults the records past the watermark too).
            let stored = self.read_nodes(tenant, &Frontier::ids(from)).await?;
            match stored.into_iter().collect::<Option<Vec<_>>>() {
                Some(hashes) => Frontier::from_nodes(from, hashes).map_err(corrupt)?,
                None => {
                    tracing::warn!(
                        tenant,
                        from,
                        "tree nodes below the watermark missing; deriving the tenant's whole chain"
                    );
                    return Box::pin(self.catch_up_tenant(tenant, 0, head)).await;
                }
            }
        };
        let mut at = from;
        while at < head {
            let to = head.min(at + CATCH_UP_PAGE);
            let rows = self.tail_records(tenant, at + 1, to).await?;
            let mut item = Item {
                ids: Vec::with_capacity(rows.len()),
                nodes: Vec::with_capacity(rows.len() * 2),
                erasures: Vec::new(),
                prunes: Vec::new(),
            };
            for (i, (seq, hash, id, canonical)) in rows.iter().enumerate() {
                if canonical.starts_with(REDACTION_PREFIX) || canonical.starts_with(PRUNE_PREFIX) {
                    let record = Record::from_canonical(canonical, hash)
                        .map_err(|e| corrupt(format!("record {seq}: {e}")))?;
                    item.erasures.extend(erasure(&record));
                    item.prunes.extend(prune(&record));
                }
                if *seq != at + 1 + i as u64 {
                    return Err(StoreError::Corrupt(format!(
                        "tenant {tenant}: committed record {} is missing",
                        at + 1 + i as u64
                    )));
                }
                let leaf =
                    record_leaf(hash).ok_or_else(|| corrupt(format!("record {seq}: bad hash")))?;
                frontier.push(&leaf, |id, hash| {
                    item.nodes.push(TreeNode {
                        tenant_id: tenant.to_string(),
                        id,
                        hash,
                    })
                });
                // A record retention removed keeps no id (`retention.rs`).
                if !canonical.is_empty() {
                    item.ids.push((tenant.to_string(), id.clone(), *seq));
                }
            }
            if rows.len() as u64 != to - at {
                return Err(StoreError::Corrupt(format!(
                    "tenant {tenant}: committed records {}..={to} are missing",
                    at + 1 + rows.len() as u64
                )));
            }
            self.write_derived_leaving_out(&[item], &doomed).await?;
            at = to;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealtrail_core::event::Actor;
    use sealtrail_core::record::{REDACT_ACTION, chain_step, redaction_input};

    #[test]
    fn a_redaction_event_starts_with_the_prefix_catch_up_looks_for() {
        assert_eq!(
            REDACTION_PREFIX,
            format!("{{\"action\":\"{REDACT_ACTION}\"").as_bytes()
        );
        let actor = Actor {
            email: None,
            id: "key_1".into(),
            actor_type: None,
        };
        let event = sealtrail_core::event::normalize(
            redaction_input(actor, "evt-7", 7, "GDPR"),
            1_704_067_200_000_000,
            || "evt-9".into(),
        )
        .unwrap();
        let rec = chain_step(None, "t", event);
        assert!(rec.canonical.starts_with(REDACTION_PREFIX));
        let order = erasure(&rec.record).expect("a redaction orders an erasure");
        assert_eq!((order.seq, order.id.as_str()), (7, "evt-7"));
        assert_eq!(order.by.event_id, "evt-9");
        // Any other record does not.
        let other = sealtrail_store::conformance::make_chain("t", None, 1);
        assert!(!other[0].canonical.starts_with(REDACTION_PREFIX));
        assert!(erasure(&other[0].record).is_none());
    }
}
