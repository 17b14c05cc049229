//! The offline verifier: everything an auditor checks about one tenant's exported log,
//! with no server and nothing but the records, a signed checkpoint and the log's public
//! key (plus, optionally, an earlier checkpoint they kept).
//!
//! Two stages, so a caller can run the first on many threads:
//! 1. [`digest_line`] (pure, per record): parses one exported record line and recomputes
//!    its hash (SHA-256 of the JCS form without `hash`);
//! 2. [`Auditor::feed`] (sequential): checks the record's hash, tenant, sequence number
//!    and `prev_hash` link, and appends its leaf to the Merkle tree (O(log n) memory);
//!    [`Auditor::finish`] then checks the tree against the signed checkpoint and the
//!    kept one.
//!
//! The first failure is reported precisely ([`AuditFailure`]); clean data never fails.

use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::jcs_scan::canonical_object;
use crate::merkle::{Frontier, Hash};
use crate::note::NoteVerifier;

/// The members of a record, in JCS order (DESIGN.md §2).
const MEMBERS: [&str; 12] = [
    "action",
    "actor",
    "created_at",
    "hash",
    "id",
    "metadata",
    "outcome",
    "prev_hash",
    "resource",
    "sequence_number",
    "tenant_id",
    "timestamp",
];

/// The members of a redacted record (issue 15), in JCS order.
const REDACTED_MEMBERS: [&str; 6] = [
    "hash",
    "id",
    "prev_hash",
    "redacted",
    "sequence_number",
    "tenant_id",
];

/// What stage 1 learns from one record line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineDigest {
    pub id: String,
    pub tenant_id: String,
    pub sequence_number: u64,
    /// The `hash` member, decoded.
    pub stored_hash: Hash,
    /// SHA-256 of the JCS form of the record without `hash` (for a redacted record,
    /// which cannot be hashed again, the stored hash).
    pub computed_hash: Hash,
    pub prev_hash: Hash,
    /// A redacted record: the sequence number and id of the event that redacted it.
    pub redacted_by: Option<(u64, String)>,
    /// A redaction event (`sealtrail.event.redact`): the id of the record it redacts.
    pub redacts: Option<String>,
    /// A prune event (`sealtrail.retention.prune`, issue 15): the retention boundary it
    /// set (the first record kept).
    pub prunes: Option<u64>,
}

/// Why a line is not a readable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LineError(pub String);

/// Lowercase hex digit values; 0xff for anything else.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn hex32(s: &str, what: &str) -> Result<Hash, LineError> {
    // hot path of the verifier: branch-free decode that also refuses uppercase
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut invalid = (b.len() != 64) as u8;
    if invalid == 0 {
        for (i, o) in out.iter_mut().enumerate() {
            let (hi, lo) = (HEX[b[2 * i] as usize], HEX[b[2 * i + 1] as usize]);
            invalid |= (hi | lo) & 0xf0;
            *o = (hi << 4) | (lo & 0x0f);
        }
    }
    if invalid != 0 {
        return Err(LineError(format!("{what} is not 64 lowercase hex digits")));
    }
    Ok(out)
}

/// Stage 1: parses one exported record (a JSON object with exactly the record's members)
/// and recomputes its hash. A line in JCS form (as `GET /v1/export` writes it) is hashed
/// as is, minus its `hash` member; any other line is parsed and canonicalized. Both ways give the same answer.
pub fn digest_line(line: &[u8]) -> Result<LineDigest, LineError> {
    if crate::record::is_redacted(line) || line.starts_with(b"{\"hash\":") {
        // not the hot path: a redacted record, or a record whose first member is not
        // `action` (only a redacted one has `hash` first)
        if let Some(d) = digest_redacted(line)? {
            return Ok(d);
        }
    }
    match canonical_object(line) {
        Some(members) => digest_canonical(line, &members),
        None => digest_parsed(line),
    }
}

