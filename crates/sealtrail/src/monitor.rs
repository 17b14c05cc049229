//! `sealtrail monitor`: follows one tenant's log over its API with a read key and checks,
//! round after round, that it only ever grows: each new signed checkpoint must verify with
//! the log key given, be consistent with the last one verified (RFC 6962 consistency
//! proof), and every record added since must hash to its `hash`, link to the previous one
//! (`prev_hash`, gapless `sequence_number`, same tenant) and, as a Merkle leaf, bring the
//! tree to the checkpoint's root. The state (the last verified checkpoint, the last record
//! hash and the tree's frontier) lives in `--state-dir`, written atomically after each
//! round, so a restarted monitor goes on where it stopped and never re-reads a record.
//!
//! When retention removed records the monitor had not read yet (it was stopped, or fell
//! behind), the log's records start at a later boundary: the monitor takes the removed
//! records' leaves from the log's hash tiles and goes on from the boundary (what it reads
//! must still bring the tree to the signed root), and requires the prune event naming the
//! boundary — in that round, or in the one it runs right after (`boundary_unconfirmed`
//! otherwise: records removed without the chain recording it).
//!
//! With `--witness HOST:PORT` the monitor is also a C2SP tlog-witness for the log it
//! follows (`POST /add-checkpoint`, its key in `--state-dir` from `sealtrail witness
//! init`): besides the witness's own checks (the log's signature, consistency with what it
//! cosigned last, persisted before it answers) it cosigns a checkpoint only once it has
//! verified every record up to that size itself: a larger one wakes a round at once and
//! waits for it (up to 8 s, then `503`, and the log retries with a later checkpoint); an
//! equal size must have the verified root, a smaller one be consistent with it (a proof
//! from the log, checked against the verified root); `422` otherwise. So its cosignature
//! says more than a witness's: not just "one history", but "records that hash, chain and
//! add up to this root".
//!
//! Exit codes: 1 on the first inconsistency, reported precisely (`INCONSISTENT [code] …`);
//! 2 when it cannot run (bad usage, an unreadable state); 0 after `--once` or on
//! SIGTERM/Ctrl-C. An unreachable log is not an inconsistency: the round is retried.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use sealtrail_core::audit::digest_line;
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::merkle::{Frontier, Hash};
use sealtrail_core::note::NoteVerifier;
use sealtrail_core::proof::verify_consistency;
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub(crate) struct MonitorArgs {
    /// The log's base URL, as its clients use it (e.g. `https://audit.example.com`).
    #[arg(long, value_name = "URL")]
    url: String,
    /// An API key of the tenant to follow, with the `read` scope.
    #[arg(
        long,
        env = "SEALTRAIL_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: String,
    /// The log's verifier key (`<name>+<key id>+<base64>`), or a file holding it, from a
    /// source you trust (not from the log you monitor).
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Directory for the monitor's state (created if missing); one per followed tenant.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// Seconds between rounds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    interval: u64,
    /// Run one round and exit (0 if the log is consistent).
    #[arg(long)]
    once: bool,
    /// Also serve C2SP tlog-witness `POST /add-checkpoint` on this address for the
    /// followed log, cosigning only checkpoints whose records this monitor verified. The
    /// witness key is read from --state-dir: create it first with `sealtrail witness init
    /// --data-dir <the same dir>`, and give the log the key it prints (`--witness
    /// http://HOST:PORT=KEY`).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "once")]
    witness: Option<String>,
}

/// How long `add-checkpoint` waits for the round it woke to verify the checkpoint's size.
const GATE_WAIT: Duration = Duration::from_secs(8);

/// What the monitor has verified, as its witness side sees it.
#[derive(Clone)]
struct View {
    origin: Option<String>,
    size: u64,
    root: Hash,
}

/// Shared by the rounds and the witness side.
struct Shared {
    view: tokio::sync::watch::Sender<View>,
    /// Asks for a round now.
    wake: tokio::sync::Notify,
    http: reqwest::Client,
    base: String,
    api_key: String,
}

