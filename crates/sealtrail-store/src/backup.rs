//! Consistent copies of an embedded store while its server runs (`sealtrail backup`).
//!
//! - **The fjall engine's log** ([`copy_log`]): sealed segments never change, so they are
//!   copied as they are; the segment being written is copied up to a frame boundary that
//!   is known to be fsynced. With a server running, that is the indexer's persisted
//!   watermark (it only ever indexes frames whose fsync returned), at most about a second
//!   behind the last acknowledgement; with no server running, the whole log (a torn last
//!   frame is cut off). Every copied frame's checksum is checked. The indexes are not
//!   copied: a restored directory rebuilds them from the log on its first start.
//!   Copying beyond the synced end would be wrong, not just early: a frame written but not
//!   yet synced can still be cut off by a crash of the server, which then chains other
//!   events at those sequence numbers — the backup would hold a fork.
//! - **SQLite** ([`copy_sqlite`]): `VACUUM INTO`, a transactionally consistent copy of the
//!   database (API keys; for the SQLite engine also every record).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::fjall::{INDEX_DIR, LOG_DIR};
use crate::segment::{DEFAULT_PAGE_CACHE_WINDOW, SegmentLog};
use crate::{StoreError, StoreResult};

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = format!("{what} {}", path.display());
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

/// What [`copy_log`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCopy {
    pub segments: usize,
    /// The copied log's end position (bytes).
    pub end: u64,
    /// Frames in the copy (one per group commit).
    pub frames: u64,
}

/// Copies the segment log of `data_dir` into `to/log`. `running`: a server may be
/// appending, so only the synced prefix (the index watermark) is copied. `progress` is
/// called after each segment with (segments done, segments in all, bytes copied).
pub fn copy_log(
    data_dir: &Path,
    to: &Path,
    running: bool,
    mut progress: impl FnMut(usize, usize, u64),
) -> StoreResult<LogCopy> {
    let from = data_dir.join(LOG_DIR);
    let dest = to.join(LOG_DIR);
    std::fs::create_dir_all(&dest).map_err(io("cannot create", &dest))?;
    let limit = if running {
        crate::fjall::indexed_watermark(&data_dir.join(INDEX_DIR))?
    } else {
        u64::MAX
    };
    let mut bases: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&from)
        .map_err(io("cannot read", &from))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let base = p
                .file_name()?
                .to_str()?
                .strip_suffix(".seg")?
                .parse::<u64>()
                .ok()?;
            Some((base, p))
        })
        .filter(|(base, _)| *base < limit || (*base == 0 && limit == 0))
        .collect();
    bases.sort();
    let total = bases.len();
    let mut copied = 0u64;
    for (done, (base, path)) in bases.iter().enumerate() {
        let name = path.file_name().expect("a segment file name");
        let out_path = dest.join(name);
        let file = File::open(path).map_err(io("cannot open", path))?;
        let mut out = File::create(&out_path).map_err(io("cannot create", &out_path))?;
        let mut reader = file.take(limit.saturating_sub(*base));
        copied += std::io::copy(&mut reader, &mut out).map_err(io("cannot copy", path))?;
        out.flush().map_err(io("cannot write", &out_path))?;
        out.sync_all().map_err(io("cannot sync", &out_path))?;
        progress(done + 1, total, copied);
    }
    File::open(&dest)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot sync", &dest))?;
    // Checks every frame of the copy, and cuts off a last frame the copy caught half
    // written (only without a running server's watermark to stop at).
    let (log, recovery) = SegmentLog::open(&dest, u64::MAX)?;
    if running && recovery.truncated.is_some() {
        return Err(StoreError::Corrupt(format!(
            "the copy of the log up to the watermark {limit} ends inside a frame: {recovery:?}"
        )));
    }
    // Neither the copy nor the far-back part of the original is read again soon (a
    // restored directory reads its log once, in order, to rebuild its indexes): their
    // pages leave the page cache, where they would push out what the running server
    // reads (and, on a VM that hands free memory back to its host, cost a host fault
    // each; `SegmentLog::keep_cached`). Sealed segments of the original within
    // `DEFAULT_PAGE_CACHE_WINDOW` of its end are left as a server with the default
    // `embedded.log_page_cache` keeps them (the backup does not read the server's
    // setting; with another one, segments between the two windows are dropped here or
    // kept). Hints only: nothing on disk changes, and a dropped page is read back from
    // the disk when needed.
    let end = log.end();
    for (i, (_, path)) in bases.iter().enumerate() {
        let name = path.file_name().expect("a segment file name");
        crate::segment::drop_from_cache(&dest.join(name));
        let sealed_end = bases.get(i + 1).map(|(next, _)| *next);
        if sealed_end.is_some_and(|e| e.saturating_add(DEFAULT_PAGE_CACHE_WINDOW) <= end) {
            crate::segment::drop_from_cache(path);
        }
    }
    Ok(LogCopy {
        segments: total,
        end: log.end(),
        frames: recovery.frames,
    })
}

/// Copies the SQLite database of `data_dir` to `to/sealtrail.db` with `VACUUM INTO`.
pub fn copy_sqlite(data_dir: &Path, to: &Path) -> StoreResult<()> {
    let from = data_dir.join(crate::sqlite::DB_FILE);
    let dest = to.join(crate::sqlite::DB_FILE);
    let conn = rusqlite::Connection::open(&from)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", from.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let target = dest
        .to_str()
        .ok_or_else(|| StoreError::Unavailable(format!("{} is not UTF-8", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot copy {} to {}: {e}",
            from.display(),
            dest.display()
        ))
    })?;
    File::open(&dest)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync", &dest))
}

/// Reads a whole small file (for the backup's manifest and identity).
pub fn read_small(path: &Path) -> StoreResult<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut out))
        .map_err(io("cannot read", path))?;
    Ok(out)
}
