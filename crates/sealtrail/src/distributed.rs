//! Distributed mode: `sealtrail gateway`, `sealtrail chainer` and `sealtrail migrate`, the
//! same gateway, chainer and store code as `serve`, on Kafka and Scylla/Cassandra.
//!
//! The chainer process is one member of the chainers' consumer group. Each partition the
//! group assigns it is first *claimed* in the store (a new epoch, which fences whoever held
//! it before), then chained by its own task until the partition is revoked. A chainer task
//! that stops while its partition is still assigned here (fenced by a newer claim, or
//! failed) is fatal for the process: the partition would otherwise stall. The process exits
//! non-zero and its supervisor restarts it; its partitions are replayed from the last
//! committed offsets, idempotently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use sealtrail_api::telemetry::NotReady;
use sealtrail_api::{ApiConfig, Service};
use sealtrail_chainer::{Chainer, ChainerConfig, ChainerError, CommitSignal, Health};
use sealtrail_core::backoff::Backoff;
use sealtrail_kafka::KafkaSettings;
use sealtrail_kafka::consumer::{ChainerFeed, FeedEvent, FeedStatus};
use sealtrail_kafka::producer::KafkaLog;
use sealtrail_kafka::replies::{KafkaReplySink, ReplyListener};
use sealtrail_log::{Correlator, LogProducer, PartitionConsumer};
use sealtrail_scylla::{Consistency, Replication, ScyllaSettings, ScyllaStore};
use sealtrail_store::Store;

use crate::config::{Config, ScyllaConsistency};
use crate::serve::{listen_both, runtime, serve_apis, wait_for_signal};

pub fn kafka_settings(config: &Config) -> KafkaSettings {
    KafkaSettings {
        brokers: config.kafka.brokers.clone(),
        topic: config.kafka.topic.clone(),
        reply_topic: config.kafka.reply_topic.clone(),
        dead_letter_topic: config.dead_letter_topic(),
        group_id: config.kafka.group_id.clone(),
        session_timeout: config.kafka.session_timeout,
        max_poll_interval: config.kafka.max_poll_interval,
        group_instance_id: Some(config.kafka.group_instance_id.clone()).filter(|id| !id.is_empty()),
        producer_linger: config.kafka.producer_linger,
    }
}

pub fn scylla_settings(config: &Config) -> ScyllaSettings {
    ScyllaSettings {
        nodes: config
            .scylla
            .nodes
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        keyspace: config.scylla.keyspace.clone(),
        consistency: match config.scylla.consistency {
            ScyllaConsistency::LocalQuorum => Consistency::LocalQuorum,
            ScyllaConsistency::Quorum => Consistency::Quorum,
            ScyllaConsistency::One => Consistency::One,
            ScyllaConsistency::LocalOne => Consistency::LocalOne,
            ScyllaConsistency::All => Consistency::All,
        },
        request_timeout: config.scylla.request_timeout,
    }
}

pub async fn connect_store(config: &Config) -> anyhow::Result<ScyllaStore> {
    let settings = scylla_settings(config);
    ScyllaStore::connect(&settings).await.with_context(|| {
        format!(
            "connecting to Scylla/Cassandra at {} (keyspace {})",
            config.scylla.nodes, config.scylla.keyspace
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("os randomness");
    hex::encode(bytes)
}

// ---------------------------------------------------------------------------------- migrate

pub fn migrate(config: Config, partitions: u32) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let kafka = kafka_settings(&config);
        eprintln!(
            "kafka {}: topics {} ({partitions} partitions), {} ({} partitions) and {} (dead letters), replication {}",
            config.kafka.brokers,
            kafka.topic,
            kafka.reply_topic,
            config.kafka.reply_partitions,
            kafka.dead_letter_topic,
            config.kafka.replication_factor
        );
        let topics = sealtrail_kafka::admin::ensure_topics(
            &kafka,
            partitions,
            config.kafka.reply_partitions,
            config.kafka.replication_factor,
        )
        .await
        .with_context(|| format!("setting up the Kafka topics on {}", config.kafka.brokers))?;
        for (topic, state) in topics {
            eprintln!("  {topic}: {state:?}");
        }
        let settings = scylla_settings(&config);
        eprintln!(
            "scylla {}: keyspace {} (replication {})",
            config.scylla.nodes, config.scylla.keyspace, config.scylla.replication_factor
        );
        let session = sealtrail_scylla::connect(&settings).await?;
        sealtrail_scylla::migrate(
            &session,
            &config.scylla.keyspace,
            &Replication::Simple(config.scylla.replication_factor),
            partitions,
        )
        .await
        .context("migrating the CQL schema")?;
        if config.log.key_file.is_none() {
            // No key file configured: keep a generated signing key in the keyspace, so
            // every gateway signs checkpoints with the same key.
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let fresh = sealtrail_core::note::NoteSigner::from_seed(&config.log.origin, seed)?;
            let stored = sealtrail_scylla::meta_set_once(
                &session,
                &config.scylla.keyspace,
                LOG_SIGNER_META,
                &fresh.to_private_string(),
            )
            .await?;
            let signer = crate::serve::parse_log_key(&stored, &config.log.origin)?;
            eprintln!(
                "log key (kept in the keyspace; set log.key_file to keep it out of the database): {}",
                signer.verifier()
            );
        }
        if config.stream.key_file.is_none() {
            // The key that seals log-stream secrets: gateways seal, chainers open.
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            sealtrail_scylla::meta_set_once(
                &session,
                &config.scylla.keyspace,
                STREAM_KEY_META,
                &hex::encode(key),
            )
            .await?;
        }
        eprintln!("migrated: {partitions} partitions; start gateways and chainers");
        Ok(())
    })
}

// ---------------------------------------------------------------------------------- gateway

/// `meta` key of the signing key `migrate` generates when no `log.key_file` is configured.
const LOG_SIGNER_META: &str = "log_signer";

/// `meta` key of the log-stream key `migrate` generates when no `stream.key_file` is set.
const STREAM_KEY_META: &str = "stream_key";

