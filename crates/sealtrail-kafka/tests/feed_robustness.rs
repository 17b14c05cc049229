//! The chainer feed under a poison entry and a slow partition, on librdkafka's mock
//! cluster (fast, no broker). The distributed suite (`crates/sealtrail/tests/
//! distributed_feed.rs`) checks the same against a real Kafka with the real binary.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sealtrail_core::event::validate_event;
use sealtrail_core::partition::partition_for;
use sealtrail_kafka::KafkaSettings;
use sealtrail_kafka::consumer::{ChainerFeed, FeedEvent, KafkaPartitionConsumer};
use sealtrail_kafka::dead_letter;
use sealtrail_log::{IndexedEvent, LogEntry, PartitionConsumer};

type Cluster = MockCluster<'static, DefaultProducerContext>;

fn cluster(partitions: i32) -> (Cluster, KafkaSettings) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", partitions, 1).unwrap();
    cluster.create_topic("replies", 1, 1).unwrap();
    cluster.create_topic("events-dead-letter", 1, 1).unwrap();
    let settings = KafkaSettings {
        brokers: cluster.bootstrap_servers(),
        topic: "events".into(),
        reply_topic: "replies".into(),
        dead_letter_topic: "events-dead-letter".into(),
        group_id: "chainers".into(),
        session_timeout: Duration::from_secs(6),
        max_poll_interval: Duration::from_secs(300),
        group_instance_id: None,
        producer_linger: Duration::from_millis(1),
    };
    (cluster, settings)
}

fn entry(tenant: &str, n: u32) -> Vec<u8> {
    let event = validate_event(
        serde_json::json!({
            "id": format!("{tenant}-{n}"),
            "actor": {"id": "a"}, "action": "x.y", "resource": {"id": "r", "type": "doc"},
            "outcome": "success", "timestamp": "2024-01-01T00:00:00Z"
        }),
        0,
        || unreachable!(),
    )
    .unwrap();
    serde_json::to_vec(&LogEntry {
        tenant_id: tenant.into(),
        receipt_id: format!("{tenant}-{n}"),
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        events: vec![IndexedEvent { index: 0, event }],
        rejected: vec![],
        reply_to: None,
        reply_only: false,
        resent: false,
    })
    .unwrap()
}

/// Writes raw values to `partition`, in order.
fn produce(settings: &KafkaSettings, partition: i32, values: &[Vec<u8>]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for value in values {
        let record = BaseRecord::<[u8], [u8]>::to(&settings.topic)
            .partition(partition)
            .key(b"k")
            .payload(value);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Joins the group and waits for `count` partitions.
async fn assigned(feed: &mut ChainerFeed, count: usize) -> Vec<KafkaPartitionConsumer> {
    let mut consumers = Vec::new();
    while consumers.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(30), feed.next())
            .await
            .expect("assigned in 30 s")
            .unwrap();
        if let FeedEvent::Assigned(c) = event {
            consumers.push(c);
        }
    }
    consumers.sort_by_key(|c| c.partition());
    consumers
}

/// Polls until `count` entries arrived (committing each batch); their receipt ids.
async fn take(
    consumer: &mut KafkaPartitionConsumer,
    count: usize,
    within: Duration,
) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let batch = tokio::time::timeout(within, consumer.poll(1000))
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} entries in {within:?}", got.len()))
            .expect("not closed");
        got.extend(batch.iter().map(|(_, e)| e.receipt_id.clone()));
        consumer.commit(batch.last().unwrap().0).await.unwrap();
    }
    got
}

