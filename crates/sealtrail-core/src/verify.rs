//! Chain verification: walk a tenant's records in sequence order and report every broken
//! link. Works on stored rows (the canonical bytes without `hash`, and the stored `hash`),
//! so a verifier needs nothing but SHA-256 and a JSON parser.
//!
//! Each row is checked for: its bytes hash to its stored hash; its `sequence_number` is
//! the previous one + 1 (the first is 1); its `prev_hash` is the previous stored hash
//! (64 zeros for the first); its `tenant_id` is the tenant being walked.
//!
//! A **redacted** row (its stored form is the redacted record, [`crate::record::is_redacted`])
//! cannot be hashed again: it is checked for its sequence number, link and tenant, and
//! the record it names as its redaction (later in the chain) must be a redaction event
//! (`sealtrail.event.redact`) whose resource is this record's id; the next record's
//! `prev_hash` (and, for proofs, its Merkle leaf) still binds its stored hash. So marking
//! a record redacted hides its content but changes nothing else undetected, and a record
//! marked redacted without a redaction event is reported (`redaction_unconfirmed`).

use std::borrow::Cow;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::record::ZERO_HASH;

/// One broken record, with enough context for a human to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub event_id: String,
    pub sequence_number: u64,
    pub timestamp: String,
    pub action: String,
    pub actor_id: String,
    /// Machine-readable: `hash_mismatch`, `sequence_gap`, `prev_hash_mismatch`,
    /// `wrong_tenant`, `unreadable_record`, and for a walk resumed at an anchor
    /// ([`ChainWalker::resume_at`]) `changed_since_verified`.
    pub code: &'static str,
    pub reason: String,
}

/// The members the hot path needs; the rest are skipped unparsed.
#[derive(Deserialize)]
struct Links<'a> {
    sequence_number: u64,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    tenant_id: Cow<'a, str>,
}

/// Everything reported about a broken record.
#[derive(Deserialize)]
struct Described<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    sequence_number: u64,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    tenant_id: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    actor: ActorId<'a>,
}

#[derive(Deserialize)]
struct ActorId<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// The members of a redacted row.
#[derive(Deserialize)]
struct RedactedRow<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    sequence_number: u64,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    tenant_id: Cow<'a, str>,
    redacted: crate::record::Redaction,
}

/// What a redaction event must say.
#[derive(Deserialize)]
struct RedactionEvent<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    resource: ActorId<'a>,
}

/// Walks one tenant's chain. Feed it rows in sequence order with [`ChainWalker::check`].
#[derive(Debug, Clone)]
pub struct ChainWalker {
    tenant_id: String,
    expect_sequence: u64,
    prev_hash: String,
    checked: u64,
    /// A walk resumed at an anchor: the hash the next row (the anchor itself) must have.
    anchor: Option<String>,
    /// Redacted rows seen: redaction event's sequence number → (redacted record's
    /// sequence number, id), until the walk reaches that event.
    pending: std::collections::BTreeMap<u64, (u64, String, String)>,
    redacted: u64,
    /// A walk from a retention boundary: the boundary, whether a prune event naming it
    /// has been seen, and whether the first row's `prev_hash` is still to be taken as is.
    boundary: Option<Boundary>,
}

#[derive(Debug, Clone)]
struct Boundary {
    first: u64,
    confirmed: bool,
    open_link: bool,
}

