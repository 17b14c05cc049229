//! The log: an ordered, tenant-partitioned sequence of ingest entries between the gateway
//! and the chainers, and the correlation channel that carries results back to a waiting
//! gateway.
//!
//! Two implementations share these traits: [`memory`] (embedded mode, one process) and
//! Kafka (distributed mode, another crate). Nothing here assumes one process: entries
//! and replies are plain serializable data, addressed by partition and by
//! [`ReplyAddress`].
#![forbid(unsafe_code)]

pub mod correlation;
pub mod memory;
pub mod signals;

use async_trait::async_trait;
use sealtrail_core::event::NormalizedEvent;
use sealtrail_core::receipt::ItemError;
use serde::{Deserialize, Serialize};

pub use correlation::{Correlator, EntryOutcome, ReplyAddress, ReplySink};
pub use signals::{CommitSignal, Health};

/// Position of an entry in its partition.
pub type Offset = u64;

/// One ingest request as published: one event or one batch, all of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub tenant_id: String,
    pub receipt_id: String,
    /// Acceptance time of the request (the gateway's clock), UTC wire form.
    pub created_at: String,
    /// The valid events, each with its index in the request.
    pub events: Vec<IndexedEvent>,
    /// Items the gateway already rejected (validation), reported in the receipt.
    pub rejected: Vec<ItemError>,
    /// Where to send the outcome, if a caller waits for it.
    pub reply_to: Option<ReplyAddress>,
    /// The caller learns the outcome from the reply only and was never given the receipt
    /// id (a sync single-event request answers with the record), so the chainer need not
    /// store the receipt. Absent in older entries: `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reply_only: bool,
    /// The gateway published this entry a second time, and the first copy may be in the
    /// log too: a replaced Kafka producer's queue held it after a send whose outcome is
    /// unknown (the broker may have written it and lost the answer), and the new producer,
    /// with a new idempotent producer id, sent it again — Kafka cannot tell the copies
    /// apart. The chainer looks up every id of such an entry (as for a redelivery), so a
    /// copy is answered from the stored events, never chained twice. Absent: `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resent: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedEvent {
    pub index: u32,
    pub event: NormalizedEvent,
}

/// What an acknowledged append promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The log itself persisted the entry (Kafka with `acks=all`): the caller may
    /// acknowledge its client now.
    Durable,
    /// The log holds the entry in memory only (embedded mode): the entry is durable once
    /// the chainer has stored it, which the caller learns from the correlation channel.
    /// A caller must not acknowledge its client before that reply.
    Volatile,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The partition's queue is full; retry later (maps to 503 + Retry-After).
    #[error("the ingest queue is full; retry shortly")]
    Overloaded,
    /// The log is shutting down or its consumer has gone; retrying elsewhere may work.
    #[error("the log is closed")]
    Closed,
    /// Any other failure of the log backend.
    #[error("log backend failure: {0}")]
    Backend(String),
}

/// The gateway's side of the log.
#[async_trait]
pub trait LogProducer: Send + Sync + 'static {
    /// Publishes `entry` to its tenant's partition. When this returns `Ok`, the entry
    /// will be delivered to that partition's consumer after every entry appended before
    /// it to the same partition, with the returned [`Durability`].
    async fn append(&self, entry: LogEntry) -> Result<Durability, LogError>;

    /// Number of partitions tenants are hashed onto.
    fn partitions(&self) -> u32;

    /// Stops accepting appends (graceful shutdown). Entries already appended are still
    /// delivered; consumers see the end of the log once they have drained them.
    fn close(&self);
}

/// The chainer's side of one partition.
#[async_trait]
pub trait PartitionConsumer: Send + 'static {
    /// The partition this consumer reads.
    fn partition(&self) -> u32;

    /// Whether the entry at `offset` may already be stored: a durable log redelivers from
    /// its last committed offset after a crash or a move to another chainer, so an entry
    /// may come again after some chainer stored it. When it may, the chainer looks up every
    /// event id of the entry, server-generated ones included, so it is answered as an
    /// idempotent retry instead of being chained twice. A consumer that knows better (the
    /// entry was published after this chainer claimed the partition) answers `false` and
    /// spares the lookups; when in doubt, `true`.
    fn maybe_stored(&self, offset: Offset) -> bool {
        let _ = offset;
        true
    }

    /// Waits for the next entries, in order, and returns at least one and at most about
    /// `max_events` events' worth. `None` when the log is closed and drained.
    async fn poll(&mut self, max_events: usize) -> Option<Vec<(Offset, LogEntry)>>;

    /// Records that every entry up to and including `offset` is stored, so a restart
    /// resumes after it. Entries after the last commit are delivered again after a
    /// crash; the chainer's idempotent writes make that harmless.
    async fn commit(&mut self, offset: Offset) -> Result<(), LogError>;

    /// Resolves once the log is closing (graceful shutdown) or this partition is taken
    /// away: a chainer stuck retrying a failing store gives up its batch then instead of
    /// holding the shutdown forever. Never resolves by default. (An owned future, so a
    /// chainer can wait on it while it uses the consumer.)
    fn closing(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(std::future::pending())
    }
}
