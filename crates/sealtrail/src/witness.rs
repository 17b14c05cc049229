//! `sealtrail witness`: a C2SP tlog-witness (<https://c2sp.org/tlog-witness>) for
//! sealtrail logs. It holds its own Ed25519 key and data directory and no sealtrail store:
//! a log submits each new checkpoint with a consistency proof from the last one this
//! witness cosigned for that origin; the witness checks the log's signature and the proof,
//! persists the checkpoint, and answers with a C2SP tlog-cosignature (`cosignature/v1`).
//! A log that shows another history to someone else, or rewrites its own, cannot get it
//! cosigned here: the proof from what this witness saw does not verify (`422`) or the
//! sizes disagree (`409`, with the size the witness holds).
//!
//! Data directory: `witness.key` (the secret key, mode 0600) and `state/<SHA-256 of the
//! origin, hex>`: the last cosigned checkpoint of each origin, as the log signed it.
//!
//! Crash windows of `add-checkpoint`: the check and the write happen under the origin's
//! lock, and the state file is replaced atomically (temporary file, fsync, rename, fsync
//! of the directory) before the cosignature is made. A crash before the rename leaves the
//! old checkpoint (the log retries and gets the same answer); a crash after it and before
//! the answer leaves the new one, so the log's retry from the old size gets `409` with
//! the new size, and a different checkpoint of that size can never be cosigned: it needs
//! the same root (`422` otherwise).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Subcommand;
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::cosignature::{Cosigner, split_note};
use sealtrail_core::merkle::{EMPTY_ROOT, Hash};
use sealtrail_core::note::{NoteError, NoteVerifier};
use sealtrail_core::proof::verify_consistency;
use sha2::{Digest, Sha256};

/// The witness's secret key file, in its data directory.
const KEY_FILE: &str = "witness.key";
/// Largest request body: an old-size line, up to 63 proof lines and a checkpoint with a
/// few signatures fit in well under this.
const MAX_BODY: usize = 64 * 1024;
/// Origins whose last cosigned checkpoint is kept in memory (beyond, idle ones are
/// dropped and read from their files when next needed).
const MAX_CACHED_ORIGINS: usize = 100_000;
/// C2SP: a client must not send more than 63 consistency proof lines.
const MAX_PROOF_LINES: usize = 63;

#[derive(Subcommand)]
pub(crate) enum WitnessCommand {
    /// Create the witness key in a new data directory; prints the witness's verifier key
    /// (`<name>+<key id>+<base64>`, C2SP cosignature/v1) as the last line of stdout: give
    /// it to the logs (`--witness URL=VKEY`) and to whoever verifies with `--witness`.
    Init {
        /// Directory for the key and the cosigned checkpoints (created, mode 0700).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The witness's name, a schema-less URL that identifies it (e.g.
        /// `witness.example.com/w1`) [default: `<hostname>/sealtrail-witness`].
        #[arg(long)]
        name: Option<String>,
    },
    /// Serve `POST /add-checkpoint` (C2SP tlog-witness) for the given logs. Stops on
    /// SIGTERM or Ctrl-C.
    Serve {
        /// The data directory `witness init` created.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7380")]
        addr: String,
        /// A log to witness (repeatable): its verifier key as `GET /v1/log/key` prints it
        /// (`verifier_key`). Its checkpoints are accepted for every tenant origin under the
        /// key's name (`<name>/<tenant>`).
        #[arg(long = "log", value_name = "VKEY", required = true)]
        logs: Vec<String>,
    },
}