impl ChainWalker {
    /// A walk from the start of the chain.
    pub fn new(tenant_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            expect_sequence: 1,
            prev_hash: ZERO_HASH.to_string(),
            checked: 0,
            anchor: None,
            pending: Default::default(),
            redacted: 0,
            boundary: None,
        }
    }

    /// A walk from a retention boundary (issue 15): the records before `first` were
    /// removed by retention. The first row fed in must be record `first`; its `prev_hash`
    /// (the hash of the last removed record) cannot be checked here and is taken as is —
    /// a signed checkpoint binds it (the tree keeps the removed records' leaves) — and the
    /// rows after it are checked as in a walk from the start. A later row must be the
    /// prune event (`sealtrail.retention.prune`) naming `first` as its boundary:
    /// [`ChainWalker::unconfirmed_boundary`] says if the walk has not met it.
    pub fn from_boundary(tenant_id: impl Into<String>, first: u64) -> Self {
        let mut walker = Self::new(tenant_id);
        walker.expect_sequence = first.max(1);
        if first > 1 {
            walker.prev_hash = String::new();
            walker.boundary = Some(Boundary {
                first,
                confirmed: false,
                open_link: true,
            });
        }
        walker
    }

    /// The retention boundary the walk started at, if no prune event naming it has been
    /// fed in (yet). At the end of a walk to the head, records were removed without the
    /// chain recording it.
    pub fn unconfirmed_boundary(&self) -> Option<u64> {
        self.boundary
            .as_ref()
            .filter(|b| !b.confirmed)
            .map(|b| b.first)
    }

    /// A walk that resumes at a record found valid earlier (`anchor`: its sequence number
    /// and hash). The first row fed in must be the anchor itself, unchanged: it must still
    /// hash to the anchor's hash (a record rewritten since, with or without its stored
    /// hash, is `changed_since_verified`); its own link to its predecessor is not checked
    /// again. The rows after it are checked as in a walk from the start.
    pub fn resume_at(tenant_id: impl Into<String>, anchor: &crate::record::ChainHead) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            expect_sequence: anchor.sequence_number,
            prev_hash: String::new(),
            checked: 0,
            anchor: Some(anchor.hash.clone()),
            pending: Default::default(),
            redacted: 0,
            boundary: None,
        }
    }

    /// Whether the walk was resumed at an anchor that no row has been fed for yet (after
    /// the last row: the chain no longer reaches the anchor).
    pub fn anchor_pending(&self) -> bool {
        self.anchor.is_some()
    }

    /// The sequence number of the last row fed in (0 before any).
    pub fn last_sequence(&self) -> u64 {
        self.expect_sequence - 1
    }

    /// Rows checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Redacted rows among them.
    pub fn redacted(&self) -> u64 {
        self.redacted
    }

    /// Redacted rows whose redaction event the walk has not reached: (redacted record's
    /// sequence number, its id, the redaction event's sequence number). At the end of a
    /// walk to the head, each is a record marked redacted by an event that does not exist.
    pub fn unconfirmed_redactions(&self) -> Vec<(u64, String, u64)> {
        self.pending
            .iter()
            .map(|(by, (seq, id, _))| (*seq, id.clone(), *by))
            .collect()
    }

    /// The stored hash of the last row fed in (the chain head if the walk reached it).
    pub fn last_hash(&self) -> &str {
        &self.prev_hash
    }

    /// Checks one row; `canonical` is the record without `hash` in JCS form and
    /// `stored_hash` the hash stored beside it. After a broken row the walk continues
    /// from that row, so `scan_all` reports each break once.
    pub fn check(&mut self, stored_hash: &str, canonical: &[u8]) -> Result<(), Box<Broken>> {
        self.checked += 1;
        if let Some(boundary) = &mut self.boundary {
            if std::mem::take(&mut boundary.open_link)
                && let Ok(links) = serde_json::from_slice::<Links>(canonical)
                && links.sequence_number == boundary.first
            {
                // The first kept record: its link leads to a removed record.
                self.prev_hash = links.prev_hash.into_owned();
            }
            if !boundary.confirmed && canonical.starts_with(crate::record::PRUNE_PREFIX) {
                let first = boundary.first;
                boundary.confirmed = crate::record::Record::from_canonical(canonical, stored_hash)
                    .is_ok_and(|r| r.prune_order() == Some(first));
            }
        }
        if crate::record::is_redacted(canonical) {
            return self.check_redacted(stored_hash, canonical);
        }
        let unconfirmed = if self.pending.is_empty() {
            None
        } else {
            self.confirm_redaction(canonical)
        };
        let mut computed = [0u8; 64];
        const_hex::encode_to_slice(Sha256::digest(canonical), &mut computed)
            .expect("64 hex digits");
        let hash_ok = computed.as_slice() == stored_hash.as_bytes();
        if let Some(anchor) = self.anchor.take() {
            return self.check_anchor(&anchor, stored_hash, canonical, hash_ok, &computed);
        }
        // Hot path: hash, sequence, link and tenant all as expected.
        if hash_ok
            && let Ok(links) = serde_json::from_slice::<Links>(canonical)
            && links.sequence_number == self.expect_sequence
            && links.prev_hash == self.prev_hash
            && links.tenant_id == self.tenant_id
        {
            self.advance(links.sequence_number, stored_hash);
            return match unconfirmed {
                Some(b) => Err(Box::new(b)),
                None => Ok(()),
            };
        }
        let computed = std::str::from_utf8(&computed)
            .expect("hex is ascii")
            .to_string();
        Err(Box::new(self.describe(
            stored_hash,
            canonical,
            hash_ok,
            &computed,
        )))
    }

    /// A redacted row: everything but its hash (see the module doc).
    fn check_redacted(&mut self, stored_hash: &str, canonical: &[u8]) -> Result<(), Box<Broken>> {
        self.redacted += 1;
        let row = match serde_json::from_slice::<RedactedRow>(canonical) {
            Ok(row) => row,
            Err(err) => {
                let seq = self.expect_sequence;
                self.anchor = None;
                self.advance(seq, stored_hash);
                return Err(Box::new(Broken {
                    event_id: String::new(),
                    sequence_number: seq,
                    timestamp: String::new(),
                    action: String::new(),
                    actor_id: String::new(),
                    code: "unreadable_record",
                    reason: format!("redacted record {seq} cannot be read: {err}"),
                }));
            }
        };
        let broken = |code: &'static str, reason: String| Broken {
            event_id: row.id.to_string(),
            sequence_number: row.sequence_number,
            timestamp: String::new(),
            action: String::new(),
            actor_id: String::new(),
            code,
            reason,
        };
        let anchor = self.anchor.take();
        let problem = if let Some(anchor) = &anchor {
            (stored_hash != anchor).then(|| {
                broken(
                    "changed_since_verified",
                    format!(
                        "record {} was verified earlier with hash {anchor}; now its stored hash is {stored_hash}",
                        row.sequence_number
                    ),
                )
            })
        } else if row.sequence_number != self.expect_sequence {
            Some(broken(
                "sequence_gap",
                format!(
                    "expected sequence_number {} but found {}",
                    self.expect_sequence, row.sequence_number
                ),
            ))
        } else if row.prev_hash != self.prev_hash {
            Some(broken(
                "prev_hash_mismatch",
                format!(
                    "prev_hash {} does not match the previous record's hash {}",
                    row.prev_hash, self.prev_hash
                ),
            ))
        } else if row.tenant_id != self.tenant_id {
            Some(broken(
                "wrong_tenant",
                format!(
                    "record belongs to tenant {:?}, not {:?}",
                    row.tenant_id, self.tenant_id
                ),
            ))
        } else if row.redacted.sequence_number <= row.sequence_number {
            Some(broken(
                "redaction_unconfirmed",
                format!(
                    "record {} is marked redacted by record {}, which is not after it",
                    row.sequence_number, row.redacted.sequence_number
                ),
            ))
        } else if let Some((other, _, _)) = self.pending.get(&row.redacted.sequence_number) {
            // One redaction event redacts one record: two records naming the same one
            // means at least one of them was forged as redacted.
            Some(broken(
                "redaction_unconfirmed",
                format!(
                    "record {} is marked redacted by record {}, which record {other} already names as its redaction",
                    row.sequence_number, row.redacted.sequence_number
                ),
            ))
        } else {
            None
        };
        if problem.is_none() {
            self.pending.insert(
                row.redacted.sequence_number,
                (
                    row.sequence_number,
                    row.id.to_string(),
                    row.redacted.event_id.clone(),
                ),
            );
        }
        self.advance(row.sequence_number, stored_hash);
        match problem {
            Some(b) => Err(Box::new(b)),
            None => Ok(()),
        }
    }

    /// A row that a redacted row named as its redaction must be that redaction event.
    /// (Reported on the redacted record; the row itself is checked as any other.)
    fn confirm_redaction(&mut self, canonical: &[u8]) -> Option<Broken> {
        let links = serde_json::from_slice::<Links>(canonical).ok()?;
        let (seq, id, by_id) = self.pending.remove(&links.sequence_number)?;
        let confirms = serde_json::from_slice::<RedactionEvent>(canonical).is_ok_and(|e| {
            e.action == crate::record::REDACT_ACTION && e.resource.id == id && e.id == by_id
        });
        if confirms {
            return None;
        }
        let by = links.sequence_number;
        Some(Broken {
            event_id: id,
            sequence_number: seq,
            timestamp: String::new(),
            action: String::new(),
            actor_id: String::new(),
            code: "redaction_unconfirmed",
            reason: format!(
                "record {seq} is marked redacted by record {by}, which is not a redaction of it"
            ),
        })
    }

    /// The first row of a walk resumed at `anchor`: the anchor record, unchanged.
    fn check_anchor(
        &mut self,
        anchor: &str,
        stored_hash: &str,
        canonical: &[u8],
        hash_ok: bool,
        computed: &[u8; 64],
    ) -> Result<(), Box<Broken>> {
        let computed = std::str::from_utf8(computed).expect("hex is ascii");
        let links = serde_json::from_slice::<Links>(canonical).ok();
        if hash_ok
            && stored_hash == anchor
            && let Some(links) = &links
            && links.sequence_number == self.expect_sequence
            && links.tenant_id == self.tenant_id
        {
            self.advance(links.sequence_number, stored_hash);
            return Ok(());
        }
        // Report it the way any broken row is reported; a record that is in its place
        // and its tenant's but no longer the one verified is `changed_since_verified`.
        let in_place = links.as_ref().is_none_or(|l| {
            l.sequence_number == self.expect_sequence && l.tenant_id == self.tenant_id
        });
        self.prev_hash = links
            .as_ref()
            .map(|l| l.prev_hash.to_string())
            .unwrap_or_default();
        let mut broken = self.describe(stored_hash, canonical, hash_ok, computed);
        if in_place {
            broken.code = "changed_since_verified";
            broken.reason = format!(
                "record {} was verified earlier with hash {anchor}; now its stored hash is \
                 {stored_hash} and it hashes to {computed}",
                broken.sequence_number
            );
        }
        Err(Box::new(broken))
    }

    fn advance(&mut self, sequence_number: u64, stored_hash: &str) {
        self.expect_sequence = sequence_number + 1;
        self.prev_hash.clear();
        self.prev_hash.push_str(stored_hash);
    }

    /// The slow path: says precisely what is wrong with a row, then moves past it.
    fn describe(
        &mut self,
        stored_hash: &str,
        canonical: &[u8],
        hash_ok: bool,
        computed: &str,
    ) -> Broken {
        let fields: Described = match serde_json::from_slice(canonical) {
            Ok(f) => f,
            Err(err) => {
                let broken = Broken {
                    event_id: String::new(),
                    sequence_number: self.expect_sequence,
                    timestamp: String::new(),
                    action: String::new(),
                    actor_id: String::new(),
                    code: "unreadable_record",
                    reason: format!("record {} cannot be read: {err}", self.expect_sequence),
                };
                let next = self.expect_sequence;
                self.advance(next, stored_hash);
                return broken;
            }
        };
        let (code, reason) = if !hash_ok {
            (
                "hash_mismatch",
                format!("stored hash {stored_hash} but the record hashes to {computed}"),
            )
        } else if fields.sequence_number != self.expect_sequence {
            (
                "sequence_gap",
                format!(
                    "expected sequence_number {} but found {}",
                    self.expect_sequence, fields.sequence_number
                ),
            )
        } else if fields.prev_hash != self.prev_hash {
            (
                "prev_hash_mismatch",
                format!(
                    "prev_hash {} does not match the previous record's hash {}",
                    fields.prev_hash, self.prev_hash
                ),
            )
        } else {
            (
                "wrong_tenant",
                format!(
                    "record belongs to tenant {:?}, not {:?}",
                    fields.tenant_id, self.tenant_id
                ),
            )
        };
        self.advance(fields.sequence_number, stored_hash);
        Broken {
            event_id: fields.id.into_owned(),
            sequence_number: fields.sequence_number,
            timestamp: fields.timestamp.into_owned(),
            action: fields.action.into_owned(),
            actor_id: fields.actor.id.into_owned(),
            code,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate_event;
    use crate::record::{ChainedRecord, chain_step};
    use proptest::prelude::*;
    use serde_json::json;

    pub(super) fn chain(tenant: &str, n: usize) -> Vec<ChainedRecord> {
        let mut out: Vec<ChainedRecord> = Vec::new();
        for i in 0..n {
            let ev = validate_event(
                json!({"actor": {"id": format!("a{i}")}, "action": "x.y", "resource": {"id": "r", "type": "t"},
                       "outcome": "success", "metadata": {"i": i}}),
                1_700_000_000_000_000 + i as i64,
                || format!("id-{i}"),
            )
            .unwrap();
            let head = out.last().map(|r| r.head());
            out.push(chain_step(head.as_ref(), tenant, ev));
        }
        out
    }

    fn walk(tenant: &str, rows: &[(String, Vec<u8>)]) -> Vec<Broken> {
        let mut w = ChainWalker::new(tenant);
        rows.iter()
            .filter_map(|(h, c)| w.check(h, c).err().map(|b| *b))
            .collect()
    }

    fn rows(recs: &[ChainedRecord]) -> Vec<(String, Vec<u8>)> {
        recs.iter()
            .map(|r| (r.record.hash.clone(), r.canonical.clone()))
            .collect()
    }

    /// `recs` with record `target` (0-based) redacted by a redaction event appended at
    /// the end; the rows as a store would hold them.
    fn redacted_chain(recs: &mut Vec<ChainedRecord>, target: usize) -> Vec<(String, Vec<u8>)> {
        use crate::event::{Actor, normalize};
        use crate::record::{Redaction, redaction_input};
        let t = &recs[target].record;
        let input = redaction_input(
            Actor {
                email: None,
                id: "admin".into(),
                actor_type: None,
            },
            &t.id,
            t.sequence_number,
            "GDPR Art. 17",
        );
        let ev = normalize(input, 1_800_000_000_000_000, || "redaction-1".into()).unwrap();
        let head = recs.last().map(|r| r.head());
        let tenant = t.tenant_id.clone();
        recs.push(chain_step(head.as_ref(), &tenant, ev));
        let by = Redaction {
            event_id: "redaction-1".into(),
            sequence_number: recs.len() as u64,
        };
        let mut rows = rows(recs);
        let r = &recs[target];
        rows[target].1 = r.record.redacted_canonical(&by, r.canonical.len()).unwrap();
        rows
    }

    #[test]
    fn a_redacted_record_verifies_by_its_links_and_its_redaction_event() {
        let mut recs = chain("t", 12);
        let rows = redacted_chain(&mut recs, 4);
        assert!(crate::record::is_redacted(&rows[4].1));
        let mut w = ChainWalker::new("t");
        for (h, c) in &rows {
            w.check(h, c).unwrap();
        }
        assert_eq!((w.checked(), w.redacted()), (13, 1));
        assert!(w.unconfirmed_redactions().is_empty());
        // The stored form reads back as the redacted record.
        let back = crate::record::Record::from_canonical(&rows[4].1, &rows[4].0).unwrap();
        assert_eq!(back, recs[4].record.redact(back.redacted.clone().unwrap()));
        assert_eq!(back.redacted.as_ref().unwrap().sequence_number, 13);
        let json = serde_json::to_value(&back).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "hash",
                "id",
                "prev_hash",
                "redacted",
                "sequence_number",
                "tenant_id"
            ]
        );
    }

    #[test]
    fn a_redaction_changes_nothing_else_undetected() {
        let mut recs = chain("t", 12);
        let good = redacted_chain(&mut recs, 4);
        let codes = |rows: &[(String, Vec<u8>)]| -> Vec<&'static str> {
            let mut w = ChainWalker::new("t");
            let mut codes: Vec<&'static str> = rows
                .iter()
                .filter_map(|(h, c)| w.check(h, c).err().map(|b| b.code))
                .collect();
            if !w.unconfirmed_redactions().is_empty() {
                codes.push("pending");
            }
            codes
        };
        assert!(codes(&good).is_empty());
        // Its stored hash changed: the next record's link breaks.
        let mut rows = good.clone();
        rows[4].0 = "ab".repeat(32);
        assert_eq!(codes(&rows), ["prev_hash_mismatch"]);
        // Its prev_hash (kept in the stored form) changed.
        let mut rows = good.clone();
        let text = String::from_utf8(rows[4].1.clone()).unwrap();
        rows[4].1 = text
            .replace(&recs[3].record.hash, &"cd".repeat(32))
            .into_bytes();
        assert_eq!(codes(&rows), ["prev_hash_mismatch"]);
        // Marked redacted by a record that is not its redaction.
        let mut rows = good.clone();
        let r = &recs[4];
        let by = crate::record::Redaction {
            event_id: "x".into(),
            sequence_number: 9,
        };
        rows[4].1 = r.record.redacted_canonical(&by, r.canonical.len()).unwrap();
        assert_eq!(codes(&rows), ["redaction_unconfirmed"]);
        // Marked redacted by the right record under another id.
        let by = crate::record::Redaction {
            event_id: "x".into(),
            sequence_number: 13,
        };
        rows[4].1 = r.record.redacted_canonical(&by, r.canonical.len()).unwrap();
        assert_eq!(codes(&rows), ["redaction_unconfirmed"]);
        // Marked redacted by a record past the end of the chain.
        let by = crate::record::Redaction {
            event_id: "x".into(),
            sequence_number: 99,
        };
        rows[4].1 = r.record.redacted_canonical(&by, r.canonical.len()).unwrap();
        assert_eq!(codes(&rows), ["pending"]);
        // An earlier record forged as redacted by the same (genuine) redaction event.
        let mut rows = good.clone();
        let r = &recs[1];
        let genuine = crate::record::Redaction {
            event_id: "redaction-1".into(),
            sequence_number: 13,
        };
        rows[1].1 = r
            .record
            .redacted_canonical(&genuine, r.canonical.len())
            .unwrap();
        // Reported at the second claim, and again at the event, which is not a
        // redaction of the record that claimed it first.
        assert_eq!(
            codes(&rows),
            ["redaction_unconfirmed", "redaction_unconfirmed"]
        );
        // Another record's stored form passed off as this one's redaction.
        let mut rows = good.clone();
        rows[5].1 = rows[4].1.clone();
        assert!(!codes(&rows).is_empty());
    }

    #[test]
    fn clean_chain_verifies() {
        assert!(walk("t", &rows(&chain("t", 50))).is_empty());
    }

    /// A walk resumed at record 20 checks 20 is unchanged and links 21.. to it.
    #[test]
    fn resumed_walk_checks_the_anchor_and_what_follows() {
        let recs = chain("t", 30);
        let all = rows(&recs);
        let anchor = recs[19].head();
        let resume = |rows: &[(String, Vec<u8>)]| {
            let mut w = ChainWalker::resume_at("t", &anchor);
            let broken: Vec<Broken> = rows
                .iter()
                .filter_map(|(h, c)| w.check(h, c).err().map(|b| *b))
                .collect();
            (w, broken)
        };
        let (w, broken) = resume(&all[19..]);
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!((w.checked(), w.last_sequence()), (11, 30));
        assert!(!w.anchor_pending());
        assert_eq!(w.last_hash(), recs[29].record.hash);

        // The anchor rewritten (stored hash updated to match): changed since verified.
        let mut forged = all[19..].to_vec();
        let text = String::from_utf8(forged[0].1.clone()).unwrap();
        forged[0].1 = text.replace("\"a19\"", "\"mallory\"").into_bytes();
        forged[0].0 = hex::encode(Sha256::digest(&forged[0].1));
        let (_, broken) = resume(&forged);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert_eq!(broken[0].code, "changed_since_verified");
        // ...and the next record no longer links to it.
        assert_eq!(broken[1].code, "prev_hash_mismatch");
        assert_eq!(broken[0].sequence_number, 20);
        assert_eq!(broken[0].actor_id, "mallory");

        // A row after the anchor that does not link to it is still caught.
        let mut tampered = all[19..].to_vec();
        let text = String::from_utf8(tampered[3].1.clone()).unwrap();
        tampered[3].1 = text.replace("\"a22\"", "\"a2x\"").into_bytes();
        let (_, broken) = resume(&tampered);
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert_eq!(broken[0].code, "hash_mismatch");

        // Nothing fed at all: the chain no longer reaches the anchor.
        let (w, broken) = resume(&[]);
        assert!(broken.is_empty() && w.anchor_pending());

        // Another record where the anchor should be: a sequence gap, not silently accepted.
        let (_, broken) = resume(&all[20..]);
        assert_eq!(broken.first().map(|b| b.code), Some("sequence_gap"));
    }

    #[test]
    fn detects_each_kind_of_break() {
        let recs = chain("t", 5);
        let mut r = rows(&recs);
        r[2].1 = String::from_utf8(r[2].1.clone())
            .unwrap()
            .replace("a2", "a9")
            .into_bytes();
        assert_eq!(walk("t", &r)[0].code, "hash_mismatch");

        let mut r = rows(&recs);
        r.remove(2);
        let b = walk("t", &r);
        assert_eq!((b[0].code, b[0].sequence_number), ("sequence_gap", 4));

        let mut r = rows(&recs);
        r.swap(1, 2);
        assert_eq!(walk("t", &r)[0].code, "sequence_gap");

        assert_eq!(walk("other", &rows(&recs))[0].code, "wrong_tenant");

        // a record rewritten with a consistent hash but a prev_hash that does not link
        let mut forged = recs[3].record.clone();
        forged.prev_hash = "ab".repeat(32);
        let canon = forged.canonical_unhashed();
        let mut r = rows(&recs);
        r[3] = (crate::record::hash_hex(&canon), canon);
        assert_eq!(walk("t", &r)[0].code, "prev_hash_mismatch");
    }

    proptest! {
        #[test]
        fn any_single_byte_flip_is_detected(n in 1usize..8, pick in any::<prop::sample::Index>(), byte in any::<prop::sample::Index>(), bit in 0u8..8) {
            let recs = chain("t", n);
            let mut r = rows(&recs);
            let i = pick.index(n);
            let j = byte.index(r[i].1.len());
            r[i].1[j] ^= 1 << bit;
            prop_assert!(!walk("t", &r).is_empty());
        }
    }
}

