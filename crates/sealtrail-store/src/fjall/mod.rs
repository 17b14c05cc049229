//! The embedded event store: a segment log is the store, fjall (an LSM tree) holds the
//! indexes derived from it, API keys live in SQLite.
//!
//! # Write path (issue 11)
//!
//! One writer thread takes every batch waiting (`group.rs`), judges them with the append
//! rule against what is stored (the fjall indexes plus the not-yet-indexed tail, `tail.rs`),
//! and appends the whole group as **one frame** to the segment log (`segment.rs`): the
//! exact canonical bytes that were hashed, the hash, tenant, sequence number, input digest,
//! the receipts and the Merkle tree nodes (`frame.rs`), then **one `fdatasync`**. Only
//! then is the group put in the in-memory tail, where every read sees it, and only then is
//! any request of the group answered. (A background thread keeps the last segment
//! zero-filled ahead of the writer, so the `fdatasync` overwrites blocks instead of
//! growing the file: `SegmentLog::preallocate`, `embedded.log_preallocation`; another asks
//! the kernel to drop sealed segments a window behind the end from its page cache:
//! `SegmentLog::keep_cached`, `embedded.log_page_cache`.) An indexer thread writes the
//! group's index entries to fjall off that path — in large batches, without an fsync
//! each — and removes the group from the tail once they are committed.
//!
//! The indexes (all integers big-endian; `T` = tenant as `len:u8` + bytes):
//! - `records`:  `frame-position:u64 chunk:u32` → up to [`RECORDS_PER_ENTRY`] (64) pointers
//!   of `hash(32) log-position:u64 entry-length:u32`, one per record (the record itself
//!   is read from the log by position). A record's `index` is its place in its frame
//!   sorted by (tenant, seq), so each tenant's records of a frame have consecutive
//!   indexes; entry `chunk` holds the pointers of indexes `64 chunk .. 64 chunk + 63`
//!   (every entry of a frame but its last is full). 64 to an entry, not one entry per
//!   record: each entry costs fjall an insert, a flush and a place in its block index,
//!   and the pointers were half of all entries (measured: the 1M-event gRPC run took
//!   6 – 16% less server CPU in three of four pairs, and ~15 MB less peak memory)
//! - `runs`:     `T first-seq:u64` → `frame-position:u64 index:u32 count:u32`: one entry per
//!   tenant per frame, naming the `records` pointers of its sequence numbers `first-seq ..
//!   first-seq + count`
//! - `ids`:      `1 millis:u48 T id` for a UUIDv7 id (its own timestamp) → `seq:u64`, for
//!   the ids that arrive in key order (see `unordered`)
//! - `facets`:   `T kind:u8 token(16) first-seq:u64` → the sequence numbers of one
//!   frame's records with that value, as a posting list (`postings`; kind 1 actor,
//!   2 action, 3 resource): one entry per value per frame, not one per record, so a batch
//!   whose records share an action costs one insert for it, and counting a filter's
//!   `total` reads a few entries per frame instead of one per record. `token` is a keyed
//!   hash of the value (`FacetKey`), so no record content is ever in the index: erasing a
//!   record from the log (a redaction) erases it from the data directory
//! - `receipts`: keyed like `ids` (receipt ids are UUIDv7) → receipt JSON
//! - `unordered`: `1` + an `ids` key, or `2` + a `receipts` key, for the entries that
//!   would break those keyspaces' key order: ids that are no UUIDv7 (`0 T id`, client
//!   ids), and stragglers — a UUIDv7 whose key is not past every key the keyspace held
//!   when its memtable was last sealed (an id minted a few milliseconds before others that
//!   reached an earlier frame). A lookup reads `ids` (`receipts`), then `unordered`.
//! - `runs` also holds, under `0 T`, a tenant's **retention boundary** (issue 15: the
//!   first record kept, and the one before it; see [`Trees::prune`]): records before it
//!   have no `ids` or `facets` entries and their log entries hold the redacted form
//! - `tree`:     `T level:u8 index:u64` → 32-byte Merkle node hash (`TreeNode`), for nodes
//!   of level [`STORED_LEVEL`] and up only (one node per 256 records); a lower node is
//!   computed from its ≤ 128 leaves, whose record hashes the `records` entries hold
//!
//! **Why these keys (compaction).** An LSM tree rewrites a table when a newer one overlaps
//! its key range. Keyed by tenant first, every flushed table of a busy store spans every
//! tenant, overlaps every older table, and compaction rewrites ever more of the index as
//! it grows (measured: its CPU share rose from a seventh to two fifths of the machine over
//! 4M events, and ingest fell to half). The per-record keyspaces are therefore keyed in
//! write order — `records` by log position, `ids` and `receipts` by the UUIDv7 timestamp —
//! so a flushed table lies past every older one and is moved down, not rewritten; only the
//! small per-frame keyspaces (`runs`, `facets`, `tree`) are keyed by tenant, and their
//! level 0 gathers more tables before a merge ([`TENANT_KEYED_L0_TABLES`]). "Past" must be
//! exact: ids are minted when a request is read and reach the log in frame order, so a
//! few land behind ids of an earlier frame, and one such key made each new `ids` table
//! overlap the last one — fjall then merged them, which was nearly all of its compaction
//! work (~8% of the server's CPU in the gRPC benchmark, in stalls of up to half a second).
//! The indexer therefore sends every key at or below the keyspace's largest key at its
//! last seal (`budget::KeyOrder`) to `unordered`, a small keyspace whose own merges are
//! cheap. Which of the two keyspaces holds an entry depends on when the memtables were
//! sealed, so it can differ between a live index and a rebuild, and a replay after a crash
//! may write an entry to both (with the same value): lookups read both, removals remove
//! from both.
//!
//! The indexer persists an **"indexed up to" watermark** (a log position, in
//! `index/sealtrail-indexed-to`) about once a second, and only after `persist(SyncAll)`
//! has made every index entry below it durable. A start replays the log from the
//! watermark: entries past it may be in fjall already, wholly or in part (fjall's
//! unsynced journal, flushed tables), and writing them again is harmless — every index
//! entry is a pure function of the log, and frames are replayed in order.
//!
//! # What a crash leaves
//!
//! - **before or during the frame's write or its fsync:** the frame may be partly on disk.
//!   Nothing of the group was answered or readable (the tail gets it after the fsync). The
//!   next open cuts the torn frame off (logged); the chainers' logs redeliver the batches.
//! - **after the fsync, before the answers:** the group is in the log; the next open
//!   indexes it from the log. A redelivered batch is a byte-identical replay: a no-op.
//! - **anywhere in the indexer:** the log has every acknowledged group; the next open
//!   replays from the last persisted watermark, rebuilding whatever fjall lost.
//! - **a missing or unreadable index:** delete `index/` and start: it is rebuilt from the
//!   log (the whole log is replayed).
//!
//! A bad checksum anywhere but a torn last frame refuses to open, naming the segment and
//! offset (`segment.rs`); so does a log that ends before the watermark (synced bytes lost).
//!
//! API keys live in the SQLite database of [`SqliteStore`] in the same data directory,
//! because `sealtrail keys …` must work from a second process while the server runs and
//! fjall allows one process per database.
//!
//! Memory and journal size are bounded by [`FjallLimits`]; `budget.rs` says how and why.
//! The tail is bounded by `FjallLimits::tail_bytes`: the writer waits while it is fuller.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fjall::{
    Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode, Readable, Snapshot,
};
use sealtrail_core::merkle::{self, Hash, NodeId};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::{
    ChainHead, ChainedRecord, PRUNE_ACTION, REDACT_ACTION, Record, Redaction, is_redacted,
};

use crate::disk::DiskGuard;
use crate::group::GroupCommitter;
use crate::rule::{self, GroupIds};
use crate::segment::{LogReader, PAYLOAD_OFFSET, SegmentError, SegmentLog};

mod budget;
mod frame;
mod postings;
mod tail;

use crate::sqlite::SqliteStore;
use crate::{
    ApiKey, ChainRow, CommitBatch, EventPage, EventQuery, Store, StoreError, StoreResult,
    StoredEvent,
};
use budget::WriteBudget;
pub use budget::{FjallLimits, MAX_SEALED_MEMTABLES};
use frame::{Encoder, RecordEntry};
use tail::{Tail, TailRow};

/// Directory of the segment log inside the data directory.
pub const LOG_DIR: &str = "log";
/// Directory of the fjall indexes inside the data directory.
pub const INDEX_DIR: &str = "index";
/// Where data format 1 kept its fjall database (records in it, no log).
pub const LEGACY_EVENTS_DIR: &str = "events";
/// The watermark file in the index directory.
const WATERMARK_FILE: &str = "sealtrail-indexed-to";