/// A redacted record: exactly [`REDACTED_MEMBERS`]; `None` if the line does not have
/// them (then it is read as a record, and fails there if it is not one).
fn digest_redacted(line: &[u8]) -> Result<Option<LineDigest>, LineError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Redacted {
        hash: String,
        id: String,
        prev_hash: String,
        redacted: crate::record::Redaction,
        sequence_number: u64,
        tenant_id: String,
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(line)
    else {
        return Ok(None);
    };
    let mut keys: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    if keys != REDACTED_MEMBERS {
        return Ok(None);
    }
    serde_json::from_slice::<NoDuplicateMembers>(line)
        .map_err(|e| LineError(format!("not a JSON record: {e}")))?;
    let r: Redacted = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| LineError(format!("a redacted record: {e}")))?;
    let stored_hash = hex32(&r.hash, "hash")?;
    Ok(Some(LineDigest {
        id: r.id,
        tenant_id: r.tenant_id,
        sequence_number: r.sequence_number,
        stored_hash,
        computed_hash: stored_hash,
        prev_hash: hex32(&r.prev_hash, "prev_hash")?,
        redacted_by: Some((r.redacted.sequence_number, r.redacted.event_id)),
        redacts: None,
        prunes: None,
    }))
}

/// The id of the record that a redaction event (`action` `sealtrail.event.redact`)
/// redacts: its resource id.
fn redacted_target(action: &[u8], resource: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Target {
        id: String,
    }
    let action: String = serde_json::from_slice(action).ok()?;
    if action != crate::record::REDACT_ACTION {
        return None;
    }
    serde_json::from_slice::<Target>(resource)
        .ok()
        .map(|t| t.id)
}

/// The boundary a prune event (`action` `sealtrail.retention.prune`, at `seq`) sets: its
/// `metadata.before_sequence_number`, if before the event.
fn pruned_before(action: &[u8], metadata: &[u8], seq: u64) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Order {
        before_sequence_number: u64,
    }
    let action: String = serde_json::from_slice(action).ok()?;
    if action != crate::record::PRUNE_ACTION {
        return None;
    }
    serde_json::from_slice::<Order>(metadata)
        .ok()
        .map(|o| o.before_sequence_number)
        .filter(|b| *b >= 1 && *b < seq)
}

fn digest_canonical(
    line: &[u8],
    members: &[crate::jcs_scan::Member],
) -> Result<LineDigest, LineError> {
    check_members(members.iter().map(|m| &line[m.key.clone()]))?;
    let value = |i: usize| &line[members[i].value.clone()];
    let string = |i: usize| -> Result<String, LineError> {
        let v = value(i);
        let not_string = || LineError(format!("{} must be a string", MEMBERS[i]));
        // the common case, a string without escapes, needs no JSON decoding
        if v.len() >= 2 && v[0] == b'"' && !v[1..v.len() - 1].contains(&b'\\') {
            return std::str::from_utf8(&v[1..v.len() - 1])
                .map(str::to_string)
                .map_err(|_| not_string());
        }
        serde_json::from_slice::<String>(v).map_err(|_| not_string())
    };
    let hash = members[3].clone();
    // cut `"hash":"…"` and the comma after it (it is never the last member)
    let cut_end = hash.value.end + 1;
    let cut_start = hash.key.start - 1;
    let mut h = Sha256::new();
    h.update(&line[..cut_start]);
    h.update(&line[cut_end..]);
    // the scanner admits only plain integers of at most 15 digits here
    let sequence_number = std::str::from_utf8(value(9))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| LineError("sequence_number must be a positive integer".into()))?;
    Ok(LineDigest {
        id: string(4)?,
        tenant_id: string(10)?,
        sequence_number,
        stored_hash: hex32(&string(3)?, "hash")?,
        computed_hash: h.finalize().into(),
        prev_hash: hex32(&string(7)?, "prev_hash")?,
        redacted_by: None,
        redacts: if value(0).starts_with(b"\"sealtrail.") {
            redacted_target(value(0), value(8))
        } else {
            None
        },
        prunes: if value(0).starts_with(b"\"sealtrail.") {
            pruned_before(value(0), value(5), sequence_number)
        } else {
            None
        },
    })
}

