//! The dead-letter topic: where a chainer puts an entry it cannot chain, so its partition
//! moves on instead of stopping every chainer that takes it (a poison pill).
//!
//! An entry is dead-lettered when [`check_entry`] refuses it: it is not a JSON
//! [`LogEntry`] (an older chainer reading a newer gateway's entries, or bytes some other
//! producer wrote), or it cannot have come from a gateway (no tenant, a tenant that does
//! not hash to the partition it was read from, nothing to report). Chaining an entry on the
//! wrong partition would let two chainers extend one tenant's chain at once, a fork.
//!
//! A dead letter is the source message's value, byte for byte, under its original key and
//! timestamp, with headers saying where it came from and why it was refused:
//! [`HEADER_SOURCE_TOPIC`], [`HEADER_SOURCE_PARTITION`], [`HEADER_SOURCE_OFFSET`],
//! [`HEADER_REASON`] (one of [`Reason`]'s codes) and [`HEADER_ERROR`] (the detail).
//!
//! Contract: [`DeadLetterSink::send`] returns `Ok` only once every in-sync replica has the
//! dead letter (`acks=all`, idempotent producer), and only then does the chainer commit
//! its partition's offset past the source entry. So an entry a gateway acknowledged is
//! never dropped: it is either chained or kept, recoverable, on the dead-letter topic
//! (retained forever). The same entry may be dead-lettered twice (a crash between the
//! dead-letter write and the next offset commit redelivers it); the source partition and
//! offset headers identify duplicates.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use sealtrail_core::partition::partition_for;
use sealtrail_log::LogEntry;

use crate::{KafkaLogError, KafkaSettings, MAX_MESSAGE_BYTES, base_config, partition_count};

/// Header naming the topic the dead letter was read from.
pub const HEADER_SOURCE_TOPIC: &str = "sealtrail-source-topic";
/// Header with the source partition, in decimal.
pub const HEADER_SOURCE_PARTITION: &str = "sealtrail-source-partition";
/// Header with the source offset, in decimal.
pub const HEADER_SOURCE_OFFSET: &str = "sealtrail-source-offset";
/// Header with the reason code ([`Reason::code`]).
pub const HEADER_REASON: &str = "sealtrail-reason";
/// Header with a human-readable detail of the reason.
pub const HEADER_ERROR: &str = "sealtrail-error";

/// Why an entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The message has no value, or its value is not a JSON log entry this chainer knows.
    Undecodable,
    /// The entry has an empty tenant id.
    NoTenant,
    /// The entry's tenant hashes to another partition than the one it was read from.
    WrongPartition,
    /// The entry has neither events nor rejected items: there is nothing to chain or report.
    Empty,
}

impl Reason {
    /// The code in the [`HEADER_REASON`] header and the `reason` label of
    /// `sealtrail_dead_letter_total`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::NoTenant => "no_tenant",
            Reason::WrongPartition => "wrong_partition",
            Reason::Empty => "empty",
        }
    }
}

/// An entry [`check_entry`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub detail: String,
}

/// Decodes the entry read at `partition` of a topic of `partitions` partitions and checks
/// what is cheap to check and would otherwise stop or fork the chain.
pub fn check_entry(
    payload: Option<&[u8]>,
    partition: u32,
    partitions: u32,
) -> Result<LogEntry, Refused> {
    let refused = |reason, detail: String| Refused { reason, detail };
    let Some(payload) = payload else {
        return Err(refused(
            Reason::Undecodable,
            "the message has no value".into(),
        ));
    };
    let entry: LogEntry = serde_json::from_slice(payload).map_err(|err| {
        refused(
            Reason::Undecodable,
            format!("not a log entry ({err}); is this chainer older than the gateways?"),
        )
    })?;
    if entry.tenant_id.is_empty() {
        return Err(refused(
            Reason::NoTenant,
            "the entry has no tenant id".into(),
        ));
    }
    let home = partition_for(&entry.tenant_id, partitions);
    if home != partition {
        return Err(refused(
            Reason::WrongPartition,
            format!(
                "tenant {:?} belongs to partition {home} of {partitions}, not {partition}",
                entry.tenant_id
            ),
        ));
    }
    if entry.events.is_empty() && entry.rejected.is_empty() {
        return Err(refused(
            Reason::Empty,
            "the entry has neither events nor rejected items".into(),
        ));
    }
    Ok(entry)
}

/// A source message to dead-letter, as the dispatcher read it.
pub struct DeadLetter<'a> {
    pub partition: u32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The source message's timestamp (ms since the epoch), kept on the dead letter.
    pub timestamp: Option<i64>,
    pub refused: &'a Refused,
}

/// The chainer process's writer to the dead-letter topic.
pub struct DeadLetterSink {
    producer: FutureProducer,
    topic: String,
    source_topic: String,
}

