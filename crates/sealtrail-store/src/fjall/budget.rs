//! What bounds the fjall store's memory and journal, and how ingest slows down instead of
//! either growing.
//!
//! **Where the memory goes.** Every write lands in its keyspace's *active memtable*; a full
//! memtable is *sealed* and a background worker flushes it to a table on disk. Until that
//! flush, its entries are also in the *journal*, the file a restart replays. So memory is
//! the memtables (active + sealed) plus the block cache, and the journal holds about what
//! the memtables hold — if, and only if, memtables keep being sealed and flushed.
//!
//! **Why this module exists (issue 19).** fjall (3.1.13, the newest release) lets every
//! write that finds its memtable over `max_memtable_size` ask the worker pool to seal it,
//! with a `try_send` on the pool's bounded (1,000) channel. Under sustained group commits
//! those requests pile up faster than one worker drains them while it compacts; the worker
//! then takes one, seals the memtable and `send`s itself a flush on that same full channel:
//! it blocks forever (seen with gdb: `fjall:worker` parked in `flume::send` under
//! `inner_rotate_memtable`; upstream: fjall-rs/fjall PR #323, unmerged). From then on nothing
//! is sealed or flushed, no journal is rotated, writes never stall, and memory and the
//! journal grow ~1.7 KB per event until the kernel kills the process (11.7 GB at 8.6M
//! events) — and a restart replays the whole journal (minutes).
//!
//! **What bounds them now.** The store's indexer thread (the only fjall writer) seals
//! memtables itself:
//! - it counts what each group adds to the memtables (keys + values + fjall's per-entry
//!   overhead, as fjall counts) and, once `write_buffer_bytes` were added since the last
//!   seal, seals *every* keyspace written since then (`rotate_memtable`, which enqueues the
//!   flushes with a blocking send from this thread — the worker drains the channel, so that
//!   send waits at worst, it cannot deadlock). fjall's own per-keyspace trigger is set to
//!   twice the budget, so it never fires and the request flood cannot start (the writer
//!   also seals once any keyspace reached half of the trigger it was created with,
//!   [`seal_triggers`]);
//! - before each group it waits while any keyspace still has [`MAX_SEALED_MEMTABLES`]
//!   sealed memtables waiting for the flush worker: when flushing (or a compaction the
//!   worker is busy with) cannot keep up, commits slow down, the chainers' queues fill and
//!   ingest answers `503 overloaded` with `Retry-After` — memory does not grow.
//!
//! Hence **memtables ≤ (1 + [`MAX_SEALED_MEMTABLES`]) × (`write_buffer_bytes` + one
//! group)** — a memtable is sealed after the group that fills it — by fjall's accounting
//! (the allocator adds its own overhead on top); a group is what the chainers hand in at
//! once, a few MB under full load. The block cache stays ≤ `cache_bytes`. Sealing every keyspace together also lets whole journal files be
//! dropped soon after they are rotated (fjall preallocates each journal file to 64 MiB,
//! starts a new one once the current one passes 64 MB, and drops a file once every keyspace
//! has flushed past it), so the **journal stays ≤ 64 MiB + `journal_bytes` + one group**,
//! and in practice at 64-128 MiB:
//! `journal_bytes` is fjall's hard limit on the files it has not dropped yet (past it,
//! fjall seals the keyspaces that pin the oldest file). A restart replays at most the
//! journal.
//!
//! `/metrics` shows the live figures (`sealtrail_store_*`, see [`publish`]).

use std::time::{Duration, Instant};

use fjall::Keyspace;

use super::Trees;

const MIB: u64 = 1024 * 1024;

/// Sealed memtables a keyspace may have waiting for the flush worker before the writer
/// waits for them. Four, not two, since one worker both flushes and compacts (the default,
/// [`FjallLimits::worker_threads`]): a flush then waits behind a running compaction, and
/// with two the indexer stalled for that long (sync batches of 100 at p99 79 – 405 ms in six
/// `make bench` runs of eight, against 27 – 113 ms with four; 2026-12-05). With the 8 MiB
/// default write buffer this is still less memory than two behind 16 MiB.
pub const MAX_SEALED_MEMTABLES: usize = 4;

