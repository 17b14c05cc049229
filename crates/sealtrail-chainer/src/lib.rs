//! The chainer: one loop per log partition that turns ordered log entries into chained,
//! stored records, then tells waiting gateways and commits the log position.
//!
//! Per poll it (1) loads the chain heads (and Merkle tree frontiers) of tenants it has not
//! cached and the stored events whose ids the entries reuse, (2) runs the pure chain step
//! for every new event and appends its leaf to the tenant's tree,
//! (3) writes all records, receipts and completed tree nodes in one store batch, (4) replies to waiters and
//! (5) commits the log offset. It reads no clock and draws no randomness, so replaying
//! entries after a crash produces byte-identical records, which the store accepts as
//! no-ops (DESIGN.md §4.3).
//!
//! Crash windows: a crash before (3) returns loses nothing acknowledged (no waiter was
//! answered; a durable log redelivers from the last committed offset). A crash between
//! (3) and (5) redelivers entries that are already stored: their ids are found in
//! step (1) (every id of an entry is looked up when the log says it
//! [may be stored](PartitionConsumer::maybe_stored))
//! and they are answered as idempotent retries, so nothing is chained twice. The same
//! holds for an entry the gateway published twice (its producer was replaced while the
//! entry, perhaps already written, waited for a retry): the copy is marked
//! [`LogEntry::resent`] and every id of it is looked up. A store call
//! that fails in (3) has an unknown outcome; the very same batch is resubmitted until it
//! is accepted (a replay of stored records is a no-op), never recomputed.
#![forbid(unsafe_code)]

// foldhash, not SipHash: a poll hashes every event's (tenant, id).
use foldhash::{HashMap, HashMapExt};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use sealtrail_core::backoff::Backoff;
use sealtrail_core::committed::{ChainedBatch, Committed};
use sealtrail_core::merkle::{Frontier, record_leaf};
use sealtrail_core::receipt::{ItemError, Receipt};
use sealtrail_core::record::{ChainHead, chain_step};
use sealtrail_log::{EntryOutcome, LogEntry, Offset, PartitionConsumer, ReplyAddress, ReplySink};
use sealtrail_store::{CommitBatch, Store, StoreError, StoredEvent, TreeNode};

/// The longest wait between retries of a store call.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Tuning of one chainer.
#[derive(Debug, Clone)]
pub struct ChainerConfig {
    /// Upper bound on events per store batch.
    pub max_batch_events: usize,
    /// How many tenants' chain heads each partition keeps in memory (LRU); a miss costs
    /// one store read.
    pub head_cache_tenants: usize,
}

impl Default for ChainerConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 4096,
            head_cache_tenants: 100_000,
        }
    }
}

pub use sealtrail_log::signals::{CommitSignal, Health};

/// Why a chainer stopped before its log closed. Each is fatal for the chainer (crash-only:
/// its partition is picked up again by a restart or by another chainer, which replays the
/// log from the last committed offset).
#[derive(Debug, thiserror::Error)]
pub enum ChainerError {
    /// Another chainer has claimed this partition in the store (distributed mode): this
    /// one is stale and must stop; its successor replays from the log.
    #[error("chainer fenced: {0}")]
    Fenced(String),
    /// The store refused a batch by the append rule (a fork, gap, broken link or duplicate
    /// id): this chainer's view of the chain is wrong — another process writing the same
    /// chains, or a bug. Writing on would fork the log, so it stops.
    #[error(
        "the store refused a batch ({0}): this chainer's view of the chain is wrong (is another process writing the same data?); stopping rather than forking the log"
    )]
    Refused(sealtrail_store::rule::Refusal),
    /// The store failed in a way retrying cannot fix (corrupt data, a poisoned engine, a
    /// misconfiguration).
    #[error("{0}")]
    Fatal(StoreError),
    /// Internal: the log closed while a store call was failing; `run` returns `Ok`.
    #[doc(hidden)]
    #[error("the log closed while the store was failing")]
    Abandoned,
}

impl ChainerError {
    fn from_store(err: StoreError) -> Self {
        match err {
            StoreError::Fenced(m) => Self::Fenced(m),
            StoreError::Refused(r) => Self::Refused(r),
            other => Self::Fatal(other),
        }
    }
}

