//! Filtered lists without walking the chain: the `facets` table.
//!
//! A tenant's chain is cut into **blocks** of [`BLOCK`] records (sequence numbers
//! `b·BLOCK + 1 ..= (b+1)·BLOCK`). When a block is complete and derived, it gets one row
//! per filterable value it contains — kind 1 `actor.id`, 2 `action`, 3 `resource.id`,
//! 4 `actor.type`, 5 `outcome` — with the count of its records that have the value, their
//! offsets in the block (the *postings*, 2 bytes each) and their smallest and largest
//! `timestamp`; kind 0 (value `""`) is every record of the block, for time ranges (its
//! postings are empty, meaning all, unless some records are redacted: a redacted record
//! is in no row, so no filter finds it — issue 15, [`ScyllaStore::erase_facets`]). The
//! rows of a block are a pure function of its records, written once by whoever derives the
//! block's last record (again, identically, after a crash), before the tenant's watermark
//! moves past it (`derive.rs`).
//!
//! A filtered list reads, per filter, the `(block, count, min, max)` of its value — one
//! query per [`GROUP`] blocks, without the postings — and knows from them the `total` of
//! a one-filter list at once; more filters intersect the postings, and a time range reads
//! the records only of blocks whose timestamps straddle a bound. The page's records are
//! then read by position. Records past the last complete derived block (fewer than a
//! block plus the deriver's lag) are read and filtered directly.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use scylla::statement::batch::{Batch, BatchType};
use sealtrail_core::record::Record;
use sealtrail_store::{EventPage, EventQuery, StoreResult};

use crate::{ScyllaStore, corrupt, run_bounded, unavailable};

/// Records per facet block, as a power of two (1,024).
pub const BLOCK_BITS: u32 = 10;
pub const BLOCK: u64 = 1 << BLOCK_BITS;
/// Blocks per `facets` partition (per tenant and kind), as a power of two: 1,024 blocks,
/// about a million records.
pub const GROUP_BITS: u32 = 10;
pub const GROUP: u64 = 1 << GROUP_BITS;

const ROWS_PER_BATCH: usize = 100;
const MAX_BATCH_BYTES: usize = 32 * 1024;

/// Tests only: holds a handle's facet writes after their rows are computed (so after the
/// records were read), to replay a former owner's late write.
#[derive(Default)]
pub(crate) struct Hold {
    on: std::sync::Mutex<bool>,
    changed: tokio::sync::Notify,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Hold {
    pub(crate) fn is_on(&self) -> bool {
        *self.on.lock().expect("hold lock")
    }
}

/// A block's row of one value.
pub(crate) struct FacetRow {
    count: u32,
    postings: Vec<u16>,
    min_ts: String,
    max_ts: String,
}

/// A facet row ready to write: its value, the row and its postings as bytes.
type Encoded<'a> = (&'a str, &'a FacetRow, Vec<u8>);

/// The filterable values of a record, by kind (0: every record).
pub(crate) fn values(record: &Record) -> [(i32, &str); 6] {
    [
        (0, ""),
        (1, record.actor.id.as_str()),
        (2, record.action.as_str()),
        (3, record.resource.id.as_str()),
        (4, record.actor.actor_type.map_or("", |t| t.as_str())),
        (5, record.outcome.as_str()),
    ]
}

/// The facet rows of a complete block's `records` (in order; `None` where retention
/// removed the record). A redacted or removed record has no filterable values (no filter
/// finds it) and no timestamp: it is in no row.
pub(crate) fn block_rows(records: &[Option<Record>]) -> BTreeMap<(i32, String), FacetRow> {
    let mut by_value: BTreeMap<(i32, String), FacetRow> = BTreeMap::new();
    for (i, record) in records.iter().enumerate() {
        let Some(record) = record else { continue };
        if record.redacted.is_some() {
            continue;
        }
        for (kind, value) in values(record) {
            let entry = by_value
                .entry((kind, value.to_string()))
                .or_insert_with(|| FacetRow {
                    count: 0,
                    postings: Vec::new(),
                    min_ts: record.timestamp.clone(),
                    max_ts: record.timestamp.clone(),
                });
            entry.count += 1;
            entry.postings.push(i as u16);
            if record.timestamp < entry.min_ts {
                entry.min_ts = record.timestamp.clone();
            }
            if record.timestamp > entry.max_ts {
                entry.max_ts = record.timestamp.clone();
            }
        }
    }
    // Kind 0 lists its records only when some are missing (redacted): empty postings
    // there mean the whole block.
    if let Some(all) = by_value.get_mut(&(0, String::new()))
        && all.count as u64 == BLOCK
    {
        all.postings.clear();
    }
    by_value
}

/// The query's filters as `(kind, value)`; kind 0 when only a time range (or nothing) is
/// asked for.
fn filters(query: &EventQuery) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    if let Some(v) = &query.actor_id {
        out.push((1, v.clone()));
    }
    if let Some(v) = &query.action {
        out.push((2, v.clone()));
    }
    if let Some(v) = &query.resource_id {
        out.push((3, v.clone()));
    }
    if let Some(t) = query.actor_type {
        out.push((4, t.as_str().to_string()));
    }
    if let Some(o) = query.outcome {
        out.push((5, o.as_str().to_string()));
    }
    if out.is_empty() {
        out.push((0, String::new()));
    }
    out
}

