//! The embedded event store on fjall (an LSM tree), with API keys in SQLite.
//!
//! Why an LSM here: every event adds entries to three filter indexes (actor, action,
//! resource) at effectively random positions. A B-tree (SQLite) rewrites a whole page per
//! touched index leaf on every commit; an LSM appends the new keys to its journal and sorts
//! them later in the background. Measured on this project's 2-core machine with varied
//! actors and resources: SQLite with those indexes ~20k events/s, fjall ~67k events/s,
//! both fsyncing every group commit (see the README's "Storage").
//!
//! Keyspaces (all integers big-endian; `T` = tenant as `len:u8` + bytes):
//! - `events`:   `T seq:u64` → `hash(64) digest(64) canonical-record`
//! - `ids`:      `T id` → `seq:u64`
//! - `facets`:   `T kind:u8 len:u16 value seq:u64` → empty (kind 1 actor, 2 action, 3 resource)
//! - `receipts`: `T receipt_id` → receipt JSON
//! - `tree`:     `T level:u8 index:u64` → 32-byte Merkle node hash (`TreeNode`)
//!
//! API keys live in the SQLite database of [`SqliteStore`] in the same data directory,
//! because `sealtrail keys …` must work from a second process while the server runs and
//! fjall allows one process per database.
//!
//! Crash windows: a group is one fjall write batch, written to the journal and fsynced
//! (`durability(SyncAll)`) *before* fjall applies it to the memtables, so no reader sees a
//! record a crash can still erase. A crash before the fsync completes leaves none of the
//! group after recovery (the journal replays whole batches only), and nothing of it was
//! acknowledged or readable. A crash after it leaves the whole group, replayed from the
//! journal on the next start.
//!
//! Memory and journal size are bounded by [`FjallLimits`]; `budget.rs` says how and why.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};
use sealtrail_core::merkle::{Hash, NodeId};
use sealtrail_core::receipt::{Receipt, ReceiptStatus};
use sealtrail_core::record::{ChainHead, Record};

use crate::disk::DiskGuard;
use crate::group::GroupCommitter;
use crate::rule::{self, GroupIds};

mod budget;

use crate::sqlite::SqliteStore;
use crate::{
    ApiKey, ChainRow, CommitBatch, EventPage, EventQuery, Paging, Store, StoreError, StoreResult,
    StoredEvent,
};
use budget::WriteBudget;
pub use budget::{FjallLimits, MAX_SEALED_MEMTABLES};

/// Directory of the fjall database inside the data directory.
pub const EVENTS_DIR: &str = "events";

const HASH_LEN: usize = 64;
/// Tenants whose head sequence number the writer remembers (then it starts over).
const HEAD_CACHE_TENANTS: usize = 100_000;
/// How often the store's gauges are refreshed on the metrics registry.
const METRICS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// The keyspaces, in [`Trees::all`] order.
const KEYSPACES: usize = 5;
const KS_EVENTS: usize = 0;
const KS_IDS: usize = 1;
const KS_FACETS: usize = 2;
const KS_RECEIPTS: usize = 3;
const KS_TREE: usize = 4;
const FACET_ACTOR: u8 = 1;
const FACET_ACTION: u8 = 2;
const FACET_RESOURCE: u8 = 3;

#[derive(Clone)]
struct Trees {
    db: Database,
    events: Keyspace,
    ids: Keyspace,
    facets: Keyspace,
    receipts: Keyspace,
    tree: Keyspace,
}