/// What fjall counts per memtable entry on top of its key and value
/// (`size_of::<lsm_tree::InternalValue>()`, rounded up).
const ENTRY_OVERHEAD: u64 = 64;

/// How often a waiting writer checks that fjall is not poisoned.
const POISON_PROBE: Duration = Duration::from_millis(200);

/// How long a stall is before the writer says so in the log.
const STALL_WARNING: Duration = Duration::from_secs(5);

/// Memory, journal and log limits of the fjall store (config keys `embedded.fjall_write_buffer`,
/// `embedded.fjall_journal`, `embedded.fjall_cache`, `embedded.fjall_worker_threads`,
/// `embedded.min_free_disk`, `embedded.segment_size`, `embedded.index_lag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FjallLimits {
    /// Bytes the memtables take in before they are all sealed and flushed.
    pub write_buffer_bytes: u64,
    /// Journal size past which fjall forces the flushes that let it drop its oldest file
    /// (fjall's minimum, 64 MiB, applies below that).
    pub journal_bytes: u64,
    /// Block cache for reads.
    pub cache_bytes: u64,
    /// Background threads that flush memtables and compact tables. With two or more, one
    /// of them only flushes, so a long compaction does not hold up the flushes the indexer
    /// waits for — but fjall 3.1.13 has that one take every compaction request off the
    /// queue and put it back, in a loop that burns a core while another worker compacts
    /// (fjall-rs/fjall#323 removes it, unreleased). One worker, the default, saves that
    /// CPU; the indexer then sometimes waits for a flush behind a compaction, off the
    /// acknowledged path (README, "Memory and restart").
    pub worker_threads: usize,
    /// Free space the data directory's disk must keep: below it writes are refused
    /// (`NoSpace`) instead of letting fjall meet a full disk (`crate::disk`). 0: no floor.
    pub min_free_disk_bytes: u64,
    /// Size at which the log starts a new segment file.
    pub segment_bytes: u64,
    /// How far past its last frame the log's last segment is kept zero-filled
    /// (`SegmentLog::preallocate`); 0: off.
    pub preallocate_bytes: u64,
    /// How much of the newest sealed log segments is left in the OS page cache; older ones
    /// are dropped from it (`SegmentLog::keep_cached`); 0: off.
    pub log_page_cache_bytes: u64,
    /// Acknowledged groups not yet indexed that memory may hold (counted per record with
    /// its canonical bytes and overhead); past it the writer waits for the indexer.
    pub tail_bytes: u64,
    /// How long the writer waits for more batches before a commit while the store is busy
    /// with small groups (`crate::group`); zero: never.
    pub commit_delay: std::time::Duration,
}

impl Default for FjallLimits {
    fn default() -> Self {
        Self {
            write_buffer_bytes: 8 * MIB,
            journal_bytes: 256 * MIB,
            cache_bytes: 8 * MIB,
            worker_threads: 1,
            min_free_disk_bytes: 0,
            segment_bytes: 64 * MIB,
            preallocate_bytes: 8 * MIB,
            log_page_cache_bytes: crate::segment::DEFAULT_PAGE_CACHE_WINDOW,
            tail_bytes: 16 * MIB,
            commit_delay: std::time::Duration::from_micros(300),
        }
    }
}

impl FjallLimits {
    /// The most the memtables hold, by fjall's accounting, before writes wait.
    pub fn memtable_ceiling(&self) -> u64 {
        (1 + MAX_SEALED_MEMTABLES as u64) * self.write_buffer_bytes
    }

    /// The journal limit fjall is given (it refuses less than 64 MiB).
    pub(super) fn fjall_journal_size(&self) -> u64 {
        self.journal_bytes.max(64 * MIB)
    }

    /// fjall's own per-keyspace seal trigger: far enough above the writer's budget that it
    /// never fires (see the module doc).
    pub(super) fn fjall_memtable_size(&self) -> u64 {
        2 * self.write_buffer_bytes.max(MIB)
    }
}

