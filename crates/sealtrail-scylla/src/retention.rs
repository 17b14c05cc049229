//! Retention (issue 15) in distributed mode: the chainer that derives a prune event
//! (`sealtrail_core::record::PRUNE_ACTION`) removes the tenant's records before the
//! boundary it names, behind the acknowledgement, as it erases a redacted record
//! (`derive.rs`).
//!
//! **What a removal leaves.** A removed record's `events` row keeps its sequence number and
//! `hash` only (`canonical`, `input_digest` and `event_id` are emptied, written with the
//! present as timestamp so no replay of the row brings them back). The hash is the record's
//! Merkle leaf: the tree below the stored levels is computed from it, so inclusion proofs
//! of kept records and consistency proofs between any checkpoints still come out, and a
//! replay of a removed record from the log is still judged against it (the same hash: a
//! replay; another: a fork). Its `ids` row and its values in the `facets` rows are deleted;
//! a block whose records are all removed has no facet rows left.
//!
//! **Order, and what a crash at each step leaves** (the prune event is committed, past
//! the tenant's watermark, which moves only after all of this, so the deriver's retry or
//! the partition's next owner's catch-up runs it all again):
//! 1. The `ids` rows of the records to remove are deleted. A crash after: those records
//!    are still listed and read by position, not by id; the redo deletes nothing more.
//! 2. The boundary is written (`retention`: `retained_from` = the boundary, `previous` =
//!    the one before), with the boundary as write timestamp, so it never moves back. From
//!    here reads start at it: no list, scan, proof or export returns a record before it.
//!    A redo finds `retained_from` equal to its boundary and works from `previous`.
//! 3. Block by block: the facet rows of the block's removed records are deleted (a block
//!    that keeps some records has its rows written again from those), then the records'
//!    rows are emptied. A crash mid-way: a redo skips emptied rows (their facet values
//!    were deleted before they were emptied) and does the rest. The facet rows the same
//!    derivation writes for blocks its records complete already leave out the records
//!    before the boundary (`derive.rs`, `Doomed`), so a redo that skips rows a former
//!    owner emptied meanwhile leaves none of their values behind.
//!
//! A prune event naming a boundary at or before the current one removes nothing.
//! Every row and tombstone of one removal carries one write timestamp from the handle's
//! claim (`fence.rs`): above every row derived before it — a deposed owner's late facet
//! rows of a block, read before its records were removed, included — and below every row
//! derived after it (an id used again once its record is removed).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use scylla::statement::batch::{Batch, BatchType};
use sealtrail_core::record::Record;
use sealtrail_store::{RetentionPolicy, StoreResult};

use crate::facets::{BLOCK, GROUP_BITS, block_rows, values};
use crate::schema::{bucket, id_bucket};
use crate::{ScyllaStore, corrupt, run_bounded, unavailable};

/// Rows per single-partition batch of deletes or updates.
const ROWS_PER_BATCH: usize = 200;
const WRITE_CONCURRENCY: usize = 16;

/// A prune event's order: remove `tenant`'s records before `before`.
pub(crate) struct Prune {
    pub tenant: String,
    pub before: u64,
}

impl ScyllaStore {
    /// `tenant`'s boundary and the one before it: `(1, 1)` if nothing was removed.
    pub(crate) async fn retention_row(&self, tenant: &str) -> StoreResult<(u64, u64)> {
        let row = self
            .one_row::<(Option<i64>, Option<i64>)>(&self.stmts.select_retention, (tenant,))
            .await?;
        Ok(match row {
            Some((Some(at), previous)) => (at as u64, previous.map_or(1, |p| p as u64)),
            _ => (1, 1),
        })
    }

    /// `tenant`'s retention boundary: the first record kept.
    pub(crate) async fn retained(&self, tenant: &str) -> StoreResult<u64> {
        Ok(self.retention_row(tenant).await?.0)
    }