impl Shared {
    fn publish(&self, state: &State) {
        self.view.send_replace(View {
            origin: state.origin.clone(),
            size: state.size,
            root: b64_hash(&state.root).unwrap_or(sealtrail_core::merkle::EMPTY_ROOT),
        });
    }
}

/// The witness side's gate: `cp` is cosigned only if this monitor verified its records.
async fn admit(
    shared: Arc<Shared>,
    cp: Checkpoint,
) -> Result<(), (axum::http::StatusCode, String)> {
    use axum::http::StatusCode;
    let mut rx = shared.view.subscribe();
    if rx.borrow().size < cp.size {
        shared.wake.notify_one();
        let reached = matches!(
            tokio::time::timeout(GATE_WAIT, rx.wait_for(|v| v.size >= cp.size)).await,
            Ok(Ok(_))
        );
        if !reached {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this monitor has verified {} records of {}, not yet {}: retry later",
                    rx.borrow().size,
                    cp.origin,
                    cp.size
                ),
            ));
        }
    }
    let view = rx.borrow().clone();
    match &view.origin {
        Some(origin) if *origin == cp.origin => {}
        Some(origin) => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("this monitor follows {origin:?}, not {:?}", cp.origin),
            ));
        }
        None => {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this monitor has not verified a checkpoint yet: retry later".into(),
            ));
        }
    }
    if cp.size == view.size {
        if cp.root != view.root {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "size {} has root {} here, verified record by record; the checkpoint says {}",
                    cp.size,
                    B64.encode(view.root),
                    B64.encode(cp.root)
                ),
            ));
        }
        return Ok(());
    }
    if cp.size == 0 {
        return Ok(()); // the witness checked the empty tree's root
    }
    #[derive(Deserialize)]
    struct Proof {
        hashes: Vec<String>,
    }
    let url = format!(
        "{}/v1/proof/consistency?from={}&to={}",
        shared.base, cp.size, view.size
    );
    let unavailable = |e: String| (StatusCode::SERVICE_UNAVAILABLE, format!("{url}: {e}"));
    let proof: Proof = shared
        .http
        .get(&url)
        .bearer_auth(&shared.api_key)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| unavailable(e.to_string()))?
        .json()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let hashes: Option<Vec<Hash>> = proof.hashes.iter().map(|h| b64_hash(h)).collect();
    let consistent = hashes.is_some_and(|hashes| {
        verify_consistency(cp.size, view.size, &hashes, &cp.root, &view.root).is_ok()
    });
    if !consistent {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the checkpoint of size {} is not consistent with the {} records verified here",
                cp.size, view.size
            ),
        ));
    }
    Ok(())
}

/// What the monitor has verified so far.
#[derive(Serialize, Deserialize, Default)]
struct State {
    /// The origin of the followed log (`<log name>/<tenant>`), fixed at the first round.
    origin: Option<String>,
    /// Records verified (the size of the last verified checkpoint).
    size: u64,
    /// That checkpoint's root, base64.
    root: String,
    /// The `hash` of record `size` (hex; 64 zeros before the first).
    last_hash: String,
    /// The tree's frontier at `size` (base64 node hashes, `Frontier::nodes`).
    frontier: Vec<String>,
    /// That checkpoint as the log signed it (evidence if a later one contradicts it).
    checkpoint: String,
    /// Redacted records verified whose redaction event is past `size` (it was appended
    /// after them, maybe after the checkpoint): checked when the monitor reaches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending_redactions: Vec<PendingRedaction>,
    /// A retention boundary the monitor jumped to (the records between it and what the
    /// monitor had verified were removed before it read them), until it reads the prune
    /// event that names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_boundary: Option<u64>,
}

/// A redacted record (`sequence_number`, `id`) and the redaction event it names.
#[derive(Serialize, Deserialize, Clone)]
struct PendingRedaction {
    sequence_number: u64,
    id: String,
    by_sequence_number: u64,
    by_id: String,
}

const STATE_FILE: &str = "monitor.json";

/// The first inconsistency found.
struct Inconsistent {
    code: &'static str,
    message: String,
}

