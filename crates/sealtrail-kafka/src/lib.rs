//! The log on Apache Kafka, for distributed mode.
//!
//! - [`producer::KafkaLog`]: the gateway's [`LogProducer`](sealtrail_log::LogProducer). An
//!   idempotent producer with `acks=all`; an append returns once every in-sync replica has
//!   the entry ([`Durability::Durable`](sealtrail_log::Durability::Durable)). The partition is
//!   chosen here with Kafka's own murmur2 (the Java client's), so every client agrees.
//! - [`consumer::ChainerFeed`]: the chainer's side. One consumer-group member per chainer
//!   process; each assigned partition becomes a
//!   [`PartitionConsumer`](sealtrail_log::PartitionConsumer) fed by one dispatcher task,
//!   which pauses a partition whose chainer is behind instead of waiting for it
//!   ([`dispatch`]), so a slow partition delays only itself.
//! - [`dead_letter`]: an entry a chainer cannot decode or that fails its cheap checks goes to
//!   the dead-letter topic, byte for byte, with where it came from and why; the partition
//!   moves on.
//! - [`replies`]: the correlation channel. A reply topic; each gateway reads one partition of
//!   it (chosen from its gateway id) and keeps the replies addressed to it.
//! - [`admin::ensure_topics`]: creates the topics (`sealtrail migrate`).
//!
//! Entries and replies travel as JSON: `kcat` shows them as they are.
#![forbid(unsafe_code)]

pub mod admin;
pub mod consumer;
pub mod dead_letter;
mod dispatch;
#[cfg(feature = "fault-injection")]
mod fault;
pub mod producer;
pub mod replies;

use std::time::Duration;

use rdkafka::ClientConfig;

/// Largest entry (one ingest request) the topics and clients accept, in bytes. A batch
/// request body is at most 4 MiB; its normalized form with digests stays well below this.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Where the log lives.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// The events topic (partitioned by tenant).
    pub topic: String,
    /// The topic sync replies travel on.
    pub reply_topic: String,
    /// Where entries a chainer cannot chain go (undecodable, or failing the checks in
    /// [`dead_letter::check_entry`]), with their source partition, offset and the reason.
    pub dead_letter_topic: String,
    /// Consumer group of the chainers.
    pub group_id: String,
    /// How long a chainer may be silent before the group moves its partitions away.
    pub session_timeout: Duration,
    /// Longest a chainer process may go without polling the group consumer before the group
    /// moves its partitions away (Kafka's `max.poll.interval.ms`; at least the session
    /// timeout). The dispatcher polls continuously, however slow a partition's chainer is.
    pub max_poll_interval: Duration,
    /// Static group membership (Kafka's `group.instance.id`), unique per chainer and
    /// stable across its restarts: a chainer restarted within the session timeout gets
    /// its partitions back at once, without a rebalance. `None`: dynamic membership.
    pub group_instance_id: Option<String>,
    /// How long the entries producer gathers entries into one request (`linger.ms`).
    pub producer_linger: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaLogError {
    /// Kafka is unreachable or answered with an error; retry later.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The topics do not match what sealtrail needs (missing: run `sealtrail migrate`).
    #[error("{0}")]
    Setup(String),
}

/// Client settings shared by producers and consumers.
pub(crate) fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        .set("socket.keepalive.enable", "true")
        // Topics are created by `sealtrail migrate` only, with the right partition count.
        .set("allow.auto.create.topics", "false")
        // A broker that is down or frozen for a while pushes librdkafka's reconnect
        // backoff to its 10 s default maximum, so a client could wait up to 10 s after the
        // broker is back before it even tries: at most 1 s.
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "4");
    if let Ok(contexts) = std::env::var("SEALTRAIL_RDKAFKA_DEBUG") {
        config.set("debug", contexts).set("log_level", "7");
    }
    config
}

/// `topic`'s metadata as the brokers give it now to a fresh client, or `None` if they do
/// not answer within `timeout`. A fresh client has its own connections and cache, so it
/// tells a Kafka outage apart from a stuck long-lived client (librdkafka #5430), which
/// is how the gateway judges its producer and its reply consumer. Blocking.
pub(crate) fn fresh_metadata(
    settings: &KafkaSettings,
    client_id: &str,
    topic: &str,
    timeout: Duration,
) -> Option<rdkafka::metadata::Metadata> {
    let probe: rdkafka::producer::BaseProducer = base_config(settings, client_id).create().ok()?;
    rdkafka::producer::Producer::client(&probe)
        .fetch_metadata(Some(topic), timeout)
        .ok()
}

/// Number of partitions of `topic`, or a setup error telling the operator what to do.
pub(crate) fn partition_count<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<u32, KafkaLogError> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let topic_meta = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaLogError::Setup(format!("topic {topic} not found")))?;
    if topic_meta.error().is_some() || topic_meta.partitions().is_empty() {
        return Err(KafkaLogError::Setup(format!(
            "topic {topic} does not exist; run `sealtrail migrate` first"
        )));
    }
    Ok(topic_meta.partitions().len() as u32)
}
