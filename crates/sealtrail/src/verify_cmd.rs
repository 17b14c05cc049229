//! `sealtrail verify`: the offline audit of an exported log (JSONL) or an evidence pack
//! (ZIP), with no server. It recomputes every record hash, walks the chain, rebuilds the
//! Merkle tree and checks it against the signed checkpoint and, when the auditor kept
//! one, an earlier checkpoint (see `sealtrail_core::audit`).
//!
//! Exit codes: 0 everything holds; 1 a check failed (the first failure is reported
//! precisely); 2 the verification could not run (unreadable file, bad key, bad usage).
//!
//! Throughput: a pipeline on every core (read chunks → digest: parse, JCS, SHA-256 →
//! check in order); ~1M records/s on 2 cores (README, "Verifying offline").

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use sealtrail_core::audit::{
    AuditFailure, AuditSummary, Auditor, Checks, LineDigest, LineError, digest_line,
};
use sealtrail_core::cosignature::CosignatureVerifier;
use sealtrail_core::note::NoteVerifier;
use sealtrail_core::pack;

#[derive(Args)]
pub struct VerifyArgs {
    /// An evidence pack (.zip from GET /v1/export/evidence-pack) or a JSONL export of
    /// one tenant's records (GET /v1/export?format=jsonl), `-` for stdin.
    #[arg(value_name = "PACK_OR_JSONL")]
    input: PathBuf,
    /// The signed checkpoint to check the records against (default: the pack's).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// The log's verifier key (`<name>+<key id>+<base64>`), or a file holding it. Get it
    /// from a source you trust, not from the pack (default: the pack's, with a warning).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// An earlier signed checkpoint you kept: the log must extend it (no rewrite, no
    /// truncation, no fork).
    #[arg(long, value_name = "FILE")]
    trusted: Option<PathBuf>,
    /// A witness's verifier key (`<name>+<key id>+<base64>`, as `sealtrail witness init`
    /// prints it), or a file holding it; repeatable. The checkpoint then counts only with
    /// valid cosignatures (C2SP tlog-cosignature) by --quorum of these witnesses: a log
    /// cannot show you a history the witnesses have not seen as the only one.
    #[arg(long = "witness", value_name = "KEY")]
    witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned the checkpoint [default: all].
    #[arg(long, value_name = "N", requires = "witnesses")]
    quorum: Option<usize>,
}

/// The witnesses a checkpoint must be cosigned by, and how many of them.
struct WitnessPolicy {
    witnesses: Vec<CosignatureVerifier>,
    quorum: usize,
}

