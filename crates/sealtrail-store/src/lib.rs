//! The store: where chained records, receipts and API keys live.
//!
//! [`Store`] is the contract every backend implements; [`fjall::FjallStore`] (the default)
//! and [`sqlite::SqliteStore`] are the embedded ones, both group-committing through one
//! writer thread (`group.rs`); [`conformance`] is the suite each backend must pass.
#![forbid(unsafe_code)]

#[cfg(feature = "embedded")]
pub mod backup;
pub mod conformance;
#[cfg(feature = "embedded")]
pub mod disk;
mod durable_file;
#[cfg(feature = "embedded")]
pub mod fjall;
#[cfg(feature = "embedded")]
mod group;
pub mod rule;
#[cfg(feature = "embedded")]
pub mod segment;
#[cfg(feature = "embedded")]
pub mod sqlite;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sealtrail_core::merkle::{Hash, NodeId};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::ChainHead;

pub use durable_file::write_durably;
pub use types::*;

/// What a store call can fail with. The variants say what the caller must do:
/// [`Unavailable`](StoreError::Unavailable) and [`NoSpace`](StoreError::NoSpace) are
/// *retryable* (the same call may succeed later); the others are not, and a writer that
/// meets one must stop ([`StoreError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time. Nothing is known to
    /// be written; retrying the same write is safe (writes are idempotent).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The disk has too little free space to make anything durable; nothing of the write
    /// was stored. Retryable once space is freed.
    #[error("no space left for the store: {0}")]
    NoSpace(String),
    /// The append rule ([`rule`]) refused the batch — a fork, a gap, a broken link or a
    /// duplicate id — and nothing of it was written. The writer's view of the chain is
    /// wrong (stale, or a bug); it must not retry the same batch.
    #[error("append refused: {0}")]
    Refused(rule::Refusal),
    /// Another writer has claimed this writer's log partition (distributed mode); nothing
    /// of the batch was committed. The writer must stop; the new owner replays the log.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Stored data could not be decoded, or the chain has a hole below its head.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The engine cannot go on in this process (e.g. poisoned after a failed journal
    /// write) or is misconfigured; a restart (and maybe an operator) is needed.
    #[error("store failed: {0}")]
    Fatal(String),
    /// This store does not keep what was asked for (a feature of another mode); nothing
    /// was written.
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Whether the very same call may succeed later (a writer waits and retries); the
    /// others stop a writer.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::NoSpace(_))
    }

    /// A short, stable name of the error's kind (for metrics, health and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::NoSpace(_) => "no_space",
            StoreError::Refused(_) => "refused",
            StoreError::Fenced(_) => "fenced",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Fatal(_) => "fatal",
            StoreError::Unsupported(_) => "unsupported",
        }
    }
}

