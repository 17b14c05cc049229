//! Reads. Everything a client sees stops at the tenant's committed head, so rows written
//! by an append that has not committed (yet, or ever) are never returned.

use std::collections::HashMap;

use futures::StreamExt;
use sealtrail_core::merkle::{Hash, NodeId};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::{ChainHead, Record};
use sealtrail_store::{ChainRow, EventPage, EventQuery, Paging, StoreResult, StoredEvent};

use crate::schema::{BUCKET_BITS, bucket, id_shard};
use crate::{ScyllaStore, corrupt, run_bounded, unavailable};

const READ_CONCURRENCY: usize = 32;
/// Records a filtered listing reads per request while it scans.
const SCAN_CHUNK: u64 = 4096;

impl ScyllaStore {
    /// Heads of `tenants` that have any record; `serial` reads see in-flight conditional
    /// writes (the chainer's view), otherwise the configured consistency is used.
    pub(crate) async fn read_heads(
        &self,
        tenants: &[String],
        serial: bool,
    ) -> StoreResult<HashMap<String, ChainHead>> {
        let statement = if serial {
            &self.stmts.select_head_serial
        } else {
            &self.stmts.select_head
        };
        let lookups: Vec<_> = tenants
            .iter()
            .map(|tenant| async move {
                let result = self
                    .session
                    .execute_unpaged(statement, (self.partition_of(tenant), tenant.as_str()))
                    .await
                    .map_err(unavailable)?;
                let row = result
                    .into_rows_result()
                    .map_err(unavailable)?
                    .maybe_first_row::<(Option<i64>, Option<String>)>()
                    .map_err(corrupt)?;
                Ok::<_, sealtrail_store::StoreError>(match row {
                    Some((Some(seq), Some(hash))) => Some((
                        tenant.clone(),
                        ChainHead {
                            sequence_number: seq as u64,
                            hash,
                        },
                    )),
                    _ => None,
                })
            })
            .collect();
        let heads: Vec<Option<(String, ChainHead)>> =
            run_bounded(lookups, READ_CONCURRENCY).await?;
        Ok(heads.into_iter().flatten().collect())
    }

