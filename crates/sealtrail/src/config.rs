//! Configuration: one struct, every key documented, unknown keys rejected, layered
//! defaults < file (`--config FILE` or `SEALTRAIL_CONFIG`) < environment (`SEALTRAIL_<KEY>`)
//! < command-line flags. `sealtrail config defaults` prints the defaults as TOML.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Every configuration key. The README's configuration table lists the same keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding the embedded database (`sealtrail.db`). Created if missing.
    pub data_dir: PathBuf,
    /// Embedded event store: `fjall` (an LSM tree; the default, fastest for ingest) or
    /// `sqlite` (one SQLite file you can open with the `sqlite3` shell). API keys are in
    /// SQLite either way. Pick it before the first start: the two do not share data.
    pub store: StoreEngine,
    /// Address the REST API listens on.
    pub http_addr: String,
    /// gRPC listen address (`sealtrail.v1.AuditLog`, health, reflection).
    pub grpc_addr: String,
    /// Partitions tenants are hashed onto; one chainer runs per partition, so this bounds
    /// chaining parallelism.
    pub partitions: u32,
    /// Ingest requests each partition may queue before answering 503 + Retry-After.
    pub queue_capacity: usize,
    /// How long an ingest request waits for its durable commit before a 504 (ms).
    pub commit_timeout_ms: u64,
    /// Most events a chainer writes in one store batch.
    pub max_batch_events: usize,
    /// Chain heads each chainer caches (LRU over tenants).
    pub head_cache_tenants: usize,
    /// How often a live stream re-reads the store without a commit signal (ms).
    pub stream_poll_interval_ms: u64,
    /// Name of the verifiable log: the signing key's name, and the prefix of every
    /// checkpoint origin (`<log_origin>/<tenant_id>`). A schema-less URL is customary,
    /// e.g. `audit.example.com`; no spaces or `+`.
    pub log_origin: String,
    /// File holding the log's Ed25519 signing key (`PRIVATE+KEY+<log_origin>+…`, C2SP
    /// signed-note format). Default: `<data_dir>/log-key.private`. Created with a fresh
    /// random key on first start if missing; keep it secret and backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_key_file: Option<PathBuf>,
    /// Longest a served checkpoint lags the log while events arrive (ms); `GET
    /// /v1/checkpoint?fresh=true` signs the current tree head at once. With witnesses,
    /// also how often each written tenant's checkpoint is signed and sent to them.
    pub checkpoint_interval_ms: u64,
    /// Witnesses every new checkpoint is sent to (C2SP tlog-witness), each as
    /// `URL=VKEY`: the witness's address (`http(s)://host:port`) and the verifier key its
    /// `sealtrail witness init` printed. Their cosignatures are served with the checkpoint.
    /// `--witness` (repeatable) on `serve` and `gateway` replaces the list.
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `sealtrail=debug`; `RUST_LOG` overrides it.
    pub log_level: String,

    // ---- embedded fjall store: its log, and what bounds its memory and journal ----
    /// MiB at which the fjall store's log (`<data_dir>/log/`) starts a new segment file.
    /// Sealed segments never change (a backup copies them once).
    pub segment_mb: u64,
    /// MiB of acknowledged records not yet in the fjall indexes that memory may hold
    /// (reads see them there); past it commits wait for the indexer.
    pub index_lag_mb: u64,
    /// MiB the fjall memtables take in before they are all sealed and flushed. Memtables
    /// hold at most 3× this (one filling, two flushing) before ingest waits for the flush.
    pub fjall_write_buffer_mb: u64,
    /// Hard limit of the fjall journal (MiB, at least 64 and twice the write buffer): past
    /// it, fjall flushes what pins the oldest journal file. A restart replays the journal,
    /// so this also bounds restart time.
    pub fjall_journal_mb: u64,
    /// fjall block cache for reads (MiB).
    pub fjall_cache_mb: u64,
    /// fjall background threads that flush and compact (with 2 or more, one only flushes,
    /// but fjall 3.1 then spins that one while another compacts).
    pub fjall_worker_threads: usize,
    /// Embedded stores: free space (MiB) the data directory's disk must keep. Below it,
    /// writes are refused with `507 insufficient_storage` (reads keep working) and resume
    /// by themselves once space is freed; it leaves room for the flushes and compactions
    /// under way, so the store never meets a full disk. 0 turns the floor off.
    pub min_free_disk_mb: u64,
    /// REST and gRPC connections open at once (together); at the cap new connections wait
    /// in the kernel's backlog. Lowered at start to stay below the file-descriptor limit
    /// (with 512 left for the store).
    pub max_connections: usize,
    /// How long a REST client may take to send a request head; also how long an idle
    /// keep-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// Largest REST request head (start line and headers) in bytes; larger ones get `431`.
    pub max_header_bytes: usize,
    /// PEM certificate chain (leaf first) for native TLS on the REST and gRPC ports; with
    /// `tls_key_file`. Both files are read again on `SIGHUP`. Unset: plain TCP (terminate
    /// TLS in front).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// How long a client may take to send a request body; past it, `408 request_timeout`.
    pub body_read_timeout_ms: u64,
    /// Requests per second one API key may make (bursts up to twice that); over it,
    /// `429` with `Retry-After`. 0: unlimited.
    pub rate_limit_per_key: u32,
    /// Requests per second one tenant may make, all its keys together. 0: unlimited.
    pub rate_limit_per_tenant: u32,
    /// Exports, evidence packs and full verifications one key may run at once.
    pub max_heavy_per_key: usize,
    /// Live streams (SSE, gRPC `Tail`) one key may hold open at once.
    pub max_streams_per_key: usize,
    /// Chain verifications of more than 100,000 records the whole server runs at once
    /// (`GET /v1/verify` with `full=true` or a time range, or the first after a start);
    /// beyond, `429`. Verifications resumed where the chain was last found valid cost only
    /// the new records and need none.
    pub max_full_verifications: usize,

    // ---- distributed mode (`gateway`, `chainer`, `migrate`; `keys` with store = scylla) ----
    /// Kafka bootstrap servers, comma-separated `host:port`.
    pub kafka_brokers: String,
    /// The events topic: one entry per ingest request, partitioned by tenant.
    pub kafka_topic: String,
    /// The topic that carries sync replies from chainers to gateways.
    pub kafka_reply_topic: String,
    /// Partitions of the reply topic (`migrate` creates it; each gateway reads one).
    pub kafka_reply_partitions: u32,
    /// Where a chainer puts an entry it cannot chain (undecodable, or its tenant does not
    /// belong to the partition), byte for byte with its partition, offset and reason in
    /// headers; the partition then moves on. Empty: `<kafka_topic>-dead-letter`.
    /// `migrate` creates it; kept forever (it may hold acknowledged events).
    pub kafka_dead_letter_topic: String,
    /// Consumer group the chainers share; partitions are balanced across its members.
    pub kafka_group_id: String,
    /// Replication factor `migrate` gives the topics (3 in production; 1 on one broker).
    pub kafka_replication_factor: u32,
    /// How long a silent chainer keeps its partitions before the group moves them (ms).
    pub kafka_session_timeout_ms: u64,
    /// Longest a chainer may go without polling Kafka before the group moves its
    /// partitions (`max.poll.interval.ms`, at least `kafka_session_timeout_ms`). A slow
    /// partition is paused, not waited for, so the chainer polls on regardless.
    pub kafka_max_poll_interval_ms: u64,
    /// Static group membership for a chainer (Kafka's `group.instance.id`): unique per
    /// chainer and stable across its restarts (a StatefulSet pod name). A chainer that
    /// restarts within `kafka_session_timeout_ms` gets its partitions back at once instead
    /// of after the session timeout; but a chainer stopped for good keeps its partitions
    /// until the session timeout (a static member does not leave the group). Empty:
    /// dynamic membership.
    pub kafka_group_instance_id: String,
    /// How long a key the store answered for is trusted before the store is asked again:
    /// a revoked key stops working at most this long after `keys revoke`. 0: every request
    /// asks the store.
    pub key_cache_ttl_ms: u64,
    /// How long an API key looked up recently keeps answering while the store is
    /// unreachable (distributed: a ScyllaDB outage), so async ingest goes on being
    /// accepted into Kafka. A key revoked meanwhile works until the store answers again
    /// or this long after its last lookup. 0: no grace (requests fail with the store).
    pub key_cache_grace_ms: u64,
    /// ScyllaDB / Cassandra contact points, comma-separated `host:port`.
    pub scylla_nodes: String,
    /// Keyspace holding events, heads, receipts and keys.
    pub scylla_keyspace: String,
    /// Consistency of reads and writes: `local_quorum` (production, RF 3), `quorum` or `one`.
    pub scylla_consistency: ScyllaConsistency,
    /// Replication factor `migrate` gives a new keyspace (SimpleStrategy).
    pub scylla_replication_factor: u32,
    /// Timeout of one Scylla request (ms).
    pub scylla_request_timeout_ms: u64,
    /// This gateway's id on the reply topic; empty: `<hostname>-<random>` per process.
    pub gateway_id: String,
    /// Retention (issue 15) of tenants without a policy of their own: keep records for
    /// this many days (by `created_at`), then remove them. Unset: forever. A tenant's own
    /// policy (`PUT /v1/retention`, `sealtrail retention set`) overrides it. Embedded
    /// mode only, for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Retention of tenants without a policy of their own: keep the last this many
    /// records. Unset: no limit. With `retention_days`, whichever removes more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_events: Option<u64>,
    /// How often the pruner applies the retention policies (ms).
    pub retention_interval_ms: u64,
    /// Directory the records a prune removes are written to first
    /// (`<tenant>/records-<first>-<last>.zip`, mode 0600: a retention archive, the evidence pack of
    /// the removed slice, which `sealtrail verify` checks). Unset: not archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_archive_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./sealtrail-data"),
            store: StoreEngine::Fjall,
            http_addr: "127.0.0.1:8080".into(),
            grpc_addr: "127.0.0.1:50051".into(),
            partitions: 4,
            queue_capacity: 8192,
            commit_timeout_ms: 10_000,
            max_batch_events: 4096,
            head_cache_tenants: 100_000,
            stream_poll_interval_ms: 500,
            log_origin: "sealtrail.local".into(),
            log_key_file: None,
            checkpoint_interval_ms: 1000,
            witnesses: Vec::new(),
            log_level: "info".into(),
            segment_mb: 64,
            index_lag_mb: 32,
            fjall_write_buffer_mb: 16,
            fjall_journal_mb: 256,
            fjall_cache_mb: 8,
            fjall_worker_threads: 2,
            min_free_disk_mb: 1024,
            max_connections: 2048,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 32 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
            body_read_timeout_ms: 30_000,
            rate_limit_per_key: 10_000,
            rate_limit_per_tenant: 20_000,
            max_heavy_per_key: 4,
            max_streams_per_key: 32,
            max_full_verifications: 2,
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_topic: "sealtrail-events".into(),
            kafka_reply_topic: "sealtrail-replies".into(),
            kafka_reply_partitions: 8,
            kafka_dead_letter_topic: String::new(),
            kafka_group_id: "sealtrail-chainers".into(),
            kafka_replication_factor: 1,
            kafka_session_timeout_ms: 10_000,
            kafka_group_instance_id: String::new(),
            key_cache_ttl_ms: 1_000,
            key_cache_grace_ms: 60_000,
            kafka_max_poll_interval_ms: 300_000,
            scylla_nodes: "127.0.0.1:9042".into(),
            scylla_keyspace: "sealtrail".into(),
            scylla_consistency: ScyllaConsistency::LocalQuorum,
            scylla_replication_factor: 1,
            scylla_request_timeout_ms: 10_000,
            gateway_id: String::new(),
            retention_days: None,
            retention_events: None,
            retention_interval_ms: 3_600_000,
            retention_archive_dir: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    Fjall,
    Sqlite,
    /// ScyllaDB / Cassandra (distributed mode; `scylla_*` keys).
    Scylla,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScyllaConsistency {
    LocalQuorum,
    Quorum,
    One,
    LocalOne,
    All,
}

