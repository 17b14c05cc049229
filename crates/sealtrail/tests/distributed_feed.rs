//! Distributed mode's Kafka feed when a partition goes wrong, against the real Kafka and
//! Cassandra (`tests/distributed.sh` starts them) and the real `sealtrail` binary:
//!
//! - a poison entry, written straight to the events topic between good entries, goes to
//!   the dead-letter topic with its partition, offset and reason; the entries around it are
//!   chained in order and the chainer lives on;
//! - a partition whose chainer is slow (the test-only hook `SEALTRAIL_FAULT_SLOW_PARTITION`
//!   of sealtrail-kafka's `fault-injection` feature, on with `integration`) and far behind
//!   delays only itself: the other partition's sync writes keep their latency, and the
//!   chainer keeps polling, so it stays in the group past `max.poll.interval.ms`.
//!
//! Each test has its own topics, group and keyspace.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Api, BIN, assert_chain_ok, event, free_port};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sealtrail_core::partition::partition_for;
use sealtrail_kafka::KafkaSettings;
use sealtrail_kafka::dead_letter::{
    HEADER_REASON, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC,
};
use sealtrail_kafka::producer::KafkaLog;
use sealtrail_log::{IndexedEvent, LogEntry, LogProducer};
use serde_json::Value;

fn brokers() -> String {
    std::env::var("SEALTRAIL_TEST_KAFKA").unwrap_or("127.0.0.1:9092".into())
}

/// One `sealtrail` process.
struct Proc {
    child: Child,
    http: String,
    log_path: PathBuf,
}

