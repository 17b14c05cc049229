//! The chainer's side of the log: a consumer-group member whose assigned partitions each
//! become a [`PartitionConsumer`].
//!
//! One dispatcher task polls the consumer (which also runs the rebalance callbacks) and
//! routes each message to its partition's bounded channel. On assignment the callback
//! opens a channel and announces a [`KafkaPartitionConsumer`]; on revocation it closes the
//! channel and flags the consumer revoked, so its chainer stops at its next poll. A chainer
//! that still holds a batch when its partition moves may try to store it; the store's
//! partition epoch (claimed by the new owner) refuses that write.
//!
//! Offsets are committed by the chainer after the store write (`commit`), so a crash
//! redelivers at most the entries after the last commit, which the chainer answers
//! idempotently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset as KafkaOffset, TopicPartitionList};
use sealtrail_log::{LogEntry, LogError, Offset, PartitionConsumer};
use tokio::sync::{mpsc, watch};

use crate::{KafkaLogError, KafkaSettings, MAX_MESSAGE_BYTES, base_config, partition_count};

/// Messages buffered per partition between the dispatcher and the chainer.
const PARTITION_BUFFER: usize = 4096;

type Payload = (i64, Vec<u8>);

/// A partition newly assigned to this process.
pub struct Assigned {
    pub partition: u32,
    receiver: mpsc::Receiver<Payload>,
    revoked: watch::Receiver<bool>,
}

/// What the group tells this chainer process.
pub enum FeedEvent {
    Assigned(KafkaPartitionConsumer),
    Revoked(u32),
}

struct Slot {
    sender: mpsc::Sender<Payload>,
    revoked: watch::Sender<bool>,
}

pub struct FeedContext {
    slots: Arc<Mutex<HashMap<u32, Slot>>>,
    events: mpsc::UnboundedSender<RawEvent>,
}

enum RawEvent {
    Assigned(Assigned),
    Revoked(u32),
}

impl ClientContext for FeedContext {}

impl ConsumerContext for FeedContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut slots = self.slots.lock().expect("slots lock");
            for element in tpl.elements() {
                let partition = element.partition() as u32;
                if let Some(slot) = slots.remove(&partition) {
                    let _ = slot.revoked.send(true);
                    tracing::info!(partition, "partition revoked");
                    let _ = self.events.send(RawEvent::Revoked(partition));
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut slots = self.slots.lock().expect("slots lock");
                for element in tpl.elements() {
                    let partition = element.partition() as u32;
                    if slots.contains_key(&partition) {
                        continue;
                    }
                    let (sender, receiver) = mpsc::channel(PARTITION_BUFFER);
                    let (revoked_tx, revoked) = watch::channel(false);
                    slots.insert(
                        partition,
                        Slot {
                            sender,
                            revoked: revoked_tx,
                        },
                    );
                    tracing::info!(partition, "partition assigned");
                    let _ = self.events.send(RawEvent::Assigned(Assigned {
                        partition,
                        receiver,
                        revoked,
                    }));
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(err) => tracing::error!(%err, "rebalance error"),
        }
    }
}

type GroupConsumer = StreamConsumer<FeedContext>;

/// This process's membership in the chainers' consumer group.
pub struct ChainerFeed {
    consumer: Arc<GroupConsumer>,
    topic: String,
    partitions: u32,
    events: mpsc::UnboundedReceiver<RawEvent>,
    slots: Arc<Mutex<HashMap<u32, Slot>>>,
    stop: watch::Sender<bool>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

impl ChainerFeed {
    /// Joins the group and starts dispatching. Partitions arrive through [`next`](Self::next).
    pub fn start(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaLogError> {
        let slots: Arc<Mutex<HashMap<u32, Slot>>> = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let context = FeedContext {
            slots: slots.clone(),
            events: events_tx,
        };
        let consumer: GroupConsumer = base_config(settings, client_id)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "50")
            .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create_with_context(context)?;
        let partitions = partition_count(consumer.client(), &settings.topic)?;
        consumer.subscribe(&[&settings.topic])?;
        let consumer = Arc::new(consumer);
        let (stop, stop_rx) = watch::channel(false);
        let dispatcher = tokio::spawn(dispatch(consumer.clone(), slots.clone(), stop_rx));
        Ok(Self {
            consumer,
            topic: settings.topic.clone(),
            partitions,
            events,
            slots,
            stop,
            dispatcher: Some(dispatcher),
        })
    }

    /// Partition count of the topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The next assignment change; `None` after [`stop`](Self::stop).
    pub async fn next(&mut self) -> Option<FeedEvent> {
        let event = self.events.recv().await?;
        Some(match event {
            RawEvent::Assigned(a) => FeedEvent::Assigned(KafkaPartitionConsumer {
                partition: a.partition,
                topic: self.topic.clone(),
                receiver: a.receiver,
                revoked: a.revoked,
                consumer: self.consumer.clone(),
                fresh_from: None,
            }),
            RawEvent::Revoked(p) => FeedEvent::Revoked(p),
        })
    }

