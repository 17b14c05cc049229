//! The write path. One append, per attempt:
//!
//! 1. **Where is each tenant?** Its head comes from this handle's cache (heads it committed
//!    itself) or a read (at the configured consistency for a fenced handle: its claim
//!    completed every conditional write in flight, and a stale view only costs a refused
//!    batch below; serial for an unfenced one). The append rule (`sealtrail_store::rule`,
//!    shared with the embedded stores) then judges the batch: records at or below the head
//!    must equal the stored ones (a replay: skipped), the first new one must follow and
//!    link to the head, and no new client id may be committed already. A fork, gap, broken
//!    link or duplicate id is refused (`Refused`) before anything is written.
//! 2. **Records.** The records beyond the head go to `events`, as one unlogged batch per
//!    tenant bucket, written with the epoch as timestamp. They are invisible: every read
//!    stops at the committed head.
//! 3. **Commit.** Per log partition, one conditional batch moves every tenant's head from
//!    the head read in (1) to its last record, and (for a fenced handle) requires the
//!    partition's epoch to be unchanged. Applied: committed, durable and readable.
//!    Not applied: someone moved a head or claimed the partition — reread (a newer epoch
//!    means `Fenced`).
//! 4. **Derived rows** (the id index and the Merkle tree, `derive.rs`): handed to the
//!    deriver, which writes them behind the acknowledgement (a fenced handle), or written
//!    now (an unfenced one). Until they are written, reads consult the committed records.
//! 5. **Receipts**, only after the heads moved: a receipt never names an uncommitted event.
//!
//! Crash windows: a crash in (2) or before (3) leaves invisible rows that the next attempt
//! (a replay from the log) overwrites with identical bytes. A crash or timeout in (3) has an
//! unknown outcome; the caller resubmits the same batch and (1) sees either the old head
//! (commit again) or the new one (a replay: nothing left to write but (4) and (5), which
//! are done again). A crash before (4) completes leaves committed records past the
//! tenant's watermark: readers consult them directly, and the partition's next owner
//! derives them before its first append. A crash before (5) leaves a committed batch
//! without receipts; the log redelivers it (its offset is committed after this returns),
//! the replay finds the events committed and writes them.

use std::collections::HashMap;

use scylla::statement::batch::{Batch, BatchType};
use sealtrail_core::record::{ChainHead, ChainedRecord};
use sealtrail_store::rule;
use sealtrail_store::{CommitBatch, StoreError, StoreResult};

use crate::fence::applied;
use crate::schema::{bucket, id_bucket};
use crate::{ScyllaStore, run_bounded, unavailable};

/// Concurrent row writes per append.
const WRITE_CONCURRENCY: usize = 64;
/// Rereads after a refused conditional batch before giving up with `Unavailable`.
const ATTEMPTS: usize = 5;

struct Pending<'a> {
    tenant: &'a str,
    /// The head the conditional batch expects (`None`: the tenant has no record yet).
    expected: Option<ChainHead>,
    records: &'a [&'a ChainedRecord],
}

impl ScyllaStore {
    pub(crate) async fn append_batch(&self, batch: &CommitBatch) -> StoreResult<()> {
        let groups = rule::group_by_tenant(&batch.records)?;
        if groups.is_empty() && !batch.tree_nodes.is_empty() {
            // Nodes alone: a chain stored without them being backfilled.
            let nodes = crate::derive::Item {
                ids: Vec::new(),
                nodes: batch.tree_nodes.clone(),
                erasures: Vec::new(),
                prunes: Vec::new(),
            };
            self.write_derived(&[nodes]).await?;
        }
        let mut committed = false;
        for _ in 0..ATTEMPTS {
            if self.append_attempt(&groups).await? {
                committed = true;
                break;
            }
        }
        if !committed {
            return Err(StoreError::Unavailable(
                "chain heads kept moving under this writer; retry".into(),
            ));
        }
        // (4) every record of the batch is committed now (by this attempt or an earlier
        // one whose answer was lost): derive them all.
        if !groups.is_empty() {
            self.derive(batch).await?;
        }
        self.write_receipts(batch).await
    }

