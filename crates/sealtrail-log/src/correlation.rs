//! The correlation channel: how a chainer hands an entry's outcome to the gateway (and
//! the request) that waits for it. A gateway registers a waiter with its [`Correlator`]
//! and puts the [`ReplyAddress`] in the entry; the chainer sends the outcome to that
//! address through a [`ReplySink`] (in-process: the correlator itself; distributed: a
//! reply topic read by the gateway, which then calls [`Correlator::deliver`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sealtrail_core::committed::Committed;
use sealtrail_core::receipt::Receipt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// Where a reply goes: a gateway and a waiter id unique within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplyAddress {
    pub gateway: String,
    pub correlation_id: u64,
}

/// What happened to an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntryOutcome {
    /// Stored durably: the receipt and the committed records (including, for an
    /// idempotent retry, the originally committed record), in request order.
    Committed {
        receipt: Receipt,
        /// Shared with the batch the chainer stored where it can be (no copy per
        /// record); on the wire an array of records.
        records: Committed,
    },
    /// Not stored (yet); the client may retry the same ids.
    Unavailable {
        message: String,
        /// The store's disk is below its free-space floor (`507`, not `503`). Absent on
        /// the wire when false, so older gateways and chainers read it unchanged.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_space: bool,
    },
}

#[async_trait]
pub trait ReplySink: Send + Sync + 'static {
    /// Sends `outcome` to `to`. Best effort: a waiter that timed out or a gateway that
    /// died simply never reads it (the receipt in the store stays the truth).
    async fn send(&self, to: &ReplyAddress, outcome: EntryOutcome);

    /// Sends every outcome of one chainer batch, in order. A sink with a cost per message
    /// (Kafka) sends all of a gateway's replies together; the default sends them one by
    /// one.
    async fn send_all(&self, replies: Vec<(ReplyAddress, EntryOutcome)>) {
        for (to, outcome) in replies {
            self.send(&to, outcome).await;
        }
    }
}

/// A gateway's registry of waiting requests.
pub struct Correlator {
    gateway: String,
    next: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<EntryOutcome>>>,
}

/// A registered waiter; dropping it unregisters.
pub struct Waiter<'a> {
    correlator: &'a Correlator,
    pub address: ReplyAddress,
    receiver: oneshot::Receiver<EntryOutcome>,
}

impl Correlator {
    pub fn new(gateway: impl Into<String>) -> Self {
        Self {
            gateway: gateway.into(),
            next: AtomicU64::new(1),
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a waiter; put `waiter.address` into the entry before appending it.
    pub fn register(&self) -> Waiter<'_> {
        let correlation_id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("correlator lock")
            .insert(correlation_id, tx);
        Waiter {
            correlator: self,
            address: ReplyAddress {
                gateway: self.gateway.clone(),
                correlation_id,
            },
            receiver: rx,
        }
    }

    /// Hands `outcome` to the waiter registered under `correlation_id`, if it still waits.
    pub fn deliver(&self, correlation_id: u64, outcome: EntryOutcome) {
        let sender = self
            .waiters
            .lock()
            .expect("correlator lock")
            .remove(&correlation_id);
        if let Some(sender) = sender {
            let _ = sender.send(outcome);
        }
    }
}

impl Waiter<'_> {
    /// Waits for the outcome; `None` after `timeout` (the entry may still commit later).
    pub async fn wait(mut self, timeout: std::time::Duration) -> Option<EntryOutcome> {
        tokio::time::timeout(timeout, &mut self.receiver)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.correlator
            .waiters
            .lock()
            .expect("correlator lock")
            .remove(&self.address.correlation_id);
    }
}

#[async_trait]
impl ReplySink for Correlator {
    async fn send(&self, to: &ReplyAddress, outcome: EntryOutcome) {
        if to.gateway == self.gateway {
            self.deliver(to.correlation_id, outcome);
        }
    }
}
