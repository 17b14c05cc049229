//! The free-space floor of an embedded store's disk.
//!
//! fjall poisons its database on the first failed journal write (it cannot know what
//! reached the disk) and then refuses every write until the process restarts; a flush or
//! compaction that fails kills its worker and poisons it too. So the store must not let
//! the disk fill: before each group commit the writer checks the free space of the data
//! directory's file system, and below the floor (`embedded.min_free_disk`) it refuses the group
//! with [`StoreError::NoSpace`] — nothing written, retryable. The floor leaves room for
//! the flushes and compactions already under way. Reads keep working; writes resume by
//! themselves once space is freed (the next check passes).
//!
//! If something else fills the disk faster than the floor allows for, fjall is poisoned
//! anyway: that is a fatal error, and the server exits so a supervisor restarts it once
//! space is back (nothing acknowledged is lost: acknowledged groups are in the journal).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{StoreError, StoreResult};

const MIB: u64 = 1024 * 1024;

/// How stale a "blocked" answer may be for health checks and the API's fast refusal.
const RECHECK: Duration = Duration::from_millis(500);

pub struct DiskGuard {
    dir: PathBuf,
    floor: u64,
    state: Mutex<State>,
}

struct State {
    checked_at: Option<Instant>,
    blocked: Option<String>,
}

impl DiskGuard {
    /// Guards the file system of `dir` with a floor of `floor_bytes` free (0: no floor).
    pub fn new(dir: &Path, floor_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            floor: floor_bytes,
            state: Mutex::new(State {
                checked_at: None,
                blocked: None,
            }),
        }
    }

    /// Bytes available to this process on the guarded file system.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.dir)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Checks the free space now: `Err(NoSpace)` below the floor.
    pub fn check(&self) -> StoreResult<()> {
        let blocked = match self.free_bytes() {
            Ok(free) => {
                metrics::gauge!("sealtrail_store_disk_free_bytes").set(free as f64);
                (free < self.floor).then(|| {
                    format!(
                        "the disk of {} has {} MiB free, below the floor of {} MiB \
                         (embedded.min_free_disk): writes are refused until space is freed; \
                         reads keep working",
                        self.dir.display(),
                        free / MIB,
                        self.floor.div_ceil(MIB)
                    )
                })
            }
            Err(err) => {
                tracing::warn!(%err, dir = %self.dir.display(), "cannot read the free disk space");
                None
            }
        };
        let mut state = self.state.lock().expect("disk guard lock");
        if blocked.is_some() != state.blocked.is_some() {
            match &blocked {
                Some(reason) => tracing::error!("{reason}"),
                None => tracing::info!("free disk space is back above the floor: writes resume"),
            }
        }
        metrics::gauge!("sealtrail_store_writes_blocked").set(if blocked.is_some() {
            1.0
        } else {
            0.0
        });
        state.checked_at = Some(Instant::now());
        state.blocked = blocked.clone();
        match blocked {
            Some(reason) => Err(StoreError::NoSpace(reason)),
            None => Ok(()),
        }
    }

    /// Why writes are refused now, if they are (checked again when the last check is
    /// older than half a second).
    pub fn blocked(&self) -> Option<String> {
        {
            let state = self.state.lock().expect("disk guard lock");
            if state.checked_at.is_some_and(|at| at.elapsed() < RECHECK) {
                return state.blocked.clone();
            }
        }
        self.check().err().map(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_blocks_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let open = DiskGuard::new(dir.path(), 0);
        assert!(open.check().is_ok());
        assert!(open.blocked().is_none());
        assert!(open.free_bytes().unwrap() > 0);
        let shut = DiskGuard::new(dir.path(), u64::MAX);
        let err = shut.check().unwrap_err();
        assert!(matches!(err, StoreError::NoSpace(_)), "{err:?}");
        assert!(err.is_retryable());
        assert!(shut.blocked().unwrap().contains("embedded.min_free_disk"));
    }
}