/// The key that seals log-stream secrets, shared by every gateway and chainer:
/// `stream.key_file` if configured, else the one kept in the keyspace (made by `migrate`,
/// or by the first process that needs it).
async fn stream_key(config: &Config, store: &ScyllaStore) -> anyhow::Result<[u8; 32]> {
    if let Some(key) = config.stream.configured_key()? {
        return Ok(key);
    }
    let text = match store.meta(STREAM_KEY_META).await? {
        Some(text) => text,
        // A keyspace migrated before log streams: the first process makes the key, the
        // others read it (a conditional insert).
        None => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            store
                .meta_set_once(STREAM_KEY_META, &hex::encode(key))
                .await?
        }
    };
    crate::config::parse_stream_key(text.as_bytes())
        .ok_or_else(|| anyhow::anyhow!("{}.meta holds no stream key", config.scylla.keyspace))
}

/// The log streams of a distributed process (a gateway manages destinations; a chainer
/// delivers them).
async fn streams(
    config: &Config,
    store: &ScyllaStore,
) -> anyhow::Result<Arc<sealtrail_api::streams::Streams>> {
    let key = stream_key(config, store).await?;
    Ok(Arc::new(
        sealtrail_api::streams::Streams::new(config.stream.settings()?, key)
            .map_err(|e| anyhow::anyhow!(e))?,
    ))
}

/// The checkpoint signer every gateway shares: `log.key_file` if configured, else the key
/// `migrate` kept in the keyspace.
async fn log_signer(
    config: &Config,
    store: &ScyllaStore,
) -> anyhow::Result<sealtrail_core::note::NoteSigner> {
    if let Some(path) = &config.log.key_file {
        return crate::serve::load_log_key(path, &config.log.origin);
    }
    let text = store
        .meta(LOG_SIGNER_META)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no log key: set log.key_file, or run `sealtrail migrate` (it keeps one in the keyspace)"
            )
        })?;
    crate::serve::parse_log_key(&text, &config.log.origin)
}

pub fn gateway(config: Config) -> anyhow::Result<()> {
    runtime(&config)?.block_on(run_gateway(config))
}

async fn run_gateway(config: Config) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let gateway_id = if config.kafka.gateway_id.is_empty() {
        format!("{}-{}", hostname(), random_suffix())
    } else {
        config.kafka.gateway_id.clone()
    };
    let store = connect_store(&config).await?;
    let kafka = kafka_settings(&config);
    let log = KafkaLog::connect(&kafka, &gateway_id)
        .with_context(|| format!("connecting to Kafka at {}", config.kafka.brokers))?;
    anyhow::ensure!(
        log.partitions() == store.log_partitions(),
        "topic {} has {} partitions but keyspace {} was migrated for {}; run `sealtrail migrate` with one count",
        kafka.topic,
        log.partitions(),
        config.scylla.keyspace,
        store.log_partitions()
    );
    let kafka_log = Arc::new(log);
    let correlator = Arc::new(Correlator::new(gateway_id.clone()));
    let replies = Arc::new(
        ReplyListener::start(&kafka, &gateway_id, correlator.clone())
            .context("reading the reply topic")?,
    );
    let readiness = watch_readiness(kafka_log.clone(), store.clone(), replies.clone());
    let log: Arc<dyn LogProducer> = kafka_log;

    let signer = log_signer(&config, &store).await?;
    let streams = streams(&config, &store).await?;
    let store: Arc<dyn sealtrail_store::Store> = Arc::new(store);
    let tlog = sealtrail_api::tlog::TransparencyLog::new(signer, config.log.checkpoint_interval)
        .with_witnesses(config.witness_configs()?, store.clone());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let service = Arc::new(Service {
        log: log.clone(),
        correlator,
        tlog: Some(Arc::new(tlog)),
        store,
        commits: None,
        health: None,
        keys: sealtrail_api::auth::KeyCache::with_quotas(config.quotas())
            .with_ttl(config.api.key_cache_ttl)
            .with_grace(config.api.key_cache_grace),
        config: ApiConfig {
            commit_timeout: config.api.commit_timeout,
            shutdown_grace: config.api.shutdown_grace,
            stream_poll_interval: config.api.stream_poll_interval,
            body_read_timeout: config.api.body_read_timeout,
            max_header_bytes: config.api.max_header_size.as_u64() as usize,
            retention: config.retention(),
            // Kafka is durable: an async call is answered once it has the entry. Its
            // receipt is reported queued until a chainer commits it.
            acknowledge: sealtrail_api::Acknowledge::OnLogAppend {
                pending_window: Duration::from_secs(15 * 60),
            },
        },
        metrics: Some(metrics),
        shutdown: shutdown_rx,
        verified: sealtrail_api::verified::Verified::new(config.api.max_full_verifications),
        readiness: Some(readiness),
        // Destinations are managed here and delivered by the chainers.
        streams: Some(streams),
        request_metrics: Default::default(),
    });
    sealtrail_api::tlog::spawn_witness_feeder(&service);
    // Every gateway runs a pruner; the one holding the retention lease prunes.
    tokio::spawn(sealtrail_api::retention::run_pruner(service.clone()));
    let tls = config.tls()?;
    let (listener, grpc_listener) = listen_both(&config)?;
    let (http, grpc) = crate::serve::schemes(tls.as_deref());
    eprintln!(
        "sealtrail gateway {gateway_id} listening on {http}://{} and {grpc}://{} (kafka {}, scylla {})",
        listener.local_addr()?,
        grpc_listener.local_addr()?,
        config.kafka.brokers,
        config.scylla.nodes
    );
    let shutdown = async move {
        wait_for_signal().await;
        eprintln!("shutting down: finishing in-flight requests");
        let _ = shutdown_tx.send(true);
    };
    serve_apis(&config, tls, listener, grpc_listener, service, shutdown).await?;
    log.close();
    eprintln!("stopped cleanly");
    Ok(())
}