/// The file in the index directory recording each keyspace's seal trigger.
const TRIGGERS_FILE: &str = "sealtrail-memtables.json";

/// Whether `dir` has recorded its seal triggers (an index directory without them was cut
/// short by a crash while it was created, and is rebuilt).
pub(super) fn has_triggers(dir: &std::path::Path) -> bool {
    dir.join(TRIGGERS_FILE).exists()
}

/// The layout of the index directory this sealtrail writes, recorded in `TRIGGERS_FILE`
/// next to the seal triggers. 2: `records` + `runs` keyed in write order (issue 11);
/// 3: facet values keyed by a keyed hash, never in plain (issue 15); 4: 64 record
/// pointers to a `records` entry (one entry per record before). An index of another
/// layout (or of none recorded: the first, tenant-keyed `events`) is deleted and rebuilt
/// from the log at start — the log is the store, the index is derived.
/// 5: `unordered` takes the `ids` and `receipts` entries that would break their key order.
pub(super) const INDEX_LAYOUT: u32 = 5;

#[derive(serde::Serialize, serde::Deserialize)]
struct IndexFile {
    layout: u32,
    seal_triggers: [u64; super::KEYSPACES],
    /// Hex of the index's facet key ([`super::FacetKey`]): made with the index, so an
    /// index rebuilt from scratch gets a new one.
    facet_key: String,
}

/// Whether the index directory records the layout this sealtrail writes.
pub(super) fn has_current_layout(dir: &std::path::Path) -> bool {
    std::fs::read_to_string(dir.join(TRIGGERS_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<IndexFile>(&text).ok())
        .is_some_and(|file| file.layout == INDEX_LAYOUT)
}

/// fjall's own seal trigger of each keyspace, which fjall fixes when a keyspace is created
/// (later options are ignored): recorded in `TRIGGERS_FILE` when the index directory is
/// created. The writer seals each keyspace by half its trigger, so fjall's own trigger —
/// the one that floods its worker — never fires.
///
/// Crash window: the file is written after fjall created the keyspaces. A crash between
/// the two leaves a directory without the file, which the next open deletes and rebuilds
/// from the log ([`has_triggers`]).
///
/// The same file holds the index's facet key, made from the OS random source then.
pub(super) fn seal_triggers(
    dir: &std::path::Path,
    memtable: u64,
) -> crate::StoreResult<([u64; super::KEYSPACES], [u8; 32])> {
    let path = dir.join(TRIGGERS_FILE);
    let unavailable = |e: &dyn std::fmt::Display| {
        crate::StoreError::Unavailable(format!("{}: {e}", path.display()))
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let file = serde_json::from_str::<IndexFile>(&text).map_err(|e| unavailable(&e))?;
        let key: [u8; 32] = hex::decode(&file.facet_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| unavailable(&"the facet key is not 64 hex digits"))?;
        return Ok((file.seal_triggers, key));
    }
    let triggers = [memtable; super::KEYSPACES];
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| unavailable(&e))?;
    let json = serde_json::to_vec(&IndexFile {
        layout: INDEX_LAYOUT,
        seal_triggers: triggers,
        facet_key: hex::encode(key),
    })
    .expect("triggers serialize");
    crate::write_durably(&path, &json, true).map_err(|e| unavailable(&e))?;
    Ok((triggers, key))
}

/// The writer thread's side of the bound: counts what goes into the memtables, seals them,
/// and waits for the flush worker when it falls behind.
pub(super) struct WriteBudget {
    limits: FjallLimits,
    since_seal: u64,
    /// What each keyspace took in since the last seal, and the most it may.
    keyspace_since_seal: [u64; super::KEYSPACES],
    keyspace_caps: [u64; super::KEYSPACES],
    /// Which keyspaces (in [`Trees::all`] order) were written since the last seal.
    touched: [bool; super::KEYSPACES],
    /// Which `ids` and `receipts` keys keep their keyspace in key order.
    pub(super) order: KeyOrder,
}

