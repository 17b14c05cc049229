//! Proofs from untrusted bytes: an evidence pack's `proofs.json` checked against a
//! checkpoint (`pack::check_proofs`, as `sealtrail verify` runs it on a pack), and raw
//! inclusion and consistency proofs with arbitrary sizes and hashes
//! (`proof::verify_inclusion`, `proof::verify_consistency`, as a client checks what a
//! server sent).
//!
//! Input: byte 0 even: `proofs.json \0 checkpoint text` (`sealtrail_fuzz::decode_pack_case`);
//! byte 0 odd: little-endian u64s `index size from to`, then 32-byte hashes
//! `leaf root from_root to_root proof…` (`sealtrail_fuzz::decode_raw_case`).
//!
//! Beyond "never panics": a failure has a code and a message; proofs made by the tree
//! code for a tree of the fuzzer's size verify, and the same proofs do not verify for
//! another leaf or another earlier root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::merkle::MemoryTree;
use sealtrail_core::pack::check_proofs;
use sealtrail_core::proof::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};
use sealtrail_fuzz::{decode_pack_case, decode_raw_case};

fn pack(rest: &[u8]) {
    let Some((proofs, checkpoint)) = decode_pack_case(rest) else {
        return;
    };
    if let Err(failure) = check_proofs(proofs, checkpoint.as_ref()) {
        assert!(failure.code == "bad_proof" && !failure.message.is_empty());
    }
}

fn raw(rest: &[u8]) {
    let ([index, size, from, to], hashes) = decode_raw_case(rest);
    let zero = [0u8; 32];
    let h = |i: usize| hashes.get(i).unwrap_or(&zero);
    let proof = hashes.get(4..).unwrap_or_default();
    let _ = verify_inclusion(h(0), index, size, proof, h(1));
    let _ = verify_consistency(from, to, proof, h(2), h(3));

    // Honest proofs from a small tree of the fuzzer's size.
    let n = size % 96 + 1;
    let mut tree = MemoryTree::new();
    let mut prefix_roots = vec![tree.root()];
    for i in 0..n {
        tree.push(&i.to_be_bytes());
        prefix_roots.push(tree.root());
    }
    let i = index % n;
    let path = inclusion_proof(&tree, i, n).expect("every node is in the tree");
    verify_inclusion(&i.to_be_bytes(), i, n, &path, &tree.root())
        .expect("an honest inclusion proof verifies");
    assert!(verify_inclusion(&(i + 1).to_be_bytes(), i, n, &path, &tree.root()).is_err());
    let m = from % (n + 1);
    let proof = consistency_proof(&tree, m, n).expect("every node is in the tree");
    verify_consistency(m, n, &proof, &prefix_roots[m as usize], &tree.root())
        .expect("an honest consistency proof verifies");
    if m > 0 && m < n {
        let other = &prefix_roots[(m - 1) as usize];
        assert!(verify_consistency(m, n, &proof, other, &tree.root()).is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => raw(rest),
        Some((_, rest)) => pack(rest),
        None => {}
    }
});
