//! Signals the chainers of this process give the API: a commit counter live reads wait
//! on, and which partitions are failing (health checks).

use std::sync::Arc;

use tokio::sync::watch;

/// A signal bumped after every store commit; live streams wait on it instead of polling.
#[derive(Clone)]
pub struct CommitSignal {
    sender: Arc<watch::Sender<u64>>,
}

impl Default for CommitSignal {
    fn default() -> Self {
        Self {
            sender: Arc::new(watch::channel(0).0),
        }
    }
}

impl CommitSignal {
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
    /// A commit happened (the chainer calls this after each store write).
    pub fn bump(&self) {
        self.sender.send_modify(|n| *n += 1);
    }
}

/// Which partitions' chainers are currently failing to read or write the store (and
/// retrying). Health checks report it, so a load balancer or operator sees a stalled
/// partition instead of a green light.
#[derive(Clone, Default)]
pub struct Health {
    failing: Arc<std::sync::Mutex<std::collections::BTreeMap<u32, String>>>,
    /// When each partition's chainer last stored a batch.
    last_write: Arc<std::sync::Mutex<std::collections::BTreeMap<u32, std::time::Instant>>>,
}

impl Health {
    /// `(partition, last error)` of every partition that is retrying now.
    pub fn problems(&self) -> Vec<(u32, String)> {
        self.failing
            .lock()
            .expect("health lock")
            .iter()
            .map(|(p, e)| (*p, e.clone()))
            .collect()
    }
    /// Marks `partition` as failing with `error` (for callers outside the chainer loop, e.g.
    /// a partition that cannot be claimed yet).
    pub fn set_partition(&self, partition: u32, error: String) {
        self.failing
            .lock()
            .expect("health lock")
            .insert(partition, error);
    }
    /// Clears `partition`'s failure (e.g. when it moves to another process).
    pub fn clear_partition(&self, partition: u32) {
        self.failing.lock().expect("health lock").remove(&partition);
    }
    /// When `partition`'s chainer in this process last stored a batch (`None`: not yet).
    pub fn last_write(&self, partition: u32) -> Option<std::time::Instant> {
        self.last_write
            .lock()
            .expect("health lock")
            .get(&partition)
            .copied()
    }
    /// `partition`'s chainer stored a batch now.
    pub fn wrote(&self, partition: u32) {
        self.last_write
            .lock()
            .expect("health lock")
            .insert(partition, std::time::Instant::now());
    }
}