/// The group's committed offset of `partition`.
fn committed(settings: &KafkaSettings, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&settings.topic, partition);
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    match offsets.elements()[0].offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_go_to_the_dead_letter_topic_and_the_partition_moves_on() {
    let (_cluster, settings) = cluster(2);
    let home = partition_for("acme", 2) as i32;
    let stranger = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| partition_for(t, 2) as i32 != home)
        .unwrap();
    let values = vec![
        entry("acme", 0),
        b"\x00 not json".to_vec(), // offset 1
        entry("acme", 1),
        entry(&stranger, 7), // offset 3: a tenant of the other partition
        entry("acme", 2),
        b"{\"truncated\": ".to_vec(), // offset 5: the last entry of the partition
    ];
    produce(&settings, home, &values);

    let mut feed = ChainerFeed::start(&settings, "chainer").unwrap();
    let mut consumers = assigned(&mut feed, 2).await;
    let consumer = &mut consumers[home as usize];
    let got = take(consumer, 3, Duration::from_secs(20)).await;
    assert_eq!(
        got,
        ["acme-0", "acme-1", "acme-2"],
        "good entries, in order"
    );
    // Nothing more to chain; the trailing poison is committed past by the consumer itself.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), consumer.poll(1000))
            .await
            .is_err()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while committed(&settings, home) != Some(6) {
        assert!(
            std::time::Instant::now() < deadline,
            "committed {:?}, not 6",
            committed(&settings, home)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The dead letters: the source bytes, where they came from and why.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&settings.dead_letter_topic, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while letters.len() < 3 && std::time::Instant::now() < deadline {
        let Some(Ok(message)) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let headers = message.headers().expect("headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap_or_default()
        };
        letters.push((
            header(dead_letter::HEADER_SOURCE_TOPIC),
            header(dead_letter::HEADER_SOURCE_PARTITION),
            header(dead_letter::HEADER_SOURCE_OFFSET),
            header(dead_letter::HEADER_REASON),
            message.payload().unwrap().to_vec(),
            message.key().map(<[u8]>::to_vec),
        ));
    }
    let expected = [
        (1, "undecodable"),
        (3, "wrong_partition"),
        (5, "undecodable"),
    ];
    assert_eq!(letters.len(), 3, "three dead letters");
    for ((topic, partition, offset, reason, payload, key), (at, why)) in
        letters.into_iter().zip(expected)
    {
        assert_eq!(topic, "events");
        assert_eq!(partition, home.to_string());
        assert_eq!(offset, at.to_string());
        assert_eq!(reason, why);
        assert_eq!(payload, values[at], "the source bytes, intact");
        assert_eq!(key.as_deref(), Some(&b"k"[..]));
    }
    feed.stop().await;
    feed.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_chainer_is_behind_is_paused_while_another_flows() {
    let (_cluster, settings) = cluster(2);
    let slow = (0..)
        .map(|i| format!("slow{i}"))
        .find(|t| partition_for(t, 2) == 0)
        .unwrap();
    let fast = (0..)
        .map(|i| format!("fast{i}"))
        .find(|t| partition_for(t, 2) == 1)
        .unwrap();
    // Far more than the slow partition's channel holds.
    let backlog = 6000;
    let values: Vec<Vec<u8>> = (0..backlog).map(|n| entry(&slow, n)).collect();
    produce(&settings, 0, &values);

    let mut feed = ChainerFeed::start(&settings, "chainer").unwrap();
    let mut consumers = assigned(&mut feed, 2).await;
    // Give the dispatcher time to fill partition 0's channel; nobody reads it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later: Vec<Vec<u8>> = (0..20).map(|n| entry(&fast, n)).collect();
    produce(&settings, 1, &later);
    let got = take(&mut consumers[1], 20, Duration::from_secs(10)).await;
    let expected: Vec<String> = (0..20).map(|n| format!("{fast}-{n}")).collect();
    assert_eq!(got, expected, "the other partition is not held up");

    // The slow partition, read at last: every entry once, in order.
    let got = take(&mut consumers[0], backlog as usize, Duration::from_secs(20)).await;
    let expected: Vec<String> = (0..backlog).map(|n| format!("{slow}-{n}")).collect();
    assert!(
        got == expected,
        "partition 0 lost, repeated or reordered entries"
    );
    feed.stop().await;
    feed.leave().await;
}
