//! The chainer's side of the log: a consumer-group member whose assigned partitions each
//! become a [`PartitionConsumer`].
//!
//! One dispatcher task ([`crate::dispatch`]) polls the consumer (which also runs the
//! rebalance callbacks) and routes each message to its partition's bounded channel; a
//! partition whose channel is full is paused there, never waited for, so one slow
//! partition delays only itself and the process never misses its poll deadline. On
//! assignment the callback opens a channel and announces a [`KafkaPartitionConsumer`]; on
//! revocation it closes the channel and flags the consumer revoked, so its chainer stops at
//! its next poll. A chainer that still holds a batch when its partition moves may try to
//! store it; the store's partition epoch (claimed by the new owner) refuses that write.
//!
//! Each partition's consumer decodes and checks its entries
//! ([`check_entry`](crate::dead_letter::check_entry)); one it refuses goes to the
//! dead-letter topic ([`crate::dead_letter`]) and the entries around it are chained as
//! usual, in order. The consumer retries the dead-letter write until Kafka acknowledges
//! it (the partition waits meanwhile: an entry is never skipped silently) or the partition
//! is revoked.
//!
//! Offsets are stored by the chainer after the store write (`commit`: librdkafka's offset
//! store) and committed to Kafka by librdkafka every [`AUTO_COMMIT_MS`], at every
//! revocation (what a revoked partition's chainer stored by then) and when the feed
//! closes. One commit request per interval instead of one per batch: no storm of commits
//! failing with a stale generation around a rebalance (each such failure is counted in
//! `sealtrail_kafka_commit_failures_total` and logged at debug level; the next commit
//! carries the same offsets). A crash redelivers at most the entries stored since the last
//! commit (the last [`AUTO_COMMIT_MS`], and the batch in hand), which the chainer answers
//! idempotently. Dead-lettered entries are committed past with the next commit once every
//! entry handed to the chainer before them is committed (or at once, when there is none).
//! Crash windows: a crash after the dead-letter write and before that commit redelivers
//! the entry, which is dead-lettered a second time (same source partition and offset
//! headers); a crash before the dead-letter write is acknowledged leaves the offset
//! uncommitted, so the entry is read again. Either way nothing is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset as KafkaOffset, TopicPartitionList};
use sealtrail_core::backoff::Backoff;
use sealtrail_log::{LogEntry, LogError, Offset, PartitionConsumer};
use tokio::sync::{mpsc, watch};

use crate::dead_letter::{DeadLetter, DeadLetterSink, Refused, check_entry};
use crate::dispatch::{Fetched, PARTITION_BUFFER, Slot, Slots, dispatch, set_paused};
use crate::{KafkaLogError, KafkaSettings, MAX_MESSAGE_BYTES, base_config, partition_count};

/// A partition newly assigned to this process.
struct Assigned {
    partition: u32,
    receiver: mpsc::Receiver<Fetched>,
    revoked: watch::Receiver<bool>,
}

/// What the group tells this chainer process.
pub enum FeedEvent {
    Assigned(KafkaPartitionConsumer),
    Revoked(u32),
}

/// How often librdkafka commits the offsets the chainers stored.
pub const AUTO_COMMIT_MS: u64 = 250;

/// How often librdkafka reports the group's state and the partitions' offsets.
const STATS_INTERVAL_MS: u64 = 1000;

pub struct FeedContext {
    slots: Slots,
    events: mpsc::UnboundedSender<RawEvent>,
    topic: String,
    generation: std::sync::atomic::AtomicU64,
    status: Arc<Mutex<FeedStatus>>,
}

/// This member of the chainers' group as librdkafka last reported it (statistics, once a
/// second).
#[derive(Debug, Clone)]
pub struct FeedStatus {
    /// librdkafka's `cgrp.state` (`up`: the group coordinator is known) and
    /// `cgrp.join_state` (`steady`: joined, with its assignment); empty before the first
    /// report.
    pub group_state: String,
    pub join_state: String,
    /// When the feed started.
    pub started: Instant,
    /// The last report, and the last that found the member `up` and `steady`.
    pub reported_at: Option<Instant>,
    pub steady_at: Option<Instant>,
    /// The partitions assigned here.
    pub partitions: BTreeMap<u32, PartitionProgress>,
}

