//! The append rule: the one place that decides whether a batch of chained records may be
//! stored on top of what is stored. fjall, SQLite and Scylla all call it, so the three
//! engines cannot disagree about what a fork is.
//!
//! The rule is pure; a store gathers the few facts it needs (the tenant's stored head, the
//! stored hash at a replayed sequence number, the sequence number an id is stored at) and
//! the rule judges them. Per tenant, the records of a batch must be consecutive and
//! linked (`sequence_number` + 1, `prev_hash` = the hash before), no client id may appear
//! twice, and against the stored head:
//!
//! | case | records | decision |
//! |---|---|---|
//! | **new** | the first is head + 1 and links to the head's hash (or is 1 and links to [`ZERO_HASH`]) | written |
//! | **replay** | at or below the head, byte-identical (same hash) to the stored ones | skipped: a no-op |
//! | **fork** | at or below the head, a different hash | refused |
//! | **gap** | the first is beyond head + 1 | refused |
//! | **broken link** | `prev_hash` is not the hash of the record before it | refused |
//! | **duplicate id** | a new record reuses an id stored at another sequence number, or one earlier in the batch or group | refused |
//!
//! A refusal writes nothing of the batch. A replayed record the store cannot find (below
//! its own head) is not a refusal: the stored chain has a hole, which is corruption.

// foldhash: the rule hashes every record's (tenant, id) on the write path.
use foldhash::{HashMap, HashMapExt};

use sealtrail_core::record::{ChainHead, ChainedRecord, ZERO_HASH};

use crate::StoreError;

/// Why the append rule refused a batch. Nothing of the batch was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub tenant: String,
    /// The sequence number of the offending record.
    pub sequence_number: u64,
    pub kind: RefusalKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalKind {
    /// A different record is stored at this sequence number.
    Fork,
    /// The record would leave a gap after `after` (the stored head, or the record before it
    /// in the batch).
    Gap { after: u64 },
    /// The record's sequence number does not follow the record before it in the batch.
    OutOfOrder { after: u64 },
    /// `prev_hash` is not the hash of the record before it.
    BrokenLink,
    /// The record's id is already chained at `stored_at` (or earlier in the batch or the
    /// group commit; 0 when that sequence number is not known).
    DuplicateId { id: String, stored_at: u64 },
}

impl Refusal {
    fn new(record: &ChainedRecord, kind: RefusalKind) -> Self {
        Self {
            tenant: record.record.tenant_id.clone(),
            sequence_number: record.record.sequence_number,
            kind,
        }
    }

    /// A short, stable name of the case (for metrics and logs).
    pub fn case(&self) -> &'static str {
        match self.kind {
            RefusalKind::Fork => "fork",
            RefusalKind::Gap { .. } => "gap",
            RefusalKind::OutOfOrder { .. } => "out_of_order",
            RefusalKind::BrokenLink => "broken_link",
            RefusalKind::DuplicateId { .. } => "duplicate_id",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tenant, seq) = (&self.tenant, self.sequence_number);
        match &self.kind {
            RefusalKind::Fork => write!(
                f,
                "fork: tenant {tenant:?} sequence {seq} is already taken by another record"
            ),
            RefusalKind::Gap { after } => write!(
                f,
                "gap: tenant {tenant:?} sequence {seq} would leave a gap after {after}"
            ),
            RefusalKind::OutOfOrder { after } => write!(
                f,
                "out of order: tenant {tenant:?} sequence {seq} follows {after} in the batch"
            ),
            RefusalKind::BrokenLink => write!(
                f,
                "broken link: tenant {tenant:?} sequence {seq} does not link to the record before it"
            ),
            RefusalKind::DuplicateId { id, stored_at } => write!(
                f,
                "duplicate id: tenant {tenant:?} event id {id:?} (sequence {seq}) is already chained at {stored_at}"
            ),
        }
    }
}

/// A batch's records grouped by tenant, in order of first appearance (the chainer
/// interleaves tenants). Refuses a tenant whose records are not consecutive, not linked,
/// or repeat an id.
pub fn group_by_tenant(
    records: &[ChainedRecord],
) -> Result<Vec<(&str, Vec<&ChainedRecord>)>, Refusal> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<(&str, Vec<&ChainedRecord>)> = Vec::new();
    let mut ids: HashMap<(&str, &str), u64> = HashMap::new();
    for r in records {
        let t = r.record.tenant_id.as_str();
        let slot = *index.entry(t).or_insert_with(|| {
            out.push((t, Vec::new()));
            out.len() - 1
        });
        if let Some(prev) = out[slot].1.last() {
            let after = prev.record.sequence_number;
            if r.record.sequence_number != after + 1 {
                return Err(Refusal::new(r, RefusalKind::OutOfOrder { after }));
            }
            if r.record.prev_hash != prev.record.hash {
                return Err(Refusal::new(r, RefusalKind::BrokenLink));
            }
        }
        // Every id, client-chosen or server-made: a retry may send a minted id back.
        if let Some(stored_at) = ids.insert((t, &r.record.id), r.record.sequence_number) {
            return Err(Refusal::new(
                r,
                RefusalKind::DuplicateId {
                    id: r.record.id.clone(),
                    stored_at,
                },
            ));
        }
        out[slot].1.push(r);
    }
    Ok(out)
}