const HASH_LEN: usize = 32;
const POINTER_VALUE_LEN: usize = HASH_LEN + 12;
/// Record pointers per `records` entry (2,816 bytes: one entry fits fjall's 4 KiB data
/// block, so reading one record's pointer reads one block, as before).
const RECORDS_PER_ENTRY: u32 = 64;
const RUN_VALUE_LEN: usize = 16;
/// Tenants whose head sequence number the writer remembers (then it starts over).
const HEAD_CACHE_TENANTS: usize = 100_000;
/// How often the store's gauges are refreshed on the metrics registry.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the indexer persists its watermark (bounds what a restart replays).
const WATERMARK_INTERVAL: Duration = Duration::from_secs(1);
/// A chain read joins two records' log reads into one when at most this many bytes lie
/// between them (other tenants' records of the same frame), up to [`RUN_BYTES`] a read.
const RUN_GAP: u64 = 16 * 1024;
const RUN_BYTES: u64 = 1024 * 1024;
/// Frame bytes the indexer folds into one fjall batch.
const INDEX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The size of the tables compaction writes (fjall's leveled default: 64 MiB). A table
/// being written holds its key hashes for the Bloom filter and its block index in memory
/// until it is finished, so this bounds the transient memory of a compaction. fjall
/// records it when a keyspace is created: an existing index keeps the size it was made with.
const TABLE_TARGET_BYTES: u64 = 16 * 1024 * 1024;
/// How many tables level 0 of a keyspace keyed by tenant (`facets`, `runs`, `tree`: [module
/// doc](self), why these keys) gathers before compaction merges them into level 1 (fjall's
/// default, 4, for the others: [`ORDERED_L0_TABLES`]). Every table flushed to one of them
/// spans all its tenants, so it overlaps all of level 1, and each merge rewrites all of
/// level 1. These keyspaces take few bytes per seal (a few entries per tenant per frame;
/// the writer seals every keyspace together, `budget.rs`), so their level-0 tables are
/// small: gathering 16 before a merge rewrites level 1 a quarter as often. Measured in
/// `make bench` (README, Benchmark): the bytes these keyspaces wrote fell to a quarter to a
/// third, and gRPC ingest after the REST scenarios took 1.6 – 4.5 µs less server CPU per
/// event. A read of one of them merges up to this many small tables more. fjall slows
/// writes down once level 0 holds 20 runs (and stops them at 30): 16 leaves room for the
/// flushes that finish while a merge runs, which happens only with
/// `embedded.fjall_worker_threads` ≥ 2 (with one, flushes wait behind the merge).
/// fjall records the threshold when a keyspace is created: an index made with another
/// keeps it until it is rebuilt (delete `index/` and start).
const TENANT_KEYED_L0_TABLES: u8 = 16;
/// fjall's default level-0 threshold, for the keyspaces keyed in write order: their
/// flushed tables lie past every older one and are moved down, not merged.
const ORDERED_L0_TABLES: u8 = 4;
/// Test hook: the indexer sleeps this many milliseconds before each batch, so tests can
/// crash and read while it lags far behind the log. Unset in production.
const PAUSE_ENV: &str = "SEALTRAIL_TEST_INDEXER_PAUSE_MS";
/// How long the writer waits for a full tail before it says so in the log.
const TAIL_STALL_WARNING: Duration = Duration::from_secs(5);
/// The keyspaces, in [`Trees::all`] order.
const KEYSPACES: usize = 7;
const KS_RECORDS: usize = 0;
const KS_IDS: usize = 1;
const KS_FACETS: usize = 2;
const KS_RECEIPTS: usize = 3;
const KS_TREE: usize = 4;
const KS_RUNS: usize = 5;
const KS_UNORDERED: usize = 6;
/// The first byte of an `unordered` key: what the rest is, an `ids` or a `receipts` key.
const UNORDERED_ID: u8 = 1;
const UNORDERED_RECEIPT: u8 = 2;
/// The lowest level of Merkle tree node the store keeps (in the log, the tail and fjall).
pub const STORED_LEVEL: u8 = 8;
const FACET_ACTOR: u8 = 1;
const FACET_ACTION: u8 = 2;
const FACET_RESOURCE: u8 = 3;

#[derive(Clone)]
struct Trees {
    db: Database,
    records: Keyspace,
    runs: Keyspace,
    ids: Keyspace,
    facets: Keyspace,
    receipts: Keyspace,
    tree: Keyspace,
    unordered: Keyspace,
    log: LogReader,
    facet_key: FacetKey,
    /// Retention boundaries (issue 15) of the tenants that have one (the first record
    /// kept), as the `runs` keyspace holds them ([`boundary_key`]).
    boundaries: Arc<RwLock<HashMap<String, u64>>>,
}

pub struct FjallStore {
    trees: Trees,
    tail: Arc<RwLock<Tail>>,
    writer: GroupCommitter,
    indexer: Mutex<Option<std::thread::JoinHandle<()>>>,
    keys: Arc<SqliteStore>,
    space: Arc<DiskGuard>,
    /// Dropping it stops the thread that publishes the store's gauges.
    monitor_stop: Mutex<Option<mpsc::Sender<()>>>,
    closed: Mutex<bool>,
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

/// An `ids` or `receipts` key: a UUIDv7 (every id the server makes, and what SDKs make)
/// under its own millisecond timestamp first, so entries arrive in nearly key order (see
/// "Why these keys" above); any other id under `0` and the tenant.
fn named_key(tenant: &str, name: &str) -> Vec<u8> {
    let prefix = tenant_prefix(tenant);
    let mut key = Vec::with_capacity(7 + prefix.len() + name.len());
    match sealtrail_core::event::uuid7_millis(name) {
        Some(ms) => {
            key.push(1);
            key.extend_from_slice(&ms.to_be_bytes()[2..]);
        }
        None => key.push(0),
    }
    key.extend_from_slice(&prefix);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The `unordered` key of an `ids` (`kind` [`UNORDERED_ID`]) or `receipts`
/// ([`UNORDERED_RECEIPT`]) key.
fn unordered_key(kind: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(kind);
    out.extend_from_slice(key);
    out
}

/// The `runs` key of a tenant's retention boundary: `0` then the tenant. Every other
/// `runs` key starts with a tenant's length byte (1 or more), so none collides, and the
/// boundaries are one prefix scan. Its value: the boundary (the first record kept) and
/// the boundary before it (where the log's entries of the removed records start), both
/// `u64` big-endian.
fn boundary_key(tenant: &str) -> Vec<u8> {
    let mut key = vec![0u8];
    key.extend_from_slice(&tenant_prefix(tenant));
    key
}

/// A boundary value: (the boundary, the boundary before it).
fn boundary_value(value: &[u8]) -> StoreResult<(u64, u64)> {
    let bytes: [u8; 16] = value
        .try_into()
        .map_err(|_| corrupt("a bad retention boundary value"))?;
    Ok((
        u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
        u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")),
    ))
}

/// A `records` key: the frame's log position and the number of the entry among the
/// frame's `records` entries (entry `chunk` holds the pointers of the records of indexes
/// `chunk * RECORDS_PER_ENTRY ..` in the frame's (tenant, seq) order).
fn record_key(pos: u64, chunk: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&pos.to_be_bytes());
    key[8..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// The `records` key holding the pointer of the record at `index` of frame `pos`, and the
/// pointer's offset in that entry's value.
fn record_slot(pos: u64, index: u32) -> ([u8; 12], usize) {
    (
        record_key(pos, index / RECORDS_PER_ENTRY),
        (index % RECORDS_PER_ENTRY) as usize * POINTER_VALUE_LEN,
    )
}

/// A `runs` value: where a run's first record key is, and how many records it has.
fn run_value(pos: u64, index: u32, count: u32) -> Vec<u8> {
    let mut value = Vec::with_capacity(RUN_VALUE_LEN);
    value.extend_from_slice(&pos.to_be_bytes());
    value.extend_from_slice(&index.to_be_bytes());
    value.extend_from_slice(&count.to_be_bytes());
    value
}

/// A run: its first sequence number (from the key), frame position, first index, count.
#[derive(Clone, Copy)]
struct Run {
    first: u64,
    pos: u64,
    index: u32,
    count: u64,
}

impl Run {
    fn parse(key: &[u8], value: &[u8]) -> StoreResult<Self> {
        if value.len() != RUN_VALUE_LEN || value[12..] == [0; 4] {
            return Err(corrupt("a runs index entry is malformed"));
        }
        Ok(Run {
            first: seq_suffix(key)?,
            pos: u64::from_be_bytes(value[..8].try_into().unwrap()),
            index: u32::from_be_bytes(value[8..12].try_into().unwrap()),
            count: u64::from(u32::from_be_bytes(value[12..].try_into().unwrap())),
        })
    }

    fn last(&self) -> u64 {
        self.first + self.count - 1
    }

    /// Where record `seq`'s pointer is ([`record_slot`]).
    fn slot(&self, seq: u64) -> ([u8; 12], usize) {
        record_slot(self.pos, self.index + (seq - self.first) as u32)
    }
}

/// Keys the `facets` index by a keyed hash of each value instead of the value: the index
/// holds no record content in plain, so erasing a record from the log (a redaction, issue
/// 15) leaves none of it behind in fjall's journal or tables, which keep a removed entry's
/// bytes until they happen to be rewritten. A filter looks its value up by the same hash;
/// the key is random per index (`budget::seal_triggers`), so the tokens say nothing
/// without it, and 128 bits make a collision of two values of a tenant negligible.
#[derive(Clone)]
struct FacetKey([u8; 32]);

impl FacetKey {
    /// `T kind token(16)`: SHA-256 of (key, tenant, kind, value), each length-prefixed.
    fn prefix(&self, tenant: &str, kind: u8, value: &str) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.0);
        h.update((tenant.len() as u32).to_le_bytes());
        h.update(tenant.as_bytes());
        h.update([kind]);
        h.update((value.len() as u32).to_le_bytes());
        h.update(value.as_bytes());
        let mut key = tenant_prefix(tenant);
        key.push(kind);
        key.extend_from_slice(&h.finalize()[..FACET_TOKEN_LEN]);
        key
    }
}

const FACET_TOKEN_LEN: usize = 16;

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

/// A `runs` entry names a record the `records` index lacks.
fn missing_record(tenant: &str, seq: u64) -> StoreError {
    corrupt(format!(
        "the runs index names {tenant}#{seq}, the records index has no entry for it; delete the index directory to rebuild it from the log"
    ))
}

/// Appends a record's pointer to a `records` value: the record's hash (raw), and where
/// its entry is in the log.
fn push_pointer(value: &mut Vec<u8>, hash_hex: &str, pos: u64, len: u32) -> StoreResult<()> {
    let hash = merkle::record_leaf(hash_hex)
        .ok_or_else(|| corrupt(format!("record hash {hash_hex:?} in the log is not hex")))?;
    value.extend_from_slice(&hash);
    value.extend_from_slice(&pos.to_be_bytes());
    value.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Checks a `records` value holds whole pointers, at least up to `upto` bytes.
fn check_pointers(value: &[u8], upto: usize) -> StoreResult<()> {
    if !value.len().is_multiple_of(POINTER_VALUE_LEN)
        || value.len() > RECORDS_PER_ENTRY as usize * POINTER_VALUE_LEN
        || value.len() < upto
    {
        return Err(corrupt(
            "a records index entry has the wrong length; delete the index directory to rebuild it from the log",
        ));
    }
    Ok(())
}

/// Splits a record's pointer into (hash, log position, entry length).
fn split_pointer(value: &[u8]) -> StoreResult<(Hash, u64, usize)> {
    if value.len() != POINTER_VALUE_LEN {
        return Err(corrupt("a records index entry has the wrong length"));
    }
    let hash: Hash = value[..HASH_LEN].try_into().unwrap();
    let pos = u64::from_be_bytes(value[HASH_LEN..HASH_LEN + 8].try_into().unwrap());
    let len = u32::from_be_bytes(value[HASH_LEN + 8..].try_into().unwrap());
    Ok((hash, pos, len as usize))
}

fn log_error(err: SegmentError) -> StoreError {
    match err {
        SegmentError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            StoreError::NoSpace(format!("the segment log: {io}"))
        }
        SegmentError::Io(io) => unavailable(format!("the segment log: {io}")),
        SegmentError::Corrupt { .. } => StoreError::Corrupt(err.to_string()),
        SegmentError::TooLarge(_) | SegmentError::Broken(_) => StoreError::Fatal(err.to_string()),
    }
}

impl From<SegmentError> for StoreError {
    fn from(err: SegmentError) -> Self {
        log_error(err)
    }
}

/// The watermark the indexer last persisted in `index_dir`: the log position below which
/// every index entry is durable — and so every frame fsynced (0 when there is none yet).
pub fn indexed_watermark(index_dir: &Path) -> StoreResult<u64> {
    read_watermark(index_dir)
}

fn read_watermark(index_dir: &Path) -> StoreResult<u64> {
    let path = index_dir.join(WATERMARK_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| {
            corrupt(format!(
                "{} holds {text:?}, not a log position ({e}); delete the index directory to rebuild it from the log",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(unavailable(format!("{}: {e}", path.display()))),
    }
}

/// Makes every index entry written so far durable, then records `position` as the
/// watermark. Crash window: the file is replaced atomically, after the sync; a crash
/// between the two leaves the older watermark, and a restart replays a little more.
fn persist_watermark(trees: &Trees, index_dir: &Path, position: u64) -> StoreResult<()> {
    trees
        .db
        .persist(PersistMode::SyncAll)
        .map_err(write_error)?;
    crate::write_durably(
        &index_dir.join(WATERMARK_FILE),
        format!("{position}\n").as_bytes(),
        false,
    )
    .map_err(|e| unavailable(format!("cannot record the index watermark: {e}")))
}

/// The index of `record` in `records` (it is one of them).
fn index_in(records: &[ChainedRecord], record: &ChainedRecord) -> usize {
    let base = records.as_ptr() as usize;
    let index = (record as *const ChainedRecord as usize - base) / size_of::<ChainedRecord>();
    debug_assert!(std::ptr::eq(&records[index], record));
    index
}

/// Decodes the record entry read at log position `pos` and checks it is the record the
/// index named (`tenant`, `seq`): an index pointing elsewhere is corruption.
fn checked_entry<'a>(
    tenant: &str,
    seq: u64,
    pos: u64,
    bytes: &'a [u8],
) -> StoreResult<RecordEntry<'a>> {
    let entry = frame::decode_record(bytes)
        .map_err(|e| corrupt(format!("the log entry at position {pos}: {e}")))?;
    if entry.tenant != tenant || entry.seq != seq {
        return Err(corrupt(format!(
            "the log entry at position {pos} is {}#{}, but the index has it as {tenant}#{seq}",
            entry.tenant, entry.seq
        )));
    }
    Ok(entry)
}

impl Trees {
    /// Opens the index database and its keyspaces; also returns fjall's own seal trigger
    /// of each keyspace (see [`budget::seal_triggers`]).
    fn open(
        dir: &Path,
        limits: &FjallLimits,
        log: LogReader,
    ) -> StoreResult<(Self, [u64; KEYSPACES])> {
        let db = Database::builder(dir)
            .cache_size(limits.cache_bytes)
            .max_journaling_size(limits.fjall_journal_size())
            .worker_threads(limits.worker_threads)
            .open()
            .map_err(|e| {
                unavailable(format!(
                    "cannot open the event indexes in {}: {e}",
                    dir.display()
                ))
            })?;
        let memtable = limits.fjall_memtable_size();
        let open = |name: &str, l0_tables: u8| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable)
                    .compaction_strategy(Arc::new(
                        fjall::compaction::Leveled::default()
                            .with_table_target_size(TABLE_TARGET_BYTES)
                            .with_l0_threshold(l0_tables),
                    ))
            })
            .map_err(unavailable)
        };
        let (ordered, by_tenant) = (ORDERED_L0_TABLES, TENANT_KEYED_L0_TABLES);
        let records = open("records", ordered)?;
        let runs = open("runs", by_tenant)?;
        let ids = open("ids", ordered)?;
        let facets = open("facets", by_tenant)?;
        let receipts = open("receipts", ordered)?;
        let tree = open("tree", by_tenant)?;
        let unordered = open("unordered", ordered)?;
        let (triggers, facet_key) = budget::seal_triggers(dir, memtable)?;
        let mut boundaries = HashMap::new();
        for item in runs.prefix([0u8]) {
            let (key, value) = item.into_inner().map_err(read_error)?;
            let (before, _) = boundary_value(&value)?;
            let tenant = key
                .get(2..)
                .and_then(|t| std::str::from_utf8(t).ok())
                .ok_or_else(|| corrupt("a bad retention boundary key"))?;
            boundaries.insert(tenant.to_string(), before);
        }
        let trees = Self {
            records,
            runs,
            ids,
            facets,
            receipts,
            tree,
            unordered,
            db,
            log,
            facet_key: FacetKey(facet_key),
            boundaries: Arc::new(RwLock::new(boundaries)),
        };
        // What the journal replayed sits in the active memtables: seal it now, so it is
        // flushed and the replayed journal files can go (the budget counts from zero).
        budget::seal(&trees, &[true; KEYSPACES]);
        Ok((trees, triggers))
    }

    /// Every keyspace with its name, indexed by the `KS_*` constants.
    fn all(&self) -> [(&'static str, &Keyspace); KEYSPACES] {
        [
            ("records", &self.records),
            ("ids", &self.ids),
            ("facets", &self.facets),
            ("receipts", &self.receipts),
            ("tree", &self.tree),
            ("runs", &self.runs),
            ("unordered", &self.unordered),
        ]
    }

    /// The largest key of the `ids` and of the `receipts` keyspace: where
    /// [`budget::KeyOrder`] starts after an open.
    fn last_ordered_keys(&self) -> StoreResult<[Vec<u8>; 2]> {
        let last = |ks: &Keyspace| -> StoreResult<Vec<u8>> {
            match ks.last_key_value() {
                Some(guard) => Ok(guard.key().map_err(read_error)?.to_vec()),
                None => Ok(Vec::new()),
            }
        };
        Ok([last(&self.ids)?, last(&self.receipts)?])
    }

    /// Reads an `ids` or `receipts` entry: from that keyspace, or from `unordered`.
    fn get_named(
        &self,
        snap: &Snapshot,
        kind: u8,
        key: &[u8],
    ) -> StoreResult<Option<fjall::UserValue>> {
        let ordered = if kind == UNORDERED_ID {
            &self.ids
        } else {
            &self.receipts
        };
        // Only a UUIDv7 key (`1 …`) can be in the ordered keyspace.
        if key.first() == Some(&1)
            && let Some(value) = snap.get(ordered, key).map_err(unavailable)?
        {
            return Ok(Some(value));
        }
        snap.get(&self.unordered, unordered_key(kind, key))
            .map_err(unavailable)
    }

    /// Reads the record entry a pointer points at, and checks it is the one the key names.
    fn load(&self, tenant: &str, seq: u64, value: &[u8]) -> StoreResult<StoredEvent> {
        let (_, pos, len) = split_pointer(value)?;
        let bytes = self.log.read_at(pos, len)?;
        let entry = checked_entry(tenant, seq, pos, &bytes)?;
        let record = Record::from_canonical(entry.canonical, entry.hash).map_err(corrupt)?;
        Ok(StoredEvent {
            record,
            input_digest: entry.digest.to_string(),
        })
    }

    /// The run of `tenant` that holds `seq`, if it is indexed.
    fn run_of(&self, snap: &Snapshot, tenant: &str, seq: u64) -> StoreResult<Option<Run>> {
        let Some(item) = snap
            .range(&self.runs, tenant_prefix(tenant)..=event_key(tenant, seq))
            .next_back()
        else {
            return Ok(None);
        };
        let (key, value) = item.into_inner().map_err(read_error)?;
        let run = Run::parse(&key, &value)?;
        Ok((seq <= run.last()).then_some(run))
    }

    /// The pointer of `tenant`'s record `seq`, if it is indexed.
    fn pointer_of(
        &self,
        snap: &Snapshot,
        tenant: &str,
        seq: u64,
    ) -> StoreResult<Option<[u8; POINTER_VALUE_LEN]>> {
        match self.run_of(snap, tenant, seq)? {
            Some(run) => self.run_pointer(snap, tenant, &run, seq).map(Some),
            None => Ok(None),
        }
    }

    /// The pointer of record `seq` of `run`: a run and its records are written in one batch
    /// ([`Trees::index_frame`]), so a run without it is corruption.
    fn run_pointer(
        &self,
        snap: &Snapshot,
        tenant: &str,
        run: &Run,
        seq: u64,
    ) -> StoreResult<[u8; POINTER_VALUE_LEN]> {
        let (key, at) = run.slot(seq);
        let value = snap
            .get(&self.records, key)
            .map_err(read_error)?
            .ok_or_else(|| missing_record(tenant, seq))?;
        check_pointers(&value, at + POINTER_VALUE_LEN)?;
        Ok(value[at..at + POINTER_VALUE_LEN]
            .try_into()
            .expect("checked length"))
    }

    /// Calls `f(seq, pointer)` for `tenant`'s indexed records `from ..= to` in order,
    /// until it returns `false`: one `runs` range, then one `records` range per run.
    fn scan(
        &self,
        snap: &Snapshot,
        tenant: &str,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &[u8]) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        if from > to {
            return Ok(());
        }
        let mut visit = |run: Run| -> StoreResult<bool> {
            let (lo, hi) = (from.max(run.first), to.min(run.last()));
            if lo > hi {
                return Ok(true);
            }
            let ((first_key, mut at), (last_key, _)) = (run.slot(lo), run.slot(hi));
            let mut seq = lo;
            // The entries of one frame have consecutive chunk numbers.
            let mut expected = first_key;
            for item in snap.range(&self.records, first_key..=last_key) {
                let (key, value) = item.into_inner().map_err(read_error)?;
                if *key != expected {
                    return Err(missing_record(tenant, seq));
                }
                check_pointers(&value, at + POINTER_VALUE_LEN)?;
                while at < value.len() && seq <= hi {
                    if !f(seq, &value[at..at + POINTER_VALUE_LEN])? {
                        return Ok(false);
                    }
                    seq += 1;
                    at += POINTER_VALUE_LEN;
                }
                if seq > hi {
                    break;
                }
                // Not the frame's last entry: it must be full, or the next one's first
                // pointer is not record `seq`'s.
                check_pointers(&value, RECORDS_PER_ENTRY as usize * POINTER_VALUE_LEN)?;
                let chunk = u32::from_be_bytes(key[8..].try_into().expect("12-byte key"));
                expected = record_key(run.pos, chunk + 1);
                at = 0;
            }
            if seq != hi + 1 {
                return Err(missing_record(tenant, seq));
            }
            Ok(true)
        };
        // The run holding `from` may start before it.
        if let Some(run) = self.run_of(snap, tenant, from)?
            && !visit(run)?
        {
            return Ok(());
        }
        if from == u64::MAX {
            return Ok(());
        }
        for item in snap.range(
            &self.runs,
            event_key(tenant, from + 1)..=event_key(tenant, to),
        ) {
            let (key, value) = item.into_inner().map_err(read_error)?;
            if !visit(Run::parse(&key, &value)?)? {
                break;
            }
        }
        Ok(())
    }

    fn stored_event(
        &self,
        snap: &Snapshot,
        tenant: &str,
        seq: u64,
    ) -> StoreResult<Option<StoredEvent>> {
        match self.pointer_of(snap, tenant, seq)? {
            Some(value) => self.load(tenant, seq, &value).map(Some),
            None => Ok(None),
        }
    }

    fn stored_hash(&self, snap: &Snapshot, tenant: &str, seq: u64) -> StoreResult<Option<String>> {
        match self.pointer_of(snap, tenant, seq)? {
            Some(value) => Ok(Some(hex::encode(split_pointer(&value)?.0))),
            None => Ok(None),
        }
    }

    fn seq_of(&self, snap: &Snapshot, tenant: &str, id: &str) -> StoreResult<Option<u64>> {
        let Some(value) = self.get_named(snap, UNORDERED_ID, &named_key(tenant, id))? else {
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
        // A longer tenant name can share the prefix bytes only with a different length
        // byte, so every key under the prefix is this tenant's.
        let Some(last) = snap.prefix(&self.runs, &prefix).next_back() else {
            return Ok(None);
        };
        let (key, value) = last.into_inner().map_err(read_error)?;
        let run = Run::parse(&key, &value)?;
        let seq = run.last();
        let value = self.run_pointer(snap, tenant, &run, seq)?;
        Ok(Some(ChainHead {
            sequence_number: seq,
            hash: hex::encode(split_pointer(&value)?.0),
        }))
    }

    /// Adds one frame's index entries to `wb`. Every entry is a pure function of the
    /// frame, so indexing a frame again (a replay after a crash) writes the same entries.
    /// A frame's `runs` and `records` entries go into the same batch, which fjall commits
    /// whole: no snapshot (and no crash) has a run without its records.
    ///
    /// Returns the redactions the frame's records order ([`Erasure`]), for the caller to
    /// carry out once the entries before them are committed.
    fn index_frame(
        &self,
        wb: &mut OwnedWriteBatch,
        budget: &mut WriteBudget,
        pos: u64,
        payload: &[u8],
    ) -> StoreResult<Vec<Order>> {
        let frame = frame::decode(payload)
            .map_err(|e| corrupt(format!("the log frame at position {pos}: {e}")))?;
        let mut put = |ks: usize, key: Vec<u8>, value: Vec<u8>| {
            // `ids` and `receipts` take only keys past their last seal; the rest go to
            // `unordered` (see "Why these keys").
            let (ks, key) = match ks {
                KS_IDS | KS_RECEIPTS if !budget.order.admits(ks, &key) => {
                    let kind = if ks == KS_IDS {
                        UNORDERED_ID
                    } else {
                        UNORDERED_RECEIPT
                    };
                    (KS_UNORDERED, unordered_key(kind, &key))
                }
                _ => (ks, key),
            };
            budget.account(ks, key.len(), value.len());
            wb.insert(self.all()[ks].1, key, value);
        };
        let payload_at = pos + PAYLOAD_OFFSET;
        // (tenant, kind, value) → the frame's sequence numbers with it, in order.
        let mut lists: HashMap<(&str, u8, &str), Vec<u64>> = HashMap::new();
        // The frame's records in (tenant, seq) order: a tenant's records of one frame are
        // consecutive sequence numbers, so they get consecutive `records` keys — one run.
        let mut order: Vec<usize> = (0..frame.records.len()).collect();
        order.sort_unstable_by_key(|&i| (frame.records[i].0.tenant, frame.records[i].0.seq));
        let index_of = |i: usize| {
            u32::try_from(i).map_err(|_| {
                corrupt(format!(
                    "the log frame at position {pos} has too many records"
                ))
            })
        };
        let mut run: Option<(&str, u64, u32, u32)> = None;
        let mut runs = Vec::new();
        let mut pointers = Vec::new();
        for (index, &i) in order.iter().enumerate() {
            let (r, start, len) = &frame.records[i];
            let index = index_of(index)?;
            if pointers.is_empty() {
                pointers.reserve(RECORDS_PER_ENTRY as usize * POINTER_VALUE_LEN);
            }
            push_pointer(&mut pointers, r.hash, payload_at + *start as u64, *len)?;
            if (index + 1) % RECORDS_PER_ENTRY == 0 || index as usize + 1 == order.len() {
                put(
                    KS_RECORDS,
                    record_key(pos, index / RECORDS_PER_ENTRY).to_vec(),
                    std::mem::take(&mut pointers),
                );
            }
            match &mut run {
                Some((tenant, first, _, count))
                    if *tenant == r.tenant && *first + u64::from(*count) == r.seq =>
                {
                    *count += 1;
                }
                _ => runs.extend(run.replace((r.tenant, r.seq, index, 1))),
            }
        }
        runs.extend(run);
        for (tenant, first, index, count) in runs {
            put(
                KS_RUNS,
                event_key(tenant, first),
                run_value(pos, index, count),
            );
        }
        let mut erasures = Vec::new();
        // Taken once per frame; empty (nothing to look up) until retention removes records.
        let boundaries = self.boundaries.read().expect("boundaries lock");
        for (r, _, _) in &frame.records {
            if boundaries.get(r.tenant).is_some_and(|&first| r.seq < first) {
                // Removed by retention (a replay after the removal): its records entry
                // stays (the tree's leaves), its id and facets do not come back.
                continue;
            }
            put(
                KS_IDS,
                named_key(r.tenant, r.id),
                r.seq.to_be_bytes().to_vec(),
            );
            if r.action == PRUNE_ACTION {
                match Prune::ordered_by(r) {
                    Ok(prune) => erasures.push(Order::Prune(prune)),
                    Err(e) => tracing::warn!(
                        tenant = r.tenant,
                        seq = r.seq,
                        "a record with the action {PRUNE_ACTION} that is not a prune event ({e}); nothing removed"
                    ),
                }
            }
            if r.action == REDACT_ACTION {
                match Erasure::ordered_by(r) {
                    Ok(erasure) => erasures.push(Order::Erase(erasure)),
                    // written before the action was reserved (clients could write it)
                    Err(e) => tracing::warn!(
                        tenant = r.tenant,
                        seq = r.seq,
                        "a record with the action {REDACT_ACTION} that is not a redaction ({e}); nothing erased"
                    ),
                }
            }
            if is_redacted(r.canonical) {
                // erased: its facets went with it
                continue;
            }
            for (kind, facet) in [
                (FACET_ACTOR, r.actor_id),
                (FACET_ACTION, r.action),
                (FACET_RESOURCE, r.resource_id),
            ] {
                lists
                    .entry((r.tenant, kind, facet))
                    .or_default()
                    .push(r.seq);
            }
        }
        for ((tenant, kind, value), seqs) in lists {
            let mut key = self.facet_key.prefix(tenant, kind, value);
            key.extend_from_slice(&seqs[0].to_be_bytes());
            put(KS_FACETS, key, postings::encode(&seqs));
        }
        for (tenant, receipt_id, json) in &frame.receipts {
            put(KS_RECEIPTS, named_key(tenant, receipt_id), json.to_vec());
        }
        for (tenant, id, hash) in &frame.nodes {
            if id.level >= STORED_LEVEL {
                put(KS_TREE, tree_key(tenant, *id), hash.to_vec());
            }
        }
        Ok(erasures)
    }

    /// Indexes frames as one fjall batch (no fsync: the watermark says what is durable).
    /// A frame with a redaction commits what came before it, then erases the redacted
    /// record ([`Trees::erase`]) before going on.
    fn index_frames<'a>(
        &self,
        budget: &mut WriteBudget,
        frames: impl Iterator<Item = (u64, &'a [u8])>,
    ) -> StoreResult<()> {
        budget.wait_for_flushes(self)?;
        let mut wb = self.db.batch();
        for (pos, payload) in frames {
            let orders = self.index_frame(&mut wb, budget, pos, payload)?;
            if !orders.is_empty() {
                std::mem::replace(&mut wb, self.db.batch())
                    .commit()
                    .map_err(write_error)?;
                for order in orders {
                    match order {
                        Order::Erase(erasure) => self.erase(&erasure)?,
                        Order::Prune(prune) => self.prune(&prune)?,
                    }
                }
            }
        }
        wb.commit().map_err(write_error)?;
        budget.seal_if_full(self);
        Ok(())
    }

    /// Erases a redacted record (issue 15), idempotently. In this order, so that a crash
    /// anywhere leaves something the replay of the redaction (the watermark is still
    /// before it) finishes:
    /// 1. its facet entries go (they hold its actor, action and resource ids), and fjall
    ///    is persisted: a replay re-adds them only if it re-indexes the record's own frame
    ///    from the unerased log, and then removes them again at the redaction;
    /// 2. its log entry is overwritten in place with the erased entry of the same length,
    ///    and its frame's checksum with the new one ([`LogReader::patch`]: crash-safe, a
    ///    redo file finishes it at the next open). The index entries (positions, hash)
    ///    stay valid.
    ///
    /// A record already erased is left as it is. One the index does not hold, or whose id
    /// is not the one the redaction names, is not touched (logged): the API appends a
    /// redaction only for a committed record, and clients cannot write the action.
    fn erase(&self, erasure: &Erasure) -> StoreResult<()> {
        let tenant = erasure.tenant.as_str();
        let seq = erasure.target_seq;
        let snap = self.db.snapshot();
        let Some(run) = self.run_of(&snap, tenant, seq)? else {
            tracing::error!(
                tenant,
                seq,
                "a redaction names a record the index does not hold; not erased"
            );
            return Ok(());
        };
        let value = self.run_pointer(&snap, tenant, &run, seq)?;
        let (_, entry_pos, entry_len) = split_pointer(&value)?;
        let bytes = self.log.read_at(entry_pos, entry_len)?;
        let entry = checked_entry(tenant, seq, entry_pos, &bytes)?;
        if is_redacted(entry.canonical) {
            return Ok(());
        }
        if entry.id != erasure.target_id {
            tracing::error!(
                tenant,
                seq,
                "a redaction names id {:?} but record {seq} is {:?}; not erased",
                erasure.target_id,
                entry.id
            );
            return Ok(());
        }
        let record = Record::from_canonical(entry.canonical, entry.hash).map_err(corrupt)?;
        let Some(redacted) = record.redacted_canonical(&erasure.by, entry.canonical.len()) else {
            return Err(corrupt(format!(
                "record {tenant}#{seq} is too short to hold its redacted form"
            )));
        };
        // 1. the facets
        let mut wb = self.db.batch();
        for (kind, value) in [
            (FACET_ACTOR, entry.actor_id),
            (FACET_ACTION, entry.action),
            (FACET_RESOURCE, entry.resource_id),
        ] {
            let prefix = self.facet_key.prefix(tenant, kind, value);
            let mut upto = prefix.clone();
            upto.extend_from_slice(&seq.to_be_bytes());
            let Some(item) = snap.range(&self.facets, prefix.clone()..=upto).next_back() else {
                continue;
            };
            let (key, list) = item.into_inner().map_err(read_error)?;
            let mut seqs = postings::decode(seq_suffix(&key)?, &list).map_err(corrupt)?;
            let before = seqs.len();
            seqs.retain(|&s| s != seq);
            if seqs.len() == before {
                continue;
            }
            wb.remove(&self.facets, key.to_vec());
            if let Some(&first) = seqs.first() {
                let mut key = prefix;
                key.extend_from_slice(&first.to_be_bytes());
                wb.insert(&self.facets, key, postings::encode(&seqs));
            }
        }
        wb.commit().map_err(write_error)?;
        self.db.persist(PersistMode::SyncAll).map_err(write_error)?;
        // 2. the log: the entry, and its frame's payload checksum
        let frame_pos = run.pos;
        let header = self.log.read_at(frame_pos, PAYLOAD_OFFSET as usize)?;
        let payload_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let payload_at = frame_pos + PAYLOAD_OFFSET;
        let mut payload = self.log.read_at(payload_at, payload_len)?;
        let erased = frame::erased_entry(&entry, &redacted, entry_len as u32);
        let at = (entry_pos - payload_at) as usize;
        payload[at..at + entry_len].copy_from_slice(&erased);
        let crc = crc32fast::hash(&payload).to_le_bytes().to_vec();
        self.log
            .patch(&[(entry_pos, erased), (payload_at + payload_len as u64, crc)])?;
        metrics::counter!("sealtrail_store_records_erased_total").increment(1);
        tracing::info!(tenant, seq, "record erased (redacted)");
        Ok(())
    }

    /// Every tenant with an indexed record: one seek per tenant in `runs`.
    fn tenants(&self) -> StoreResult<Vec<String>> {
        let snap = self.db.snapshot();
        let mut out = Vec::new();
        let mut from = vec![1u8];
        while let Some(item) = snap.range(&self.runs, from.clone()..).next() {
            let (key, _) = item.into_inner().map_err(read_error)?;
            let len = key[0] as usize;
            let tenant = key
                .get(1..1 + len)
                .and_then(|t| std::str::from_utf8(t).ok())
                .ok_or_else(|| corrupt("a bad runs key"))?;
            out.push(tenant.to_string());
            // Past every key of this tenant: its prefix then 0xff…
            from = tenant_prefix(tenant);
            from.extend_from_slice(&[0xff; 9]);
        }
        Ok(out)
    }

    /// `tenant`'s retention boundary: the first record kept (1: none removed).
    fn boundary(&self, tenant: &str) -> u64 {
        self.boundaries
            .read()
            .expect("boundaries lock")
            .get(tenant)
            .copied()
            .unwrap_or(1)
    }

    /// Removes `tenant`'s records before a prune event's boundary (issue 15),
    /// idempotently. In this order, so that a crash anywhere leaves something the replay of
    /// the prune event (the watermark is still before it: this runs inside the indexing
    /// of its frame) finishes:
    /// 1. once: their `ids` and facet entries go, and the boundary (with the one before
    ///    it) is written to `runs`, in one batch, persisted. From then on a replay of their
    ///    frames writes neither again ([`Trees::index_frame`]); reads start at the
    ///    boundary. Their `records` entries stay: the tree's nodes below
    ///    [`STORED_LEVEL`] are computed from the hashes they hold, and replays are judged
    ///    by them.
    /// 2. their log entries are overwritten in place with the redacted form of the same
    ///    length (naming the prune event), with their frames' checksums
    ///    ([`LogReader::patch`]: crash-safe). An entry already overwritten is left as it is;
    ///    the range is from the boundary before to this one, which step 1 recorded, so a
    ///    replay after a crash between the steps finishes it.
    fn prune(&self, prune: &Prune) -> StoreResult<()> {
        let tenant = prune.tenant.as_str();
        let before = prune.before;
        let snap = self.db.snapshot();
        let current = self.boundary(tenant);
        let from = if before > current {
            let mut wb = self.db.batch();
            let mut values: std::collections::HashSet<(u8, String)> = Default::default();
            let mut at = current;
            while at < before {
                let rows =
                    self.range_rows(&snap, tenant, at, 4096.min((before - at) as usize), before)?;
                let Some(last) = rows.last() else { break };
                at = last.sequence_number + 1;
                for row in &rows {
                    let record = row.record()?;
                    // In either keyspace, or both (a replay); a removal in `ids` puts an
                    // old key in its memtable, so the next table merges: retention is rare.
                    let key = named_key(tenant, &record.id);
                    wb.remove(&self.unordered, unordered_key(UNORDERED_ID, &key));
                    wb.remove(&self.ids, key);
                    if record.redacted.is_none() {
                        values.insert((FACET_ACTOR, record.actor.id.clone()));
                        values.insert((FACET_ACTION, record.action.clone()));
                        values.insert((FACET_RESOURCE, record.resource.id.clone()));
                    }
                }
            }
            for (kind, value) in &values {
                let prefix = self.facet_key.prefix(tenant, *kind, value);
                let mut upto = prefix.clone();
                upto.extend_from_slice(&(before - 1).to_be_bytes());
                for item in snap.range(&self.facets, prefix.clone()..=upto) {
                    let (key, list) = item.into_inner().map_err(read_error)?;
                    let mut seqs = postings::decode(seq_suffix(&key)?, &list).map_err(corrupt)?;
                    let n = seqs.len();
                    seqs.retain(|&s| s >= before);
                    if seqs.len() == n {
                        continue;
                    }
                    wb.remove(&self.facets, key.to_vec());
                    if let Some(&first) = seqs.first() {
                        let mut key = prefix.clone();
                        key.extend_from_slice(&first.to_be_bytes());
                        wb.insert(&self.facets, key, postings::encode(&seqs));
                    }
                }
            }
            let mut value = before.to_be_bytes().to_vec();
            value.extend_from_slice(&current.to_be_bytes());
            wb.insert(&self.runs, boundary_key(tenant), value);
            wb.commit().map_err(write_error)?;
            self.db.persist(PersistMode::SyncAll).map_err(write_error)?;
            self.boundaries
                .write()
                .expect("boundaries lock")
                .insert(tenant.to_string(), before);
            metrics::counter!("sealtrail_store_records_pruned_total").increment(before - current);
            tracing::info!(
                tenant,
                before,
                removed = before - current,
                "records removed by retention"
            );
            current
        } else {
            // Step 1 was done (this is a replay, or an older prune): finish step 2 for
            // the range it recorded, if this is that prune.
            match snap
                .get(&self.runs, boundary_key(tenant))
                .map_err(read_error)?
            {
                Some(value) => match boundary_value(&value)? {
                    (at, from) if at == before => from,
                    _ => return Ok(()),
                },
                None => return Ok(()),
            }
        };
        self.overwrite_pruned(&snap, prune, from)
    }

    /// Step 2 of [`Trees::prune`]: the log entries of `tenant`'s records `from..before`.
    fn overwrite_pruned(&self, snap: &Snapshot, prune: &Prune, from: u64) -> StoreResult<()> {
        let tenant = prune.tenant.as_str();
        // (frame position → its entries' (position, length, erased bytes)).
        let mut frames: std::collections::BTreeMap<u64, Vec<(u64, Vec<u8>)>> = Default::default();
        let mut pending = 0usize;
        let mut run: Option<Run> = None;
        let flush =
            |frames: &mut std::collections::BTreeMap<u64, Vec<(u64, Vec<u8>)>>| -> StoreResult<()> {
                let mut patches = Vec::new();
                for (frame_pos, entries) in std::mem::take(frames) {
                    let header = self.log.read_at(frame_pos, PAYLOAD_OFFSET as usize)?;
                    let payload_len =
                        u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
                    let payload_at = frame_pos + PAYLOAD_OFFSET;
                    let mut payload = self.log.read_at(payload_at, payload_len)?;
                    for (entry_pos, erased) in &entries {
                        let at = (entry_pos - payload_at) as usize;
                        payload[at..at + erased.len()].copy_from_slice(erased);
                    }
                    let crc = crc32fast::hash(&payload).to_le_bytes().to_vec();
                    patches.extend(entries);
                    patches.push((payload_at + payload_len as u64, crc));
                }
                if !patches.is_empty() {
                    self.log.patch(&patches)?;
                }
                Ok(())
            };
        for seq in from..prune.before {
            if run.as_ref().is_none_or(|r| seq < r.first || seq > r.last()) {
                run = self.run_of(snap, tenant, seq)?;
            }
            let Some(r) = &run else {
                return Err(missing_record(tenant, seq));
            };
            let frame_pos = r.pos;
            let value = self.run_pointer(snap, tenant, r, seq)?;
            let (_, entry_pos, entry_len) = split_pointer(&value)?;
            let bytes = self.log.read_at(entry_pos, entry_len)?;
            let entry = checked_entry(tenant, seq, entry_pos, &bytes)?;
            if is_redacted(entry.canonical) {
                continue;
            }
            let record = Record::from_canonical(entry.canonical, entry.hash).map_err(corrupt)?;
            let Some(shell) = record.redacted_canonical(&prune.by, entry.canonical.len()) else {
                return Err(corrupt(format!(
                    "record {tenant}#{seq} is too short to hold its redacted form"
                )));
            };
            let erased = frame::erased_entry(&entry, &shell, entry_len as u32);
            frames
                .entry(frame_pos)
                .or_default()
                .push((entry_pos, erased));
            pending += 1;
            if pending >= 4096 {
                flush(&mut frames)?;
                pending = 0;
            }
        }
        flush(&mut frames)
    }

    /// A node below [`STORED_LEVEL`], from the hashes of its leaves (`leaf i` is record
    /// `i + 1`): those the tail held (`in_tail`), the rest from the `records` index. `None`
    /// if a leaf is not there (the node is not complete).
    fn computed_node(
        &self,
        snap: &Snapshot,
        tenant: &str,
        id: NodeId,
        in_tail: Vec<Option<String>>,
    ) -> StoreResult<Option<Hash>> {
        let first_seq = id.start() + 1;
        let mut leaves = Vec::with_capacity(in_tail.len());
        let mut indexed = None;
        for (offset, hash) in in_tail.into_iter().enumerate() {
            let hash = match hash {
                Some(hash) => merkle::record_leaf(&hash)
                    .ok_or_else(|| corrupt(format!("record hash {hash:?} is not hex")))?,
                None => {
                    // One range read for the node's leaves the tail did not hold.
                    let rows = indexed.get_or_insert_with(|| {
                        let mut rows = HashMap::new();
                        self.scan(
                            snap,
                            tenant,
                            first_seq,
                            first_seq + id.width() - 1,
                            |seq, value| {
                                rows.insert(seq, split_pointer(value)?.0);
                                Ok(true)
                            },
                        )
                        .map(|()| rows)
                    });
                    let rows = rows.as_ref().map_err(|e| e.duplicate())?;
                    match rows.get(&(first_seq + offset as u64)) {
                        Some(hash) => *hash,
                        None => return Ok(None),
                    }
                }
            };
            leaves.push(merkle::leaf_hash(&hash));
        }
        Ok(Some(merkle::root_of_leaf_hashes(&leaves)))
    }

    fn list(
        &self,
        snap: &Snapshot,
        tenant: &str,
        query: &EventQuery,
        tail: Vec<TailRow>,
    ) -> StoreResult<EventPage> {
        let (limit, skip, after) = query.paging.window();
        let (limit, skip) = (limit as usize, skip as usize);
        // fjall answers for the sequence numbers below the tail's first.
        let below = tail.first().map_or(u64::MAX, TailRow::seq);

        // Retention removed the records before this one (issue 15).
        let first = self.boundary(tenant);
        // Fast path: no filter at all. The chain is gapless from the boundary, so the head
        // tells the total and a page is a direct range.
        if !query.is_filtered() {
            let head = match tail.last() {
                Some(row) => row.seq(),
                None => self.head(snap, tenant)?.map_or(0, |h| h.sequence_number),
            };
            let total = (head + 1).saturating_sub(first);
            let start = after.max(skip as u64 + first - 1) + 1;
            let mut events: Vec<Record> = self
                .range_rows(snap, tenant, start, limit, below)?
                .iter()
                .map(ChainRow::record)
                .collect::<StoreResult<_>>()?;
            for row in tail.iter().filter(|r| r.seq() >= start) {
                if events.len() >= limit {
                    break;
                }
                events.push(row.chained().record.clone());
            }
            return Ok(EventPage { events, total });
        }

        let facets = [
            (FACET_ACTOR, &query.actor_id),
            (FACET_ACTION, &query.action),
            (FACET_RESOURCE, &query.resource_id),
        ];
        let facet = facets
            .iter()
            .find_map(|(kind, v)| v.as_ref().map(|v| (*kind, v)));
        // One facet filter and nothing else: every index entry under it matches, so only
        // the page's records are read from the log.
        let only_facet = facets.iter().filter(|(_, v)| v.is_some()).count() == 1
            && query.actor_type.is_none()
            && query.outcome.is_none()
            && query.from.is_none()
            && query.to.is_none();

        // Otherwise walk candidate sequence numbers in order (a facet index if one applies,
        // else the whole chain), check every filter on the record, count all matches and keep
        // the requested window.
        let mut total = 0u64;
        let mut events = Vec::new();
        let wanted = |total: u64, seq: u64, events: &Vec<Record>| {
            seq > after && total as usize > skip && events.len() < limit
        };
        match facet {
            Some((kind, value)) => {
                'entries: for item in
                    snap.prefix(&self.facets, self.facet_key.prefix(tenant, kind, value))
                {
                    let (key, list) = item.into_inner().map_err(unavailable)?;
                    let first = seq_suffix(&key)?;
                    if first >= below {
                        break;
                    }
                    let seqs = postings::decode(first, &list).map_err(corrupt)?;
                    if only_facet
                        && seqs.last().is_some_and(|&last| last < below)
                        && (total + seqs.len() as u64) as usize <= skip
                    {
                        // The whole entry is before the page: counted, nothing read.
                        total += seqs.len() as u64;
                        continue;
                    }
                    for seq in seqs {
                        if seq >= below {
                            break 'entries;
                        }
                        if only_facet {
                            total += 1;
                            if wanted(total, seq, &events)
                                && let Some(stored) = self.stored_event(snap, tenant, seq)?
                            {
                                events.push(stored.record);
                            }
                        } else if let Some(stored) = self.stored_event(snap, tenant, seq)?
                            && query.matches(&stored.record)
                        {
                            total += 1;
                            if wanted(total, seq, &events) {
                                events.push(stored.record);
                            }
                        }
                    }
                }
            }
            None => {
                self.scan(
                    snap,
                    tenant,
                    first,
                    below.saturating_sub(1),
                    |seq, value| {
                        let record = self.load(tenant, seq, value)?.record;
                        if query.matches(&record) {
                            total += 1;
                            if wanted(total, seq, &events) {
                                events.push(record);
                            }
                        }
                        Ok(true)
                    },
                )?;
            }
        }
        for row in &tail {
            let record = &row.chained().record;
            if query.matches(record) {
                total += 1;
                if wanted(total, record.sequence_number, &events) {
                    events.push(record.clone());
                }
            }
        }
        Ok(EventPage { events, total })
    }

    /// Up to `limit` rows from `from_seq` on, below `below`.
    fn range_rows(
        &self,
        snap: &Snapshot,
        tenant: &str,
        from_seq: u64,
        limit: usize,
        below: u64,
    ) -> StoreResult<Vec<ChainRow>> {
        if from_seq >= below {
            return Ok(Vec::new());
        }
        let mut wanted: Vec<(u64, u64, usize)> = Vec::with_capacity(limit.min(4096));
        if limit > 0 {
            self.scan(snap, tenant, from_seq, below - 1, |seq, value| {
                let (_, pos, len) = split_pointer(value)?;
                wanted.push((seq, pos, len));
                Ok(wanted.len() < limit)
            })?;
        }
        // Records of a chain sit close together in the log (a batch's records are one
        // run of a frame): read each run with one `pread` instead of one per record.
        let mut rows = Vec::with_capacity(wanted.len());
        let mut i = 0;
        while i < wanted.len() {
            let run_start = wanted[i].1;
            let mut run_end = run_start + wanted[i].2 as u64;
            let mut j = i + 1;
            while j < wanted.len() {
                let (_, pos, len) = wanted[j];
                let end = pos + len as u64;
                if pos < run_end || pos - run_end > RUN_GAP || end - run_start > RUN_BYTES {
                    break;
                }
                run_end = end;
                j += 1;
            }
            let bytes = if j == i + 1 {
                None
            } else {
                Some(
                    self.log
                        .read_at(run_start, (run_end - run_start) as usize)?,
                )
            };
            for &(seq, pos, len) in &wanted[i..j] {
                let entry = match &bytes {
                    Some(bytes) => {
                        let at = (pos - run_start) as usize;
                        self.row_from_entry(tenant, seq, pos, &bytes[at..at + len])?
                    }
                    None => self.row_from_entry(tenant, seq, pos, &self.log.read_at(pos, len)?)?,
                };
                rows.push(entry);
            }
            i = j;
        }
        Ok(rows)
    }

    fn row_from_entry(
        &self,
        tenant: &str,
        seq: u64,
        pos: u64,
        bytes: &[u8],
    ) -> StoreResult<ChainRow> {
        let entry = checked_entry(tenant, seq, pos, bytes)?;
        Ok(ChainRow {
            sequence_number: seq,
            hash: entry.hash.to_string(),
            canonical: entry.canonical.to_vec(),
        })
    }
}