/// How long appends to a partition may wait with none acknowledged before the partition
/// counts as stalled.
const KAFKA_STUCK_AFTER: Duration = Duration::from_secs(3);
/// Appends to a partition waiting this long with no acknowledgement get the brokers asked
/// (through a fresh client) whether they name the partition's leader ...
const PRODUCER_UNACKED_AFTER: Duration = Duration::from_secs(2);
/// ... and the producer is replaced once they have for this long while the appends kept
/// waiting: a healthy producer delivers within milliseconds of a broker's return; one
/// hit by librdkafka #5430 never does. At most once per [`PRODUCER_REPLACE_COOLDOWN`].
/// (A clock that started only once the partition showed in readiness, after 3 s, and ran
/// 5 s more replaced a stuck producer ~9.5 s after a freeze ended.)
const LEADERS_KNOWN_FOR: Duration = Duration::from_secs(1);
const PRODUCER_REPLACE_COOLDOWN: Duration = Duration::from_secs(5);
/// How often the gateway checks its producer (the check itself costs nothing while every
/// partition is acknowledged).
const PRODUCER_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Replaces the gateway's Kafka producer when appends to a partition stay unacknowledged
/// although the brokers serve it: the producer, not Kafka, is stuck (librdkafka #5430).
/// `leaders_known_since` and `last_replaced` are the loop's memory.
async fn replace_stuck_producer(
    log: &Arc<KafkaLog>,
    leaders_known_since: &mut Option<std::time::Instant>,
    last_replaced: &mut Option<std::time::Instant>,
) {
    let now = std::time::Instant::now();
    let stuck = log.unacknowledged_partitions(PRODUCER_UNACKED_AFTER);
    if stuck.is_empty()
        || last_replaced.is_some_and(|t| now.duration_since(t) < PRODUCER_REPLACE_COOLDOWN)
    {
        *leaders_known_since = None;
        return;
    }
    let probe = log.clone();
    let partitions = stuck.clone();
    let leaders = tokio::task::spawn_blocking(move || probe.leaders_known(&partitions))
        .await
        .unwrap_or(false);
    tracing::debug!(partitions = ?stuck, leaders, "kafka appends unacknowledged past the producer check threshold");
    if !leaders {
        *leaders_known_since = None;
        return;
    }
    let since = *leaders_known_since.get_or_insert(now);
    if now.duration_since(since) < LEADERS_KNOWN_FOR {
        return;
    }
    tracing::warn!(
        partitions = ?stuck,
        "kafka appends to these partitions have waited over {} s for an acknowledgement although the brokers have named their leaders for {} s: replacing the producer",
        PRODUCER_UNACKED_AFTER.as_secs(),
        LEADERS_KNOWN_FOR.as_secs()
    );
    let replacing = log.clone();
    match tokio::task::spawn_blocking(move || replacing.replace_producer()).await {
        Ok(Ok(())) => tracing::warn!("kafka producer replaced"),
        Ok(Err(err)) => tracing::error!(%err, "cannot replace the kafka producer"),
        Err(err) => tracing::error!(%err, "cannot replace the kafka producer"),
    }
    *last_replaced = Some(now);
    *leaders_known_since = None;
}

/// The gateway's readiness probe, once a second: partitions Kafka is not acknowledging
/// ([`KafkaLog::stalled_partitions`]), a reply channel that does not keep up
/// ([`ReplyListener::stalled_for`]: sync requests would time out), whether the store
/// answers (2 s at most), and which partitions have no live chainer (heartbeats,
/// [`ScyllaStore::owners`]). The same facts go to `/metrics`: `sealtrail_ready`,
/// `sealtrail_store_reachable`, `sealtrail_kafka_partition_stalled{partition}`,
/// `sealtrail_kafka_replies_stalled`, `sealtrail_partition_owned{partition}`.
fn watch_readiness(
    log: Arc<KafkaLog>,
    store: ScyllaStore,
    replies: Arc<ReplyListener>,
) -> tokio::sync::watch::Receiver<Vec<NotReady>> {
    let (tx, rx) = tokio::sync::watch::channel(vec![NotReady {
        component: "gateway",
        partition: None,
        reason: "starting: the first readiness check has not finished".into(),
    }]);
    // The producer check asks the brokers through a fresh client (up to 2 s while they
    // do not answer): a loop of its own, so readiness is not held up by it. Every 250 ms,
    // so that a stuck producer is replaced about a second after the brokers are back.
    let watched = log.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRODUCER_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut leaders_known_since, mut last_replaced) = (None, None);
        loop {
            tick.tick().await;
            replace_stuck_producer(&watched, &mut leaders_known_since, &mut last_replaced).await;
        }
    });
    tokio::spawn(async move {
        let partitions = store.log_partitions();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut problems = Vec::new();
            let stalled = log.stalled_partitions(KAFKA_STUCK_AFTER);
            if !stalled.is_empty() {
                tracing::debug!(?stalled, "kafka partitions stalled");
            }
            for p in 0..partitions {
                let stall = stalled.iter().find(|s| s.partition == p);
                metrics::gauge!("sealtrail_kafka_partition_stalled", "partition" => p.to_string())
                    .set(f64::from(u8::from(stall.is_some())));
                if let Some(stall) = stall {
                    problems.push(NotReady {
                        component: "kafka",
                        partition: Some(p),
                        reason: stall.reason.clone(),
                    });
                }
            }
            let replies_stalled = replies
                .stalled_for()
                .filter(|d| *d >= Duration::from_secs(2));
            metrics::gauge!("sealtrail_kafka_replies_stalled")
                .set(f64::from(u8::from(replies_stalled.is_some())));
            if let Some(stalled) = replies_stalled {
                problems.push(NotReady {
                    component: "replies",
                    partition: None,
                    reason: format!(
                        "the reply consumer has not kept up with its partition for {} s: sync requests wait for their commits in vain (it is replaced after 3 s)",
                        stalled.as_secs()
                    ),
                });
            }
            let owners = tokio::time::timeout(Duration::from_secs(2), store.owners()).await;
            let reachable = matches!(owners, Ok(Ok(_)));
            metrics::gauge!("sealtrail_store_reachable").set(f64::from(u8::from(reachable)));
            match owners {
                Ok(Ok(owners)) => {
                    for p in 0..partitions {
                        let owned = owners.contains_key(&p);
                        metrics::gauge!("sealtrail_partition_owned", "partition" => p.to_string())
                            .set(f64::from(u8::from(owned)));
                        if !owned {
                            problems.push(NotReady {
                                component: "chainer",
                                partition: Some(p),
                                reason: format!(
                                    "no chainer holds this partition (no heartbeat for {} s): its writes wait for one",
                                    sealtrail_scylla::beats::BEAT_TTL_SECS
                                ),
                            });
                        }
                    }
                }
                Ok(Err(err)) => problems.push(NotReady {
                    component: "scylla",
                    partition: None,
                    reason: format!("the store does not answer: {err}"),
                }),
                Err(_) => problems.push(NotReady {
                    component: "scylla",
                    partition: None,
                    reason: "the store did not answer within 2 s".into(),
                }),
            }
            metrics::gauge!("sealtrail_ready").set(f64::from(u8::from(problems.is_empty())));
            if tx.send(problems).is_err() {
                return;
            }
        }
    });
    rx
}

