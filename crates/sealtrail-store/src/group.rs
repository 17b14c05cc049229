//! Group commit: one writer thread per store takes every batch waiting (from all
//! partitions' chainers), writes them as one durable unit, and answers each batch. Under
//! load a commit carries many batches, so the fixed cost of a durable commit (an fsync)
//! is shared.

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use crate::{CommitBatch, StoreError, StoreResult};

/// Most batches folded into one commit.
const MAX_GROUP_BATCHES: usize = 256;

type WriteJob = (Arc<CommitBatch>, oneshot::Sender<StoreResult<()>>);

pub(crate) struct GroupCommitter {
    sender: Mutex<Option<mpsc::Sender<WriteJob>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl GroupCommitter {
    /// Starts the writer thread. `write` must make the whole group durable, or write
    /// nothing of it and fail.
    pub(crate) fn start<W>(name: &str, mut write: W) -> StoreResult<Self>
    where
        W: FnMut(&[Arc<CommitBatch>]) -> StoreResult<()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<WriteJob>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP_BATCHES {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let batches: Vec<Arc<CommitBatch>> =
                        group.iter().map(|(b, _)| b.clone()).collect();
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
