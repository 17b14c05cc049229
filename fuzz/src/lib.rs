//! What the fuzz targets (`fuzz_targets/`) and the seed generator (`examples/seeds.rs`)
//! share: the fixed log key and tenant, the ingest and export steps as the service runs
//! them, the offline audit as `sealtrail verify` runs it, and independent oracles.
//!
//! The harnesses call sealtrail-core only; where the service does a step in a crate
//! the fuzz build does not link (the batch envelope in sealtrail-api, the line splitting
//! in `sealtrail verify`), the step is copied here and its origin named beside it.
#![forbid(unsafe_code)]

use sealtrail_core::audit::{AuditFailure, AuditSummary, Auditor, Checks, digest_line};
use sealtrail_core::checkpoint::{Checkpoint, tenant_origin};
use sealtrail_core::event::{validate_event, validate_event_json};
use sealtrail_core::json::parse_strict;
use sealtrail_core::merkle::{Hash, MemoryTree, record_leaf};
use sealtrail_core::note::{NoteSigner, NoteVerifier};
use sealtrail_core::pack::{InclusionProof, Proofs};
use sealtrail_core::proof::inclusion_proof;
use sealtrail_core::record::{ChainedRecord, chain_step};
use sealtrail_core::{NormalizedEvent, ValidationError};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The acceptance time every harness uses (the core takes no clock).
pub const NOW: sealtrail_core::time::Micros = 1_700_000_000_123_456;
/// The tenant every chain the harnesses build belongs to.
pub const TENANT: &str = "acme";
/// The log origin of the fixed key.
pub const LOG_ORIGIN: &str = "sealtrail.fuzz";

/// The log key the seeds are signed with and the harnesses verify with by default.
pub fn signer() -> NoteSigner {
    NoteSigner::from_seed(LOG_ORIGIN, [7; 32]).expect("a valid key name")
}

pub fn verifier() -> NoteVerifier {
    signer().verifier()
}

/// The signed checkpoint of `TENANT`'s tree of `size` leaves with root `root`.
pub fn signed_checkpoint(size: u64, root: Hash) -> String {
    Checkpoint::new(tenant_origin(LOG_ORIGIN, TENANT), size, root)
        .sign(&signer())
        .expect("a checkpoint text is a valid note text")
}

/// Splits `data` at NUL bytes into at most `n` sections (NUL never occurs in JSON text or
/// in a signed note, so a section boundary never cuts a meaningful input).
pub fn sections(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == 0).collect()
}

/// An input of the verify_export target: two header bytes, then the sections
/// `records \0 checkpoint \0 kept checkpoint \0 key` (trailing ones may be left out; an
/// empty checkpoint section is no checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportCase<'a> {
    /// Bit 0 (bit 1): the checkpoint (kept) section is a checkpoint text the harness signs
    /// with the fixed log key; otherwise it is a signed note.
    pub mode: u8,
    /// Each bit turns one of the auditor's checks off (see the target).
    pub disabled: u8,
    pub records: &'a [u8],
    pub checkpoint: Option<&'a [u8]>,
    pub kept: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
}

impl<'a> ExportCase<'a> {
    pub fn decode(data: &'a [u8]) -> Option<Self> {
        let [mode, disabled, rest @ ..] = data else {
            return None;
        };
        let parts = sections(rest, 4);
        Some(Self {
            mode: *mode,
            disabled: *disabled,
            records: parts[0],
            checkpoint: parts.get(1).copied().filter(|c| !c.is_empty()),
            kept: parts.get(2).copied().filter(|c| !c.is_empty()),
            key: parts.get(3).copied(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.mode, self.disabled];
        out.extend_from_slice(self.records);
        let tail = [self.checkpoint, self.kept, self.key];
        let used = tail.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        for section in &tail[..used] {
            out.push(0);
            out.extend_from_slice(section.unwrap_or_default());
        }
        out
    }
}

/// An input of the verify_proofs target in pack mode: an even byte, `proofs.json`, and
/// optionally `\0` and a checkpoint text.
pub fn encode_pack_case(proofs: &[u8], checkpoint: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(proofs);
    if let Some(text) = checkpoint {
        out.push(0);
        out.extend_from_slice(text);
    }
    out
}

/// An input of the verify_proofs target in raw mode (after the mode byte): little-endian
/// `index size from to`, then 32-byte hashes `leaf root from_root to_root proof…`; missing
/// bytes read as zeros.
pub fn decode_raw_case(rest: &[u8]) -> ([u64; 4], Vec<Hash>) {
    let mut words = [0u64; 4];
    for (i, w) in words.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        let chunk = rest.get(8 * i..).unwrap_or_default();
        let n = chunk.len().min(8);
        b[..n].copy_from_slice(&chunk[..n]);
        *w = u64::from_le_bytes(b);
    }
    let hashes = rest
        .get(32..)
        .unwrap_or_default()
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    (words, hashes)
}

/// The inverse of [`decode_raw_case`], mode byte included.
pub fn encode_raw_case(words: [u64; 4], hashes: &[Hash]) -> Vec<u8> {
    let mut out = vec![1u8];
    for w in words {
        out.extend(w.to_le_bytes());
    }
    for h in hashes {
        out.extend(h);
    }
    out
}

/// The inverse of [`encode_pack_case`] (after the mode byte): `proofs.json` and the
/// checkpoint, when its text parses.
pub fn decode_pack_case(rest: &[u8]) -> Option<(&str, Option<Checkpoint>)> {
    let parts = sections(rest, 2);
    let proofs = std::str::from_utf8(parts[0]).ok()?;
    let checkpoint = parts
        .get(1)
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| Checkpoint::parse(t).ok());
    Some((proofs, checkpoint))
}