/// Where one assigned partition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The partition's high watermark on the broker (-1: not known yet).
    pub high_watermark: i64,
    /// The next offset to chain: the offset the chainer stored last, plus one (-1: none
    /// stored since the assignment).
    pub stored: i64,
    /// The offset committed to Kafka (where the next owner would start; -1: none).
    pub committed: i64,
    /// Entries on the broker not chained yet (-1: not known yet).
    pub lag: i64,
    /// librdkafka's fetch state of the partition (`active` while it fetches; `none`
    /// before the statistics name it).
    pub fetch_state: String,
}

impl FeedStatus {
    fn new() -> Self {
        Self {
            group_state: String::new(),
            join_state: String::new(),
            started: Instant::now(),
            reported_at: None,
            steady_at: None,
            partitions: BTreeMap::new(),
        }
    }

    /// How long the member has been out of the group (not `up` and `steady`, or no report),
    /// or `None` if it is in the group now. A member that lost its coordinator or its
    /// assignment gets neither partitions nor any work until it rejoins.
    pub fn out_of_group_for(&self, now: Instant) -> Option<Duration> {
        let in_group = self.group_state == "up" && self.join_state == "steady";
        let fresh = self.reported_at.is_some_and(|at| {
            now.duration_since(at) < Duration::from_millis(STATS_INTERVAL_MS * 5)
        });
        if in_group && fresh {
            return None;
        }
        Some(now.duration_since(self.steady_at.unwrap_or(self.started)))
    }

    /// Whether the member waits on something only the group coordinator can end: the
    /// coordinator itself (`group_state` not `up`: librdkafka is still looking for it), a
    /// revocation that has to commit through it (`wait-incr-unassign-to-complete`,
    /// `wait-unassign-to-complete`), or a join it has not even started (`init`). After a
    /// broker blip, librdkafka has been seen to stay in these states for good while the
    /// broker answered every other client again: [`group_coordinator_answers`] tells the
    /// two apart. A member waiting in `wait-join` or `wait-sync` is not counted here: a
    /// rebalance may legitimately keep it there up to the session timeout.
    pub fn awaits_coordinator(&self) -> bool {
        self.group_state != "up"
            || matches!(
                self.join_state.as_str(),
                "init" | "wait-incr-unassign-to-complete" | "wait-unassign-to-complete"
            )
    }
}

/// Whether the chainers' group coordinator answers now, asked through a fresh client: the
/// brokers list and describe the group (within 2 s). A member stuck in
/// [`FeedStatus::awaits_coordinator`] while this holds is stuck in librdkafka, not waiting
/// on Kafka; the chainer replaces it. Blocking.
pub fn group_coordinator_answers(settings: &KafkaSettings, client_id: &str) -> bool {
    let probe: Result<BaseConsumer, _> = base_config(settings, &format!("{client_id}-probe"))
        .set("enable.auto.commit", "false")
        .create();
    let Ok(probe) = probe else {
        return false;
    };
    probe
        .fetch_group_list(Some(&settings.group_id), Duration::from_secs(2))
        .is_ok_and(|list| list.groups().iter().any(|g| g.name() == settings.group_id))
}

enum RawEvent {
    Assigned(Assigned),
    Revoked(u32),
}

impl ClientContext for FeedContext {
    /// librdkafka's log, through `tracing`; a failed offset commit (`COMMITFAIL`, expected
    /// around every rebalance, and retried by the next commit) at debug level only: it is
    /// counted by [`commit_callback`](ConsumerContext::commit_callback).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            _ if fac == "COMMITFAIL" => tracing::debug!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let now = Instant::now();
        let held: Vec<u32> = self
            .slots
            .lock()
            .expect("slots lock")
            .keys()
            .copied()
            .collect();
        let mut status = self.status.lock().expect("status lock");
        status.reported_at = Some(now);
        if let Some(group) = &statistics.cgrp {
            status.group_state.clone_from(&group.state);
            status.join_state.clone_from(&group.join_state);
        }
        if status.group_state == "up" && status.join_state == "steady" {
            status.steady_at = Some(now);
        }
        status.partitions.clear();
        let reported = statistics.topics.get(&self.topic);
        for partition in held {
            let p = reported.and_then(|t| t.partitions.get(&(partition as i32)));
            let progress = match p {
                Some(p) => PartitionProgress {
                    high_watermark: p.hi_offset,
                    stored: p.stored_offset.max(-1),
                    committed: p.committed_offset.max(-1),
                    lag: if p.hi_offset < 0 {
                        -1
                    } else if p.stored_offset >= 0 {
                        p.consumer_lag_stored.max(0)
                    } else {
                        p.consumer_lag.max(-1)
                    },
                    fetch_state: p.fetch_state.clone(),
                },
                None => PartitionProgress {
                    high_watermark: -1,
                    stored: -1,
                    committed: -1,
                    lag: -1,
                    fetch_state: "none".to_string(),
                },
            };
            status.partitions.insert(partition, progress);
        }
    }
}

