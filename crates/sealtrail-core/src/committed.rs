//! The committed records a waiting caller gets back (issue 11: no copy per record).
//!
//! A chainer answers a sync request with the records the request committed. Those it
//! chained itself are the very records of the batch it handed to the store, which the
//! embedded store keeps in its in-memory tail until they are indexed. [`Committed`]
//! shares that batch (one reference count) instead of cloning each record (a dozen
//! strings and a metadata map), and keeps each record's canonical bytes next to it, so a
//! REST answer can be written from the bytes that were hashed
//! ([`CommittedRef::write_json`]) instead of serializing the record again.
//!
//! Records the request did not chain (an idempotent retry answered with what was stored
//! earlier) and records received over the wire (distributed mode's reply topic) are
//! owned. On the wire a `Committed` is exactly a JSON array of records, as before.

use std::fmt;
use std::sync::{Arc, LazyLock};

use memchr::memmem;

use serde::{Deserialize, Serialize};

use crate::record::{ChainedRecord, Record};

/// A batch of chained records that answers can share: the store's commit batch.
pub trait ChainedBatch: Send + Sync {
    /// The batch's records, in batch order.
    fn chained(&self) -> &[ChainedRecord];
}

impl ChainedBatch for Vec<ChainedRecord> {
    fn chained(&self) -> &[ChainedRecord] {
        self
    }
}

#[derive(Clone)]
enum Pick {
    /// Index into the shared batch.
    Batch(usize),
    Owned(Box<Record>),
}

/// The committed records of one log entry, in request order (see the module doc).
#[derive(Clone, Default)]
pub struct Committed {
    batch: Option<Arc<dyn ChainedBatch>>,
    picks: Vec<Pick>,
}

/// One committed record, with its canonical bytes when they are at hand.
#[derive(Clone, Copy)]
pub struct CommittedRef<'a> {
    pub record: &'a Record,
    /// The exact bytes that were hashed (the record without `hash`), for a record this
    /// batch chained.
    pub canonical: Option<&'a [u8]>,
}

impl Committed {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            batch: None,
            picks: Vec::with_capacity(n),
        }
    }

    /// Owned records (read back, or received over the wire).
    pub fn from_records(records: Vec<Record>) -> Self {
        Self {
            batch: None,
            picks: records
                .into_iter()
                .map(|r| Pick::Owned(Box::new(r)))
                .collect(),
        }
    }

    /// Appends record `index` of the batch given to [`Committed::share`].
    pub fn push_chained(&mut self, index: usize) {
        self.picks.push(Pick::Batch(index));
    }

    /// Appends a record that is not in the batch.
    pub fn push_record(&mut self, record: Record) {
        self.picks.push(Pick::Owned(Box::new(record)));
    }

    /// Ties the indexes pushed with [`Committed::push_chained`] to `batch`. Until then
    /// (or if an index is out of its range) those records are skipped.
    pub fn share(&mut self, batch: Arc<dyn ChainedBatch>) {
        if self.picks.iter().any(|p| matches!(p, Pick::Batch(_))) {
            self.batch = Some(batch);
        }
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The records in request order.
    pub fn iter(&self) -> impl Iterator<Item = CommittedRef<'_>> + '_ {
        let chained = self.batch.as_deref().map(|b| b.chained()).unwrap_or(&[]);
        self.picks.iter().filter_map(move |p| match p {
            Pick::Batch(i) => chained.get(*i).map(|c| CommittedRef {
                record: &c.record,
                canonical: Some(&c.canonical),
            }),
            Pick::Owned(r) => Some(CommittedRef {
                record: r,
                canonical: None,
            }),
        })
    }

    /// The first record.
    pub fn first(&self) -> Option<CommittedRef<'_>> {
        self.iter().next()
    }

    /// The first record, owned (cloned if shared).
    pub fn into_first(self) -> Option<Record> {
        self.first().map(|r| r.record.clone())
    }

    /// The records as owned values (shared ones are cloned).
    pub fn into_records(self) -> Vec<Record> {
        let Committed { batch, picks } = self;
        let chained = batch.as_deref().map(|b| b.chained()).unwrap_or(&[]);
        picks
            .into_iter()
            .filter_map(|p| match p {
                Pick::Batch(i) => chained.get(i).map(|c| c.record.clone()),
                Pick::Owned(r) => Some(*r),
            })
            .collect()
    }
}

