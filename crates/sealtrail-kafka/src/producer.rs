//! The gateway's side of the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use sealtrail_core::partition::partition_for;
use sealtrail_log::{Durability, LogEntry, LogError, LogProducer};

use crate::{KafkaLogError, KafkaSettings, MAX_MESSAGE_BYTES, base_config, partition_count};

/// How long an append may wait for room in the producer's local queue before the request
/// is answered 503 (overloaded).
const QUEUE_WAIT: Duration = Duration::from_millis(200);

pub struct KafkaLog {
    producer: FutureProducer,
    topic: String,
    partitions: u32,
    closed: AtomicBool,
}

impl KafkaLog {
    /// Connects and reads the topic's partition count (the topic must exist).
    pub fn connect(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaLogError> {
        let producer: FutureProducer = base_config(settings, client_id)
            // Exactly-once, in-order delivery per partition across retries, and an
            // acknowledgement only once every in-sync replica has the entry.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "1")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("message.timeout.ms", "30000")
            .set("queue.buffering.max.messages", "200000")
            .create()?;
        let partitions = partition_count(producer.client(), &settings.topic)?;
        Ok(Self {
            producer,
            topic: settings.topic.clone(),
            partitions,
            closed: AtomicBool::new(false),
        })
    }
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
        let result = self.producer.send(record, Timeout::After(QUEUE_WAIT)).await;
        metrics::histogram!("sealtrail_kafka_append_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => Ok(Durability::Durable),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(LogError::Overloaded)
            }
            Err((err, _)) => {
                // Unknown outcome (e.g. a timeout): the entry may still be delivered. The
                // client is told to retry; retrying the same ids is idempotent.
                tracing::warn!(%err, partition, "kafka append failed");
                Err(LogError::Backend(format!(
                    "kafka did not acknowledge: {err}"
                )))
            }
        }
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Err(err) = self.producer.flush(Timeout::After(Duration::from_secs(10))) {
            tracing::warn!(%err, "kafka producer did not flush");
        }
    }
}