enum RoundError {
    /// The log contradicts itself or what was verified before.
    Inconsistent(Inconsistent),
    /// The log did not answer as it should (network, HTTP error): retried.
    Unavailable(String),
}

fn inconsistent(code: &'static str, message: String) -> RoundError {
    RoundError::Inconsistent(Inconsistent { code, message })
}

pub(crate) fn run(args: MonitorArgs) -> ExitCode {
    let key = match crate::verify_cmd::parse_key(&args.key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.state_dir) {
        eprintln!("error: cannot create {}: {e}", args.state_dir.display());
        return ExitCode::from(2);
    }
    let mut state = match load_state(&args.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // No limit on a whole request: the first round of a long log streams its whole
    // export. A connection that stalls for a minute is given up (and retried).
    let http = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let base = args.url.trim_end_matches('/').to_string();
    let shared = Arc::new(Shared {
        view: tokio::sync::watch::channel(View {
            origin: None,
            size: 0,
            root: sealtrail_core::merkle::EMPTY_ROOT,
        })
        .0,
        wake: tokio::sync::Notify::new(),
        http: http.clone(),
        base: base.clone(),
        api_key: args.api_key.clone(),
    });
    shared.publish(&state);
    let witness = match &args.witness {
        None => None,
        Some(addr) => {
            let cosigner = match crate::witness::load_key(&args.state_dir) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: --witness: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let gate_shared = shared.clone();
            let gate: crate::witness::Gate = Arc::new(move |cp| {
                let shared = gate_shared.clone();
                Box::pin(admit(shared, cp))
            });
            match crate::witness::Witness::open(
                &args.state_dir,
                cosigner,
                vec![key.clone()],
                Some(gate),
            ) {
                Ok(w) => Some((addr.clone(), w)),
                Err(e) => {
                    eprintln!("error: --witness: {e:#}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    runtime.block_on(async {
        if let Some((addr, w)) = witness {
            let listener = match crate::serve::listen(&addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: --witness {addr}: cannot listen: {e}");
                    return ExitCode::from(2);
                }
            };
            eprintln!(
                "witnessing {} on http://{}/add-checkpoint as {}",
                key.name(),
                listener.local_addr().map_or(addr.clone(), |a| a.to_string()),
                w.verifier()
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, crate::witness::router(w)).await {
                    eprintln!("error: the witness server stopped: {e}");
                }
            });
        }
        let signal = crate::serve::wait_for_signal();
        tokio::pin!(signal);
        // Rounds run back to back while a boundary the monitor jumped to waits for its
        // prune event (the next round's checkpoint covers it), a few at most.
        let mut back_to_back = 0;
        loop {
            match round(&http, &base, &args.api_key, &key, &mut state).await {
                Ok(Some((from, to))) => {
                    if let Err(e) = save_state(&args.state_dir, &state) {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                    shared.publish(&state);
                    println!(
                        "verified records {from}..={to} of {}: hashes, chain and tree; checkpoint size {to} consistent with size {}",
                        state.origin.as_deref().unwrap_or("?"),
                        from - 1
                    );
                }
                Ok(None) => {
                    if args.once {
                        println!(
                            "no new records: {} holds {} verified records",
                            state.origin.as_deref().unwrap_or("the log"),
                            state.size
                        );
                    }
                }
                Err(RoundError::Inconsistent(i)) => {
                    println!("INCONSISTENT [{}] {}", i.code, i.message);
                    return ExitCode::from(1);
                }
                Err(RoundError::Unavailable(e)) => {
                    eprintln!("warning: the log did not answer: {e}");
                    if args.once {
                        return ExitCode::from(2);
                    }
                }
            }
            if state.pending_boundary.is_some() && back_to_back < 3 {
                back_to_back += 1;
                continue;
            }
            back_to_back = 0;
            if args.once {
                return ExitCode::SUCCESS;
            }
            tokio::select! {
                _ = &mut signal => return ExitCode::SUCCESS,
                _ = tokio::time::sleep(Duration::from_secs(args.interval)) => {}
                _ = shared.wake.notified() => {}
            }
        }
    })
}

fn load_state(dir: &Path) -> Result<State, String> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a monitor state: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
            last_hash: "0".repeat(64),
            ..State::default()
        }),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn save_state(dir: &Path, state: &State) -> Result<(), String> {
    let path = dir.join(STATE_FILE);
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    sealtrail_store::write_durably(&path, &bytes, false)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn b64_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok()?.try_into().ok()
}

