//! The data directory of embedded mode: one server at a time (a lock), the engine and
//! format it holds (recorded when it is created; another engine is refused), and the log
//! key that signs its checkpoints (recorded; a lost or swapped key is refused).
//!
//! Why: the other engine starts empty, so `--store sqlite` on a fjall directory would
//! begin every chain again at sequence 1 and sign checkpoints that contradict the ones
//! already handed out, with the same key — to an auditor, equivocation by the log. A new
//! key on a directory whose checkpoints were signed with a lost one silently breaks every
//! link from old checkpoints to new ones.
//!
//! `data-dir.json` holds `{"format", "store", "log_key"}` (`log_key`: the verifier key,
//! `<name>+<id>+<base64>`). Crash windows: each file is written to a temporary file,
//! fsynced, renamed over the old one, and the directory is fsynced, so a crash leaves the
//! old or the new file, never half of one. The key file is made durable before it is
//! recorded and before anything is signed with it; a crash between the two leaves a key
//! that is not recorded yet, which the next start records.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sealtrail_core::note::NoteSigner;
use sealtrail_store::write_durably;
use serde::{Deserialize, Serialize};

use crate::config::{Config, StoreEngine};
use crate::serve::load_log_key;

/// The identity file inside the data directory.
pub const IDENTITY_FILE: &str = "data-dir.json";
/// The on-disk format this build reads and writes. 2: the fjall engine keeps its records
/// in a segment log (`log/`) with indexes derived from it (`index/`); format 1 kept them in
/// fjall itself (`events/`), which this build refuses (SQLite directories are unchanged
/// and are relabelled).
const FORMAT: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    format: u32,
    store: StoreEngine,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_key: Option<String>,
}

/// A locked, checked data directory; the lock is held as long as this lives.
pub struct DataDir {
    path: PathBuf,
    identity: Identity,
    _lock: File,
}