impl WitnessPolicy {
    fn parse(args: &VerifyArgs) -> Result<Option<Self>, RunError> {
        if args.witnesses.is_empty() {
            return Ok(None);
        }
        let witnesses = args
            .witnesses
            .iter()
            .map(|arg| {
                let text = if Path::new(arg).is_file() {
                    read_text(Path::new(arg), "witness key file")?
                } else {
                    arg.clone()
                };
                CosignatureVerifier::parse(text.trim()).map_err(|e| {
                    RunError::Usage(format!(
                        "--witness {arg:?}: {e} (a witness key is what `sealtrail witness init` prints)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let quorum = args.quorum.unwrap_or(witnesses.len());
        if quorum == 0 || quorum > witnesses.len() {
            return Err(RunError::Usage(format!(
                "--quorum must be between 1 and the number of --witness keys ({}), not {quorum}",
                witnesses.len()
            )));
        }
        Ok(Some(Self { witnesses, quorum }))
    }

    /// Which witnesses validly cosigned `note`; a failure when fewer than the quorum did.
    fn check(&self, note: Option<&str>) -> Result<Result<String, AuditFailure>, RunError> {
        let note = note.ok_or_else(|| {
            RunError::Usage(
                "--witness checks a checkpoint's cosignatures: give one with --checkpoint".into(),
            )
        })?;
        let by: Vec<&str> = self
            .witnesses
            .iter()
            .filter(|w| w.verify(note).is_ok())
            .map(|w| w.name())
            .collect();
        let summary = format!(
            "cosigned by {} of the {} witnesses given{}",
            by.len(),
            self.witnesses.len(),
            if by.is_empty() {
                String::new()
            } else {
                format!(" ({})", by.join(", "))
            }
        );
        if by.len() < self.quorum {
            return Ok(Err(AuditFailure {
                position: 0,
                sequence_number: None,
                event_id: None,
                code: "witness_quorum",
                message: format!(
                    "the checkpoint is {summary}; {} needed: it may be a view of the log that the witnesses never saw",
                    self.quorum
                ),
            }));
        }
        Ok(Ok(summary))
    }
}

/// Why the command could not run (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

pub fn run(args: VerifyArgs) -> ExitCode {
    match verify(&args) {
        Ok(Ok((summary, cosigned))) => {
            print_summary(&summary);
            if let Some(cosigned) = cosigned {
                println!("checkpoint {cosigned}");
            }
            ExitCode::SUCCESS
        }
        Ok(Err(failure)) => {
            println!("FAILED [{}] {failure}", failure.code);
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

fn print_summary(s: &AuditSummary) {
    let tenant = s.tenant_id.as_deref().unwrap_or("(none)");
    if s.redacted == 0 {
        println!(
            "OK: {} records of tenant {tenant:?}: every hash recomputed, chain unbroken",
            s.records
        );
    } else {
        println!(
            "OK: {} records of tenant {tenant:?}, {} of them redacted: every other hash recomputed, chain unbroken, each redacted record bound by its links and confirmed by its redaction event",
            s.records, s.redacted
        );
    }
    match &s.confirmed_after {
        Some(later) => {
            println!(
                "a retention archive: records {}..={} are exactly those positions of the signed log{}",
                s.retained_from,
                s.records,
                if s.retained_from > 1 {
                    format!(
                        " (records 1..={} are in earlier archives: the tree is built on their nodes)",
                        s.retained_from - 1
                    )
                } else {
                    String::new()
                }
            );
            if later.start || later.redactions > 0 {
                println!(
                    "confirmed by the log after it, not in this archive: {}{}",
                    if later.start {
                        format!("the prune event that set boundary {}", s.retained_from)
                    } else {
                        String::new()
                    },
                    match (later.start, later.redactions) {
                        (_, 0) => String::new(),
                        (true, n) => format!(", and the redaction events of {n} redacted records"),
                        (false, n) => format!("the redaction events of {n} redacted records"),
                    }
                );
            }
        }
        None if s.retained_from > 1 => println!(
            "records 1..={} were removed by retention: the input starts at {}, its tree built on the removed records' nodes, and the prune event that removed them is in it",
            s.retained_from - 1,
            s.retained_from
        ),
        None => {}
    }
    println!("tree root: {}", b64(&s.root));
    match &s.checkpoint {
        Some(cp) => println!(
            "checkpoint {} size {} verified: signature by the log key, root matches{}",
            cp.origin,
            cp.size,
            if s.uncovered > 0 {
                format!(" ({} later records not covered by it)", s.uncovered)
            } else {
                String::new()
            }
        ),
        None => {
            println!("no checkpoint given: truncation and wholesale rewrites cannot be ruled out")
        }
    }
    if let Some(kept) = &s.trusted {
        println!(
            "consistent with the kept checkpoint of size {}: no rewrite, no fork",
            kept.size
        );
    }
}

fn b64(h: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h)
}

fn read_text(path: &Path, what: &str) -> Result<String, RunError> {
    std::fs::read_to_string(path).map_err(io(format!("cannot read the {what} {}", path.display())))
}

/// `--key`: a log's verifier key, or a file holding it (also `sealtrail monitor`'s).
pub(crate) fn parse_key(arg: &str) -> Result<NoteVerifier, RunError> {
    let text = if Path::new(arg).is_file() {
        read_text(Path::new(arg), "key file")?
    } else {
        arg.to_string()
    };
    NoteVerifier::parse(text.trim()).map_err(|e| RunError::Usage(format!("--key: {e}")))
}

/// A passed audit, and which witnesses cosigned its checkpoint (with `--witness`).
type Passed = (AuditSummary, Option<String>);

/// Runs the audit: `Err` when it could not run, `Ok(Err)` when a check failed.
fn verify(args: &VerifyArgs) -> Result<Result<Passed, AuditFailure>, RunError> {
    let key = args.key.as_deref().map(parse_key).transpose()?;
    let witnesses = WitnessPolicy::parse(args)?;
    let checkpoint = args
        .checkpoint
        .as_deref()
        .map(|p| read_text(p, "checkpoint"))
        .transpose()?;
    let trusted = args
        .trusted
        .as_deref()
        .map(|p| read_text(p, "kept checkpoint"))
        .transpose()?;
    if args.input != Path::new("-") && is_zip(&args.input)? {
        return verify_pack(&args.input, key, checkpoint, trusted, witnesses.as_ref());
    }
    if (checkpoint.is_some() || trusted.is_some()) && key.is_none() {
        return Err(RunError::Usage(
            "checking a checkpoint needs the log's verifier key: pass --key".into(),
        ));
    }
    let auditor = match Auditor::new(
        Checks::default(),
        key.as_ref(),
        checkpoint.as_deref(),
        trusted.as_deref(),
    ) {
        Ok(a) => a,
        Err(f) => return Ok(Err(f)),
    };
    let cosigned = match witnesses
        .as_ref()
        .map(|w| w.check(checkpoint.as_deref()))
        .transpose()?
        .transpose()
    {
        Ok(cosigned) => cosigned,
        Err(f) => return Ok(Err(f)),
    };
    let summary = if args.input == Path::new("-") {
        check_lines(
            auditor,
            BufReader::with_capacity(1 << 20, std::io::stdin()),
            None,
        )?
    } else {
        let file =
            File::open(&args.input).map_err(io(format!("cannot open {}", args.input.display())))?;
        let len = file.metadata().map(|m| m.len()).ok();
        check_lines(auditor, BufReader::with_capacity(1 << 20, file), len)?
    };
    Ok(summary.map(|s| (s, cosigned)))
}

fn is_zip(path: &Path) -> Result<bool, RunError> {
    let mut magic = [0u8; 4];
    let mut f = File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
    let n = f
        .read(&mut magic)
        .map_err(io(format!("cannot read {}", path.display())))?;
    Ok(n == 4 && magic == *b"PK\x03\x04")
}

fn verify_pack(
    path: &Path,
    key: Option<NoteVerifier>,
    checkpoint: Option<String>,
    trusted: Option<String>,
    witnesses: Option<&WitnessPolicy>,
) -> Result<Result<Passed, AuditFailure>, RunError> {
    let file = File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| RunError::Usage(format!("{} is not a readable ZIP: {e}", path.display())))?;
    // The small members are read whole, so their size is bounded: a pack is untrusted
    // input, and a compression bomb must not exhaust the auditor's memory.
    let mut entry_text = |name: &str, limit: u64| -> Result<Option<String>, RunError> {
        match zip.by_name(name) {
            Ok(f) => {
                let mut s = String::new();
                f.take(limit + 1)
                    .read_to_string(&mut s)
                    .map_err(io(format!("cannot read {name} in the pack")))?;
                if s.len() as u64 > limit {
                    return Err(RunError::Usage(format!(
                        "{name} in the pack is larger than {limit} bytes: not a sealtrail pack"
                    )));
                }
                Ok(Some(s))
            }
            Err(zip::result::ZipError::FileNotFound) => Ok(None),
            Err(e) => Err(RunError::Usage(format!(
                "cannot read {name} in the pack: {e}"
            ))),
        }
    };
    const SMALL: u64 = 1 << 20;
    let pack_key = entry_text(pack::KEY, SMALL)?;
    let pack_checkpoint = entry_text(pack::CHECKPOINT, SMALL)?;
    let proofs = entry_text(pack::PROOFS, 64 << 20)?;
    let key = match (key, pack_key) {
        (Some(k), _) => k,
        (None, Some(k)) => {
            eprintln!(
                "warning: using the key inside the pack; pass --key with the log's key from a source you trust"
            );
            parse_key(k.trim())?
        }
        (None, None) => return Err(RunError::Usage("the pack has no key: pass --key".into())),
    };
    let checkpoint = checkpoint.or(pack_checkpoint);
    let mut auditor = match Auditor::new(
        Checks::default(),
        Some(&key),
        checkpoint.as_deref(),
        trusted.as_deref(),
    ) {
        Ok(a) => a,
        Err(f) => return Ok(Err(f)),
    };
    // A log pruned by retention: the records start at its boundary. A retention archive:
    // a slice of the log, confirmed by what comes after it.
    if let Some(proofs) = &proofs {
        match pack::archive_of(proofs) {
            Ok(Some(a)) => {
                eprintln!(
                    "a retention archive of records {}..={}, written before they were removed",
                    a.first, a.last
                );
                auditor.as_archive();
            }
            Ok(None) => {}
            Err(f) => return Ok(Err(f)),
        }
        let started = pack::retention_of(proofs).and_then(|r| match r {
            Some(r) => {
                eprintln!(
                    "the records start at the retention boundary {}: the ones before it were removed by the tenant's retention policy",
                    r.retained_from
                );
                auditor.start_at_boundary(r.retained_from, r.hashes()?, None)
            }
            None => Ok(()),
        });
        if let Err(f) = started {
            return Ok(Err(f));
        }
    }
    let cosigned = match witnesses
        .map(|w| w.check(checkpoint.as_deref()))
        .transpose()?
        .transpose()
    {
        Ok(cosigned) => cosigned,
        Err(f) => return Ok(Err(f)),
    };
    let records = zip
        .by_name(pack::RECORDS)
        .map_err(|e| RunError::Usage(format!("the pack has no {}: {e}", pack::RECORDS)))?;
    let len = Some(records.size());
    let summary = match check_lines(auditor, BufReader::with_capacity(1 << 20, records), len)? {
        Ok(s) => s,
        Err(f) => return Ok(Err(f)),
    };
    if let Some(proofs) = proofs {
        let cp = summary.checkpoint.as_ref();
        if let Err(f) = pack::check_proofs(&proofs, cp) {
            return Ok(Err(f));
        }
    }
    Ok(Ok((summary, cosigned)))
}

/// Lines per chunk: large enough to amortize hand-offs, small enough to stay cache- and
/// memory-friendly (a few MB per chunk in flight).
const CHUNK_LINES: usize = 4096;
/// Chunks in flight between the stages (bounds memory).
const IN_FLIGHT: usize = 8;

/// One chunk of input lines: a buffer and the end offset of each line in it.
struct Chunk {
    seq: u64,
    buf: Vec<u8>,
    ends: Vec<usize>,
}

type Digests = Vec<Result<LineDigest, LineError>>;

/// Reads the next chunk into `buf`/`ends` (recycled buffers: fresh pages cost the kernel
/// more than the parsing); `None` at the end of the input.
fn read_chunk(
    input: &mut impl BufRead,
    seq: u64,
    (mut buf, mut ends): (Vec<u8>, Vec<usize>),
) -> std::io::Result<Option<Chunk>> {
    buf.clear();
    ends.clear();
    while ends.len() < CHUNK_LINES {
        let start = buf.len();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        while buf.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
            buf.pop();
        }
        if buf[start..].iter().all(u8::is_ascii_whitespace) {
            buf.truncate(start); // blank lines are not records
            continue;
        }
        ends.push(buf.len());
    }
    Ok((!ends.is_empty()).then_some(Chunk { seq, buf, ends }))
}

fn digest_chunk(chunk: &Chunk, mut out: Digests) -> Digests {
    out.clear();
    let mut start = 0;
    out.extend(chunk.ends.iter().map(|&end| {
        let d = digest_line(&chunk.buf[start..end]);
        start = end;
        d
    }));
    out
}

/// A pipeline on every core: one thread reads chunks, workers digest them (parse, JCS,
/// SHA-256), and this thread feeds the digests to the auditor in input order.
fn check_lines(
    mut auditor: Auditor,
    mut input: impl BufRead + Send,
    total_bytes: Option<u64>,
) -> Result<Result<AuditSummary, AuditFailure>, RunError> {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, mpsc};
    // Set at the first failure: the reader stops reading and the workers drain what is
    // queued without digesting it, so no stage waits forever on a full channel.
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let bar = progress(total_bytes);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Chunk>(IN_FLIGHT);
    let chunk_rx = Mutex::new(chunk_rx);
    let (done_tx, done_rx) = mpsc::sync_channel::<(u64, usize, Digests)>(IN_FLIGHT);
    // digest vectors go back to the workers too (fresh pages cost more than the work)
    let (spare_tx, spare_rx) = mpsc::sync_channel::<Digests>(2 * IN_FLIGHT);
    let spare_rx = Mutex::new(spare_rx);
    std::thread::scope(|s| {
        let (recycle_tx, recycle_rx) = mpsc::sync_channel::<(Vec<u8>, Vec<usize>)>(2 * IN_FLIGHT);
        let reader = s.spawn(move || -> std::io::Result<()> {
            let mut seq = 0;
            let fresh = || {
                (
                    Vec::with_capacity(CHUNK_LINES * 700),
                    Vec::with_capacity(CHUNK_LINES),
                )
            };
            while !stop.load(Ordering::Relaxed)
                && let Some(chunk) = read_chunk(
                    &mut input,
                    seq,
                    recycle_rx.try_recv().unwrap_or_else(|_| fresh()),
                )?
            {
                seq += 1;
                if chunk_tx.send(chunk).is_err() {
                    break; // the auditor stopped at a failure
                }
            }
            Ok(())
        });
        for _ in 0..workers {
            let (rx, tx, recycle) = (&chunk_rx, done_tx.clone(), recycle_tx.clone());
            let spare = &spare_rx;
            s.spawn(move || {
                loop {
                    let next = rx.lock().expect("chunk queue").recv();
                    let Ok(chunk) = next else { break };
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    let bytes = chunk.buf.len() + chunk.ends.len();
                    let reuse = spare.lock().expect("spare digests").try_recv();
                    let digests = digest_chunk(&chunk, reuse.unwrap_or_default());
                    let _ = recycle.try_send((chunk.buf, chunk.ends));
                    if tx.send((chunk.seq, bytes, digests)).is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
        drop(done_tx);
        drop(recycle_tx);
        let mut pending: BTreeMap<u64, (usize, Digests)> = BTreeMap::new();
        let mut next = 0u64;
        let mut outcome = None;
        'feed: for (seq, bytes, digests) in done_rx.iter() {
            pending.insert(seq, (bytes, digests));
            while let Some((bytes, mut digests)) = pending.remove(&next) {
                for d in &digests {
                    if let Err(f) = auditor.feed(d.as_ref()) {
                        stop.store(true, Ordering::Relaxed);
                        outcome = Some(Err(f));
                        break 'feed;
                    }
                }
                digests.clear();
                let _ = spare_tx.try_send(digests);
                bar.inc(bytes as u64);
                next += 1;
            }
        }
        drop(done_rx);
        let read = reader.join().expect("reader thread");
        match outcome {
            Some(failure) => {
                bar.abandon();
                Ok(failure)
            }
            None => {
                read.map_err(io("cannot read the records"))?;
                bar.finish_and_clear();
                Ok(auditor.finish())
            }
        }
    })
}

/// A byte-count progress bar on stderr, drawn only when stderr is a terminal.
fn progress(total: Option<u64>) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} verifying [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