impl ConsumerContext for FeedContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(err) = result {
            metrics::counter!("sealtrail_kafka_commit_failures_total").increment(1);
            tracing::debug!(%err, "offset commit failed; the next one carries the same offsets");
        }
    }

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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut slots = self.slots.lock().expect("slots lock");
                let mut fresh = Vec::new();
                for element in tpl.elements() {
                    let partition = element.partition() as u32;
                    if slots.contains_key(&partition) {
                        continue;
                    }
                    let (sender, receiver) = mpsc::channel(PARTITION_BUFFER);
                    let (revoked_tx, revoked) = watch::channel(false);
                    let generation = self
                        .generation
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    slots.insert(
                        partition,
                        Slot {
                            sender,
                            revoked: revoked_tx,
                            generation,
                        },
                    );
                    fresh.push(partition);
                    tracing::info!(partition, "partition assigned");
                    let _ = self.events.send(RawEvent::Assigned(Assigned {
                        partition,
                        receiver,
                        revoked,
                    }));
                }
                drop(slots);
                // librdkafka keeps a partition paused across its revocation: a partition
                // paused under an earlier assignment must fetch again (no-op otherwise).
                set_paused(consumer, &self.topic, &fresh, false);
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
    dead_letters: Arc<DeadLetterSink>,
    events: mpsc::UnboundedReceiver<RawEvent>,
    slots: Slots,
    stop: watch::Sender<bool>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
    status: Arc<Mutex<FeedStatus>>,
    fatal: Arc<std::sync::atomic::AtomicBool>,
}

impl ChainerFeed {
    /// Joins the group and starts dispatching. Partitions arrive through [`next`](Self::next).
    /// The events topic and the dead-letter topic must exist (`sealtrail migrate`).
    pub fn start(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaLogError> {
        let dead_letters = Arc::new(DeadLetterSink::connect(
            settings,
            &format!("{client_id}-dead-letters"),
        )?);
        let slots: Slots = Arc::new(Mutex::new(HashMap::new()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(FeedStatus::new()));
        let context = FeedContext {
            slots: slots.clone(),
            events: events_tx,
            topic: settings.topic.clone(),
            generation: Default::default(),
            status: status.clone(),
        };
        let mut config = base_config(settings, client_id);
        if let Some(instance) = &settings.group_instance_id {
            config.set("group.instance.id", instance);
        }
        let consumer: GroupConsumer = config
            .set("group.id", &settings.group_id)
            // The chainer stores each offset once its entries are stored; librdkafka
            // commits what is stored, every AUTO_COMMIT_MS and at every revocation.
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", AUTO_COMMIT_MS.to_string())
            .set("enable.auto.offset.store", "false")
            .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string())
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            .set(
                "max.poll.interval.ms",
                settings.max_poll_interval.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "50")
            .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create_with_context(context)?;
        let partitions = partition_count(consumer.client(), &settings.topic)?;
        consumer.subscribe(&[&settings.topic])?;
        let consumer = Arc::new(consumer);
        #[cfg(feature = "fault-injection")]
        if let Some(after) = crate::fault::leave_group_after() {
            let consumer = consumer.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                tracing::warn!("fault injection: the feed leaves the chainers' group");
                consumer.unsubscribe();
            });
        }
        #[cfg(feature = "fault-injection")]
        if let Some(after) = crate::fault::stop_fetching_after() {
            let consumer = consumer.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                match consumer.assignment() {
                    Ok(held) => {
                        tracing::warn!(
                            partitions = held.count(),
                            "fault injection: the feed stops fetching its partitions"
                        );
                        if let Err(err) = consumer.incremental_unassign(&held) {
                            tracing::error!(%err, "fault injection failed");
                        }
                    }
                    Err(err) => tracing::error!(%err, "fault injection failed"),
                }
            });
        }
        let (stop, stop_rx) = watch::channel(false);
        let fatal = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dispatcher = tokio::spawn(dispatch(
            consumer.clone(),
            settings.topic.clone(),
            slots.clone(),
            stop_rx,
            fatal.clone(),
        ));
        Ok(Self {
            consumer,
            topic: settings.topic.clone(),
            partitions,
            dead_letters,
            events,
            slots,
            stop,
            dispatcher: Some(dispatcher),
            status,
            fatal,
        })
    }

    /// The group membership and the assigned partitions' offsets, as last reported.
    pub fn status(&self) -> FeedStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Whether the consumer hit a fatal error (it will not get partitions again).
    pub fn failed_fatally(&self) -> bool {
        self.fatal.load(std::sync::atomic::Ordering::Acquire)
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
                partitions: self.partitions,
                topic: self.topic.clone(),
                receiver: a.receiver,
                revoked: a.revoked,
                consumer: self.consumer.clone(),
                dead_letters: self.dead_letters.clone(),
                fresh_from: None,
                delivered: None,
                committed: None,
                dead_lettered: None,
                ready: Vec::new(),
                ready_events: 0,
                refused: None,
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

    /// Drops a consumer that is out of the group for good (after [`stop`](Self::stop)),
    /// without waiting: its close would wait on a coordinator it has lost. A new feed can
    /// start at once.
    pub fn abandon(self) {
        self.consumer.unsubscribe();
        let consumer = self.consumer;
        std::thread::spawn(move || drop(consumer));
    }

    /// Graceful stop, step two (after the chainers finished): leave the group, so the
    /// partitions move to the other chainers at once instead of after the session timeout.
    /// Closing the consumer commits the offsets stored by then; it waits for Kafka (on a
    /// blocking thread), at most 10 s.
    pub async fn leave(self) {
        self.consumer.unsubscribe();
        let consumer = self.consumer;
        let closing = tokio::task::spawn_blocking(move || drop(consumer));
        if tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .is_err()
        {
            tracing::warn!("the kafka consumer did not close in 10 s");
        }
    }
}