pub struct Chainer<C: PartitionConsumer> {
    consumer: C,
    store: Arc<dyn Store>,
    replies: Arc<dyn ReplySink>,
    signal: CommitSignal,
    config: ChainerConfig,
    heads: LruCache<String, ChainHead>,
    /// Each cached tenant's Merkle tree state (O(log n) hashes), in step with `heads`.
    frontiers: LruCache<String, Frontier>,
    health: Health,
}

/// A chained poll, ready to store.
struct Prepared {
    batch: Arc<CommitBatch>,
    settled: Vec<Settled>,
    /// Chain heads once `batch` is stored.
    heads: HashMap<String, Option<ChainHead>>,
    /// Tree frontiers once `batch` is stored.
    frontiers: HashMap<String, Frontier>,
}

/// One entry's result, before it is sent.
/// An event id already chained: stored before this poll, or earlier in this batch.
enum Known {
    Stored(Box<StoredEvent>),
    InBatch(usize),
}

struct Settled {
    reply_to: Option<ReplyAddress>,
    receipt: Receipt,
    records: Committed,
}

impl<C: PartitionConsumer> Chainer<C> {
    pub fn new(
        consumer: C,
        store: Arc<dyn Store>,
        replies: Arc<dyn ReplySink>,
        signal: CommitSignal,
        config: ChainerConfig,
    ) -> Self {
        let capacity = NonZeroUsize::new(config.head_cache_tenants.max(1)).expect("non-zero");
        Self {
            consumer,
            store,
            replies,
            signal,
            config,
            heads: LruCache::new(capacity),
            frontiers: LruCache::new(capacity),
            health: Health::default(),
        }
    }

    /// Reports this chainer's store failures to `health`.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Runs until the log is closed and drained (graceful shutdown) or the chainer is
    /// fenced.
    pub async fn run(mut self) -> Result<(), ChainerError> {
        let partition = self.consumer.partition();
        tracing::debug!(partition, "chainer started");
        while let Some(entries) = self.consumer.poll(self.config.max_batch_events).await {
            let last_offset: Offset = entries
                .last()
                .map(|(o, _)| *o)
                .expect("poll returns at least one entry");
            // A redelivery (the log says so), or a copy the gateway published again
            // (`LogEntry::resent`): every id is looked up.
            let maybe_stored: Vec<bool> = entries
                .iter()
                .map(|(offset, entry)| entry.resent || self.consumer.maybe_stored(*offset))
                .collect();
            let entries: Vec<LogEntry> = entries.into_iter().map(|(_, e)| e).collect();
            match self.process(entries, &maybe_stored).await {
                Ok(()) => {}
                // Shutting down or revoked while the store failed: the batch in hand was not
                // acknowledged, and a durable log redelivers it.
                Err(ChainerError::Abandoned) => return Ok(()),
                Err(err) => return Err(err),
            }
            if let Err(err) = self.consumer.commit(last_offset).await {
                // Not fatal: the entries are stored; a redelivery is answered idempotently.
                tracing::warn!(partition, %err, "could not commit the log offset");
            }
        }
        tracing::debug!(partition, "chainer drained and stopped");
        Ok(())
    }