pub struct FjallStore {
    trees: Trees,
    writer: GroupCommitter,
    keys: Arc<SqliteStore>,
    space: Arc<DiskGuard>,
    /// Dropping it stops the thread that publishes the store's gauges.
    monitor_stop: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// A failed read: fjall refuses reads of nothing, so only I/O (retryable) or a poisoned
/// database (fatal) get here.
fn read_error(err: fjall::Error) -> StoreError {
    match err {
        fjall::Error::Poisoned | fjall::Error::Unrecoverable => poisoned(err),
        other => unavailable(other),
    }
}

/// A failed write. fjall poisons the database on any failed journal write or fsync (it
/// cannot tell what reached the disk), and a poisoned database refuses every later write:
/// only a restart, which replays the journal, recovers. So every write error but a plain
/// lock contention is fatal for this process.
fn write_error(err: fjall::Error) -> StoreError {
    match err {
        fjall::Error::Locked => unavailable(err),
        fjall::Error::Io(ref io) if io.kind() == std::io::ErrorKind::StorageFull => {
            StoreError::Fatal(format!(
                "the disk filled up under the event store ({err}); fjall cannot continue in \
                 this process: free disk space and restart the server (nothing acknowledged is lost)"
            ))
        }
        other => poisoned(other),
    }
}

fn poisoned(err: fjall::Error) -> StoreError {
    StoreError::Fatal(format!(
        "the event store failed a write and refuses further writes ({err}); restart the \
         server (it replays its journal; nothing acknowledged is lost), and check the disk and \
         the server log"
    ))
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

fn tenant_prefix(tenant: &str) -> Vec<u8> {
    // Tenant ids are at most 128 bytes (enforced when keys are created).
    let bytes = tenant.as_bytes();
    let mut key = Vec::with_capacity(bytes.len() + 40);
    key.push(bytes.len().min(255) as u8);
    key.extend_from_slice(&bytes[..bytes.len().min(255)]);
    key
}

fn event_key(tenant: &str, seq: u64) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn named_key(tenant: &str, name: &str) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(name.as_bytes());
    key
}

fn facet_prefix(tenant: &str, kind: u8, value: &str) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.push(kind);
    key.extend_from_slice(&(value.len() as u16).to_be_bytes());
    key.extend_from_slice(value.as_bytes());
    key
}

fn tree_key(tenant: &str, id: NodeId) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.push(id.level);
    key.extend_from_slice(&id.index.to_be_bytes());
    key
}

fn seq_suffix(key: &[u8]) -> StoreResult<u64> {
    let tail: [u8; 8] = key
        .get(key.len().saturating_sub(8)..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| corrupt("short key"))?;
    Ok(u64::from_be_bytes(tail))
}

/// Splits a stored event value into (hash, digest, canonical record).
fn split_value(value: &[u8]) -> StoreResult<(&str, &str, &[u8])> {
    if value.len() < 2 * HASH_LEN {
        return Err(corrupt("stored event is truncated"));
    }
    let hash = std::str::from_utf8(&value[..HASH_LEN]).map_err(corrupt)?;
    let digest = std::str::from_utf8(&value[HASH_LEN..2 * HASH_LEN]).map_err(corrupt)?;
    Ok((hash, digest, &value[2 * HASH_LEN..]))
}