impl Proc {
    /// The process's log, without colours.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // CSI: ESC [ parameters final-byte
                chars.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                plain.push(c);
            }
        }
        plain
    }

    fn tail(&self) -> String {
        let text = self.log();
        text.chars()
            .rev()
            .take(6000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    async fn health(&self) -> Option<Value> {
        let r = reqwest::Client::new()
            .get(format!("{}/healthz", self.http))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.json().await.ok()
    }

    /// `/metrics` value of the sample `name` (with its labels), if exported.
    async fn metric(&self, sample: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.http))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway and a chainer on the shared Kafka and Cassandra, under their own names.
struct Deployment {
    name: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    partitions: u32,
}

impl Deployment {
    fn new(test: &str, partitions: u32) -> Deployment {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let name = format!("f_{test}_{}", millis % 100_000_000);
        let env = [
            ("SEALTRAIL_KAFKA_BROKERS", brokers()),
            (
                "SEALTRAIL_SCYLLA_NODES",
                std::env::var("SEALTRAIL_TEST_CASSANDRA").unwrap_or("127.0.0.1:9042".into()),
            ),
            ("SEALTRAIL_KAFKA_TOPIC", format!("{name}-events")),
            ("SEALTRAIL_KAFKA_REPLY_TOPIC", format!("{name}-replies")),
            ("SEALTRAIL_KAFKA_REPLY_PARTITIONS", "1".into()),
            ("SEALTRAIL_KAFKA_GROUP_ID", name.clone()),
            ("SEALTRAIL_KAFKA_SESSION_TIMEOUT", "6000ms".into()),
            ("SEALTRAIL_SCYLLA_KEYSPACE", name.clone()),
            ("SEALTRAIL_SCYLLA_REQUEST_TIMEOUT", "5000ms".into()),
            (
                "RUST_LOG",
                "warn,sealtrail=info,sealtrail_kafka=info".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let deployment = Deployment {
            name,
            dir: tempfile::tempdir().unwrap(),
            env,
            partitions,
        };
        let out = deployment.run(&["migrate", "--partitions", &partitions.to_string()]);
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        deployment
    }

    fn topic(&self) -> String {
        format!("{}-events", self.name)
    }

    fn dead_letter_topic(&self) -> String {
        format!("{}-events-dead-letter", self.name)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    }

    fn create_key(&self, tenant: &str) -> String {
        let out = self.run(&["keys", "create", "--store", "scylla", "--tenant", tenant]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().last().unwrap().trim().to_string()
    }

    /// Starts a `gateway` or a `chainer` and waits until it is healthy (a chainer: until
    /// it holds every partition).
    async fn start(&self, role: &str, extra_env: &[(&str, &str)]) -> Proc {
        let port = free_port();
        let mut args = vec![
            role.to_string(),
            "--http-addr".into(),
            format!("127.0.0.1:{port}"),
        ];
        if role == "gateway" {
            args.extend([
                "--grpc-addr".into(),
                format!("127.0.0.1:{}", free_port()),
                "--gateway-id".into(),
                format!("{}-gw", self.name),
            ]);
        }
        let log_path = self.dir.path().join(format!("{role}.log"));
        let child = Command::new(BIN)
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("spawn sealtrail");
        let mut proc = Proc {
            child,
            http: format!("http://127.0.0.1:{port}"),
            log_path,
        };
        let all: Vec<u64> = (0..self.partitions as u64).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(proc.running(), "{role} exited:\n{}", proc.tail());
            if let Some(health) = proc.health().await {
                let held: Option<Vec<u64>> = health["partitions"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect());
                if role != "chainer" || held.as_ref() == Some(&all) {
                    return proc;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{role} not ready in 60 s:\n{}",
                proc.tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The gateway's own producer, for entries the test writes straight to the topic.
    fn log_producer(&self) -> KafkaLog {
        let settings = KafkaSettings {
            brokers: brokers(),
            topic: self.topic(),
            reply_topic: format!("{}-replies", self.name),
            dead_letter_topic: self.dead_letter_topic(),
            group_id: self.name.clone(),
            session_timeout: Duration::from_secs(6),
            max_poll_interval: Duration::from_secs(300),
            group_instance_id: None,
            producer_linger: Duration::from_millis(1),
        };
        KafkaLog::connect(&settings, &format!("{}-test", self.name)).unwrap()
    }
}

/// A log entry as a gateway publishes it: one event of `tenant`.
fn log_entry(tenant: &str, id: &str) -> LogEntry {
    let event = sealtrail_core::event::validate_event(event(id), 0, || unreachable!()).unwrap();
    LogEntry {
        tenant_id: tenant.into(),
        receipt_id: format!("receipt-{id}"),
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        events: vec![IndexedEvent { index: 0, event }],
        rejected: vec![],
        reply_to: None,
        reply_only: false,
        resent: false,
    }
}

/// Writes `payload` as is to `partition` of `topic`, acknowledged by every in-sync
/// replica; its offset.
async fn produce_raw(topic: &str, partition: u32, key: &[u8], payload: &[u8]) -> i64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("acks", "all")
        .create()
        .unwrap();
    let record = FutureRecord::to(topic)
        .partition(partition as i32)
        .key(key)
        .payload(payload);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(err, _)| err)
        .expect("produced")
        .offset
}

/// A tenant name whose entries go to `partition`.
fn tenant_on(prefix: &str, partition: u32, partitions: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|t| partition_for(t, partitions) == partition)
        .unwrap()
}

/// One message of the dead-letter topic: its headers and value.
struct Letter {
    topic: String,
    partition: String,
    offset: String,
    reason: String,
    payload: Vec<u8>,
}

fn read_dead_letters(topic: &str, count: usize) -> Vec<Letter> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while letters.len() < count && Instant::now() < deadline {
        let Some(Ok(message)) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        letters.push(Letter {
            topic: header(HEADER_SOURCE_TOPIC),
            partition: header(HEADER_SOURCE_PARTITION),
            offset: header(HEADER_SOURCE_OFFSET),
            reason: header(HEADER_REASON),
            payload: message.payload().unwrap_or_default().to_vec(),
        });
    }
    letters
}

/// The group's committed offset of `partition`.
fn committed_offset(group: &str, topic: &str, partition: u32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition as i32);
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    match offsets.elements()[0].offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_entry_goes_to_the_dead_letter_topic_and_the_partition_moves_on() {
    let d = Deployment::new("poison", 2);
    let tenant = "poison-tenant";
    let home = partition_for(tenant, 2);
    let key = d.create_key(tenant);
    let gateway = d.start("gateway", &[]).await;
    let mut chainer = d.start("chainer", &[]).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: gateway.http.clone(),
        key,
    };

    let (s, rec) = api.post("/v1/events?sync=true", &event("before")).await;
    assert_eq!(s, 201, "{rec}");
    // Straight to the topic, in this order: a good entry, bytes that are no entry, an
    // entry of a tenant of the other partition, a good entry.
    let log = d.log_producer();
    log.append(log_entry(tenant, "around-1")).await.unwrap();
    let garbage = b"\x00\x01 this is not a log entry {".to_vec();
    let garbage_at = produce_raw(&d.topic(), home, tenant.as_bytes(), &garbage).await;
    let stranger = tenant_on("stranger", 1 - home, 2);
    let misplaced = serde_json::to_vec(&log_entry(&stranger, "misplaced")).unwrap();
    let misplaced_at = produce_raw(&d.topic(), home, stranger.as_bytes(), &misplaced).await;
    log.append(log_entry(tenant, "around-2")).await.unwrap();
    // A sync write after the poison commits: the partition moved on.
    let (s, rec) = api.post("/v1/events?sync=true", &event("after")).await;
    assert_eq!(s, 201, "{rec}\nchainer:\n{}", chainer.tail());

    let events = assert_chain_ok(&api).await;
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["before", "around-1", "around-2", "after"], "in order");

    let letters = read_dead_letters(&d.dead_letter_topic(), 2);
    assert_eq!(letters.len(), 2, "two dead letters");
    for (letter, (offset, reason, payload)) in letters.iter().zip([
        (garbage_at, "undecodable", &garbage),
        (misplaced_at, "wrong_partition", &misplaced),
    ]) {
        assert_eq!(letter.topic, d.topic());
        assert_eq!(letter.partition, home.to_string());
        assert_eq!(letter.offset, offset.to_string());
        assert_eq!(letter.reason, reason);
        assert_eq!(&letter.payload, payload, "the source bytes, intact");
    }
    for reason in ["undecodable", "wrong_partition"] {
        let sample = format!("sealtrail_dead_letter_total{{reason=\"{reason}\"}}");
        assert_eq!(chainer.metric(&sample).await, Some(1.0), "{sample}");
    }
    let log_text = chainer.log();
    for offset in [garbage_at, misplaced_at] {
        assert!(
            log_text.lines().any(|l| l.contains("ERROR")
                && l.contains("dead-letter")
                && l.contains(&format!("partition={home}"))
                && l.contains(&format!("offset={offset}"))),
            "no error logged for offset {offset}:\n{log_text}"
        );
    }
    // The group's position is past everything, poison included.
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed_offset(&d.name, &d.topic(), home) <= Some(misplaced_at) {
        assert!(
            Instant::now() < deadline,
            "offset not committed past the poison"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        chainer.running(),
        "the chainer lives on:\n{}",
        chainer.tail()
    );
    assert!(chainer.health().await.is_some(), "and is healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_partition_delays_only_itself_and_the_chainer_stays_in_the_group() {
    const SLOW: u32 = 0;
    const FAST: u32 = 1;
    let d = Deployment::new("slow", 2);
    let slow_tenant = tenant_on("slow", SLOW, 2);
    let fast_tenant = tenant_on("fast", FAST, 2);
    let key = d.create_key(&fast_tenant);
    // A backlog on the slow partition, more than a partition's buffer (4096 entries).
    let log = d.log_producer();
    let backlog: Vec<LogEntry> = (0..5000)
        .map(|n| log_entry(&slow_tenant, &format!("backlog-{n}")))
        .collect();
    for chunk in backlog.chunks(1000) {
        let appends = chunk.iter().map(|e| log.append(e.clone()));
        for result in futures::future::join_all(appends).await {
            result.unwrap();
        }
    }
    let gateway = d.start("gateway", &[]).await;
    // The slow partition's chainer takes 15 s per entry: in the old design the dispatcher
    // waited for it, longer than the 8 s poll deadline.
    let mut chainer = d
        .start(
            "chainer",
            &[
                ("SEALTRAIL_FAULT_SLOW_PARTITION", &format!("{SLOW}:15000")),
                ("SEALTRAIL_KAFKA_MAX_POLL_INTERVAL", "8000ms"),
            ],
        )
        .await;
    let api = Api {
        http: reqwest::Client::new(),
        base: gateway.http.clone(),
        key,
    };
    // First, until the chainer has joined the group and holds the fast partition (joining
    // takes a few seconds, and is not what this test measures).
    let joined = Instant::now();
    loop {
        let (status, _) = api
            .post("/v1/events?sync=true", &event("fast-warmup"))
            .await;
        if status == 201 {
            break;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(60),
            "the chainer never served the fast partition"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Sync writes on the other partition for longer than the poll deadline. (The bound on
    // their latency is loose on purpose — this machine also builds and runs other tests;
    // waiting behind the slow partition would cost 15 s per entry, and 504 at 10 s.)
    let started = Instant::now();
    let mut writes = Vec::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let at = Instant::now();
        let (status, _) = api
            .post("/v1/events?sync=true", &event(&format!("fast-{n}")))
            .await;
        writes.push((status, at.elapsed()));
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let log_text = chainer.log();
    let left_group = log_text
        .lines()
        .filter(|l| l.contains("revoked") || l.contains("poll interval"))
        .collect::<Vec<_>>();
    let slowest = writes.iter().map(|&(_, t)| t).max().unwrap();
    let failed: Vec<_> = writes.iter().filter(|&&(s, _)| s != 201).collect();
    assert!(
        left_group.is_empty()
            && chainer.running()
            && failed.is_empty()
            && slowest < Duration::from_secs(5),
        "{} sync writes on the fast partition, {} failed ({failed:?}), slowest {slowest:?}; \
         chainer running: {}; left the group:\n{}",
        writes.len(),
        failed.len(),
        chainer.running(),
        left_group.join("\n")
    );
    assert!(writes.len() >= 20, "only {} writes in 20 s", writes.len());
    let events = assert_chain_ok(&api).await;
    assert_eq!(
        events.len(),
        writes.len() + 1,
        "the timed writes and the warm-up"
    );
    assert!(
        log_text.contains("partition paused"),
        "the slow partition was paused:\n{}",
        chainer.tail()
    );
    let health = chainer.health().await.expect("healthy");
    assert_eq!(health["partitions"], serde_json::json!([0, 1]), "{health}");
}
