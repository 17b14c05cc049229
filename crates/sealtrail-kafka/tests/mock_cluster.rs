//! The Kafka log on librdkafka's in-process mock cluster: fast checks of the producer,
//! the group feed and the reply channel, with no broker. The distributed suite runs the
//! same code against a real Kafka.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use sealtrail_core::event::validate_event;
use sealtrail_core::partition::partition_for;
use sealtrail_core::receipt::{Receipt, ReceiptStatus};
use sealtrail_kafka::KafkaSettings;
use sealtrail_kafka::consumer::{ChainerFeed, FeedEvent};
use sealtrail_kafka::producer::KafkaLog;
use sealtrail_kafka::replies::{KafkaReplySink, ReplyListener};
use sealtrail_log::{
    Correlator, Durability, EntryOutcome, IndexedEvent, LogEntry, LogProducer, PartitionConsumer,
    ReplySink,
};

fn settings(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> KafkaSettings {
    KafkaSettings {
        brokers: cluster.bootstrap_servers(),
        topic: "events".into(),
        reply_topic: "replies".into(),
        dead_letter_topic: "events-dead-letter".into(),
        group_id: "chainers".into(),
        session_timeout: Duration::from_secs(6),
        max_poll_interval: Duration::from_secs(300),
        group_instance_id: None,
        producer_linger: Duration::from_millis(1),
    }
}

fn entry(tenant: &str, n: u32) -> LogEntry {
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
    LogEntry {
        tenant_id: tenant.into(),
        receipt_id: format!("r-{tenant}-{n}"),
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        events: vec![IndexedEvent { index: 0, event }],
        rejected: vec![],
        reply_to: None,
        reply_only: false,
        resent: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_reach_their_tenants_partition_in_order() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 4, 1).unwrap();
    cluster.create_topic("replies", 2, 1).unwrap();
    cluster.create_topic("events-dead-letter", 1, 1).unwrap();
    let settings = settings(&cluster);

    let log = KafkaLog::connect(&settings, "test-gateway").unwrap();
    assert_eq!(log.partitions(), 4);
    let tenants = ["acme", "globex", "initech", "umbrella", "hooli"];
    for n in 0..20 {
        for t in tenants {
            assert_eq!(log.append(entry(t, n)).await.unwrap(), Durability::Durable);
        }
    }

    let mut feed = ChainerFeed::start(&settings, "test-chainer").unwrap();
    let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut consumers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while consumers.len() < 4 {
        let event = tokio::time::timeout_at(deadline, feed.next())
            .await
            .unwrap()
            .unwrap();
        if let FeedEvent::Assigned(c) = event {
            consumers.push(c);
        }
    }
    for consumer in &mut consumers {
        let partition = consumer.partition();
        let expected: usize = tenants
            .iter()
            .filter(|t| partition_for(t, 4) == partition)
            .count()
            * 20;
        let mut got = 0;
        while got < expected {
            let batch = tokio::time::timeout(Duration::from_secs(20), consumer.poll(7))
                .await
                .expect("entries arrive")
                .expect("not closed");
            assert!(batch.len() <= 7);
            for (_, e) in &batch {
                assert_eq!(partition_for(&e.tenant_id, 4), partition, "right partition");
                seen.entry(e.tenant_id.clone())
                    .or_default()
                    .push(e.receipt_id.clone());
            }
            got += batch.len();
            consumer.commit(batch.last().unwrap().0).await.unwrap();
        }
    }
    for t in tenants {
        let expected: Vec<String> = (0..20).map(|n| format!("r-{t}-{n}")).collect();
        assert_eq!(seen[t], expected, "per-tenant order is kept");
    }
    feed.stop().await;
    feed.leave().await;
}

/// `kafka.producer_linger` reaches librdkafka, also below a millisecond (it refuses a
/// value it cannot parse when the producer is made), and entries are still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fractional_producer_linger_is_taken_and_entries_are_delivered() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 2, 1).unwrap();
    cluster.create_topic("replies", 1, 1).unwrap();
    cluster.create_topic("events-dead-letter", 1, 1).unwrap();
    for linger in [Duration::from_micros(500), Duration::from_millis(20)] {
        let settings = KafkaSettings {
            producer_linger: linger,
            ..settings(&cluster)
        };
        let log = KafkaLog::connect(&settings, "test-gateway").unwrap();
        for n in 0..3 {
            assert_eq!(
                log.append(entry("acme", n)).await.unwrap(),
                Durability::Durable,
                "linger {linger:?}"
            );
        }
    }
}

