//! The dispatcher: one task that polls the group consumer and routes each message to its
//! partition's bounded channel, with per-partition flow control.
//!
//! The dispatcher never waits for a chainer. When a partition's channel is full, it keeps
//! the message in hand, pauses the partition in librdkafka and goes on polling, so the
//! other partitions keep flowing and the process keeps polling within
//! `max.poll.interval.ms` however slow one partition's chainer or store is. Once that
//! chainer has drained half its channel, the message in hand is delivered first and the
//! partition resumed.
//!
//! Why this keeps every entry, once and in order: pausing a partition bumps its version
//! in librdkafka, so no message of it fetched before the pause reaches the application
//! afterwards, and the pause records the position after the last message the
//! application received (the one in hand) as where fetching resumes. So the message in
//! hand is followed, on resume, by the next offset.
//!
//! Rebalances (cooperative-sticky): a revoked partition's slot is gone (or, if the
//! partition came back, belongs to a newer assignment); the message in hand for it is
//! simply dropped, and the partition's owner reads it again from the committed offset. A
//! partition's paused flag outlives a revocation in librdkafka, so every assignment
//! resumes its partitions (a no-op for one that is not paused) before fetching.
//!
//! Memory: at most [`PARTITION_BUFFER`] entries per partition in its channel plus one in
//! hand, beside what librdkafka prefetches (a paused partition's prefetched messages
//! are dropped and fetched again on resume).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

/// Messages buffered per partition between the dispatcher and the chainer.
pub(crate) const PARTITION_BUFFER: usize = 4096;

/// Free room in a paused partition's channel before it is resumed: half of it, so a
/// chainer that keeps up is not paused and resumed on every message.
const RESUME_ROOM: usize = PARTITION_BUFFER / 2;

/// How often the dispatcher looks whether a paused partition has room again.
const HELD_RETRY: Duration = Duration::from_millis(20);

/// One message as the dispatcher read it.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Message timestamp (ms since the epoch), if the message has one.
    pub timestamp: Option<i64>,
}

/// A partition assigned to this process: where its messages go.
pub(crate) struct Slot {
    pub sender: mpsc::Sender<Fetched>,
    pub revoked: watch::Sender<bool>,
    /// Which assignment of the partition this is (a partition can be revoked and assigned
    /// back between two polls).
    pub generation: u64,
}

pub(crate) type Slots = Arc<Mutex<HashMap<u32, Slot>>>;

/// What [`FlowControl::route`] did with a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// In the partition's channel.
    Delivered,
    /// The channel is full: the message is in hand; the caller must pause the partition.
    Pause,
    /// The partition is paused: the message is in hand after the earlier ones.
    Held,
    /// Not assigned here (revoked meanwhile) or its chainer is gone: the partition's owner
    /// reads it again from the committed offset.
    Dropped,
}

/// Messages in hand for paused partitions.
#[derive(Default)]
pub(crate) struct FlowControl {
    held: HashMap<u32, Held>,
}

struct Held {
    generation: u64,
    messages: VecDeque<Fetched>,
}

impl FlowControl {
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Routes one message of `partition` given its current slot.
    pub fn route(&mut self, partition: u32, slot: Option<&Slot>, message: Fetched) -> Routed {
        let Some(slot) = slot else {
            self.held.remove(&partition);
            return Routed::Dropped;
        };
        if let Some(held) = self.held.get_mut(&partition) {
            if held.generation == slot.generation {
                // Only if a message was fetched before the pause took effect; kept in order.
                held.messages.push_back(message);
                return Routed::Held;
            }
            self.held.remove(&partition);
        }
        match slot.sender.try_send(message) {
            Ok(()) => Routed::Delivered,
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.held.insert(
                    partition,
                    Held {
                        generation: slot.generation,
                        messages: VecDeque::from([message]),
                    },
                );
                Routed::Pause
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Routed::Dropped,
        }
    }

