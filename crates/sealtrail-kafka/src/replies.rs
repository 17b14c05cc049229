//! The correlation channel on Kafka: chainers publish each waited-for outcome to the reply
//! topic, on the partition its gateway reads; the gateway hands it to the waiting request.
//!
//! Replies are best effort by design: a lost reply makes the request time out with a `504`
//! that tells the client to retry with the same ids, and the retry is answered from the
//! store. So the reply producer does not wait for acknowledgements, and a gateway starts
//! reading at the end of its partition.
//!
//! A chainer sends all replies of one store batch to one gateway as one message (a
//! `{"replies":[…]}` frame, split at 1 MiB); a message holding a single reply object, as
//! chainers before 2026-12 sent, is still read. Upgrade the gateways before the chainers.
//! A lost or undecodable frame loses every reply in it: each of those waiters times out
//! with the same `504` as above, and its retry is answered from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use sealtrail_core::partition::partition_for;
use sealtrail_log::{Correlator, EntryOutcome, ReplyAddress, ReplySink};
use serde::{Deserialize, Serialize};

use crate::{
    KafkaLogError, KafkaSettings, MAX_MESSAGE_BYTES, base_config, fresh_metadata, partition_count,
};

#[derive(Serialize, Deserialize)]
struct Reply {
    correlation_id: u64,
    outcome: EntryOutcome,
}

/// Every reply of one chainer batch to one gateway, in one message.
#[derive(Serialize, Deserialize)]
struct Replies {
    replies: Vec<Reply>,
}

/// The reply-topic partition a gateway reads.
pub fn reply_partition(gateway: &str, partitions: u32) -> u32 {
    partition_for(gateway, partitions)
}

/// The chainer's sender of replies.
pub struct KafkaReplySink {
    producer: Arc<std::sync::RwLock<FutureProducer>>,
    settings: KafkaSettings,
    client_id: String,
    /// When the producer was last replaced (see [`KafkaReplySink::replace_if_stuck`]).
    replaced_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    topic: String,
    partitions: u32,
}

impl KafkaReplySink {
    pub fn connect(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaLogError> {
        let producer = Self::producer(settings, client_id)?;
        let partitions = partition_count(producer.client(), &settings.reply_topic)?;
        Ok(Self {
            producer: Arc::new(std::sync::RwLock::new(producer)),
            settings: settings.clone(),
            client_id: client_id.to_string(),
            replaced_at: Arc::default(),
            topic: settings.reply_topic.clone(),
            partitions,
        })
    }

    fn producer(
        settings: &KafkaSettings,
        client_id: &str,
    ) -> Result<FutureProducer, KafkaLogError> {
        Ok(base_config(settings, client_id)
            .set("acks", "1")
            .set("linger.ms", "0")
            .set("compression.type", "lz4")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("message.timeout.ms", "10000")
            .create()?)
    }

    /// After a reply timed out: replaces the producer if a fresh client gets the reply
    /// topic's metadata (Kafka answers, so the producer is the one stuck: librdkafka
    /// #5430 after a broker freeze, seen leaving every sync request `504` for over a
    /// minute although the chainer had stored its events), at most every 10 s (the
    /// replies' `message.timeout.ms`). Replies already handed to the old producer are
    /// lost; a lost reply is a `504` whose retry is answered from the store. Blocking.
    fn replace_if_stuck(
        producer: &std::sync::RwLock<FutureProducer>,
        settings: &KafkaSettings,
        client_id: &str,
        replaced_at: &std::sync::Mutex<Option<std::time::Instant>>,
    ) {
        let mut last = replaced_at.lock().expect("replaced lock");
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            return;
        }
        let probe = format!("{client_id}-probe");
        if fresh_metadata(
            settings,
            &probe,
            &settings.reply_topic,
            Duration::from_secs(2),
        )
        .is_none()
        {
            return;
        }
        match Self::producer(settings, client_id) {
            Ok(fresh) => {
                *producer.write().expect("producer lock") = fresh;
                *last = Some(std::time::Instant::now());
                metrics::counter!("sealtrail_kafka_reply_producer_replaced_total").increment(1);
                tracing::warn!("a reply timed out although Kafka answers: reply producer replaced");
            }
            Err(err) => tracing::error!(%err, "cannot replace the reply producer"),
        }
    }

