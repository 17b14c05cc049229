//! The embedded store: one SQLite database file in WAL mode with `synchronous=FULL`.
//!
//! Writes go through one writer thread that *group-commits*: it takes every batch waiting
//! (from all partitions' chainers), writes them in one transaction and fsyncs once, then
//! answers each batch. Reads use a small pool of read-only connections on blocking
//! threads. A second process (`sealtrail keys …`) may open the same file; SQLite's locking
//! and `busy_timeout` make that safe.
//!
//! Crash windows: a crash before COMMIT returns leaves none of the group (SQLite rolls the
//! WAL tail back on open), and no batch of it was acknowledged; a crash after COMMIT but
//! before the answers leaves the group stored though unacknowledged, which clients see as
//! a timeout and resolve by retrying the same ids (idempotent).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::{ChainHead, Record};

use crate::disk::DiskGuard;
use crate::group::GroupCommitter;
use crate::rule::{self, GroupIds};
use crate::{
    ApiKey, ChainRow, CommitBatch, EventPage, EventQuery, Paging, RetentionPolicy, Store,
    StoreError, StoreResult, StoredEvent,
};
use sealtrail_core::merkle::{Hash, NodeId};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    tenant_id    TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    id           TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    input_digest TEXT    NOT NULL,
    actor_id     TEXT    NOT NULL,
    actor_type   TEXT,
    action       TEXT    NOT NULL,
    resource_id  TEXT    NOT NULL,
    outcome      TEXT    NOT NULL,
    timestamp    TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id       ON events (tenant_id, id);