    async fn process(
        &mut self,
        mut entries: Vec<LogEntry>,
        maybe_stored: &[bool],
    ) -> Result<(), ChainerError> {
        // (1)+(2): read and chain. Reads write nothing but, at most, the tree nodes of a
        // chain stored without them (`load_frontier`), which are deterministic; so a failed
        // read is simply retried from scratch (with the head cache dropped, as it may be
        // stale) — if retrying can help at all.
        let mut backoff = Backoff::new(Duration::from_millis(50), MAX_BACKOFF);
        let prepared = loop {
            match self.prepare(&mut entries, maybe_stored).await {
                Ok(prepared) => break prepared,
                Err(err) if err.is_retryable() => {
                    self.heads.clear();
                    self.frontiers.clear();
                    self.retry_after(&err, &mut backoff).await?;
                }
                Err(err) => return Err(self.fail(&entries, err).await),
            }
        };
        // (3): store. A failure here has an unknown outcome (the batch may be stored, e.g.
        // when an fsync succeeded but the answer was lost). Recomputing from a fresh read
        // would then chain the same events a second time, so the very same batch is
        // resubmitted instead: a replay of stored records is a no-op. Only retryable errors
        // are retried; a refusal, a fencing or a fatal store error stops the chainer.
        let events = prepared.batch.records.len();
        let started = std::time::Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(50), MAX_BACKOFF);
        let mut told_waiters = false;
        loop {
            match self.store.append_shared(prepared.batch.clone()).await {
                Ok(()) => break,
                Err(err) if err.is_retryable() => {
                    if matches!(err, StoreError::NoSpace(_)) && !told_waiters {
                        // The disk will not come back in a commit timeout: answer the
                        // waiters now (the batch stays in hand and commits once space is
                        // freed; a client retrying the same ids is answered idempotently).
                        told_waiters = true;
                        self.tell_waiters(&entries, &err).await;
                    }
                    self.retry_after(&err, &mut backoff).await?;
                }
                Err(err) => return Err(self.fail(&entries, err).await),
            }
        }
        metrics::histogram!("sealtrail_store_append_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("sealtrail_commit_batch_events").record(events as f64);
        metrics::counter!("sealtrail_events_committed_total").increment(events as u64);
        // Only now may the cache move forward: it must never be ahead of the store.
        for (tenant, head) in prepared.heads {
            if let Some(head) = head {
                self.heads.put(tenant, head);
            }
        }
        for (tenant, frontier) in prepared.frontiers {
            self.frontiers.put(tenant, frontier);
        }
        let partition = self.consumer.partition();
        self.health.clear_partition(partition);
        self.health.wrote(partition);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics::gauge!("sealtrail_chainer_last_write_timestamp_seconds", "partition" => partition.to_string())
            .set(now.as_secs_f64());
        // (4): tell the waiters, with the commit time the store stamped on the receipts.
        self.signal.bump();
        let batch = &prepared.batch;
        let replies: Vec<_> = prepared
            .settled
            .into_iter()
            .filter_map(|s| {
                let to = s.reply_to?;
                let mut receipt = s.receipt;
                batch.copy_stamp(&mut receipt);
                let outcome = EntryOutcome::Committed {
                    receipt,
                    records: s.records,
                };
                Some((to, outcome))
            })
            .collect();
        if !replies.is_empty() {
            self.replies.send_all(replies).await;
        }
        Ok(())
    }

