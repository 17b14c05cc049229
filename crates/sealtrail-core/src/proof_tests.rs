use super::*;
use crate::merkle::MemoryTree;
use proptest::prelude::*;

const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

fn ct_tree(n: usize) -> MemoryTree {
    let mut t = MemoryTree::new();
    for l in &CT_LEAVES[..n] {
        t.push(&hex::decode(l).unwrap());
    }
    t
}

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// RFC 6962 known answers (Certificate Transparency's merkle tree test suite).
#[test]
fn rfc6962_inclusion_vectors() {
    let t = ct_tree(8);
    let cases: [(u64, &[&str]); 2] = [
        (
            0,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(inclusion_proof(&t, index, 8).unwrap(), want);
        let leaf = hex::decode(CT_LEAVES[index as usize]).unwrap();
        verify_inclusion(&leaf, index, 8, &want, &t.root()).unwrap();
    }
}

#[test]
fn rfc6962_consistency_vectors() {
    let t = ct_tree(8);
    let cases: [(u64, u64, &[&str]); 3] = [
        (
            2,
            8,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (from, to, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(
            consistency_proof(&t, from, to).unwrap(),
            want,
            "{from}->{to}"
        );
        let from_root = root_at(&t, from).unwrap();
        let to_root = root_at(&t, to).unwrap();
        assert_eq!(from_root, ct_tree(from as usize).root());
        verify_consistency(from, to, &want, &from_root, &to_root).unwrap();
    }
}

#[test]
fn edge_cases() {
    let t = ct_tree(8);
    assert!(inclusion_proof(&t, 8, 8).is_err());
    assert!(consistency_proof(&t, 5, 4).is_err());
    assert_eq!(consistency_proof(&t, 0, 8).unwrap(), Vec::<Hash>::new());
    assert_eq!(consistency_proof(&t, 8, 8).unwrap(), Vec::<Hash>::new());
    let r = t.root();
    verify_consistency(8, 8, &[], &r, &r).unwrap();
    assert_eq!(
        verify_consistency(8, 8, &[], &r, &[0; 32]),
        Err(VerifyError::RootMismatch)
    );
    verify_consistency(0, 8, &[], &[0; 32], &r).unwrap();
    assert_eq!(
        verify_consistency(3, 8, &[], &r, &r),
        Err(VerifyError::WrongLength)
    );
    // a one-leaf tree: empty path, root = leaf hash
    let one = ct_tree(1);
    assert_eq!(inclusion_proof(&one, 0, 1).unwrap(), Vec::<Hash>::new());
    verify_inclusion(&[], 0, 1, &[], &one.root()).unwrap();
}

fn tree(n: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.push(&i.to_be_bytes());
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails(
        size in 1u64..300, pick in any::<prop::sample::Index>(), which in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let t = tree(size);
        let index = pick.index(size as usize) as u64;
        let root = root_at(&t, size).unwrap();
        let proof = inclusion_proof(&t, index, size).unwrap();
        verify_inclusion(&index.to_be_bytes(), index, size, &proof, &root).unwrap();
        // the wrong leaf, index or size fails
        prop_assert!(verify_inclusion(&(index + 1).to_be_bytes(), index, size, &proof, &root).is_err());
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert!(verify_inclusion(&index.to_be_bytes(), other, size, &proof, &root).is_err());
        }
        // (a wrong size can verify when the path has the same shape: the size is bound by
        // the signed checkpoint that carries the root, not by the path)
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = which.index(bad.len());
            bad[i][0] ^= 1 << bit;
            prop_assert!(verify_inclusion(&index.to_be_bytes(), index, size, &bad, &root).is_err());
            let mut short = proof.clone();
            short.pop();
            prop_assert!(verify_inclusion(&index.to_be_bytes(), index, size, &short, &root).is_err());
        }
        let mut long = proof.clone();
        long.push([7; 32]);
        prop_assert!(verify_inclusion(&index.to_be_bytes(), index, size, &long, &root).is_err());
        // an independent implementation agrees (Go's sumdb/tlog, ported by Cloudflare)
        let theirs: Vec<tlog_tiles::tlog::Hash> = proof.iter().map(|h| tlog_tiles::tlog::Hash(*h)).collect();
        let leaf = tlog_tiles::tlog::record_hash(&index.to_be_bytes());
        prop_assert!(tlog_tiles::tlog::check_record(&theirs, size, tlog_tiles::tlog::Hash(root), index, leaf).is_ok());
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails(
        to in 1u64..300, pick in any::<prop::sample::Index>(), which in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let t = tree(to);
        let from = pick.index(to as usize + 1) as u64;
        let (from_root, to_root) = (root_at(&t, from).unwrap(), root_at(&t, to).unwrap());
        prop_assert_eq!(from_root, tree(from).root());
        let proof = consistency_proof(&t, from, to).unwrap();
        verify_consistency(from, to, &proof, &from_root, &to_root).unwrap();
        if from > 0 && from < to {
            let mut bad = proof.clone();
            let i = which.index(bad.len());
            bad[i][31] ^= 1 << bit;
            prop_assert!(verify_consistency(from, to, &bad, &from_root, &to_root).is_err());
            let mut wrong_root = from_root;
            wrong_root[0] ^= 1;
            prop_assert!(verify_consistency(from, to, &proof, &wrong_root, &to_root).is_err());
            prop_assert!(verify_consistency(from, to, &proof, &from_root, &wrong_root).is_err());
            prop_assert!(verify_consistency(from, to, &proof[..proof.len() - 1], &from_root, &to_root).is_err());
            let theirs: Vec<tlog_tiles::tlog::Hash> = proof.iter().map(|h| tlog_tiles::tlog::Hash(*h)).collect();
            prop_assert!(tlog_tiles::tlog::check_tree(
                &theirs, to, tlog_tiles::tlog::Hash(to_root), from, tlog_tiles::tlog::Hash(from_root)
            ).is_ok());
        }
    }
}
