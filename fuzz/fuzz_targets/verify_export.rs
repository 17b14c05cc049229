//! The offline verifier's input (`sealtrail verify`): a JSONL export, the signed
//! checkpoint to check it against, an earlier checkpoint the auditor kept, and the log's
//! verifier key — all untrusted bytes.
//!
//! Input layout: [`sealtrail_fuzz::ExportCase`]: two header bytes, then up to four
//! sections separated by NUL, `records \0 checkpoint \0 kept checkpoint \0 key`. With
//! header byte 0's bit 0 (bit 1), the checkpoint (kept) section is a checkpoint text that
//! the harness signs with the fixed log key, so mutated sizes and roots get past the
//! signature; otherwise it is used as a signed note. Header byte 1: each bit turns one of
//! the auditor's checks off. Without a key section the fixed log key verifies; a key
//! section that does not parse ends the run as it ends the command (exit 2).
//!
//! Beyond "never panics": a line the verifier reads in JCS form hashes to what the JCS
//! crate makes of it (the fast path never disagrees with the slow one); a key that parses
//! prints back to the same key; a failure has a code and a message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::audit::{Checks, digest_line};
use sealtrail_core::note::NoteVerifier;
use sealtrail_fuzz::{ExportCase, record_lines, signer, slow_record_hash, verifier};

fn checks(bits: u8) -> Checks {
    let on = |bit: u8| bits & (1 << bit) == 0;
    Checks {
        record_hash: on(0),
        sequence: on(1),
        prev_hash: on(2),
        tenant: on(3),
        signature: on(4),
        checkpoint_size: on(5),
        checkpoint_root: on(6),
        trusted: on(7),
    }
}

/// The note the auditor gets from a checkpoint section.
fn note(section: Option<&[u8]>, sign: bool) -> Option<String> {
    let text = String::from_utf8(section?.to_vec()).ok()?;
    if sign {
        // not a valid note text (no final newline, an empty line): left unsigned
        return Some(signer().sign(&text).unwrap_or(text));
    }
    Some(text)
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = ExportCase::decode(data) else {
        return;
    };
    let records = case.records;
    let checkpoint = note(case.checkpoint, case.mode & 1 != 0);
    let kept = note(case.kept, case.mode & 2 != 0);
    let key = match case.key {
        None => verifier(),
        Some(text) => {
            let Ok(text) = std::str::from_utf8(text) else {
                return;
            };
            match NoteVerifier::parse(text.trim()) {
                Ok(key) => {
                    let printed = key.to_string();
                    assert_eq!(NoteVerifier::parse(&printed).as_ref(), Ok(&key));
                    key
                }
                Err(err) => {
                    assert!(!err.to_string().is_empty());
                    return;
                }
            }
        }
    };

    for line in record_lines(records) {
        // (a redacted record is not hashed again: its computed hash is the stored one)
        if let Ok(digest) = digest_line(line)
            && digest.redacted_by.is_none()
        {
            assert_eq!(
                slow_record_hash(line),
                Some(digest.computed_hash),
                "the verifier hashes a line differently from the JCS crate"
            );
        }
    }
    let outcome = sealtrail_fuzz::audit(
        checks(case.disabled),
        Some(&key),
        checkpoint.as_deref(),
        kept.as_deref(),
        records,
    );
    match outcome {
        Ok(summary) => {
            if let Some(cp) = &summary.checkpoint
                && checks(case.disabled).checkpoint_size
            {
                assert!(summary.records >= cp.size);
                assert_eq!(summary.uncovered, summary.records - cp.size);
            }
        }
        Err(failure) => assert!(!failure.code.is_empty() && !failure.message.is_empty()),
    }
});