async fn get(
    http: &reqwest::Client,
    url: String,
    api_key: &str,
) -> Result<reqwest::Response, RoundError> {
    let r = http
        .get(&url)
        .bearer_auth(api_key)
        .send()
        .await
        .map_err(|e| RoundError::Unavailable(format!("{url}: {e}")))?;
    if !r.status().is_success() {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        return Err(RoundError::Unavailable(format!(
            "{url}: {status} {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    Ok(r)
}

/// One round: `Some((first, last))` when records first..=last were verified.
async fn round(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    key: &NoteVerifier,
    state: &mut State,
) -> Result<Option<(u64, u64)>, RoundError> {
    let note = get(http, format!("{base}/v1/checkpoint?fresh=true"), api_key)
        .await?
        .text()
        .await
        .map_err(|e| RoundError::Unavailable(e.to_string()))?;
    let text = key.open(&note).map_err(|e| {
        inconsistent(
            "bad_signature",
            format!("the checkpoint is not signed by the log key: {e}"),
        )
    })?;
    let cp = Checkpoint::parse(text).map_err(|e| inconsistent("bad_checkpoint", e.to_string()))?;
    let tenant = cp
        .origin
        .strip_prefix(key.name())
        .and_then(|t| t.strip_prefix('/'))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            inconsistent(
                "bad_checkpoint",
                format!(
                    "origin {:?} is not a tenant of the log {:?}",
                    cp.origin,
                    key.name()
                ),
            )
        })?
        .to_string();
    if let Some(origin) = &state.origin
        && *origin != cp.origin
    {
        return Err(inconsistent(
            "bad_checkpoint",
            format!(
                "the checkpoint is for {:?}, but this state follows {origin:?}",
                cp.origin
            ),
        ));
    }
    let (m, n) = (state.size, cp.size);
    let old_root = if m == 0 {
        sealtrail_core::merkle::EMPTY_ROOT
    } else {
        b64_hash(&state.root)
            .ok_or_else(|| inconsistent("bad_state", "the state's root is not a hash".into()))?
    };
    if n < m {
        return Err(inconsistent(
            "rollback",
            format!(
                "the log's checkpoint has size {n}, but {m} records were verified before (checkpoint kept in the state): the log was truncated or rewritten"
            ),
        ));
    }
    if n == m {
        // A boundary jumped to last round: its prune event was appended before the
        // removal, so within this checkpoint, whose records were all read.
        if let Some(b) = state.pending_boundary {
            return Err(inconsistent(
                "boundary_unconfirmed",
                format!(
                    "the log went on from record {b} without the records before it, and no prune event (sealtrail.retention.prune) up to record {n} names that boundary: records were removed without the chain recording it"
                ),
            ));
        }
        if cp.root != old_root {
            return Err(inconsistent(
                "fork",
                format!(
                    "a checkpoint of size {n} with root {}, but the verified one has root {}: two histories",
                    B64.encode(cp.root),
                    state.root
                ),
            ));
        }
        return Ok(None);
    }
    if m > 0 {
        #[derive(Deserialize)]
        struct Proof {
            hashes: Vec<String>,
        }
        let proof: Proof = get(
            http,
            format!("{base}/v1/proof/consistency?from={m}&to={n}"),
            api_key,
        )
        .await?
        .json()
        .await
        .map_err(|e| RoundError::Unavailable(e.to_string()))?;
        let hashes: Vec<Hash> = proof
            .hashes
            .iter()
            .map(|h| b64_hash(h))
            .collect::<Option<_>>()
            .ok_or_else(|| inconsistent("fork", "the consistency proof is malformed".into()))?;
        verify_consistency(m, n, &hashes, &old_root, &cp.root).map_err(|e| {
            inconsistent(
                "fork",
                format!(
                    "the checkpoint of size {n} is not consistent with the verified one of size {m}: {e}"
                ),
            )
        })?;
    }
    // The records m+1..=n, checked one by one as they stream in.
    let nodes = state
        .frontier
        .iter()
        .map(|h| b64_hash(h))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| inconsistent("bad_state", "the state's frontier is not hashes".into()))?;
    let mut frontier = Frontier::from_nodes(m, nodes)
        .map_err(|e| inconsistent("bad_state", format!("the state's frontier: {e:?}")))?;
    let mut last_hash = state.last_hash.clone();
    let mut pending: std::collections::BTreeMap<u64, PendingRedaction> = state
        .pending_redactions
        .iter()
        .map(|p| (p.by_sequence_number, p.clone()))
        .collect();
    let mut expected = m + 1;
    let mut response = get(
        http,
        format!("{base}/v1/export?format=jsonl&from={}&to={n}", m + 1),
        api_key,
    )
    .await?;
    let mut buf: Vec<u8> = Vec::new();
    // The first record: past `m + 1` when retention removed records the monitor had not
    // read yet. It goes on from there: the removed records' leaves come from the log's
    // hash tiles (the tree keeps them), so the records it reads must still bring the tree
    // to the signed root; the boundary's own link is taken as is (the tree binds it), and
    // the prune event naming the boundary must come (by the end of the next round: it
    // was appended before the records were removed).
    let carried_boundary = state.pending_boundary;
    let mut boundary = state.pending_boundary;
    while !buf.contains(&b'\n') {
        match response
            .chunk()
            .await
            .map_err(|e| RoundError::Unavailable(format!("reading the export: {e}")))?
        {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => break,
        }
    }
    let first_end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    if first_end > 0 {
        let d = digest_line(&buf[..first_end])
            .map_err(|e| inconsistent("unreadable_record", format!("record {expected}: {e}")))?;
        if d.sequence_number > expected && d.sequence_number <= n {
            let first = d.sequence_number;
            for leaf in
                removed_leaves(http, base, api_key, &tenant, expected - 1, first - 1, n).await?
            {
                frontier.push_leaf_hash(leaf, |_, _| {});
            }
            eprintln!(
                "records {expected}..={} were removed by retention before this monitor read them: going on from {first} on the tree the log kept",
                first - 1
            );
            // Redactions by removed records can no longer be checked.
            pending.retain(|by, _| *by >= first);
            last_hash = hex::encode(d.prev_hash);
            expected = first;
            boundary = Some(first);
        }
    }
    let mut check_line = |line: &[u8]| -> Result<(), RoundError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let d = digest_line(line)
            .map_err(|e| inconsistent("unreadable_record", format!("record {expected}: {e}")))?;
        let at = format!("record {} (id {:?})", d.sequence_number, d.id);
        if d.tenant_id != tenant {
            return Err(inconsistent(
                "wrong_tenant",
                format!("{at} is of tenant {:?}, not {tenant:?}", d.tenant_id),
            ));
        }
        if d.sequence_number != expected {
            return Err(inconsistent(
                "sequence_gap",
                format!(
                    "expected sequence_number {expected}, got {at}: a record is missing or out of order"
                ),
            ));
        }
        if d.computed_hash != d.stored_hash {
            return Err(inconsistent(
                "hash_mismatch",
                format!(
                    "{at}: its content hashes to {}, not to its hash {}: it was changed",
                    hex::encode(d.computed_hash),
                    hex::encode(d.stored_hash)
                ),
            ));
        }
        if hex::encode(d.prev_hash) != last_hash {
            return Err(inconsistent(
                "prev_hash_mismatch",
                format!(
                    "{at}: prev_hash {} is not the hash of the record before it ({last_hash})",
                    hex::encode(d.prev_hash)
                ),
            ));
        }
        // A redacted record is bound by its links; its redaction must be a real one.
        if let Some((by, by_id)) = &d.redacted_by {
            if *by <= d.sequence_number {
                return Err(inconsistent(
                    "redaction_unconfirmed",
                    format!("{at} is marked redacted by record {by}, which is not after it"),
                ));
            }
            if let Some(other) = pending.get(by) {
                // One redaction event redacts one record.
                return Err(inconsistent(
                    "redaction_unconfirmed",
                    format!(
                        "{at} is marked redacted by record {by}, which record {} already names as its redaction",
                        other.sequence_number
                    ),
                ));
            }
            pending.insert(
                *by,
                PendingRedaction {
                    sequence_number: d.sequence_number,
                    id: d.id.clone(),
                    by_sequence_number: *by,
                    by_id: by_id.clone(),
                },
            );
        } else if let Some(p) = pending.remove(&d.sequence_number)
            && (d.redacts.as_deref() != Some(p.id.as_str()) || d.id != p.by_id)
        {
            return Err(inconsistent(
                "redaction_unconfirmed",
                format!(
                    "record {} (id {:?}) is marked redacted by {at}, which is not a redaction of it",
                    p.sequence_number, p.id
                ),
            ));
        }
        if d.prunes.is_some() && d.prunes == boundary {
            boundary = None;
        }
        frontier.push(&d.stored_hash, |_, _| {});
        last_hash = hex::encode(d.stored_hash);
        expected += 1;
        Ok(())
    };
    loop {
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            check_line(&line[..line.len() - 1])?;
        }
        let chunk = response
            .chunk()
            .await
            .map_err(|e| RoundError::Unavailable(format!("reading the export: {e}")))?;
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
    }
    check_line(&buf)?;
    if expected != n + 1 {
        return Err(inconsistent(
            "truncated",
            format!(
                "the checkpoint has {n} records but the log served only up to {}",
                expected - 1
            ),
        ));
    }
    if frontier.root() != cp.root {
        return Err(inconsistent(
            "root_mismatch",
            format!(
                "records 1..={n} make the root {}, but the signed checkpoint says {}",
                B64.encode(frontier.root()),
                B64.encode(cp.root)
            ),
        ));
    }
    if let Some(b) = boundary
        && carried_boundary == Some(b)
    {
        return Err(inconsistent(
            "boundary_unconfirmed",
            format!(
                "the log went on from record {b} without the records before it, and no prune event (sealtrail.retention.prune) up to record {n} names that boundary: records were removed without the chain recording it"
            ),
        ));
    }
    state.origin = Some(cp.origin.clone());
    state.size = n;
    state.root = B64.encode(cp.root);
    state.last_hash = last_hash;
    state.frontier = frontier.nodes().iter().map(|h| B64.encode(h)).collect();
    state.checkpoint = note;
    state.pending_redactions = pending.into_values().collect();
    state.pending_boundary = boundary;
    Ok(Some((m + 1, n)))
}