/// Gateways `gw-a` and `gw-b` reading their reply partitions (3 of them), and a chainer's
/// reply sink. Keep the listeners alive while the test waits.
fn two_gateways(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> (
    Arc<Correlator>,
    Arc<Correlator>,
    KafkaReplySink,
    [ReplyListener; 2],
) {
    cluster.create_topic("events", 1, 1).unwrap();
    cluster.create_topic("replies", 3, 1).unwrap();
    let settings = settings(cluster);
    let gw_a = Arc::new(Correlator::new("gw-a"));
    let gw_b = Arc::new(Correlator::new("gw-b"));
    let la = ReplyListener::start(&settings, "gw-a", gw_a.clone()).unwrap();
    let lb = ReplyListener::start(&settings, "gw-b", gw_b.clone()).unwrap();
    let sink = KafkaReplySink::connect(&settings, "chainer").unwrap();
    (gw_a, gw_b, sink, [la, lb])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_the_gateway_that_waits() {
    let cluster = MockCluster::new(1).unwrap();
    let (gw_a, gw_b, sink, _listeners) = two_gateways(&cluster);

    let wa = gw_a.register();
    let wb = gw_b.register();
    let receipt = |id: &str| Receipt {
        receipt_id: id.into(),
        status: ReceiptStatus::Committed,
        accepted: 0,
        rejected: 0,
        ids: vec![],
        errors: vec![],
        error_message: None,
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        committed_at: None,
    };
    sink.send(
        &wb.address,
        EntryOutcome::Committed {
            receipt: receipt("for-b"),
            records: Default::default(),
        },
    )
    .await;
    sink.send(
        &wa.address,
        EntryOutcome::Committed {
            receipt: receipt("for-a"),
            records: Default::default(),
        },
    )
    .await;
    sink.flush();
    let got_a = wa.wait(Duration::from_secs(20)).await.expect("a's reply");
    let got_b = wb.wait(Duration::from_secs(20)).await.expect("b's reply");
    match (got_a, got_b) {
        (
            EntryOutcome::Committed { receipt: ra, .. },
            EntryOutcome::Committed { receipt: rb, .. },
        ) => {
            assert_eq!(ra.receipt_id, "for-a");
            assert_eq!(rb.receipt_id, "for-b");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batchs_replies_reach_each_waiting_gateway() {
    let cluster = MockCluster::new(1).unwrap();
    let (gw_a, gw_b, sink, _listeners) = two_gateways(&cluster);

    // Interleaved waiters of two gateways, as one chainer batch answers them.
    let waiters: Vec<_> = (0..7)
        .map(|i| {
            if i % 3 == 1 {
                gw_b.register()
            } else {
                gw_a.register()
            }
        })
        .collect();
    let replies = waiters
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let outcome = EntryOutcome::Unavailable {
                message: format!("answer {i}"),
                no_space: false,
            };
            (w.address.clone(), outcome)
        })
        .collect();
    sink.send_all(replies).await;
    sink.flush();
    for (i, w) in waiters.into_iter().enumerate() {
        match w.wait(Duration::from_secs(20)).await {
            Some(EntryOutcome::Unavailable { message, .. }) => {
                assert_eq!(message, format!("answer {i}"))
            }
            other => panic!("waiter {i}: unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_says_to_migrate() {
    let cluster = MockCluster::new(1).unwrap();
    let settings = settings(&cluster);
    let err = KafkaLog::connect(&settings, "gw").err().expect("refused");
    assert!(
        err.to_string().contains("migrate") || err.to_string().contains("not found"),
        "{err}"
    );
}

/// A request that goes away while its entry is with librdkafka (the client disconnected)
/// leaves the partition counted in flight until librdkafka reports the delivery, and no
/// longer: the partition shows stalled while the broker is slow, and healthy once the
/// delivery is acknowledged, though no request is left to see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_append_is_counted_until_its_delivery_and_no_longer() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 1, 1).unwrap();
    let settings = settings(&cluster);
    let log = KafkaLog::connect(&settings, "test-gateway").unwrap();
    log.append(entry("acme", 0)).await.unwrap();

    cluster
        .broker_round_trip_time(1, Duration::from_millis(2500))
        .unwrap();
    let dropped = tokio::time::timeout(Duration::from_millis(100), log.append(entry("acme", 1)));
    assert!(dropped.await.is_err(), "the slow append is dropped");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stalled = log.stalled_partitions(Duration::from_millis(500));
    assert_eq!(
        stalled.len(),
        1,
        "in flight with a slow broker: {stalled:?}"
    );
    assert!(
        stalled[0].reason.contains("acknowledged none of 1"),
        "{stalled:?}"
    );

    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stalled = log.stalled_partitions(Duration::from_millis(500));
        if stalled.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery was acknowledged, yet the partition shows stalled: {stalled:?}"
        );
    }
    // And stays so: nothing is left counted in flight.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(log.stalled_partitions(Duration::from_millis(500)), vec![]);
}

/// An append waiting in the queue of a producer that is replaced (here its broker is down;
/// with librdkafka #5430 a partition stays without a leader in a stuck producer's cache,
/// which the mock cluster cannot play: it crashes on a produce to a leaderless partition)
/// moves to the new producer and is acknowledged once the broker is back, instead of
/// failing (purged) or waiting out `message.timeout.ms` on the old one. Meanwhile the partition counts as
/// unacknowledged, which is what gets a stuck producer replaced. It arrives marked
/// `resent`, so the chainer looks up its ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_queued_on_a_replaced_producer_is_delivered_by_the_new_one() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 1, 1).unwrap();
    cluster.create_topic("replies", 1, 1).unwrap();
    cluster.create_topic("events-dead-letter", 1, 1).unwrap();
    let settings = settings(&cluster);
    let log = Arc::new(KafkaLog::connect(&settings, "test-gateway").unwrap());
    log.append(entry("acme", 0)).await.unwrap();
    assert_eq!(
        log.unacknowledged_partitions(Duration::ZERO),
        Vec::<u32>::new()
    );

    cluster.broker_down(1).unwrap();
    let appending = {
        let log = log.clone();
        tokio::spawn(async move { log.append(entry("acme", 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!appending.is_finished(), "broker down: the append waits");
    assert_eq!(
        log.unacknowledged_partitions(Duration::from_millis(1000)),
        vec![0]
    );

    let replacing = log.clone();
    tokio::task::spawn_blocking(move || replacing.replace_producer())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !appending.is_finished(),
        "purged from the old producer, the append waits on the new one: {:?}",
        if appending.is_finished() {
            Some(appending.await)
        } else {
            None
        }
    );
    cluster.broker_up(1).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), appending)
        .await
        .expect("delivered well within message.timeout.ms (30 s)")
        .unwrap();
    assert_eq!(outcome.unwrap(), Durability::Durable);
    assert_eq!(
        log.unacknowledged_partitions(Duration::ZERO),
        Vec::<u32>::new()
    );

    // The handed-over entry is marked `resent` (its first send's outcome may be unknown:
    // the chainer then looks up its ids); the one sent normally is not.
    let mut feed = ChainerFeed::start(&settings, "test-chainer").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut consumer = loop {
        let event = tokio::time::timeout_at(deadline, feed.next())
            .await
            .unwrap()
            .unwrap();
        if let FeedEvent::Assigned(c) = event {
            break c;
        }
    };
    let mut got = Vec::new();
    while got.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(20), consumer.poll(10))
            .await
            .expect("entries arrive")
            .expect("not closed");
        got.extend(batch.into_iter().map(|(_, e)| (e.receipt_id, e.resent)));
    }
    assert_eq!(
        got,
        vec![
            ("r-acme-0".to_string(), false),
            ("r-acme-1".to_string(), true)
        ]
    );
    drop(consumer);
    feed.stop().await;
    feed.leave().await;
}
