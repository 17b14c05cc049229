//! The acknowledged tail: groups that are durable in the segment log but not yet in the
//! fjall indexes, held in memory so every read sees them (read your writes).
//!
//! The writer adds a group here after its frame is fsynced and before anyone is
//! answered; the indexer removes it once the group's index entries are committed to
//! fjall. A reader locks the tail, copies what it needs, unlocks, and only *then* takes a
//! fjall snapshot: a group the indexer removed in between was committed before the
//! removal, so the snapshot has it. Each group is added and removed whole under the
//! lock, so a reader sees whole groups only. The size is bounded: the writer waits while
//! the tail holds more than its limit (`FjallLimits::tail_bytes`).
//!
//! Per tenant the tail's records are a gapless run of sequence numbers just above what
//! fjall has indexed (groups are indexed in log order).

use std::collections::VecDeque;

// foldhash, not SipHash: the tail hashes every record id it holds (a visible share of the
// writer thread in the profile). Randomly seeded per process.
use foldhash::HashMap;
use std::sync::Arc;

use sealtrail_core::merkle::{Hash, NodeId};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::{ChainHead, ChainedRecord};

use crate::{ChainRow, CommitBatch, StoredEvent};

/// Bytes a record is counted as on top of its canonical form (the parsed record, ids).
const RECORD_OVERHEAD: usize = 512;

/// One record of the tail: a record of a batch the writer was handed.
#[derive(Clone)]
pub(super) struct TailRow {
    frame: u64,
    batch: Arc<CommitBatch>,
    index: u32,
}

impl TailRow {
    pub fn new(frame: u64, batch: Arc<CommitBatch>, index: usize) -> Self {
        Self {
            frame,
            batch,
            index: index as u32,
        }
    }

    pub fn chained(&self) -> &ChainedRecord {
        &self.batch.records[self.index as usize]
    }

    pub fn seq(&self) -> u64 {
        self.chained().record.sequence_number
    }

    pub fn stored(&self) -> StoredEvent {
        let c = self.chained();
        StoredEvent {
            record: c.record.clone(),
            input_digest: c.input_digest.clone(),
        }
    }

    pub fn row(&self) -> ChainRow {
        let c = self.chained();
        ChainRow {
            sequence_number: c.record.sequence_number,
            hash: c.record.hash.clone(),
            canonical: c.canonical.clone(),
        }
    }
}

#[derive(Default)]
struct TenantTail {
    rows: VecDeque<TailRow>,
    ids: HashMap<String, (u64, u64)>,
}

/// What one group put in the tail, to take it out again.
struct TailGroup {
    frame: u64,
    bytes: usize,
    tenants: Vec<String>,
    receipts: Vec<(String, String)>,
    nodes: Vec<(String, NodeId)>,
}

#[derive(Default)]
pub(super) struct Tail {
    tenants: HashMap<String, TenantTail>,
    receipts: HashMap<(String, String), (u64, Arc<Receipt>)>,
    nodes: HashMap<(String, NodeId), (u64, Hash)>,
    groups: VecDeque<TailGroup>,
    bytes: usize,
}

impl Tail {
    /// Adds a durable group (its frame's position is `frame`).
    pub fn add(
        &mut self,
        frame: u64,
        rows: Vec<(String, TailRow)>,
        receipts: Vec<(String, Receipt)>,
        nodes: Vec<(String, NodeId, Hash)>,
    ) {
        let mut group = TailGroup {
            frame,
            bytes: 0,
            tenants: Vec::new(),
            receipts: Vec::with_capacity(receipts.len()),
            nodes: Vec::with_capacity(nodes.len()),
        };
        for (tenant, row) in rows {
            group.bytes += row.chained().canonical.len() + RECORD_OVERHEAD;
            if group.tenants.last() != Some(&tenant) && !group.tenants.contains(&tenant) {
                group.tenants.push(tenant.clone());
            }
            let t = self.tenants.entry(tenant).or_default();
            t.ids
                .insert(row.chained().record.id.clone(), (frame, row.seq()));
            t.rows.push_back(row);
        }
        for (tenant, receipt) in receipts {
            group.bytes += 256 + 64 * receipt.ids.len();
            let key = (tenant, receipt.receipt_id.clone());
            group.receipts.push(key.clone());
            self.receipts.insert(key, (frame, Arc::new(receipt)));
        }
        for (tenant, id, hash) in nodes {
            group.bytes += 96;
            let key = (tenant, id);
            group.nodes.push(key.clone());
            self.nodes.insert(key, (frame, hash));
        }
        self.bytes += group.bytes;
        self.groups.push_back(group);
    }

    /// Removes every group whose frame is at or before `frame` (they are indexed).
    pub fn remove_through(&mut self, frame: u64) {
        while self.groups.front().is_some_and(|g| g.frame <= frame) {
            let group = self.groups.pop_front().expect("checked");
            self.bytes -= group.bytes;
            for tenant in group.tenants {
                let Some(t) = self.tenants.get_mut(&tenant) else {
                    continue;
                };
                while t.rows.front().is_some_and(|r| r.frame <= frame) {
                    let row = t.rows.pop_front().expect("checked");
                    let id = &row.chained().record.id;
                    if t.ids.get(id).is_some_and(|(f, _)| *f <= frame) {
                        t.ids.remove(id);
                    }
                }
                if t.rows.is_empty() {
                    self.tenants.remove(&tenant);
                }
            }
            for key in group.receipts {
                if self.receipts.get(&key).is_some_and(|(f, _)| *f <= frame) {
                    self.receipts.remove(&key);
                }
            }
            for key in group.nodes {
                if self.nodes.get(&key).is_some_and(|(f, _)| *f <= frame) {
                    self.nodes.remove(&key);
                }
            }
        }
    }

    /// Bytes the tail is counted as holding.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Groups in the tail.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    pub fn head(&self, tenant: &str) -> Option<ChainHead> {
        let row = self.tenants.get(tenant)?.rows.back()?;
        Some(ChainHead {
            sequence_number: row.seq(),
            hash: row.chained().record.hash.clone(),
        })
    }

    /// The tail's record `seq` of `tenant`, if the tail holds it.
    pub fn at(&self, tenant: &str, seq: u64) -> Option<&TailRow> {
        let rows = &self.tenants.get(tenant)?.rows;
        let first = rows.front()?.seq();
        let offset = seq.checked_sub(first)?;
        rows.get(usize::try_from(offset).ok()?)
    }

    pub fn by_id(&self, tenant: &str, id: &str) -> Option<&TailRow> {
        let t = self.tenants.get(tenant)?;
        let (_, seq) = t.ids.get(id)?;
        self.at(tenant, *seq)
    }

    /// The tenant's records in the tail, in order (empty if none).
    pub fn rows(&self, tenant: &str) -> Vec<TailRow> {
        self.tenants
            .get(tenant)
            .map(|t| t.rows.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn receipt(&self, tenant: &str, receipt_id: &str) -> Option<Arc<Receipt>> {
        self.receipts
            .get(&(tenant.to_string(), receipt_id.to_string()))
            .map(|(_, r)| r.clone())
    }

    pub fn node(&self, tenant: &str, id: NodeId) -> Option<Hash> {
        self.nodes.get(&(tenant.to_string(), id)).map(|(_, h)| *h)
    }
}