impl CommittedRef<'_> {
    /// Appends the record's JSON (as `serde_json` writes a [`Record`]) to `out`. A
    /// record with its canonical bytes is written from them: they hold every member but
    /// `hash`, in sorted order, so `"hash":"…",` goes in right after `created_at` (the
    /// member before it). The result parses to the record as a later read returns it
    /// (rebuilt from the same bytes): a float in `metadata` has its canonical (JCS)
    /// spelling, `2` for `2.0`. Anything unexpected falls back to serializing the record.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        if let Some(canonical) = self.canonical
            && let Some(at) = hash_insertion_point(canonical, self.record)
        {
            out.reserve(canonical.len() + self.record.hash.len() + 10);
            out.extend_from_slice(&canonical[..at]);
            out.extend_from_slice(b"\"hash\":\"");
            out.extend_from_slice(self.record.hash.as_bytes());
            out.extend_from_slice(b"\",");
            out.extend_from_slice(&canonical[at..]);
            return;
        }
        serde_json::to_writer(&mut *out, self.record).expect("records serialize");
    }
}

impl<'a> CommittedRef<'a> {
    /// The record's `metadata` as canonical JSON text, sliced from its canonical bytes
    /// (none without them), so an answer that carries it as text (gRPC's
    /// `metadata_json`) need not serialize it again. The member after `id` is `metadata`,
    /// the one after it `outcome`: the first top-level `,"metadata":{` and the last
    /// `},"outcome":"` bound it (no member before `metadata` has an object with such a
    /// key, none after it has an object but `resource`, whose keys are fixed; a quote
    /// inside a string is escaped).
    pub fn metadata_json(&self) -> Option<&'a str> {
        let canonical = self.canonical?;
        if self.record.redacted.is_some() {
            return None;
        }
        const START: &[u8] = b",\"metadata\":{";
        const END: &[u8] = b"},\"outcome\":\"";
        // `memchr`'s vectorized substring search (a byte-by-byte window scan took 3% of
        // the server's CPU in the gRPC benchmark: every acknowledgement finds these), its
        // searchers built once (building one per call cost as much again).
        static STARTS: LazyLock<memmem::Finder<'static>> =
            LazyLock::new(|| memmem::Finder::new(START));
        static ENDS: LazyLock<memmem::FinderRev<'static>> =
            LazyLock::new(|| memmem::FinderRev::new(END));
        let start = STARTS.find(canonical)? + START.len() - 1;
        let end = ENDS.rfind(canonical)? + 1;
        if end <= start {
            return None;
        }
        std::str::from_utf8(&canonical[start..end]).ok()
    }
}

/// Where `"hash"` goes in the canonical bytes of `record`: right after
/// `,"created_at":"<created_at>",`, which must be followed by `"id":`. Only a top-level
/// member can match: the members before it (`action`, `actor` with `email`, `id`, `type`)
/// hold no `created_at` key, and a quote inside a string value is escaped.
fn hash_insertion_point(canonical: &[u8], record: &Record) -> Option<usize> {
    if record.redacted.is_some() || record.hash.is_empty() || !canonical.starts_with(b"{") {
        return None;
    }
    const KEY: &[u8] = b",\"created_at\":\"";
    static KEYS: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(KEY));
    let value = KEYS.find(canonical)? + KEY.len();
    let rest = canonical[value..].strip_prefix(record.created_at.as_bytes())?;
    let rest = rest.strip_prefix(b"\",")?;
    rest.starts_with(b"\"id\":")
        .then_some(canonical.len() - rest.len())
}

impl fmt::Debug for Committed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|r| r.record))
            .finish()
    }
}

impl PartialEq for Committed {
    fn eq(&self, other: &Self) -> bool {
        self.iter()
            .map(|r| r.record)
            .eq(other.iter().map(|r| r.record))
    }
}

impl Serialize for Committed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|r| r.record))
    }
}

impl<'de> Deserialize<'de> for Committed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Record>::deserialize(d).map(Committed::from_records)
    }
}

