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
//! An *unfenced* handle (no claim: tests, tools) writes its rows with one fixed timestamp,
//! so it must be the only writer of its tenants: two unfenced writers racing for the same
//! sequence numbers could overwrite each other's rows before one head update wins. Every
//! chainer is fenced.
//!
//! [`StoreError::Fenced`]: sealtrail_store::StoreError::Fenced

use scylla::value::Row;

use crate::{ScyllaError, ScyllaStore};

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
        let result = self
            .session
            .execute_unpaged(&self.stmts.select_epoch, (partition as i32,))
            .await
            .map_err(ScyllaError::from_execution)?;
        let rows = result
            .into_rows_result()
            .map_err(|e| ScyllaError::Unavailable(e.to_string()))?;
        let row = rows
            .maybe_first_row::<(Option<i64>, Option<String>)>()
            .map_err(|e| ScyllaError::Unavailable(e.to_string()))?;
        Ok(row.and_then(|(epoch, owner)| epoch.map(|e| (e, owner.unwrap_or_default()))))
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
            let current = self.current_epoch(partition).await?.map(|(e, _)| e);
            let next = current.unwrap_or(0) + 1;
            let result = self
                .session
                .execute_unpaged(
                    &self.stmts.claim_epoch,
                    (next, owner, partition as i32, current),
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

    /// Write timestamp of record rows: a newer epoch's rows win over an older one's.
    pub(crate) fn row_timestamp(&self) -> i64 {
        self.epoch.as_ref().map_or(1, |e| e.epoch + 1)
    }
}
