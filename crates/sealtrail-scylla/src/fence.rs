//! Partition epochs: how a stale ("zombie") chainer is kept from writing.
//!
//! A chainer that is assigned a log partition first *claims* it: it reads the partition's
//! `epoch` (static column of its `heads` partition) and raises it by one with a conditional
//! write. Every later append of that chainer advances its tenants' heads in a conditional
//! batch that also requires `epoch` to be unchanged, so once a newer chainer has claimed the
//! partition, the old one's appends are refused ([`StoreError::Fenced`]) and commit
//! nothing. Record rows are written before that batch, with the epoch as their write
//! timestamp, so the rows a zombie writes lose to the current owner's rows whatever the
//! order they arrive in (and are invisible anyway until a head covers them).
//!
//! **Derived rows and removals** (`derive.rs`, `facets.rs`, `retention.rs`) are written
//! behind the acknowledgement, so the conditional batch cannot fence them; their write
//! timestamps do. A claim stores `claimed_at`, the base of the epoch's timestamps: the
//! claimer's clock in microseconds, but at least the previous claim's plus [`CLAIM_SPAN`].
//! A handle writes the `ids` and `facets` rows it derives at `claimed_at + 2k + 1` and the
//! rows and tombstones of its `k`-th removal (an erasure or a prune, `k ≥ 1`) at
//! `claimed_at + 2k` ([`Stamps`]); `2k + 1` stays below [`CLAIM_SPAN`]. So:
//! - every write of an older epoch loses to every write of a newer one, in whatever order
//!   they reach the node: a zombie's late facet rows, read before the new owner erased or
//!   removed a record, cannot put its values back in the filter index, nor its id back in
//!   `ids`;
//! - within an epoch, a removal wins over the rows derived before it, and rows derived
//!   after it win over its tombstones (an id used again after its record was removed).
//!
//! Record rows keep their small epoch-based timestamps, and an erasure's rewrite of a
//! record row uses the present (above all of them); the watermark and the retention
//! boundary use their own values (`schema.rs`). Tree nodes and receipts are never removed.
//!
//! An *unfenced* handle (no claim: tests, tools) writes its rows with one fixed timestamp,
//! so it must be the only writer of its tenants: two unfenced writers racing for the same
//! sequence numbers could overwrite each other's rows before one head update wins. Every
//! chainer is fenced.
//!
//! [`StoreError::Fenced`]: sealtrail_store::StoreError::Fenced

use std::sync::atomic::{AtomicI64, Ordering};

use scylla::value::Row;
use sealtrail_store::{StoreError, StoreResult};

use crate::{ScyllaError, ScyllaStore};

/// Microseconds of write timestamps one claim may use (about 4.2 s): the next claim's
/// base is at least this far above. Enough for 2,097,151 removals per claim (a chainer
/// process); a handle that used them all fails its removals until it is restarted.
pub const CLAIM_SPAN: i64 = 1 << 22;

/// The write timestamps of a handle's derived rows and removals (see the module doc).
///
/// The order "a removal wins over rows derived before it, rows derived after it win over
/// the removal" holds because one tenant's derivations and removals never overlap in a
/// handle: its deriver task runs them one after another, and a catch-up runs each tenant
/// in turn (tenants run side by side, but their rows never share a key, so their stamps
/// may interleave).
#[derive(Debug)]
pub(crate) struct Stamps {
    base: i64,
    /// Removals so far (`k` of the last one).
    removals: AtomicI64,
}

impl Stamps {
    /// A claim's stamps, from its `claimed_at`.
    pub(crate) fn claimed(base: i64) -> Self {
        Self {
            base,
            removals: AtomicI64::new(0),
        }
    }

    /// An unfenced handle's: based on the present (it must be its tenants' only writer).
    pub(crate) fn unfenced() -> Self {
        Self::claimed(now_micros())
    }

    /// The timestamp of derived rows written now: above every removal so far, below the
    /// next one. Taken before the rows' inputs are read.
    pub(crate) fn derived(&self) -> i64 {
        self.base + 2 * self.removals.load(Ordering::SeqCst) + 1
    }