    /// Delivers what is in hand where the channels have room again, and returns the
    /// partitions to resume: those whose messages in hand are all delivered and whose
    /// channel has [`RESUME_ROOM`] free. What is in hand for a partition no longer assigned
    /// (or assigned again since) is dropped.
    pub fn drain(&mut self, slots: &HashMap<u32, Slot>, resume_room: usize) -> Vec<u32> {
        let mut resume = Vec::new();
        self.held.retain(|partition, held| {
            let Some(slot) = slots
                .get(partition)
                .filter(|s| s.generation == held.generation)
            else {
                return false;
            };
            while let Some(message) = held.messages.pop_front() {
                match slot.sender.try_send(message) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(message)) => {
                        held.messages.push_front(message);
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            if slot.sender.capacity() >= resume_room {
                resume.push(*partition);
                false
            } else {
                true
            }
        });
        resume
    }
}

fn partition_list(topic: &str, partitions: &[u32]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for &partition in partitions {
        // The offset is ignored by pause and resume.
        let _ = tpl.add_partition_offset(topic, partition as i32, Offset::Invalid);
    }
    tpl
}

/// Pauses (`pause = true`) or resumes `partitions` of `topic`. An error is logged: a
/// partition that stays paused is resumed again at its next assignment; one that is not
/// paused only keeps messages in hand until its channel has room.
pub(crate) fn set_paused<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partitions: &[u32],
    pause: bool,
) {
    if partitions.is_empty() {
        return;
    }
    let tpl = partition_list(topic, partitions);
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) if pause => tracing::info!(?partitions, "chainer behind: partition paused"),
        // Also at every assignment, where it is mostly a no-op.
        Ok(()) => tracing::debug!(?partitions, "partition resumed"),
        Err(err) => tracing::warn!(?partitions, pause, %err, "cannot pause/resume"),
    }
}