/// Splits one tenant's consecutive, linked records (from [`group_by_tenant`]) against its
/// stored `head`: returns how many leading records are at or below the head (replays, to
/// be checked with [`check_replayed`]); the rest are new. Refuses a gap and a first new
/// record that does not link to the head.
pub fn split_at_head(
    head: Option<&ChainHead>,
    records: &[&ChainedRecord],
) -> Result<usize, Refusal> {
    let Some(first) = records.first() else {
        return Ok(0);
    };
    let stored = head.map_or(0, |h| h.sequence_number);
    if first.record.sequence_number > stored + 1 {
        return Err(Refusal::new(first, RefusalKind::Gap { after: stored }));
    }
    let replayed = records
        .iter()
        .take_while(|r| r.record.sequence_number <= stored)
        .count();
    if let Some(next) = records.get(replayed) {
        let link = head.map_or(ZERO_HASH, |h| h.hash.as_str());
        // Records before `next` in the batch are replays, so (once they are checked) its
        // predecessor is the stored head whichever way it is reached.
        if next.record.prev_hash != link {
            return Err(Refusal::new(next, RefusalKind::BrokenLink));
        }
    }
    Ok(replayed)
}

/// Judges a record at or below the stored head against the hash stored at its sequence
/// number: the same hash is a replay (`Ok`), another is a fork, none is corruption (the
/// store holds a head above a hole).
pub fn check_replayed(record: &ChainedRecord, stored_hash: Option<&str>) -> Result<(), StoreError> {
    match stored_hash {
        Some(hash) if hash == record.record.hash => Ok(()),
        Some(_) => Err(StoreError::Refused(Refusal::new(record, RefusalKind::Fork))),
        None => Err(StoreError::Corrupt(format!(
            "tenant {:?}: record {} is missing below the stored head",
            record.record.tenant_id, record.record.sequence_number
        ))),
    }
}

/// Judges a record at or below the stored head that retention removed (issue 15), against
/// the tree leaf kept at its place: the same leaf is a replay (`Ok`), another is a fork,
/// none is corruption (the tree keeps every leaf of a removed record).
pub fn check_pruned_replay(
    record: &ChainedRecord,
    kept_leaf: Option<&[u8]>,
) -> Result<(), StoreError> {
    let leaf = sealtrail_core::merkle::record_leaf(&record.record.hash)
        .map(|l| sealtrail_core::merkle::leaf_hash(&l));
    match (kept_leaf, leaf) {
        (Some(kept), Some(leaf)) if kept == leaf.as_slice() => Ok(()),
        (Some(_), _) => Err(StoreError::Refused(Refusal::new(record, RefusalKind::Fork))),
        (None, _) => Err(StoreError::Corrupt(format!(
            "tenant {:?}: record {} was removed by retention and its tree leaf is missing",
            record.record.tenant_id, record.record.sequence_number
        ))),
    }
}

/// Judges a new record's id against where that id is stored (`None`: nowhere). Only a
/// client-chosen id is looked up; a server-made id is a fresh UUIDv7.
pub fn check_new_id(record: &ChainedRecord, stored_at: Option<u64>) -> Result<(), Refusal> {
    match stored_at {
        Some(stored_at) if stored_at != record.record.sequence_number => Err(Refusal::new(
            record,
            RefusalKind::DuplicateId {
                id: record.record.id.clone(),
                stored_at,
            },
        )),
        _ => Ok(()),
    }
}

/// The client ids written so far in one group commit (several batches in one durable
/// unit), which the engine's snapshot of earlier groups cannot show.
#[cfg(feature = "embedded")]
#[derive(Default)]
pub(crate) struct GroupIds<'a> {
    ids: foldhash::HashSet<(&'a str, &'a str)>,
}

