//! Chain verification: walk a tenant's records in sequence order and report every broken
//! link. Works on stored rows (the canonical bytes without `hash`, and the stored `hash`),
//! so a verifier needs nothing but SHA-256 and a JSON parser.
//!
//! Each row is checked for: its bytes hash to its stored hash; its `sequence_number` is
//! the previous one + 1 (the first is 1); its `prev_hash` is the previous stored hash
//! (64 zeros for the first); its `tenant_id` is the tenant being walked.

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

/// Walks one tenant's chain. Feed it rows in sequence order with [`ChainWalker::check`].
#[derive(Debug, Clone)]
pub struct ChainWalker {
    tenant_id: String,
    expect_sequence: u64,
    prev_hash: String,
    checked: u64,
    /// A walk resumed at an anchor: the hash the next row (the anchor itself) must have.
    anchor: Option<String>,
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
        }
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

    /// The stored hash of the last row fed in (the chain head if the walk reached it).
    pub fn last_hash(&self) -> &str {
        &self.prev_hash
    }

    /// Checks one row; `canonical` is the record without `hash` in JCS form and
    /// `stored_hash` the hash stored beside it. After a broken row the walk continues
    /// from that row, so `scan_all` reports each break once.
    pub fn check(&mut self, stored_hash: &str, canonical: &[u8]) -> Result<(), Box<Broken>> {
        self.checked += 1;
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
            return Ok(());
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

    fn chain(tenant: &str, n: usize) -> Vec<ChainedRecord> {
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