impl ScyllaStore {
    /// Tests: while `hold` is on, this handle's facet writes wait after their rows are
    /// computed from the records read (a deposed owner's late write, replayed on demand).
    /// A handle claimed from this one meanwhile shares the hold (its catch-up's writes).
    #[doc(hidden)]
    pub fn hold_facet_writes(&self, hold: bool) {
        *self.hold.on.lock().expect("hold lock") = hold;
        self.hold.changed.notify_waiters();
    }

    /// Tests: facet writes of this handle waiting at the hold now.
    #[doc(hidden)]
    pub fn facet_writes_held(&self) -> usize {
        self.hold.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn hold_point(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let changed = self.hold.changed.notified();
            if !*self.hold.on.lock().expect("hold lock") {
                return;
            }
            self.hold.waiting.fetch_add(1, SeqCst);
            changed.await;
            self.hold.waiting.fetch_sub(1, SeqCst);
        }
    }

    /// Writes the facet rows of every block of `tenant` that ends in `first..=last` (the
    /// records a derivation covers). Reads the blocks' records back: a block spans many
    /// appends, and this keeps the deriver stateless.
    pub(crate) async fn write_facets(
        &self,
        tenant: &str,
        first: u64,
        last: u64,
        doomed: Option<&crate::derive::Doomed>,
    ) -> StoreResult<()> {
        // Block b ends at (b+1)·BLOCK.
        let lo = first.div_ceil(BLOCK).max(1);
        let hi = last / BLOCK;
        for end in lo..=hi {
            let b = end - 1;
            // Taken before the records are read: rows read before a removal (by this
            // handle, or a newer owner) lose to it, whenever they are written (`fence.rs`).
            let stamp = self.derived_timestamp();
            let mut records = self.block_records(tenant, b).await?;
            if let Some(doomed) = doomed {
                for (i, record) in records.iter_mut().enumerate() {
                    if doomed.contains(b * BLOCK + 1 + i as u64) {
                        *record = None;
                    }
                }
            }
            self.write_block(tenant, b, &block_rows(&records), stamp)
                .await?;
        }
        Ok(())
    }

    /// The records of `tenant`'s complete block `b`; `None` for a record retention removed
    /// (its row keeps the hash only, see `retention.rs`).
    pub(crate) async fn block_records(
        &self,
        tenant: &str,
        b: u64,
    ) -> StoreResult<Vec<Option<Record>>> {
        let rows = self
            .read_range(tenant, b * BLOCK + 1, (b + 1) * BLOCK)
            .await?;
        if rows.len() as u64 != BLOCK {
            return Err(corrupt(format!(
                "tenant {tenant}: block {b} has {} of its {BLOCK} records",
                rows.len()
            )));
        }
        rows.iter()
            .map(|(row, _)| {
                if row.canonical.is_empty() {
                    Ok(None)
                } else {
                    row.record().map(Some)
                }
            })
            .collect()
    }

    /// Writes the rows of block `b` (overwriting what is there, unless that was written at
    /// a later `stamp`: see `fence.rs`).
    pub(crate) async fn write_block(
        &self,
        tenant: &str,
        b: u64,
        by_value: &BTreeMap<(i32, String), FacetRow>,
        stamp: i64,
    ) -> StoreResult<()> {
        self.hold_point().await;
        let group = (b >> GROUP_BITS) as i64;
        let mut by_kind: HashMap<i32, Vec<Encoded>> = HashMap::new();
        for ((kind, value), row) in by_value {
            let bytes: Vec<u8> = row.postings.iter().flat_map(|p| p.to_be_bytes()).collect();
            by_kind
                .entry(*kind)
                .or_default()
                .push((value.as_str(), row, bytes));
        }
        let session = &self.session;
        let mut writes = Vec::new();
        for (kind, rows) in &by_kind {
            let mut start = 0;
            while start < rows.len() {
                let (mut end, mut bytes) = (start, 0);
                while end < rows.len()
                    && end - start < ROWS_PER_BATCH
                    && (end == start
                        || bytes + rows[end].2.len() + rows[end].0.len() < MAX_BATCH_BYTES)
                {
                    bytes += rows[end].2.len() + rows[end].0.len() + 80;
                    end += 1;
                }
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::with_capacity(end - start);
                for (value, row, postings) in &rows[start..end] {
                    batch.append_statement(self.stmts.insert_facet.clone());
                    values.push((
                        tenant,
                        *kind,
                        group,
                        *value,
                        b as i64,
                        row.count as i32,
                        postings.as_slice(),
                        row.min_ts.as_str(),
                        row.max_ts.as_str(),
                        stamp,
                    ));
                }
                start = end;
                writes.push(async move { session.batch(&batch, values).await });
            }
        }
        run_bounded(writes, 16).await.map_err(unavailable)?;
        Ok(())
    }