    /// The timestamp of a new removal's rows and tombstones.
    pub(crate) fn removal(&self) -> StoreResult<i64> {
        // Counted only when it fits: `derived` must stay within the span too.
        let k = self
            .removals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| {
                (2 * (k + 1) + 1 < CLAIM_SPAN).then_some(k + 1)
            })
            .map_err(|made| {
                StoreError::Fatal(format!(
                    "this chainer made {made} erasures and removals since it claimed its log \
                     partition, the most one claim's write timestamps allow; restart it (it \
                     then claims the partition anew)"
                ))
            })?
            + 1;
        Ok(self.base + 2 * k)
    }
}

/// The present, in microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `claimed_at` of a new claim: the present, but at least [`CLAIM_SPAN`] above the
/// previous claim's (so every timestamp of the previous epoch is below every one of this).
pub(crate) fn next_claim_base(previous: Option<i64>, now: i64) -> i64 {
    previous.map_or(now, |p| now.max(p.saturating_add(CLAIM_SPAN)))
}

/// A chainer's claim on one log partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub partition: u32,
    pub epoch: i64,
    /// Who claimed it (host and process), for operators reading the table.
    pub owner: String,
}

/// `[applied]` of a conditional statement: the first column of the first row (Cassandra
/// sends only that column; Scylla adds the current values).
pub(crate) fn applied(
    result: scylla::response::query_result::QueryResult,
) -> Result<bool, ScyllaError> {
    let rows = result.into_rows_result().map_err(|e| {
        ScyllaError::Unavailable(format!("conditional write without a result: {e}"))
    })?;
    let row: Option<Row> = rows
        .maybe_first_row::<Row>()
        .map_err(|e| ScyllaError::Unavailable(e.to_string()))?;
    match row.and_then(|r| r.columns.into_iter().next().flatten()) {
        Some(scylla::value::CqlValue::Boolean(b)) => Ok(b),
        other => Err(ScyllaError::Unavailable(format!(
            "unexpected [applied] column: {other:?}"
        ))),
    }
}

impl ScyllaStore {
    /// The partition's current epoch and owner (a serial read).
    pub async fn current_epoch(
        &self,
        partition: u32,
    ) -> Result<Option<(i64, String)>, ScyllaError> {
        Ok(self
            .current_claim(partition)
            .await?
            .map(|(epoch, owner, _)| (epoch, owner)))
    }

    /// The partition's current epoch, owner and `claimed_at` (a serial read).
    async fn current_claim(
        &self,
        partition: u32,
    ) -> Result<Option<(i64, String, Option<i64>)>, ScyllaError> {
        let result = self
            .session
            .execute_unpaged(&self.stmts.select_epoch, (partition as i32,))
            .await
            .map_err(ScyllaError::from_execution)?;
        let rows = result
            .into_rows_result()
            .map_err(|e| ScyllaError::Unavailable(e.to_string()))?;
        let row = rows
            .maybe_first_row::<(Option<i64>, Option<String>, Option<i64>)>()
            .map_err(|e| ScyllaError::Unavailable(e.to_string()))?;
        Ok(row.and_then(|(epoch, owner, claimed_at)| {
            epoch.map(|e| (e, owner.unwrap_or_default(), claimed_at))
        }))
    }

    /// Claims `partition` for `owner` with a new epoch and returns a handle whose appends
    /// are fenced by it. Any handle holding an older epoch of the partition can no longer
    /// commit. A lost race with another claimer is retried.
    pub async fn fenced(&self, partition: u32, owner: &str) -> Result<ScyllaStore, ScyllaError> {
        if partition >= self.log_partitions {
            return Err(ScyllaError::Config(format!(
                "partition {partition} out of range: the keyspace has {} log partitions",
                self.log_partitions
            )));
        }
        for _ in 0..20 {
            let claim = self.current_claim(partition).await?;
            let current = claim.as_ref().map(|(e, _, _)| *e);
            let next = current.unwrap_or(0) + 1;
            let base = next_claim_base(claim.and_then(|(_, _, at)| at), now_micros());
            let result = self
                .session
                .execute_unpaged(
                    &self.stmts.claim_epoch,
                    (next, owner, base, partition as i32, current),
                )
                .await
                .map_err(ScyllaError::from_execution)?;
            if applied(result)? {
                tracing::info!(partition, epoch = next, owner, "claimed log partition");
                let mut handle = ScyllaStore {
                    epoch: Some(Epoch {
                        partition,
                        epoch: next,
                        owner: owner.to_string(),
                    }),
                    heads: Default::default(),
                    deriver: None,
                    stamps: std::sync::Arc::new(Stamps::claimed(base)),
                    // Tests: a claim made while this handle holds its facet writes
                    // shares the hold (`facets.rs`).
                    hold: if self.hold.is_on() {
                        self.hold.clone()
                    } else {
                        Default::default()
                    },
                    ..self.clone()
                };
                // Complete the derived rows of what earlier owners committed before this
                // handle appends (its deriver's `pending` covers only its own appends).
                handle.catch_up(partition).await.map_err(|e| {
                    ScyllaError::Unavailable(format!(
                        "partition {partition}: deriving rows past the watermark: {e}"
                    ))
                })?;
                handle.deriver = Some(crate::derive::Deriver::start(handle.clone()));
                return Ok(handle);
            }
        }
        Err(ScyllaError::Unavailable(format!(
            "could not claim partition {partition}: other claimers keep winning"
        )))
    }