fn check_members<'a>(keys: impl Iterator<Item = &'a [u8]>) -> Result<(), LineError> {
    let keys: Vec<&[u8]> = keys.collect();
    if keys.len() != MEMBERS.len() || keys.iter().zip(MEMBERS).any(|(k, m)| *k != m.as_bytes()) {
        let found: Vec<String> = keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into())
            .collect();
        return Err(LineError(format!(
            "a record has exactly the members {}; found {}",
            MEMBERS.join(", "),
            found.join(", ")
        )));
    }
    Ok(())
}

/// Deserializes any JSON value and fails on an object with the same member twice, at any
/// depth. `serde_json::Value` keeps the last of duplicates silently, so a line such as
/// `{"action":"everything.delete","action":"document.delete",…}` would canonicalize to the
/// record that was signed while a reader taking the first member sees another one.
struct NoDuplicateMembers;

impl<'de> serde::Deserialize<'de> for NoDuplicateMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NoDuplicateMembers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if !seen.insert(key.to_string()) {
                        return Err(serde::de::Error::custom(format!(
                            "member {key:?} appears twice"
                        )));
                    }
                    map.next_value::<NoDuplicateMembers>()?;
                }
                Ok(NoDuplicateMembers)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<NoDuplicateMembers>()?.is_some() {}
                Ok(NoDuplicateMembers)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NoDuplicateMembers)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(NoDuplicateMembers)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(NoDuplicateMembers)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(NoDuplicateMembers)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(NoDuplicateMembers)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NoDuplicateMembers)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn digest_parsed(line: &[u8]) -> Result<LineDigest, LineError> {
    serde_json::from_slice::<NoDuplicateMembers>(line)
        .map_err(|e| LineError(format!("not a JSON record: {e}")))?;
    // Not the ingest's strict parser: a canonical line may hold an integer-valued float
    // (JCS writes 1e16 as 10000000000000000) that strict I-JSON parsing would refuse.
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| LineError(format!("not a JSON record: {e}")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(LineError("a record is a JSON object".into()));
    };
    if map.contains_key("redacted")
        && let Some(d) = digest_redacted(line)?
    {
        return Ok(d);
    }
    check_members(map.keys().map(|k| k.as_bytes()))?;
    let string = |map: &serde_json::Map<String, serde_json::Value>, k: &str| {
        map.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| LineError(format!("{k} must be a string")))
    };
    let stored = string(&map, "hash")?;
    map.remove("hash");
    let canonical = serde_json_canonicalizer::to_vec(&map)
        .map_err(|e| LineError(format!("cannot canonicalize: {e}")))?;
    let sequence_number = map["sequence_number"]
        .as_u64()
        .ok_or_else(|| LineError("sequence_number must be a positive integer".into()))?;
    Ok(LineDigest {
        id: string(&map, "id")?,
        tenant_id: string(&map, "tenant_id")?,
        sequence_number,
        stored_hash: hex32(&stored, "hash")?,
        computed_hash: Sha256::digest(&canonical).into(),
        prev_hash: hex32(&string(&map, "prev_hash")?, "prev_hash")?,
        redacted_by: None,
        redacts: redacted_target(
            map["action"].to_string().as_bytes(),
            map["resource"].to_string().as_bytes(),
        ),
        prunes: pruned_before(
            map["action"].to_string().as_bytes(),
            map["metadata"].to_string().as_bytes(),
            sequence_number,
        ),
    })
}