#[cfg(test)]
mod boundary_tests {
    use super::tests::chain;
    use super::*;
    use crate::event::{normalize, validate_event};
    use crate::record::{ChainedRecord, PRUNE_ACTION, chain_step, prune_input};
    use serde_json::json;

    /// `recs` plus a prune event naming `before`, then `more` ordinary records.
    fn pruned(tenant: &str, n: usize, before: u64, more: usize) -> Vec<ChainedRecord> {
        let mut recs = chain(tenant, n);
        let mut policy = serde_json::Map::new();
        policy.insert("events".into(), json!(n as u64 - before + 1));
        let ev = normalize(
            prune_input(tenant, before, policy),
            1_700_000_100_000_000,
            || "prune-1".into(),
        )
        .unwrap();
        recs.push(chain_step(Some(&recs[n - 1].head()), tenant, ev));
        for i in 0..more {
            let ev = validate_event(
                json!({"actor": {"id": "b"}, "action": "x.z", "resource": {"id": "r", "type": "t"},
                       "outcome": "success"}),
                1_700_000_200_000_000 + i as i64,
                || format!("after-{i}"),
            )
            .unwrap();
            let head = recs.last().unwrap().head();
            recs.push(chain_step(Some(&head), tenant, ev));
        }
        recs
    }

