//! The tamper matrix: each kind of tampering is detected and reported precisely, clean
//! data never fails, and switching off any one check lets some tampering through.
use super::*;
use crate::checkpoint::{Checkpoint, tenant_origin};
use crate::event::validate_event;
use crate::merkle::MemoryTree;
use crate::note::NoteSigner;
use crate::record::{Record, chain_step, hash_hex};
use proptest::prelude::*;
use serde_json::json;

/// A named change to a value.
type Edit<T> = fn(&mut T);

const ORIGIN: &str = "audit.example.com";

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [7; 32]).unwrap()
}

fn records(tenant: &str, n: usize) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut head = None;
    for i in 0..n {
        let ev = validate_event(
            json!({"actor": {"id": format!("user_{i}"), "type": "human"}, "action": "doc.read",
                   "resource": {"id": format!("doc_{i}"), "type": "doc"}, "outcome": "success",
                   "metadata": {"i": i, "ip": "10.0.0.1"}}),
            1_700_000_000_000_000 + i as i64,
            || format!("{tenant}-evt-{i}"),
        )
        .unwrap();
        let c = chain_step(head.as_ref(), tenant, ev);
        head = Some(c.head());
        out.push(c.record);
    }
    out
}

fn line(r: &Record) -> Vec<u8> {
    canonical_line(&r.canonical_unhashed(), &r.hash)
}

fn lines(rs: &[Record]) -> Vec<Vec<u8>> {
    rs.iter().map(line).collect()
}

/// Rewrites records as a dishonest operator would: every hash recomputed and every
/// link re-pointed, so the chain alone looks intact.
fn rewrite(mut rs: Vec<Record>) -> Vec<Record> {
    let mut prev = crate::record::ZERO_HASH.to_string();
    for r in &mut rs {
        r.prev_hash = prev;
        r.hash = hash_hex(&r.canonical_unhashed());
        prev = r.hash.clone();
    }
    rs
}

fn checkpoint_of(rs: &[Record], size: usize, signer: &NoteSigner) -> String {
    let mut t = MemoryTree::new();
    for r in &rs[..size] {
        t.push(&crate::merkle::record_leaf(&r.hash).unwrap());
    }
    Checkpoint::new(
        tenant_origin(ORIGIN, &rs[0].tenant_id),
        size as u64,
        t.root(),
    )
    .sign(signer)
    .unwrap()
}

fn audit(
    checks: Checks,
    lines: &[Vec<u8>],
    checkpoint: Option<&str>,
    trusted: Option<&str>,
) -> Result<AuditSummary, AuditFailure> {
    let key = signer().verifier();
    let mut a = Auditor::new(checks, Some(&key), checkpoint, trusted)?;
    for l in lines {
        a.feed(digest_line(l).as_ref())?;
    }
    a.finish()
}

/// One tampering: the input an auditor gets, and what must be reported.
struct Case {
    name: &'static str,
    lines: Vec<Vec<u8>>,
    checkpoint: Option<String>,
    trusted: Option<String>,
    code: &'static str,
    position: u64,
}