    /// One pass of steps 1–3; `Ok(false)` when a conditional batch was refused for a moved
    /// head (reread and try again).
    async fn append_attempt(&self, groups: &[(&str, Vec<&ChainedRecord>)]) -> StoreResult<bool> {
        // (1)
        let unknown: Vec<String> = {
            let cache = self.heads.lock().expect("heads lock");
            groups
                .iter()
                .filter(|(t, _)| !cache.contains_key(*t))
                .map(|(t, _)| t.to_string())
                .collect()
        };
        let mut fetched = if unknown.is_empty() {
            HashMap::new()
        } else {
            self.read_heads(&unknown, self.epoch.is_none()).await?
        };
        let mut pending = Vec::new();
        for (tenant, records) in groups {
            let head = match fetched.remove(*tenant) {
                Some(h) => Some(h),
                None => self.heads.lock().expect("heads lock").get(*tenant).cloned(),
            };
            let overlap = rule::split_at_head(head.as_ref(), records)?;
            if overlap > 0 {
                self.check_replay(tenant, &records[..overlap]).await?;
            }
            let rest = &records[overlap..];
            if rest.is_empty() {
                continue;
            }
            let stored = head.as_ref().map_or(0, |h| h.sequence_number);
            self.check_new_ids(tenant, stored, rest).await?;
            pending.push(Pending {
                tenant,
                expected: head,
                records: rest,
            });
        }
        if pending.is_empty() {
            return Ok(true);
        }

        // (2) records.
        self.write_rows(&pending).await?;

        // (3) one conditional batch per log partition.
        let mut by_partition: HashMap<i32, Vec<&Pending>> = HashMap::new();
        for p in &pending {
            by_partition
                .entry(self.partition_of(p.tenant))
                .or_default()
                .push(p);
        }
        let mut all_applied = true;
        for (partition, group) in by_partition {
            // Unknown until the batch answers: drop the cached heads first.
            {
                let mut cache = self.heads.lock().expect("heads lock");
                for p in &group {
                    cache.remove(p.tenant);
                }
            }
            let mut lwt = Batch::new(BatchType::Logged);
            let mut values: Vec<AdvanceValues> = Vec::with_capacity(group.len() + 1);
            if let Some(epoch) = &self.epoch {
                if epoch.partition as i32 != partition {
                    return Err(StoreError::Fatal(format!(
                        "this writer holds partition {}, not partition {partition}: a tenant of \
                         the batch belongs to another log partition (do the gateways and the \
                         chainers agree on the partition count?)",
                        epoch.partition
                    )));
                }
                lwt.append_statement(self.stmts.guard_epoch.clone());
                values.push(AdvanceValues::Guard(
                    epoch.owner.clone(),
                    partition,
                    epoch.epoch,
                ));
            }
            for p in &group {
                let last = p.records.last().expect("non-empty");
                lwt.append_statement(self.stmts.advance_head.clone());
                values.push(AdvanceValues::Advance(
                    last.record.sequence_number as i64,
                    last.record.hash.clone(),
                    partition,
                    p.tenant.to_string(),
                    p.expected.as_ref().map(|h| h.sequence_number as i64),
                ));
            }
            let result = self
                .session
                .batch(&lwt, values)
                .await
                .map_err(unavailable)?;
            if applied(result)? {
                let mut cache = self.heads.lock().expect("heads lock");
                for p in &group {
                    cache.insert(
                        p.tenant.to_string(),
                        p.records.last().expect("non-empty").head(),
                    );
                }
            } else {
                if let Some(epoch) = &self.epoch {
                    let current = self.current_epoch(epoch.partition).await?;
                    if current.as_ref().map(|(e, _)| *e) != Some(epoch.epoch) {
                        let (newer, owner) = current.unwrap_or_default();
                        return Err(StoreError::Fenced(format!(
                            "partition {partition} was claimed by {owner} (epoch {newer}; this writer holds {})",
                            epoch.epoch
                        )));
                    }
                }
                all_applied = false;
            }
        }
        Ok(all_applied)
    }