/// The leaf hashes of leaves `from..to` (0-based) of the tree of size `size`, from the
/// log's level-0 hash tiles (C2SP tlog-tiles: 256 leaf hashes per tile, the last one
/// partial).
async fn removed_leaves(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    tenant: &str,
    from: u64,
    to: u64,
    size: u64,
) -> Result<Vec<Hash>, RoundError> {
    let mut out = Vec::with_capacity((to - from) as usize);
    for k in from / 256..=(to - 1) / 256 {
        let width = (size - k * 256).min(256);
        let path = format!(
            "tile/{}",
            sealtrail_api::tiles::TilePath::Hashes {
                level: 0,
                index: k,
                width: width as u16,
            }
            .to_path()
        );
        let bytes = get(http, format!("{base}/v1/tlog/{tenant}/{path}"), api_key)
            .await?
            .bytes()
            .await
            .map_err(|e| RoundError::Unavailable(format!("reading {path}: {e}")))?;
        if bytes.len() as u64 != width * 32 {
            return Err(inconsistent(
                "bad_tile",
                format!(
                    "{path} has {} bytes, not {} ({width} leaf hashes)",
                    bytes.len(),
                    width * 32
                ),
            ));
        }
        for (i, h) in bytes.chunks_exact(32).enumerate() {
            let leaf = k * 256 + i as u64;
            if (from..to).contains(&leaf) {
                out.push(h.try_into().expect("32 bytes"));
            }
        }
    }
    Ok(out)
}
