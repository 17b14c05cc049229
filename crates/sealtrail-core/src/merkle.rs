//! The per-tenant verifiable log: an RFC 6962 / RFC 9162 Merkle tree whose leaf `i` is
//! the 32 raw bytes of the `hash` of sequence number `i + 1` (DESIGN.md §2).
//!
//! - hashing: leaf = SHA-256(0x00 ‖ leaf), interior node = SHA-256(0x01 ‖ left ‖ right),
//!   the empty tree = SHA-256("");
//! - [`Frontier`]: the O(log n) state the chainer keeps per tenant to append leaves and
//!   compute the root, which emits every node hash that becomes complete so a store can
//!   keep it (amortized two per leaf);
//! - [`NodeId`] / [`NodeSource`]: the complete subtrees a store keeps, and how proof
//!   generation ([`crate::proof`]) reads them: any proof costs O(log n) node reads,
//!   never a scan of the chain.
//!
//! Verification of proofs lives in [`crate::proof`] too.
//!
//! Why hand-written: the tree is ~200 lines over `sha2`, which the core already uses.
//! `ct-merkle` 0.3 keeps every leaf in memory and pulls a second `sha2`/`digest` line;
//! `tlog_tiles` 0.2 (a port of Go's sumdb/tlog) has no in-memory frontier (each append
//! reads siblings back from storage) and pulls `url`, `base64` 0.21 and `thiserror` 1
//! into the pure core. Both are used as *dev*-dependencies instead: the tests check
//! this code against `tlog_tiles` as an independent implementation.

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ `leaf`).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// RFC 6962 interior node hash: SHA-256(0x01 ‖ `left` ‖ `right`).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The leaf of a record: the 32 raw bytes of its lowercase-hex `hash`.
pub fn record_leaf(hash_hex: &str) -> Option<Hash> {
    // Exactly 64 digits: `const_hex` would also take a `0x` prefix.
    if hash_hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    const_hex::decode_to_slice(hash_hex, &mut out).ok()?;
    Some(out)
}

/// A complete (perfect) subtree: the `2^level` leaves starting at leaf `index * 2^level`.
/// Level 0 nodes are leaf hashes. A node exists once all its leaves are appended, and
/// its hash never changes after that, so stores can keep it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub const fn new(level: u8, index: u64) -> Self {
        Self { level, index }
    }
    /// First leaf covered.
    pub fn start(self) -> u64 {
        self.index << self.level
    }
    /// Leaves covered.
    pub fn width(self) -> u64 {
        1 << self.level
    }
}

/// Where proof generation reads complete node hashes from (a store, a tile cache, an
/// in-memory tree). One call per proof, so a remote store answers in one round trip.
pub trait NodeSource {
    type Error;
    /// The hashes of `ids`, in the same order. Every id asked for is complete in the
    /// tree the caller is proving against; a missing one is an error of the source.
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

/// The complete nodes whose hashes, folded right to left, give the hash of the leaves
/// `[start, end)`, where `start` is a multiple of a power of two ≥ `end - start` (true of
/// every range RFC 6962's recursion produces). Largest (leftmost) first.
pub fn range_nodes(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::with_capacity(8);
    let mut at = start;
    let mut left = end - start;
    while left > 0 {
        let level = 63 - left.leading_zeros() as u8;
        out.push(NodeId::new(level, at >> level));
        at += 1 << level;
        left -= 1 << level;
    }
    out
}

/// Folds the hashes of [`range_nodes`] into the range's hash.
pub fn fold_range(hashes: &[Hash]) -> Hash {
    match hashes.split_last() {
        None => EMPTY_ROOT,
        Some((last, rest)) => rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)),
    }
}

/// The O(log n) state of an append-only tree: its size and the roots of the complete
/// subtrees of the binary decomposition of that size (the nodes of
/// [`range_nodes(0, size)`](range_nodes)), largest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a frontier of size {size} needs {want} node hashes, got {got}")]
pub struct FrontierError {
    pub size: u64,
    pub want: usize,
    pub got: usize,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from the hashes of
    /// [`Frontier::ids(size)`](Frontier::ids) (e.g. read back from a store).
    pub fn from_nodes(size: u64, nodes: Vec<Hash>) -> Result<Self, FrontierError> {
        let want = size.count_ones() as usize;
        if nodes.len() != want {
            return Err(FrontierError {
                size,
                want,
                got: nodes.len(),
            });
        }
        Ok(Self { size, nodes })
    }

    /// The nodes a frontier of `size` leaves holds.
    pub fn ids(size: u64) -> Vec<NodeId> {
        range_nodes(0, size)
    }

    /// Leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The node hashes held (see [`Frontier::ids`]).
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends the leaf `leaf` (raw leaf data, hashed here) and calls `completed` with
    /// every node that this leaf completes: the leaf itself (level 0), then each parent
    /// up to the largest completed subtree. O(1) amortized: two nodes per leaf on average.
    pub fn push(&mut self, leaf: &[u8], completed: impl FnMut(NodeId, Hash)) {
        self.push_leaf_hash(leaf_hash(leaf), completed);
    }