impl From<Vec<Record>> for Committed {
    fn from(records: Vec<Record>) -> Self {
        Committed::from_records(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate_event;
    use crate::record::chain_step;

    fn chained(n: usize, metadata: serde_json::Value) -> Vec<ChainedRecord> {
        let mut head = None;
        (0..n)
            .map(|i| {
                let input = serde_json::json!({
                    "actor": {"id": format!("user \"{i}\" ,\"created_at\":\""), "type": "human", "email": "a@b.c"},
                    "action": "document.delete",
                    "resource": {"id": "doc", "type": "document", "name": "\u{e000}x"},
                    "outcome": "success",
                    "metadata": metadata,
                });
                let event = validate_event(input, 1_700_000_000_000_000 + i as i64, || {
                    format!("id-{i}")
                })
                .unwrap();
                let c = chain_step(head.as_ref(), "t", event);
                head = Some(c.head());
                c
            })
            .collect()
    }

    #[test]
    fn spliced_json_reads_as_the_serialized_record() {
        for metadata in [
            serde_json::json!({}),
            serde_json::json!({"z": 1.5e300, "a": [1, 2.0, "x\u{1f}"], "\u{e000}": {"b": null}, "\u{10000}": true}),
            serde_json::json!({"created_at": "x", "hash": "y", "nested": {"id": "z"}}),
            serde_json::json!({"a": {"outcome": "x", "metadata": {}}, "b": "},\"outcome\":\"", "outcome": [{"outcome": "z"}]}),
        ] {
            for c in chained(3, metadata) {
                let r = CommittedRef {
                    record: &c.record,
                    canonical: Some(&c.canonical),
                };
                let mut spliced = Vec::new();
                r.write_json(&mut spliced);
                assert!(hash_insertion_point(&c.canonical, &c.record).is_some());
                // What a read of the stored record answers (`GET /v1/events/{id}`): the
                // record rebuilt from the same bytes. (The chained record itself may
                // differ in a float's spelling only: `2.0` is `2` once canonical.)
                let stored = Record::from_canonical(&c.canonical, &c.record.hash).unwrap();
                let read: serde_json::Value = serde_json::from_slice(&spliced).unwrap();
                assert_eq!(read, serde_json::to_value(&stored).unwrap());
                let back: Record = serde_json::from_slice(&spliced).unwrap();
                assert_eq!(back, stored);
                assert_eq!(back.canonical_unhashed(), c.canonical);
                // The metadata sliced from the same bytes is the record's metadata.
                let text = r
                    .metadata_json()
                    .expect("a canonical record has its metadata");
                let metadata: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(text).unwrap();
                assert_eq!(metadata, stored.metadata);
            }
        }
    }

    #[test]
    fn a_canonical_form_that_does_not_match_falls_back_to_serde() {
        let c = &chained(1, serde_json::json!({}))[0];
        let mut other = c.record.clone();
        other.created_at = "2001-01-01T00:00:00.000000Z".into();
        let r = CommittedRef {
            record: &other,
            canonical: Some(&c.canonical),
        };
        let mut out = Vec::new();
        r.write_json(&mut out);
        assert_eq!(out, serde_json::to_vec(&other).unwrap());
    }

    #[test]
    fn shared_and_owned_records_keep_request_order_and_the_wire_form() {
        let batch = chained(3, serde_json::json!({"k": 1}));
        let extra = batch[0].record.clone();
        let mut committed = Committed::with_capacity(3);
        committed.push_chained(2);
        committed.push_record(extra.clone());
        committed.push_chained(1);
        assert_eq!(committed.len(), 1, "shared records wait for the batch");
        let records: Vec<Record> = [&batch[2], &batch[1]]
            .iter()
            .map(|c| c.record.clone())
            .collect();
        committed.share(Arc::new(batch));
        assert_eq!(committed.len(), 3);
        let expected = vec![records[0].clone(), extra, records[1].clone()];
        let wire = serde_json::to_string(&committed).unwrap();
        assert_eq!(wire, serde_json::to_string(&expected).unwrap());
        let read: Committed = serde_json::from_str(&wire).unwrap();
        assert_eq!(read, committed);
        assert!(read.iter().all(|r| r.canonical.is_none()));
        assert_eq!(committed.clone().into_records(), expected);
    }
}