    /// Takes `record` (at `seq`, not erased yet) out of the facet rows of its block, as if
    /// it were redacted by `by`: its block's rows are written anew without it and the rows
    /// of values only it had are deleted. Nothing to do while the block is not complete
    /// (its rows are written when it is, from records that then include the erasure).
    /// Idempotent: run again after a crash, it writes the same rows.
    pub(crate) async fn erase_facets(
        &self,
        tenant: &str,
        seq: u64,
        record: &Record,
        by: &sealtrail_core::record::Redaction,
        stamp: i64,
    ) -> StoreResult<()> {
        let b = (seq - 1) / BLOCK;
        let head = self.committed_head(tenant).await?.unwrap_or(0);
        if (b + 1) * BLOCK > head {
            return Ok(());
        }
        let mut records = self.block_records(tenant, b).await?;
        let at = (seq - 1 - b * BLOCK) as usize;
        records[at] = Some(record.redact(by.clone()));
        let after = block_rows(&records);
        self.write_block(tenant, b, &after, stamp).await?;
        let group = (b >> GROUP_BITS) as i64;
        let gone: Vec<_> = values(record)
            .into_iter()
            .filter(|(kind, value)| !after.contains_key(&(*kind, value.to_string())))
            .map(|(kind, value)| {
                self.session.execute_unpaged(
                    &self.stmts.delete_facet,
                    (stamp, tenant, kind, group, value, b as i64),
                )
            })
            .collect();
        run_bounded(gone, 8).await.map_err(unavailable)?;
        Ok(())
    }

    /// A filtered page (see the module doc). `head` is the committed head, `derived` the
    /// tenant's watermark read before it, `retained_from` its retention boundary (the
    /// records before it, and their facet rows, are removed or being removed).
    pub(crate) async fn list_by_facets(
        &self,
        tenant: &str,
        query: &EventQuery,
        head: u64,
        derived: u64,
        retained_from: u64,
    ) -> StoreResult<EventPage> {
        let (limit, skip, after) = query.paging.window();
        let after = after.max(retained_from.saturating_sub(1));
        // Complete, derived blocks: 0..blocks.
        let blocks = derived.min(head) / BLOCK;
        let filters = filters(query);
        // Per filter: block → (count, min, max), without postings.
        let groups = blocks.div_ceil(GROUP);
        let mut per_filter: Vec<BTreeMap<u64, (u32, String, String)>> = Vec::new();
        for (kind, value) in &filters {
            let reads: Vec<_> = (0..groups)
                .map(|g| async move {
                    let mut out = Vec::new();
                    let mut rows = self
                        .session
                        .execute_iter(
                            self.stmts.select_facet_counts.clone(),
                            (tenant, *kind, g as i64, value.as_str()),
                        )
                        .await
                        .map_err(unavailable)?
                        .rows_stream::<(i64, i32, String, String)>()
                        .map_err(unavailable)?;
                    while let Some(row) = rows.next().await {
                        let (b, count, min, max) = row.map_err(unavailable)?;
                        out.push((b as u64, (count as u32, min, max)));
                    }
                    Ok::<_, sealtrail_store::StoreError>(out)
                })
                .collect();
            let rows: Vec<Vec<_>> = run_bounded(reads, 8).await?;
            per_filter.push(
                rows.into_iter()
                    .flatten()
                    .filter(|(b, _)| *b < blocks)
                    .collect(),
            );
        }
        // Blocks with a match for every filter, in order, skipping those wholly before
        // `after` or outside the time range.
        let (first, rest) = per_filter.split_first().expect("at least one filter");
        let from = query.from.as_deref();
        let to = query.to.as_deref();
        let mut total = 0u64;
        let mut events: Vec<Record> = Vec::new();
        for (&b, (count, min, max)) in first {
            let others: Option<Vec<&(u32, String, String)>> =
                rest.iter().map(|f| f.get(&b)).collect();
            let Some(others) = others else { continue };
            let (lo, hi) = others
                .iter()
                .fold((min.as_str(), max.as_str()), |(lo, hi), o| {
                    (lo.max(o.1.as_str()), hi.min(o.2.as_str()))
                });
            if from.is_some_and(|f| hi < f) || to.is_some_and(|t| lo > t) {
                continue; // no record of the block is in the time range
            }
            let block_last = (b + 1) * BLOCK;
            if block_last <= after {
                continue;
            }
            let whole_time = from.is_none_or(|f| lo >= f) && to.is_none_or(|t| hi <= t);
            let wanted = (events.len() as u64) < limit;
            if others.is_empty()
                && whole_time
                && b * BLOCK >= after
                && (!wanted || total + (*count as u64) <= skip)
            {
                // One filter, the whole block in range, and nothing of it on the page.
                total += *count as u64;
                continue;
            }
            // Read what the block holds: the postings, intersected, then the records
            // where a time bound or the page needs them.
            let seqs: Vec<u64> = self
                .block_matches(tenant, &filters, b)
                .await?
                .into_iter()
                .filter(|s| *s > after)
                .collect();
            if whole_time {
                // Every match counts; read only the ones on the page.
                let start = skip.saturating_sub(total) as usize;
                let room = limit.saturating_sub(events.len() as u64) as usize;
                total += seqs.len() as u64;
                if room > 0 && start < seqs.len() {
                    let end = seqs.len().min(start + room);
                    events.extend(self.records_at(tenant, &seqs[start..end]).await?);
                }
                continue;
            }
            for record in self.records_at(tenant, &seqs).await? {
                if !query.matches(&record) {
                    continue;
                }
                total += 1;
                if total > skip && (events.len() as u64) < limit {
                    events.push(record);
                }
            }
        }
        // The rest of the chain: past the last complete derived block.
        let mut at = (blocks * BLOCK + 1).max(after + 1);
        while at <= head {
            let to_seq = head.min(at + 4 * BLOCK - 1);
            for (row, _) in self.read_range(tenant, at, to_seq).await? {
                let record = row.record()?;
                if record.sequence_number <= after || !query.matches(&record) {
                    continue;
                }
                total += 1;
                if total > skip && (events.len() as u64) < limit {
                    events.push(record);
                }
            }
            at = to_seq + 1;
        }
        Ok(EventPage { events, total })
    }