/// One assigned partition, as the chainer reads it.
pub struct KafkaPartitionConsumer {
    partition: u32,
    /// Partition count of the topic (tenants are hashed onto it).
    partitions: u32,
    topic: String,
    receiver: mpsc::Receiver<Fetched>,
    revoked: watch::Receiver<bool>,
    consumer: Arc<GroupConsumer>,
    dead_letters: Arc<DeadLetterSink>,
    /// Entries from this offset on were published after this chainer claimed the
    /// partition, so no other chainer can have stored them.
    fresh_from: Option<i64>,
    /// Offset of the last entry handed to the chainer.
    delivered: Option<i64>,
    /// Offset of the last entry the chainer committed (stored).
    committed: Option<i64>,
    /// Offset of the last dead-lettered entry (its dead letter acknowledged).
    dead_lettered: Option<i64>,
    /// Entries taken from the channel for the next batch, and their event count.
    ready: Vec<(Offset, LogEntry)>,
    ready_events: usize,
    /// An entry taken from the channel that goes to the dead-letter topic next.
    /// (Boxed: rare, and it would double the size of the consumer.)
    refused: Option<Box<(Fetched, Refused)>>,
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
            consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))
        });
        match high {
            Ok((_, high)) => self.fresh_from = Some(high),
            Err(err) => {
                tracing::warn!(partition, %err, "no high watermark; every entry is looked up")
            }
        }
    }

    /// Puts the refused entry on the dead-letter topic, retrying until Kafka acknowledges
    /// it; then forgets it. `None` if the partition is revoked (or the feed stopped)
    /// meanwhile: its next owner reads the entry again. Cancellation safe: the entry stays
    /// in `self.refused` until acknowledged.
    async fn dead_letter(&mut self) -> Option<()> {
        let Self {
            partition,
            refused: Some(refused),
            revoked,
            dead_letters,
            ..
        } = self
        else {
            return Some(());
        };
        let (fetched, refused) = (&refused.0, &refused.1);
        let (partition, offset) = (*partition, fetched.offset);
        let reason = refused.reason.code();
        tracing::error!(
            partition,
            offset,
            reason,
            error = %refused.detail,
            topic = dead_letters.topic(),
            "cannot chain this entry: it goes to the dead-letter topic and the partition moves on"
        );
        let letter = DeadLetter {
            partition,
            offset,
            key: fetched.key.as_deref(),
            payload: fetched.payload.as_deref(),
            timestamp: fetched.timestamp,
            refused,
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let result = tokio::select! {
                biased;
                _ = revoked.changed() => return None,
                result = dead_letters.send(&letter) => result,
            };
            match result {
                Ok(()) => break,
                Err(err) => {
                    metrics::counter!("sealtrail_dead_letter_errors_total").increment(1);
                    tracing::error!(
                        partition, offset, %err,
                        "cannot write to the dead-letter topic; the partition waits and retries"
                    );
                    tokio::select! {
                        biased;
                        _ = revoked.changed() => return None,
                        _ = tokio::time::sleep(backoff.wait()) => {}
                    }
                }
            }
        }
        metrics::counter!("sealtrail_dead_letter_total", "reason" => reason).increment(1);
        self.dead_lettered = Some(offset);
        self.refused = None;
        Some(())
    }

    /// Where a commit may move the partition's position: past `stored` and past the
    /// dead-lettered entries right after it, if `stored` is the last entry handed out.
    fn commit_through(&self, stored: Option<i64>) -> Option<i64> {
        match self.dead_lettered {
            Some(dead) if stored == self.delivered && stored.is_none_or(|s| dead > s) => Some(dead),
            _ => stored,
        }
    }

    /// Stores `through + 1` as the partition's position, for librdkafka's next commit.
    /// Fails once the partition is no longer assigned here (its next owner reads on from
    /// the last commit).
    fn commit_offset(&self, through: i64) -> Result<(), LogError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            self.partition as i32,
            KafkaOffset::Offset(through + 1),
        )
        .map_err(|e| LogError::Backend(e.to_string()))?;
        self.consumer
            .store_offsets(&tpl)
            .map_err(|e| LogError::Backend(e.to_string()))
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

    /// The partition was revoked, or the feed stopped (its slot, and with it the sender,
    /// is dropped): a chainer retrying a failing store lets its batch go; the partition's
    /// next owner reads it again from the committed offset.
    fn closing(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let mut revoked = self.revoked.clone();
        Box::pin(async move {
            let _ = revoked.wait_for(|r| *r).await;
        })
    }

    /// Cancellation safe: entries taken from the channel stay in `self` until returned.
    async fn poll(&mut self, max_events: usize) -> Option<Vec<(Offset, LogEntry)>> {
        #[cfg(feature = "fault-injection")]
        let slow = crate::fault::slow_poll(self.partition);
        #[cfg(feature = "fault-injection")]
        let max_events = if slow.is_some() { 1 } else { max_events };
        loop {
            if *self.revoked.borrow() {
                return None;
            }
            if self.refused.is_some() {
                self.dead_letter().await?;
                // Only dead letters so far: move the partition's position past them now if
                // every entry handed out before them is stored; else the chainer's next
                // commit does.
                if self.ready.is_empty()
                    && self.committed == self.delivered
                    && let Some(through) = self.commit_through(self.committed)
                    && let Err(err) = self.commit_offset(through)
                {
                    tracing::warn!(partition = self.partition, %err, "could not commit the log offset");
                }
            }
            let fetched = if self.ready.is_empty() {
                tokio::select! {
                    biased;
                    _ = self.revoked.changed() => return None,
                    next = self.receiver.recv() => next?,
                }
            } else if let Some(fetched) = (self.ready_events < max_events)
                .then(|| self.receiver.try_recv().ok())
                .flatten()
            {
                fetched
            } else {
                #[cfg(feature = "fault-injection")]
                if let Some(delay) = slow {
                    tokio::select! {
                        biased;
                        _ = self.revoked.changed() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                let out = std::mem::take(&mut self.ready);
                self.ready_events = 0;
                self.delivered = out.last().map(|&(offset, _)| offset as i64);
                return Some(out);
            };
            match check_entry(fetched.payload.as_deref(), self.partition, self.partitions) {
                Ok(entry) => {
                    self.ready_events += entry.events.len().max(1);
                    self.ready.push((fetched.offset as Offset, entry));
                }
                Err(refused) => self.refused = Some(Box::new((fetched, refused))),
            }
        }
    }

    async fn commit(&mut self, offset: Offset) -> Result<(), LogError> {
        self.committed = Some(offset as i64);
        let through = self
            .commit_through(self.committed)
            .expect("a committed offset");
        self.commit_offset(through)
    }
}