/// Every key of [`Config`], read off its serde definition (so no list is kept by hand).
/// It relies on the derive handing every field name to `deserialize_struct`, which holds
/// while `Config` has no `#[serde(flatten)]` (a flattened struct is read as a map, and
/// this would panic at start-up; the tests below would fail first).
fn keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut fields = None;
        let _ = Config::deserialize(FieldNames(&mut fields));
        fields.expect("Config is a struct")
    })
}

/// Keys that may come from `SEALTRAIL_<KEY>` environment variables: all but the list
/// `witnesses` (config file or `--witness`).
fn env_keys() -> Vec<&'static str> {
    keys()
        .iter()
        .copied()
        .filter(|k| *k != "witnesses")
        .collect()
}

/// A deserializer that only records the field names of the struct asked for, then fails.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only field names are read"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// Flags given on the command line (only the ones present override).
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreEngine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_replication_factor: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scylla_nodes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scylla_keyspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scylla_replication_factor: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<Vec<String>>,
}

impl Config {
    /// The `witnesses` entries, parsed; an error names the bad one.
    pub fn witness_configs(&self) -> anyhow::Result<Vec<sealtrail_api::witnessing::WitnessConfig>> {
        self.witnesses
            .iter()
            .map(|w| sealtrail_api::witnessing::WitnessConfig::parse(w).map_err(anyhow::Error::msg))
            .collect()
    }