CREATE INDEX        IF NOT EXISTS events_by_actor    ON events (tenant_id, actor_id, seq);
CREATE INDEX        IF NOT EXISTS events_by_action   ON events (tenant_id, action, seq);
CREATE INDEX        IF NOT EXISTS events_by_resource ON events (tenant_id, resource_id, seq);
CREATE TABLE IF NOT EXISTS receipts (
    tenant_id  TEXT NOT NULL,
    receipt_id TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, receipt_id)
);
CREATE TABLE IF NOT EXISTS tree_nodes (
    tenant_id TEXT    NOT NULL,
    level     INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retention_boundaries (
    tenant_id     TEXT    PRIMARY KEY,
    retained_from INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retention_policies (
    tenant_id TEXT PRIMARY KEY,
    days      INTEGER,
    events    INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS destinations (
    tenant_id         TEXT    NOT NULL,
    id                TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    url               TEXT    NOT NULL,
    sealed_secret     BLOB    NOT NULL,
    created_at        TEXT    NOT NULL,
    delivered_through INTEGER NOT NULL,
    paused            INTEGER NOT NULL,
    failing_since     TEXT,
    last_error        TEXT,
    last_success_at   TEXT,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"#;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "sealtrail.db";

/// Read connections kept open between reads (each with its own page cache).
const MAX_READERS: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    space: Arc<DiskGuard>,
    writer: GroupCommitter,
    readers: Arc<Mutex<Vec<Connection>>>,
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn open_connection(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Page cache: 32 MiB for the writer, so the index pages that inserts touch stay in
    // memory (measured: +30% batch ingest over the 2 MiB default); 4 MiB per reader.
    conn.pragma_update(None, "cache_size", if read_only { -4_096 } else { -32_768 })?;
    if !read_only {
        // what an update or delete frees is zeroed (a redaction's erased content)
        conn.pragma_update(None, "secure_delete", "ON")?;
    }
    Ok(conn)
}

/// Whether `data_dir` holds a SQLite store with at least one event (without creating
/// anything): how a data directory from before engine identities were recorded is told
/// apart from one that only holds API keys.
pub fn holds_events(data_dir: &Path) -> StoreResult<bool> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(false);
    }
    let conn = open_connection(&path, true)
        .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if !has_table {
        return Ok(false);
    }
    conn.query_row("SELECT EXISTS(SELECT 1 FROM events)", [], |r| r.get(0))
        .map_err(unavailable)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        Self::open_with_floor(data_dir, 0)
    }

    /// [`SqliteStore::open`] refusing writes while the disk has less than `min_free_bytes`
    /// free (`crate::disk`; SQLite itself survives a full disk, but the floor keeps the
    /// two engines alike and leaves the operator room).
    pub fn open_with_floor(data_dir: &Path, min_free_bytes: u64) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            unavailable(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DB_FILE);
        let conn = open_connection(&path, false)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(unavailable)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(unavailable(format!(
                "{} refused WAL mode ({mode})",
                path.display()
            )));
        }
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        let mut conn = conn;
        let space = Arc::new(DiskGuard::new(data_dir, min_free_bytes));
        let writer_space = space.clone();
        let writer =
            GroupCommitter::start("sealtrail-sqlite-writer", Duration::ZERO, move |batches| {
                writer_space.check()?;
                let batches: Vec<&CommitBatch> = batches.iter().map(|b| &**b).collect();
                write_group(&mut conn, &batches)
            })?;
        Ok(Self {
            path,
            space,
            writer,
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Stops accepting writes, lets the writer finish what it has, and waits for it.
    pub fn shutdown(&self) {
        self.writer.close();
    }

    /// Runs `f` on a pooled read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().expect("pool lock").pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&path, true).map_err(unavailable)?,
            };
            let result = f(&conn);
            let mut pool = pool.lock().expect("pool lock");
            if pool.len() < MAX_READERS {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| unavailable(format!("read task failed: {e}")))?
    }

    /// Writes on a fresh connection from the calling task (for key management, which must
    /// also work from a second process while a server runs).
    async fn write_direct<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_connection(&path, false).map_err(unavailable)?;
            f(&conn)
        })
        .await
        .map_err(|e| unavailable(format!("write task failed: {e}")))?
    }

    /// The tenants' own retention policies (kept with the API keys: the fjall engine
    /// keeps them here too).
    pub async fn retention_policies_of(&self) -> StoreResult<Vec<(String, RetentionPolicy)>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tenant_id, days, events FROM retention_policies ORDER BY tenant_id",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        RetentionPolicy {
                            days: r.get::<_, Option<i64>>(1)?.map(|d| d as u32),
                            events: r.get::<_, Option<i64>>(2)?.map(|e| e as u64),
                        },
                    ))
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    /// Adds a log-stream destination (the key table's database, for both engines).
    pub async fn create_destination_of(&self, d: crate::Destination) -> StoreResult<()> {
        self.write_direct(move |conn| {
            conn.execute(
                "INSERT INTO destinations (tenant_id, id, kind, url, sealed_secret, created_at, \
                 delivered_through, paused, failing_since, last_error, last_success_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    d.tenant_id,
                    d.id,
                    d.kind,
                    d.url,
                    d.sealed_secret,
                    d.created_at,
                    d.state.delivered_through as i64,
                    d.state.paused,
                    d.state.failing_since,
                    d.state.last_error,
                    d.state.last_success_at
                ],
            )
            .map(drop)
            .map_err(write_error)
        })
        .await
    }

    /// The destinations of `tenant_id` (or all), by tenant and id.
    pub async fn destinations_of(
        &self,
        tenant_id: Option<&str>,
    ) -> StoreResult<Vec<crate::Destination>> {
        let tenant = tenant_id.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tenant_id, id, kind, url, sealed_secret, created_at, delivered_through, \
                     paused, failing_since, last_error, last_success_at FROM destinations \
                     WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY tenant_id, id",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![tenant], |r| {
                    Ok(crate::Destination {
                        tenant_id: r.get(0)?,
                        id: r.get(1)?,
                        kind: r.get(2)?,
                        url: r.get(3)?,
                        sealed_secret: r.get(4)?,
                        created_at: r.get(5)?,
                        state: crate::DeliveryState {
                            delivered_through: r.get::<_, i64>(6)? as u64,
                            paused: r.get(7)?,
                            failing_since: r.get(8)?,
                            last_error: r.get(9)?,
                            last_success_at: r.get(10)?,
                            generation: 0,
                        },
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    /// Removes a destination; whether it was there.
    pub async fn delete_destination_of(&self, tenant_id: &str, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant_id.to_string(), id.to_string());
        self.write_direct(move |conn| {
            conn.execute(
                "DELETE FROM destinations WHERE tenant_id = ?1 AND id = ?2",
                params![tenant, id],
            )
            .map(|n| n > 0)
            .map_err(write_error)
        })
        .await
    }

    /// Stores a destination's cursor and status; whether it is still there.
    pub async fn record_delivery_of(
        &self,
        tenant_id: &str,
        id: &str,
        state: crate::DeliveryState,
    ) -> StoreResult<bool> {
        let (tenant, id) = (tenant_id.to_string(), id.to_string());
        self.write_direct(move |conn| {
            conn.execute(
                "UPDATE destinations SET delivered_through = ?3, paused = ?4, failing_since = ?5, \
                 last_error = ?6, last_success_at = ?7 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    tenant,
                    id,
                    state.delivered_through as i64,
                    state.paused,
                    state.failing_since,
                    state.last_error,
                    state.last_success_at
                ],
            )
            .map(|n| n > 0)
            .map_err(write_error)
        })
        .await
    }

    /// Sets or removes `tenant_id`'s own retention policy (also from a second process).
    pub async fn set_retention_policy_of(
        &self,
        tenant_id: &str,
        policy: Option<RetentionPolicy>,
    ) -> StoreResult<()> {
        let tenant = tenant_id.to_string();
        self.write_direct(move |conn| {
            match policy {
                Some(p) => conn.execute(
                    "INSERT INTO retention_policies (tenant_id, days, events) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (tenant_id) DO UPDATE SET days = excluded.days, events = excluded.events",
                    params![tenant, p.days.map(i64::from), p.events.map(|e| e as i64)],
                ),
                None => conn.execute(
                    "DELETE FROM retention_policies WHERE tenant_id = ?1",
                    params![tenant],
                ),
            }
            .map(drop)
            .map_err(write_error)
        })
        .await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes `batches` in one transaction, each judged by the append rule against what the
/// transaction sees (earlier groups, and earlier batches of this group).
///
/// A redaction event (issue 15) erases the record it names **in the same transaction**:
/// its row keeps `tenant_id`, `seq`, `id`, `hash` and `input_digest`, its body becomes the
/// redacted record's stored form and its other columns are blanked (so no filter finds
/// it). `secure_delete` zeroes what the update frees, and after the commit the WAL is
/// checkpointed and truncated, so the old pages leave the files. A crash anywhere leaves
/// the redaction and the erasure together or neither.
fn write_group(conn: &mut Connection, batches: &[&CommitBatch]) -> StoreResult<()> {
    let erased = write_transaction(conn, batches)?;
    if erased > 0 {
        // Best effort: a reader holding an old snapshot makes it return busy; the next
        // redaction or SQLite's own checkpoint (which does not truncate) follows.
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => {}
            Ok(_) => tracing::warn!(
                "the WAL could not be truncated after a redaction (a read was in progress); the erased pages leave it at the next checkpoint"
            ),
            Err(e) => tracing::warn!("checkpointing the WAL after a redaction failed: {e}"),
        }
    }
    Ok(())
}

/// Erases `tenant`'s record `seq` (if it is `id` and not erased yet): see [`write_group`].
fn erase(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    seq: u64,
    id: &str,
    by: &sealtrail_core::record::Redaction,
) -> StoreResult<bool> {
    let row: Option<(String, Vec<u8>)> = tx
        .query_row(
            "SELECT hash, body FROM events WHERE tenant_id = ?1 AND seq = ?2 AND id = ?3",
            params![tenant, seq as i64, id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(write_error)?;
    let Some((hash, body)) = row else {
        tracing::error!(
            tenant,
            seq,
            id,
            "a redaction names a record that is not stored; not erased"
        );
        return Ok(false);
    };
    if sealtrail_core::record::is_redacted(&body) {
        return Ok(false);
    }
    let record = Record::from_canonical(&body, &hash)
        .map_err(|e| StoreError::Corrupt(format!("record {tenant}#{seq}: {e}")))?;
    tx.execute(
        "UPDATE events SET actor_id = '', actor_type = NULL, action = '', resource_id = '', \
         outcome = '', timestamp = '', body = ?3 WHERE tenant_id = ?1 AND seq = ?2",
        params![tenant, seq as i64, record.redacted_stored(by)],
    )
    .map_err(write_error)?;
    Ok(true)
}

/// Removes `tenant`'s records before `before` (a prune event's order, issue 15) in the
/// transaction that appends the event, and records the boundary; the tree nodes stay (every
/// level is stored, so proofs over removed records still come out). `secure_delete` zeroes
/// the freed pages. Returns the records removed.
fn prune(tx: &rusqlite::Transaction<'_>, tenant: &str, before: u64) -> StoreResult<usize> {
    let removed = tx
        .execute(
            "DELETE FROM events WHERE tenant_id = ?1 AND seq < ?2",
            params![tenant, before as i64],
        )
        .map_err(write_error)?;
    tx.execute(
        "INSERT INTO retention_boundaries (tenant_id, retained_from) VALUES (?1, ?2) \
         ON CONFLICT (tenant_id) DO UPDATE SET retained_from = max(retained_from, excluded.retained_from)",
        params![tenant, before as i64],
    )
    .map_err(write_error)?;
    if removed > 0 {
        metrics::counter!("sealtrail_store_records_pruned_total").increment(removed as u64);
        tracing::info!(tenant, before, removed, "records removed by retention");
    }
    Ok(removed)
}

/// `tenant`'s retention boundary as `conn` sees it (1: nothing removed).
fn retained_from(conn: &Connection, tenant: &str) -> StoreResult<u64> {
    let at: Option<i64> = conn
        .prepare_cached("SELECT retained_from FROM retention_boundaries WHERE tenant_id = ?1")
        .and_then(|mut s| s.query_row([tenant], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    Ok(at.map_or(1, |a| a as u64))
}

/// A replayed record that retention removed: it must be the leaf the tree kept at its
/// place (else it is a fork, as a replay that differs from a stored record).
fn check_pruned_replay(
    conn: &Connection,
    r: &sealtrail_core::record::ChainedRecord,
) -> StoreResult<()> {
    let seq = r.record.sequence_number;
    let kept: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT hash FROM tree_nodes WHERE tenant_id = ?1 AND level = 0 AND idx = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![r.record.tenant_id, (seq - 1) as i64], |row| {
                row.get(0)
            })
            .optional()
        })
        .map_err(write_error)?;
    rule::check_pruned_replay(r, kept.as_deref())
}

fn write_transaction(conn: &mut Connection, batches: &[&CommitBatch]) -> StoreResult<usize> {
    let mut erased = 0;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(write_error)?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (tenant_id, seq, id, hash, input_digest, actor_id, actor_type, action, \
                 resource_id, outcome, timestamp, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(write_error)?;
        let mut stored_hash = tx
            .prepare_cached("SELECT hash FROM events WHERE tenant_id = ?1 AND seq = ?2")
            .map_err(write_error)?;
        let mut stored_seq = tx
            .prepare_cached("SELECT seq FROM events WHERE tenant_id = ?1 AND id = ?2")
            .map_err(write_error)?;
        let mut head = tx
            .prepare_cached(
                "SELECT seq, hash FROM events WHERE tenant_id = ?1 ORDER BY seq DESC LIMIT 1",
            )
            .map_err(write_error)?;
        // Each tenant's head as this transaction has left it.
        let mut heads: HashMap<&str, Option<ChainHead>> = HashMap::new();
        let mut group_ids = GroupIds::default();
        let mut receipt = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO receipts (tenant_id, receipt_id, body) VALUES (?1, ?2, ?3)",
            )
            .map_err(write_error)?;
        let mut node_insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO tree_nodes (tenant_id, level, idx, hash) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(write_error)?;
        for batch in batches {
            for (tenant, records) in rule::group_by_tenant(&batch.records)? {
                if !heads.contains_key(tenant) {
                    let stored = head
                        .query_row([tenant], |row| {
                            Ok(ChainHead {
                                sequence_number: row.get::<_, i64>(0)? as u64,
                                hash: row.get(1)?,
                            })
                        })
                        .optional()
                        .map_err(write_error)?;
                    heads.insert(tenant, stored);
                }
                let replayed = rule::split_at_head(heads[tenant].as_ref(), &records)?;
                for r in &records[..replayed] {
                    let seq = r.record.sequence_number;
                    let stored: Option<String> = stored_hash
                        .query_row(params![tenant, seq as i64], |row| row.get(0))
                        .optional()
                        .map_err(write_error)?;
                    if stored.is_none() && seq < retained_from(&tx, tenant)? {
                        // Removed by retention: judged by its leaf, which the tree keeps.
                        check_pruned_replay(&tx, r)?;
                        continue;
                    }
                    rule::check_replayed(r, stored.as_deref())?;
                }
                for chained in &records[replayed..] {
                    let r = &chained.record;
                    group_ids.check(chained, || {
                        stored_seq
                            .query_row(params![tenant, r.id], |row| row.get::<_, i64>(0))
                            .optional()
                            .map(|s| s.map(|s| s as u64))
                            .map_err(write_error)
                    })?;
                    insert
                        .execute(params![
                            r.tenant_id,
                            r.sequence_number as i64,
                            r.id,
                            r.hash,
                            chained.input_digest,
                            r.actor.id,
                            r.actor.actor_type.map(|t| t.as_str()),
                            r.action,
                            r.resource.id,
                            r.outcome.as_str(),
                            r.timestamp,
                            chained.canonical,
                        ])
                        .map_err(|e| match e {
                            // The rule has checked the slot and the id; only a server-made id
                            // colliding with a stored one (a broken id generator) gets here.
                            rusqlite::Error::SqliteFailure(f, _)
                                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                            {
                                StoreError::Refused(rule::Refusal {
                                    tenant: r.tenant_id.clone(),
                                    sequence_number: r.sequence_number,
                                    kind: rule::RefusalKind::DuplicateId {
                                        id: r.id.clone(),
                                        stored_at: 0,
                                    },
                                })
                            }
                            other => write_error(other),
                        })?;
                }
                for chained in &records[replayed..] {
                    if let Some((seq, id, by)) = chained.record.redaction_order() {
                        erased += usize::from(erase(&tx, tenant, seq, id, &by)?);
                    }
                    if let Some(before) = chained.record.prune_order() {
                        erased += prune(&tx, tenant, before)?;
                    }
                }
                if let Some(last) = records.last()
                    && replayed < records.len()
                {
                    heads.insert(tenant, Some(last.head()));
                }
            }
            for (tenant_id, rec) in &batch.receipts {
                // The store, not the chainer, stamps the commit time: the chainer has no
                // clock (DESIGN.md §4.3), and receipts are not part of the chain.
                let mut stamped = rec.clone();
                batch.stamp(&mut stamped);
                let body = serde_json::to_string(&stamped).expect("receipt serializes");
                receipt
                    .execute(params![tenant_id, rec.receipt_id, body])
                    .map_err(write_error)?;
            }
            for node in &batch.tree_nodes {
                node_insert
                    .execute(params![
                        node.tenant_id,
                        node.id.level,
                        node.id.index as i64,
                        &node.hash[..]
                    ])
                    .map_err(write_error)?;
            }
        }
    }
    tx.commit().map_err(write_error)?;
    Ok(erased)
}

/// A failed write: a full disk is [`StoreError::NoSpace`] (SQLite rolls the transaction
/// back and the next one may succeed once space is freed); corruption is fatal; anything
/// else is retryable.
fn write_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &err {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DiskFull => StoreError::NoSpace(err.to_string()),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(err.to_string())
            }
            ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen => {
                StoreError::Fatal(format!("{err}: check the data directory's permissions"))
            }
            _ => unavailable(err),
        },
        _ => unavailable(err),
    }
}

