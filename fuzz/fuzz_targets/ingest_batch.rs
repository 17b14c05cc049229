//! A batch body as `POST /v1/events/batch` takes it: the `{"events": [...]}` envelope
//! (copied from sealtrail-api, see `sealtrail_fuzz::ingest_batch`), each item parsed
//! strictly and validated by itself; the accepted events are chained, exported, signed
//! into a checkpoint and packed with their inclusion proofs.
//!
//! Beyond "never panics": a rejected item has a code and a message; whatever the ingest
//! accepts, the offline verifier accepts: the export audits clean against the signed
//! checkpoint, with an earlier checkpoint kept, and the pack's proofs check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::audit::Checks;
use sealtrail_core::pack::check_proofs;
use sealtrail_core::proof::{consistency_proof, verify_consistency};
use sealtrail_fuzz::{chain, export, pack_proofs, signed_checkpoint, tree, verifier};

fuzz_target!(|data: &[u8]| {
    let Some(items) = sealtrail_fuzz::ingest_batch(data) else {
        return;
    };
    let mut accepted = Vec::new();
    for item in items {
        match item {
            Ok(event) => accepted.push(event),
            Err(err) => assert!(!err.code.is_empty() && !err.message.is_empty()),
        }
    }
    if accepted.is_empty() {
        return;
    }
    let records = chain(accepted);
    let tree = tree(&records);
    let size = tree.size();
    let checkpoint = signed_checkpoint(size, tree.root());
    // an earlier checkpoint an auditor kept: the tree of the first half
    let kept_size = size / 2;
    let prefix = sealtrail_fuzz::tree(&records[..kept_size as usize]);
    let kept = signed_checkpoint(kept_size, prefix.root());
    let jsonl = export(&records);
    let key = verifier();
    let summary = sealtrail_fuzz::audit(
        Checks::default(),
        Some(&key),
        Some(&checkpoint),
        Some(&kept),
        &jsonl,
    )
    .unwrap_or_else(|f| panic!("an ingested batch does not audit: [{}] {f}", f.code));
    assert_eq!((summary.records, summary.uncovered), (size, 0));
    assert_eq!(summary.root, tree.root());
    let cp = summary
        .checkpoint
        .as_ref()
        .expect("checked against a checkpoint");
    check_proofs(&pack_proofs(&records), Some(cp)).expect("the pack's proofs check");
    let proof = consistency_proof(&tree, kept_size, size).expect("every node is in the tree");
    verify_consistency(kept_size, size, &proof, &prefix.root(), &tree.root())
        .expect("the log extends its prefix");
});