/// The export line of a record: the JCS form of the whole record, `hash` included,
/// built from its stored canonical bytes (the record without `hash`) and its hash.
/// [`digest_line`] hashes such a line without re-serializing it.
pub fn canonical_line(canonical_unhashed: &[u8], hash: &str) -> Vec<u8> {
    if let Some(members) = canonical_object(canonical_unhashed)
        && let Some(id) = members
            .iter()
            .find(|m| &canonical_unhashed[m.key.clone()] == b"id")
    {
        let at = id.key.start - 1;
        let mut out = Vec::with_capacity(canonical_unhashed.len() + 76);
        out.extend_from_slice(&canonical_unhashed[..at]);
        out.extend_from_slice(b"\"hash\":\"");
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(&canonical_unhashed[at..]);
        return out;
    }
    // metadata with floats or non-ASCII keys: the general canonicalizer
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(canonical_unhashed).expect("stored canonical bytes are JSON");
    value.insert("hash".into(), serde_json::Value::String(hash.to_string()));
    serde_json_canonicalizer::to_vec(&value).expect("records serialize")
}

/// Which checks run. All on by default; the tests switch each off in turn to show that
/// some tampering then goes unnoticed (so no check is dead weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// Each record hashes to its `hash`.
    pub record_hash: bool,
    /// Sequence numbers are 1, 2, 3, … with no gap, duplicate or reordering.
    pub sequence: bool,
    /// Each `prev_hash` is the previous record's `hash` (zeros for the first).
    pub prev_hash: bool,
    /// Every record belongs to one tenant, the one the checkpoints' origin names.
    pub tenant: bool,
    /// The checkpoints are signed by the log key.
    pub signature: bool,
    /// The records reach the checkpoint's tree size (nothing cut off the end).
    pub checkpoint_size: bool,
    /// The tree of the records has the checkpoint's root hash.
    pub checkpoint_root: bool,
    /// The kept (earlier) checkpoint is a prefix of this log: no rewrite, no fork.
    pub trusted: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            record_hash: true,
            sequence: true,
            prev_hash: true,
            tenant: true,
            signature: true,
            checkpoint_size: true,
            checkpoint_root: true,
            trusted: true,
        }
    }
}

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location(*.position, *.sequence_number, .event_id.as_deref()))]
pub struct AuditFailure {
    /// 1-based position of the record in the input (0: not about one record).
    pub position: u64,
    pub sequence_number: Option<u64>,
    pub event_id: Option<String>,
    /// Machine-readable: `unreadable_record`, `hash_mismatch`, `sequence_gap`,
    /// `sequence_out_of_order`, `prev_hash_mismatch`, `wrong_tenant`, `bad_checkpoint`,
    /// `redaction_unconfirmed` (a record marked redacted without its redaction event),
    /// `bad_signature`, `truncated`, `root_mismatch`, `rollback`, `fork`;
    /// from a retention boundary: `bad_boundary`, `boundary_unconfirmed`,
    /// `kept_before_boundary`; `witness_quorum`
    /// (`sealtrail verify --witness`: too few valid cosignatures on the checkpoint).
    pub code: &'static str,
    pub message: String,
}

fn location(position: u64, seq: Option<u64>, id: Option<&str>) -> String {
    match (position, seq, id) {
        (0, _, _) => String::new(),
        (p, Some(s), Some(id)) => format!("record {p} (sequence_number {s}, id {id:?}): "),
        (p, _, _) => format!("record {p}: "),
    }
}

fn failure(code: &'static str, message: String) -> AuditFailure {
    AuditFailure {
        position: 0,
        sequence_number: None,
        event_id: None,
        code,
        message,
    }
}

/// What an audit established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSummary {
    pub tenant_id: Option<String>,
    pub records: u64,
    /// The first record of the input: 1, or the retention boundary it started at
    /// (records before it were removed; `records` counts them, the tree covers them).
    pub retained_from: u64,
    /// Redacted records among them (each bound by its links and confirmed by its
    /// redaction event, but not hashed again: its content is gone).
    pub redacted: u64,
    /// Root of the tree of all records read.
    pub root: Hash,
    /// The checkpoint the records were checked against.
    pub checkpoint: Option<Checkpoint>,
    /// Records after the checkpoint's size, which it does not cover.
    pub uncovered: u64,
    /// The kept checkpoint this log was shown to extend.
    pub trusted: Option<Checkpoint>,
    /// An archive's audit ([`Auditor::as_archive`]): what it could not confirm because the
    /// confirming records come after the input — the prune event naming its first record
    /// (`start`), and the redaction events of this many of its redacted records.
    pub confirmed_after: Option<ConfirmedAfter>,
}