/// What a frame's records order done once they are indexed.
enum Order {
    Erase(Erasure),
    Prune(Prune),
}

/// A removal to carry out (issue 15): `tenant`'s records before `before`, ordered by the
/// prune event `by` names.
struct Prune {
    tenant: String,
    before: u64,
    by: Redaction,
}

impl Prune {
    fn ordered_by(r: &RecordEntry<'_>) -> Result<Self, String> {
        let record = Record::from_canonical(r.canonical, r.hash).map_err(|e| e.to_string())?;
        let before = record
            .prune_order()
            .ok_or("it names no boundary before itself")?;
        Ok(Self {
            tenant: r.tenant.to_string(),
            before,
            by: Redaction {
                event_id: r.id.to_string(),
                sequence_number: r.seq,
            },
        })
    }
}

/// A redaction to carry out: the redaction event's record names the redacted record by
/// its resource id and `metadata.sequence_number` (`sealtrail_core::record::redaction_input`).
struct Erasure {
    tenant: String,
    target_seq: u64,
    target_id: String,
    by: Redaction,
}

impl Erasure {
    fn ordered_by(r: &RecordEntry<'_>) -> Result<Self, String> {
        let record = Record::from_canonical(r.canonical, r.hash).map_err(|e| e.to_string())?;
        let target_seq = record
            .metadata
            .get("sequence_number")
            .and_then(|v| v.as_u64())
            .ok_or("it names no sequence_number")?;
        Ok(Self {
            tenant: r.tenant.to_string(),
            target_seq,
            target_id: record.resource.id,
            by: Redaction {
                event_id: r.id.to_string(),
                sequence_number: r.seq,
            },
        })
    }
}

