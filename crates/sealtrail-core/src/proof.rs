//! Inclusion and consistency proofs (RFC 6962 §2.1.1–2.1.2; verification as in
//! RFC 9162 §2.1.3.2 and §2.1.4.2).
//!
//! Generation reads complete node hashes from a [`NodeSource`] in **one** call per
//! proof, asking for at most ~2·log₂(n) nodes: serving a proof never scans the chain.

use crate::merkle::{Hash, NodeId, NodeSource, fold_range, leaf_hash, node_hash, range_nodes};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    /// The request itself is impossible (an index past the tree, sizes out of order).
    #[error("{0}")]
    InvalidRequest(String),
    /// The node source failed.
    #[error("reading node hashes failed")]
    Source(E),
}

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree sizes out of order: {from} > {to}")]
    SizesOutOfOrder { from: u64, to: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("the proof does not lead to the earlier root hash")]
    FirstRootMismatch,
}

/// The ranges `[start, end)` whose hashes make the inclusion proof of leaf `index` in a
/// tree of `size` leaves, in proof order (nearest the leaf first).
fn inclusion_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    // PATH(m, D[lo:hi]): descend toward the leaf, collecting the sibling range at each
    // split; the RFC lists them bottom-up, so reverse at the end.
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = crate::merkle::split_point(hi - lo);
        if index < lo + k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    out
}

/// The ranges whose hashes make the consistency proof from `from` to `to` leaves
/// (0 < from < to), in proof order.
fn consistency_ranges(from: u64, to: u64) -> Vec<(u64, u64)> {
    // SUBPROOF(m, D[lo:hi], b), unrolled: the recursion only ever descends one way.
    let mut out = Vec::new();
    let (mut lo, mut hi, mut m, mut whole) = (0u64, to, from, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push((lo, hi));
            }
            break;
        }
        let k = crate::merkle::split_point(n);
        if m <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    out
}

/// Reads every range's nodes in one call and folds each range into its hash.
fn hash_ranges<S: NodeSource>(
    source: &S,
    ranges: &[(u64, u64)],
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    let per_range: Vec<Vec<NodeId>> = ranges.iter().map(|&(a, b)| range_nodes(a, b)).collect();
    let ids: Vec<NodeId> = per_range.iter().flatten().copied().collect();
    let hashes = source.nodes(&ids).map_err(ProofError::Source)?;
    if hashes.len() != ids.len() {
        return Err(ProofError::InvalidRequest(
            "the node source answered the wrong number of hashes".into(),
        ));
    }
    let mut at = 0;
    Ok(per_range
        .iter()
        .map(|ids| {
            let h = fold_range(&hashes[at..at + ids.len()]);
            at += ids.len();
            h
        })
        .collect())
}

/// The node ids [`inclusion_proof`] reads (for sources that want to prefetch).
pub fn inclusion_proof_nodes(index: u64, size: u64) -> Vec<NodeId> {
    inclusion_ranges(index, size)
        .iter()
        .flat_map(|&(a, b)| range_nodes(a, b))
        .collect()
}

/// The node ids [`consistency_proof`] reads.
pub fn consistency_proof_nodes(from: u64, to: u64) -> Vec<NodeId> {
    if from == 0 || from >= to {
        return Vec::new();
    }
    consistency_ranges(from, to)
        .iter()
        .flat_map(|&(a, b)| range_nodes(a, b))
        .collect()
}

/// The audit path of leaf `index` (0-based) in the tree of the first `size` leaves.
pub fn inclusion_proof<S: NodeSource>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::InvalidRequest(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    hash_ranges(source, &inclusion_ranges(index, size))
}

/// The consistency proof that the tree of `to` leaves extends the tree of `from` leaves.
/// Empty when `from` is 0 or equals `to`.
pub fn consistency_proof<S: NodeSource>(
    source: &S,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if from > to {
        return Err(ProofError::InvalidRequest(format!(
            "tree sizes out of order: {from} > {to}"
        )));
    }
    if from == 0 || from == to {
        return Ok(Vec::new());
    }
    hash_ranges(source, &consistency_ranges(from, to))
}

/// The root hash of the first `size` leaves, from at most log₂(size) + 1 stored nodes.
pub fn root_at<S: NodeSource>(source: &S, size: u64) -> Result<Hash, ProofError<S::Error>> {
    Ok(hash_ranges(source, &[(0, size)])?.remove(0))
}

/// Verifies that `leaf` (raw leaf data) is leaf `index` of the tree of `size` leaves
/// whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &[u8],
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(leaf);
    for p in proof {
        if s == 0 {
            return Err(VerifyError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(VerifyError::WrongLength);
    }
    if &r != root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `to` leaves with root `to_root` extends the tree of `from`
/// leaves with root `from_root` (RFC 9162 §2.1.4.2). `from == 0` is consistent with
/// anything (empty proof); `from == to` needs an empty proof and equal roots.
pub fn verify_consistency(
    from: u64,
    to: u64,
    proof: &[Hash],
    from_root: &Hash,
    to_root: &Hash,
) -> Result<(), VerifyError> {
    if from > to {
        return Err(VerifyError::SizesOutOfOrder { from, to });
    }
    if from == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(VerifyError::WrongLength)
        };
    }
    if from == to {
        if !proof.is_empty() {
            return Err(VerifyError::WrongLength);
        }
        return if from_root == to_root {
            Ok(())
        } else {
            Err(VerifyError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(VerifyError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(*from_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(VerifyError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(VerifyError::WrongLength);
    }
    if &fr != from_root {
        return Err(VerifyError::FirstRootMismatch);
    }
    if &sr != to_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
#[path = "proof_tests.rs"]
mod tests;