/// What an archive's confirmations left to the log after it ([`AuditSummary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmedAfter {
    /// The archive starts at a boundary whose prune event is not in it.
    pub start: bool,
    /// Redacted records whose redaction event is after the archive's last record.
    pub redactions: u64,
}

/// Stage 2: the sequential checks. Feed records in input order, then [`finish`](Self::finish).
pub struct Auditor {
    checks: Checks,
    checkpoint: Option<Checkpoint>,
    trusted: Option<Checkpoint>,
    tenant_id: Option<String>,
    frontier: Frontier,
    expect_sequence: u64,
    prev_hash: Hash,
    root_at_checkpoint: Option<Hash>,
    root_at_trusted: Option<Hash>,
    /// Redacted records not yet confirmed: redaction event's sequence number → (the
    /// redacted record's position, sequence number, id).
    pending_redactions: std::collections::BTreeMap<u64, (u64, u64, String, String)>,
    redacted: u64,
    /// An audit from a retention boundary ([`Auditor::start_at_boundary`]).
    boundary: Option<AuditBoundary>,
    /// The input is a retention archive ([`Auditor::as_archive`]).
    archive: bool,
}

#[derive(Debug, Clone)]
struct AuditBoundary {
    first: u64,
    /// The prune event naming `first`, once fed.
    confirmed: bool,
    /// The first record's `prev_hash` (a removed record's hash) is still to be taken.
    open_link: bool,
}

/// The tenant a checkpoint origin `<log origin>/<tenant_id>` names.
fn origin_tenant(origin: &str) -> &str {
    origin.rsplit_once('/').map_or(origin, |(_, t)| t)
}

impl Auditor {
    /// `checkpoint`: the signed checkpoint the records should match (a signed note);
    /// `trusted`: an earlier signed checkpoint the auditor kept; both are verified with
    /// `key` (required when either is given, unless `checks.signature` is off).
    pub fn new(
        checks: Checks,
        key: Option<&NoteVerifier>,
        checkpoint: Option<&str>,
        trusted: Option<&str>,
    ) -> Result<Self, AuditFailure> {
        let open = |note: &str, what: &str| -> Result<Checkpoint, AuditFailure> {
            let parsed = if checks.signature {
                let key = key.ok_or_else(|| {
                    failure(
                        "bad_signature",
                        format!("no log key to check the {what} with"),
                    )
                })?;
                Checkpoint::open(note, key, None)
            } else {
                let text = note.split_once("\n\n").map_or(note, |(t, _)| t);
                Checkpoint::parse(&format!("{}\n", text.trim_end_matches('\n')))
            };
            parsed.map_err(|e| match e {
                CheckpointError::Note(n) => failure("bad_signature", format!("{what}: {n}")),
                other => failure("bad_checkpoint", format!("{what}: {other}")),
            })
        };
        let checkpoint = checkpoint.map(|c| open(c, "checkpoint")).transpose()?;
        let trusted = trusted.map(|c| open(c, "kept checkpoint")).transpose()?;
        let mut tenant_id = None;
        if checks.tenant {
            for cp in checkpoint.iter().chain(trusted.iter()) {
                let t = origin_tenant(&cp.origin).to_string();
                match &tenant_id {
                    None => tenant_id = Some(t),
                    Some(prev) if *prev != t => {
                        return Err(failure(
                            "wrong_tenant",
                            format!(
                                "the checkpoints are for different logs: tenant {prev:?} and {t:?}"
                            ),
                        ));
                    }
                    _ => {}
                }
            }
        }
        let mut auditor = Self {
            checks,
            checkpoint,
            trusted,
            tenant_id,
            frontier: Frontier::new(),
            expect_sequence: 1,
            prev_hash: [0; 32],
            root_at_checkpoint: None,
            root_at_trusted: None,
            pending_redactions: Default::default(),
            archive: false,
            redacted: 0,
            boundary: None,
        };
        auditor.note_roots();
        Ok(auditor)
    }