/// Keeps every table of the `ids` and `receipts` keyspaces past the tables flushed before
/// it, so that fjall moves them down instead of merging them (see "Why these keys" in the
/// module above): a key is admitted only if it is greater than every key the keyspace had
/// when its memtable was last sealed by the writer; the caller puts any other in
/// `unordered`. (A seal fjall makes on its own, when its journal reaches its limit, is not
/// seen here: a table can then overlap the one before, which costs a merge, nothing else.)
pub(super) struct KeyOrder {
    /// Per keyspace (`ids`, `receipts`): the largest key at the last seal, and the
    /// largest key so far.
    floor: [Vec<u8>; 2],
    top: [Vec<u8>; 2],
}

impl KeyOrder {
    /// `last`: the largest key of `ids` and of `receipts` (what an open finds).
    pub(super) fn new(last: [Vec<u8>; 2]) -> Self {
        Self {
            floor: last.clone(),
            top: last,
        }
    }

    fn slot(keyspace: usize) -> usize {
        debug_assert!(keyspace == super::KS_IDS || keyspace == super::KS_RECEIPTS);
        usize::from(keyspace == super::KS_RECEIPTS)
    }

    /// Whether `key` may go to `keyspace` (`ids` or `receipts`): a UUIDv7 key (`1 …`)
    /// past the last seal's largest key.
    pub(super) fn admits(&mut self, keyspace: usize, key: &[u8]) -> bool {
        let slot = Self::slot(keyspace);
        if key.first() != Some(&1) || key <= &self.floor[slot][..] {
            return false;
        }
        if key > &self.top[slot][..] {
            // Nearly every admitted key is a new top: reuse the buffer (no allocation per
            // id on the indexer's path).
            self.top[slot].clear();
            self.top[slot].extend_from_slice(key);
        }
        true
    }

    /// The memtables were sealed: what comes next must lie past everything before.
    fn sealed(&mut self) {
        self.floor.clone_from(&self.top);
    }
}

impl WriteBudget {
    /// `triggers`: fjall's own seal trigger of each keyspace ([`seal_triggers`]).
    pub(super) fn new(
        limits: FjallLimits,
        triggers: [u64; super::KEYSPACES],
        last_ordered: [Vec<u8>; 2],
    ) -> Self {
        Self {
            limits,
            since_seal: 0,
            keyspace_since_seal: [0; super::KEYSPACES],
            keyspace_caps: triggers.map(|t| t / 2),
            touched: [false; super::KEYSPACES],
            order: KeyOrder::new(last_ordered),
        }
    }

    /// Counts one insert into keyspace number `index` (in [`Trees::all`] order).
    pub(super) fn account(&mut self, index: usize, key_len: usize, value_len: usize) {
        let bytes = key_len as u64 + value_len as u64 + ENTRY_OVERHEAD;
        self.since_seal += bytes;
        self.keyspace_since_seal[index] += bytes;
        self.touched[index] = true;
    }

    /// Waits while a keyspace has [`MAX_SEALED_MEMTABLES`] sealed memtables not yet
    /// flushed. This is the back-pressure: the group (and every chainer waiting on it)
    /// waits, so memory cannot outrun the flush worker.
    ///
    /// There is no deadline: if fjall's flush worker has died (fjall poisons itself on an
    /// I/O error), this waits for good, ingest answers `504 commit_timeout` and the log
    /// warns every [`STALL_WARNING`]; a restart replays the journal. (Stopping the server
    /// on such a fatal store error is issue 9's.)
    pub(super) fn wait_for_flushes(&self, trees: &Trees) -> crate::StoreResult<()> {
        let backlog = || {
            trees
                .all()
                .iter()
                .any(|(_, ks)| ks.sealed_memtable_count() >= MAX_SEALED_MEMTABLES)
        };
        if !backlog() {
            return Ok(());
        }
        let started = Instant::now();
        let mut warned_at = started;
        let mut probed_at = started;
        while backlog() {
            std::thread::sleep(Duration::from_millis(1));
            // A flush worker that failed (a full disk, an I/O error) poisons the database
            // and never flushes again: without this probe the writer would wait forever.
            // Persisting the (empty) journal buffer answers `Poisoned` then.
            if probed_at.elapsed() > POISON_PROBE {
                probed_at = Instant::now();
                if let Err(err) = trees.db.persist(fjall::PersistMode::Buffer) {
                    return Err(super::write_error(err));
                }
            }
            if warned_at.elapsed() > STALL_WARNING {
                warned_at = Instant::now();
                tracing::warn!(
                    "store writes have waited {:?} for memtable flushes (flushes pending: {}); ingest is slowed down until they finish",
                    started.elapsed(),
                    trees.db.outstanding_flushes()
                );
            }
        }
        metrics::counter!("sealtrail_store_write_stall_microseconds_total")
            .increment(started.elapsed().as_micros() as u64);
        Ok(())
    }