#[cfg(feature = "embedded")]
impl<'a> GroupIds<'a> {
    /// Judges a new record's id against the group, and a client id also against the store
    /// (`stored_at`, looked up only then), and remembers it.
    pub(crate) fn check(
        &mut self,
        record: &'a ChainedRecord,
        stored_at: impl FnOnce() -> Result<Option<u64>, StoreError>,
    ) -> Result<(), StoreError> {
        let key = (record.record.tenant_id.as_str(), record.record.id.as_str());
        if self.ids.contains(&key) {
            return Err(StoreError::Refused(Refusal::new(
                record,
                RefusalKind::DuplicateId {
                    id: record.record.id.clone(),
                    stored_at: 0,
                },
            )));
        }
        // Only a client's id can be stored already; a server-made one is a fresh UUIDv7
        // (but it is remembered: a later batch of the group may carry it back).
        if record.client_id {
            check_new_id(record, stored_at()?)?;
        }
        self.ids.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::make_chain;

    fn refs(records: &[ChainedRecord]) -> Vec<&ChainedRecord> {
        records.iter().collect()
    }

    #[test]
    fn new_records_follow_the_head() {
        let chain = make_chain("t", None, 4);
        assert_eq!(split_at_head(None, &refs(&chain)), Ok(0));
        let head = chain[1].head();
        assert_eq!(split_at_head(Some(&head), &refs(&chain[2..])), Ok(0));
        // A replayed prefix, then new records.
        assert_eq!(split_at_head(Some(&head), &refs(&chain[1..])), Ok(1));
        // Everything replayed.
        assert_eq!(split_at_head(Some(&chain[3].head()), &refs(&chain)), Ok(4));
    }

    #[test]
    fn gaps_and_broken_links_are_refused() {
        let chain = make_chain("t", None, 4);
        let err = split_at_head(Some(&chain[0].head()), &refs(&chain[2..])).unwrap_err();
        assert_eq!(err.kind, RefusalKind::Gap { after: 1 });
        assert_eq!(err.sequence_number, 3);
        // An empty chain takes only sequence number 1 linked to the zero hash.
        assert_eq!(
            split_at_head(None, &refs(&chain[1..])).unwrap_err().kind,
            RefusalKind::Gap { after: 0 }
        );
        let mut bad = chain[0].clone();
        bad.record.prev_hash = "ab".repeat(32);
        assert_eq!(
            split_at_head(None, &[&bad]).unwrap_err().kind,
            RefusalKind::BrokenLink
        );
        // Record 3 computed on a head other than the stored record 2.
        let other = make_chain("t", Some(chain[0].head()), 1);
        let forked_next = make_chain("t", Some(other[0].head()), 1);
        assert_eq!(
            split_at_head(Some(&chain[1].head()), &refs(&forked_next))
                .unwrap_err()
                .kind,
            RefusalKind::BrokenLink
        );
    }

    #[test]
    fn batches_must_be_consecutive_linked_and_unique() {
        let chain = make_chain("t", None, 3);
        let other = make_chain("u", None, 2);
        let mixed = vec![
            chain[0].clone(),
            other[0].clone(),
            chain[1].clone(),
            other[1].clone(),
        ];
        let groups = group_by_tenant(&mixed).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, "t");
        assert_eq!(groups[1].1.len(), 2);

        let skipping = vec![chain[0].clone(), chain[2].clone()];
        assert_eq!(
            group_by_tenant(&skipping).unwrap_err().kind,
            RefusalKind::OutOfOrder { after: 1 }
        );
        let mut unlinked = chain.clone();
        unlinked[2].record.prev_hash = chain[0].record.hash.clone();
        assert_eq!(
            group_by_tenant(&unlinked).unwrap_err().kind,
            RefusalKind::BrokenLink
        );
        let mut twice = chain.clone();
        twice[2].record.id = twice[0].record.id.clone();
        let err = group_by_tenant(&twice).unwrap_err();
        assert_eq!(err.case(), "duplicate_id");
        assert_eq!(err.sequence_number, 3);
        // A server-made id sent back by a client's retry counts too.
        twice[0].client_id = false;
        assert_eq!(group_by_tenant(&twice).unwrap_err().case(), "duplicate_id");
    }

    #[test]
    fn replays_must_be_identical() {
        let chain = make_chain("t", None, 2);
        let hash = chain[1].record.hash.clone();
        assert!(check_replayed(&chain[1], Some(&hash)).is_ok());
        assert!(matches!(
            check_replayed(&chain[1], Some(&chain[0].record.hash)),
            Err(StoreError::Refused(Refusal {
                kind: RefusalKind::Fork,
                ..
            }))
        ));
        assert!(matches!(
            check_replayed(&chain[1], None),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_client_id_is_chained_once() {
        let chain = make_chain("t", None, 3);
        assert!(check_new_id(&chain[2], None).is_ok());
        assert!(check_new_id(&chain[2], Some(3)).is_ok()); // its own row
        assert_eq!(
            check_new_id(&chain[2], Some(1)).unwrap_err().kind,
            RefusalKind::DuplicateId {
                id: chain[2].record.id.clone(),
                stored_at: 1
            }
        );
        let mut group = GroupIds::default();
        assert!(group.check(&chain[0], || Ok(None)).is_ok());
        let mut again = chain[1].clone();
        again.record.id = chain[0].record.id.clone();
        assert!(matches!(
            group.check(&again, || Ok(None)),
            Err(StoreError::Refused(_))
        ));
    }
}