fn matrix() -> Vec<Case> {
    let s = signer();
    let rs = records("acme", 8);
    let clean = lines(&rs);
    let cp = checkpoint_of(&rs, 8, &s);
    let kept = checkpoint_of(&rs, 5, &s);
    let mut cases = Vec::new();
    let mut case =
        |name, lines, checkpoint: Option<&String>, trusted: Option<&String>, code, position| {
            cases.push(Case {
                name,
                lines,
                checkpoint: checkpoint.cloned(),
                trusted: trusted.cloned(),
                code,
                position,
            })
        };
    // a changed value in each member (the stored hash kept)
    let edits: [(&'static str, Edit<Record>); 12] = [
        ("action", |r| r.action.push('x')),
        ("actor", |r| r.actor.id.push('x')),
        ("created_at", |r| {
            r.created_at = r.created_at.replace("2023", "2024")
        }),
        ("hash", |r| {
            r.hash = r
                .hash
                .replacen(&r.hash[..1], if &r.hash[..1] == "0" { "1" } else { "0" }, 1)
        }),
        ("id", |r| r.id.push('x')),
        ("metadata", |r| {
            r.metadata.insert("extra".into(), json!(1));
        }),
        ("outcome", |r| r.outcome = crate::event::Outcome::Failure),
        ("prev_hash", |r| r.prev_hash = "ab".repeat(32)),
        ("resource", |r| r.resource.id.push('x')),
        ("sequence_number", |r| r.sequence_number += 10),
        ("tenant_id", |r| r.tenant_id = "other".into()),
        ("timestamp", |r| {
            r.timestamp = r.timestamp.replace(".0", ".9")
        }),
    ];
    for (name, edit) in edits {
        let mut r = rs[3].clone();
        edit(&mut r);
        let stored_hash = r.hash.clone();
        let mut ls = clean.clone();
        ls[3] = canonical_line(&r.canonical_unhashed(), &stored_hash);
        case(name, ls, Some(&cp), None, "hash_mismatch", 4);
    }
    let mut ls = clean.clone();
    let at = ls[2].windows(8).position(|w| w == b"10.0.0.1").unwrap();
    ls[2][at] = b'2'; // one byte of a value
    case("changed byte", ls, Some(&cp), None, "hash_mismatch", 3);
    let mut ls = clean.clone();
    ls.remove(4);
    case(
        "deleted middle record",
        ls,
        Some(&cp),
        None,
        "sequence_gap",
        5,
    );
    let mut ls = clean.clone();
    ls.insert(4, clean[3].clone());
    case(
        "duplicated record",
        ls,
        Some(&cp),
        None,
        "sequence_out_of_order",
        5,
    );
    let mut ls = clean.clone();
    ls.swap(2, 5);
    case(
        "two records swapped",
        ls,
        Some(&cp),
        None,
        "sequence_gap",
        3,
    );
    let other = records("globex", 8);
    let mut ls = clean.clone();
    ls[6] = line(&other[6]);
    case(
        "record from another tenant",
        ls,
        Some(&cp),
        None,
        "wrong_tenant",
        7,
    );
    case(
        "truncated tail",
        clean[..6].to_vec(),
        Some(&cp),
        None,
        "truncated",
        0,
    );
    let resigned = checkpoint_of(&rs, 4, &s);
    case(
        "truncated tail, re-signed, kept checkpoint",
        clean[..4].to_vec(),
        Some(&resigned),
        Some(&kept),
        "rollback",
        0,
    );
    // a full rewrite: one record changed, everything recomputed and re-signed
    let mut forged = rs.clone();
    forged[1].action = "doc.write".into();
    let forged = rewrite(forged);
    let forged_cp = checkpoint_of(&forged, 8, &s);
    case(
        "full rewrite, old checkpoint",
        lines(&forged),
        Some(&cp),
        None,
        "root_mismatch",
        0,
    );
    case(
        "full rewrite, re-signed, kept checkpoint",
        lines(&forged),
        Some(&forged_cp),
        Some(&kept),
        "fork",
        0,
    );
    let forged_same_size = checkpoint_of(&forged, 5, &s);
    case(
        "fork: two checkpoints of one size",
        lines(&forged)[..5].to_vec(),
        Some(&forged_same_size),
        Some(&kept),
        "fork",
        0,
    );
    let attacker = NoteSigner::from_seed(ORIGIN, [8; 32]).unwrap();
    case(
        "checkpoint signed by another key",
        lines(&forged),
        Some(&checkpoint_of(&forged, 8, &attacker)),
        None,
        "bad_signature",
        0,
    );
    // rewrites that only one chain check sees (no checkpoint given)
    let mut gap = rs.clone();
    gap.remove(3);
    case(
        "deleted record, chain relinked",
        lines(&rewrite(gap)),
        None,
        None,
        "sequence_gap",
        4,
    );
    let mut moved = rs.clone();
    moved[5].tenant_id = "globex".into();
    case(
        "record moved to another tenant, relinked",
        lines(&rewrite(moved)),
        None,
        None,
        "wrong_tenant",
        6,
    );
    let mut relinked = rs.clone();
    relinked[4].prev_hash = "cd".repeat(32);
    relinked[4].hash = hash_hex(&relinked[4].canonical_unhashed());
    let mut prev = relinked[4].hash.clone();
    for r in &mut relinked[5..] {
        r.prev_hash = prev;
        r.hash = hash_hex(&r.canonical_unhashed());
        prev = r.hash.clone();
    }
    case(
        "prev_hash changed, hashes recomputed",
        lines(&relinked),
        None,
        None,
        "prev_hash_mismatch",
        5,
    );
    case(
        "unreadable line",
        vec![clean[0].clone(), b"{not json".to_vec()],
        None,
        None,
        "unreadable_record",
        2,
    );
    cases
}

#[test]
fn every_tampering_is_detected_precisely() {
    for c in matrix() {
        let got = audit(
            Checks::default(),
            &c.lines,
            c.checkpoint.as_deref(),
            c.trusted.as_deref(),
        );
        let err = got.expect_err(c.name);
        assert_eq!(
            (err.code, err.position),
            (c.code, c.position),
            "{}: {err}",
            c.name
        );
    }
}

#[test]
fn each_check_is_needed() {
    let off: [(&str, Edit<Checks>); 8] = [
        ("record_hash", |c| c.record_hash = false),
        ("sequence", |c| c.sequence = false),
        ("prev_hash", |c| c.prev_hash = false),
        ("tenant", |c| c.tenant = false),
        ("signature", |c| c.signature = false),
        ("checkpoint_size", |c| c.checkpoint_size = false),
        ("checkpoint_root", |c| c.checkpoint_root = false),
        ("trusted", |c| c.trusted = false),
    ];
    let cases = matrix();
    for (name, disable) in off {
        let mut checks = Checks::default();
        disable(&mut checks);
        let slipped: Vec<&str> = cases
            .iter()
            .filter(|c| {
                audit(
                    checks,
                    &c.lines,
                    c.checkpoint.as_deref(),
                    c.trusted.as_deref(),
                )
                .is_ok()
            })
            .map(|c| c.name)
            .collect();
        assert!(
            !slipped.is_empty(),
            "without the {name} check every case is still caught"
        );
    }
}

#[test]
fn clean_logs_pass_with_every_checkpoint_pair() {
    let s = signer();
    let rs = records("acme", 13);
    let ls = lines(&rs);
    for size in 1..=13 {
        let cp = checkpoint_of(&rs, size, &s);
        for kept_size in 1..=size {
            let kept = checkpoint_of(&rs, kept_size, &s);
            let sum = audit(Checks::default(), &ls, Some(&cp), Some(&kept)).unwrap();
            assert_eq!(sum.records, 13);
            assert_eq!(sum.uncovered, 13 - size as u64);
        }
    }
    assert_eq!(
        audit(Checks::default(), &[], None, None).unwrap().records,
        0
    );
}

#[test]
fn slow_path_agrees_on_non_canonical_lines() {
    let rs = records("acme", 3);
    for r in &rs {
        let pretty = serde_json::to_vec_pretty(r).unwrap();
        assert!(canonical_object(&pretty).is_none());
        assert_eq!(
            digest_line(&pretty).unwrap(),
            digest_line(&line(r)).unwrap()
        );
    }
}

/// Found by `make fuzz` (verify_export): a line with bytes that are not UTF-8 in a string
/// passed for JCS, so its raw bytes were hashed and a forger who recomputed `hash` over
/// them got a line that is not JSON through the audit.
#[test]
fn a_line_that_is_not_utf8_is_unreadable_even_with_a_matching_hash() {
    let r = &records("acme", 1)[0];
    // `"doc.read"` becomes `"doc.` + four bytes that are not UTF-8 + `"`
    let forge = |mut bytes: Vec<u8>| {
        let at = bytes
            .windows(10)
            .position(|w| w == b"\"doc.read\"")
            .unwrap();
        bytes.splice(at + 5..at + 9, *b"\xff\xfe\xff\xfe");
        bytes
    };
    let unhashed = r.canonical_unhashed();
    let bad = forge(canonical_line(
        &unhashed,
        &hash_hex(&forge(unhashed.clone())),
    ));
    assert!(canonical_object(&bad).is_none());
    let failure = audit(Checks::default(), &[bad], None, None).unwrap_err();
    assert_eq!((failure.code, failure.position), ("unreadable_record", 1));
}

/// A line with a member twice (here `action`, prepended with another value) would
/// canonicalize to the signed record, last member winning, while a reader taking the first
/// sees another action: refused, at any depth.
#[test]
fn a_line_with_a_duplicate_member_is_refused() {
    let r = &records("acme", 1)[0];
    let line = canonical_line(&r.canonical_unhashed(), &r.hash);
    assert!(audit(Checks::default(), std::slice::from_ref(&line), None, None).is_ok());
    let text = String::from_utf8(line).unwrap();
    for forged in [
        text.replacen('{', r#"{"action":"everything.delete","#, 1),
        text.replacen(r#""metadata":{"#, r#""metadata":{"k":1,"k":2,"#, 1),
    ] {
        assert_ne!(forged, text, "the forgery applies");
        let failure = audit(
            Checks::default(),
            &[forged.clone().into_bytes()],
            None,
            None,
        )
        .expect_err(&forged);
        assert_eq!(
            (failure.code, failure.position),
            ("unreadable_record", 1),
            "{forged}"
        );
        assert!(
            failure.message.contains("appears twice"),
            "{}",
            failure.message
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fast_and_slow_paths_agree(meta in prop::collection::btree_map("[a-z\\u{e9}\\u{e000}]{1,4}",
            prop_oneof![any::<i64>().prop_map(|i| json!(i % 9_007_199_254_740_991)), any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
                        "[ -~\\u{0}-\\u{1f}\\u{e9}\\u{1f600}]{0,6}".prop_map(|s| json!(s)), any::<bool>().prop_map(|b| json!(b))], 0..5)) {
        let mut r = records("acme", 1).remove(0);
        r.metadata = meta.into_iter().collect();
        r.hash = hash_hex(&r.canonical_unhashed());
        let l = line(&r);
        let fast = digest_line(&l).unwrap();
        prop_assert_eq!(fast.computed_hash, fast.stored_hash);
        prop_assert_eq!(&fast, &digest_parsed(&l).unwrap());
    }

    #[test]
    fn any_byte_flip_is_detected(n in 1usize..6, pick in any::<prop::sample::Index>(), byte in any::<prop::sample::Index>(), bit in 0u8..8) {
        let rs = records("acme", n);
        let mut ls = lines(&rs);
        let cp = checkpoint_of(&rs, n, &signer());
        let i = pick.index(n);
        let j = byte.index(ls[i].len());
        ls[i][j] ^= 1 << bit;
        prop_assert!(audit(Checks::default(), &ls, Some(&cp), None).is_err());
    }
}

/// Records 1..=9 of `acme` with record 4 redacted by record 9 (a redaction event), as
/// export lines.
fn redacted_lines() -> (Vec<Record>, Vec<Vec<u8>>) {
    use crate::event::{Actor, normalize};
    use crate::record::{Redaction, redaction_input};
    let mut rs = records("acme", 8);
    let target = rs[3].clone();
    let input = redaction_input(
        Actor {
            email: None,
            id: "admin".into(),
            actor_type: None,
        },
        &target.id,
        4,
        "erasure request",
    );
    let ev = normalize(input, 1_800_000_000_000_000, || "red-1".into()).unwrap();
    let head = crate::record::ChainHead {
        sequence_number: 8,
        hash: rs[7].hash.clone(),
    };
    rs.push(chain_step(Some(&head), "acme", ev).record);
    let mut ls = lines(&rs);
    let redacted = target.redact(Redaction {
        event_id: "red-1".into(),
        sequence_number: 9,
    });
    ls[3] = serde_json_canonicalizer::to_vec(&redacted).unwrap();
    (rs, ls)
}

#[test]
fn a_log_with_a_redacted_record_verifies_and_counts_it() {
    let (rs, ls) = redacted_lines();
    let cp = checkpoint_of(&rs, 9, &signer());
    let kept = checkpoint_of(&rs, 5, &signer());
    let summary = audit(Checks::default(), &ls, Some(&cp), Some(&kept)).unwrap();
    assert_eq!((summary.records, summary.redacted), (9, 1));
    // Read by the general parser (members in another order) too.
    let mut v: serde_json::Value = serde_json::from_slice(&ls[3]).unwrap();
    let shuffled = format!(
        r#"{{"tenant_id":{},"redacted":{},"sequence_number":4,"prev_hash":{},"id":{},"hash":{}}}"#,
        v["tenant_id"], v["redacted"], v["prev_hash"], v["id"], v["hash"]
    );
    let mut ls2 = ls.clone();
    ls2[3] = shuffled.into_bytes();
    assert_eq!(
        audit(Checks::default(), &ls2, Some(&cp), None)
            .unwrap()
            .redacted,
        1
    );
    // Without its redaction event (the input stops before it): reported.
    let err = audit(Checks::default(), &ls[..8], None, None).unwrap_err();
    assert_eq!((err.code, err.position), ("redaction_unconfirmed", 4));
    // Claimed by another record than its redaction.
    v["redacted"]["sequence_number"] = json!(6);
    let mut ls3 = ls.clone();
    ls3[3] = serde_json_canonicalizer::to_vec(&v).unwrap();
    let err = audit(Checks::default(), &ls3, Some(&cp), None).unwrap_err();
    assert_eq!((err.code, err.position), ("redaction_unconfirmed", 4));
}

/// Every single-byte change of the redacted record and of its neighbours is detected
/// (against the signed checkpoint): redaction hides content, it does not open a gap.
#[test]
fn every_byte_flip_next_to_a_redacted_record_is_detected() {
    let (rs, ls) = redacted_lines();
    let cp = checkpoint_of(&rs, 9, &signer());
    for line in [2usize, 3, 4, 8] {
        for at in 0..ls[line].len() {
            for bit in [0u8, 5] {
                let mut tampered = ls.clone();
                tampered[line][at] ^= 1 << bit;
                assert!(
                    audit(Checks::default(), &tampered, Some(&cp), None).is_err(),
                    "flip of bit {bit} of byte {at} of line {line} went unnoticed: {}",
                    String::from_utf8_lossy(&tampered[line])
                );
            }
        }
    }
}

/// A log pruned by retention (issue 15): 12 records, a prune event (13) that removed
/// records 1..=5, and 2 more. The input starts at record 6; the prefix is the tree nodes
/// over the removed records' leaves; the tree of every record is `tree`.
fn pruned_log() -> (Vec<Record>, Vec<Vec<u8>>, Vec<Hash>, MemoryTree) {
    use crate::event::normalize;
    use crate::record::prune_input;
    let mut rs = records("acme", 12);
    let mut policy = serde_json::Map::new();
    policy.insert("events".into(), json!(7));
    let ev = normalize(
        prune_input("acme", 6, policy),
        1_800_000_000_000_000,
        || "prune-1".into(),
    )
    .unwrap();
    let head = crate::record::ChainHead {
        sequence_number: 12,
        hash: rs[11].hash.clone(),
    };
    rs.push(chain_step(Some(&head), "acme", ev).record);
    for (i, r) in records("acme", 2).into_iter().enumerate() {
        let head = crate::record::ChainHead {
            sequence_number: rs.len() as u64,
            hash: rs.last().unwrap().hash.clone(),
        };
        let ev = validate_event(
            json!({"actor": {"id": r.actor.id}, "action": "doc.write", "resource": {"id": "d", "type": "doc"},
                   "outcome": "success"}),
            1_800_000_001_000_000 + i as i64,
            || format!("after-{i}"),
        )
        .unwrap();
        rs.push(chain_step(Some(&head), "acme", ev).record);
    }
    let mut tree = MemoryTree::new();
    let mut prefix = crate::merkle::Frontier::new();
    for (i, r) in rs.iter().enumerate() {
        let leaf = crate::merkle::record_leaf(&r.hash).unwrap();
        tree.push(&leaf);
        if i < 5 {
            prefix.push(&leaf, |_, _| {});
        }
    }
    let ls = lines(&rs[5..]);
    (rs, ls, prefix.nodes().to_vec(), tree)
}

fn audit_from(
    first: u64,
    prefix: Vec<Hash>,
    lines: &[Vec<u8>],
    checkpoint: Option<&str>,
    trusted: Option<&str>,
    kept_proof: Option<&[Hash]>,
) -> Result<AuditSummary, AuditFailure> {
    let key = signer().verifier();
    let mut a = Auditor::new(Checks::default(), Some(&key), checkpoint, trusted)?;
    a.start_at_boundary(first, prefix, kept_proof)?;
    for l in lines {
        a.feed(digest_line(l).as_ref())?;
    }
    a.finish()
}

#[test]
fn a_log_pruned_by_retention_verifies_from_its_boundary() {
    let (rs, ls, prefix, _) = pruned_log();
    assert_eq!(rs.len(), 15);
    let cp = checkpoint_of(&rs, 15, &signer());
    let summary = audit_from(6, prefix.clone(), &ls, Some(&cp), None, None).unwrap();
    assert_eq!((summary.records, summary.retained_from), (15, 6));
    // A kept checkpoint at or after the boundary is checked from the records.
    let kept = checkpoint_of(&rs, 9, &signer());
    audit_from(6, prefix.clone(), &ls, Some(&cp), Some(&kept), None).unwrap();
    let kept = checkpoint_of(&rs, 5, &signer());
    audit_from(6, prefix.clone(), &ls, Some(&cp), Some(&kept), None).unwrap();
    // The checkpoint may also be older than the head.
    let cp12 = checkpoint_of(&rs, 12, &signer());
    let summary = audit_from(6, prefix, &ls, Some(&cp12), None, None).unwrap();
    assert_eq!(summary.uncovered, 3);
}

#[test]
fn a_kept_checkpoint_older_than_the_boundary_needs_its_consistency_proof() {
    let (rs, ls, prefix, tree) = pruned_log();
    let cp = checkpoint_of(&rs, 15, &signer());
    let kept = checkpoint_of(&rs, 3, &signer());
    let err = audit_from(6, prefix.clone(), &ls, Some(&cp), Some(&kept), None).unwrap_err();
    assert_eq!(err.code, "kept_before_boundary");
    let proof = crate::proof::consistency_proof(&tree, 3, 15).unwrap();
    audit_from(6, prefix.clone(), &ls, Some(&cp), Some(&kept), Some(&proof)).unwrap();
    // A kept checkpoint of another history: its proof does not hold.
    let mut other = rs.clone();
    other[1].metadata.insert("ip".into(), json!("10.9.9.9"));
    let other = rewrite(other);
    let forked = checkpoint_of(&other, 3, &signer());
    let err = audit_from(6, prefix, &ls, Some(&cp), Some(&forked), Some(&proof)).unwrap_err();
    assert_eq!(err.code, "fork");
}

#[test]
fn what_retention_cannot_hide() {
    let (rs, ls, prefix, _) = pruned_log();
    let cp = checkpoint_of(&rs, 15, &signer());
    // Records cut without a prune event naming the boundary (here: at 8).
    let mut prefix8 = crate::merkle::Frontier::new();
    for r in &rs[..7] {
        prefix8.push(&crate::merkle::record_leaf(&r.hash).unwrap(), |_, _| {});
    }
    let err = audit_from(8, prefix8.nodes().to_vec(), &ls[2..], Some(&cp), None, None).unwrap_err();
    assert_eq!(err.code, "boundary_unconfirmed");
    // A prefix that is not the removed records' tree.
    let mut wrong = prefix.clone();
    wrong[0][0] ^= 1;
    let err = audit_from(6, wrong, &ls, Some(&cp), None, None).unwrap_err();
    assert_eq!(err.code, "root_mismatch");
    // A prefix of the wrong shape.
    let err = audit_from(6, prefix[..1].to_vec(), &ls, Some(&cp), None, None).unwrap_err();
    assert_eq!(err.code, "bad_boundary");
    // The kept records rewritten from the boundary on (hashes and links redone).
    let mut kept: Vec<Record> = rs[5..].to_vec();
    kept[0].metadata.insert("ip".into(), json!("10.9.9.9"));
    let first_prev = kept[0].prev_hash.clone();
    let mut prev = first_prev;
    for r in &mut kept {
        r.prev_hash = prev;
        r.hash = hash_hex(&r.canonical_unhashed());
        prev = r.hash.clone();
    }
    let err = audit_from(6, prefix.clone(), &lines(&kept), Some(&cp), None, None).unwrap_err();
    assert_eq!(err.code, "root_mismatch");
    // The input does not start at the boundary.
    let err = audit_from(6, prefix.clone(), &ls[1..], Some(&cp), None, None).unwrap_err();
    assert_eq!((err.code, err.position), ("sequence_gap", 1));
    // The first kept record's link changed (rehashed): the next one no longer links.
    let mut relinked = rs[5..].to_vec();
    relinked[0].prev_hash = "ab".repeat(32);
    relinked[0].hash = hash_hex(&relinked[0].canonical_unhashed());
    let err = audit_from(6, prefix, &lines(&relinked), Some(&cp), None, None).unwrap_err();
    assert_eq!((err.code, err.position), ("prev_hash_mismatch", 2));
}

/// A retention archive (issue 15): a slice of the log, records `first..=last` with the
/// tree before `first` and a checkpoint at `last`. What confirms its start and its
/// redacted records comes after it; the slice must still reach the signed root.
#[test]
fn an_archive_is_a_slice_that_reaches_its_checkpoint() {
    let archive = |first: u64, prefix: Vec<Hash>, ls: &[Vec<u8>], cp: &str| {
        let key = signer().verifier();
        let mut a = Auditor::new(Checks::default(), Some(&key), Some(cp), None)?;
        a.as_archive();
        a.start_at_boundary(first, prefix, None)?;
        for l in ls {
            a.feed(digest_line(l).as_ref())?;
        }
        a.finish()
    };
    // Records 3..=8 of the redacted log: record 4 is redacted by record 9, after the slice.
    let (rs, ls) = redacted_lines();
    let mut before = crate::merkle::Frontier::new();
    for r in &rs[..2] {
        before.push(&crate::merkle::record_leaf(&r.hash).unwrap(), |_, _| {});
    }
    let prefix = before.nodes().to_vec();
    let cp8 = checkpoint_of(&rs, 8, &signer());
    let summary = archive(3, prefix.clone(), &ls[2..8], &cp8).unwrap();
    assert_eq!(
        (summary.retained_from, summary.records, summary.redacted),
        (3, 8, 1)
    );
    let later = summary.confirmed_after.expect("an archive's summary");
    assert!(later.start);
    assert_eq!(later.redactions, 1);
    // Not as an archive: the same input fails on both.
    let err = audit_from(3, prefix.clone(), &ls[2..8], Some(&cp8), None, None).unwrap_err();
    assert_eq!(err.code, "redaction_unconfirmed");
    // A slice from record 1 with its redaction inside: nothing left to later records.
    let cp9 = checkpoint_of(&rs, 9, &signer());
    let summary = archive(1, Vec::new(), &ls, &cp9).unwrap();
    assert_eq!(
        summary.confirmed_after,
        Some(crate::audit::ConfirmedAfter {
            start: false,
            redactions: 0
        })
    );
    // Still a slice of the signed log: a record changed, dropped or a wrong prefix fails.
    let mut changed = ls[2..8].to_vec();
    let mut r: Record = serde_json::from_slice(&changed[0]).unwrap();
    r.metadata.insert("ip".into(), json!("10.9.9.9"));
    r.hash = hash_hex(&r.canonical_unhashed());
    changed[0] = line(&r);
    assert!(archive(3, prefix.clone(), &changed, &cp8).is_err());
    let err = archive(3, prefix.clone(), &ls[2..7], &cp8).unwrap_err();
    assert_eq!(err.code, "truncated");
    let mut wrong = prefix;
    wrong[0][0] ^= 1;
    let err = archive(3, wrong, &ls[2..8], &cp8).unwrap_err();
    assert_eq!(err.code, "root_mismatch");
}