    /// The sequence numbers of block `b` that match every filter (by postings).
    async fn block_matches(
        &self,
        tenant: &str,
        filters: &[(i32, String)],
        b: u64,
    ) -> StoreResult<Vec<u64>> {
        let group = (b >> GROUP_BITS) as i64;
        let mut set: Option<Vec<u16>> = None;
        for (kind, value) in filters {
            if *kind == 0 {
                continue;
            }
            let postings = self
                .postings(tenant, *kind, group, value, b)
                .await?
                .unwrap_or_default();
            set = Some(match set {
                None => postings,
                Some(prev) => prev
                    .into_iter()
                    .filter(|p| postings.binary_search(p).is_ok())
                    .collect(),
            });
        }
        let base = b * BLOCK + 1;
        let set = match set {
            Some(set) => set,
            // Only a time range: the block's records but the redacted ones.
            None => self
                .postings(tenant, 0, group, "", b)
                .await?
                .unwrap_or_else(|| (0..BLOCK as u16).collect()),
        };
        Ok(set.into_iter().map(|o| base + o as u64).collect())
    }

    /// The postings of one facet row; `None` if it has none (kind 0: the whole block).
    async fn postings(
        &self,
        tenant: &str,
        kind: i32,
        group: i64,
        value: &str,
        b: u64,
    ) -> StoreResult<Option<Vec<u16>>> {
        let row = self
            .one_row::<(Option<Vec<u8>>,)>(
                &self.stmts.select_facet_postings,
                (tenant, kind, group, value, b as i64),
            )
            .await?;
        Ok(row.and_then(|(p,)| p).filter(|p| !p.is_empty()).map(|p| {
            p.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect()
        }))
    }

    /// The committed records at `seqs` (sorted, within one block), in order.
    async fn records_at(&self, tenant: &str, seqs: &[u64]) -> StoreResult<Vec<Record>> {
        let (Some(&lo), Some(&hi)) = (seqs.first(), seqs.last()) else {
            return Ok(Vec::new());
        };
        // Dense: one range read; sparse: point reads.
        if seqs.len() as u64 * 4 > hi - lo {
            let wanted: std::collections::HashSet<u64> = seqs.iter().copied().collect();
            return self
                .read_range(tenant, lo, hi)
                .await?
                .into_iter()
                .filter(|(row, _)| wanted.contains(&row.sequence_number))
                .map(|(row, _)| row.record())
                .collect();
        }
        let reads: Vec<_> = seqs
            .iter()
            .map(|&seq| async move {
                let rows = self.read_range(tenant, seq, seq).await?;
                rows.into_iter()
                    .next()
                    .ok_or_else(|| corrupt(format!("tenant {tenant}: record {seq} is missing")))
                    .and_then(|(row, _)| row.record())
            })
            .collect();
        run_bounded(reads, 16).await
    }
}