/// Parses and validates one event as `POST /v1/events` does (`validate_event_json`), and
/// checks that the result is exactly what strict parsing then `validate_event` give (the
/// typed reading must accept nothing the general one refuses, and build the same event).
pub fn ingest_one(body: &[u8], new_id: &str) -> Result<NormalizedEvent, ValidationError> {
    let typed = validate_event_json(body, NOW, || new_id.to_string());
    let general = parse_strict(body)
        .map_err(ValidationError::from)
        .and_then(|value| validate_event(value, NOW, || new_id.to_string()));
    assert_eq!(typed, general, "the typed and the general reading disagree");
    typed
}

/// The batch envelope, as `sealtrail-api/src/ingest.rs` (`BatchEnvelope`) declares it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// What `POST /v1/events/batch` does with a body (`log_batch` then `ingest_batch` in
/// sealtrail-api): `None` when the whole body is refused (a `400`), else each item's
/// validated event or its error, by index.
pub fn ingest_batch(body: &[u8]) -> Option<Vec<Result<NormalizedEvent, ValidationError>>> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let envelope: BatchEnvelope = serde_json::from_slice(body).ok()?;
    let len = envelope.events.len();
    if len == 0 || len > sealtrail_core::limits::MAX_BATCH_EVENTS {
        return None;
    }
    Some(
        envelope
            .events
            .iter()
            .enumerate()
            .map(|(index, item)| {
                ingest_one(item.get().as_bytes(), &format!("gen-{index}"))
            })
            .collect(),
    )
}

/// Chains `events` onto an empty chain of [`TENANT`], as the chainer does.
pub fn chain(events: impl IntoIterator<Item = NormalizedEvent>) -> Vec<ChainedRecord> {
    let mut out: Vec<ChainedRecord> = Vec::new();
    for event in events {
        let head = out.last().map(ChainedRecord::head);
        out.push(chain_step(head.as_ref(), TENANT, event));
    }
    out
}

/// The JSONL export of `records` (`GET /v1/export?format=jsonl`: one JCS line each).
pub fn export(records: &[ChainedRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&sealtrail_core::audit::canonical_line(
            &r.canonical,
            &r.record.hash,
        ));
        out.push(b'\n');
    }
    out
}

/// The tree of `records` (leaf i: the raw 32 bytes of record i+1's hash).
pub fn tree(records: &[ChainedRecord]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for r in records {
        tree.push(&record_leaf(&r.record.hash).expect("a record hash is 64 hex digits"));
    }
    tree
}

/// `proofs.json` of an evidence pack of `records`: the inclusion proofs of the first and
/// the last record in the whole tree, as `sealtrail-api/src/export.rs` writes them.
pub fn pack_proofs(records: &[ChainedRecord]) -> String {
    use base64::Engine;
    let b64 = |h: &Hash| base64::engine::general_purpose::STANDARD.encode(h);
    let tree = tree(records);
    let size = tree.size();
    let mut proofs = Proofs::default();
    for seq in [1, size] {
        if seq == 0 || proofs.inclusion.iter().any(|p| p.sequence_number == seq) {
            continue;
        }
        let path = inclusion_proof(&tree, seq - 1, size).expect("every node is in the tree");
        proofs.inclusion.push(InclusionProof {
            sequence_number: seq,
            hash: records[seq as usize - 1].record.hash.clone(),
            leaf_index: seq - 1,
            tree_size: size,
            root_hash: b64(&tree.root()),
            hashes: path.iter().map(b64).collect(),
        });
    }
    serde_json::to_string(&proofs).expect("proofs serialize")
}

/// The record lines of a JSONL input as `sealtrail verify` reads them (`read_chunk` in
/// `crates/sealtrail/src/verify_cmd.rs`): split at `\n`, trailing `\r`/`\n` dropped,
/// blank lines skipped.
pub fn record_lines(input: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let mut line = &rest[..end];
        rest = &rest[end..];
        while let Some((last, init)) = line.split_last()
            && (*last == b'\n' || *last == b'\r')
        {
            line = init;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(line);
        }
    }
    lines
}

/// The offline audit of a JSONL export as `sealtrail verify` runs it (digest each line,
/// feed the auditor in order, finish), with the given checks and notes.
pub fn audit(
    checks: Checks,
    key: Option<&NoteVerifier>,
    checkpoint: Option<&str>,
    trusted: Option<&str>,
    jsonl: &[u8],
) -> Result<AuditSummary, AuditFailure> {
    let mut auditor = Auditor::new(checks, key, checkpoint, trusted)?;
    for line in record_lines(jsonl) {
        auditor.feed(digest_line(line).as_ref())?;
    }
    auditor.finish()
}

/// An independent record hash: parse the line, drop `hash`, canonicalize with the JCS
/// crate, SHA-256. `None` when the line is not a JSON object.
pub fn slow_record_hash(line: &[u8]) -> Option<Hash> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let serde_json::Value::Object(mut map) = value else {
        return None;
    };
    map.remove("hash");
    let canonical = serde_json_canonicalizer::to_vec(&map).ok()?;
    Some(Sha256::digest(&canonical).into())
}