/// Writes this chainer's heartbeats once a second for the partitions it holds, so
/// gateways can tell a partition without an owner ([`ScyllaStore::beat`]).
fn beat_for_partitions(store: ScyllaStore, owner: String, state: ChainerState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let held = state.held_partitions();
            if held.is_empty() {
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(2), store.beat(&held, &owner)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!(%err, "heartbeat not written"),
                Err(_) => tracing::debug!("heartbeat timed out"),
            }
        }
    });
}

// ---------------------------------------------------------------------------------- chainer

pub fn chainer(config: Config) -> anyhow::Result<()> {
    runtime(&config)?.block_on(run_chainer(config))
}

#[derive(Clone)]
struct ChainerState {
    health: Health,
    /// Partitions assigned here, each with the generation of its assignment.
    assigned: Arc<Mutex<HashMap<u32, u64>>>,
    /// The group consumer's last report (refreshed each second).
    feed: Arc<Mutex<FeedStatus>>,
    metrics: PrometheusHandle,
}

/// How long a chainer's group consumer may stay out of the group (coordinator lost, or
/// not rejoined) before it is replaced by a new one: twice the session timeout plus this.
/// After a Kafka freeze longer than the session, librdkafka's consumer was seen to stay
/// out of the group for good (librdkafka #2944, #3396); one that rejoins is back within
/// about a session timeout of the resume (the group waits for the old member's session,
/// refreshed by a heartbeat that was queued during the freeze). A shorter limit (the
/// session plus 3 s) was tried: it replaced consumers that were about to join, whose
/// successors then waited for the group's next round, and made the stall worse as often
/// as better.
const OUT_OF_GROUP_GRACE: Duration = Duration::from_secs(3);

/// A group consumer out of the group this long, waiting on its coordinator
/// ([`FeedStatus::awaits_coordinator`](sealtrail_kafka::consumer::FeedStatus::awaits_coordinator)),
/// has the coordinator probed through a fresh client once a second.
const COORDINATOR_PROBE_AFTER: Duration = Duration::from_secs(2);

/// ... and is replaced once the probes have found the coordinator answering for this long
/// while it kept waiting. In the freeze runs, most of the consumers that were replaced
/// only after the out-of-group limit (15 s) sat in `query-coord` /
/// `wait-incr-unassign-to-complete` while the broker had long answered everyone else; a
/// consumer that recovers by itself finds its coordinator within about a second of the
/// broker's return (`reconnect.backoff.max.ms` is 1 s).
const COORDINATOR_ANSWERS_FOR: Duration = Duration::from_secs(2);

/// The chainer's judgement of a group consumer that waits on its coordinator: fed each
/// second with librdkafka's latest statistics and the answers of fresh-client probes, it
/// says when the consumer is stuck in librdkafka rather than waiting on Kafka.
struct CoordinatorWatch {
    /// Since when the probes have found the coordinator answering while this consumer kept
    /// waiting (the start of the first such probe).
    answers_since: Option<std::time::Instant>,
    /// The last assignment change seen: librdkafka's statistics (once a second) may still
    /// describe the member as it was before it.
    last_rebalance: std::time::Instant,
}

impl CoordinatorWatch {
    fn new(now: std::time::Instant) -> Self {
        Self {
            answers_since: None,
            last_rebalance: now,
        }
    }

    fn rebalanced(&mut self, now: std::time::Instant) {
        self.last_rebalance = now;
    }

    /// Whether the consumer, out of the group for `out`, waits on its coordinator by
    /// statistics reported after the last assignment change: the only case worth a probe.
    /// Otherwise the probes' record is dropped.
    fn waiting(&mut self, status: &FeedStatus, out: Option<Duration>) -> bool {
        let waiting = out.is_some_and(|out| out >= COORDINATOR_PROBE_AFTER)
            && status
                .reported_at
                .is_some_and(|at| at > self.last_rebalance)
            && status.awaits_coordinator();
        if !waiting {
            self.answers_since = None;
        }
        waiting
    }

    /// A probe asked at `asked` found the coordinator answering, or not (which starts the
    /// count over).
    fn probed(&mut self, asked: std::time::Instant, answered: bool) {
        if answered {
            self.answers_since.get_or_insert(asked);
        } else {
            self.answers_since = None;
        }
    }

    /// Whether the coordinator has answered for [`COORDINATOR_ANSWERS_FOR`] while the
    /// consumer kept waiting: replace it.
    fn stuck(&self, now: std::time::Instant) -> bool {
        self.answers_since
            .is_some_and(|since| now.duration_since(since) >= COORDINATOR_ANSWERS_FOR)
    }
}

