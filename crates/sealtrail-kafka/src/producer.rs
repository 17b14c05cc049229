//! The gateway's side of the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::util::Timeout;
use sealtrail_core::partition::partition_for;
use sealtrail_log::{Durability, LogEntry, LogError, LogProducer};

use crate::{
    KafkaLogError, KafkaSettings, MAX_MESSAGE_BYTES, base_config, fresh_metadata, partition_count,
};

/// How long an append may wait for room in the producer's local queue before the request
/// is answered 503 (overloaded).
const QUEUE_WAIT: Duration = Duration::from_millis(200);

pub struct KafkaLog {
    /// Replaced whole by [`KafkaLog::replace_producer`]; appends take a clone (an `Arc`).
    /// Shared with the delivery tasks, which hand an entry purged from a replaced
    /// producer's queue to the current one.
    producer: Arc<std::sync::RwLock<FutureProducer>>,
    settings: KafkaSettings,
    client_id: String,
    topic: String,
    partitions: u32,
    closed: AtomicBool,
    /// Shared with the tasks that wait for each delivery, which outlive a request that
    /// goes away (the entry is in librdkafka's hands until it reports the delivery).
    tracker: Arc<Tracker>,
}

/// Every partition's [`Deliveries`], and the clock they count in.
struct Tracker {
    started: std::time::Instant,
    partitions: Vec<Deliveries>,
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }
}

/// What one partition's appends did lately, for readiness ([`KafkaLog::stalled_partitions`]).
#[derive(Default)]
struct Deliveries {
    in_flight: AtomicU64,
    /// Milliseconds since the log was created, at the last acknowledged append.
    last_ok_ms: AtomicU64,
    /// The same at the last append that failed or timed out (0: none).
    last_failed_ms: AtomicU64,
    /// The same at the last append that completed either way.
    last_done_ms: AtomicU64,
    /// The same at the last acknowledged append, or when appends started waiting on an
    /// idle partition if that came later: failed deliveries do not move it (a stuck
    /// producer's appends keep timing out, [`KafkaLog::unacknowledged_partitions`]).
    last_progress_ms: AtomicU64,
    last_error: std::sync::Mutex<String>,
}

/// A partition the gateway cannot append to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalledPartition {
    pub partition: u32,
    pub reason: String,
}