    /// Removes `tenant`'s records before `prune.before` (see the module doc for the
    /// order). `gathered` are the `(tenant, id, seq)` this derivation wrote `ids` rows for:
    /// a redo deletes the rows it wrote again of records already emptied.
    pub(crate) async fn prune(
        &self,
        prune: &Prune,
        gathered: &[(String, String, u64)],
    ) -> StoreResult<()> {
        let Prune { tenant, before } = prune;
        let (tenant, before) = (tenant.as_str(), *before);
        let (current, previous) = self.retention_row(tenant).await?;
        let from = match before.cmp(&current) {
            std::cmp::Ordering::Less => return Ok(()),
            std::cmp::Ordering::Equal if current == 1 => return Ok(()),
            std::cmp::Ordering::Equal => previous,
            std::cmp::Ordering::Greater => current,
        };
        let started = std::time::Instant::now();
        // Every row and tombstone of this removal: above the rows derived before it (this
        // handle's, and every former owner's, late ones included), below those derived
        // after it (`fence.rs`).
        let stamp = self.removal_timestamp()?;
        // 1. The id index.
        let mut ids: Vec<(String, u64)> = gathered
            .iter()
            .filter(|(t, _, seq)| t == tenant && (from..before).contains(seq))
            .map(|(_, id, seq)| (id.clone(), *seq))
            .collect();
        let mut at = from;
        while at < before {
            let to = (before - 1).min(at + 4 * BLOCK - 1);
            for (seq, _, id) in self.tail_rows(tenant, at, to).await? {
                if !id.is_empty() {
                    ids.push((id, seq));
                }
            }
            at = to + 1;
        }
        self.delete_ids(tenant, before, ids, stamp).await?;
        // 2. The boundary.
        if before > current {
            self.session
                .execute_unpaged(
                    &self.stmts.set_retention,
                    (tenant, before as i64, current as i64, before as i64),
                )
                .await
                .map_err(unavailable)?;
        }
        // 3. Block by block: facet rows, then the records.
        let head = self.committed_head(tenant).await?.unwrap_or(0);
        let mut removed = 0u64;
        for b in (from - 1) / BLOCK..=(before - 2) / BLOCK {
            let lo = (b * BLOCK + 1).max(from);
            let hi = ((b + 1) * BLOCK).min(before - 1);
            let rows = self.read_range(tenant, lo, hi).await?;
            let mut records = Vec::with_capacity(rows.len());
            for (row, _) in &rows {
                if !row.canonical.is_empty() {
                    records.push(row.record()?);
                }
            }
            if records.is_empty() {
                continue;
            }
            self.remove_facets(tenant, b, before, head, &records, stamp)
                .await?;
            self.empty_rows(tenant, records.iter().map(|r| r.sequence_number))
                .await?;
            removed += records.len() as u64;
        }
        metrics::counter!("sealtrail_store_records_pruned_total").increment(removed);
        tracing::info!(
            tenant,
            before,
            removed,
            seconds = started.elapsed().as_secs_f64(),
            "records removed by retention"
        );
        Ok(())
    }