impl DataDir {
    /// Locks `config.data_dir` and checks that it holds `config.store` (or nothing yet),
    /// before any store is opened in it.
    pub fn open(config: &Config) -> anyhow::Result<DataDir> {
        let path = config.data_dir.clone();
        let lock = lock(&path)?;
        let identity_path = path.join(IDENTITY_FILE);
        let identity = if identity_path.exists() {
            let text = std::fs::read_to_string(&identity_path)
                .with_context(|| format!("reading {}", identity_path.display()))?;
            let identity: Identity = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a sealtrail data directory identity; restore it from a backup",
                    identity_path.display()
                )
            })?;
            anyhow::ensure!(
                identity.format <= FORMAT,
                "the data directory {} has format {}, newer than this sealtrail reads ({FORMAT}); run a newer sealtrail",
                path.display(),
                identity.format
            );
            identity
        } else {
            // New, or made before identities were recorded: tell by what it holds.
            let held = if path.join(sealtrail_store::fjall::LOG_DIR).exists()
                || path
                    .join(sealtrail_store::fjall::LEGACY_EVENTS_DIR)
                    .exists()
            {
                StoreEngine::Fjall
            } else if sealtrail_store::sqlite::holds_events(&path)? {
                StoreEngine::Sqlite
            } else {
                config.store
            };
            Identity {
                format: FORMAT,
                store: held,
                log_key: None,
            }
        };
        anyhow::ensure!(
            identity.store == config.store,
            "the data directory {dir} holds a {held} event store, but store = {wanted}: the {wanted} engine would start every chain again at sequence 1 and sign checkpoints that contradict the ones already signed. Start with --store {held}, or choose another --data-dir",
            dir = path.display(),
            held = engine_name(identity.store),
            wanted = engine_name(config.store),
        );
        let mut identity = identity;
        let upgrade = identity.format < FORMAT;
        if upgrade {
            anyhow::ensure!(
                !(identity.store == StoreEngine::Fjall
                    && path
                        .join(sealtrail_store::fjall::LEGACY_EVENTS_DIR)
                        .exists()
                    && !path.join(sealtrail_store::fjall::LOG_DIR).exists()),
                "the data directory {} holds a fjall store of data format 1 (records inside fjall), which this sealtrail no longer reads: it keeps records in a segment log. Keep serving it with the release that wrote it, or start this one on a new --data-dir",
                path.display()
            );
            identity.format = FORMAT;
        }
        let dir = DataDir {
            path,
            identity,
            _lock: lock,
        };
        if !identity_path.exists() || upgrade {
            dir.save()?;
        }
        Ok(dir)
    }

    /// The key that signs this directory's checkpoints: the key file's (created on first
    /// start), refused if it is not the key recorded for the directory — unless
    /// `new_log_key`, which records the new key and logs the change.
    pub fn log_signer(&mut self, config: &Config, new_log_key: bool) -> anyhow::Result<NoteSigner> {
        let key_path = config.log_key_path();
        let recorded = self.identity.log_key.clone();
        let signer = if key_path.exists() {
            load_log_key(&key_path, &config.log.origin)?
        } else {
            if let Some(recorded) = &recorded
                && !new_log_key
            {
                anyhow::bail!(
                    "the log key {} is missing, but this data directory's checkpoints were signed with {recorded}. Restore the key file from your backup (or point log.key_file at it). Only if it is lost for good, start once with --new-log-key: checkpoints signed before will not verify with the new key",
                    key_path.display()
                );
            }
            create_log_key(&key_path, &config.log.origin)?
        };
        let verifier = signer.verifier().to_string();
        match recorded {
            Some(recorded) if recorded == verifier => return Ok(signer),
            Some(recorded) if !new_log_key => anyhow::bail!(
                "the log key {} ({verifier}) is not the key this data directory's checkpoints were signed with ({recorded}). Restore that key, or start once with --new-log-key to change keys deliberately: checkpoints signed before will not verify with the new key",
                key_path.display()
            ),
            Some(recorded) => tracing::warn!(
                old = %recorded,
                new = %verifier,
                "the log signing key changed (--new-log-key): checkpoints signed before verify only with the old key"
            ),
            None => {}
        }
        self.identity.log_key = Some(verifier);
        self.save()?;
        Ok(signer)
    }

    fn save(&self) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(&self.identity).expect("identity serializes");
        json.push(b'\n');
        let path = self.path.join(IDENTITY_FILE);
        write_durably(&path, &json, false).with_context(|| format!("writing {}", path.display()))
    }
}

fn engine_name(engine: StoreEngine) -> &'static str {
    match engine {
        StoreEngine::Fjall => "fjall",
        StoreEngine::Sqlite => "sqlite",
        StoreEngine::Scylla => "scylla",
    }
}

/// Generates a log key (32 random bytes) and writes it to `path`, durably.
fn create_log_key(path: &Path, origin: &str) -> anyhow::Result<NoteSigner> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("no randomness for the log key: {e}"))?;
    let signer = NoteSigner::from_seed(origin, seed)?;
    write_durably(
        path,
        format!("{}\n", signer.to_private_string()).as_bytes(),
        true,
    )
    .with_context(|| format!("writing the log key {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a new log signing key");
    Ok(signer)
}

/// The engine a data directory's identity file records (`None`: no identity file).
pub fn recorded_engine(data_dir: &Path) -> anyhow::Result<Option<StoreEngine>> {
    let path = data_dir.join(IDENTITY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let identity: Identity = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a sealtrail data directory identity",
            path.display()
        )
    })?;
    Ok(Some(identity.store))
}

/// Takes the data directory's server lock if no server holds it (`None` if one does): a
/// backup holds it so no server starts meanwhile.
pub fn try_lock(data_dir: &Path) -> anyhow::Result<Option<File>> {
    let path = data_dir.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Takes an exclusive lock on `data_dir/serve.lock` for as long as the returned file lives (a server keeps it until its store is closed): two
/// servers on one data directory would each chain the same tenants and fork them. (The
/// `keys` command does not take it; it only touches the key table.) The OS drops the lock
/// when the process dies, so a crash never leaves a stale lock behind.
fn lock(data_dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    try_lock(data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another sealtrail server is already serving {}; stop it first or choose another --data-dir",
            data_dir.display()
        )
    })
}