impl From<rule::Refusal> for StoreError {
    fn from(refusal: rule::Refusal) -> Self {
        StoreError::Refused(refusal)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The wall clock in UTC microseconds. The core takes no clock; the gateway (acceptance
/// time), the stores (receipt commit time) and the CLI read it here.
pub fn now_micros() -> sealtrail_core::time::Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The current time in the wire format (stores stamp `committed_at` with it).
pub fn now_wire() -> String {
    sealtrail_core::time::format_micros(now_micros())
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes `batch` (records and receipts) as one unit.
    ///
    /// **Contract:** when this returns `Ok`, every record and receipt of the batch is
    /// durable (fsynced / acknowledged at the configured consistency) and visible to
    /// reads. **Durable before visible:** no read of this trait — and so no list, stream,
    /// commit signal or checkpoint signer built on it — sees any part of a batch before
    /// the whole batch is durable, and reads see a batch whole or not at all (fjall:
    /// the journal is fsynced before the memtables are touched, and reads go through a
    /// snapshot; SQLite: a WAL commit with `synchronous=FULL` is synced before readers
    /// see it; Scylla: rows stay invisible until the conditional head update covers
    /// them). Writing a byte-identical record again is a no-op `Ok` (replays are
    /// harmless). Every engine judges a batch with the one append rule ([`rule`]): a
    /// fork, a gap, a broken `prev_hash` link or a duplicate client id is refused with
    /// [`StoreError::Refused`] and nothing of the batch is written. A committed receipt without `committed_at` is stamped with the
    /// store's write time. The batch's `tree_nodes` are written with its records (a node
    /// is deterministic, so rewriting one is a no-op) — or, like every index a store
    /// derives from the records, after them, as long as every read answers as if they
    /// were there (the fjall store's indexer, the Scylla store's deriver: their reads
    /// consult the records not yet indexed).
    ///
    /// An [`StoreError::Unavailable`] answer has an *unknown outcome*: the batch may or
    /// may not be stored. The caller resubmits the very same batch (hence the `Arc`), which
    /// the replay rule makes safe; it must not recompute the batch from a fresh read.
    async fn append_shared(&self, batch: Arc<CommitBatch>) -> StoreResult<()>;

    /// [`Store::append_shared`] for a batch the caller will not need again.
    async fn append(&self, batch: CommitBatch) -> StoreResult<()> {
        self.append_shared(Arc::new(batch)).await
    }

    /// The chain heads of `tenants` that have any record.
    async fn heads(&self, tenants: Vec<String>) -> StoreResult<HashMap<String, ChainHead>>;

    /// The stored events among `keys` (`(tenant_id, event_id)`), for idempotency checks.
    async fn find_events(&self, keys: Vec<(String, String)>) -> StoreResult<Vec<StoredEvent>>;

    /// One event of a tenant by id.
    async fn get_event(&self, tenant_id: &str, event_id: &str) -> StoreResult<Option<StoredEvent>>;

    /// One receipt of a tenant by id.
    async fn get_receipt(&self, tenant_id: &str, receipt_id: &str) -> StoreResult<Option<Receipt>>;

    /// A page of a tenant's events in sequence order.
    async fn list_events(&self, tenant_id: &str, query: EventQuery) -> StoreResult<EventPage>;

    /// Up to `limit` raw rows of a tenant's chain with sequence number > `after`, in order.
    async fn scan_chain(
        &self,
        tenant_id: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<ChainRow>>;

    /// The hashes of complete Merkle tree nodes of a tenant's log, in the order of `ids`;
    /// `None` for a node that is not stored. Proofs, checkpoints and the chainer's tree
    /// state read O(log n) nodes through this, in one call.
    async fn tree_nodes(&self, tenant_id: &str, ids: Vec<NodeId>)
    -> StoreResult<Vec<Option<Hash>>>;

    /// The lowest level of Merkle tree node this store keeps: a writer need not send it
    /// nodes below (the store computes those from the leaves). Default 0: every node.
    fn min_tree_level(&self) -> u8 {
        0
    }

    /// Stores a new API key (only its hash).
    async fn create_key(&self, key: ApiKey) -> StoreResult<()>;

    /// Stores many new keys (bulk provisioning). The default stores them one by one, so an
    /// error part-way leaves the earlier ones stored; SQLite stores all or none in one
    /// transaction.
    async fn create_keys(&self, keys: Vec<ApiKey>) -> StoreResult<()> {
        for key in keys {
            self.create_key(key).await?;
        }
        Ok(())
    }

    /// The key whose hash is `key_hash`, revoked or not.
    async fn find_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;

    /// All keys, or a tenant's keys.
    async fn list_keys(&self, tenant_id: Option<&str>) -> StoreResult<Vec<ApiKey>>;

    /// Marks a key revoked at `revoked_at`; `false` when no such active key exists.
    async fn revoke_key(&self, key_id: &str, revoked_at: &str) -> StoreResult<bool>;

    /// Why the store refuses writes right now, if it does (an embedded store's disk below
    /// its free-space floor): the API answers writes `507` at once instead of queueing
    /// them, and `/healthz` reports it.
    fn write_blocked(&self) -> Option<String> {
        None
    }

    /// Finishes pending writes and releases the store (graceful shutdown). Appends after
    /// this fail with [`StoreError::Unavailable`].
    fn close(&self) {}

    /// Whether this store erases a record when a redaction event naming it is appended
    /// (issue 15: `sealtrail_core::record::REDACT_ACTION`): the record's content leaves
    /// the store and reads return it redacted. The API refuses redactions on a store that
    /// does not, rather than append a redaction that erases nothing.
    fn erases_redacted(&self) -> bool {
        false
    }

    /// Whether this store removes a tenant's records before the boundary a prune event
    /// names when that event is appended (issue 15, retention:
    /// `sealtrail_core::record::PRUNE_ACTION`), keeping what proofs need (the tree). The
    /// API refuses retention on a store that does not.
    fn prunes(&self) -> bool {
        false
    }

    /// The first record kept of `tenant_id`'s chain: 1 unless retention removed the
    /// records before it.
    async fn retained_from(&self, tenant_id: &str) -> StoreResult<u64> {
        let _ = tenant_id;
        Ok(1)
    }

    /// Every tenant with at least one record.
    async fn tenants(&self) -> StoreResult<Vec<String>> {
        Err(StoreError::Unavailable(
            "this store cannot list its tenants".into(),
        ))
    }

    /// Adds a log-stream destination (issue 17). Its id is new.
    async fn create_destination(&self, destination: Destination) -> StoreResult<()> {
        let _ = destination;
        Err(StoreError::Unsupported("log-stream destinations"))
    }

    /// The log-stream destinations of `tenant_id`, or of every tenant.
    async fn destinations(&self, tenant_id: Option<&str>) -> StoreResult<Vec<Destination>> {
        let _ = tenant_id;
        Err(StoreError::Unsupported("log-stream destinations"))
    }

    /// Removes a destination; whether it was there.
    async fn delete_destination(&self, tenant_id: &str, id: &str) -> StoreResult<bool> {
        let _ = (tenant_id, id);
        Err(StoreError::Unsupported("log-stream destinations"))
    }

    /// Claims a destination for one delivery task or a resume: moves its generation from
    /// `generation` to `generation + 1` if it is still `generation`; whether it moved.
    /// Stores that one process owns need no claim: they answer true and keep 0.
    async fn claim_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        generation: u64,
    ) -> StoreResult<bool> {
        let _ = (tenant_id, id, generation);
        Ok(true)
    }

    /// Stores a destination's delivery state (its cursor and status), durably before it
    /// returns; whether the destination is still there. A store shared by processes
    /// applies it only while the stored generation is `state.generation` (false
    /// otherwise: another task or a resume claimed the destination).
    async fn record_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        state: DeliveryState,
    ) -> StoreResult<bool> {
        let _ = (tenant_id, id, state);
        Err(StoreError::Unsupported("log-stream destinations"))
    }

    /// The tenants' own retention policies (overriding the configured default).
    async fn retention_policies(&self) -> StoreResult<Vec<(String, RetentionPolicy)>> {
        Ok(Vec::new())
    }

    /// Takes, or renews, the lease `name` for `holder` for `ttl`: whether `holder` holds
    /// it now. Where several servers share a store (distributed mode), the one holding a
    /// lease does the work it names (`retention`: the pruner); a store of one server
    /// always grants it.
    async fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> StoreResult<bool> {
        let _ = (name, holder, ttl);
        Ok(true)
    }

    /// Sets (or, with `None`, removes) `tenant_id`'s own retention policy.
    async fn set_retention_policy(
        &self,
        tenant_id: &str,
        policy: Option<RetentionPolicy>,
    ) -> StoreResult<()> {
        let _ = (tenant_id, policy);
        Err(StoreError::Unavailable(
            "this store keeps no retention policies".into(),
        ))
    }
}