pub(crate) fn run(cmd: WitnessCommand) -> anyhow::Result<()> {
    match cmd {
        WitnessCommand::Init { data_dir, name } => {
            let cosigner = init(&data_dir, name.as_deref())?;
            eprintln!(
                "created the witness key in {}; start it with: sealtrail witness serve --data-dir {} --log <a log's verifier key>",
                data_dir.join(KEY_FILE).display(),
                data_dir.display()
            );
            eprintln!("the witness's verifier key:");
            println!("{}", cosigner.verifier());
            Ok(())
        }
        WitnessCommand::Serve {
            data_dir,
            addr,
            logs,
        } => {
            let cosigner = load_key(&data_dir)?;
            let logs = logs
                .iter()
                .map(|k| {
                    NoteVerifier::parse(k).with_context(|| {
                        format!("--log {k:?}: expected a log's verifier key as GET /v1/log/key prints it")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(serve(
                Witness::open(&data_dir, cosigner, logs, None)?,
                &addr,
            ))
        }
    }
}

fn init(data_dir: &Path, name: Option<&str>) -> anyhow::Result<Cosigner> {
    let key_path = data_dir.join(KEY_FILE);
    if key_path.exists() {
        let existing = load_key(data_dir)?;
        anyhow::bail!(
            "{} already holds a witness key ({}); use another --data-dir, or serve this one",
            key_path.display(),
            existing.verifier()
        );
    }
    let name = match name {
        Some(name) => name.to_string(),
        None => format!("{}/sealtrail-witness", hostname()),
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for the key: {e}"))?;
    let cosigner = Cosigner::from_seed(&name, seed)
        .with_context(|| format!("--name {name:?}: a name has no spaces and no '+'"))?;
    create_private_dir(data_dir)?;
    create_private_dir(&data_dir.join("state"))?;
    sealtrail_store::write_durably(
        &key_path,
        format!("{}\n", cosigner.to_private_string()).as_bytes(),
        true,
    )
    .with_context(|| format!("writing {}", key_path.display()))?;
    Ok(cosigner)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace) && !h.contains('+'))
        .unwrap_or_else(|| "localhost".to_string())
}

pub(crate) fn load_key(data_dir: &Path) -> anyhow::Result<Cosigner> {
    let path = data_dir.join(KEY_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: create the witness with `sealtrail witness init --data-dir {}`",
            path.display(),
            data_dir.display()
        )
    })?;
    Cosigner::parse(&text).with_context(|| format!("{} is not a witness key", path.display()))
}

/// The witness: its key, the logs it trusts, and the last cosigned checkpoint per origin.
#[derive(Clone)]
pub(crate) struct Witness {
    inner: Arc<Inner>,
}

struct Inner {
    cosigner: Cosigner,
    logs: Vec<NoteVerifier>,
    state_dir: PathBuf,
    /// Per origin: its lock, held from the size check to the persisted write, and the
    /// checkpoint last cosigned (loaded from its file on first use).
    origins: Mutex<HashMap<String, Arc<OriginSlot>>>,
    /// Test hook (`SEALTRAIL_TEST_WITNESS_STALL_MS`): wait this long between persisting a
    /// checkpoint and answering, so a test can SIGKILL the witness in that window.
    stall: Option<Duration>,
    /// A check every checkpoint must also pass to be cosigned (`sealtrail monitor
    /// --witness`: that it verified the records).
    gate: Option<Gate>,
}

/// A further check before cosigning, after the signature and the consistency with the
/// last cosigned checkpoint: the refusal's status and message if it fails.
pub(crate) type Gate = Arc<
    dyn Fn(
            Checkpoint,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), (StatusCode, String)>> + Send>,
        > + Send
        + Sync,
>;

/// One origin's lock and its last cosigned checkpoint: `None` until loaded from its file,
/// then `Some(None)` if it has none.
type OriginSlot = tokio::sync::Mutex<Option<Option<Checkpoint>>>;

/// A refusal, as C2SP tlog-witness names it.
struct Refusal {
    status: StatusCode,
    message: String,
    /// `409`: the size of the latest cosigned checkpoint.
    latest: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            latest: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self.latest {
            Some(size) => (
                self.status,
                [(header::CONTENT_TYPE, "text/x.tlog.size")],
                format!("{size}\n"),
            )
                .into_response(),
            None => (
                self.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{}\n", self.message),
            )
                .into_response(),
        }
    }
}

/// A parsed `add-checkpoint` request body.
struct Submission<'a> {
    old: u64,
    proof: Vec<Hash>,
    note: &'a str,
}

