//! The in-process log of embedded mode: one bounded queue per partition.
//!
//! Entries live in memory only ([`Durability::Volatile`]): a crash loses the queued
//! entries, none of which was acknowledged to a client, because embedded-mode gateways
//! acknowledge only after the chainer's reply, which comes after the store's fsync.

use async_trait::async_trait;
use sealtrail_core::partition::partition_for;
use tokio::sync::mpsc;

use crate::{Durability, LogEntry, LogError, LogProducer, Offset, PartitionConsumer};

type PartitionSender = mpsc::Sender<(Offset, LogEntry)>;

pub struct MemoryLog {
    /// `None` once closed: consumers then drain what is queued and stop.
    senders: std::sync::RwLock<Option<Vec<PartitionSender>>>,
    partitions: u32,
    next_offsets: Vec<std::sync::atomic::AtomicU64>,
    closed: tokio::sync::watch::Sender<bool>,
}

pub struct MemoryConsumer {
    partition: u32,
    receiver: mpsc::Receiver<(Offset, LogEntry)>,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl MemoryLog {
    /// A log of `partitions` partitions, each holding at most `capacity` entries; a full
    /// partition refuses appends with [`LogError::Overloaded`].
    pub fn new(partitions: u32, capacity: usize) -> (Self, Vec<MemoryConsumer>) {
        assert!(partitions > 0 && capacity > 0);
        let mut senders = Vec::new();
        let mut consumers = Vec::new();
        let (closed, closed_rx) = tokio::sync::watch::channel(false);
        for partition in 0..partitions {
            let (tx, rx) = mpsc::channel(capacity);
            senders.push(tx);
            consumers.push(MemoryConsumer {
                partition,
                receiver: rx,
                closed: closed_rx.clone(),
            });
        }
        let next_offsets = (0..partitions)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        (
            Self {
                senders: std::sync::RwLock::new(Some(senders)),
                partitions,
                next_offsets,
                closed,
            },
            consumers,
        )
    }
}

#[async_trait]
impl LogProducer for MemoryLog {
    async fn append(&self, entry: LogEntry) -> Result<Durability, LogError> {
        let partition = partition_for(&entry.tenant_id, self.partitions()) as usize;
        let guard = self.senders.read().expect("log lock");
        let sender = &guard.as_ref().ok_or(LogError::Closed)?[partition];
        // The offset is taken under the channel's own ordering only for diagnostics:
        // delivery order is the channel's order, which is what the chainer relies on.
        let permit = sender.try_reserve().map_err(|err| match err {
            mpsc::error::TrySendError::Full(()) => LogError::Overloaded,
            mpsc::error::TrySendError::Closed(()) => LogError::Closed,
        })?;
        let offset =
            self.next_offsets[partition].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        permit.send((offset, entry));
        Ok(Durability::Volatile)
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn close(&self) {
        self.senders.write().expect("log lock").take();
        self.closed.send_replace(true);
    }
}

#[async_trait]
impl PartitionConsumer for MemoryConsumer {
    fn partition(&self) -> u32 {
        self.partition
    }

    /// Never: the queue is in memory, gone after a crash, and read once.
    fn maybe_stored(&self, _offset: Offset) -> bool {
        false
    }

    async fn poll(&mut self, max_events: usize) -> Option<Vec<(Offset, LogEntry)>> {
        let first = self.receiver.recv().await?;
        let mut events = first.1.events.len();
        let mut out = vec![first];
        while events < max_events {
            match self.receiver.try_recv() {
                Ok(item) => {
                    events += item.1.events.len();
                    out.push(item);
                }
                Err(_) => break,
            }
        }
        Some(out)
    }

    async fn commit(&mut self, _offset: Offset) -> Result<(), LogError> {
        // Nothing to remember: after a restart the in-process log starts empty, and
        // everything that was stored is in the store.
        Ok(())
    }

    fn closing(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let mut closed = self.closed.clone();
        Box::pin(async move {
            let _ = closed.wait_for(|c| *c).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tenant: &str, n: u32) -> LogEntry {
        LogEntry {
            tenant_id: tenant.into(),
            receipt_id: format!("r{n}"),
            created_at: "2024-01-01T00:00:00.000000Z".into(),
            events: vec![],
            rejected: vec![],
            reply_to: None,
            reply_only: false,
            resent: false,
        }
    }

    #[tokio::test]
    async fn keeps_order_per_partition_and_routes_by_tenant() {
        let (log, mut consumers) = MemoryLog::new(3, 100);
        for n in 0..10 {
            log.append(entry("tenant-x", n)).await.unwrap();
        }
        let p = partition_for("tenant-x", 3) as usize;
        let got = consumers[p].poll(100).await.unwrap();
        let receipts: Vec<_> = got.iter().map(|(_, e)| e.receipt_id.clone()).collect();
        assert_eq!(
            receipts,
            (0..10).map(|n| format!("r{n}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn full_partition_is_overloaded_not_blocking() {
        let (log, _consumers) = MemoryLog::new(1, 2);
        log.append(entry("t", 0)).await.unwrap();
        log.append(entry("t", 1)).await.unwrap();
        assert!(matches!(
            log.append(entry("t", 2)).await,
            Err(LogError::Overloaded)
        ));
    }

    #[tokio::test]
    async fn closed_log_refuses_appends_and_consumers_drain() {
        let (log, mut consumers) = MemoryLog::new(1, 4);
        log.append(entry("t", 0)).await.unwrap();
        log.close();
        assert!(matches!(
            log.append(entry("t", 1)).await,
            Err(LogError::Closed)
        ));
        assert_eq!(consumers[0].poll(10).await.unwrap().len(), 1);
        assert!(consumers[0].poll(10).await.is_none());
    }
}
