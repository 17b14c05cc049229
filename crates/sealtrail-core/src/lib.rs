//! The pure core of sealtrail: no async, no I/O.
//!
//! - [`json`]: strict I-JSON parsing (duplicate keys, integer range, nesting depth);
//! - [`event`]: the ingest input, its validation and normalization;
//! - [`record`]: the committed record, its canonical form (RFC 8785) and hash, and the chain step;
//! - [`verify`]: walking a chain and reporting the first (or every) broken link;
//! - [`merkle`], [`proof`]: the per-tenant RFC 6962 tree, its O(log n) frontier, inclusion and
//!   consistency proofs from stored node hashes, and their verification;
//! - [`audit`]: the offline verifier of an exported log (records, checkpoints, kept checkpoint);
//! - [`pack`]: the evidence pack's layout and its proofs;
//! - [`note`], [`checkpoint`]: C2SP signed notes (Ed25519) and tlog-checkpoints;
//! - [`time`]: RFC 3339 timestamps normalized to UTC microseconds;
//! - [`partition`]: Kafka-compatible murmur2 partitioning of tenants.
//!
//! Everything here is deterministic: the chain step takes no clock and no randomness, so
//! replaying the same ordered input yields byte-identical records (DESIGN.md §4.3).
#![forbid(unsafe_code)]

pub mod audit;
pub mod backoff;
pub mod checkpoint;
pub mod committed;
pub mod cosignature;
pub mod event;
mod jcs_scan;
pub mod json;
pub mod limits;
pub mod merkle;
pub mod note;
pub mod pack;
pub mod partition;
pub mod proof;
pub mod receipt;
pub mod record;
pub mod time;
pub mod verify;

pub use event::{
    Actor, ActorType, EventInput, NormalizedEvent, Outcome, Resource, ValidationError,
};
pub use receipt::{ItemError, Receipt, ReceiptStatus};
pub use record::{ChainHead, ChainedRecord, Record, ZERO_HASH};
