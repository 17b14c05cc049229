//! The correlation channel on Kafka: chainers publish each waited-for outcome to the reply
//! topic, on the partition its gateway reads; the gateway hands it to the waiting request.
//!
//! Replies are best effort by design: a lost reply makes the request time out with a `504`
//! that tells the client to retry with the same ids, and the retry is answered from the
//! store. So the reply producer does not wait for acknowledgements, and a gateway starts
//! reading at the end of its partition.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use sealtrail_core::partition::partition_for;
use sealtrail_log::{Correlator, EntryOutcome, ReplyAddress, ReplySink};
use serde::{Deserialize, Serialize};

use crate::{KafkaLogError, KafkaSettings, MAX_MESSAGE_BYTES, base_config, partition_count};

#[derive(Serialize, Deserialize)]
struct Reply {
    correlation_id: u64,
    outcome: EntryOutcome,
}

/// The reply-topic partition a gateway reads.
pub fn reply_partition(gateway: &str, partitions: u32) -> u32 {
    partition_for(gateway, partitions)
}

/// The chainer's sender of replies.
pub struct KafkaReplySink {
    producer: FutureProducer,
    topic: String,
    partitions: u32,
}

impl KafkaReplySink {
    pub fn connect(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaLogError> {
        let producer: FutureProducer = base_config(settings, client_id)
            .set("acks", "1")
            .set("linger.ms", "0")
            .set("compression.type", "lz4")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("message.timeout.ms", "10000")
            .create()?;
        let partitions = partition_count(producer.client(), &settings.reply_topic)?;
        Ok(Self {
            producer,
            topic: settings.reply_topic.clone(),
            partitions,
        })
    }

    /// Sends what is queued (graceful shutdown).
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

#[async_trait]
impl ReplySink for KafkaReplySink {
    async fn send(&self, to: &ReplyAddress, outcome: EntryOutcome) {
        let reply = Reply {
            correlation_id: to.correlation_id,
            outcome,
        };
        let payload = match serde_json::to_vec(&reply) {
            Ok(p) => p,
            Err(err) => {
                tracing::error!(%err, "cannot encode a reply");
                return;
            }
        };
        let record = FutureRecord::to(&self.topic)
            .key(to.gateway.as_bytes())
            .payload(&payload)
            .partition(reply_partition(&to.gateway, self.partitions) as i32);
        // Enqueue without waiting for the broker: the chainer must not slow down for a
        // gateway that may be gone. Dropping the delivery future does not cancel delivery.
        if let Err((err, _)) = self.producer.send_result(record) {
            tracing::warn!(%err, gateway = %to.gateway, "reply dropped");
        }
    }
}

/// The gateway's reader of its reply partition. Runs until the process ends.
pub struct ReplyListener {
    task: tokio::task::JoinHandle<()>,
}

impl ReplyListener {
    /// Starts reading this gateway's reply partition from its current end and delivering
    /// replies addressed to `gateway` to `correlator`. Returns once positioned, so no reply
    /// to a request published afterwards can be missed.
    pub fn start(
        settings: &KafkaSettings,
        gateway: &str,
        correlator: Arc<Correlator>,
    ) -> Result<Self, KafkaLogError> {
        let consumer: StreamConsumer = base_config(settings, &format!("{gateway}-replies"))
            // Required by librdkafka; no offsets are ever committed under it.
            .set("group.id", format!("sealtrail-gateway-{gateway}"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create()?;
        let partitions = partition_count(consumer.client(), &settings.reply_topic)?;
        let partition = reply_partition(gateway, partitions) as i32;
        let (_, high) =
            consumer.fetch_watermarks(&settings.reply_topic, partition, Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&settings.reply_topic, partition, KafkaOffset::Offset(high))?;
        consumer.assign(&tpl)?;
        let gateway = gateway.as_bytes().to_vec();
        let task = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(message) => {
                        if message.key() != Some(gateway.as_slice()) {
                            continue; // another gateway sharing this partition
                        }
                        match message.payload().map(serde_json::from_slice::<Reply>) {
                            Some(Ok(reply)) => {
                                correlator.deliver(reply.correlation_id, reply.outcome)
                            }
                            Some(Err(err)) => tracing::warn!(%err, "undecodable reply"),
                            None => {}
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, "reply consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self { task })
    }
}

impl Drop for ReplyListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