impl Trees {
    /// Opens the database and its keyspaces; also returns fjall's own seal trigger of each
    /// keyspace (see [`budget::seal_triggers`]).
    fn open(dir: &Path, limits: &FjallLimits) -> StoreResult<(Self, [u64; KEYSPACES])> {
        let created = !dir.exists();
        let db = Database::builder(dir)
            .cache_size(limits.cache_bytes)
            .max_journaling_size(limits.fjall_journal_size())
            .worker_threads(limits.worker_threads)
            .open()
            .map_err(|e| {
                unavailable(format!(
                    "cannot open the event store in {}: {e}",
                    dir.display()
                ))
            })?;
        let memtable = limits.fjall_memtable_size();
        let open = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
            .map_err(unavailable)
        };
        let trees = Self {
            events: open("events")?,
            ids: open("ids")?,
            facets: open("facets")?,
            receipts: open("receipts")?,
            tree: open("tree")?,
            db,
        };
        let triggers = budget::seal_triggers(dir, created, memtable)?;
        // What the journal replayed sits in the active memtables: seal it now, so it is
        // flushed and the replayed journal files can go (the budget counts from zero).
        budget::seal(&trees, &[true; KEYSPACES]);
        Ok((trees, triggers))
    }

    /// Every keyspace with its name, indexed by the `KS_*` constants.
    fn all(&self) -> [(&'static str, &Keyspace); KEYSPACES] {
        [
            ("events", &self.events),
            ("ids", &self.ids),
            ("facets", &self.facets),
            ("receipts", &self.receipts),
            ("tree", &self.tree),
        ]
    }

    fn stored_event(
        &self,
        snap: &Snapshot,
        tenant: &str,
        seq: u64,
    ) -> StoreResult<Option<StoredEvent>> {
        let Some(value) = snap
            .get(&self.events, event_key(tenant, seq))
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let (hash, digest, body) = split_value(&value)?;
        let record = Record::from_canonical(body, hash).map_err(corrupt)?;
        Ok(Some(StoredEvent {
            record,
            input_digest: digest.to_string(),
        }))
    }

    fn seq_of(&self, snap: &Snapshot, tenant: &str, id: &str) -> StoreResult<Option<u64>> {
        let Some(value) = snap
            .get(&self.ids, named_key(tenant, id))
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value
            .as_ref()
            .try_into()
            .map_err(|_| corrupt("bad id entry"))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    fn head(&self, snap: &Snapshot, tenant: &str) -> StoreResult<Option<ChainHead>> {
        let prefix = tenant_prefix(tenant);
        let Some(last) = snap.prefix(&self.events, &prefix).next_back() else {
            return Ok(None);
        };
        let (key, value) = last.into_inner().map_err(unavailable)?;
        // A longer tenant name can share the prefix bytes only with a different length
        // byte, so every key under the prefix is this tenant's.
        let (hash, _, _) = split_value(&value)?;
        Ok(Some(ChainHead {
            sequence_number: seq_suffix(&key)?,
            hash: hash.to_string(),
        }))
    }

    /// Writes a group of batches as one durable fjall batch (see the module doc).
    ///
    /// Each batch is judged by the append rule (`crate::rule`) against the stored head
    /// as earlier groups and earlier batches of this group left it. `heads` caches the
    /// stored heads across groups — this writer is the only one (fjall admits one
    /// process) — and is updated only after a group is durable.
    ///
    /// Crash windows: see the module doc (nothing is visible before the fsync). Memory:
    /// the group first waits for the flush worker if it is behind, and seals the memtables
    /// once they took in the write buffer (`budget.rs`). Disk: a group is refused
    /// (`NoSpace`, nothing written) while the disk is below its free-space floor, so fjall
    /// itself never meets a full disk, which would poison it for the rest of the process.
    fn write_group(
        &self,
        heads: &mut HashMap<String, ChainHead>,
        budget: &mut WriteBudget,
        space: &DiskGuard,
        batches: &[&CommitBatch],
    ) -> StoreResult<()> {
        budget.wait_for_flushes(self)?;
        space.check()?;
        // This thread is the only writer, so what it reads is every earlier group, whole.
        let snap = self.db.snapshot();
        let mut wb = self.db.batch().durability(Some(PersistMode::SyncAll));
        let mut put = |ks: usize, key: Vec<u8>, value: Vec<u8>| {
            budget.account(ks, key.len(), value.len());
            wb.insert(self.all()[ks].1, key, value);
        };
        // Each tenant's head as this group has left it.
        let mut tops: HashMap<&str, ChainHead> = HashMap::new();
        let mut group_ids = GroupIds::default();
        for batch in batches {
            for (tenant, records) in rule::group_by_tenant(&batch.records)? {
                let head = match tops.get(tenant).or_else(|| heads.get(tenant)) {
                    Some(head) => Some(head.clone()),
                    None => self.head(&snap, tenant)?,
                };
                let replayed = rule::split_at_head(head.as_ref(), &records)?;
                for r in &records[..replayed] {
                    let stored = snap
                        .get(&self.events, event_key(tenant, r.record.sequence_number))
                        .map_err(read_error)?;
                    let stored_hash = match &stored {
                        Some(value) => Some(split_value(value)?.0),
                        None => None,
                    };
                    rule::check_replayed(r, stored_hash)?;
                }
                for chained in &records[replayed..] {
                    let r = &chained.record;
                    group_ids.check(chained, || self.seq_of(&snap, tenant, &r.id))?;
                    let mut value = Vec::with_capacity(2 * HASH_LEN + chained.canonical.len());
                    value.extend_from_slice(r.hash.as_bytes());
                    value.extend_from_slice(chained.input_digest.as_bytes());
                    value.extend_from_slice(&chained.canonical);
                    put(KS_EVENTS, event_key(tenant, r.sequence_number), value);
                    put(
                        KS_IDS,
                        named_key(tenant, &r.id),
                        r.sequence_number.to_be_bytes().to_vec(),
                    );
                    for (kind, facet) in [
                        (FACET_ACTOR, &r.actor.id),
                        (FACET_ACTION, &r.action),
                        (FACET_RESOURCE, &r.resource.id),
                    ] {
                        let mut key = facet_prefix(tenant, kind, facet);
                        key.extend_from_slice(&r.sequence_number.to_be_bytes());
                        put(KS_FACETS, key, Vec::new());
                    }
                }
                if let Some(last) = records.last()
                    && replayed < records.len()
                {
                    tops.insert(tenant, last.head());
                }
            }
            for (tenant, receipt) in &batch.receipts {
                // The store, not the chainer, stamps the commit time (the chainer has no clock).
                let mut receipt = receipt.clone();
                if receipt.committed_at.is_none() && receipt.status == ReceiptStatus::Committed {
                    receipt.committed_at = Some(crate::now_wire());
                }
                let json = serde_json::to_vec(&receipt).expect("receipts serialize");
                put(KS_RECEIPTS, named_key(tenant, &receipt.receipt_id), json);
            }
            for node in &batch.tree_nodes {
                put(
                    KS_TREE,
                    tree_key(&node.tenant_id, node.id),
                    node.hash.to_vec(),
                );
            }
        }
        // Journal write + fsync, then the memtables (fjall applies a batch with a
        // durability mode only after persisting it). A failed journal write poisons the
        // database for the rest of the process: that is fatal here.
        wb.commit().map_err(write_error)?;
        budget.seal_if_full(self);
        if heads.len() > HEAD_CACHE_TENANTS {
            heads.clear();
        }
        for (tenant, head) in tops {
            heads.insert(tenant.to_string(), head);
        }
        Ok(())
    }

    fn list(&self, snap: &Snapshot, tenant: &str, query: &EventQuery) -> StoreResult<EventPage> {
        let (limit, skip, after) = match query.paging {
            Paging::Page { page, page_size } => (
                page_size as usize,
                (page.max(1) as usize - 1) * page_size as usize,
                0,
            ),
            Paging::After { after, page_size } => (page_size as usize, 0, after),
        };
        let facet = [
            (FACET_ACTOR, &query.actor_id),
            (FACET_ACTION, &query.action),
            (FACET_RESOURCE, &query.resource_id),
        ]
        .into_iter()
        .find_map(|(kind, v)| v.as_ref().map(|v| (kind, v)));

        // Fast path: no filter at all. The chain is gapless, so the head is the total and a
        // page is a direct range.
        if !query.is_filtered() {
            let total = self.head(snap, tenant)?.map_or(0, |h| h.sequence_number);
            let start = after.max(skip as u64) + 1;
            let events = self
                .range_rows(snap, tenant, start, limit)?
                .iter()
                .map(ChainRow::record)
                .collect::<StoreResult<_>>()?;
            return Ok(EventPage { events, total });
        }

        // Otherwise walk candidate sequence numbers in order (a facet index if one applies,
        // else the whole chain), check every filter on the record, count all matches and keep
        // the requested window.
        let mut total = 0u64;
        let mut events = Vec::new();
        let mut consider = |record: Record| {
            if query.matches(&record) {
                total += 1;
                if record.sequence_number > after && total as usize > skip && events.len() < limit {
                    events.push(record);
                }
            }
        };
        match facet {
            Some((kind, value)) => {
                for item in snap.prefix(&self.facets, facet_prefix(tenant, kind, value)) {
                    let key = item.key().map_err(unavailable)?;
                    let seq = seq_suffix(&key)?;
                    if let Some(stored) = self.stored_event(snap, tenant, seq)? {
                        consider(stored.record);
                    }
                }
            }
            None => {
                for item in snap.prefix(&self.events, tenant_prefix(tenant)) {
                    let (_, value) = item.into_inner().map_err(unavailable)?;
                    let (hash, _, body) = split_value(&value)?;
                    consider(Record::from_canonical(body, hash).map_err(corrupt)?);
                }
            }
        }
        Ok(EventPage { events, total })
    }

    fn range_rows(
        &self,
        snap: &Snapshot,
        tenant: &str,
        from_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<ChainRow>> {
        let start = event_key(tenant, from_seq);
        let end = event_key(tenant, u64::MAX);
        let mut rows = Vec::with_capacity(limit.min(4096));
        for item in snap.range(&self.events, start..=end).take(limit) {
            let (key, value) = item.into_inner().map_err(unavailable)?;
            let (hash, _, body) = split_value(&value)?;
            rows.push(ChainRow {
                sequence_number: seq_suffix(&key)?,
                hash: hash.to_string(),
                canonical: body.to_vec(),
            });
        }
        Ok(rows)
    }
}

impl FjallStore {
    /// Opens (creating if needed) the store in `data_dir` with the default limits: events
    /// under `events/`, keys in `sealtrail.db`.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        Self::open_with(data_dir, FjallLimits::default())
    }

    /// [`FjallStore::open`] with the given memory and journal limits.
    pub fn open_with(data_dir: &Path, limits: FjallLimits) -> StoreResult<Self> {
        let keys = Arc::new(SqliteStore::open(data_dir)?);
        let (trees, triggers) = Trees::open(&data_dir.join(EVENTS_DIR), &limits)?;
        let writer_trees = trees.clone();
        let mut heads = HashMap::new();
        let mut budget = WriteBudget::new(limits, triggers);
        let space = Arc::new(DiskGuard::new(data_dir, limits.min_free_disk_bytes));
        let writer_space = space.clone();
        let writer = GroupCommitter::start("sealtrail-fjall-writer", move |batches| {
            writer_trees.write_group(&mut heads, &mut budget, &writer_space, batches)
        })?;
        let (monitor_stop, stopped) = std::sync::mpsc::channel::<()>();
        let monitor_trees = trees.clone();
        std::thread::Builder::new()
            .name("sealtrail-fjall-metrics".into())
            .spawn(move || {
                loop {
                    budget::publish(&monitor_trees, &limits);
                    match stopped.recv_timeout(METRICS_INTERVAL) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    }
                }
            })
            .map_err(|e| unavailable(format!("cannot start the store metrics thread: {e}")))?;
        Ok(Self {
            trees,
            writer,
            keys,
            space,
            monitor_stop: std::sync::Mutex::new(Some(monitor_stop)),
        })
    }

    /// Stops the writer after its last group commit and persists the journal.
    pub fn shutdown(&self) {
        self.writer.close();
        self.monitor_stop.lock().expect("monitor lock").take();
        let _ = self.trees.db.persist(PersistMode::SyncAll);
        self.keys.close();
    }

    /// The memtables' size by fjall's accounting (active and sealed, all keyspaces).
    pub fn memtable_bytes(&self) -> u64 {
        self.trees.db.write_buffer_size()
    }

    /// The journal's size on disk.
    pub fn journal_bytes(&self) -> StoreResult<u64> {
        self.trees.db.journal_disk_space().map_err(unavailable)
    }

    /// Runs a read on a blocking thread, through a snapshot: it sees whole groups only.
    /// (fjall applies a batch to the memtables entry by entry and publishes it after the
    /// last one; plain keyspace reads would see a group half applied — a chain head
    /// without the tree nodes written with it.)
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Trees, &Snapshot) -> StoreResult<T> + Send + 'static,
    {
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || f(&trees, &trees.db.snapshot()))
            .await
            .map_err(|e| unavailable(format!("read task failed: {e}")))?
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[async_trait]
impl Store for FjallStore {
    fn write_blocked(&self) -> Option<String> {
        self.space.blocked()
    }