    fn walk_from(tenant: &str, first: u64, recs: &[ChainedRecord]) -> (Vec<Broken>, ChainWalker) {
        let mut w = ChainWalker::from_boundary(tenant, first);
        let broken = recs
            .iter()
            .filter_map(|r| w.check(&r.record.hash, &r.canonical).err().map(|b| *b))
            .collect();
        (broken, w)
    }

    #[test]
    fn a_prune_event_names_its_boundary() {
        let recs = pruned("t", 10, 7, 0);
        assert_eq!(recs[10].record.action, PRUNE_ACTION);
        assert!(recs[10].canonical.starts_with(crate::record::PRUNE_PREFIX));
        assert_eq!(recs[10].record.prune_order(), Some(7));
        assert_eq!(recs[3].record.prune_order(), None);
        // A boundary at or after the event itself orders nothing.
        let mut late = recs[10].record.clone();
        late.metadata
            .insert("before_sequence_number".into(), json!(11));
        assert_eq!(late.prune_order(), None);
    }

    #[test]
    fn a_walk_from_the_boundary_checks_every_kept_record() {
        let recs = pruned("t", 10, 7, 3);
        let (broken, w) = walk_from("t", 7, &recs[6..]);
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!(w.checked(), 8);
        assert_eq!(w.unconfirmed_boundary(), None);
        assert_eq!(w.last_hash(), recs.last().unwrap().record.hash);
        // Boundary 1 is a walk from the start.
        let (broken, w) = walk_from("t", 1, &recs);
        assert!(broken.is_empty() && w.unconfirmed_boundary().is_none());
    }