    /// Deletes the `ids` rows of `ids` that still name a record before `before` (an id
    /// can be used again once its record is removed).
    async fn delete_ids(
        &self,
        tenant: &str,
        before: u64,
        ids: Vec<(String, u64)>,
        stamp: i64,
    ) -> StoreResult<()> {
        let mut by_shard: HashMap<i64, Vec<String>> = HashMap::new();
        for (id, _) in ids {
            by_shard.entry(id_bucket(&id)).or_default().push(id);
        }
        let session = &self.session;
        let mut writes = Vec::new();
        for (shard, mut wanted) in by_shard {
            wanted.sort_unstable();
            wanted.dedup();
            for chunk in wanted.chunks(ROWS_PER_BATCH) {
                let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let stored = session
                    .execute_unpaged(&self.stmts.select_event_ids, (tenant, shard, names))
                    .await
                    .map_err(unavailable)?
                    .into_rows_result()
                    .map_err(unavailable)?
                    .rows::<(String, i64)>()
                    .map_err(unavailable)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unavailable)?;
                let doomed: Vec<String> = stored
                    .into_iter()
                    .filter(|(_, seq)| (*seq as u64) < before)
                    .map(|(id, _)| id)
                    .collect();
                if doomed.is_empty() {
                    continue;
                }
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(doomed.len());
                for id in doomed {
                    batch.append_statement(self.stmts.delete_event_id.clone());
                    values.push((stamp, tenant.to_string(), shard, id));
                }
                writes.push(async move { session.batch(&batch, values).await });
            }
        }
        run_bounded(writes, WRITE_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Takes `removed` (records of block `b`, before `before`, not emptied yet) out of
    /// the block's facet rows: a block that keeps records (and is complete, so has rows)
    /// gets its rows written anew from them; the rows of values only removed records had
    /// are deleted.
    async fn remove_facets(
        &self,
        tenant: &str,
        b: u64,
        before: u64,
        head: u64,
        removed: &[Record],
        stamp: i64,
    ) -> StoreResult<()> {
        let group = (b >> GROUP_BITS) as i64;
        let block_end = (b + 1) * BLOCK;
        let kept = if block_end >= before && block_end <= head {
            let mut records = self.block_records(tenant, b).await?;
            for (i, r) in records.iter_mut().enumerate() {
                if b * BLOCK + 1 + (i as u64) < before {
                    *r = None;
                }
            }
            let rows = block_rows(&records);
            self.write_block(tenant, b, &rows, stamp).await?;
            rows
        } else {
            Default::default()
        };
        let mut gone: Vec<(i32, String)> = removed
            .iter()
            .flat_map(|r| values(r).map(|(k, v)| (k, v.to_string())))
            .filter(|key| !kept.contains_key(key))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        let mut by_kind: HashMap<i32, Vec<String>> = HashMap::new();
        for (kind, value) in gone {
            by_kind.entry(kind).or_default().push(value);
        }
        let session = &self.session;
        let mut writes = Vec::new();
        for (kind, values) in &by_kind {
            for chunk in values.chunks(100) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut rows = Vec::with_capacity(chunk.len());
                for value in chunk {
                    batch.append_statement(self.stmts.delete_facet.clone());
                    rows.push((stamp, tenant, *kind, group, value.as_str(), b as i64));
                }
                writes.push(async move { session.batch(&batch, rows).await });
            }
        }
        run_bounded(writes, WRITE_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Empties the `events` rows at `seqs` but their sequence number and hash.
    async fn empty_rows(&self, tenant: &str, seqs: impl Iterator<Item = u64>) -> StoreResult<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(i64::MAX, |d| d.as_micros() as i64);
        let mut by_bucket: HashMap<i64, Vec<u64>> = HashMap::new();
        for seq in seqs {
            by_bucket.entry(bucket(seq)).or_default().push(seq);
        }
        let session = &self.session;
        let mut writes = Vec::new();
        for (b, seqs) in &by_bucket {
            for chunk in seqs.chunks(ROWS_PER_BATCH) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for seq in chunk {
                    batch.append_statement(self.stmts.shell_event.clone());
                    values.push((now, tenant, *b, *seq as i64));
                }
                writes.push(async move { session.batch(&batch, values).await });
            }
        }
        run_bounded(writes, WRITE_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Every tenant with a record (the `heads` rows of every log partition).
    pub(crate) async fn all_tenants(&self) -> StoreResult<Vec<String>> {
        let cql = format!("SELECT tenant_id FROM {}.heads", self.keyspace);
        let mut statement = scylla::statement::unprepared::Statement::new(cql);
        statement.set_page_size(5000);
        let mut rows = self
            .session
            .query_iter(statement, ())
            .await
            .map_err(unavailable)?
            .rows_stream::<(Option<String>,)>()
            .map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            // A partition with no tenant yet has one row of static columns only.
            if let (Some(tenant),) = row.map_err(unavailable)? {
                out.push(tenant);
            }
        }
        Ok(out)
    }

    pub(crate) async fn policies(&self) -> StoreResult<Vec<(String, RetentionPolicy)>> {
        let cql = format!(
            "SELECT tenant_id, days, events FROM {}.retention_policies",
            self.keyspace
        );
        let mut rows = self
            .session
            .query_iter(cql, ())
            .await
            .map_err(unavailable)?
            .rows_stream::<(String, Option<i32>, Option<i64>)>()
            .map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            let (tenant, days, events) = row.map_err(unavailable)?;
            let policy =
                RetentionPolicy {
                    days: days.map(u32::try_from).transpose().map_err(|_| {
                        corrupt(format!("tenant {tenant}: negative retention days"))
                    })?,
                    events: events.map(u64::try_from).transpose().map_err(|_| {
                        corrupt(format!("tenant {tenant}: negative retention events"))
                    })?,
                };
            out.push((tenant, policy));
        }
        Ok(out)
    }

    pub(crate) async fn set_policy(
        &self,
        tenant: &str,
        policy: Option<RetentionPolicy>,
    ) -> StoreResult<()> {
        let ks = &self.keyspace;
        match policy {
            Some(p) => self
                .session
                .query_unpaged(
                    format!(
                        "INSERT INTO {ks}.retention_policies (tenant_id, days, events) VALUES (?, ?, ?)"
                    ),
                    (
                        tenant,
                        p.days.map(|d| d as i32),
                        p.events.map(|e| e.min(i64::MAX as u64) as i64),
                    ),
                )
                .await
                .map_err(unavailable)?,
            None => self
                .session
                .query_unpaged(
                    format!("DELETE FROM {ks}.retention_policies WHERE tenant_id = ?"),
                    (tenant,),
                )
                .await
                .map_err(unavailable)?,
        };
        Ok(())
    }

    /// Takes or renews the lease `name` for `holder` for `ttl` (a conditional write):
    /// whether `holder` has it now.
    pub(crate) async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let ks = &self.keyspace;
        let ttl = ttl.as_secs().clamp(1, 630_720_000) as i32;
        let taken = self
            .session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.leases (name, holder) VALUES (?, ?) IF NOT EXISTS USING TTL ?"
                ),
                (name, holder, ttl),
            )
            .await
            .map_err(unavailable)?;
        if crate::fence::applied(taken).map_err(unavailable)? {
            return Ok(true);
        }
        let renewed = self
            .session
            .query_unpaged(
                format!(
                    "UPDATE {ks}.leases USING TTL ? SET holder = ? WHERE name = ? IF holder = ?"
                ),
                (ttl, holder, name, holder),
            )
            .await
            .map_err(unavailable)?;
        crate::fence::applied(renewed).map_err(unavailable)
    }
}