    /// Sends what is queued (graceful shutdown).
    pub fn flush(&self) {
        let producer = self.producer.read().expect("producer lock").clone();
        let _ = producer.flush(Duration::from_secs(5));
    }
}

impl KafkaReplySink {
    /// Hands one message for `gateway` to the producer without waiting for the broker: the
    /// chainer must not slow down for a gateway that may be gone. A task of its own sees
    /// the delivery's end.
    fn enqueue(&self, gateway: &str, payload: &[u8]) {
        let record = FutureRecord::to(&self.topic)
            .key(gateway.as_bytes())
            .payload(payload)
            .partition(reply_partition(gateway, self.partitions) as i32);
        let producer = self.producer.read().expect("producer lock").clone();
        match producer.send_result(record) {
            Ok(delivery) => {
                let shared = (
                    self.producer.clone(),
                    self.settings.clone(),
                    self.client_id.clone(),
                    self.replaced_at.clone(),
                );
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((err, _))) => {
                            metrics::counter!("sealtrail_kafka_reply_failures_total").increment(1);
                            tracing::warn!(%err, "a reply was not delivered");
                            if err.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut) {
                                let (producer, settings, client_id, replaced_at) = shared;
                                let _ = tokio::task::spawn_blocking(move || {
                                    KafkaReplySink::replace_if_stuck(
                                        &producer,
                                        &settings,
                                        &client_id,
                                        &replaced_at,
                                    )
                                })
                                .await;
                            }
                        }
                        Err(_) => {}
                    }
                });
            }
            Err((err, _)) => {
                metrics::counter!("sealtrail_kafka_reply_failures_total").increment(1);
                tracing::warn!(%err, %gateway, "reply dropped");
            }
        }
    }
}

fn encode(reply: &Reply) -> Option<Vec<u8>> {
    serde_json::to_vec(reply)
        .inspect_err(|err| tracing::error!(%err, "cannot encode a reply"))
        .ok()
}

#[async_trait]
impl ReplySink for KafkaReplySink {
    async fn send(&self, to: &ReplyAddress, outcome: EntryOutcome) {
        let reply = Reply {
            correlation_id: to.correlation_id,
            outcome,
        };
        if let Some(payload) = encode(&reply) {
            self.enqueue(&to.gateway, &payload);
        }
    }

    /// One message per gateway (a [`Replies`] frame) for the whole batch, split where a
    /// frame would pass [`REPLIES_FRAME_BYTES`]: a chainer batch of single events costs
    /// the broker, the producer and the gateway one message instead of one per event.
    async fn send_all(&self, replies: Vec<(ReplyAddress, EntryOutcome)>) {
        if replies.len() == 1 {
            let (to, outcome) = replies.into_iter().next().expect("one");
            return self.send(&to, outcome).await;
        }
        let frames = frames(replies, REPLIES_FRAME_BYTES);
        for (gateway, frame) in frames {
            self.enqueue(&gateway, &frame);
        }
    }
}

/// How a [`Replies`] frame starts on the wire (`serde_json`'s encoding of it, which the
/// sink writes by hand from the replies it has encoded one by one).
const REPLIES_PREFIX: &[u8] = b"{\"replies\":[";
/// A frame is closed before it passes this size (messages may be up to
/// [`MAX_MESSAGE_BYTES`]; a sync batch of 1,000 events answers with ~0.6 MB).
const REPLIES_FRAME_BYTES: usize = 1024 * 1024;