    /// Starts the audit at a retention boundary (issue 15): records before `first` were
    /// removed by retention and the input starts at record `first`. Call before the first
    /// record.
    ///
    /// - `prefix`: the hashes of the tree nodes [`Frontier::ids`]`(first - 1)` over the
    ///   removed records' leaves (a store keeps the tree when it removes records). With
    ///   them the kept records' tree still reaches the signed checkpoint's root, so the
    ///   kept records are shown to be positions `first…` of the signed log, and the first
    ///   one's `prev_hash` (a removed record's hash, taken as is) is bound by its leaf.
    /// - `kept_proof`: when the kept checkpoint is older than the boundary (its records
    ///   are gone), a consistency proof from it to the checkpoint (`GET
    ///   /v1/proof/consistency`), checked here; the checkpoint's root is then checked
    ///   against the records as usual.
    ///
    /// The input must contain the prune event that set `first` (later in the chain), or
    /// [`Auditor::finish`] reports `boundary_unconfirmed`: records removed without the
    /// chain recording it.
    pub fn start_at_boundary(
        &mut self,
        first: u64,
        prefix: Vec<Hash>,
        kept_proof: Option<&[Hash]>,
    ) -> Result<(), AuditFailure> {
        if self.frontier.size() != 0 || self.expect_sequence != 1 {
            return Err(failure(
                "bad_boundary",
                "a retention boundary is set before the first record".into(),
            ));
        }
        if first <= 1 {
            return Ok(());
        }
        self.frontier = Frontier::from_nodes(first - 1, prefix).map_err(|e| {
            failure(
                "bad_boundary",
                format!("the tree nodes before the retention boundary {first}: {e}"),
            )
        })?;
        self.expect_sequence = first;
        self.boundary = Some(AuditBoundary {
            first,
            confirmed: false,
            open_link: true,
        });
        if let Some(kept) = &self.trusted
            && self.checks.trusted
            && kept.size < first - 1
        {
            let (Some(cp), Some(proof)) = (&self.checkpoint, kept_proof) else {
                return Err(failure(
                    "kept_before_boundary",
                    format!(
                        "the kept checkpoint (size {}) is older than the retention boundary (records before {first} were removed): pass the checkpoint and the consistency proof from {} to its size",
                        kept.size, kept.size
                    ),
                ));
            };
            crate::proof::verify_consistency(kept.size, cp.size, proof, &kept.root, &cp.root)
                .map_err(|e| {
                    failure(
                        "fork",
                        format!(
                            "the kept checkpoint (size {}) is not a prefix of the checkpoint (size {}): {e}",
                            kept.size, cp.size
                        ),
                    )
                })?;
            // Proven: the checkpoint extends it, and the records are checked against the
            // checkpoint.
            self.root_at_trusted = Some(kept.root);
        }
        self.note_roots();
        Ok(())
    }

    /// Records fed so far (with a retention boundary: counting the removed ones).
    pub fn records(&self) -> u64 {
        self.frontier.size()
    }

    fn note_roots(&mut self) {
        let size = self.frontier.size();
        if self.checkpoint.as_ref().is_some_and(|c| c.size == size) {
            self.root_at_checkpoint = Some(self.frontier.root());
        }
        if self.trusted.as_ref().is_some_and(|c| c.size == size) {
            self.root_at_trusted = Some(self.frontier.root());
        }
    }