    /// [`Frontier::push`] of a leaf given by its hash (level-0 node, as a hash tile holds
    /// it) rather than its data.
    pub fn push_leaf_hash(&mut self, mut hash: Hash, mut completed: impl FnMut(NodeId, Hash)) {
        let mut index = self.size;
        let mut level = 0u8;
        completed(NodeId::new(0, index), hash);
        while index & 1 == 1 {
            let left = self.nodes.pop().expect("an odd index has a left sibling");
            hash = node_hash(&left, &hash);
            index >>= 1;
            level += 1;
            completed(NodeId::new(level, index), hash);
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The RFC 6962 root hash of the tree (`EMPTY_ROOT` when empty).
    pub fn root(&self) -> Hash {
        fold_range(&self.nodes)
    }
}

/// The RFC 6962 root of a list of leaf hashes, by the definition's recursion; a
/// reference for tests and small trees (O(n)).
pub fn root_of_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(
                &root_of_leaf_hashes(&leaves[..k]),
                &root_of_leaf_hashes(&leaves[k..]),
            )
        }
    }
}

/// The largest power of two strictly less than `n` (n ≥ 2): RFC 6962's split.
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An in-memory [`NodeSource`] holding every complete node of a tree; for tests, the
/// offline verifier (which rebuilds the tree from records) and small logs.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    frontier: Frontier,
    /// `levels[l][i]` = hash of `NodeId { level: l, index: i }`.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, leaf: &[u8]) {
        let levels = &mut self.levels;
        self.frontier.push(leaf, |id, hash| {
            if levels.len() <= id.level as usize {
                levels.push(Vec::new());
            }
            levels[id.level as usize].push(hash);
        });
    }
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }
}

impl NodeSource for MemoryTree {
    type Error = NodeId;
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, NodeId> {
        ids.iter()
            .map(|id| {
                self.levels
                    .get(id.level as usize)
                    .and_then(|l| l.get(id.index as usize))
                    .copied()
                    .ok_or(*id)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_leaf_is_exactly_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(record_leaf(&hex), Some([0xab; 32]));
        assert_eq!(record_leaf(&hex.to_uppercase()), Some([0xab; 32]));
        assert_eq!(
            record_leaf(&format!("0x{}", &hex[2..])),
            None,
            "no 0x prefix"
        );
        assert_eq!(record_leaf(&hex[2..]), None);
        assert_eq!(record_leaf(&format!("{}zz", &hex[2..])), None);
    }

    use super::*;
    use proptest::prelude::*;

    /// RFC 6962 reference leaves and the root of every prefix (from the Certificate
    /// Transparency test suite, as published with transparency-dev/merkle).
    pub(crate) const CT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn rfc6962_roots_of_every_prefix() {
        let mut tree = MemoryTree::new();
        assert_eq!(hex::encode(tree.root()), CT_ROOTS[0]);
        for (i, leaf) in CT_LEAVES.iter().enumerate() {
            tree.push(&hex::decode(leaf).unwrap());
            assert_eq!(hex::encode(tree.root()), CT_ROOTS[i + 1], "size {}", i + 1);
        }
    }

    #[test]
    fn split_point_is_rfc6962s() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split_point(n), k);
        }
    }

    #[test]
    fn frontier_reloads_from_its_nodes() {
        let mut tree = MemoryTree::new();
        for i in 0..77u32 {
            tree.push(&i.to_be_bytes());
            let size = tree.size();
            let nodes = tree.nodes(&Frontier::ids(size)).unwrap();
            let reloaded = Frontier::from_nodes(size, nodes).unwrap();
            assert_eq!(&reloaded, tree.frontier());
        }
        assert!(Frontier::from_nodes(3, vec![EMPTY_ROOT]).is_err());
    }

    proptest! {
        #[test]
        fn frontier_root_matches_the_definition(n in 0usize..200) {
            let leaves: Vec<Vec<u8>> = (0..n).map(|i| (i as u64).to_le_bytes().to_vec()).collect();
            let mut tree = MemoryTree::new();
            let mut emitted = 0;
            let mut f = Frontier::new();
            for l in &leaves {
                tree.push(l);
                f.push(l, |_, _| emitted += 1);
            }
            let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
            prop_assert_eq!(tree.root(), root_of_leaf_hashes(&hashes));
            prop_assert_eq!(f.root(), tree.root());
            // every complete node is emitted once: 2n - popcount(n)
            prop_assert_eq!(emitted as u64, 2 * n as u64 - (n as u64).count_ones() as u64);
        }

        #[test]
        fn agrees_with_tlog_tiles(n in 1u64..300) {
            let mut tree = MemoryTree::new();
            let mut stored: Vec<tlog_tiles::tlog::Hash> = Vec::new();
            for i in 0..n {
                let data = i.to_be_bytes();
                tree.push(&data);
                let reader = Stored(&stored);
                let new = tlog_tiles::tlog::stored_hashes(i, &data, &reader).unwrap();
                stored.extend(new);
            }
            let theirs = tlog_tiles::tlog::tree_hash(n, &Stored(&stored)).unwrap();
            prop_assert_eq!(tree.root(), theirs.0);
        }
    }

    pub(crate) struct Stored<'a>(pub &'a [tlog_tiles::tlog::Hash]);
    impl tlog_tiles::tlog::HashReader for Stored<'_> {
        fn read_hashes(
            &self,
            indexes: &[u64],
        ) -> Result<Vec<tlog_tiles::tlog::Hash>, tlog_tiles::tlog::Error> {
            Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
        }
    }
}