/// A partition held by a group consumer that is in the group and steady, whose fetcher
/// has not been `active` for this long, is stuck in librdkafka: the consumer is replaced.
/// Seen after a Kafka freeze that outlasted the session: the consumer rejoined and got its
/// partitions back, but the broker, just resumed, answered the committed-offset query
/// with `NOT_COORDINATOR`; librdkafka (2.12.1) found the coordinator again and never
/// repeated the query, so the partitions sat in `stopped` with their offset queries
/// pending, for good, while `/healthz` said everything was fine. A fetcher that is merely
/// waiting for Kafka (a leader election, an offset reset) is `active` again within a
/// second or two.
const FETCH_STUCK_AFTER: Duration = Duration::from_secs(10);

/// ... at most once per this long (a partition whose every replica is down stays out of
/// `active` however often the consumer is replaced).
const FETCH_STUCK_COOLDOWN: Duration = Duration::from_secs(60);

/// The chainer's judgement of its held partitions' fetchers, fed each second with
/// librdkafka's latest statistics.
struct FetchWatch {
    /// Per held partition: since when its fetcher has been reported anything but `active`.
    idle_since: HashMap<u32, std::time::Instant>,
    /// The last assignment change seen (statistics from before it are stale).
    last_rebalance: std::time::Instant,
}

impl FetchWatch {
    fn new(now: std::time::Instant) -> Self {
        Self {
            idle_since: HashMap::new(),
            last_rebalance: now,
        }
    }

    fn rebalanced(&mut self, now: std::time::Instant) {
        self.last_rebalance = now;
        self.idle_since.clear();
    }

    /// Takes the latest statistics; returns the partitions whose fetchers have been idle
    /// for [`FETCH_STUCK_AFTER`] while the consumer was steady in the group (`in_group`).
    fn observe(
        &mut self,
        status: &FeedStatus,
        in_group: bool,
        now: std::time::Instant,
    ) -> Vec<(u32, String)> {
        let fresh = status
            .reported_at
            .is_some_and(|at| at > self.last_rebalance);
        if !fresh {
            return Vec::new();
        }
        if !in_group || status.join_state != "steady" {
            self.idle_since.clear();
            return Vec::new();
        }
        self.idle_since.retain(|p, _| {
            status
                .partitions
                .get(p)
                .is_some_and(|s| s.fetch_state != "active")
        });
        let mut stuck = Vec::new();
        for (partition, progress) in &status.partitions {
            if progress.fetch_state == "active" {
                continue;
            }
            let since = *self.idle_since.entry(*partition).or_insert(now);
            if now.duration_since(since) >= FETCH_STUCK_AFTER {
                stuck.push((*partition, progress.fetch_state.clone()));
            }
        }
        stuck
    }
}

/// Why one group consumer of a chainer ended.
enum FeedEnd {
    Signal,
    Failure(String),
    OutOfGroup(Duration),
    /// In the group, but held partitions do not fetch ([`FetchWatch`]).
    FetchStuck,
}