    fn close(&self) {
        self.shutdown();
    }

    async fn append_shared(&self, batch: Arc<CommitBatch>) -> StoreResult<()> {
        self.writer.submit(batch).await
    }

    async fn heads(&self, tenants: Vec<String>) -> StoreResult<HashMap<String, ChainHead>> {
        self.read(move |t, s| {
            let mut out = HashMap::new();
            for tenant in tenants {
                if let Some(head) = t.head(s, &tenant)? {
                    out.insert(tenant, head);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn find_events(&self, keys: Vec<(String, String)>) -> StoreResult<Vec<StoredEvent>> {
        self.read(move |t, s| {
            let mut out = Vec::new();
            for (tenant, id) in keys {
                if let Some(seq) = t.seq_of(s, &tenant, &id)?
                    && let Some(stored) = t.stored_event(s, &tenant, seq)?
                {
                    out.push(stored);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get_event(&self, tenant_id: &str, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        Ok(self
            .find_events(vec![(tenant_id.to_string(), event_id.to_string())])
            .await?
            .pop())
    }

    async fn get_receipt(&self, tenant_id: &str, receipt_id: &str) -> StoreResult<Option<Receipt>> {
        let key = named_key(tenant_id, receipt_id);
        self.read(move |t, s| {
            s.get(&t.receipts, key)
                .map_err(unavailable)?
                .map(|v| serde_json::from_slice(&v).map_err(corrupt))
                .transpose()
        })
        .await
    }

    async fn list_events(&self, tenant_id: &str, query: EventQuery) -> StoreResult<EventPage> {
        let tenant = tenant_id.to_string();
        self.read(move |t, s| t.list(s, &tenant, &query)).await
    }

    async fn scan_chain(
        &self,
        tenant_id: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<ChainRow>> {
        let tenant = tenant_id.to_string();
        self.read(move |t, s| t.range_rows(s, &tenant, after.saturating_add(1), limit))
            .await
    }

    async fn tree_nodes(
        &self,
        tenant_id: &str,
        ids: Vec<NodeId>,
    ) -> StoreResult<Vec<Option<Hash>>> {
        let tenant = tenant_id.to_string();
        self.read(move |t, s| {
            ids.iter()
                .map(|id| {
                    match s
                        .get(&t.tree, tree_key(&tenant, *id))
                        .map_err(unavailable)?
                    {
                        None => Ok(None),
                        Some(v) => Hash::try_from(v.as_ref())
                            .map(Some)
                            .map_err(|_| corrupt("bad tree node")),
                    }
                })
                .collect()
        })
        .await
    }

    async fn create_key(&self, key: ApiKey) -> StoreResult<()> {
        self.keys.create_key(key).await
    }

    async fn find_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        self.keys.find_key(key_hash).await
    }

    async fn list_keys(&self, tenant_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        self.keys.list_keys(tenant_id).await
    }

    async fn revoke_key(&self, key_id: &str, revoked_at: &str) -> StoreResult<bool> {
        self.keys.revoke_key(key_id, revoked_at).await
    }
}