    /// Checks the next record (a result of [`digest_line`]; an unreadable line is
    /// reported as is).
    pub fn feed(&mut self, digest: Result<&LineDigest, &LineError>) -> Result<(), AuditFailure> {
        // The 1-based place in the input (records before a boundary are not in it).
        let skipped = self.boundary.as_ref().map_or(0, |b| b.first - 1);
        let position = self.frontier.size() + 1 - skipped;
        let d = digest.map_err(|e| AuditFailure {
            position,
            sequence_number: None,
            event_id: None,
            code: "unreadable_record",
            message: e.0.clone(),
        })?;
        let fail = |code, message| AuditFailure {
            position,
            sequence_number: Some(d.sequence_number),
            event_id: Some(d.id.clone()),
            code,
            message,
        };
        let c = self.checks;
        if c.record_hash && d.computed_hash != d.stored_hash {
            return Err(fail(
                "hash_mismatch",
                format!(
                    "stored hash {} but the record hashes to {}",
                    hex::encode(d.stored_hash),
                    hex::encode(d.computed_hash)
                ),
            ));
        }
        if c.tenant {
            match &self.tenant_id {
                None => self.tenant_id = Some(d.tenant_id.clone()),
                Some(t) if *t != d.tenant_id => {
                    return Err(fail(
                        "wrong_tenant",
                        format!("record belongs to tenant {:?}, not {t:?}", d.tenant_id),
                    ));
                }
                _ => {}
            }
        }
        if c.sequence && d.sequence_number != self.expect_sequence {
            let (code, what) = if d.sequence_number > self.expect_sequence {
                ("sequence_gap", "records are missing before it")
            } else {
                (
                    "sequence_out_of_order",
                    "a record is duplicated or out of order",
                )
            };
            return Err(fail(
                code,
                format!(
                    "expected sequence_number {} but found {}: {what}",
                    self.expect_sequence, d.sequence_number
                ),
            ));
        }
        if let Some(b) = &mut self.boundary {
            if std::mem::take(&mut b.open_link) {
                // The first kept record links to a removed one: its leaf binds it.
                self.prev_hash = d.prev_hash;
            }
            if d.prunes == Some(b.first) {
                b.confirmed = true;
            }
        }
        if c.prev_hash && d.prev_hash != self.prev_hash {
            return Err(fail(
                "prev_hash_mismatch",
                format!(
                    "prev_hash {} is not the previous record's hash {}",
                    hex::encode(d.prev_hash),
                    hex::encode(self.prev_hash)
                ),
            ));
        }
        if let Some((by, by_id)) = &d.redacted_by {
            let by = *by;
            if by <= d.sequence_number {
                return Err(fail(
                    "redaction_unconfirmed",
                    format!("marked redacted by record {by}, which is not after it"),
                ));
            }
            if let Some((_, other, _, _)) = self.pending_redactions.get(&by) {
                // One redaction event redacts one record.
                return Err(fail(
                    "redaction_unconfirmed",
                    format!(
                        "marked redacted by record {by}, which record {other} already names as its redaction"
                    ),
                ));
            }
            self.redacted += 1;
            self.pending_redactions.insert(
                by,
                (position, d.sequence_number, d.id.clone(), by_id.clone()),
            );
        } else if let Some((at, seq, id, by_id)) =
            self.pending_redactions.remove(&d.sequence_number)
            && (d.redacts.as_deref() != Some(id.as_str()) || d.id != by_id)
        {
            return Err(AuditFailure {
                position: at,
                sequence_number: Some(seq),
                event_id: Some(id),
                code: "redaction_unconfirmed",
                message: format!(
                    "marked redacted by record {}, which is not a redaction of it",
                    d.sequence_number
                ),
            });
        }
        self.frontier.push(&d.stored_hash, |_, _| {});
        self.expect_sequence = d.sequence_number.saturating_add(1);
        self.prev_hash = d.stored_hash;
        self.note_roots();
        Ok(())
    }

    /// Audits a retention archive (`sealtrail_core::pack::Archive`): a slice of the log
    /// that ends at its checkpoint. Every record is checked as usual and the slice must
    /// reach the checkpoint's root; but the records that confirm its start (the prune event
    /// naming its first record) and its redacted records (their redaction events) come
    /// after its last record, so their absence is reported in the summary
    /// ([`AuditSummary::confirmed_after`]), not as a failure. A confirming record that
    /// should be inside the slice and is not is still a failure.
    pub fn as_archive(&mut self) {
        self.archive = true;
    }