    /// Waits before a retry; gives up with `Abandoned` when the log is closing (the batch
    /// in hand was not acknowledged, and a durable log redelivers it to the partition's
    /// next chainer; `run` then returns `Ok`).
    async fn retry_after(
        &mut self,
        err: &StoreError,
        backoff: &mut Backoff,
    ) -> Result<(), ChainerError> {
        self.health
            .set_partition(self.consumer.partition(), format!("{}: {err}", err.kind()));
        metrics::counter!("sealtrail_chainer_retries_total", "kind" => err.kind()).increment(1);
        let wait = backoff.wait();
        tracing::error!(%err, retry_in_ms = wait.as_millis() as u64, "store call failed; retrying");
        let closing = self.consumer.closing();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = closing => {
                tracing::warn!(partition = self.consumer.partition(), "the log is closing: the batch in hand is abandoned (not acknowledged; a durable log redelivers it)");
                return Err(ChainerError::Abandoned);
            }
        }
        Ok(())
    }

    /// Answers every waiter of `entries` that the batch is not stored (yet).
    async fn tell_waiters(&self, entries: &[LogEntry], err: &StoreError) {
        let no_space = matches!(err, StoreError::NoSpace(_));
        let message = match err {
            StoreError::NoSpace(m) => format!(
                "{m}; the events are not committed yet: retry with the same ids (an id is never chained twice; an event sent without an id gets a new one on a retry)"
            ),
            StoreError::Fenced(_) => "the chainer lost ownership of its partition; retry".into(),
            _ => "the log's writer stopped on a store error; retry with the same ids".into(),
        };
        let replies: Vec<_> = entries
            .iter()
            .filter_map(|entry| {
                let to = entry.reply_to.clone()?;
                let outcome = EntryOutcome::Unavailable {
                    message: message.clone(),
                    no_space,
                };
                Some((to, outcome))
            })
            .collect();
        if !replies.is_empty() {
            self.replies.send_all(replies).await;
        }
    }

    /// Stops on a store error retrying cannot fix: answers the waiters, drops the caches.
    async fn fail(&mut self, entries: &[LogEntry], err: StoreError) -> ChainerError {
        self.heads.clear();
        self.frontiers.clear();
        self.health
            .set_partition(self.consumer.partition(), format!("{}: {err}", err.kind()));
        self.tell_waiters(entries, &err).await;
        ChainerError::from_store(err)
    }

    /// Reads what chaining `entries` needs, then chains them. Every read (and so every
    /// error) comes first; only the infallible chaining step (2) moves the events out of
    /// `entries` into the batch, so a failed call leaves `entries` whole for the retry,
    /// and a successful one leaves them without events (only their reply addresses are
    /// used afterwards).
    async fn prepare(
        &mut self,
        entries: &mut [LogEntry],
        maybe_stored: &[bool],
    ) -> Result<Prepared, StoreError> {
        // (1) heads of uncached tenants, and stored events whose ids are reused.
        let mut missing: Vec<String> = Vec::new();
        let mut keys: Vec<(String, String)> = Vec::new();
        for (entry, &all_ids) in entries.iter().zip(maybe_stored) {
            if !self.heads.contains(&entry.tenant_id) && !missing.contains(&entry.tenant_id) {
                missing.push(entry.tenant_id.clone());
            }
            // A server-generated id (a fresh UUIDv7) cannot be stored already, unless the
            // log redelivers an entry that was stored before a crash.
            keys.extend(
                entry
                    .events
                    .iter()
                    .filter(|e| all_ids || e.event.client_id)
                    .map(|e| (entry.tenant_id.clone(), e.event.id.clone())),
            );
        }
        let mut working: HashMap<String, Option<ChainHead>> = HashMap::new();
        if !missing.is_empty() {
            let mut fetched = self.store.heads(missing.clone()).await?;
            for tenant in missing {
                working.insert(tenant.clone(), fetched.remove(&tenant));
            }
        }
        // Whether any event of this poll is looked up by id (`keys` and the lookups below
        // take the same events): if none is, no event can find another in `known`.
        let lookups = !keys.is_empty();
        let mut known: HashMap<(String, String), Known> = if !lookups {
            HashMap::new()
        } else {
            self.store
                .find_events(keys)
                .await?
                .into_iter()
                .map(|e| {
                    (
                        (e.record.tenant_id.clone(), e.record.id.clone()),
                        Known::Stored(Box::new(e)),
                    )
                })
                .collect()
        };
        // Nodes below this level the store does not keep (it computes them).
        let min_level = self.store.min_tree_level();

        // The tree frontier of every tenant with an event here, at its head before this
        // poll.
        for entry in entries.iter() {
            let tenant = &entry.tenant_id;
            if !working.contains_key(tenant) {
                working.insert(tenant.clone(), self.heads.get(tenant).cloned());
            }
        }
        let mut frontiers: HashMap<String, Frontier> = HashMap::new();
        for (tenant, head) in &working {
            let size = head.as_ref().map_or(0, |h| h.sequence_number);
            let frontier = match self.frontiers.get(tenant) {
                Some(f) if f.size() == size => f.clone(),
                _ => self.load_frontier(tenant, size).await?,
            };
            frontiers.insert(tenant.clone(), frontier);
        }

        // (2) chain: nothing here fails. The records' vector is sized once: grown push by
        // push it was copied over and over (a sixth of the server's page faults in the
        // gRPC benchmark).
        let mut batch = CommitBatch {
            records: Vec::with_capacity(entries.iter().map(|e| e.events.len()).sum()),
            ..CommitBatch::default()
        };
        let mut settled = Vec::with_capacity(entries.len());
        for (entry, &all_ids) in entries.iter_mut().zip(maybe_stored) {
            let tenant = &entry.tenant_id;
            let mut receipt = Receipt::queued(
                entry.receipt_id.clone(),
                entry.created_at.clone(),
                Vec::with_capacity(entry.events.len()),
                entry.rejected.clone(),
            );
            // The committed records go back only to a caller that waits for them.
            let wants_records = entry.reply_to.is_some();
            let mut records =
                Committed::with_capacity(if wants_records { entry.events.len() } else { 0 });
            for indexed in std::mem::take(&mut entry.events) {
                let event = indexed.event;
                let key = (all_ids || event.client_id).then(|| (tenant.clone(), event.id.clone()));
                if let Some(stored) = key.as_ref().and_then(|k| known.get(k)) {
                    let digest = match stored {
                        Known::Stored(e) => &e.input_digest,
                        Known::InBatch(i) => &batch.records[*i].input_digest,
                    };
                    // The same input again; or the id the server minted for this very
                    // input, sent back by a client retrying a lost answer.
                    if *digest == event.input_digest
                        || event.minted_digest.as_deref() == Some(digest.as_str())
                    {
                        // A redelivery (after a crash or a rebalance) or a client's retry.
                        metrics::counter!("sealtrail_chainer_already_stored_events_total")
                            .increment(1);
                        receipt.accepted += 1;
                        receipt.ids.push(event.id.clone());
                        if wants_records {
                            match stored {
                                Known::Stored(e) => records.push_record(e.record.clone()),
                                Known::InBatch(i) => records.push_chained(*i),
                            }
                        }
                    } else {
                        receipt.rejected += 1;
                        receipt.errors.push(ItemError {
                            index: indexed.index,
                            code: "conflict".into(),
                            message: format!(
                                "event id {:?} already exists with different content; use a new id",
                                event.id
                            ),
                        });
                    }
                    continue;
                }
                let head = working.get_mut(tenant).expect("loaded above");
                let chained = chain_step(head.as_ref(), tenant, event);
                *head = Some(chained.head());
                let frontier = frontiers.get_mut(tenant).expect("loaded above");
                let leaf = record_leaf(&chained.record.hash).expect("the chain step writes hex");
                frontier.push(&leaf, |id, hash| {
                    if id.level >= min_level {
                        batch.tree_nodes.push(TreeNode {
                            tenant_id: tenant.clone(),
                            id,
                            hash,
                        })
                    }
                });
                receipt.accepted += 1;
                receipt.ids.push(chained.record.id.clone());
                if wants_records {
                    records.push_chained(batch.records.len());
                }
                // A later event of this poll may reuse the id — also one the server minted
                // here: a client retrying a request that timed out sends the minted ids
                // back, and the retry can land in the same poll as the original. Only an
                // event that is looked up can (so a poll of server-made ids alone, the
                // common case, skips the map).
                if lookups {
                    known.insert(
                        key.unwrap_or_else(|| (tenant.clone(), chained.record.id.clone())),
                        Known::InBatch(batch.records.len()),
                    );
                }
                batch.records.push(chained);
            }
            receipt.errors.sort_by_key(|e| e.index);
            receipt.settle();
            if !entry.reply_only {
                batch.receipts.push((tenant.clone(), receipt.clone()));
            }
            settled.push(Settled {
                reply_to: entry.reply_to.clone(),
                receipt,
                records,
            });
        }

        // The answers share the stored batch: no copy of a record per waiter.
        let batch = Arc::new(batch);
        for s in &mut settled {
            s.records.share(batch.clone() as Arc<dyn ChainedBatch>);
        }
        Ok(Prepared {
            batch,
            settled,
            heads: working,
            frontiers,
        })
    }

    /// The tree frontier of `tenant` at `size` leaves, from O(log n) stored nodes.
    ///
    /// A chain stored before the tree existed (or whose nodes are missing) is backfilled
    /// once: the chain is read in order and every node written, in batches without
    /// records. A crash midway leaves some nodes written; they are deterministic, so the
    /// next attempt rewrites the same values.
    async fn load_frontier(&self, tenant: &str, size: u64) -> Result<Frontier, StoreError> {
        if size == 0 {
            return Ok(Frontier::new());
        }
        let ids = Frontier::ids(size);
        let stored = self.store.tree_nodes(tenant, ids).await?;
        if let Some(hashes) = stored.into_iter().collect::<Option<Vec<_>>>() {
            return Frontier::from_nodes(size, hashes)
                .map_err(|e| StoreError::Corrupt(e.to_string()));
        }
        tracing::warn!(
            tenant,
            size,
            "Merkle tree nodes missing; rebuilding them from the chain"
        );
        let mut frontier = Frontier::new();
        while frontier.size() < size {
            let rows = self.store.scan_chain(tenant, frontier.size(), 4096).await?;
            if rows.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "tenant {tenant:?}: the chain ends at {} below its head {size}",
                    frontier.size()
                )));
            }
            let mut batch = CommitBatch::default();
            for row in rows.iter().take((size - frontier.size()) as usize) {
                let leaf = record_leaf(&row.hash).ok_or_else(|| {
                    StoreError::Corrupt(format!("record {}: bad hash", row.sequence_number))
                })?;
                frontier.push(&leaf, |id, hash| {
                    batch.tree_nodes.push(TreeNode {
                        tenant_id: tenant.to_string(),
                        id,
                        hash,
                    })
                });
            }
            self.store.append(batch).await?;
        }
        Ok(frontier)
    }
}
