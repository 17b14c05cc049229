//! Topic setup for `sealtrail migrate`: idempotent, and refuses to change a partition count
//! (tenants are mapped to partitions by it).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaLogError, KafkaSettings, MAX_MESSAGE_BYTES, base_config, partition_count};

/// What `ensure_topics` did to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    Created,
    Existed,
}

/// Creates the events topic with `partitions` partitions, the reply topic with
/// `reply_partitions` and the dead-letter topic with one, all replicated `replication`
/// times with `min.insync.replicas` of `replication - 1` (at least 1), unless they exist
/// with those partition counts. The events and dead-letter topics are kept forever: they
/// hold entries gateways acknowledged.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    partitions: u32,
    reply_partitions: u32,
    replication: u32,
) -> Result<Vec<(String, TopicState)>, KafkaLogError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(settings, "sealtrail-migrate").create()?;
    let min_isr = replication.saturating_sub(1).max(1).to_string();
    let max_bytes = MAX_MESSAGE_BYTES.to_string();
    let mut out = Vec::new();
    for (topic, count, retention) in [
        (settings.topic.as_str(), partitions, "-1"),
        // Replies matter for seconds only.
        (settings.reply_topic.as_str(), reply_partitions, "3600000"),
        // Rare, read by an operator; one partition keeps them in the order they came.
        (settings.dead_letter_topic.as_str(), 1, "-1"),
    ] {
        let new = NewTopic::new(
            topic,
            count as i32,
            TopicReplication::Fixed(replication as i32),
        )
        .set("min.insync.replicas", &min_isr)
        .set("max.message.bytes", &max_bytes)
        .set("retention.ms", retention);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin.create_topics([&new], &options).await?;
        let state = match results.into_iter().next() {
            Some(Ok(_)) => TopicState::Created,
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => TopicState::Existed,
            Some(Err((name, code))) => {
                return Err(KafkaLogError::Setup(format!(
                    "cannot create topic {name}: {code}"
                )));
            }
            None => return Err(KafkaLogError::Setup(format!("no answer creating {topic}"))),
        };
        if state == TopicState::Existed {
            let existing = wait_for_partitions(&admin, topic).await?;
            if existing != count {
                return Err(KafkaLogError::Setup(format!(
                    "topic {topic} has {existing} partitions, not {count}; tenants are mapped \
                     to partitions by that count, so it cannot change in place"
                )));
            }
        } else {
            wait_for_partitions(&admin, topic).await?;
        }
        out.push((topic.to_string(), state));
    }
    Ok(out)
}

/// Metadata can lag a creation by a moment.
async fn wait_for_partitions(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<u32, KafkaLogError> {
    let mut last = None;
    for _ in 0..50 {
        match partition_count(admin.inner(), topic) {
            Ok(n) => return Ok(n),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.expect("at least one attempt"))
}