/// What the tail has towards one requested tree node.
enum TailNode {
    /// A stored level: the node, if the tail holds it.
    Stored(Option<Hash>),
    /// A computed level: the hash of each leaf the tail holds.
    Leaves(Vec<Option<String>>),
}

/// The writer thread's state.
struct Writer {
    trees: Trees,
    log: SegmentLog,
    tail: Arc<RwLock<Tail>>,
    /// Stored heads across groups (this writer is the only one: fjall admits one process).
    heads: HashMap<String, ChainHead>,
    space: Arc<DiskGuard>,
    to_indexer: mpsc::Sender<IndexJob>,
    failed: Arc<Mutex<Option<String>>>,
    tail_limit: usize,
}

/// A durable frame for the indexer.
struct IndexJob {
    pos: u64,
    end: u64,
    payload: Vec<u8>,
}

impl Writer {
    fn failure(&self) -> Option<String> {
        self.failed.lock().expect("failure lock").clone()
    }

    /// Waits while the tail is over its limit: the indexer is behind, so commits slow
    /// down (and the chainers' queues push back on ingest) instead of memory growing.
    fn wait_for_tail(&self) -> StoreResult<()> {
        let full = || self.tail.read().expect("tail lock").bytes() > self.tail_limit;
        if !full() {
            return Ok(());
        }
        let started = Instant::now();
        let mut warned_at = started;
        while full() {
            if let Some(why) = self.failure() {
                return Err(StoreError::Fatal(why));
            }
            std::thread::sleep(Duration::from_millis(1));
            if warned_at.elapsed() > TAIL_STALL_WARNING {
                warned_at = Instant::now();
                tracing::warn!(
                    "store writes have waited {:?} for the indexer to catch up with the log",
                    started.elapsed()
                );
            }
        }
        metrics::counter!("sealtrail_store_index_stall_microseconds_total")
            .increment(started.elapsed().as_micros() as u64);
        Ok(())
    }