    /// The committed head's sequence number of one tenant.
    pub(crate) async fn committed_head(&self, tenant: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .read_heads(&[tenant.to_string()], false)
            .await?
            .remove(tenant)
            .map(|h| h.sequence_number))
    }

    /// Stored rows of `tenant` with `from <= seq <= to`, in order, with their input digests
    /// (whatever is stored: callers clamp `to` at the committed head).
    pub(crate) async fn read_range(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<(ChainRow, String)>> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for b in bucket(from)..=bucket(to) {
            let lo = from.max((b as u64) << BUCKET_BITS) as i64;
            let hi = to.min(((b as u64 + 1) << BUCKET_BITS) - 1) as i64;
            let mut rows = self
                .session
                .execute_iter(self.stmts.select_rows.clone(), (tenant, b, lo, hi))
                .await
                .map_err(unavailable)?
                .rows_stream::<(i64, String, Vec<u8>, String)>()
                .map_err(unavailable)?;
            while let Some(row) = rows.next().await {
                let (seq, hash, canonical, digest) = row.map_err(unavailable)?;
                out.push((
                    ChainRow {
                        sequence_number: seq as u64,
                        hash,
                        canonical,
                    },
                    digest,
                ));
            }
        }
        Ok(out)
    }

    /// The committed events among `keys`.
    pub(crate) async fn find_committed(
        &self,
        keys: Vec<(String, String)>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut tenants: Vec<String> = keys.iter().map(|(t, _)| t.clone()).collect();
        tenants.sort();
        tenants.dedup();
        let heads = self.read_heads(&tenants, false).await?;
        let lookups: Vec<_> = keys
            .iter()
            .map(|(tenant, id)| {
                let head = heads.get(tenant).map_or(0, |h| h.sequence_number);
                async move {
                    if head == 0 {
                        return Ok(None);
                    }
                    self.committed_event(tenant, id, head).await
                }
            })
            .collect();
        let found: Vec<Option<StoredEvent>> = run_bounded(lookups, READ_CONCURRENCY).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn committed_event(
        &self,
        tenant: &str,
        id: &str,
        head: u64,
    ) -> StoreResult<Option<StoredEvent>> {
        let seq = self
            .one_row::<(i64,)>(&self.stmts.select_event_id, (tenant, id_shard(id), id))
            .await?;
        let Some((seq,)) = seq else { return Ok(None) };
        if seq as u64 > head {
            return Ok(None); // written by an append that has not committed
        }
        let row = self
            .one_row::<(i64, String, Vec<u8>, String, String)>(
                &self.stmts.select_row,
                (tenant, bucket(seq as u64), seq),
            )
            .await?;
        let Some((_, hash, canonical, input_digest, event_id)) = row else {
            return Err(sealtrail_store::StoreError::Corrupt(format!(
                "tenant {tenant}: committed record {seq} is missing"
            )));
        };
        if event_id != id {
            return Ok(None); // a stale id row from an append that never committed
        }
        let record = Record::from_canonical(&canonical, &hash)
            .map_err(|e| corrupt(format!("record {seq}: {e}")))?;
        Ok(Some(StoredEvent {
            record,
            input_digest,
        }))
    }

    pub(crate) async fn list(&self, tenant: &str, query: &EventQuery) -> StoreResult<EventPage> {
        let head = self.committed_head(tenant).await?.unwrap_or(0);
        let (limit, skip, after) = match query.paging {
            Paging::Page { page, page_size } => (
                page_size as u64,
                (page.max(1) as u64 - 1) * page_size as u64,
                0,
            ),
            Paging::After { after, page_size } => (page_size as u64, 0, after),
        };
        if !query.is_filtered() {
            // The chain is gapless: the head is the total and a page is a direct range.
            let start = after.max(skip) + 1;
            let end = head.min(start.saturating_add(limit).saturating_sub(1));
            let events = self
                .read_range(tenant, start, end)
                .await?
                .iter()
                .map(|(row, _)| row.record())
                .collect::<StoreResult<_>>()?;
            return Ok(EventPage {
                events,
                total: head,
            });
        }
        // Filters: scan the chain in order (bounded memory: one chunk at a time), count all
        // matches and keep the requested window.
        let mut total = 0u64;
        let mut events = Vec::new();
        let mut from = 1;
        while from <= head {
            let to = head.min(from + SCAN_CHUNK - 1);
            for (row, _) in self.read_range(tenant, from, to).await? {
                let record = row.record()?;
                if query.matches(&record) {
                    total += 1;
                    if record.sequence_number > after
                        && total > skip
                        && (events.len() as u64) < limit
                    {
                        events.push(record);
                    }
                }
            }
            from = to + 1;
        }
        Ok(EventPage { events, total })
    }

    /// Stored hashes of `ids` (complete nodes of the tenant's tree), in order.
    pub(crate) async fn read_nodes(
        &self,
        tenant: &str,
        ids: &[NodeId],
    ) -> StoreResult<Vec<Option<Hash>>> {
        let lookups: Vec<_> = ids
            .iter()
            .map(|id| async move {
                let row = self
                    .one_row::<(Vec<u8>,)>(
                        &self.stmts.select_node,
                        (
                            tenant,
                            id.level as i32,
                            (id.index >> BUCKET_BITS) as i64,
                            id.index as i64,
                        ),
                    )
                    .await?;
                row.map(|(bytes,)| {
                    Hash::try_from(bytes.as_slice())
                        .map_err(|_| corrupt("tree node is not 32 bytes"))
                })
                .transpose()
            })
            .collect();
        run_bounded(lookups, READ_CONCURRENCY).await
    }

    pub(crate) async fn read_receipt(
        &self,
        tenant: &str,
        receipt_id: &str,
    ) -> StoreResult<Option<Receipt>> {
        let row = self
            .one_row::<(String,)>(&self.stmts.select_receipt, (tenant, receipt_id))
            .await?;
        row.map(|(body,)| serde_json::from_str(&body).map_err(corrupt))
            .transpose()
    }
}
