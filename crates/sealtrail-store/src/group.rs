//! Group commit: one writer thread per store takes every batch waiting (from all
//! partitions' chainers), writes them as one durable unit, and answers each batch. Under
//! load a commit carries many batches, so the fixed cost of a durable commit (an fsync)
//! is shared.
//!
//! **Commit delay.** Single events make small groups: a group carries what arrived during
//! the previous fsync, a dozen events under 64 concurrent callers, and on this kind of
//! virtual disk each `fdatasync` costs the writer ~150 µs of CPU, most of it in the
//! kernel. So when the store is busy with small groups — the previous group had fewer
//! than [`SMALL_GROUP_RECORDS`] records and was written less than [`BUSY_WITHIN`] ago —
//! the writer sleeps the configured delay before it takes the waiting batches (the
//! `commit_delay` of PostgreSQL, for the same reason). Large groups (REST batches, gRPC
//! streams) already share their fsync and never wait, and an idle store answers a lone
//! event at once. Nothing about durability changes: a batch is still answered only after
//! the fsync that covers it.

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{CommitBatch, StoreError, StoreResult};

/// Most batches folded into one commit.
const MAX_GROUP_BATCHES: usize = 256;
/// A group with fewer records than this is small: the next one may wait the commit delay.
const SMALL_GROUP_RECORDS: usize = 64;
/// The store counts as busy while its previous commit finished less than this long ago.
const BUSY_WITHIN: Duration = Duration::from_millis(2);

type WriteJob = (Arc<CommitBatch>, oneshot::Sender<StoreResult<()>>);

pub(crate) struct GroupCommitter {
    sender: Mutex<Option<mpsc::Sender<WriteJob>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl GroupCommitter {
    /// Starts the writer thread. `write` must make the whole group durable, or write
    /// nothing of it and fail. `commit_delay` (zero: none) is the module doc's.
    pub(crate) fn start<W>(name: &str, commit_delay: Duration, mut write: W) -> StoreResult<Self>
    where
        W: FnMut(&[Arc<CommitBatch>]) -> StoreResult<()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<WriteJob>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // The previous group: when it was written, and how many records it had.
                let mut previous: Option<(Instant, usize)> = None;
                while let Ok(first) = rx.recv() {
                    if waits(commit_delay, previous, Instant::now()) {
                        std::thread::sleep(commit_delay);
                    }
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP_BATCHES {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let batches: Vec<Arc<CommitBatch>> =
                        group.iter().map(|(b, _)| b.clone()).collect();
                    let records = batches.iter().map(|b| b.records.len()).sum();
                    match write(&batches) {
                        Ok(()) => {
                            for (_, reply) in group {
                                let _ = reply.send(Ok(()));
                            }
                        }
                        Err(_) if group.len() > 1 => {
                            // Something in the group was refused: write each batch on its
                            // own so only the offending one fails.
                            for (batch, reply) in group {
                                let _ = reply.send(write(&[batch]));
                            }
                        }
                        Err(err) => {
                            for (_, reply) in group {
                                let _ = reply.send(Err(err.duplicate()));
                            }
                        }
                    }
                    previous = Some((Instant::now(), records));
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            sender: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands `batch` to the writer and waits until it is durable (or refused).
    pub(crate) async fn submit(&self, batch: Arc<CommitBatch>) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        {
            let sender = self.sender.lock().expect("writer lock");
            let sender = sender
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            sender
                .send((batch, tx))
                .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    /// Stops taking batches, lets the writer finish what it has, and waits for it.
    pub(crate) fn close(&self) {
        self.sender.lock().expect("writer lock").take();
        if let Some(handle) = self.thread.lock().expect("thread lock").take() {
            let _ = handle.join();
        }
    }
}

/// Whether the writer sleeps `commit_delay` before taking the next group, given when the
/// previous group was written and how many records it had (the module doc).
fn waits(commit_delay: Duration, previous: Option<(Instant, usize)>, now: Instant) -> bool {
    !commit_delay.is_zero()
        && previous.is_some_and(|(at, records)| {
            records < SMALL_GROUP_RECORDS && now.saturating_duration_since(at) < BUSY_WITHIN
        })
}

impl StoreError {
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::NoSpace(m) => StoreError::NoSpace(m.clone()),
            StoreError::Refused(r) => StoreError::Refused(r.clone()),
            StoreError::Fenced(m) => StoreError::Fenced(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::Fatal(m) => StoreError::Fatal(m.clone()),
            StoreError::Unsupported(m) => StoreError::Unsupported(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_store_with_small_groups_waits() {
        let delay = Duration::from_micros(300);
        let now = Instant::now();
        let just = now - Duration::from_micros(500);
        // the first group, and any group of an idle store, goes at once
        assert!(!waits(delay, None, now));
        assert!(!waits(delay, Some((now - BUSY_WITHIN, 1)), now));
        // busy with small groups: wait
        assert!(waits(delay, Some((just, 1)), now));
        assert!(waits(delay, Some((just, SMALL_GROUP_RECORDS - 1)), now));
        // a large group shares its fsync already
        assert!(!waits(delay, Some((just, SMALL_GROUP_RECORDS)), now));
        // turned off
        assert!(!waits(Duration::ZERO, Some((just, 1)), now));
    }
}