impl KafkaLog {
    /// Connects and reads the topic's partition count (the topic must exist).
    pub fn connect(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaLogError> {
        let producer = Self::producer(settings, client_id)?;
        let partitions = partition_count(producer.client(), &settings.topic)?;
        Ok(Self {
            producer: Arc::new(std::sync::RwLock::new(producer)),
            settings: settings.clone(),
            client_id: client_id.to_string(),
            topic: settings.topic.clone(),
            partitions,
            closed: AtomicBool::new(false),
            tracker: Arc::new(Tracker {
                started: std::time::Instant::now(),
                partitions: (0..partitions).map(|_| Deliveries::default()).collect(),
            }),
        })
    }

    fn producer(
        settings: &KafkaSettings,
        client_id: &str,
    ) -> Result<FutureProducer, KafkaLogError> {
        let producer: FutureProducer = base_config(settings, client_id)
            // Exactly-once, in-order delivery per partition across retries, and an
            // acknowledgement only once every in-sync replica has the entry.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", linger_ms(settings.producer_linger))
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("message.timeout.ms", "30000")
            .set("queue.buffering.max.messages", "200000")
            .create()?;
        Ok(producer)
    }

    fn current(&self) -> FutureProducer {
        self.producer.read().expect("producer lock").clone()
    }

    /// Whether the brokers answer a metadata request for the topic now (within 2 s) and
    /// name a leader for each of `partitions`. Asked through a fresh client: a stuck
    /// producer does not even answer this. Blocking.
    pub fn leaders_known(&self, partitions: &[u32]) -> bool {
        let Some(metadata) = fresh_metadata(
            &self.settings,
            &format!("{}-probe", self.client_id),
            &self.topic,
            Duration::from_secs(2),
        ) else {
            return false;
        };
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .is_some_and(|t| {
                partitions.iter().all(|&p| {
                    t.partitions()
                        .iter()
                        .any(|m| m.id() == p as i32 && m.leader() >= 0 && m.error().is_none())
                })
            })
    }

    /// Replaces the producer with a new one (new connections, new metadata, a new
    /// idempotent producer id): the way out of a producer that keeps failing a partition
    /// the brokers serve (librdkafka issue #5430: a partition whose leader was briefly
    /// `-1` stays without a leader in the producer's cache for good). Appends still in
    /// the old producer's queues (all of a stuck partition's) move to the new one, marked
    /// [`LogEntry::resent`] (one may have been written already by a send whose answer was
    /// lost), so their requests are answered once it delivers. Appends already sent finish
    /// on the old producer (acknowledged, or failed with their ids for the client to
    /// retry; an id is never chained twice); it is flushed and dropped in the background.
    /// Blocking.
    pub fn replace_producer(&self) -> Result<(), KafkaLogError> {
        let fresh = Self::producer(&self.settings, &self.client_id)?;
        let old = std::mem::replace(&mut *self.producer.write().expect("producer lock"), fresh);
        metrics::counter!("sealtrail_kafka_producer_replaced_total").increment(1);
        std::thread::spawn(move || {
            // Entries still in its queues (waiting for a first send or a retry): their
            // delivery tasks hand them, marked `resent`, to the new producer (so the
            // requests waiting on them are answered as soon as it delivers, not after
            // `message.timeout.ms`). Entries sent and not yet acknowledged finish here.
            old.purge(PurgeConfig::default().queue());
            let _ = old.flush(Timeout::After(Duration::from_secs(35)));
        });
        Ok(())
    }

    /// Partitions with appends waiting whose last acknowledgement (or, on a partition
    /// that was idle, the first of the waiting appends) is older than `after`: failed
    /// and timed-out deliveries do not count as progress. What decides whether a
    /// producer is stuck (with the brokers naming the partitions' leaders).
    pub fn unacknowledged_partitions(&self, after: Duration) -> Vec<u32> {
        let now = self.tracker.now_ms();
        let after_ms = after.as_millis() as u64;
        (0..self.tracker.partitions.len())
            .filter(|&p| {
                let d = &self.tracker.partitions[p];
                d.in_flight.load(Ordering::Acquire) > 0
                    && now.saturating_sub(d.last_progress_ms.load(Ordering::Acquire)) > after_ms
            })
            .map(|p| p as u32)
            .collect()
    }

    /// Partitions whose appends are failing now: the last one completed failed (within
    /// the last 10 s: an idle gateway taken out of a load balancer's rotation gets no
    /// traffic to prove it recovered), or appends have been waiting for longer than `stuck_after` with
    /// none completing meanwhile (a broker that does not answer, a partition whose leader
    /// the producer lost).
    pub fn stalled_partitions(&self, stuck_after: Duration) -> Vec<StalledPartition> {
        let now = self.tracker.now_ms();
        let stuck_ms = stuck_after.as_millis() as u64;
        let mut stalled = Vec::new();
        for (partition, d) in self.tracker.partitions.iter().enumerate() {
            let ok = d.last_ok_ms.load(Ordering::Acquire);
            let failed = d.last_failed_ms.load(Ordering::Acquire);
            let done = d.last_done_ms.load(Ordering::Acquire);
            let in_flight = d.in_flight.load(Ordering::Acquire);
            let reason = if failed > ok && now.saturating_sub(failed) < 10_000 {
                let error = d.last_error.lock().expect("delivery lock").clone();
                Some(format!("kafka appends fail: {error}"))
            } else if in_flight > 0 && now.saturating_sub(done) > stuck_ms {
                Some(format!(
                    "kafka has acknowledged none of {in_flight} appends for {} ms",
                    now.saturating_sub(done)
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                stalled.push(StalledPartition {
                    partition: partition as u32,
                    reason,
                });
            }
        }
        stalled
    }
}

/// The payload of a published [`LogEntry`], marked [`LogEntry::resent`].
fn mark_resent(payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut entry: LogEntry = serde_json::from_slice(payload)
        .map_err(|e| format!("a purged append does not read back as an entry: {e}"))?;
    entry.resent = true;
    serde_json::to_vec(&entry).map_err(|e| e.to_string())
}

#[async_trait]
impl LogProducer for KafkaLog {
    async fn append(&self, entry: LogEntry) -> Result<Durability, LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let payload = serde_json::to_vec(&entry).map_err(|e| LogError::Backend(e.to_string()))?;
        let partition = partition_for(&entry.tenant_id, self.partitions) as i32;
        let record = FutureRecord::to(&self.topic)
            .key(entry.tenant_id.as_bytes())
            .payload(&payload)
            .partition(partition);
        let started = std::time::Instant::now();
        let producer = self.current();
        // Enqueue, waiting up to QUEUE_WAIT for room. Nothing is counted in flight yet: a
        // request dropped here leaves no entry with librdkafka.
        let mut record = record;
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < QUEUE_WAIT =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(LogError::Overloaded);
                }
                Err((err, _)) => {
                    tracing::warn!(%err, partition, "kafka refused the append");
                    return Err(LogError::Backend(format!(
                        "kafka refused the append: {err}"
                    )));
                }
            }
        };
        // The entry is librdkafka's now: it is counted in flight until librdkafka reports
        // its delivery (acknowledged, failed, or timed out after `message.timeout.ms`),
        // by a task of its own, so that a request that goes away meanwhile (its client
        // disconnected) neither leaves the count behind (an idle partition would look
        // stalled for good) nor takes it out early (a stuck producer's stall would hide).
        let tracker = Arc::clone(&self.tracker);
        let index = partition as usize;
        if tracker.partitions[index]
            .in_flight
            .fetch_add(1, Ordering::AcqRel)
            == 0
        {
            // Nothing was waiting: the stall clocks start now, not at the last completion.
            let now = tracker.now_ms();
            let deliveries = &tracker.partitions[index];
            deliveries.last_done_ms.store(now, Ordering::Release);
            deliveries.last_progress_ms.store(now, Ordering::Release);
        }
        let (producers, topic) = (Arc::clone(&self.producer), self.topic.clone());
        let waiting = tokio::spawn(async move {
            let mut delivery = delivery;
            let result = loop {
                match delivery.await {
                    Ok(Ok(_)) => break Ok(()),
                    // Purged from the queue of a producer being replaced. Not necessarily
                    // never sent: an entry whose send failed without an answer (its broker
                    // died after writing it) waits in the queue for a retry, and the new
                    // producer's idempotent id is new, so Kafka would keep both copies. The
                    // copy is therefore marked `resent`, and the chainer looks up its ids
                    // (the first copy, if written, is at a lower offset: it was sent before
                    // the purge and is never sent again by the old producer), so it is
                    // answered from the stored events instead of being chained twice.
                    // Entries handed over this way may reach the new producer in another
                    // order than they were queued; they belong to requests that were all
                    // still unanswered, so no client has seen an order between them. A
                    // crash meanwhile leaves the request unanswered, and the client's retry
                    // with the same ids is idempotent.
                    Ok(Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue),
                        message,
                    ))) => {
                        let payload = match message.payload().map(mark_resent) {
                            Some(Ok(payload)) => payload,
                            Some(Err(err)) => break Err(err),
                            None => break Err("a purged append without a payload".to_string()),
                        };
                        metrics::counter!("sealtrail_kafka_appends_resent_total").increment(1);
                        let current = producers.read().expect("producer lock").clone();
                        let mut record = FutureRecord::to(&topic)
                            .partition(message.partition())
                            .payload(&payload);
                        if let Some(key) = message.key() {
                            record = record.key(key);
                        }
                        match current.send_result(record) {
                            Ok(again) => delivery = again,
                            Err((err, _)) => break Err(err.to_string()),
                        }
                    }
                    Ok(Err((err, _))) => break Err(err.to_string()),
                    Err(_canceled) => {
                        break Err("the producer was dropped before delivery".to_string());
                    }
                }
            };
            let deliveries = &tracker.partitions[index];
            deliveries.in_flight.fetch_sub(1, Ordering::AcqRel);
            let now = tracker.now_ms();
            deliveries.last_done_ms.store(now, Ordering::Release);
            match &result {
                Ok(()) => {
                    deliveries.last_ok_ms.store(now, Ordering::Release);
                    deliveries.last_progress_ms.store(now, Ordering::Release);
                }
                Err(err) => {
                    *deliveries.last_error.lock().expect("delivery lock") = err.clone();
                    deliveries.last_failed_ms.store(now, Ordering::Release);
                }
            }
            metrics::histogram!("sealtrail_kafka_append_seconds")
                .record(started.elapsed().as_secs_f64());
            result
        });
        match waiting.await {
            Ok(Ok(())) => Ok(Durability::Durable),
            Ok(Err(err)) => {
                // Unknown outcome (e.g. a timeout): the entry may still be delivered. The
                // client is told to retry; retrying the same ids is idempotent.
                tracing::warn!(%err, partition, "kafka append failed");
                Err(LogError::Backend(format!(
                    "kafka did not acknowledge: {err}"
                )))
            }
            Err(join) => Err(LogError::Backend(format!(
                "the kafka delivery task failed: {join}"
            ))),
        }
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Err(err) = self
            .current()
            .flush(Timeout::After(Duration::from_secs(10)))
        {
            tracing::warn!(%err, "kafka producer did not flush");
        }
    }
}

/// `linger.ms` as librdkafka takes it: fractional milliseconds, exact to the microsecond
/// (`500us` is "0.5", `3ms` is "3"; a float product of seconds could print "3.0000000000000004").
fn linger_ms(linger: Duration) -> String {
    (linger.as_micros() as f64 / 1000.0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linger_is_given_in_exact_fractional_milliseconds() {
        assert_eq!(linger_ms(Duration::from_millis(1)), "1");
        assert_eq!(linger_ms(Duration::from_millis(3)), "3");
        assert_eq!(linger_ms(Duration::from_micros(500)), "0.5");
        assert_eq!(linger_ms(Duration::ZERO), "0");
        assert_eq!(linger_ms(Duration::from_secs(1)), "1000");
    }
}