    /// Step (2): the records, as unlogged batches that each stay in one partition (an
    /// `events` bucket of one tenant).
    async fn write_rows(&self, pending: &[Pending<'_>]) -> StoreResult<()> {
        let timestamp = self.row_timestamp();
        let mut events: HashMap<(&str, i64), Vec<&ChainedRecord>> = HashMap::new();
        for r in pending.iter().flat_map(|p| p.records.iter()) {
            events
                .entry((
                    r.record.tenant_id.as_str(),
                    bucket(r.record.sequence_number),
                ))
                .or_default()
                .push(r);
        }
        let session = &self.session;
        let mut event_batches = Vec::new();
        for ((tenant, bucket), records) in &events {
            for chunk in chunks(records) {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for r in chunk {
                    batch.append_statement(self.stmts.insert_event.clone());
                    values.push((
                        *tenant,
                        *bucket,
                        r.record.sequence_number as i64,
                        r.record.id.as_str(),
                        r.record.hash.as_str(),
                        r.input_digest.as_str(),
                        r.canonical.as_slice(),
                        timestamp,
                    ));
                }
                event_batches.push(async move { session.batch(&batch, values).await });
            }
        }
        run_bounded(event_batches, WRITE_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Records at or below the stored head must be the stored ones (judged by the rule).
    async fn check_replay(&self, tenant: &str, records: &[&ChainedRecord]) -> StoreResult<()> {
        let first = records[0].record.sequence_number;
        let last = records.last().expect("non-empty").record.sequence_number;
        let stored = self.read_range(tenant, first, last).await?;
        let by_seq: HashMap<u64, &str> = stored
            .iter()
            .map(|(row, _)| (row.sequence_number, row.hash.as_str()))
            .collect();
        for r in records {
            rule::check_replayed(r, by_seq.get(&r.record.sequence_number).copied())?;
        }
        Ok(())
    }

    /// No new record may reuse a client id committed at or below the head `stored`
    /// (found by [`ScyllaStore::committed_ids`]: the id index, plus what is not derived yet).
    async fn check_new_ids(
        &self,
        tenant: &str,
        stored: u64,
        records: &[&ChainedRecord],
    ) -> StoreResult<()> {
        if stored == 0 {
            return Ok(());
        }
        let ids: Vec<&str> = records
            .iter()
            .filter(|r| r.client_id)
            .map(|r| r.record.id.as_str())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let found = self.committed_ids(tenant, stored, None, &ids).await?;
        for record in records.iter().filter(|r| r.client_id) {
            if let Some(seq) = found.get(record.record.id.as_str()) {
                rule::check_new_id(record, Some(*seq))?;
            }
        }
        Ok(())
    }

    async fn write_receipts(&self, batch: &CommitBatch) -> StoreResult<()> {
        if batch.receipts.is_empty() {
            return Ok(());
        }
        let mut bodies = Vec::with_capacity(batch.receipts.len());
        for (tenant, receipt) in &batch.receipts {
            let mut receipt = receipt.clone();
            batch.stamp(&mut receipt);
            let body = serde_json::to_string(&receipt).map_err(crate::corrupt)?;
            bodies.push((tenant.as_str(), receipt.receipt_id, body));
        }
        // One unlogged batch per `(tenant, bucket)` partition (a few per chainer batch),
        // split to stay under the servers' batch size limit; a receipt too large for a
        // batch (thousands of ids) is written alone.
        let mut groups: HashMap<(&str, i64), Vec<(&str, &str)>> = HashMap::new();
        for (tenant, id, body) in &bodies {
            groups
                .entry((*tenant, id_bucket(id)))
                .or_default()
                .push((id.as_str(), body.as_str()));
        }
        const MAX_BYTES: usize = 32 * 1024;
        let session = &self.session;
        let mut writes = Vec::new();
        for ((tenant, bucket), rows) in &groups {
            let mut start = 0;
            while start < rows.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < rows.len() && (end == start || bytes + rows[end].1.len() <= MAX_BYTES) {
                    bytes += rows[end].1.len() + 64;
                    end += 1;
                }
                let chunk = &rows[start..end];
                start = end;
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(chunk.len());
                for (id, body) in chunk {
                    batch.append_statement(self.stmts.insert_receipt.clone());
                    values.push((*tenant, *bucket, *id, *body));
                }
                writes.push(async move {
                    if values.len() == 1 {
                        session
                            .execute_unpaged(&self.stmts.insert_receipt, values[0])
                            .await
                    } else {
                        session.batch(&batch, values).await
                    }
                });
            }
        }
        run_bounded(writes, WRITE_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Splits a partition's rows into batches small enough for the servers' batch size limits
/// (Cassandra refuses batches over 50 KiB by default; this stays under 32 KiB).
fn chunks<'a>(records: &'a [&'a ChainedRecord]) -> Vec<&'a [&'a ChainedRecord]> {
    const MAX_BYTES: usize = 32 * 1024;
    const MAX_ROWS: usize = 200;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let size = r.canonical.len() + 256;
        if i > start && (bytes + size > MAX_BYTES || i - start >= MAX_ROWS) {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// Values of the statements of a conditional batch (they differ in shape).
enum AdvanceValues {
    Guard(String, i32, i64),
    Advance(i64, String, i32, String, Option<i64>),
}

impl scylla::serialize::row::SerializeRow for AdvanceValues {
    fn serialize(
        &self,
        ctx: &scylla::serialize::row::RowSerializationContext<'_>,
        writer: &mut scylla::serialize::writers::RowWriter,
    ) -> Result<(), scylla::serialize::SerializationError> {
        match self {
            AdvanceValues::Guard(owner, partition, epoch) => {
                (owner, partition, epoch).serialize(ctx, writer)
            }
            AdvanceValues::Advance(seq, hash, partition, tenant, expected) => {
                (seq, hash, partition, tenant, expected).serialize(ctx, writer)
            }
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}