fn row_to_stored(body: Vec<u8>, hash: String, digest: String) -> StoreResult<StoredEvent> {
    let record =
        Record::from_canonical(&body, &hash).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(StoredEvent {
        record,
        input_digest: digest,
    })
}

fn key_from_row(row: &rusqlite::Row) -> rusqlite::Result<ApiKey> {
    let scopes: String = row.get(4)?;
    Ok(ApiKey {
        key_id: row.get(0)?,
        tenant_id: row.get(1)?,
        key_hash: row.get(2)?,
        key_prefix: row.get(3)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        created_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

const KEY_COLUMNS: &str = "key_id, tenant_id, key_hash, key_prefix, scopes, created_at, revoked_at";

#[async_trait]
impl Store for SqliteStore {
    fn prunes(&self) -> bool {
        true
    }

    async fn retained_from(&self, tenant_id: &str) -> StoreResult<u64> {
        let tenant = tenant_id.to_string();
        self.read(move |conn| retained_from(conn, &tenant)).await
    }

    async fn tenants(&self) -> StoreResult<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT tenant_id FROM events")
                .map_err(unavailable)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(unavailable)?;
            rows.collect::<Result<Vec<String>, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn retention_policies(&self) -> StoreResult<Vec<(String, RetentionPolicy)>> {
        self.retention_policies_of().await
    }

    async fn create_destination(&self, destination: crate::Destination) -> StoreResult<()> {
        self.create_destination_of(destination).await
    }

    async fn destinations(&self, tenant_id: Option<&str>) -> StoreResult<Vec<crate::Destination>> {
        self.destinations_of(tenant_id).await
    }

    async fn delete_destination(&self, tenant_id: &str, id: &str) -> StoreResult<bool> {
        self.delete_destination_of(tenant_id, id).await
    }

    async fn record_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        state: crate::DeliveryState,
    ) -> StoreResult<bool> {
        self.record_delivery_of(tenant_id, id, state).await
    }

    async fn set_retention_policy(
        &self,
        tenant_id: &str,
        policy: Option<RetentionPolicy>,
    ) -> StoreResult<()> {
        self.set_retention_policy_of(tenant_id, policy).await
    }

    fn erases_redacted(&self) -> bool {
        true
    }

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
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, hash FROM events WHERE tenant_id = ?1 ORDER BY seq DESC LIMIT 1",
                )
                .map_err(unavailable)?;
            let mut out = HashMap::new();
            for tenant in tenants {
                let head = stmt
                    .query_row([&tenant], |row| {
                        Ok(ChainHead {
                            sequence_number: row.get::<_, i64>(0)? as u64,
                            hash: row.get(1)?,
                        })
                    })
                    .optional()
                    .map_err(unavailable)?;
                if let Some(head) = head {
                    out.insert(tenant, head);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn find_events(&self, keys: Vec<(String, String)>) -> StoreResult<Vec<StoredEvent>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body, hash, input_digest FROM events WHERE tenant_id = ?1 AND id = ?2",
                )
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for (tenant, id) in keys {
                let row = stmt
                    .query_row([&tenant, &id], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
                    .map_err(unavailable)?;
                if let Some((body, hash, digest)) = row {
                    out.push(row_to_stored(body, hash, digest)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get_event(&self, tenant_id: &str, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        let mut found = self
            .find_events(vec![(tenant_id.to_string(), event_id.to_string())])
            .await?;
        Ok(found.pop())
    }

    async fn get_receipt(&self, tenant_id: &str, receipt_id: &str) -> StoreResult<Option<Receipt>> {
        let (tenant, id) = (tenant_id.to_string(), receipt_id.to_string());
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached(
                    "SELECT body FROM receipts WHERE tenant_id = ?1 AND receipt_id = ?2",
                )
                .and_then(|mut s| s.query_row([&tenant, &id], |row| row.get(0)).optional())
                .map_err(unavailable)?;
            body.map(|b| serde_json::from_str(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
        .await
    }

    async fn list_events(&self, tenant_id: &str, query: EventQuery) -> StoreResult<EventPage> {
        let tenant = tenant_id.to_string();
        self.read(move |conn| {
            let mut clauses = vec!["tenant_id = ?".to_string()];
            let mut args: Vec<rusqlite::types::Value> = vec![tenant.into()];
            let mut add = |clause: &str, value: Option<String>| {
                if let Some(v) = value {
                    clauses.push(clause.to_string());
                    args.push(v.into());
                }
            };
            add("actor_id = ?", query.actor_id);
            add("actor_type = ?", query.actor_type.map(|t| t.as_str().to_string()));
            add("action = ?", query.action);
            add("resource_id = ?", query.resource_id);
            add("outcome = ?", query.outcome.map(|o| o.as_str().to_string()));
            add("timestamp >= ?", query.from);
            add("timestamp <= ?", query.to);
            let filter = clauses.join(" AND ");
            let total: i64 = conn
                .prepare_cached(&format!("SELECT COUNT(*) FROM events WHERE {filter}"))
                .and_then(|mut s| s.query_row(rusqlite::params_from_iter(args.iter()), |row| row.get(0)))
                .map_err(unavailable)?;
            let (page_clause, limit, offset) = match query.paging {
                Paging::Page { page, page_size } => {
                    ("", page_size as i64, (page.max(1) as i64 - 1) * page_size as i64)
                }
                Paging::After { after, page_size } => {
                    args.push((after as i64).into());
                    (" AND seq > ?", page_size as i64, 0)
                }
            };
            args.push(limit.into());
            args.push(offset.into());
            let sql = format!("SELECT body, hash FROM events WHERE {filter}{page_clause} ORDER BY seq LIMIT ? OFFSET ?");
            let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?)))
                .map_err(unavailable)?;
            let mut events = Vec::new();
            for row in rows {
                let (body, hash) = row.map_err(unavailable)?;
                events.push(Record::from_canonical(&body, &hash).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            Ok(EventPage { events, total: total as u64 })
        })
        .await
    }

    async fn scan_chain(
        &self,
        tenant_id: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<ChainRow>> {
        let tenant = tenant_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT seq, hash, body FROM events WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![tenant, after as i64, limit as i64], |row| {
                    Ok(ChainRow { sequence_number: row.get::<_, i64>(0)? as u64, hash: row.get(1)?, canonical: row.get(2)? })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn tree_nodes(
        &self,
        tenant_id: &str,
        ids: Vec<NodeId>,
    ) -> StoreResult<Vec<Option<Hash>>> {
        let tenant = tenant_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT hash FROM tree_nodes WHERE tenant_id = ?1 AND level = ?2 AND idx = ?3",
                )
                .map_err(unavailable)?;
            ids.iter()
                .map(|id| {
                    let blob: Option<Vec<u8>> = stmt
                        .query_row(params![tenant, id.level, id.index as i64], |row| row.get(0))
                        .optional()
                        .map_err(unavailable)?;
                    blob.map(|b| {
                        Hash::try_from(b.as_slice())
                            .map_err(|_| StoreError::Corrupt("bad tree node".into()))
                    })
                    .transpose()
                })
                .collect()
        })
        .await
    }

    async fn create_key(&self, key: ApiKey) -> StoreResult<()> {
        self.create_keys(vec![key]).await
    }

    async fn create_keys(&self, keys: Vec<ApiKey>) -> StoreResult<()> {
        self.write_direct(move |conn| {
            let tx = conn.unchecked_transaction().map_err(unavailable)?;
            {
                let mut insert = tx
                    .prepare(&format!(
                        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ))
                    .map_err(unavailable)?;
                for key in keys {
                    insert
                        .execute(params![
                            key.key_id,
                            key.tenant_id,
                            key.key_hash,
                            key.key_prefix,
                            key.scopes.join(","),
                            key.created_at,
                            key.revoked_at
                        ])
                        .map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn find_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        let hash = key_hash.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"
            ))
            .and_then(|mut s| s.query_row([&hash], key_from_row).optional())
            .map_err(unavailable)
        })
        .await
    }

    async fn list_keys(&self, tenant_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        let tenant = tenant_id.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY created_at, key_id"
                ))
                .map_err(unavailable)?;
            let rows = stmt.query_map([&tenant], key_from_row).map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn revoke_key(&self, key_id: &str, revoked_at: &str) -> StoreResult<bool> {
        let (id, at) = (key_id.to_string(), revoked_at.to_string());
        self.write_direct(move |conn| {
            let n = conn
                .execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                    params![id, at],
                )
                .map_err(unavailable)?;
            Ok(n > 0)
        })
        .await
    }
}
