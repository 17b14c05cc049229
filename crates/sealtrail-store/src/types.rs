use sealtrail_core::event::{ActorType, Outcome};
use sealtrail_core::merkle::{Hash, NodeId};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::{ChainedRecord, Record};
use serde::{Deserialize, Serialize};

/// What one store write contains.
#[derive(Debug, Clone, Default)]
pub struct CommitBatch {
    pub records: Vec<ChainedRecord>,
    pub receipts: Vec<(String, Receipt)>,
    /// The Merkle tree nodes the batch's records complete (two per record on average),
    /// stored in the same unit as the records.
    pub tree_nodes: Vec<TreeNode>,
    /// The commit time the store stamped on the batch's committed receipts that had no
    /// `committed_at` ([`stamp`](Self::stamp)): the clock when the first write of the batch
    /// began, before its sync. Set once, so a batch submitted again (after a failure with
    /// an unknown outcome, or split from a refused group) keeps its first stamp; the
    /// chainer copies it into the receipts it answers with, so a `202` and a later
    /// `GET /v1/receipts/{id}` say the same.
    pub committed_at: std::sync::OnceLock<String>,
}

impl CommitBatch {
    /// Gives a committed receipt without `committed_at` this batch's commit time (taken
    /// now if no receipt of the batch has been stamped yet). Every store stamps with it.
    pub fn stamp(&self, receipt: &mut Receipt) {
        if needs_stamp(receipt) {
            receipt.committed_at = Some(self.committed_at.get_or_init(crate::now_wire).clone());
        }
    }

    /// Gives a committed receipt without `committed_at` the stamp a store already took
    /// ([`stamp`](Self::stamp)); never reads the clock (the chainer's side: it has none).
    pub fn copy_stamp(&self, receipt: &mut Receipt) {
        if needs_stamp(receipt) {
            receipt.committed_at = self.committed_at.get().cloned();
        }
    }
}

fn needs_stamp(receipt: &Receipt) -> bool {
    receipt.committed_at.is_none()
        && receipt.status == sealtrail_core::receipt::ReceiptStatus::Committed
}

/// A complete node of a tenant's Merkle tree (`sealtrail_core::merkle`): the hash of
/// the `2^level` leaves from leaf `index · 2^level`. Written with the record whose leaf
/// completes it and never changed after, so writing it again is a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    pub tenant_id: String,
    pub id: NodeId,
    pub hash: Hash,
}

/// A stored event with the digest of the input that created it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub record: Record,
    pub input_digest: String,
}

/// A raw chain row: what verification and streaming read.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainRow {
    pub sequence_number: u64,
    pub hash: String,
    /// The record without `hash`, in JCS form, exactly as hashed.
    pub canonical: Vec<u8>,
}

impl ChainRow {
    pub fn record(&self) -> Result<Record, crate::StoreError> {
        Record::from_canonical(&self.canonical, &self.hash).map_err(|e| {
            crate::StoreError::Corrupt(format!("record {}: {e}", self.sequence_number))
        })
    }
}

/// Filters of `GET /v1/events`. `from`/`to` bound the event `timestamp` (inclusive) and
/// are normalized wire timestamps, so they compare as strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub actor_id: Option<String>,
    pub actor_type: Option<ActorType>,
    pub action: Option<String>,
    pub resource_id: Option<String>,
    pub outcome: Option<Outcome>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub paging: Paging,
}

impl EventQuery {
    /// Whether `record` passes every filter (paging aside). A redacted record has no
    /// content left to match, so it passes no filter (it is listed only unfiltered).
    pub fn matches(&self, record: &Record) -> bool {
        if record.redacted.is_some() {
            return !self.is_filtered();
        }
        self.actor_id.as_ref().is_none_or(|v| *v == record.actor.id)
            && self.action.as_ref().is_none_or(|v| *v == record.action)
            && self
                .resource_id
                .as_ref()
                .is_none_or(|v| *v == record.resource.id)
            && self
                .actor_type
                .is_none_or(|t: ActorType| record.actor.actor_type == Some(t))
            && self.outcome.is_none_or(|o: Outcome| record.outcome == o)
            && self
                .from
                .as_ref()
                .is_none_or(|f| record.timestamp.as_str() >= f.as_str())
            && self
                .to
                .as_ref()
                .is_none_or(|t| record.timestamp.as_str() <= t.as_str())
    }