/// Polls `consumer` and routes messages until `stop`.
/// A fatal consumer error (e.g. a static member fenced by another with its instance id)
/// sets `fatal`: the consumer will not recover, and its owner replaces it.
pub(crate) async fn dispatch<C: ConsumerContext + 'static>(
    consumer: Arc<StreamConsumer<C>>,
    topic: String,
    slots: Slots,
    mut stop: watch::Receiver<bool>,
    fatal: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut flow = FlowControl::default();
    loop {
        if flow.is_holding() {
            let resume = flow.drain(&slots.lock().expect("slots lock"), RESUME_ROOM);
            if !resume.is_empty() {
                tracing::info!(partitions = ?resume, "chainer caught up: partition resumed");
                set_paused(consumer.as_ref(), &topic, &resume, false);
            }
        }
        let retry_held = async {
            if flow.is_holding() {
                tokio::time::sleep(HELD_RETRY).await
            } else {
                std::future::pending().await
            }
        };
        // `recv` also runs the rebalance callbacks, which open and close slots.
        let (partition, message) = tokio::select! {
            _ = stop.changed() => return,
            _ = retry_held => continue,
            received = consumer.recv() => match received {
                Ok(message) => (
                    message.partition() as u32,
                    Fetched {
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                        timestamp: message.timestamp().to_millis(),
                    },
                ),
                Err(err) => {
                    if matches!(err, rdkafka::error::KafkaError::MessageConsumptionFatal(_)) {
                        fatal.store(true, std::sync::atomic::Ordering::Release);
                    }
                    tracing::warn!(%err, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let offset = message.offset;
        let routed = {
            let slots = slots.lock().expect("slots lock");
            flow.route(partition, slots.get(&partition), message)
        };
        match routed {
            Routed::Delivered | Routed::Held => {}
            Routed::Pause => set_paused(consumer.as_ref(), &topic, &[partition], true),
            Routed::Dropped => {
                tracing::debug!(partition, offset, "entry for a partition not assigned here")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(offset: i64) -> Fetched {
        Fetched {
            offset,
            key: None,
            payload: Some(offset.to_string().into_bytes()),
            timestamp: None,
        }
    }

    fn slot(capacity: usize, generation: u64) -> (Slot, mpsc::Receiver<Fetched>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let (revoked, _) = watch::channel(false);
        (
            Slot {
                sender,
                revoked,
                generation,
            },
            receiver,
        )
    }

    fn offsets(receiver: &mut mpsc::Receiver<Fetched>) -> Vec<i64> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|f| f.offset)
            .collect()
    }

    #[test]
    fn a_full_partition_is_paused_and_resumed_in_order_without_blocking_another() {
        let mut flow = FlowControl::default();
        let (slow, mut slow_rx) = slot(2, 1);
        let (fast, mut fast_rx) = slot(2, 1);
        let mut slots = HashMap::from([(0, slow), (1, fast)]);
        assert_eq!(flow.route(0, slots.get(&0), fetched(10)), Routed::Delivered);
        assert_eq!(flow.route(0, slots.get(&0), fetched(11)), Routed::Delivered);
        assert_eq!(flow.route(0, slots.get(&0), fetched(12)), Routed::Pause);
        // Fetched before the pause took effect: kept behind the one in hand.
        assert_eq!(flow.route(0, slots.get(&0), fetched(13)), Routed::Held);
        // The other partition flows on.
        assert_eq!(flow.route(1, slots.get(&1), fetched(50)), Routed::Delivered);
        assert_eq!(offsets(&mut fast_rx), vec![50]);
        assert_eq!(flow.route(1, slots.get(&1), fetched(51)), Routed::Delivered);
        assert_eq!(offsets(&mut fast_rx), vec![51]);

        // No room yet: nothing moves, nothing to resume.
        assert!(flow.drain(&slots, 2).is_empty());
        assert!(flow.is_holding());
        // One slot free: 12 goes, 13 stays in hand.
        assert_eq!(slow_rx.try_recv().unwrap().offset, 10);
        assert!(flow.drain(&slots, 2).is_empty());
        // Drained: 13 goes; resumed once the channel has the room asked for.
        assert_eq!(offsets(&mut slow_rx), vec![11, 12]);
        assert!(flow.drain(&slots, 2).is_empty(), "13 takes one of the two");
        assert_eq!(offsets(&mut slow_rx), vec![13]);
        assert_eq!(flow.drain(&slots, 2), vec![0]);
        assert!(!flow.is_holding());
        // After the resume, fetching continues at 14.
        assert_eq!(flow.route(0, slots.get(&0), fetched(14)), Routed::Delivered);
        slots.clear();
    }

    #[test]
    fn what_is_in_hand_for_a_revoked_partition_is_dropped() {
        let mut flow = FlowControl::default();
        let (old, _old_rx) = slot(1, 1);
        let mut slots = HashMap::from([(0, old)]);
        assert_eq!(flow.route(0, slots.get(&0), fetched(1)), Routed::Delivered);
        assert_eq!(flow.route(0, slots.get(&0), fetched(2)), Routed::Pause);
        // Revoked, then assigned here again: the new owner starts at the committed offset.
        let (new, mut new_rx) = slot(4, 2);
        slots.insert(0, new);
        assert!(flow.drain(&slots, 1).is_empty(), "nothing resumed");
        assert!(!flow.is_holding());
        assert!(offsets(&mut new_rx).is_empty(), "offset 2 is not delivered");
        // Revoked and gone.
        let (old, _rx) = slot(1, 3);
        slots.insert(0, old);
        assert_eq!(flow.route(0, slots.get(&0), fetched(7)), Routed::Delivered);
        assert_eq!(flow.route(0, slots.get(&0), fetched(8)), Routed::Pause);
        slots.clear();
        assert!(flow.drain(&slots, 1).is_empty());
        assert!(!flow.is_holding());
        assert_eq!(flow.route(0, None, fetched(9)), Routed::Dropped);
    }

    #[test]
    fn a_message_for_a_reassigned_partition_is_not_queued_behind_the_old_hand() {
        let mut flow = FlowControl::default();
        let (old, _old_rx) = slot(1, 1);
        let mut slots = HashMap::from([(0, old)]);
        flow.route(0, slots.get(&0), fetched(1));
        assert_eq!(flow.route(0, slots.get(&0), fetched(2)), Routed::Pause);
        let (new, mut new_rx) = slot(4, 2);
        slots.insert(0, new);
        // The new assignment starts at the committed offset, say 1 again.
        assert_eq!(flow.route(0, slots.get(&0), fetched(1)), Routed::Delivered);
        assert_eq!(offsets(&mut new_rx), vec![1]);
        assert!(!flow.is_holding());
    }
}
