//! Reads. Everything a client sees stops at the tenant's committed head, so rows written
//! by an append that has not committed (yet, or ever) are never returned.

use std::collections::HashMap;

use futures::StreamExt;
use sealtrail_core::merkle::{Hash, NodeId, leaf_hash, node_hash, range_nodes, record_leaf};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::{ChainHead, Record};
use sealtrail_store::{ChainRow, EventPage, EventQuery, StoreResult, StoredEvent};

use crate::schema::{BUCKET_BITS, MIN_TREE_LEVEL, bucket, id_bucket, span};
use crate::{ScyllaStore, corrupt, run_bounded, unavailable};

const READ_CONCURRENCY: usize = 32;
/// Committed records past a tenant's watermark a read consults directly, at most; beyond
/// that it answers `Unavailable` (the partition's chainer is catching up).
const MAX_TAIL_SCAN: u64 = 100_000;

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
        let rows = self
            .range_rows::<(i64, String, Vec<u8>, String)>(&self.stmts.select_rows, tenant, from, to)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, hash, canonical, digest)| {
                (
                    ChainRow {
                        sequence_number: seq as u64,
                        hash,
                        canonical,
                    },
                    digest,
                )
            })
            .collect())
    }

    /// The rows `statement` (a select by tenant, bucket and a sequence number range)
    /// returns for `from..=to`, bucket by bucket, in order.
    async fn range_rows<R>(
        &self,
        statement: &scylla::statement::prepared::PreparedStatement,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for b in bucket(from)..=bucket(to) {
            let lo = from.max((b as u64) << BUCKET_BITS) as i64;
            let hi = to.min(((b as u64 + 1) << BUCKET_BITS) - 1) as i64;
            let mut rows = self
                .session
                .execute_iter(statement.clone(), (tenant, b, lo, hi))
                .await
                .map_err(unavailable)?
                .rows_stream::<R>()
                .map_err(unavailable)?;
            while let Some(row) = rows.next().await {
                out.push(row.map_err(unavailable)?);
            }
        }
        Ok(out)
    }

    /// The committed events among `keys`.
    pub(crate) async fn find_committed(
        &self,
        keys: Vec<(String, String)>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut by_tenant: HashMap<&str, Vec<&str>> = HashMap::new();
        for (tenant, id) in &keys {
            by_tenant
                .entry(tenant.as_str())
                .or_default()
                .push(id.as_str());
        }
        let lookups: Vec<_> = by_tenant
            .into_iter()
            .map(|(tenant, ids)| async move {
                // The watermark before the id index (see `derive.rs`), and the head.
                let (derived, head) = if self.deriver.is_some() {
                    (None, self.committed_head(tenant).await?)
                } else {
                    let (derived, head) =
                        futures::join!(self.derived_to(tenant), self.committed_head(tenant));
                    (Some(derived?), head?)
                };
                let Some(head) = head else {
                    return Ok(Vec::new());
                };
                let found = self.committed_ids(tenant, head, derived, &ids).await?;
                let reads: Vec<_> = found
                    .into_iter()
                    .map(|(id, seq)| async move { self.event_at(tenant, &id, seq).await })
                    .collect();
                let events: Vec<Option<StoredEvent>> = run_bounded(reads, READ_CONCURRENCY).await?;
                Ok::<_, sealtrail_store::StoreError>(
                    events.into_iter().flatten().collect::<Vec<_>>(),
                )
            })
            .collect();
        let found: Vec<Vec<StoredEvent>> = run_bounded(lookups, READ_CONCURRENCY).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Where the ids among `ids` that are committed at or below `head` are: this handle's
    /// not-yet-written derived ids (a fenced handle), the id index, and — for the records
    /// past the tenant's watermark `derived`, which an unfenced handle must have read
    /// before calling (`None`: read it now) — the committed records themselves. Every
    /// source holds committed records only (`ids` rows are derived after the commit, never
    /// written ahead of it), so a hit at or below `head` is the event's position.
    pub(crate) async fn committed_ids(
        &self,
        tenant: &str,
        head: u64,
        derived: Option<u64>,
        ids: &[&str],
    ) -> StoreResult<HashMap<String, u64>> {
        let derived = match (&self.deriver, derived) {
            (Some(_), _) => None,
            (None, Some(d)) => Some(d),
            (None, None) => Some(self.derived_to(tenant).await?),
        };
        let mut found: HashMap<String, u64> = HashMap::new();
        let mut by_shard: HashMap<i64, Vec<&str>> = HashMap::new();
        for id in ids {
            // Pending first: a pending id leaves `pending` only after its row is written.
            match self.deriver.as_ref().and_then(|d| d.pending_id(tenant, id)) {
                Some(seq) if seq <= head => {
                    found.insert(id.to_string(), seq);
                }
                _ => by_shard.entry(id_bucket(id)).or_default().push(id),
            }
        }
        let reads: Vec<_> = by_shard
            .into_iter()
            .map(|(shard, ids)| async move {
                let rows = self
                    .session
                    .execute_unpaged(&self.stmts.select_event_ids, (tenant, shard, ids))
                    .await?
                    .into_rows_result()?
                    .rows::<(String, i64)>()?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(rows)
            })
            .collect();
        let indexed: Vec<Vec<(String, i64)>> = run_bounded(reads, READ_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        for (id, seq) in indexed.into_iter().flatten() {
            if seq as u64 <= head {
                found.insert(id, seq as u64);
            }
        }
        if let Some(derived) = derived
            && derived < head
            && ids.iter().any(|id| !found.contains_key(*id))
        {
            if head - derived > MAX_TAIL_SCAN {
                return Err(sealtrail_store::StoreError::Unavailable(format!(
                    "tenant {tenant}: {} committed records are not in the id index yet (its \
                     chainer is catching up); retry shortly",
                    head - derived
                )));
            }
            let wanted: std::collections::HashSet<&str> = ids.iter().copied().collect();
            for (seq, _, id) in self.tail_rows(tenant, derived + 1, head).await? {
                if wanted.contains(id.as_str()) {
                    found.entry(id).or_insert(seq);
                }
            }
        }
        Ok(found)
    }

    /// The committed record at `seq` if it is the event `id`. The check costs nothing (the
    /// row is read anyway) and keeps a damaged or hand-edited id row from answering with
    /// another event.
    async fn event_at(&self, tenant: &str, id: &str, seq: u64) -> StoreResult<Option<StoredEvent>> {
        let row = self
            .one_row::<(i64, String, Vec<u8>, String, String)>(
                &self.stmts.select_row,
                (tenant, bucket(seq), seq as i64),
            )
            .await?;
        let Some((_, hash, canonical, input_digest, event_id)) = row else {
            return Err(sealtrail_store::StoreError::Corrupt(format!(
                "tenant {tenant}: committed record {seq} is missing"
            )));
        };
        // An empty `canonical`: retention removed the record (`retention.rs`).
        if event_id != id || canonical.is_empty() {
            return Ok(None);
        }
        let record = Record::from_canonical(&canonical, &hash)
            .map_err(|e| corrupt(format!("record {seq}: {e}")))?;
        Ok(Some(StoredEvent {
            record,
            input_digest,
        }))
    }

    /// `(sequence number, hash, event id)` of the stored rows `from..=to`, in order.
    pub(crate) async fn tail_rows(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<(u64, String, String)>> {
        let rows = self
            .range_rows::<(i64, String, String)>(&self.stmts.select_tail_ids, tenant, from, to)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, hash, id)| (seq as u64, hash, id))
            .collect())
    }

    /// `(sequence number, hash, event id, canonical bytes)` of the stored rows `from..=to`,
    /// in order (a catch-up: it needs the redaction events' contents).
    pub(crate) async fn tail_records(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<(u64, String, String, Vec<u8>)>> {
        let rows = self
            .range_rows::<(i64, String, String, Vec<u8>)>(
                &self.stmts.select_tail_full,
                tenant,
                from,
                to,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, hash, id, canonical)| (seq as u64, hash, id, canonical))
            .collect())
    }

    pub(crate) async fn list(&self, tenant: &str, query: &EventQuery) -> StoreResult<EventPage> {
        // The boundary before the head: the head is past it (a prune event follows it).
        let retained_from = self.retained(tenant).await?;
        if query.is_filtered() {
            // The watermark before the head: blocks below it have their facet rows.
            let derived = self.derived_to(tenant).await?;
            let head = self.committed_head(tenant).await?.unwrap_or(0);
            return self
                .list_by_facets(tenant, query, head, derived, retained_from)
                .await;
        }
        let head = self.committed_head(tenant).await?.unwrap_or(0);
        let (limit, skip, after) = query.paging.window();
        // The chain is gapless from the boundary: a page is a direct range.
        let start = (after + 1).max(retained_from.saturating_add(skip));
        let end = head.min(start.saturating_add(limit).saturating_sub(1));
        let events = self
            .read_range(tenant, start, end)
            .await?
            .iter()
            .map(|(row, _)| row.record())
            .collect::<StoreResult<_>>()?;
        Ok(EventPage {
            events,
            total: (head + 1).saturating_sub(retained_from),
        })
    }

    /// Hashes of `ids` (complete nodes of the tenant's tree), in order. Nodes of level
    /// [`MIN_TREE_LEVEL`] and up are stored; a lower one is computed from the hashes of
    /// its ≤ 4 records, and so is — for an unfenced handle — a node over records past the
    /// tenant's watermark (not derived yet), from the stored nodes below the watermark and
    /// the committed records after it. `None` for a node that is not complete (or, below
    /// the watermark, missing: damage).
    pub(crate) async fn read_nodes(
        &self,
        tenant: &str,
        ids: &[NodeId],
    ) -> StoreResult<Vec<Option<Hash>>> {
        // The watermark before the nodes (see `derive.rs`); a fenced handle's `pending`
        // holds everything past it instead. Stored nodes end at a multiple of a stored
        // level's width.
        let aligned = match self.deriver {
            Some(_) => None,
            None => Some(self.derived_to(tenant).await? & !((1u64 << MIN_TREE_LEVEL) - 1)),
        };
        let high: Vec<usize> = (0..ids.len())
            .filter(|&i| ids[i].level >= MIN_TREE_LEVEL)
            .collect();
        let high_ids: Vec<NodeId> = high.iter().map(|&i| ids[i]).collect();
        let mut out = vec![None; ids.len()];
        for (i, hash) in high.iter().zip(self.stored_nodes(tenant, &high_ids).await?) {
            out[*i] = hash;
        }
        let end = |id: &NodeId| id.start() + id.width();
        let todo: Vec<usize> = (0..ids.len())
            .filter(|&i| {
                out[i].is_none()
                    && (ids[i].level < MIN_TREE_LEVEL || aligned.is_some_and(|d| end(&ids[i]) > d))
            })
            .collect();
        if todo.is_empty() {
            return Ok(out);
        }
        let head = self.committed_head(tenant).await?.unwrap_or(0);
        // Per node: the stored part below the watermark (a high node straddling it) and
        // the leaves from where that ends.
        let split = |id: &NodeId| match aligned {
            Some(d) if id.level >= MIN_TREE_LEVEL && id.start() < d => d,
            _ => id.start(),
        };
        let todo: Vec<usize> = todo.into_iter().filter(|&i| end(&ids[i]) <= head).collect();
        let mut ranges: Vec<(u64, u64)> = todo
            .iter()
            .map(|&i| (split(&ids[i]), end(&ids[i])))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let leaf_count: u64 = merged.iter().map(|(lo, hi)| hi - lo).sum();
        if leaf_count > MAX_TAIL_SCAN {
            return Err(sealtrail_store::StoreError::Unavailable(format!(
                "tenant {tenant}: {leaf_count} committed records are not in the tree yet (its \
                 chainer is catching up); retry shortly"
            )));
        }
        // Leaf i is record i + 1.
        let mut leaves: HashMap<u64, Hash> = HashMap::new();
        for (lo, hi) in merged {
            let rows = self.tail_rows(tenant, lo + 1, hi).await?;
            if rows.len() as u64 != hi - lo {
                return Err(sealtrail_store::StoreError::Corrupt(format!(
                    "tenant {tenant}: committed records {}..={hi} are missing",
                    lo + 1
                )));
            }
            for (seq, hash, _) in rows {
                let leaf =
                    record_leaf(&hash).ok_or_else(|| corrupt(format!("record {seq}: bad hash")))?;
                leaves.insert(seq - 1, leaf_hash(&leaf));
            }
        }
        let prefix_ids: Vec<NodeId> = todo
            .iter()
            .filter(|&&i| split(&ids[i]) > ids[i].start())
            .flat_map(|&i| range_nodes(ids[i].start(), split(&ids[i])))
            .collect();
        let prefix: HashMap<NodeId, Option<Hash>> = prefix_ids
            .iter()
            .copied()
            .zip(self.stored_nodes(tenant, &prefix_ids).await?)
            .collect();
        for i in todo {
            let id = ids[i];
            let at = split(&id);
            let parts: Option<Vec<(u8, Hash)>> = range_nodes(id.start(), at)
                .into_iter()
                .map(|p| prefix.get(&p).copied().flatten().map(|h| (p.level, h)))
                .collect();
            let Some(mut stack) = parts else { continue }; // damage below the watermark
            for leaf in at..end(&id) {
                stack.push((0, leaves[&leaf]));
                while stack.len() >= 2 && stack[stack.len() - 1].0 == stack[stack.len() - 2].0 {
                    let (level, right) = stack.pop().expect("two");
                    let (_, left) = stack.pop().expect("two");
                    stack.push((level + 1, node_hash(&left, &right)));
                }
            }
            if let [(level, hash)] = stack[..]
                && level == id.level
            {
                out[i] = Some(hash);
            }
        }
        Ok(out)
    }

    /// The stored hashes of `ids` (a fenced handle's not-yet-written ones included).
    pub(crate) async fn stored_nodes(
        &self,
        tenant: &str,
        ids: &[NodeId],
    ) -> StoreResult<Vec<Option<Hash>>> {
        let lookups: Vec<_> = ids
            .iter()
            .map(|id| async move {
                // Pending first: a pending node leaves `pending` only after its row is written.
                if let Some(hash) = self
                    .deriver
                    .as_ref()
                    .and_then(|d| d.pending_node(tenant, *id))
                {
                    return Ok(Some(hash));
                }
                let row = self
                    .one_row::<(Vec<u8>,)>(
                        &self.stmts.select_node,
                        (tenant, span(*id), id.level as i32, id.index as i64),
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
            .one_row::<(String,)>(
                &self.stmts.select_receipt,
                (tenant, id_bucket(receipt_id), receipt_id),
            )
            .await?;
        row.map(|(body,)| serde_json::from_str(&body).map_err(corrupt))
            .transpose()
    }
}