impl DeadLetterSink {
    /// Connects; the dead-letter topic must exist (`sealtrail migrate` creates it), so a
    /// missing one stops the chainer at start instead of at its first poison entry.
    pub fn connect(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaLogError> {
        let producer: FutureProducer = base_config(settings, client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("message.timeout.ms", "30000")
            .create()?;
        partition_count(producer.client(), &settings.dead_letter_topic)?;
        // Exported from the start, so a dashboard sees 0 rather than nothing.
        for reason in [
            Reason::Undecodable,
            Reason::NoTenant,
            Reason::WrongPartition,
            Reason::Empty,
        ] {
            metrics::counter!("sealtrail_dead_letter_total", "reason" => reason.code())
                .increment(0);
        }
        Ok(Self {
            producer,
            topic: settings.dead_letter_topic.clone(),
            source_topic: settings.topic.clone(),
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `letter` and returns once Kafka acknowledged it (`acks=all`). On an error the
    /// outcome is unknown (it may still be written): the caller retries, and a duplicate
    /// dead letter is harmless.
    pub async fn send(&self, letter: &DeadLetter<'_>) -> Result<(), KafkaLogError> {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_SOURCE_TOPIC,
                value: Some(self.source_topic.as_str()),
            })
            .insert(Header {
                key: HEADER_SOURCE_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: HEADER_SOURCE_OFFSET,
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: HEADER_REASON,
                value: Some(letter.refused.reason.code()),
            })
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(letter.refused.detail.as_str()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(payload) = letter.payload {
            record = record.payload(payload);
        }
        if let Some(timestamp) = letter.timestamp {
            record = record.timestamp(timestamp);
        }
        self.producer
            .send(record, Timeout::After(Duration::from_secs(5)))
            .await
            .map(|_| ())
            .map_err(|(err, _)| KafkaLogError::Kafka(err))
    }
}

#[cfg(test)]
mod tests {
    use sealtrail_log::IndexedEvent;

    use super::*;

    fn entry(tenant: &str, events: usize) -> LogEntry {
        let event = sealtrail_core::event::validate_event(
            serde_json::json!({
                "id": "e1", "actor": {"id": "a"}, "action": "x.y",
                "resource": {"id": "r", "type": "doc"}, "outcome": "success",
                "timestamp": "2024-01-01T00:00:00Z"
            }),
            0,
            || unreachable!(),
        )
        .unwrap();
        LogEntry {
            tenant_id: tenant.into(),
            receipt_id: "r1".into(),
            created_at: "2024-01-01T00:00:00.000000Z".into(),
            events: (0..events)
                .map(|i| IndexedEvent {
                    index: i as u32,
                    event: event.clone(),
                })
                .collect(),
            rejected: vec![],
            reply_to: None,
            reply_only: false,
            resent: false,
        }
    }

    fn check(entry: &LogEntry, partition: u32) -> Result<LogEntry, Refused> {
        check_entry(Some(&serde_json::to_vec(entry).unwrap()), partition, 8)
    }

    #[test]
    fn a_gateways_entry_passes() {
        let e = entry("acme", 1);
        assert_eq!(check(&e, partition_for("acme", 8)).unwrap(), e);
    }

    #[test]
    fn undecodable_values_are_refused() {
        for payload in [&b"\xff\x00 not json"[..], b"{\"tenant_id\": 3}", b""] {
            let refused = check_entry(Some(payload), 0, 8).unwrap_err();
            assert_eq!(refused.reason, Reason::Undecodable, "{payload:?}");
        }
        assert_eq!(
            check_entry(None, 0, 8).unwrap_err().reason,
            Reason::Undecodable
        );
    }

    #[test]
    fn an_entry_on_another_tenants_partition_is_refused() {
        let e = entry("acme", 1);
        let home = partition_for("acme", 8);
        let refused = check(&e, (home + 1) % 8).unwrap_err();
        assert_eq!(refused.reason, Reason::WrongPartition);
        assert!(refused.detail.contains("acme"), "{}", refused.detail);
    }

    #[test]
    fn entries_without_tenant_or_content_are_refused() {
        let e = entry("", 1);
        assert_eq!(
            check(&e, partition_for("", 8)).unwrap_err().reason,
            Reason::NoTenant
        );
        let e = entry("acme", 0);
        assert_eq!(
            check(&e, partition_for("acme", 8)).unwrap_err().reason,
            Reason::Empty
        );
        // A batch whose items were all rejected still has a receipt to write.
        let mut e = entry("acme", 0);
        e.rejected.push(sealtrail_core::receipt::ItemError {
            index: 0,
            code: "invalid".into(),
            message: "bad".into(),
        });
        assert!(check(&e, partition_for("acme", 8)).is_ok());
    }
}