/// The messages for `replies`: per gateway (in the order they first appear) one
/// [`Replies`] frame of its replies in batch order, closed before it passes `limit` bytes
/// (a reply bigger than that gets a frame of its own).
fn frames(replies: Vec<(ReplyAddress, EntryOutcome)>, limit: usize) -> Vec<(String, Vec<u8>)> {
    let mut frames: Vec<(String, Vec<u8>)> = Vec::new();
    // Per gateway, the index of its open frame.
    let mut open: HashMap<String, usize> = HashMap::new();
    for (to, outcome) in replies {
        let Some(one) = encode(&Reply {
            correlation_id: to.correlation_id,
            outcome,
        }) else {
            continue;
        };
        match open.get(&to.gateway) {
            Some(&i) if frames[i].1.len() + one.len() + 3 <= limit => {
                let frame = &mut frames[i].1;
                frame.push(b',');
                frame.extend_from_slice(&one);
            }
            _ => {
                let mut frame = Vec::with_capacity(REPLIES_PREFIX.len() + one.len() + 2);
                frame.extend_from_slice(REPLIES_PREFIX);
                frame.extend_from_slice(&one);
                open.insert(to.gateway.clone(), frames.len());
                frames.push((to.gateway, frame));
            }
        }
    }
    for (_, frame) in &mut frames {
        frame.extend_from_slice(b"]}");
    }
    frames
}

/// Decodes a reply message: one [`Reply`] (every chainer before 2026-12, and a batch
/// with one waiter) or a [`Replies`] frame.
fn decode(payload: &[u8]) -> Result<Vec<Reply>, serde_json::Error> {
    if payload.starts_with(REPLIES_PREFIX) {
        Ok(serde_json::from_slice::<Replies>(payload)?.replies)
    } else {
        Ok(vec![serde_json::from_slice::<Reply>(payload)?])
    }
}

/// How often the reply listener checks that it keeps up with its partition.
const LISTENER_CHECK: Duration = Duration::from_secs(1);
/// How long the check may keep failing, through the listener's fault, before its consumer
/// is replaced.
const LISTENER_STUCK_AFTER: Duration = Duration::from_secs(3);

/// The gateway's reader of its reply partition. Runs until the process ends.
///
/// It checks itself every [`LISTENER_CHECK`]: the partition's high watermark (asked
/// through its own consumer) must be reachable, and not beyond what it has read unless it
/// read something since the last check. After a Kafka freeze, librdkafka's consumer was
/// seen to stop fetching for good (the partition's leader briefly `-1`, as in #5430):
/// every sync request of the gateway then timed out although the chainers had committed
/// and replied. A check failing for [`LISTENER_STUCK_AFTER`] replaces the consumer, which
/// reads on from the first offset not read (so replies that arrived meanwhile still reach
/// the requests that wait for them). While Kafka itself does not answer (a fresh client
/// cannot fetch the topic's metadata either) the consumer is not blamed: one created
/// during an outage was seen to fail with `UnknownPartition` after it, costing another
/// round of checks.
pub struct ReplyListener {
    task: tokio::task::JoinHandle<()>,
    /// Milliseconds since `started` at which the checks began to fail (0: they pass).
    stalled_since_ms: Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
}

type ReplyConsumer = StreamConsumer;

impl ReplyListener {
    /// Starts reading this gateway's reply partition from its current end and delivering
    /// replies addressed to `gateway` to `correlator`. Returns once positioned, so no reply
    /// to a request published afterwards can be missed.
    pub fn start(
        settings: &KafkaSettings,
        gateway: &str,
        correlator: Arc<Correlator>,
    ) -> Result<Self, KafkaLogError> {
        let consumer = Self::consumer(settings, gateway)?;
        let partitions = partition_count(consumer.client(), &settings.reply_topic)?;
        let partition = reply_partition(gateway, partitions) as i32;
        let (_, high) =
            consumer.fetch_watermarks(&settings.reply_topic, partition, Duration::from_secs(10))?;
        Self::assign(&consumer, &settings.reply_topic, partition, high)?;
        let started = std::time::Instant::now();
        let stalled_since_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = tokio::spawn(listen(Listening {
            settings: settings.clone(),
            gateway: gateway.to_string(),
            partition,
            next: high,
            correlator,
            stalled_since_ms: stalled_since_ms.clone(),
            started,
            consumer: Arc::new(consumer),
        }));
        Ok(Self {
            task,
            stalled_since_ms,
            started,
        })
    }