    /// Where the log's signing key lives.
    pub fn log_key_path(&self) -> PathBuf {
        self.log_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("log-key.private"))
    }

    /// The dead-letter topic: `kafka_dead_letter_topic`, or `<kafka_topic>-dead-letter`.
    pub fn dead_letter_topic(&self) -> String {
        if self.kafka_dead_letter_topic.is_empty() {
            format!("{}-dead-letter", self.kafka_topic)
        } else {
            self.kafka_dead_letter_topic.clone()
        }
    }

    /// Loads the layered configuration.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SEALTRAIL_CONFIG").map(PathBuf::from));
        if let Some(path) = &file {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        figment = figment
            .merge(Env::prefixed("SEALTRAIL_").only(&env_keys()))
            .merge(Serialized::defaults(overrides));
        let config: Config = figment.extract().map_err(|e| {
            anyhow::anyhow!("invalid configuration: {e}\n(run `sealtrail config defaults` to see every key and its default)")
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=256).contains(&self.partitions),
            "partitions must be 1 to 256, not {}",
            self.partitions
        );
        anyhow::ensure!(self.queue_capacity > 0, "queue_capacity must be at least 1");
        sealtrail_api::retention::checked_policy(self.retention_days, self.retention_events)
            .map_err(|e| anyhow::anyhow!("retention_{e}"))?;
        anyhow::ensure!(
            self.retention_interval_ms >= 1000,
            "retention_interval_ms must be at least 1000"
        );
        anyhow::ensure!(
            self.max_connections >= 16,
            "max_connections must be at least 16, not {}",
            self.max_connections
        );
        anyhow::ensure!(
            self.body_read_timeout_ms >= 100,
            "body_read_timeout_ms must be at least 100"
        );
        anyhow::ensure!(
            self.header_read_timeout_ms >= 100,
            "header_read_timeout_ms must be at least 100"
        );
        anyhow::ensure!(
            (8192..=1 << 20).contains(&self.max_header_bytes),
            "max_header_bytes must be 8192 to 1048576, not {}",
            self.max_header_bytes
        );
        anyhow::ensure!(
            self.commit_timeout_ms > 0,
            "commit_timeout_ms must be at least 1"
        );
        anyhow::ensure!(
            self.max_batch_events >= 1000,
            "max_batch_events must be at least 1000 (one full batch)"
        );
        anyhow::ensure!(
            self.head_cache_tenants > 0,
            "head_cache_tenants must be at least 1"
        );
        anyhow::ensure!(
            !self.log_origin.is_empty()
                && !self.log_origin.contains('+')
                && !self.log_origin.chars().any(char::is_whitespace),
            "log_origin {:?} must be non-empty, without spaces or '+'",
            self.log_origin
        );
        self.http_addr
            .parse::<std::net::SocketAddr>()
            .with_context(|| {
                format!(
                    "http_addr {:?} must be HOST:PORT with an IP host, e.g. 127.0.0.1:8080",
                    self.http_addr
                )
            })?;
        self.grpc_addr
            .parse::<std::net::SocketAddr>()
            .with_context(|| {
                format!(
                    "grpc_addr {:?} must be HOST:PORT with an IP host, e.g. 127.0.0.1:50051",
                    self.grpc_addr
                )
            })?;
        anyhow::ensure!(
            (1..=4096).contains(&self.fjall_write_buffer_mb),
            "fjall_write_buffer_mb must be 1 to 4096, not {}",
            self.fjall_write_buffer_mb
        );
        anyhow::ensure!(
            (1..=4096).contains(&self.segment_mb),
            "segment_mb must be 1 to 4096, not {}",
            self.segment_mb
        );
        anyhow::ensure!(
            (1..=4096).contains(&self.index_lag_mb),
            "index_lag_mb must be 1 to 4096, not {}",
            self.index_lag_mb
        );
        anyhow::ensure!(
            (1..=64).contains(&self.fjall_worker_threads),
            "fjall_worker_threads must be 1 to 64, not {}",
            self.fjall_worker_threads
        );
        anyhow::ensure!(
            self.fjall_journal_mb >= 64 && self.fjall_journal_mb >= 2 * self.fjall_write_buffer_mb,
            "fjall_journal_mb ({}) must be at least 64 (fjall's minimum) and at least twice fjall_write_buffer_mb ({}): the journal holds what the memtables hold",
            self.fjall_journal_mb,
            self.fjall_write_buffer_mb
        );
        anyhow::ensure!(
            self.kafka_session_timeout_ms >= 6000,
            "kafka_session_timeout_ms must be at least 6000 (the brokers' minimum)"
        );
        anyhow::ensure!(
            self.kafka_max_poll_interval_ms >= self.kafka_session_timeout_ms,
            "kafka_max_poll_interval_ms ({}) must be at least kafka_session_timeout_ms ({})",
            self.kafka_max_poll_interval_ms,
            self.kafka_session_timeout_ms
        );
        anyhow::ensure!(
            self.dead_letter_topic() != self.kafka_topic
                && self.dead_letter_topic() != self.kafka_reply_topic,
            "kafka_dead_letter_topic must differ from kafka_topic and kafka_reply_topic"
        );
        anyhow::ensure!(
            self.kafka_reply_partitions > 0
                && self.kafka_replication_factor > 0
                && self.scylla_replication_factor > 0,
            "kafka_reply_partitions and the replication factors must be at least 1"
        );
        anyhow::ensure!(
            self.tls_cert_file.is_some() == self.tls_key_file.is_some(),
            "tls_cert_file and tls_key_file go together: set both for TLS, or neither"
        );
        Ok(())
    }

    /// The TLS identity from `tls_cert_file` and `tls_key_file`, loaded (`None` when unset).
    pub fn tls(&self) -> anyhow::Result<Option<std::sync::Arc<sealtrail_api::tls::TlsEdge>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) else {
            return Ok(None);
        };
        let files = sealtrail_api::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let tls = sealtrail_api::tls::TlsEdge::load(files).map_err(|e| anyhow::anyhow!(e))?;
        Ok(Some(std::sync::Arc::new(tls)))
    }

    /// The fjall store's limits from `fjall_*`.
    pub fn fjall_limits(&self) -> sealtrail_store::fjall::FjallLimits {
        const MIB: u64 = 1024 * 1024;
        sealtrail_store::fjall::FjallLimits {
            write_buffer_bytes: self.fjall_write_buffer_mb * MIB,
            journal_bytes: self.fjall_journal_mb * MIB,
            cache_bytes: self.fjall_cache_mb * MIB,
            worker_threads: self.fjall_worker_threads,
            min_free_disk_bytes: self.min_free_disk_mb * MIB,
            segment_bytes: self.segment_mb * MIB,
            tail_bytes: self.index_lag_mb * MIB,
        }
    }

    /// The per-key quotas from `rate_limit_*` and `max_*_per_key`.
    /// The retention settings (`retention_*`).
    pub fn retention(&self) -> sealtrail_api::retention::RetentionConfig {
        sealtrail_api::retention::RetentionConfig {
            default: sealtrail_store::RetentionPolicy {
                days: self.retention_days,
                events: self.retention_events,
            },
            interval: std::time::Duration::from_millis(self.retention_interval_ms),
            archive_dir: self.retention_archive_dir.clone(),
        }
    }

    pub fn quotas(&self) -> sealtrail_api::quota::QuotaConfig {
        sealtrail_api::quota::QuotaConfig {
            per_key: self.rate_limit_per_key,
            per_tenant: self.rate_limit_per_tenant,
            heavy_per_key: self.max_heavy_per_key.max(1),
            streams_per_key: self.max_streams_per_key.max(1),
        }
    }

    /// The defaults as a commented TOML file.
    pub fn defaults_toml() -> String {
        let body = toml::to_string(&Config::default()).expect("defaults serialize");
        format!(
            "# sealtrail configuration; every key is optional. Environment: SEALTRAIL_<KEY>; flags override both.\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_file_env_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "partitions = 3\nhttp_addr = \"127.0.0.1:9000\"\n").unwrap();
        let c = Config::load(
            Some(&file),
            Overrides {
                http_addr: Some("127.0.0.1:9100".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.partitions, 3);
        assert_eq!(c.http_addr, "127.0.0.1:9100");
        assert_eq!(c.data_dir, PathBuf::from("./sealtrail-data"));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "partitons = 3\n").unwrap();
        let err = Config::load(Some(&file), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("partitons"), "{err}");
        std::fs::write(&file, "http_addr = \"localhost\"\n").unwrap();
        assert!(Config::load(Some(&file), Overrides::default()).is_err());
    }

    #[test]
    fn the_dead_letter_topic_follows_the_events_topic_unless_set() {
        let mut c = Config {
            kafka_topic: "audit".into(),
            ..Config::default()
        };
        assert_eq!(c.dead_letter_topic(), "audit-dead-letter");
        c.kafka_dead_letter_topic = "poison".into();
        assert_eq!(c.dead_letter_topic(), "poison");
        c.kafka_dead_letter_topic = "audit".into();
        assert!(
            c.check().is_err(),
            "the events topic is no dead-letter topic"
        );
        c.kafka_dead_letter_topic = String::new();
        c.kafka_max_poll_interval_ms = c.kafka_session_timeout_ms - 1;
        assert!(
            c.check().is_err(),
            "max poll interval below the session timeout"
        );
    }

    #[test]
    fn every_key_is_read_off_the_struct_and_documented_in_the_readme() {
        let keys = keys();
        // `sealtrail config defaults` prints every key but the optional ones unset by default
        let defaults: toml::Table = toml::from_str(&Config::defaults_toml()).unwrap();
        let mut unset: Vec<_> = keys
            .iter()
            .filter(|k| !defaults.contains_key(**k))
            .collect();
        unset.sort();
        assert_eq!(
            unset,
            [
                &"log_key_file",
                &"retention_archive_dir",
                &"retention_days",
                &"retention_events",
                &"tls_cert_file",
                &"tls_key_file"
            ]
        );
        assert_eq!(defaults.len() + unset.len(), keys.len());
        assert!(!env_keys().contains(&"witnesses"));
        assert_eq!(env_keys().len(), keys.len() - 1);

        let readme = include_str!("../../../README.md");
        let section = &readme[readme
            .find("\n## Configuration\n")
            .expect("a Configuration section")
            + 1..];
        let table = &section[..section.find("\n## ").unwrap_or(section.len())];
        let undocumented: Vec<_> = keys
            .iter()
            .filter(|k| !table.contains(&format!("\n| `{k}` |")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "keys missing from the README's configuration table: {undocumented:?}"
        );
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let parsed: Config = toml::from_str(&Config::defaults_toml()).unwrap();
        assert_eq!(parsed, Config::default());
    }
}
