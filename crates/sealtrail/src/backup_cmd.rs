//! `sealtrail backup` and `sealtrail restore`: a consistent copy of an embedded data
//! directory, taken while its server runs, and bringing one back.
//!
//! A backup holds the log (fjall engine: the segments up to a synced frame boundary, see
//! `sealtrail_store::backup`), the SQLite database (API keys; all records with the SQLite
//! engine), the directory's identity (engine, format, the verifier key its checkpoints
//! were signed with), the log's signing key, and a manifest. The fjall indexes are not in
//! it: a restored directory rebuilds them from the log when its server first starts, so
//! it serves the same records, proofs and checkpoints, and the log continues.
//!
//! The backup directory must be new or empty; so must the directory restored into. The
//! signing key is copied (mode 0600): keep the backup as secret as the key.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::config::{Config, StoreEngine};
use crate::data_dir::{IDENTITY_FILE, recorded_engine, try_lock};

const MANIFEST: &str = "sealtrail-backup.json";
const KEY_FILE: &str = "log-key.private";

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub common: crate::Common,
    /// Directory to write the backup to (created; must be empty if it exists).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A directory written by `sealtrail backup`.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Data directory to restore into (created; must be empty if it exists).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    sealtrail: String,
    store: StoreEngine,
    created_at: String,
    /// Whether a server was running (then the log is copied up to its synced watermark).
    server_running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_frames: Option<u64>,
}

fn ensure_empty(dir: &Path, what: &str) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        anyhow::ensure!(
            entries.next().is_none(),
            "{what} {} is not empty; choose a new directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn copy_file(from: &Path, to: &Path, secret: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    sealtrail_store::write_durably(to, &bytes, secret)
        .with_context(|| format!("cannot write {}", to.display()))
}

pub fn backup(config: Config, args: &BackupArgs) -> anyhow::Result<()> {
    let data = &config.data_dir;
    let store = recorded_engine(data)?.with_context(|| {
        format!(
            "{} has no {IDENTITY_FILE}: not a sealtrail data directory (or one that no server has started on yet)",
            data.display()
        )
    })?;
    anyhow::ensure!(
        store != StoreEngine::Scylla,
        "backup copies embedded data directories; back up a Scylla cluster with its own tools"
    );
    ensure_empty(&args.to, "the backup directory")?;
    // Held while copying when no server runs, so none starts meanwhile.
    let lock = try_lock(data)?;
    let running = lock.is_none();
    eprintln!(
        "backing up {} ({} store{}) to {}",
        data.display(),
        match store {
            StoreEngine::Fjall => "fjall",
            _ => "sqlite",
        },
        if running { ", server running" } else { "" },
        args.to.display()
    );
    let mut manifest = Manifest {
        sealtrail: env!("CARGO_PKG_VERSION").to_string(),
        store,
        created_at: sealtrail_store::now_wire(),
        server_running: running,
        log_end: None,
        log_frames: None,
    };
    // The identity first: it names the key the checkpoints were signed with.
    copy_file(
        &data.join(IDENTITY_FILE),
        &args.to.join(IDENTITY_FILE),
        false,
    )?;
    let key = config.log_key_path();
    if key.exists() {
        copy_file(&key, &args.to.join(KEY_FILE), true)?;
    } else {
        eprintln!(
            "warning: no log key at {}: the backup has none, and a restored server signs only with the key you restore beside it",
            key.display()
        );
    }
    // The key that seals the log-stream secrets: without it the restored destinations
    // cannot sign their deliveries.
    let stream_key = data.join(crate::serve::STREAM_KEY_FILE);
    if stream_key.exists() {
        copy_file(
            &stream_key,
            &args.to.join(crate::serve::STREAM_KEY_FILE),
            true,
        )?;
    }
    sealtrail_store::backup::copy_sqlite(data, &args.to)?;
    if store == StoreEngine::Fjall {
        let copy =
            sealtrail_store::backup::copy_log(data, &args.to, running, |done, all, bytes| {
                eprintln!(
                    "  log segment {done}/{all} copied ({:.1} MB)",
                    bytes as f64 / 1e6
                );
            })?;
        manifest.log_end = Some(copy.end);
        manifest.log_frames = Some(copy.frames);
        eprintln!(
            "  log: {} frames, {} bytes, every checksum checked",
            copy.frames, copy.end
        );
    }
    let mut json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    json.push(b'\n');
    sealtrail_store::write_durably(&args.to.join(MANIFEST), &json, false)?;
    drop(lock);
    println!("backup written to {}", args.to.display());
    Ok(())
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let manifest_path = args.from.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{} has no {MANIFEST}: not a complete sealtrail backup",
            args.from.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a sealtrail backup manifest",
            manifest_path.display()
        )
    })?;
    ensure_empty(&args.data_dir, "the data directory")?;
    let to = &args.data_dir;
    copy_file(
        &args.from.join(IDENTITY_FILE),
        &to.join(IDENTITY_FILE),
        false,
    )?;
    copy_file(
        &args.from.join(sealtrail_store::sqlite::DB_FILE),
        &to.join(sealtrail_store::sqlite::DB_FILE),
        false,
    )?;
    if args.from.join(KEY_FILE).exists() {
        copy_file(&args.from.join(KEY_FILE), &to.join(KEY_FILE), true)?;
    }
    let stream_key = args.from.join(crate::serve::STREAM_KEY_FILE);
    if stream_key.exists() {
        copy_file(&stream_key, &to.join(crate::serve::STREAM_KEY_FILE), true)?;
    }
    if manifest.store == StoreEngine::Fjall {
        // Restoring is copying a log whose frames the backup checked: a sealtrail
        // "backup" of the backup directory does exactly that, and checks them again.
        let copy = sealtrail_store::backup::copy_log(&args.from, to, false, |done, all, _| {
            eprintln!("  log segment {done}/{all} restored");
        })?;
        anyhow::ensure!(
            Some(copy.end) == manifest.log_end,
            "the backup's log ends at {}, its manifest says {:?}: the backup is incomplete",
            copy.end,
            manifest.log_end
        );
    }
    std::fs::File::open(to)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", to.display()))?;
    println!(
        "restored the backup of {} into {}; start it with `sealtrail serve --data-dir {}`{}",
        manifest.created_at,
        to.display(),
        to.display(),
        if manifest.store == StoreEngine::Fjall {
            " (its first start rebuilds the indexes from the log)"
        } else {
            ""
        }
    );
    Ok(())
}