    #[test]
    fn removed_records_nobody_recorded_are_reported() {
        let recs = pruned("t", 10, 7, 2);
        // Records cut at 5, but the prune event names 7: not confirmed.
        let (broken, w) = walk_from("t", 5, &recs[4..]);
        assert!(broken.is_empty());
        assert_eq!(w.unconfirmed_boundary(), Some(5));
        // No prune event at all.
        let plain = chain("t", 10);
        let (_, w) = walk_from("t", 4, &plain[3..]);
        assert_eq!(w.unconfirmed_boundary(), Some(4));
    }

    #[test]
    fn after_the_boundary_every_change_is_still_caught() {
        let recs = pruned("t", 10, 7, 2);
        // The first kept record is not the boundary.
        let (broken, _) = walk_from("t", 7, &recs[7..]);
        assert_eq!(broken[0].code, "sequence_gap");
        // A record after the boundary removed.
        let mut gap: Vec<_> = recs[6..].to_vec();
        gap.remove(2);
        let (broken, _) = walk_from("t", 7, &gap);
        assert!(
            broken.iter().any(|b| b.code == "sequence_gap"),
            "{broken:?}"
        );
        // The first kept record rewritten (its hash no longer matches).
        let mut changed: Vec<_> = recs[6..].to_vec();
        changed[0].canonical = String::from_utf8(changed[0].canonical.clone())
            .unwrap()
            .replace("\"a6\"", "\"zz\"")
            .into_bytes();
        let (broken, _) = walk_from("t", 7, &changed);
        assert_eq!(broken[0].code, "hash_mismatch");
        // Its link changed (and rehashed): the next record no longer links to it.
        let mut relinked: Vec<_> = recs[6..].to_vec();
        let mut rec = relinked[0].record.clone();
        rec.prev_hash = "ab".repeat(32);
        rec.hash = rec.compute_hash();
        relinked[0].canonical = rec.canonical_unhashed();
        relinked[0].record = rec;
        let (broken, _) = walk_from("t", 7, &relinked);
        assert!(
            broken.iter().any(|b| b.code == "prev_hash_mismatch"),
            "{broken:?}"
        );
        // A prune event rewritten to name the forged boundary breaks its own hash.
        let mut forged: Vec<_> = recs[4..].to_vec();
        let at = forged
            .iter()
            .position(|r| r.record.action == PRUNE_ACTION)
            .unwrap();
        forged[at].canonical = String::from_utf8(forged[at].canonical.clone())
            .unwrap()
            .replace(
                "\"before_sequence_number\":7",
                "\"before_sequence_number\":5",
            )
            .into_bytes();
        let (broken, _) = walk_from("t", 5, &forged);
        assert!(
            broken.iter().any(|b| b.code == "hash_mismatch"),
            "{broken:?}"
        );
    }
}