    /// The checks that need the whole input.
    pub fn finish(mut self) -> Result<AuditSummary, AuditFailure> {
        let c = self.checks;
        let records = self.frontier.size();
        let mut confirmed_after = None;
        if self.archive {
            // `records` is the sequence number of the last record read: the events after it
            // are not in the archive.
            let later = self.pending_redactions.split_off(&(records + 1));
            let start = self.boundary.as_mut().is_some_and(|b| {
                let open = !b.confirmed;
                b.confirmed = true;
                open
            });
            confirmed_after = Some(ConfirmedAfter {
                start,
                redactions: later.len() as u64,
            });
        }
        if let Some((by, (at, seq, id, _))) = self.pending_redactions.first_key_value() {
            return Err(AuditFailure {
                position: *at,
                sequence_number: Some(*seq),
                event_id: Some(id.clone()),
                code: "redaction_unconfirmed",
                message: format!(
                    "marked redacted by record {by}, which the input does not reach (the input has {records} records)"
                ),
            });
        }
        if let Some(b) = self.boundary.as_ref().filter(|b| !b.confirmed) {
            return Err(failure(
                "boundary_unconfirmed",
                format!(
                    "the input starts at record {} but no prune event (sealtrail.retention.prune) in it names that boundary: records were removed without the chain recording it",
                    b.first
                ),
            ));
        }
        if let Some(cp) = &self.checkpoint {
            if c.checkpoint_size && records < cp.size {
                return Err(failure(
                    "truncated",
                    format!(
                        "the checkpoint commits to {} records but the input has {records}: records {}..={} are missing",
                        cp.size,
                        records + 1,
                        cp.size
                    ),
                ));
            }
            if c.checkpoint_root
                && let Some(root) = self.root_at_checkpoint
                && root != cp.root
            {
                return Err(failure(
                    "root_mismatch",
                    format!(
                        "the first {} records have tree root {} but the signed checkpoint says {}",
                        cp.size,
                        b64(&root),
                        b64(&cp.root)
                    ),
                ));
            }
        }
        if let Some(kept) = &self.trusted
            && c.trusted
        {
            let latest = self.checkpoint.as_ref().map_or(records, |cp| cp.size);
            if kept.size > latest {
                return Err(failure(
                    "rollback",
                    format!(
                        "the kept checkpoint has {} records, more than the {latest} now presented: the log was truncated",
                        kept.size
                    ),
                ));
            }
            if let Some(cp) = &self.checkpoint
                && cp.size == kept.size
                && cp.root != kept.root
            {
                return Err(failure(
                    "fork",
                    format!(
                        "two signed checkpoints of size {} with different roots ({} and {}): the log forked",
                        kept.size,
                        b64(&kept.root),
                        b64(&cp.root)
                    ),
                ));
            }
            match self.root_at_trusted {
                Some(root) if root == kept.root => {}
                Some(root) => {
                    return Err(failure(
                        "fork",
                        format!(
                            "the first {} records have root {} but the kept checkpoint says {}: the log was rewritten",
                            kept.size,
                            b64(&root),
                            b64(&kept.root)
                        ),
                    ));
                }
                None => {
                    return Err(failure(
                        "truncated",
                        format!(
                            "the kept checkpoint commits to {} records but the input has {records}",
                            kept.size
                        ),
                    ));
                }
            }
        }
        let uncovered = self
            .checkpoint
            .as_ref()
            .map_or(0, |cp| records.saturating_sub(cp.size));
        Ok(AuditSummary {
            tenant_id: self.tenant_id,
            records,
            redacted: self.redacted,
            retained_from: self.boundary.as_ref().map_or(1, |b| b.first),
            root: self.frontier.root(),
            checkpoint: self.checkpoint,
            uncovered,
            trusted: self.trusted,
            confirmed_after,
        })
    }
}

fn b64(h: &Hash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h)
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