fn parse_submission(body: &[u8]) -> Result<Submission<'_>, Refusal> {
    let bad = |m: &str| Refusal::new(StatusCode::BAD_REQUEST, m);
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    let (head, note) = text.split_once("\n\n").ok_or_else(|| {
        bad("expected an old size line, proof lines, an empty line, then the checkpoint")
    })?;
    let mut lines = head.split('\n');
    let old = lines
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .ok_or_else(|| bad("the first line must be `old <size>`"))?;
    if old.is_empty()
        || !old.bytes().all(|b| b.is_ascii_digit())
        || (old.len() > 1 && old.starts_with('0'))
    {
        return Err(bad("the old size must be a decimal without leading zeros"));
    }
    let old: u64 = old
        .parse()
        .map_err(|_| bad("the old size is out of range"))?;
    let proof = lines
        .map(|l| {
            B64.decode(l)
                .ok()
                .and_then(|h| Hash::try_from(h).ok())
                .ok_or_else(|| bad("each proof line must be a 32-byte hash in base64"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if proof.len() > MAX_PROOF_LINES {
        return Err(bad("more than 63 consistency proof lines"));
    }
    Ok(Submission { old, proof, note })
}

impl Witness {
    pub(crate) fn open(
        data_dir: &Path,
        cosigner: Cosigner,
        logs: Vec<NoteVerifier>,
        gate: Option<Gate>,
    ) -> anyhow::Result<Self> {
        let state_dir = data_dir.join("state");
        create_private_dir(&state_dir)?;
        let stall = std::env::var("SEALTRAIL_TEST_WITNESS_STALL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        Ok(Self {
            inner: Arc::new(Inner {
                cosigner,
                logs,
                state_dir,
                origins: Mutex::new(HashMap::new()),
                stall,
                gate,
            }),
        })
    }

    fn state_path(&self, origin: &str) -> PathBuf {
        self.inner
            .state_dir
            .join(hex::encode(Sha256::digest(origin.as_bytes())))
    }

    /// The last checkpoint cosigned for `origin`, from its file.
    fn load(&self, origin: &str) -> Result<Option<Checkpoint>, Refusal> {
        let path = self.state_path(origin);
        let note = match std::fs::read_to_string(&path) {
            Ok(note) => note,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(internal(format!("reading {}: {e}", path.display()))),
        };
        let (text, _) = split_note(&note)
            .map_err(|e| internal(format!("{} is damaged: {e}", path.display())))?;
        let checkpoint = Checkpoint::parse(text)
            .map_err(|e| internal(format!("{} is damaged: {e}", path.display())))?;
        if checkpoint.origin != origin {
            return Err(internal(format!(
                "{} holds origin {:?}, not {origin:?}",
                path.display(),
                checkpoint.origin
            )));
        }
        Ok(Some(checkpoint))
    }

    /// C2SP tlog-witness `add-checkpoint`: the cosignature line(s) of the new checkpoint.
    async fn add_checkpoint(&self, body: &[u8]) -> Result<String, Refusal> {
        let submission = parse_submission(body)?;
        let (text, _) = split_note(submission.note)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let checkpoint = Checkpoint::parse(text)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        // The logs whose tenant origins include this one.
        let trusted: Vec<&NoteVerifier> = self
            .inner
            .logs
            .iter()
            .filter(|log| {
                checkpoint
                    .origin
                    .strip_prefix(log.name())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|tenant| !tenant.is_empty())
            })
            .collect();
        if trusted.is_empty() {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("unknown log origin {:?}", checkpoint.origin),
            ));
        }
        // A signature by a trusted key that fails makes the note malformed; none at all
        // is as bad.
        let mut signed = false;
        for log in &trusted {
            match log.open(submission.note) {
                Ok(_) => signed = true,
                Err(NoteError::NoSignature { .. }) => {}
                Err(e) => return Err(Refusal::new(StatusCode::FORBIDDEN, e.to_string())),
            }
        }
        if !signed {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "no signature by a key this witness trusts for the origin",
            ));
        }
        if submission.old > checkpoint.size {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "old size {} is larger than the checkpoint's size {}",
                    submission.old, checkpoint.size
                ),
            ));
        }
        let slot = {
            let mut origins = self.inner.origins.lock().expect("origins lock");
            if origins.len() >= MAX_CACHED_ORIGINS && !origins.contains_key(&checkpoint.origin) {
                // Memory stays bounded with many origins: forget the idle ones (each is
                // loaded from its file again on its next submission).
                origins.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            origins
                .entry(checkpoint.origin.clone())
                .or_default()
                .clone()
        };
        let mut slot = slot.lock().await;
        if slot.is_none() {
            *slot = Some(self.load(&checkpoint.origin)?);
        }
        let latest = slot.as_ref().expect("loaded").clone();
        let latest_size = latest.as_ref().map_or(0, |c| c.size);
        if submission.old != latest_size {
            return Err(Refusal {
                status: StatusCode::CONFLICT,
                message: String::new(),
                latest: Some(latest_size),
            });
        }
        let unprocessable = |m: String| {
            tracing::warn!(origin = %checkpoint.origin, old = submission.old, size = checkpoint.size, "refused: {m}");
            Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, m)
        };
        if checkpoint.size == 0 && checkpoint.root != EMPTY_ROOT {
            return Err(unprocessable(
                "a checkpoint of size 0 must have the empty tree's root".into(),
            ));
        }
        match &latest {
            None if !submission.proof.is_empty() => {
                return Err(unprocessable(
                    "the consistency proof from size 0 must be empty".into(),
                ));
            }
            None => {}
            Some(latest) => verify_consistency(
                latest.size,
                checkpoint.size,
                &submission.proof,
                &latest.root,
                &checkpoint.root,
            )
            .map_err(|e| {
                unprocessable(format!(
                    "not consistent with the checkpoint of size {} cosigned before: {e}",
                    latest.size
                ))
            })?,
        }
        if let Some(gate) = &self.inner.gate {
            gate(checkpoint.clone()).await.map_err(|(status, m)| {
                tracing::warn!(origin = %checkpoint.origin, size = checkpoint.size, "refused: {m}");
                Refusal::new(status, m)
            })?;
        }
        let unchanged = latest
            .as_ref()
            .is_some_and(|l| l.size == checkpoint.size && l.root == checkpoint.root);
        if !unchanged {
            let path = self.state_path(&checkpoint.origin);
            let note = submission.note.to_string();
            tokio::task::spawn_blocking(move || {
                sealtrail_store::write_durably(&path, note.as_bytes(), false)
                    .map_err(|e| internal(format!("persisting {}: {e}", path.display())))
            })
            .await
            .map_err(|e| internal(e.to_string()))??;
            *slot = Some(Some(checkpoint.clone()));
            if let Some(stall) = self.inner.stall {
                tokio::time::sleep(stall).await;
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs().max(1));
        self.inner
            .cosigner
            .cosign(text, now)
            .map_err(|e| internal(e.to_string()))
    }
}

fn internal(message: String) -> Refusal {
    tracing::error!("{message}");
    Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

async fn add_checkpoint(State(witness): State<Witness>, body: Bytes) -> Response {
    match witness.add_checkpoint(&body).await {
        Ok(line) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            line,
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

impl Witness {
    pub(crate) fn verifier(&self) -> sealtrail_core::cosignature::CosignatureVerifier {
        self.inner.cosigner.verifier()
    }
}

pub(crate) fn router(witness: Witness) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(witness)
}

async fn serve(witness: Witness, addr: &str) -> anyhow::Result<()> {
    let listener = crate::serve::listen(addr)
        .with_context(|| format!("listening on {addr}: pick a free address with --addr"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        key = %witness.inner.cosigner.verifier(),
        logs = witness.inner.logs.len(),
        "witness serving POST /add-checkpoint"
    );
    axum::serve(listener, router(witness))
        .with_graceful_shutdown(crate::serve::wait_for_signal())
        .await?;
    Ok(())
}