    /// Whether this handle's claim is still the partition's newest (a plain read at the
    /// configured consistency; an unfenced handle always is). A deposed owner's deriver
    /// stops writing (`derive.rs`).
    pub(crate) async fn still_owner(&self) -> sealtrail_store::StoreResult<bool> {
        let Some(mine) = &self.epoch else {
            return Ok(true);
        };
        let row = self
            .one_row::<(Option<i64>,)>(&self.stmts.select_epoch_plain, (mine.partition as i32,))
            .await?;
        Ok(row.and_then(|(e,)| e).is_none_or(|e| e <= mine.epoch))
    }

    /// The epoch this handle holds, if it is fenced.
    pub fn epoch(&self) -> Option<&Epoch> {
        self.epoch.as_ref()
    }

    /// Write timestamp of derived `ids` and `facets` rows written now (see the module doc).
    pub(crate) fn derived_timestamp(&self) -> i64 {
        self.stamps.derived()
    }

    /// Tests: uses up this claim's removal timestamps (as 2,097,151 erasures would).
    #[doc(hidden)]
    pub fn use_up_removal_stamps(&self) {
        self.stamps
            .removals
            .store(CLAIM_SPAN / 2 - 1, Ordering::SeqCst);
    }

    /// Write timestamp of a new removal (erasure or prune) of derived rows.
    pub(crate) fn removal_timestamp(&self) -> StoreResult<i64> {
        self.stamps.removal()
    }

    /// Write timestamp of record rows: a newer epoch's rows win over an older one's.
    pub(crate) fn row_timestamp(&self) -> i64 {
        self.epoch.as_ref().map_or(1, |e| e.epoch + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claims_base_is_the_present_but_a_span_above_the_last() {
        assert_eq!(next_claim_base(None, 1_000), 1_000);
        assert_eq!(next_claim_base(Some(1_000), 2_000), 1_000 + CLAIM_SPAN);
        let later = 1_000 + CLAIM_SPAN + 5;
        assert_eq!(next_claim_base(Some(1_000), later), later);
        assert_eq!(next_claim_base(Some(i64::MAX), 0), i64::MAX);
    }

    #[test]
    fn every_stamp_of_an_epoch_is_below_every_stamp_of_the_next() {
        let base = 1_796_000_000_000_000;
        let old = Stamps::claimed(base);
        let new = Stamps::claimed(next_claim_base(Some(base), base + 10));
        let first_new = new.derived();
        let mut last = 0;
        for _ in 0..1_000 {
            let derived = old.derived();
            let removal = old.removal().unwrap();
            // A removal is above what was derived before it; what is derived after it is
            // above the removal.
            assert!(removal > derived && old.derived() > removal);
            last = old.derived();
        }
        assert!(last < first_new);
        assert!(new.removal().unwrap() > first_new);
    }

    #[test]
    fn a_claim_that_used_its_span_refuses_more_removals() {
        let stamps = Stamps::claimed(0);
        stamps.removals.store(CLAIM_SPAN / 2 - 2, Ordering::SeqCst);
        let last = stamps.removal().expect("the last one fits");
        assert!(last + 1 < CLAIM_SPAN && stamps.derived() < CLAIM_SPAN);
        let err = stamps.removal().unwrap_err();
        assert!(err.to_string().contains("restart"), "{err}");
        assert_eq!(
            stamps.derived(),
            last + 1,
            "a refused removal counts for nothing"
        );
    }
}