    /// Whether any filter is set.
    pub fn is_filtered(&self) -> bool {
        self.actor_id.is_some()
            || self.actor_type.is_some()
            || self.action.is_some()
            || self.resource_id.is_some()
            || self.outcome.is_some()
            || self.from.is_some()
            || self.to.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Paging {
    /// fact0's pages: 1-based page number and size.
    Page { page: u32, page_size: u32 },
    /// Keyset paging for deep reads: events with sequence number > `after`.
    After { after: u64, page_size: u32 },
}

impl Paging {
    /// `(limit, skip, after)`: at most `limit` matches, after skipping the first `skip`
    /// matches with a sequence number above `after`.
    pub fn window(self) -> (u64, u64, u64) {
        match self {
            Paging::Page { page, page_size } => (
                page_size as u64,
                (page.max(1) as u64 - 1) * page_size as u64,
                0,
            ),
            Paging::After { after, page_size } => (page_size as u64, 0, after),
        }
    }
}

impl Default for Paging {
    fn default() -> Self {
        Paging::Page {
            page: 1,
            page_size: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Record>,
    /// Number of events matching the filters (all pages).
    pub total: u64,
}

/// How long a tenant's records are kept (issue 15): a record expires once it is older
/// than `days` (by its `created_at`, the server's clock) **or** beyond the last `events`
/// records of the chain — whichever limit is set and reached first. Neither set: kept
/// forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep records for this many days (1 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// Keep the last this many records (1 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
}

impl RetentionPolicy {
    /// Whether the policy removes anything ever.
    pub fn is_forever(&self) -> bool {
        self.days.is_none() && self.events.is_none()
    }
}

/// An API key as stored: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public identifier, safe to show and log.
    pub key_id: String,
    pub tenant_id: String,
    /// Hex SHA-256 of the full key string.
    pub key_hash: String,
    /// The first characters of the key, for recognizing it in `keys list`.
    pub key_prefix: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Answers share the batch the chainer stored (`sealtrail_core::committed`).
impl sealtrail_core::committed::ChainedBatch for CommitBatch {
    fn chained(&self) -> &[ChainedRecord] {
        &self.records
    }
}

/// A log-stream destination (issue 17): where a tenant's committed records are delivered,
/// in sequence order, at least once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub id: String,
    pub tenant_id: String,
    /// `webhook`, `splunk_hec` or `syslog`.
    pub kind: String,
    pub url: String,
    /// The secret (a webhook's signing key, a Splunk token), sealed with the server's
    /// stream key (never stored in clear).
    pub sealed_secret: Vec<u8>,
    pub created_at: String,
    pub state: DeliveryState,
}

/// Where a destination's delivery stands: its cursor and its health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryState {
    /// The last sequence number the destination acknowledged (0: none yet).
    pub delivered_through: u64,
    /// Delivery stopped after failing for too long (or by request) until resumed.
    pub paused: bool,
    /// When the current run of failures began.
    pub failing_since: Option<String>,
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
    /// Which delivery task may write this state, where several processes share the store
    /// (distributed mode): a task claims the destination by moving the generation
    /// ([`crate::Store::claim_delivery`]) and its writes apply only while the generation is
    /// still its own. A resume or a new owner moves it, so a stale task (a chainer that
    /// lost the partition) can no longer write a cursor. Stores of one process keep 0.
    pub generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(committed: bool) -> Receipt {
        let mut r = Receipt::queued("r1".into(), "t".into(), vec!["e1".into()], vec![]);
        if committed {
            r.settle();
        }
        r
    }

    #[test]
    fn one_stamp_per_batch_copied_only_once_taken() {
        let batch = CommitBatch::default();
        // the chainer's side never takes the clock
        let mut early = receipt(true);
        batch.copy_stamp(&mut early);
        assert_eq!(early.committed_at, None);
        let (mut first, mut second, mut queued) = (receipt(true), receipt(true), receipt(false));
        batch.stamp(&mut first);
        batch.stamp(&mut second);
        batch.stamp(&mut queued);
        assert!(first.committed_at.is_some());
        assert_eq!(first.committed_at, second.committed_at);
        assert_eq!(
            queued.committed_at, None,
            "only committed receipts are stamped"
        );
        let mut answered = receipt(true);
        batch.copy_stamp(&mut answered);
        assert_eq!(answered.committed_at, first.committed_at);
        // a receipt that has its time keeps it
        let mut kept = receipt(true);
        kept.committed_at = Some("earlier".into());
        batch.stamp(&mut kept);
        batch.copy_stamp(&mut kept);
        assert_eq!(kept.committed_at.as_deref(), Some("earlier"));
    }
}