    /// Graceful stop, step one: stop fetching and drop every partition's slot. Each chainer
    /// sees its partition closed at its next poll: it finishes (stores, answers, commits)
    /// the batch it holds and stops; entries still buffered are not processed here, and the
    /// partition's next owner reads them again from the last committed offset.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.await;
        }
        self.slots.lock().expect("slots lock").clear();
        self.events.close();
    }

    /// Graceful stop, step two (after the chainers finished): leave the group, so the
    /// partitions move to the other chainers at once instead of after the session timeout.
    pub fn leave(self) {
        self.consumer.unsubscribe();
    }
}

async fn dispatch(
    consumer: Arc<GroupConsumer>,
    slots: Arc<Mutex<HashMap<u32, Slot>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (partition, offset, payload) = tokio::select! {
            _ = stop.changed() => return,
            received = consumer.recv() => match received {
                Ok(message) => (
                    message.partition() as u32,
                    message.offset(),
                    message.payload().unwrap_or_default().to_vec(),
                ),
                Err(err) => {
                    tracing::warn!(%err, "kafka consumer error");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sender = slots
            .lock()
            .expect("slots lock")
            .get(&partition)
            .map(|s| s.sender.clone());
        match sender {
            // Waits while the chainer is behind (bounded memory). The closed case is a
            // partition revoked meanwhile: its new owner reads the entry again.
            Some(sender) => {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = sender.send((offset, payload)) => {}
                }
            }
            None => tracing::debug!(partition, offset, "entry for a partition not assigned here"),
        }
    }
}

/// One assigned partition, as the chainer reads it.
pub struct KafkaPartitionConsumer {
    partition: u32,
    topic: String,
    receiver: mpsc::Receiver<Payload>,
    revoked: watch::Receiver<bool>,
    consumer: Arc<GroupConsumer>,
    /// Entries from this offset on were published after this chainer claimed the
    /// partition, so no other chainer can have stored them.
    fresh_from: Option<i64>,
}

impl KafkaPartitionConsumer {
    /// Call right after the partition was claimed in the store: entries published from
    /// now on cannot have been stored by a previous owner (its writes are fenced from the
    /// claim on), so the chainer may skip their id lookups. On failure nothing changes
    /// (every entry stays "maybe stored").
    pub fn mark_claimed(&mut self) {
        let consumer = self.consumer.clone();
        let (topic, partition) = (self.topic.clone(), self.partition as i32);
        let high = tokio::task::block_in_place(|| {
            consumer.fetch_watermarks(&topic, partition, std::time::Duration::from_secs(5))
        });
        match high {
            Ok((_, high)) => self.fresh_from = Some(high),
            Err(err) => {
                tracing::warn!(partition, %err, "no high watermark; every entry is looked up")
            }
        }
    }

    fn decode(&self, offset: i64, payload: &[u8]) -> LogEntry {
        match serde_json::from_slice(payload) {
            Ok(entry) => entry,
            // Skipping it could drop acknowledged events, and retrying cannot help: stop
            // the chainer loudly (an older chainer reading a newer gateway's entries?).
            Err(err) => panic!(
                "partition {} offset {offset}: undecodable log entry ({err}); \
                 is this chainer older than the gateways?",
                self.partition
            ),
        }
    }
}

#[async_trait]
impl PartitionConsumer for KafkaPartitionConsumer {
    fn partition(&self) -> u32 {
        self.partition
    }

    fn maybe_stored(&self, offset: Offset) -> bool {
        self.fresh_from.is_none_or(|fresh| (offset as i64) < fresh)
    }

    async fn poll(&mut self, max_events: usize) -> Option<Vec<(Offset, LogEntry)>> {
        if *self.revoked.borrow() {
            return None;
        }
        let (offset, payload) = tokio::select! {
            biased;
            _ = self.revoked.changed() => return None,
            next = self.receiver.recv() => next?,
        };
        let mut out = vec![(offset as Offset, self.decode(offset, &payload))];
        let mut events = out[0].1.events.len().max(1);
        while events < max_events {
            match self.receiver.try_recv() {
                Ok((offset, payload)) => {
                    let entry = self.decode(offset, &payload);
                    events += entry.events.len().max(1);
                    out.push((offset as Offset, entry));
                }
                Err(_) => break,
            }
        }
        Some(out)
    }

    async fn commit(&mut self, offset: Offset) -> Result<(), LogError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            self.partition as i32,
            KafkaOffset::Offset(offset as i64 + 1),
        )
        .map_err(|e| LogError::Backend(e.to_string()))?;
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| LogError::Backend(e.to_string()))
    }
}
