//! The evidence pack (`GET /v1/export/evidence-pack`): a ZIP an auditor verifies with
//! `sealtrail verify` or by hand (VERIFY.md inside says how). Its entries:
//!
//! - [`RECORDS`]: one tenant's records 1..=n as JSONL, each line the JCS form of a record;
//! - [`CHECKPOINT`]: the signed checkpoint (C2SP signed note) of the tree of those n records;
//! - [`KEY`]: the log's verifier key, `<name>+<key id>+<base64>`;
//! - [`PROOFS`]: inclusion proofs (JSON) of some records in that checkpoint, as the API
//!   serves them, so an auditor can check a proof without the whole log; and, when
//!   retention removed the first records, the boundary and the tree over them
//!   ([`RetentionPrefix`]), the records then starting at the boundary;
//! - [`README`] (VERIFY.md): how to verify the pack by hand.
//!
//! A **retention archive** has the same entries, for a slice of the log ([`Archive`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::audit::AuditFailure;
use crate::checkpoint::Checkpoint;
use crate::merkle::{Hash, record_leaf};
use crate::proof::verify_inclusion;

pub const RECORDS: &str = "records.jsonl";
pub const CHECKPOINT: &str = "checkpoint.txt";
pub const KEY: &str = "log-key.txt";
pub const PROOFS: &str = "proofs.json";
pub const README: &str = "VERIFY.md";

/// An inclusion proof as `GET /v1/proof/inclusion` serves it, with the record's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub sequence_number: u64,
    /// The record's `hash` (lowercase hex): the leaf's 32 bytes.
    pub hash: String,
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Base64.
    pub root_hash: String,
    /// Base64, nearest the leaf first.
    pub hashes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proofs {
    pub inclusion: Vec<InclusionProof>,
    /// Set when retention removed the tenant's first records (issue 15): the pack's
    /// records start at the boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPrefix>,
    /// Set in a retention archive (`retention.archive_dir`), see [`Archive`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<Archive>,
}

/// What a **retention archive** is: the pack retention writes of the records it is about
/// to remove (`retention.archive_dir`), a slice of the tenant's log — records `first..=
/// last`, the checkpoint of the tree at `last`, and (when `first` > 1, an earlier archive
/// holding the records before) the tree over the records before `first`
/// ([`RetentionPrefix`]). So it proves that its records are exactly positions
/// `first..=last` of the signed log. What confirms its start (the prune event naming
/// `first`) and its redacted records (their redaction events) comes after `last`, in the
/// log, and is not in it: `sealtrail verify` checks those that are, and says so
/// ([`crate::audit::Auditor::as_archive`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    pub first: u64,
    pub last: u64,
    /// The boundary of the prune event the archive was written for: `last + 1`.
    pub removed_before: u64,
}

/// What stands in for the records retention removed: the boundary, and the tree over the
/// removed records' leaves as the hashes of `Frontier::ids(retained_from - 1)` (base64),
/// so the kept records' tree still reaches the checkpoint's root
/// (`Auditor::start_at_boundary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPrefix {
    pub retained_from: u64,
    pub prefix: Vec<String>,
}

impl RetentionPrefix {
    /// The prefix hashes, decoded.
    pub fn hashes(&self) -> Result<Vec<Hash>, AuditFailure> {
        self.prefix
            .iter()
            .map(|h| {
                hash_b64(h).ok_or_else(|| bad(format!("{PROOFS}: a bad retention prefix hash")))
            })
            .collect()
    }
}

/// The retention prefix of `proofs.json`, if any.
pub fn retention_of(proofs: &str) -> Result<Option<RetentionPrefix>, AuditFailure> {
    Ok(parse(proofs)?.retention)
}

/// The archive range of `proofs.json`, if the pack is a retention archive.
pub fn archive_of(proofs: &str) -> Result<Option<Archive>, AuditFailure> {
    Ok(parse(proofs)?.archive)
}

fn parse(proofs: &str) -> Result<Proofs, AuditFailure> {
    serde_json::from_str(proofs).map_err(|e| bad(format!("{PROOFS} is unreadable: {e}")))
}

fn bad(message: String) -> AuditFailure {
    AuditFailure {
        position: 0,
        sequence_number: None,
        event_id: None,
        code: "bad_proof",
        message,
    }
}

fn hash_b64(s: &str) -> Option<Hash> {
    B64.decode(s).ok()?.try_into().ok()
}

/// Checks every proof of `proofs.json` against `checkpoint` (the pack's, verified).
pub fn check_proofs(proofs: &str, checkpoint: Option<&Checkpoint>) -> Result<(), AuditFailure> {
    let proofs: Proofs =
        serde_json::from_str(proofs).map_err(|e| bad(format!("{PROOFS} is unreadable: {e}")))?;
    for p in &proofs.inclusion {
        let what = format!("inclusion proof of sequence_number {}", p.sequence_number);
        let root = hash_b64(&p.root_hash).ok_or_else(|| bad(format!("{what}: bad root_hash")))?;
        let path: Option<Vec<Hash>> = p.hashes.iter().map(|h| hash_b64(h)).collect();
        let path = path.ok_or_else(|| bad(format!("{what}: bad hashes")))?;
        let leaf = record_leaf(&p.hash).ok_or_else(|| bad(format!("{what}: bad hash")))?;
        if p.leaf_index.checked_add(1) != Some(p.sequence_number) {
            return Err(bad(format!(
                "{what}: leaf_index must be sequence_number - 1"
            )));
        }
        if let Some(cp) = checkpoint
            && cp.size == p.tree_size
            && cp.root != root
        {
            return Err(bad(format!(
                "{what}: root_hash is not the checkpoint's root"
            )));
        }
        verify_inclusion(&leaf, p.leaf_index, p.tree_size, &path, &root)
            .map_err(|e| bad(format!("{what}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `leaf_index` of u64::MAX overflowed `+ 1` (a panic where overflow checks are
    /// on, as in the fuzz build) instead of refusing the proof (`make fuzz`, verify_proofs).
    #[test]
    fn a_leaf_index_at_the_end_of_u64_is_a_bad_proof() {
        let proofs = format!(
            r#"{{"inclusion":[{{"sequence_number":0,"hash":"{}","leaf_index":{},"tree_size":1,"root_hash":"{}","hashes":[]}}]}}"#,
            "0".repeat(64),
            u64::MAX,
            B64.encode([0u8; 32])
        );
        let failure = check_proofs(&proofs, None).unwrap_err();
        assert_eq!(failure.code, "bad_proof");
        assert!(
            failure.message.contains("leaf_index"),
            "{}",
            failure.message
        );
    }
}
