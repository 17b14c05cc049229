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
//! Crash windows: a crash (or a lost write) anywhere here leaves committed records past a
//! tenant's watermark: readers consult them directly, and the partition's next owner
//! derives them. A watermark is written only after every row below it, and with its own
//! value as the write timestamp, so it never moves back and never passes a missing row. A
//! former owner still deriving (a zombie) writes rows of records it committed, which are
//! the chain's: the same values the new owner writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scylla::statement::batch::{Batch, BatchType};
use sealtrail_core::merkle::{Frontier, Hash, NodeId, record_leaf};
use sealtrail_store::{CommitBatch, StoreError, StoreResult, TreeNode};
use tokio::sync::mpsc;

use crate::schema::{MIN_TREE_LEVEL, id_bucket, span};
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
}

impl Deriver {
    /// Starts the task; it ends once every handle holding this deriver is dropped and the
    /// queue is written.
    pub(crate) fn start(store: ScyllaStore) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (paused, paused_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(run(store, rx, pending.clone(), paused_rx));
        Arc::new(Self {
            queue,
            pending,
            paused,
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
        self.queue
            .send(item)
            .await
            .map_err(|_| StoreError::Fatal("the deriver stopped".into()))
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
) {
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
        let mut backoff = Duration::from_millis(100);
        while let Err(err) = store.write_derived(&items).await {
            metrics::counter!("sealtrail_derive_retries_total").increment(1);
            tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "writing derived rows failed; retrying (reads use the committed records meanwhile)");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
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
        let session = &self.session;
        let mut writes = Vec::new();
        for ((tenant, shard), rows) in &ids {
            for chunk in rows.chunks(ROWS_PER_BATCH) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for (id, seq) in chunk {
                    batch.append_statement(self.stmts.insert_event_id.clone());
                    values.push((*tenant, *shard, *id, *seq as i64));
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
            .map(|(tenant, last)| self.write_facets(tenant, first[tenant], *last))
            .collect();
        run_bounded(facets, 4).await?;
        // Only now the watermarks: every row below them is written.
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
            let rows = self.tail_rows(tenant, at + 1, to).await?;
            let mut item = Item {
                ids: Vec::with_capacity(rows.len()),
                nodes: Vec::with_capacity(rows.len() * 2),
            };
            for (i, (seq, hash, id)) in rows.iter().enumerate() {
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
                item.ids.push((tenant.to_string(), id.clone(), *seq));
            }
            if rows.len() as u64 != to - at {
                return Err(StoreError::Corrupt(format!(
                    "tenant {tenant}: committed records {}..={to} are missing",
                    at + 1 + rows.len() as u64
                )));
            }
            self.write_derived(&[item]).await?;
            at = to;
        }
        Ok(())
    }
}