    fn consumer(settings: &KafkaSettings, gateway: &str) -> Result<ReplyConsumer, KafkaLogError> {
        Ok(base_config(settings, &format!("{gateway}-replies"))
            // Required by librdkafka; no offsets are ever committed under it.
            .set("group.id", format!("sealtrail-gateway-{gateway}"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create()?)
    }

    fn assign(
        consumer: &ReplyConsumer,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Result<(), KafkaLogError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, KafkaOffset::Offset(from))?;
        consumer.assign(&tpl)?;
        Ok(())
    }

    /// How long the listener has been failing its checks (`None`: it keeps up).
    pub fn stalled_for(&self) -> Option<Duration> {
        let since = self
            .stalled_since_ms
            .load(std::sync::atomic::Ordering::Acquire);
        (since > 0).then(|| {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(since))
        })
    }
}

struct Listening {
    settings: KafkaSettings,
    gateway: String,
    partition: i32,
    /// The first offset not read yet.
    next: i64,
    correlator: Arc<Correlator>,
    stalled_since_ms: Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
    consumer: Arc<ReplyConsumer>,
}

async fn listen(mut l: Listening) {
    let key = l.gateway.as_bytes().to_vec();
    let topic = l.settings.reply_topic.clone();
    let mut check = tokio::time::interval(LISTENER_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read_since_check = false;
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            received = l.consumer.recv() => match received {
                Ok(message) => {
                    l.next = message.offset() + 1;
                    read_since_check = true;
                    if message.key() != Some(key.as_slice()) {
                        continue; // another gateway sharing this partition
                    }
                    match message.payload().map(decode) {
                        Some(Ok(replies)) => {
                            for reply in replies {
                                l.correlator.deliver(reply.correlation_id, reply.outcome);
                            }
                        }
                        Some(Err(err)) => tracing::warn!(%err, "undecodable reply"),
                        None => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "reply consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = check.tick() => {
                let probe = l.consumer.clone();
                let (probe_topic, partition) = (topic.clone(), l.partition);
                let high = tokio::task::spawn_blocking(move || {
                    probe.fetch_watermarks(&probe_topic, partition, Duration::from_millis(800))
                })
                .await;
                let (keeping_up, seen) = match &high {
                    Ok(Ok((_, high))) => (
                        read_since_check || *high <= l.next,
                        format!("high watermark {high}, read up to {}", l.next),
                    ),
                    Ok(Err(err)) => (false, format!("watermark query failed: {err}")),
                    Err(err) => (false, format!("watermark query failed: {err}")),
                };
                read_since_check = false;
                if keeping_up {
                    failing_since = None;
                    l.stalled_since_ms.store(0, std::sync::atomic::Ordering::Release);
                    continue;
                }
                let now = std::time::Instant::now();
                let since_ms = now.duration_since(l.started).as_millis() as u64 + 1;
                let _ = l.stalled_since_ms.compare_exchange(
                    0,
                    since_ms,
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                );
                // Kafka down or not answering: a new consumer would not help, and one
                // made now may come out of the outage broken. Any other failure (behind
                // the watermark, `UnknownPartition`, a query timing out that a fresh
                // client answers) is the consumer's.
                let timed_out = matches!(
                    &high,
                    Ok(Err(err)) if matches!(
                        err.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::OperationTimedOut)
                    )
                );
                if timed_out {
                    let (settings, gateway) = (l.settings.clone(), l.gateway.clone());
                    let kafka_answers = tokio::task::spawn_blocking(move || {
                        let probe = format!("{gateway}-replies-probe");
                        let topic = &settings.reply_topic;
                        fresh_metadata(&settings, &probe, topic, Duration::from_millis(800))
                            .is_some()
                    })
                    .await
                    .unwrap_or(false);
                    if !kafka_answers {
                        tracing::debug!(partition = l.partition, seen, "kafka does not answer");
                        failing_since = None;
                        continue;
                    }
                }
                let since = *failing_since.get_or_insert(now);
                if now.duration_since(since) < LISTENER_STUCK_AFTER {
                    tracing::debug!(partition = l.partition, seen, "the reply consumer is behind");
                    continue;
                }
                tracing::warn!(
                    partition = l.partition,
                    from = l.next,
                    seen,
                    "the reply consumer has not kept up with its partition for {} s: replacing it",
                    now.duration_since(since).as_secs()
                );
                let fresh = ReplyListener::consumer(&l.settings, &l.gateway).and_then(|c| {
                    ReplyListener::assign(&c, &topic, l.partition, l.next)?;
                    Ok(c)
                });
                match fresh {
                    Ok(fresh) => {
                        metrics::counter!("sealtrail_kafka_reply_listener_replaced_total").increment(1);
                        let old = std::mem::replace(&mut l.consumer, Arc::new(fresh));
                        // Closing a stuck consumer may wait on Kafka: not here.
                        tokio::task::spawn_blocking(move || drop(old));
                        failing_since = Some(now);
                    }
                    Err(err) => tracing::error!(%err, "cannot replace the reply consumer"),
                }
            }
        }
    }
}