    /// After a durable group: seals every written keyspace once the write buffer is full,
    /// or one keyspace reached half of fjall's own trigger. A failed seal is logged, not
    /// returned: the group is already durable, and the next group tries again.
    pub(super) fn seal_if_full(&mut self, trees: &Trees) {
        let keyspace_full = self
            .keyspace_since_seal
            .iter()
            .zip(&self.keyspace_caps)
            .any(|(taken, cap)| taken >= cap);
        if self.since_seal < self.limits.write_buffer_bytes && !keyspace_full {
            return;
        }
        seal(trees, &self.touched);
        self.order.sealed();
        self.since_seal = 0;
        self.keyspace_since_seal = [0; super::KEYSPACES];
        self.touched = [false; super::KEYSPACES];
    }
}

/// Seals the memtables of the keyspaces marked in `which` (all if it is all `true`).
pub(super) fn seal(trees: &Trees, which: &[bool; super::KEYSPACES]) {
    for ((name, keyspace), _) in trees.all().iter().zip(which).filter(|(_, w)| **w) {
        match keyspace.rotate_memtable() {
            Ok(true) => metrics::counter!("sealtrail_store_memtable_seals_total").increment(1),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot seal the {name} memtable (retried later): {e}"),
        }
    }
}

/// Publishes the store's gauges (`sealtrail_store_*`) on the metrics registry.
pub(super) fn publish(trees: &Trees, limits: &FjallLimits) {
    let db = &trees.db;
    metrics::gauge!("sealtrail_store_memtable_bytes").set(db.write_buffer_size() as f64);
    metrics::gauge!("sealtrail_store_memtable_limit_bytes").set(limits.memtable_ceiling() as f64);
    if let Ok(bytes) = db.journal_disk_space() {
        metrics::gauge!("sealtrail_store_journal_bytes").set(bytes as f64);
    }
    metrics::gauge!("sealtrail_store_journal_limit_bytes").set(limits.journal_bytes as f64);
    metrics::gauge!("sealtrail_store_journal_files").set(db.journal_count() as f64);
    metrics::gauge!("sealtrail_store_flushes_pending").set(db.outstanding_flushes() as f64);
    metrics::gauge!("sealtrail_store_compactions_running").set(db.active_compactions() as f64);
    metrics::counter!("sealtrail_store_compactions_total")
        .absolute(db.compactions_completed() as u64);
    if let Ok(bytes) = db.disk_space() {
        metrics::gauge!("sealtrail_store_disk_bytes").set(bytes as f64);
    }
    for (name, keyspace) in trees.all() {
        publish_keyspace(name, keyspace);
    }
}

fn publish_keyspace(name: &'static str, keyspace: &Keyspace) {
    metrics::gauge!("sealtrail_store_sealed_memtables", "keyspace" => name)
        .set(keyspace.sealed_memtable_count() as f64);
    metrics::gauge!("sealtrail_store_l0_tables", "keyspace" => name)
        .set(keyspace.l0_table_count() as f64);
    metrics::gauge!("sealtrail_store_tables", "keyspace" => name)
        .set(keyspace.table_count() as f64);
}