    /// Writes a group of batches as one frame of the log (see the module doc).
    ///
    /// Each batch is judged by the append rule (`crate::rule`) against the stored head
    /// as earlier groups and earlier batches of this group left it; nothing is written
    /// unless every batch passes (the group committer then retries them one by one).
    fn write_group(&mut self, batches: &[Arc<CommitBatch>]) -> StoreResult<()> {
        if let Some(why) = self.failure() {
            return Err(StoreError::Fatal(why));
        }
        self.wait_for_tail()?;
        self.space.check()?;
        let mut rows: Vec<(String, TailRow)> = Vec::new();
        let mut receipts: Vec<(String, Receipt)> = Vec::new();
        let mut tops: HashMap<String, ChainHead> = HashMap::new();
        let frame_pos = self.log.end();
        {
            // The tail first, then the snapshot (the order `tail.rs` explains).
            let tail = self.tail.read().expect("tail lock");
            let snap = self.trees.db.snapshot();
            let mut group_ids = GroupIds::default();
            for batch in batches {
                for (tenant, records) in rule::group_by_tenant(&batch.records)? {
                    let head = match tops.get(tenant).or_else(|| self.heads.get(tenant)) {
                        Some(head) => Some(head.clone()),
                        None => match tail.head(tenant) {
                            Some(head) => Some(head),
                            None => self.trees.head(&snap, tenant)?,
                        },
                    };
                    let replayed = rule::split_at_head(head.as_ref(), &records)?;
                    for r in &records[..replayed] {
                        let seq = r.record.sequence_number;
                        let stored = match tail.at(tenant, seq) {
                            Some(row) => Some(row.chained().record.hash.clone()),
                            None => self.trees.stored_hash(&snap, tenant, seq)?,
                        };
                        rule::check_replayed(r, stored.as_deref())?;
                    }
                    for chained in &records[replayed..] {
                        let id = &chained.record.id;
                        group_ids.check(chained, || match tail.by_id(tenant, id) {
                            Some(row) => Ok(Some(row.seq())),
                            None => self.trees.seq_of(&snap, tenant, id),
                        })?;
                        let index = index_in(&batch.records, chained);
                        rows.push((
                            tenant.to_string(),
                            TailRow::new(frame_pos, batch.clone(), index),
                        ));
                    }
                    if let Some(last) = records.last()
                        && replayed < records.len()
                    {
                        tops.insert(tenant.to_string(), last.head());
                    }
                }
                for (tenant, receipt) in &batch.receipts {
                    // The store, not the chainer, stamps the commit time (it has no clock).
                    let mut receipt = receipt.clone();
                    batch.stamp(&mut receipt);
                    receipts.push((tenant.clone(), receipt));
                }
            }
        }
        // Only the upper levels are kept; a lower node is computed from its leaves.
        let nodes: Vec<(String, NodeId, Hash)> = batches
            .iter()
            .flat_map(|b| &b.tree_nodes)
            .filter(|n| n.id.level >= STORED_LEVEL)
            .map(|n| (n.tenant_id.clone(), n.id, n.hash))
            .collect();
        if rows.is_empty() && receipts.is_empty() && nodes.is_empty() {
            return Ok(());
        }
        // Each record entry: its canonical bytes, and under 256 bytes of hashes, ids,
        // facets and lengths; each receipt about 48 bytes per event it names.
        let size = rows
            .iter()
            .map(|(_, row)| row.chained().canonical.len() + 256)
            .sum::<usize>()
            + receipts
                .iter()
                .map(|(_, r)| 256 + 48 * (r.ids.len() + r.errors.len()))
                .sum::<usize>();
        let mut encoder = Encoder::with_capacity(size);
        for (tenant, row) in &rows {
            let c = row.chained();
            let r = &c.record;
            encoder.record(&RecordEntry {
                tenant,
                seq: r.sequence_number,
                hash: &r.hash,
                digest: &c.input_digest,
                id: &r.id,
                actor_id: &r.actor.id,
                action: &r.action,
                resource_id: &r.resource.id,
                canonical: &c.canonical,
            });
        }
        encoder.receipts(receipts.iter().map(|(tenant, r)| {
            (
                tenant.as_str(),
                r.receipt_id.as_str(),
                serde_json::to_vec(r).expect("receipts serialize"),
            )
        }));
        let (payload, _) = encoder.finish(nodes.iter().map(|(t, id, h)| (t.as_str(), *id, *h)));
        // The one durable step: the frame and its fdatasync.
        let pos = self.log.append(&payload)?;
        debug_assert_eq!(pos, frame_pos);
        let end = self.log.end();
        // Durable: now visible (the tail), then answered (on return).
        self.tail
            .write()
            .expect("tail lock")
            .add(pos, rows, receipts, nodes);
        if self
            .to_indexer
            .send(IndexJob { pos, end, payload })
            .is_err()
        {
            // The indexer stopped (its failure is recorded); the group is durable and
            // visible, so it is answered, and the next group fails.
            tracing::error!("the indexer has stopped; the store takes no more writes");
        }
        if self.heads.len() > HEAD_CACHE_TENANTS {
            self.heads.clear();
        }
        self.heads.extend(tops);
        Ok(())
    }
}