impl Drop for ReplyListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealtrail_core::receipt::{Receipt, ReceiptStatus};

    fn reply(gateway: &str, id: u64, padding: usize) -> (ReplyAddress, EntryOutcome) {
        let to = ReplyAddress {
            gateway: gateway.into(),
            correlation_id: id,
        };
        let outcome = EntryOutcome::Committed {
            receipt: Receipt {
                receipt_id: format!("r-{id}-{}", "x".repeat(padding)),
                status: ReceiptStatus::Committed,
                accepted: 1,
                rejected: 0,
                ids: vec![],
                errors: vec![],
                error_message: None,
                created_at: "2024-01-01T00:00:00.000000Z".into(),
                committed_at: None,
            },
            records: Default::default(),
        };
        (to, outcome)
    }

    fn ids(frame: &[u8]) -> Vec<u64> {
        decode(frame)
            .unwrap()
            .iter()
            .map(|r| r.correlation_id)
            .collect()
    }

    #[test]
    fn a_frame_is_what_serde_writes_for_the_same_replies() {
        let replies = vec![reply("gw-a", 1, 0), reply("gw-a", 2, 0)];
        let expected = serde_json::to_vec(&Replies {
            replies: replies
                .iter()
                .map(|(to, outcome)| Reply {
                    correlation_id: to.correlation_id,
                    outcome: outcome.clone(),
                })
                .collect(),
        })
        .unwrap();
        let got = frames(replies, REPLIES_FRAME_BYTES);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "gw-a");
        assert_eq!(got[0].1, expected);
    }

    #[test]
    fn each_gateway_gets_its_replies_in_order_and_single_replies_still_decode() {
        let replies = vec![
            reply("gw-a", 1, 0),
            reply("gw-b", 2, 0),
            reply("gw-a", 3, 0),
            reply("gw-b", 4, 0),
            reply("gw-a", 5, 0),
        ];
        let got = frames(replies, REPLIES_FRAME_BYTES);
        let by_gateway: Vec<(&str, Vec<u64>)> =
            got.iter().map(|(g, f)| (g.as_str(), ids(f))).collect();
        assert_eq!(
            by_gateway,
            vec![("gw-a", vec![1, 3, 5]), ("gw-b", vec![2, 4])]
        );
        // A message of one reply (a chainer before frames, or a batch with one waiter).
        let (to, outcome) = reply("gw-a", 9, 0);
        let one = serde_json::to_vec(&Reply {
            correlation_id: to.correlation_id,
            outcome,
        })
        .unwrap();
        assert_eq!(ids(&one), vec![9]);
        assert!(decode(b"{\"replies\":[{\"correlation_id\":1}]}").is_err());
    }

    #[test]
    fn a_frame_closes_before_its_limit() {
        let replies: Vec<_> = (0..10).map(|i| reply("gw-a", i, 300)).collect();
        let one = encode(&Reply {
            correlation_id: 0,
            outcome: replies[0].1.clone(),
        })
        .unwrap()
        .len();
        // Room for three replies per frame, not four.
        let limit = REPLIES_PREFIX.len() + 2 + 3 * one + 2 + 1;
        let got = frames(replies, limit);
        assert!(
            got.iter().all(|(_, f)| f.len() <= limit),
            "a frame passed its limit"
        );
        let sizes: Vec<usize> = got.iter().map(|(_, f)| ids(f).len()).collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
        let all: Vec<u64> = got.iter().flat_map(|(_, f)| ids(f)).collect();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        // A reply bigger than the limit still goes, alone.
        let got = frames(vec![reply("gw-a", 1, 0), reply("gw-a", 2, 0)], 10);
        assert_eq!(got.len(), 2);
    }
}