async fn run_chainer(config: Config) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let owner = format!("{}/{}", hostname(), std::process::id());
    let drain_timeout = config.chainer.drain_timeout;
    let store = connect_store(&config).await?;
    let kafka = kafka_settings(&config);
    let client_id = format!("chainer-{owner}");
    let mut feed = ChainerFeed::start(&kafka, &client_id)
        .with_context(|| format!("joining the chainers' group on {}", config.kafka.brokers))?;
    anyhow::ensure!(
        feed.partitions() == store.log_partitions(),
        "topic {} has {} partitions but keyspace {} was migrated for {}",
        kafka.topic,
        feed.partitions(),
        config.scylla.keyspace,
        store.log_partitions()
    );
    let replies = Arc::new(KafkaReplySink::connect(&kafka, &owner)?);
    let state = ChainerState {
        health: Health::default(),
        assigned: Arc::default(),
        feed: Arc::new(Mutex::new(feed.status())),
        metrics,
    };

    let listener = crate::serve::listen_at(config.api.http_addr).with_context(|| {
        format!(
            "cannot listen on {} (pick another with --http-addr)",
            config.api.http_addr
        )
    })?;
    eprintln!(
        "sealtrail chainer {owner}: health on http://{}/healthz (kafka {}, scylla {})",
        listener.local_addr()?,
        config.kafka.brokers,
        config.scylla.nodes
    );
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|s| chainer_health(s, false)))
        .route("/readyz", axum::routing::get(|s| chainer_health(s, true)))
        .route("/metrics", axum::routing::get(chainer_metrics))
        .with_state(state.clone());
    let http = tokio::spawn(async move { axum::serve(listener, app).await });
    beat_for_partitions(store.clone(), owner.clone(), state.clone());
    // Log streams: this chainer delivers the destinations of the tenants whose partitions
    // it holds (a destination's task is claimed in the store, so a chainer that lost a
    // partition and has not noticed yet cannot move its cursor).
    let (_stop_streams, streams_stopped) = tokio::sync::watch::channel(false);
    {
        let signer = log_signer(&config, &store).await?;
        let shared: Arc<dyn sealtrail_store::Store> = Arc::new(store.clone());
        let tlog =
            sealtrail_api::tlog::TransparencyLog::new(signer, config.log.checkpoint_interval)
                .with_witnesses(config.witness_configs()?, shared.clone());
        let assigned = state.assigned.clone();
        let partitions = store.log_partitions();
        tokio::spawn(sealtrail_api::streams::run_deliveries(
            sealtrail_api::streams::Deliverer {
                store: shared,
                tlog: Some(Arc::new(tlog)),
                commits: None,
                shutdown: streams_stopped,
                streams: streams(&config, &store).await?,
                owns: Some(Arc::new(move |tenant: &str| {
                    let partition = sealtrail_core::partition::partition_for(tenant, partitions);
                    assigned
                        .lock()
                        .expect("assigned lock")
                        .contains_key(&partition)
                })),
            },
        ));
    }

    let chainer_config = ChainerConfig {
        max_batch_events: config.chainer.max_batch_events,
        head_cache_tenants: config.chainer.head_cache_tenants,
    };
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(4);
    let out_of_group_limit = kafka.session_timeout * 2 + OUT_OF_GROUP_GRACE;
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let mut generation = 0u64;
    let mut last_fetch_replacement: Option<std::time::Instant> = None;
    let failure = loop {
        let mut tasks = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The coordinator probe in flight (asked when), and what the probes found.
        let mut probe: Option<(std::time::Instant, tokio::task::JoinHandle<bool>)> = None;
        let mut coordinator = CoordinatorWatch::new(std::time::Instant::now());
        let mut fetchers = FetchWatch::new(std::time::Instant::now());
        let end = loop {
            tokio::select! {
                _ = &mut signal => break FeedEnd::Signal,
                Some(failure) = fatal_rx.recv() => break FeedEnd::Failure(failure),
                _ = tick.tick() => {
                    let status = feed.status();
                    for (partition, progress) in &status.partitions {
                        metrics::gauge!("sealtrail_chainer_partition_lag", "partition" => partition.to_string())
                            .set(progress.lag as f64);
                    }
                    let out = status.out_of_group_for(std::time::Instant::now());
                    metrics::gauge!("sealtrail_chainer_in_group").set(f64::from(u8::from(out.is_none())));
                    *state.feed.lock().expect("feed lock") = status.clone();
                    if let Some(out) = out.filter(|out| *out > out_of_group_limit) {
                        break FeedEnd::OutOfGroup(out);
                    }
                    let now = std::time::Instant::now();
                    let stuck = fetchers.observe(&status, out.is_none(), now);
                    if !stuck.is_empty()
                        && last_fetch_replacement
                            .is_none_or(|at| now.duration_since(at) >= FETCH_STUCK_COOLDOWN)
                    {
                        tracing::warn!(
                            ?stuck,
                            "held partitions have not fetched for {} s while the consumer is steady in the group (stuck in librdkafka)",
                            FETCH_STUCK_AFTER.as_secs()
                        );
                        metrics::counter!("sealtrail_chainer_fetch_stuck_total").increment(1);
                        last_fetch_replacement = Some(now);
                        break FeedEnd::FetchStuck;
                    }
                    if !coordinator.waiting(&status, out) {
                        probe = None;
                    } else {
                        if let Some((asked, done)) = probe.take_if(|(_, p)| p.is_finished()) {
                            coordinator.probed(asked, done.await.unwrap_or(false));
                        }
                        if coordinator.stuck(now) {
                            tracing::warn!(
                                group_state = %status.group_state,
                                join_state = %status.join_state,
                                "the group coordinator has answered a fresh client for {} s while this consumer still waits for it",
                                COORDINATOR_ANSWERS_FOR.as_secs()
                            );
                            metrics::counter!("sealtrail_chainer_coordinator_stuck_total").increment(1);
                            break FeedEnd::OutOfGroup(out.unwrap_or_default());
                        }
                        if probe.is_none() {
                            let (kafka, client_id) = (kafka.clone(), client_id.clone());
                            probe = Some((now, tokio::task::spawn_blocking(move || {
                                sealtrail_kafka::consumer::group_coordinator_answers(&kafka, &client_id)
                            })));
                        }
                    }
                    if feed.failed_fatally() {
                        // E.g. a static member fenced by an instance of the same id.
                        break FeedEnd::OutOfGroup(out.unwrap_or_default());
                    }
                }
                event = feed.next() => match event {
                    None => break FeedEnd::Failure("the Kafka consumer stopped".to_string()),
                    Some(FeedEvent::Revoked(partition)) => {
                        coordinator.rebalanced(std::time::Instant::now());
                        fetchers.rebalanced(std::time::Instant::now());
                        state.assigned.lock().expect("assigned lock").remove(&partition);
                        state.health.clear_partition(partition);
                        metrics::gauge!("sealtrail_chainer_partition_held", "partition" => partition.to_string()).set(0.0);
                    }
                    Some(FeedEvent::Assigned(consumer)) => {
                        coordinator.rebalanced(std::time::Instant::now());
                        fetchers.rebalanced(std::time::Instant::now());
                        generation += 1;
                        let partition = consumer.partition();
                        state.assigned.lock().expect("assigned lock").insert(partition, generation);
                        metrics::gauge!("sealtrail_chainer_partition_held", "partition" => partition.to_string()).set(1.0);
                        tasks.push(tokio::spawn(chain_partition(
                            consumer,
                            generation,
                            store.clone(),
                            owner.clone(),
                            replies.clone(),
                            chainer_config.clone(),
                            state.clone(),
                            fatal_tx.clone(),
                        )));
                    }
                }
            }
        };
        if let FeedEnd::Signal = end {
            eprintln!("shutting down: finishing the current batches");
        }
        // Stop fetching; each chainer finishes the batch it holds (stored, answered,
        // committed) and stops. Buffered entries are left to the partition's next owner.
        feed.stop().await;
        let drain = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(drain_timeout, drain).await.is_err() {
            eprintln!(
                "some partitions did not drain in {} (chainer.drain_timeout); they will be replayed",
                humantime::format_duration(drain_timeout)
            );
        }
        for partition in state.held_partitions() {
            metrics::gauge!("sealtrail_chainer_partition_held", "partition" => partition.to_string()).set(0.0);
        }
        state.assigned.lock().expect("assigned lock").clear();
        // Out of the group too long, or in it without fetching: leave it (whatever
        // librdkafka still believes) and join again with a new consumer; its partitions
        // resume from the last commits.
        let status = feed.status();
        match end {
            FeedEnd::Signal => break None,
            FeedEnd::Failure(failure) => break Some(failure),
            FeedEnd::OutOfGroup(out) => tracing::error!(
                out_of_group_ms = out.as_millis() as u64,
                group_state = %status.group_state,
                join_state = %status.join_state,
                fatal_error = feed.failed_fatally(),
                "the Kafka group consumer has been out of the chainers' group for {} s; replacing it",
                out.as_secs()
            ),
            FeedEnd::FetchStuck => tracing::error!(
                "the Kafka group consumer holds partitions it does not fetch; replacing it"
            ),
        }
        metrics::counter!("sealtrail_chainer_feed_restarts_total").increment(1);
        feed.abandon();
        feed = loop {
            match ChainerFeed::start(&kafka, &client_id) {
                Ok(fresh) => break fresh,
                Err(err) => {
                    tracing::error!(%err, "cannot join the chainers' group again; retrying in 1 s");
                    tokio::select! {
                        _ = &mut signal => {
                            http.abort();
                            store.close();
                            eprintln!("stopped while rejoining the chainers' group");
                            return Ok(());
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
    };
    replies.flush();
    feed.leave().await;
    http.abort();
    store.close();
    match failure {
        Some(failure) => anyhow::bail!(
            "{failure}; restart the chainer: its partitions resume from their last committed offsets"
        ),
        None => {
            eprintln!("stopped cleanly");
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn chain_partition(
    mut consumer: sealtrail_kafka::consumer::KafkaPartitionConsumer,
    generation: u64,
    store: ScyllaStore,
    owner: String,
    replies: Arc<KafkaReplySink>,
    config: ChainerConfig,
    state: ChainerState,
    fatal: tokio::sync::mpsc::Sender<String>,
) {
    let partition = consumer.partition();
    let still_mine = || {
        state
            .assigned
            .lock()
            .expect("assigned lock")
            .get(&partition)
            == Some(&generation)
    };
    // Claim the partition before reading anything for it: from here on, whoever held it
    // before can no longer commit.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let fenced = loop {
        match store.fenced(partition, &owner).await {
            Ok(fenced) => break fenced,
            Err(err) if still_mine() => {
                tracing::error!(partition, %err, "cannot claim the partition; retrying");
                state.health.set_partition(partition, err.to_string());
                tokio::time::sleep(backoff.wait()).await;
            }
            Err(_) => return,
        }
    };
    state.health.clear_partition(partition);
    if std::env::var_os("SEALTRAIL_TEST_HOLD_DERIVED").is_some() {
        // For tests only: never write derived rows, as a chainer that dies right after
        // each durable write would (readers and the next owner must cope).
        tracing::warn!(
            partition,
            "SEALTRAIL_TEST_HOLD_DERIVED is set: derived rows are held"
        );
        fenced.pause_deriving(true);
    }
    consumer.mark_claimed();
    let chainer = Chainer::new(
        consumer,
        Arc::new(fenced) as Arc<dyn Store>,
        replies,
        CommitSignal::default(),
        config,
    )
    .with_health(state.health.clone());
    // Its own task, so a panic arrives here as a JoinError and becomes a fatal failure of
    // the process instead of a silently stalled partition. (An entry that cannot be
    // decoded does not panic: the consumer puts it on the dead-letter topic.)
    let result = tokio::spawn(chainer.run()).await;
    let failure = match result {
        Ok(Ok(())) => return, // revoked or shutting down: drained
        Ok(Err(ChainerError::Fenced(message))) if !still_mine() => {
            tracing::info!(partition, %message, "a revoked partition's last batch was fenced (expected)");
            return;
        }
        Ok(Err(err)) => format!("the chainer of partition {partition} stopped: {err}"),
        Err(err) => format!("the chainer of partition {partition} failed: {err}"),
    };
    tracing::error!("{failure}");
    let _ = fatal.send(failure).await;
}

impl ChainerState {
    /// The partitions assigned here now, in order.
    fn held_partitions(&self) -> Vec<u32> {
        let mut held: Vec<u32> = self
            .assigned
            .lock()
            .expect("assigned lock")
            .keys()
            .copied()
            .collect();
        held.sort_unstable();
        held
    }
}

/// The chainer's health: `200` unless a partition's chainer is failing (retrying the
/// store), and for readiness (`/readyz`) unless the group consumer has been out of the
/// chainers' group for 3 s (liveness, `/healthz`, does not restart a chainer for a Kafka
/// outage: the chainer replaces its group consumer itself after twice the session
/// timeout plus 3 s out); with each held partition's lag (entries on the broker not
/// chained yet), the time since its last stored batch and its committed offset.
async fn chainer_health(State(state): State<ChainerState>, readiness: bool) -> Response {
    let now = std::time::Instant::now();
    let partitions = state.held_partitions();
    let problems = state.health.problems();
    let feed = state.feed.lock().expect("feed lock").clone();
    let out_of_group = feed.out_of_group_for(now);
    let held: Vec<_> = partitions
        .iter()
        .map(|&partition| {
            let progress = feed.partitions.get(&partition);
            serde_json::json!({
                "partition": partition,
                "lag": progress.map(|p| p.lag).filter(|lag| *lag >= 0),
                "committed_offset": progress.map(|p| p.committed).filter(|o| *o >= 0),
                "fetch_state": progress.map(|p| p.fetch_state.as_str()),
                "last_write_ms_ago": state
                    .health
                    .last_write(partition)
                    .map(|at| now.duration_since(at).as_millis() as u64),
            })
        })
        .collect();
    let group = serde_json::json!({
        "state": feed.group_state,
        "join_state": feed.join_state,
        "in_group": out_of_group.is_none(),
    });
    let in_group = !readiness || out_of_group.is_none_or(|out| out < Duration::from_secs(3));
    if problems.is_empty() && in_group {
        return axum::Json(serde_json::json!({
            "status": "ok", "partitions": partitions, "held": held, "group": group,
        }))
        .into_response();
    }
    let failing: Vec<_> = problems
        .into_iter()
        .map(|(partition, error)| serde_json::json!({"partition": partition, "error": error}))
        .collect();
    let mut body = serde_json::json!({
        "status": "degraded", "partitions": partitions, "held": held, "group": group,
        "failing_partitions": failing,
    });
    if !in_group && let Some(out) = out_of_group {
        body["error"] = serde_json::json!(format!(
            "out of the chainers' consumer group for {} s (group state {:?}, join state {:?})",
            out.as_secs(),
            feed.group_state,
            feed.join_state
        ));
    }
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn chainer_metrics(State(state): State<ChainerState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn status(group_state: &str, join_state: &str, reported_at: Instant) -> FeedStatus {
        FeedStatus {
            group_state: group_state.into(),
            join_state: join_state.into(),
            started: reported_at,
            reported_at: Some(reported_at),
            steady_at: None,
            partitions: Default::default(),
        }
    }

    fn held(status: &mut FeedStatus, partition: u32, fetch_state: &str) {
        status.partitions.insert(
            partition,
            sealtrail_kafka::consumer::PartitionProgress {
                high_watermark: -1,
                stored: -1,
                committed: -1,
                lag: -1,
                fetch_state: fetch_state.into(),
            },
        );
    }

    /// A held partition whose fetcher stays out of `active` for 10 s while the consumer is
    /// steady in the group is stuck; fetching again, a rebalance, leaving `steady` or
    /// statistics from before the last assignment change start the count over.
    #[test]
    fn a_partition_that_does_not_fetch_for_ten_seconds_in_a_steady_group_is_stuck() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut watch = FetchWatch::new(t0);
        let mut steady = status("up", "steady", at(1));
        held(&mut steady, 0, "active");
        held(&mut steady, 1, "stopped");
        assert!(watch.observe(&steady, true, at(1)).is_empty());
        assert!(watch.observe(&steady, true, at(10)).is_empty());
        assert_eq!(
            watch.observe(&steady, true, at(11)),
            [(1, "stopped".to_string())]
        );
        // partition 1 fetches again: the count starts over when it stops
        held(&mut steady, 1, "active");
        assert!(watch.observe(&steady, true, at(12)).is_empty());
        held(&mut steady, 1, "offset-query");
        assert!(watch.observe(&steady, true, at(13)).is_empty());
        assert!(watch.observe(&steady, true, at(22)).is_empty());
        assert_eq!(watch.observe(&steady, true, at(23)).len(), 1);
        // out of the group, or not steady: not this watch's business, and it forgets
        assert!(watch.observe(&steady, false, at(24)).is_empty());
        assert!(watch.observe(&steady, true, at(25)).is_empty());
        let mut joining = status("up", "wait-join", at(26));
        held(&mut joining, 1, "stopped");
        assert!(watch.observe(&joining, true, at(40)).is_empty());
        assert!(watch.observe(&steady, true, at(41)).is_empty());
        assert!(watch.observe(&steady, true, at(50)).is_empty());
        assert_eq!(watch.observe(&steady, true, at(51)).len(), 1);
        // statistics reported before the last assignment change are ignored
        watch.rebalanced(at(52));
        let stale = steady.clone();
        assert!(watch.observe(&stale, true, at(70)).is_empty());
        let mut fresh = status("up", "steady", at(71));
        held(&mut fresh, 1, "stopped");
        assert!(watch.observe(&fresh, true, at(71)).is_empty());
        assert_eq!(watch.observe(&fresh, true, at(81)).len(), 1);
    }

    /// A consumer waiting on its coordinator is judged stuck once probes have found the
    /// coordinator answering for 2 s, counted from the first such probe; a failed probe
    /// starts the count over.
    #[test]
    fn a_consumer_waiting_on_an_answering_coordinator_is_stuck_after_two_seconds() {
        let t0 = Instant::now();
        let mut watch = CoordinatorWatch::new(t0);
        let waiting = status(
            "query-coord",
            "wait-incr-unassign-to-complete",
            t0 + Duration::from_millis(500),
        );
        let out = Some(Duration::from_secs(3));
        assert!(watch.waiting(&waiting, out));
        watch.probed(t0 + Duration::from_secs(1), false);
        assert!(
            !watch.stuck(t0 + Duration::from_secs(5)),
            "Kafka did not answer"
        );
        watch.probed(t0 + Duration::from_secs(2), true);
        watch.probed(t0 + Duration::from_secs(3), true);
        assert!(!watch.stuck(t0 + Duration::from_millis(3900)));
        assert!(watch.stuck(t0 + Duration::from_secs(4)));
        watch.probed(t0 + Duration::from_secs(4), false);
        assert!(
            !watch.stuck(t0 + Duration::from_secs(10)),
            "a failed probe starts over"
        );
    }

    /// Statistics from before the last assignment change, a member in `wait-join` or
    /// `wait-sync` (a rebalance may keep it there), or one out of the group for less than
    /// 2 s are not a wait on the coordinator, and drop what the probes found.
    #[test]
    fn stale_statistics_a_rebalance_in_progress_or_a_short_absence_are_not_a_coordinator_wait() {
        let t0 = Instant::now();
        let out = Some(Duration::from_secs(3));
        let mut watch = CoordinatorWatch::new(t0);
        assert!(watch.waiting(&status("up", "init", t0 + Duration::from_secs(1)), out));
        watch.probed(t0, true);
        watch.rebalanced(t0 + Duration::from_secs(2));
        assert!(
            !watch.waiting(&status("up", "init", t0 + Duration::from_secs(1)), out),
            "reported before the assignment that followed"
        );
        assert!(
            !watch.stuck(t0 + Duration::from_secs(10)),
            "the record was dropped"
        );
        let fresh = t0 + Duration::from_secs(3);
        assert!(watch.waiting(&status("up", "init", fresh), out));
        for join_state in ["wait-join", "wait-sync", "steady"] {
            assert!(
                !watch.waiting(&status("up", join_state, fresh), out),
                "{join_state}"
            );
        }
        assert!(watch.waiting(&status("query-coord", "wait-sync", fresh), out));
        assert!(!watch.waiting(
            &status("query-coord", "init", fresh),
            Some(Duration::from_secs(1))
        ));
        assert!(!watch.waiting(&status("query-coord", "init", fresh), None));
    }
}