/// The indexer thread: indexes durable frames in large fjall batches, takes them out of
/// the tail, and persists its watermark about once a second. Stops when the writer has
/// stopped (after a last watermark), or on a failure, which it records: the writer then
/// refuses further groups (the log keeps everything; a restart re-indexes it).
fn run_indexer(
    trees: Trees,
    tail: Arc<RwLock<Tail>>,
    jobs: mpsc::Receiver<IndexJob>,
    mut budget: WriteBudget,
    failed: Arc<Mutex<Option<String>>>,
    index_dir: PathBuf,
    mut indexed: u64,
) {
    let pause = std::env::var(PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let mut persisted = indexed;
    let mut persisted_at = Instant::now();
    let fail = |err: StoreError| {
        tracing::error!("the indexer failed: {err}");
        *failed.lock().expect("failure lock") = Some(format!(
            "the indexer failed ({err}); restart the server (the log keeps every acknowledged record; the restart re-indexes it)"
        ));
    };
    loop {
        let first = match jobs.recv_timeout(WATERMARK_INTERVAL) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(first) = first {
            if let Some(pause) = pause {
                std::thread::sleep(pause);
            }
            let mut bytes = first.payload.len();
            let mut batch = vec![first];
            while bytes < INDEX_BATCH_BYTES {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes += job.payload.len();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            if let Err(err) =
                trees.index_frames(&mut budget, batch.iter().map(|j| (j.pos, &j.payload[..])))
            {
                fail(err);
                return;
            }
            let last = batch.last().expect("one job at least");
            indexed = last.end;
            let mut tail = tail.write().expect("tail lock");
            tail.remove_through(last.pos);
            metrics::gauge!("sealtrail_store_unindexed_bytes").set(tail.bytes() as f64);
        }
        if indexed != persisted && persisted_at.elapsed() >= WATERMARK_INTERVAL {
            if let Err(err) = persist_watermark(&trees, &index_dir, indexed) {
                fail(err);
                return;
            }
            persisted = indexed;
            persisted_at = Instant::now();
        }
    }
    if indexed != persisted
        && let Err(err) = persist_watermark(&trees, &index_dir, indexed)
    {
        fail(err);
    }
}

/// Indexes the log from `from` to its end (a start after a crash, or a rebuild), then
/// records the end as the watermark.
fn replay(
    trees: &Trees,
    budget: &mut WriteBudget,
    log: &SegmentLog,
    index_dir: &Path,
    from: u64,
) -> StoreResult<()> {
    if from == log.end() {
        return Ok(());
    }
    let started = Instant::now();
    let mut reported = started;
    let total = log.end() - from;
    tracing::info!(
        from,
        to = log.end(),
        "indexing {total} bytes of the log that the indexes do not cover yet"
    );
    let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut pending_bytes = 0;
    let flush = |pending: &mut Vec<(u64, Vec<u8>)>, budget: &mut WriteBudget| {
        let result = trees.index_frames(budget, pending.iter().map(|(p, f)| (*p, &f[..])));
        pending.clear();
        result
    };
    log.for_each_frame_from(from, |pos, payload| {
        pending.push((pos, payload.to_vec()));
        pending_bytes += payload.len();
        if pending_bytes >= INDEX_BATCH_BYTES {
            flush(&mut pending, budget)?;
            pending_bytes = 0;
            if reported.elapsed() > Duration::from_secs(5) {
                reported = Instant::now();
                tracing::info!(
                    "indexing the log: {}% ({} of {total} bytes)",
                    (pos - from) * 100 / total.max(1),
                    pos - from
                );
            }
        }
        Ok::<(), StoreError>(())
    })?;
    flush(&mut pending, budget)?;
    persist_watermark(trees, index_dir, log.end())?;
    tracing::info!(
        "indexed {total} bytes of the log in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

impl FjallStore {
    /// Opens (creating if needed) the store in `data_dir` with the default limits: the
    /// log under `log/`, the indexes under `index/`, keys in `sealtrail.db`.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        Self::open_with(data_dir, FjallLimits::default())
    }

    /// [`FjallStore::open`] with the given limits.
    pub fn open_with(data_dir: &Path, limits: FjallLimits) -> StoreResult<Self> {
        let log_dir = data_dir.join(LOG_DIR);
        if data_dir.join(LEGACY_EVENTS_DIR).exists() && !log_dir.exists() {
            return Err(StoreError::Fatal(format!(
                "{} holds a fjall event store of data format 1 (records in fjall, no segment log), which this sealtrail no longer reads. Export it with the sealtrail release that wrote it (`sealtrail verify` and the evidence pack), or start this one on a new --data-dir",
                data_dir.display()
            )));
        }
        let keys = Arc::new(SqliteStore::open(data_dir)?);
        let index_dir = data_dir.join(INDEX_DIR);
        if index_dir.exists() && !budget::has_current_layout(&index_dir) {
            // Made by a start that crashed before recording it, or by an older sealtrail
            // with another index layout: rebuilt from the log.
            if budget::has_triggers(&index_dir) {
                tracing::warn!(
                    "the index directory {} has an older layout; rebuilding it from the log (this takes a while for a large log; progress is logged)",
                    index_dir.display()
                );
            } else {
                tracing::warn!(
                    "the index directory {} is incomplete (a crash while it was created); rebuilding it from the log",
                    index_dir.display()
                );
            }
            std::fs::remove_dir_all(&index_dir)
                .map_err(|e| unavailable(format!("{}: {e}", index_dir.display())))?;
        }
        let watermark = read_watermark(&index_dir)?;
        let (mut log, recovery) =
            SegmentLog::open_checking_from(&log_dir, limits.segment_bytes, watermark)?;
        if let Some((file, offset, dropped)) = &recovery.truncated {
            tracing::warn!(
                "cut a torn frame off the end of the log: {} from byte {offset} ({dropped} bytes); it was never acknowledged (a crash during its write)",
                file.display()
            );
        }
        if log.end() < watermark {
            return Err(StoreError::Corrupt(format!(
                "the log in {} ends at position {}, but its indexes cover it up to {watermark}: synced log bytes are missing. Restore the data directory from a backup",
                log_dir.display(),
                log.end()
            )));
        }
        log.preallocate(limits.preallocate_bytes)?;
        log.keep_cached(limits.log_page_cache_bytes)?;
        let (trees, triggers) = Trees::open(&index_dir, &limits, log.reader())?;
        let mut budget = WriteBudget::new(limits, triggers, trees.last_ordered_keys()?);
        replay(&trees, &mut budget, &log, &index_dir, watermark)?;

        let tail = Arc::new(RwLock::new(Tail::default()));
        let failed = Arc::new(Mutex::new(None));
        let (to_indexer, jobs) = mpsc::channel();
        let indexer = {
            let (trees, tail, failed) = (trees.clone(), tail.clone(), failed.clone());
            let indexed = log.end();
            let index_dir = index_dir.clone();
            std::thread::Builder::new()
                .name("sealtrail-indexer".into())
                .spawn(move || run_indexer(trees, tail, jobs, budget, failed, index_dir, indexed))
                .map_err(|e| unavailable(format!("cannot start the indexer thread: {e}")))?
        };
        let space = Arc::new(DiskGuard::new(data_dir, limits.min_free_disk_bytes));
        let mut writer_state = Writer {
            trees: trees.clone(),
            log,
            tail: tail.clone(),
            heads: HashMap::new(),
            space: space.clone(),
            to_indexer,
            failed,
            tail_limit: limits.tail_bytes as usize,
        };
        let writer = GroupCommitter::start(
            "sealtrail-fjall-writer",
            limits.commit_delay,
            move |batches| writer_state.write_group(batches),
        )?;
        let (monitor_stop, stopped) = mpsc::channel::<()>();
        let monitor_trees = trees.clone();
        let monitor_tail = tail.clone();
        std::thread::Builder::new()
            .name("sealtrail-fjall-metrics".into())
            .spawn(move || {
                loop {
                    budget::publish(&monitor_trees, &limits);
                    let tail = monitor_tail.read().expect("tail lock");
                    metrics::gauge!("sealtrail_store_unindexed_bytes").set(tail.bytes() as f64);
                    metrics::gauge!("sealtrail_store_unindexed_groups").set(tail.groups() as f64);
                    drop(tail);
                    match stopped.recv_timeout(METRICS_INTERVAL) {
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    }
                }
            })
            .map_err(|e| unavailable(format!("cannot start the store metrics thread: {e}")))?;
        Ok(Self {
            trees,
            tail,
            writer,
            indexer: Mutex::new(Some(indexer)),
            keys,
            space,
            monitor_stop: Mutex::new(Some(monitor_stop)),
            closed: Mutex::new(false),
        })
    }

    /// Stops the writer after its last group commit, lets the indexer finish and record
    /// its watermark, and persists the indexes.
    pub fn shutdown(&self) {
        let mut closed = self.closed.lock().expect("close lock");
        if *closed {
            return;
        }
        *closed = true;
        self.writer.close();
        if let Some(indexer) = self.indexer.lock().expect("indexer lock").take() {
            let _ = indexer.join();
        }
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

    /// Bytes of acknowledged groups not yet indexed (held in memory).
    pub fn unindexed_bytes(&self) -> usize {
        self.tail.read().expect("tail lock").bytes()
    }

    /// Runs a read on a blocking thread: `extract` takes what it needs from the tail
    /// under its lock, then `f` reads fjall through a snapshot taken after (so a group
    /// the indexer moves out of the tail meanwhile is in the snapshot), seeing whole
    /// groups only.
    async fn read<T, X, G, F>(&self, extract: G, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        X: Send + 'static,
        G: FnOnce(&Tail) -> X + Send + 'static,
        F: FnOnce(&Trees, &Snapshot, X) -> StoreResult<T> + Send + 'static,
    {
        let trees = self.trees.clone();
        let tail = self.tail.clone();
        tokio::task::spawn_blocking(move || {
            let x = extract(&tail.read().expect("tail lock"));
            f(&trees, &trees.db.snapshot(), x)
        })
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

    fn erases_redacted(&self) -> bool {
        true
    }

    fn prunes(&self) -> bool {
        true
    }

    async fn retained_from(&self, tenant_id: &str) -> StoreResult<u64> {
        Ok(self.trees.boundary(tenant_id))
    }

    async fn tenants(&self) -> StoreResult<Vec<String>> {
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || trees.tenants())
            .await
            .map_err(|e| unavailable(format!("read task failed: {e}")))?
    }

    async fn retention_policies(&self) -> StoreResult<Vec<(String, crate::RetentionPolicy)>> {
        self.keys.retention_policies_of().await
    }

    async fn set_retention_policy(
        &self,
        tenant_id: &str,
        policy: Option<crate::RetentionPolicy>,
    ) -> StoreResult<()> {
        self.keys.set_retention_policy_of(tenant_id, policy).await
    }

    async fn create_destination(&self, destination: crate::Destination) -> StoreResult<()> {
        self.keys.create_destination_of(destination).await
    }

    async fn destinations(&self, tenant_id: Option<&str>) -> StoreResult<Vec<crate::Destination>> {
        self.keys.destinations_of(tenant_id).await
    }

    async fn delete_destination(&self, tenant_id: &str, id: &str) -> StoreResult<bool> {
        self.keys.delete_destination_of(tenant_id, id).await
    }

    async fn record_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        state: crate::DeliveryState,
    ) -> StoreResult<bool> {
        self.keys.record_delivery_of(tenant_id, id, state).await
    }

    fn min_tree_level(&self) -> u8 {
        STORED_LEVEL
    }

    async fn append_shared(&self, batch: Arc<CommitBatch>) -> StoreResult<()> {
        self.writer.submit(batch).await
    }

    async fn heads(&self, tenants: Vec<String>) -> StoreResult<HashMap<String, ChainHead>> {
        self.read(
            move |tail| {
                tenants
                    .into_iter()
                    .map(|t| {
                        let head = tail.head(&t);
                        (t, head)
                    })
                    .collect::<Vec<_>>()
            },
            |trees, snap, found| {
                let mut out = HashMap::new();
                for (tenant, head) in found {
                    let head = match head {
                        Some(head) => Some(head),
                        None => trees.head(snap, &tenant)?,
                    };
                    if let Some(head) = head {
                        out.insert(tenant, head);
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    async fn find_events(&self, keys: Vec<(String, String)>) -> StoreResult<Vec<StoredEvent>> {
        self.read(
            move |tail| {
                keys.into_iter()
                    .map(|(tenant, id)| {
                        let found = tail.by_id(&tenant, &id).map(TailRow::stored);
                        (tenant, id, found)
                    })
                    .collect::<Vec<_>>()
            },
            |trees, snap, found| {
                let mut out = Vec::new();
                for (tenant, id, in_tail) in found {
                    if let Some(stored) = in_tail {
                        out.push(stored);
                    } else if let Some(seq) = trees.seq_of(snap, &tenant, &id)?
                        && let Some(stored) = trees.stored_event(snap, &tenant, seq)?
                    {
                        out.push(stored);
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    async fn get_event(&self, tenant_id: &str, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        Ok(self
            .find_events(vec![(tenant_id.to_string(), event_id.to_string())])
            .await?
            .pop())
    }

    async fn get_receipt(&self, tenant_id: &str, receipt_id: &str) -> StoreResult<Option<Receipt>> {
        let (tenant, id) = (tenant_id.to_string(), receipt_id.to_string());
        let key = named_key(tenant_id, receipt_id);
        self.read(
            move |tail| tail.receipt(&tenant, &id),
            move |t, s, in_tail| {
                if let Some(receipt) = in_tail {
                    return Ok(Some((*receipt).clone()));
                }
                t.get_named(s, UNORDERED_RECEIPT, &key)?
                    .map(|v| serde_json::from_slice(&v).map_err(corrupt))
                    .transpose()
            },
        )
        .await
    }

    async fn list_events(&self, tenant_id: &str, query: EventQuery) -> StoreResult<EventPage> {
        let tenant = tenant_id.to_string();
        let t2 = tenant.clone();
        self.read(
            move |tail| tail.rows(&t2),
            move |t, s, rows| t.list(s, &tenant, &query, rows),
        )
        .await
    }

    async fn scan_chain(
        &self,
        tenant_id: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<ChainRow>> {
        let tenant = tenant_id.to_string();
        let t2 = tenant.clone();
        self.read(
            move |tail| tail.rows(&t2),
            move |t, s, tail_rows| {
                let from = after.saturating_add(1).max(t.boundary(&tenant));
                let below = tail_rows.first().map_or(u64::MAX, TailRow::seq);
                let mut rows = t.range_rows(s, &tenant, from, limit, below)?;
                for row in tail_rows.iter().filter(|r| r.seq() >= from) {
                    if rows.len() >= limit {
                        break;
                    }
                    rows.push(row.row());
                }
                Ok(rows)
            },
        )
        .await
    }

    async fn tree_nodes(
        &self,
        tenant_id: &str,
        ids: Vec<NodeId>,
    ) -> StoreResult<Vec<Option<Hash>>> {
        let tenant = tenant_id.to_string();
        let t2 = tenant.clone();
        self.read(
            move |tail| {
                ids.into_iter()
                    .map(|id| {
                        if id.level >= STORED_LEVEL {
                            (id, TailNode::Stored(tail.node(&t2, id)))
                        } else {
                            // The hashes of the node's leaves that the tail holds.
                            let hashes = (id.start()..id.start() + id.width())
                                .map(|leaf| {
                                    tail.at(&t2, leaf + 1)
                                        .map(|row| row.chained().record.hash.clone())
                                })
                                .collect();
                            (id, TailNode::Leaves(hashes))
                        }
                    })
                    .collect::<Vec<_>>()
            },
            move |t, s, found| {
                found
                    .into_iter()
                    .map(|(id, in_tail)| match in_tail {
                        TailNode::Stored(Some(hash)) => Ok(Some(hash)),
                        TailNode::Stored(None) => {
                            match s.get(&t.tree, tree_key(&tenant, id)).map_err(unavailable)? {
                                None => Ok(None),
                                Some(v) => Hash::try_from(v.as_ref())
                                    .map(Some)
                                    .map_err(|_| corrupt("bad tree node")),
                            }
                        }
                        TailNode::Leaves(hashes) => t.computed_node(s, &tenant, id, hashes),
                    })
                    .collect()
            },
        )
        .await
    }

    async fn create_key(&self, key: ApiKey) -> StoreResult<()> {
        self.keys.create_key(key).await
    }

    async fn create_keys(&self, keys: Vec<ApiKey>) -> StoreResult<()> {
        self.keys.create_keys(keys).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid7_ids_are_keyed_by_their_timestamp_first() {
        let id = "0190a5c2-7e1f-7abc-8def-0123456789ab";
        assert_eq!(
            sealtrail_core::event::uuid7_millis(id),
            Some(0x0190_a5c2_7e1f)
        );
        assert_eq!(
            sealtrail_core::event::uuid7_millis(&id.to_uppercase()),
            Some(0x0190_a5c2_7e1f)
        );
        // Not a UUIDv7: version 4, wrong length, not hex.
        assert_eq!(
            sealtrail_core::event::uuid7_millis("0190a5c2-7e1f-4abc-8def-0123456789ab"),
            None
        );
        assert_eq!(
            sealtrail_core::event::uuid7_millis("0190a5c2-7e1f-7abc-8def-0123456789a"),
            None
        );
        assert_eq!(
            sealtrail_core::event::uuid7_millis("0190a5g2-7e1f-7abc-8def-0123456789ab"),
            None
        );
        let key = named_key("acme", id);
        assert_eq!(key[0], 1);
        assert_eq!(&key[1..7], &0x0190_a5c2_7e1f_u64.to_be_bytes()[2..]);
        assert_eq!(&key[7..12], b"\x04acme");
        assert!(key.ends_with(id.as_bytes()));
        // Later ids sort later whatever their tenant; other ids sort before all of them.
        let later = named_key("a", "0190a5c2-7e20-7000-8000-000000000000");
        assert!(later > key);
        assert!(named_key("zzz", "evt-1") < key);
        assert_eq!(
            named_key("acme", "evt-1"),
            [&[0u8, 4][..], b"acme", b"evt-1"].concat()
        );
    }

    #[test]
    fn record_keys_follow_the_log_and_runs_name_them() {
        assert!(record_key(100, 7) < record_key(101, 0));
        assert!(record_key(100, 7) < record_key(100, 8));
        let key = event_key("acme", 41);
        let run = Run::parse(&key, &run_value(100, 5, 3)).unwrap();
        assert_eq!((run.first, run.last()), (41, 43));
        assert_eq!(run.slot(42), (record_key(100, 0), 6 * POINTER_VALUE_LEN));
        // 64 pointers to an entry: index 63 is the first entry's last, 64 the second's first.
        let run = Run::parse(&key, &run_value(100, 60, 10)).unwrap();
        assert_eq!(run.slot(44), (record_key(100, 0), 63 * POINTER_VALUE_LEN));
        assert_eq!(run.slot(45), (record_key(100, 1), 0));
        assert_eq!(run.slot(50), (record_key(100, 1), 5 * POINTER_VALUE_LEN));
        assert!(
            Run::parse(&key, &run_value(100, 5, 0)).is_err(),
            "an empty run"
        );
        assert!(Run::parse(&key, &[0; 15]).is_err());
    }
}
