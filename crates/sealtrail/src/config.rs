//! Configuration: typed sections (`[api]`, `[chainer]`, `[log]`, `[embedded]`,
//! `[retention]`, `[kafka]`, `[scylla]`) under three top-level keys (`data_dir`, `store`,
//! `log_level`); every key documented, unknown keys rejected. Layered: defaults < file
//! (`--config FILE` or `SEALTRAIL_CONFIG`) < environment < flags.
//!
//! - **Types.** Addresses are `SocketAddr`s, durations are written with their unit
//!   (`"10s"`, `"500ms"`, `"5m"`; [`duration`]) and sizes with theirs (`"64 MiB"`; [`size`]).
//!   Each section checks its own values ([`Config::check`]).
//! - **Environment.** `SEALTRAIL_<SECTION>_<KEY>` (`SEALTRAIL_API_HTTP_ADDR`,
//!   `SEALTRAIL_KAFKA_BROKERS`) and `SEALTRAIL_<KEY>` for the top-level keys. The names are
//!   read off the sections' serde definitions ([`keys`]), so no list is kept by hand.
//! - **Flags.** `--set KEY=VALUE` (any key, dotted: `--set api.commit_timeout=5s`) on every
//!   command that loads the configuration, and named flags for the common ones
//!   ([`Overrides::set`]).
//! - **Keys of before the sections** (`commit_timeout_ms`, `kafka_brokers`, …; in a file or
//!   as `SEALTRAIL_<OLD_KEY>`) still work: [`LEGACY`] says where each went, its value is
//!   converted (milliseconds and MiB become a duration and a size) and a warning names the
//!   new key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Every configuration key. The README's configuration table lists the same keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding the embedded database. Created if missing.
    pub data_dir: PathBuf,
    /// Event store: `fjall` (an LSM tree; the default, fastest for ingest) or `sqlite` (one
    /// SQLite file you can open with the `sqlite3` shell) in embedded mode; `scylla` for
    /// `keys` in distributed mode. API keys are in SQLite either way. Pick it before the
    /// first start: the two do not share data.
    pub store: StoreEngine,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `sealtrail=debug`; `RUST_LOG` overrides it.
    pub log_level: String,
    /// The REST and gRPC edge.
    #[serde(default)]
    pub api: ApiSection,
    /// Chaining: partitions and batches (both modes).
    #[serde(default)]
    pub chainer: ChainerSection,
    /// The verifiable log: its name, key, checkpoints and witnesses.
    #[serde(default)]
    pub log: LogSection,
    /// The embedded mode's queue and store (fjall's log, memory and journal).
    #[serde(default)]
    pub embedded: EmbeddedSection,
    /// The server-wide retention policy and the pruner.
    #[serde(default)]
    pub retention: RetentionSection,
    /// Log streams: delivery of committed records to the tenants' destinations.
    #[serde(default)]
    pub stream: StreamSection,
    /// Distributed mode: Kafka.
    #[serde(default)]
    pub kafka: KafkaSection,
    /// Distributed mode: ScyllaDB / Cassandra.
    #[serde(default)]
    pub scylla: ScyllaSection,
}

/// `[api]`: the REST and gRPC edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Address the REST API listens on (an IP address and a port).
    pub http_addr: SocketAddr,
    /// gRPC listen address (`sealtrail.v1.AuditLog`, health, reflection).
    pub grpc_addr: SocketAddr,
    /// How long an ingest request waits for its durable commit before a 504.
    #[serde(with = "duration")]
    pub commit_timeout: Duration,
    /// How long a stopping server lets open gRPC streams finish past `commit_timeout`.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// How often a live stream re-reads the store without a commit signal.
    #[serde(with = "duration")]
    pub stream_poll_interval: Duration,
    /// REST and gRPC connections open at once (together); at the cap new connections wait
    /// in the kernel's backlog. Lowered at start to stay below the file-descriptor limit
    /// (with 512 left for the store).
    pub max_connections: usize,
    /// How long a REST client may take to send a request head; also how long an idle
    /// keep-alive connection stays open.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body; past it, `408 request_timeout`.
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// Largest REST request head (start line and headers); larger ones get `431`.
    #[serde(with = "size")]
    pub max_header_size: ByteSize,
    /// PEM certificate chain (leaf first) for native TLS on the REST and gRPC ports; with
    /// `tls_key_file`. Both files are read again on `SIGHUP`. Unset: plain TCP (terminate
    /// TLS in front).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Requests per second one API key may make (bursts up to twice that); over it,
    /// `429` with `Retry-After`. 0: unlimited.
    pub rate_limit_per_key: u32,
    /// Requests per second one tenant may make, all its keys together. 0: unlimited.
    pub rate_limit_per_tenant: u32,
    /// Exports, evidence packs and full verifications one key may run at once.
    pub max_heavy_per_key: usize,
    /// Live streams (SSE, gRPC `Tail`) one key may hold open at once.
    pub max_streams_per_key: usize,
    /// Chain verifications of more than 100,000 records the whole server runs at once;
    /// beyond, `429`.
    pub max_full_verifications: usize,
    /// How long a key the store answered for is trusted before the store is asked again:
    /// a revoked key stops working at most this long after `keys revoke`. 0s: every request
    /// asks the store.
    #[serde(with = "duration")]
    pub key_cache_ttl: Duration,
    /// How long an API key looked up recently keeps answering while the store is
    /// unreachable (distributed: a ScyllaDB outage). 0s: no grace.
    #[serde(with = "duration")]
    pub key_cache_grace: Duration,
}

/// `[chainer]`: how events are chained, in both modes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainerSection {
    /// Partitions tenants are hashed onto; one chainer runs per partition, so this bounds
    /// chaining parallelism. In distributed mode, fixed by `migrate`.
    pub partitions: u32,
    /// Most events a chainer writes in one store batch.
    pub max_batch_events: usize,
    /// Chain heads each chainer caches (LRU over tenants).
    pub head_cache_tenants: usize,
    /// How long a stopping distributed chainer waits for its partitions to finish the
    /// batches they hold; what is left is replayed by the next owner.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
}

/// `[log]`: the verifiable log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Name of the verifiable log: the signing key's name, and the prefix of every
    /// checkpoint origin (`<origin>/<tenant_id>`). A schema-less URL is customary,
    /// e.g. `audit.example.com`; no spaces or `+`.
    pub origin: String,
    /// File holding the log's Ed25519 signing key (C2SP signed-note format). Default:
    /// `<data_dir>/log-key.private`, created with a fresh random key on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Longest a served checkpoint lags the log while events arrive; with witnesses, also
    /// how often each written tenant's checkpoint is signed and sent to them.
    #[serde(with = "duration")]
    pub checkpoint_interval: Duration,
    /// Witnesses every new checkpoint is sent to (C2SP tlog-witness), each as `URL=VKEY`.
    /// `--witness` (repeatable) on `serve` and `gateway` replaces the list.
    pub witnesses: Vec<String>,
}

/// `[embedded]`: the embedded mode's queue and the fjall store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedSection {
    /// Ingest requests each partition may queue before answering 503 + Retry-After.
    pub queue_capacity: usize,
    /// Size at which the fjall store's log (`<data_dir>/log/`) starts a new segment file.
    #[serde(with = "size")]
    pub segment_size: ByteSize,
    /// How far past its last frame the log's last segment is kept zero-filled (and synced)
    /// by a background thread, so a commit's `fdatasync` overwrites blocks instead of
    /// growing the file; 0: off.
    #[serde(with = "size")]
    pub log_preallocation: ByteSize,
    /// How much of the log's newest sealed segments is left in the OS page cache; older
    /// segments are dropped from it (reads of them go to the disk); 0: off.
    #[serde(with = "size")]
    pub log_page_cache: ByteSize,
    /// Acknowledged records not yet in the fjall indexes that memory may hold; past it
    /// commits wait for the indexer.
    #[serde(with = "size")]
    pub index_lag: ByteSize,
    /// What the fjall memtables take in before they are sealed and flushed (they hold at
    /// most 5× this).
    #[serde(with = "size")]
    pub fjall_write_buffer: ByteSize,
    /// Hard limit of the fjall journal (at least 64 MiB and twice the write buffer); also
    /// bounds restart time.
    #[serde(with = "size")]
    pub fjall_journal: ByteSize,
    /// fjall block cache for reads.
    #[serde(with = "size")]
    pub fjall_cache: ByteSize,
    /// fjall background threads that flush and compact.
    pub fjall_worker_threads: usize,
    /// How long the fjall store's writer waits for more before a commit while it is busy
    /// with small commits (single events); `0s` never waits.
    #[serde(with = "duration")]
    pub commit_delay: Duration,
    /// Free space the data directory's disk must keep; below it writes are refused with
    /// `507 insufficient_storage`. 0: the floor is off.
    #[serde(with = "size")]
    pub min_free_disk: ByteSize,
}

/// `[retention]`: the policy of tenants without their own, and the pruner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// Keep records for this many days (by `created_at`). Unset: forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// Keep the last this many records. Unset: no limit. With `days`, whichever removes more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// How often the pruner applies the retention policies.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Directory the records a prune removes are written to first, as evidence packs.
    /// Unset: not archived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
}

/// `[stream]`: log streams (embedded mode for now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSection {
    /// Allow destinations on loopback, private and other special-purpose addresses, and
    /// plain `http://` (local receivers, tests). Off: `https://` to public addresses only.
    pub allow_private: bool,
    /// How long a destination may keep failing before it is paused (and reported).
    #[serde(with = "duration")]
    pub pause_after: Duration,
    /// Most records in one delivery.
    pub max_batch: usize,
    /// How long one delivery may take before it counts as failed.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// PEM file of certificates trusted as roots for destinations, besides the public
    /// web roots (a private CA). Unset: the public roots only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// File of the 32-byte key that seals the destinations' secrets (raw, or 64 hex
    /// digits). Unset: embedded mode keeps it in `<data_dir>/stream-secrets.key` (made at
    /// the first start); distributed mode keeps one in the keyspace (made by `migrate`),
    /// which every gateway and chainer reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Default for StreamSection {
    /// The API's defaults, stated once there.
    fn default() -> Self {
        let api = sealtrail_api::streams::StreamConfig::default();
        Self {
            allow_private: api.allow_private,
            pause_after: api.pause_after,
            max_batch: api.max_batch,
            request_timeout: api.request_timeout,
            ca_file: None,
            key_file: None,
        }
    }
}

impl StreamSection {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=10_000).contains(&self.max_batch),
            "max_batch must be 1 to 10000, not {}",
            self.max_batch
        );
        anyhow::ensure!(
            self.request_timeout >= Duration::from_millis(100),
            "request_timeout must be at least 100ms"
        );
        anyhow::ensure!(
            self.pause_after >= Duration::from_secs(1),
            "pause_after must be at least 1s"
        );
        Ok(())
    }

    /// The key in `key_file`, if one is configured (it must exist: processes that shared
    /// a key made each on its own would not open each other's secrets).
    pub fn configured_key(&self) -> anyhow::Result<Option<[u8; 32]>> {
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "reading stream.key_file {} (make one with `head -c 32 /dev/urandom > FILE`)",
                path.display()
            )
        })?;
        Ok(Some(parse_stream_key(&bytes).ok_or_else(|| {
            anyhow::anyhow!(
                "stream.key_file {} holds no key: 32 bytes, or 64 hex digits",
                path.display()
            )
        })?))
    }

    /// The settings the API's log streams take (reads `ca_file`).
    pub fn settings(&self) -> anyhow::Result<sealtrail_api::streams::StreamConfig> {
        let extra_roots_pem = match &self.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading stream.ca_file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(sealtrail_api::streams::StreamConfig {
            allow_private: self.allow_private,
            pause_after: self.pause_after,
            max_batch: self.max_batch,
            request_timeout: self.request_timeout,
            extra_roots_pem,
        })
    }
}

/// A stream key: 32 raw bytes, or 64 hex digits (surrounding white space ignored).
pub fn parse_stream_key(bytes: &[u8]) -> Option<[u8; 32]> {
    if let Ok(key) = <[u8; 32]>::try_from(bytes) {
        return Some(key);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key).ok()?;
    Some(key)
}

/// `[kafka]`: distributed mode's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The events topic: one entry per ingest request, partitioned by tenant.
    pub topic: String,
    /// The topic that carries sync replies from chainers to gateways.
    pub reply_topic: String,
    /// Partitions of the reply topic (`migrate` creates it; each gateway reads one).
    pub reply_partitions: u32,
    /// Where a chainer puts an entry it cannot chain. Empty: `<topic>-dead-letter`.
    pub dead_letter_topic: String,
    /// Consumer group the chainers share.
    pub group_id: String,
    /// Replication factor `migrate` gives the topics (3 in production; 1 on one broker).
    pub replication_factor: u32,
    /// How long a silent chainer keeps its partitions before the group moves them.
    #[serde(with = "duration")]
    pub session_timeout: Duration,
    /// Longest a chainer may go without polling (`max.poll.interval.ms`, at least
    /// `session_timeout`).
    #[serde(with = "duration")]
    pub max_poll_interval: Duration,
    /// Static group membership for a chainer (`group.instance.id`). Empty: dynamic.
    pub group_instance_id: String,
    /// This gateway's id on the reply topic; empty: `<hostname>-<random>` per process.
    pub gateway_id: String,
    /// How long a gateway's producer gathers entries into one Kafka request
    /// (`linger.ms`, 0 to 1s): longer adds up to this much to every write's latency and
    /// saves the gateway's and the brokers' CPU when many small requests arrive.
    #[serde(with = "duration")]
    pub producer_linger: Duration,
}

/// `[scylla]`: distributed mode's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaSection {
    /// Contact points, comma-separated `host:port`.
    pub nodes: String,
    /// Keyspace holding events, heads, receipts and keys.
    pub keyspace: String,
    /// Consistency of reads and writes: `local_quorum` (production, RF 3), `quorum` or `one`.
    pub consistency: ScyllaConsistency,
    /// Replication factor `migrate` gives a new keyspace (SimpleStrategy).
    pub replication_factor: u32,
    /// Timeout of one request.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./sealtrail-data"),
            store: StoreEngine::Fjall,
            log_level: "info".into(),
            api: ApiSection::default(),
            chainer: ChainerSection::default(),
            log: LogSection::default(),
            embedded: EmbeddedSection::default(),
            retention: RetentionSection::default(),
            stream: StreamSection::default(),
            kafka: KafkaSection::default(),
            scylla: ScyllaSection::default(),
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            commit_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            stream_poll_interval: Duration::from_millis(500),
            max_connections: 2048,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_size: ByteSize::kib(32),
            tls_cert_file: None,
            tls_key_file: None,
            rate_limit_per_key: 10_000,
            rate_limit_per_tenant: 20_000,
            max_heavy_per_key: 4,
            max_streams_per_key: 32,
            max_full_verifications: 2,
            key_cache_ttl: Duration::from_secs(1),
            key_cache_grace: Duration::from_secs(60),
        }
    }
}

impl Default for ChainerSection {
    fn default() -> Self {
        Self {
            partitions: 4,
            max_batch_events: 4096,
            head_cache_tenants: 100_000,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            origin: "sealtrail.local".into(),
            key_file: None,
            checkpoint_interval: Duration::from_secs(1),
            witnesses: Vec::new(),
        }
    }
}

impl Default for EmbeddedSection {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            segment_size: ByteSize::mib(64),
            log_preallocation: ByteSize::mib(8),
            log_page_cache: ByteSize::gib(1),
            index_lag: ByteSize::mib(16),
            fjall_write_buffer: ByteSize::mib(8),
            fjall_journal: ByteSize::mib(256),
            fjall_cache: ByteSize::mib(8),
            fjall_worker_threads: 1,
            commit_delay: Duration::from_micros(300),
            min_free_disk: ByteSize::gib(1),
        }
    }
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            days: None,
            events: None,
            interval: Duration::from_secs(3600),
            archive_dir: None,
        }
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "sealtrail-events".into(),
            reply_topic: "sealtrail-replies".into(),
            reply_partitions: 8,
            dead_letter_topic: String::new(),
            group_id: "sealtrail-chainers".into(),
            replication_factor: 1,
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            group_instance_id: String::new(),
            gateway_id: String::new(),
            producer_linger: Duration::from_millis(1),
        }
    }
}

impl Default for ScyllaSection {
    fn default() -> Self {
        Self {
            nodes: "127.0.0.1:9042".into(),
            keyspace: "sealtrail".into(),
            consistency: ScyllaConsistency::LocalQuorum,
            replication_factor: 1,
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    Fjall,
    Sqlite,
    /// ScyllaDB / Cassandra (distributed mode; `[scylla]` keys).
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

/// Durations in the configuration: a string with its unit (`"10s"`, `"500ms"`, `"5m"`,
/// `"1h 30m"`; humantime's syntax). A bare number is refused: it has no unit.
pub mod duration {
    use std::time::Duration;

    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    /// Parses a duration as the configuration spells it.
    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!("{text:?} is not a duration ({e}); write it with its unit, e.g. \"10s\", \"500ms\" or \"5m\"")
        })
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration with its unit, e.g. \"10s\", \"500ms\" or \"5m\"")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{v} has no unit; write e.g. \"{v}ms\" or \"{v}s\""
            )))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{v} has no unit; write e.g. \"{v}ms\" or \"{v}s\""
            )))
        }
    }
}

/// Sizes in the configuration: a string with its unit (`"64 MiB"`, `"1 GiB"`; KiB, MiB,
/// GiB are powers of 1024, KB, MB, GB of 1000) or a number of bytes.
pub mod size {
    use bytesize::ByteSize;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    /// Written in the largest binary unit that divides it (`64 MiB`), else in bytes.
    pub fn serialize<S: Serializer>(value: &ByteSize, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = value.as_u64();
        for (unit, name) in [
            (1u64 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ] {
            if bytes >= unit && bytes.is_multiple_of(unit) {
                return serializer.serialize_str(&format!("{} {name}", bytes / unit));
            }
        }
        serializer.serialize_u64(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = ByteSize;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a size, e.g. \"64 MiB\" or \"1 GiB\", or a number of bytes")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<ByteSize, E> {
            v.trim().parse::<ByteSize>().map_err(|_| {
                E::custom(format!(
                    "{v:?} is not a size; write e.g. \"64 MiB\" or \"1 GiB\" (KiB, MiB, GiB are powers of 1024; KB, MB, GB of 1000)"
                ))
            })
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<ByteSize, E> {
            Ok(ByteSize::b(v))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<ByteSize, E> {
            u64::try_from(v)
                .map(ByteSize::b)
                .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
        }
    }
}

/// The field names of a struct, read off its serde definition.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.expect("a struct")
}

/// The keys of a section of [`Config`] (`None`: a top-level key, not a section).
fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "api" => field_names::<ApiSection>(),
        "chainer" => field_names::<ChainerSection>(),
        "log" => field_names::<LogSection>(),
        "embedded" => field_names::<EmbeddedSection>(),
        "retention" => field_names::<RetentionSection>(),
        "stream" => field_names::<StreamSection>(),
        "kafka" => field_names::<KafkaSection>(),
        "scylla" => field_names::<ScyllaSection>(),
        _ => return None,
    })
}

/// Every key, dotted (`data_dir`, `api.http_addr`, …), read off the serde definitions
/// (so no list is kept by hand). It relies on the derive handing every field name to
/// `deserialize_struct`, which holds while no struct has a `#[serde(flatten)]` (the tests
/// below would fail first).
pub fn keys() -> &'static [String] {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        for top in field_names::<Config>() {
            match section_keys(top) {
                Some(fields) => keys.extend(fields.iter().map(|f| format!("{top}.{f}"))),
                None => keys.push((*top).to_string()),
            }
        }
        keys
    })
}

/// The environment variable of a key: `SEALTRAIL_` and the dotted key in capitals, the dot
/// an underscore (`api.http_addr` → `SEALTRAIL_API_HTTP_ADDR`).
pub fn env_name(key: &str) -> String {
    format!("SEALTRAIL_{}", key.replace('.', "_").to_uppercase())
}

/// Keys that may come from the environment: all but the list `log.witnesses` (config file,
/// `--witness` or `--set`).
fn env_keys() -> impl Iterator<Item = &'static String> {
    keys().iter().filter(|k| *k != "log.witnesses")
}

/// How a key of before the sections is converted to its new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// The value as it was.
    Same,
    /// Milliseconds (a number) to a duration.
    Millis,
    /// MiB (a number) to a size.
    Mib,
}

/// The keys of before the sections (a flat list, durations in `_ms`, sizes in `_mb`) and
/// where each went. Kept working (file and `SEALTRAIL_<OLD_KEY>`) with a warning.
/// `data_dir`, `store` and `log_level` did not move.
const LEGACY: &[(&str, &str, Unit)] = &[
    ("http_addr", "api.http_addr", Unit::Same),
    ("grpc_addr", "api.grpc_addr", Unit::Same),
    ("commit_timeout_ms", "api.commit_timeout", Unit::Millis),
    (
        "stream_poll_interval_ms",
        "api.stream_poll_interval",
        Unit::Millis,
    ),
    ("max_connections", "api.max_connections", Unit::Same),
    (
        "header_read_timeout_ms",
        "api.header_read_timeout",
        Unit::Millis,
    ),
    (
        "body_read_timeout_ms",
        "api.body_read_timeout",
        Unit::Millis,
    ),
    ("max_header_bytes", "api.max_header_size", Unit::Same),
    ("tls_cert_file", "api.tls_cert_file", Unit::Same),
    ("tls_key_file", "api.tls_key_file", Unit::Same),
    ("rate_limit_per_key", "api.rate_limit_per_key", Unit::Same),
    (
        "rate_limit_per_tenant",
        "api.rate_limit_per_tenant",
        Unit::Same,
    ),
    ("max_heavy_per_key", "api.max_heavy_per_key", Unit::Same),
    ("max_streams_per_key", "api.max_streams_per_key", Unit::Same),
    (
        "max_full_verifications",
        "api.max_full_verifications",
        Unit::Same,
    ),
    ("key_cache_ttl_ms", "api.key_cache_ttl", Unit::Millis),
    ("key_cache_grace_ms", "api.key_cache_grace", Unit::Millis),
    ("partitions", "chainer.partitions", Unit::Same),
    ("max_batch_events", "chainer.max_batch_events", Unit::Same),
    (
        "head_cache_tenants",
        "chainer.head_cache_tenants",
        Unit::Same,
    ),
    ("log_origin", "log.origin", Unit::Same),
    ("log_key_file", "log.key_file", Unit::Same),
    (
        "checkpoint_interval_ms",
        "log.checkpoint_interval",
        Unit::Millis,
    ),
    ("witnesses", "log.witnesses", Unit::Same),
    ("queue_capacity", "embedded.queue_capacity", Unit::Same),
    ("segment_mb", "embedded.segment_size", Unit::Mib),
    ("index_lag_mb", "embedded.index_lag", Unit::Mib),
    (
        "fjall_write_buffer_mb",
        "embedded.fjall_write_buffer",
        Unit::Mib,
    ),
    ("fjall_journal_mb", "embedded.fjall_journal", Unit::Mib),
    ("fjall_cache_mb", "embedded.fjall_cache", Unit::Mib),
    (
        "fjall_worker_threads",
        "embedded.fjall_worker_threads",
        Unit::Same,
    ),
    ("min_free_disk_mb", "embedded.min_free_disk", Unit::Mib),
    ("retention_days", "retention.days", Unit::Same),
    ("retention_events", "retention.events", Unit::Same),
    ("retention_interval_ms", "retention.interval", Unit::Millis),
    ("retention_archive_dir", "retention.archive_dir", Unit::Same),
    ("kafka_brokers", "kafka.brokers", Unit::Same),
    ("kafka_topic", "kafka.topic", Unit::Same),
    ("kafka_reply_topic", "kafka.reply_topic", Unit::Same),
    (
        "kafka_reply_partitions",
        "kafka.reply_partitions",
        Unit::Same,
    ),
    (
        "kafka_dead_letter_topic",
        "kafka.dead_letter_topic",
        Unit::Same,
    ),
    ("kafka_group_id", "kafka.group_id", Unit::Same),
    (
        "kafka_replication_factor",
        "kafka.replication_factor",
        Unit::Same,
    ),
    (
        "kafka_session_timeout_ms",
        "kafka.session_timeout",
        Unit::Millis,
    ),
    (
        "kafka_max_poll_interval_ms",
        "kafka.max_poll_interval",
        Unit::Millis,
    ),
    (
        "kafka_group_instance_id",
        "kafka.group_instance_id",
        Unit::Same,
    ),
    ("gateway_id", "kafka.gateway_id", Unit::Same),
    ("scylla_nodes", "scylla.nodes", Unit::Same),
    ("scylla_keyspace", "scylla.keyspace", Unit::Same),
    ("scylla_consistency", "scylla.consistency", Unit::Same),
    (
        "scylla_replication_factor",
        "scylla.replication_factor",
        Unit::Same,
    ),
    (
        "scylla_request_timeout_ms",
        "scylla.request_timeout",
        Unit::Millis,
    ),
];

impl Unit {
    fn convert(self, old: &str, value: toml::Value) -> anyhow::Result<toml::Value> {
        let number = |value: &toml::Value| {
            value
                .as_integer()
                .filter(|n| *n >= 0)
                .with_context(|| format!("`{old}` must be a whole number, not {value}"))
        };
        Ok(match self {
            Unit::Same => value,
            Unit::Millis => toml::Value::String(format!("{}ms", number(&value)?)),
            Unit::Mib => toml::Value::String(format!("{} MiB", number(&value)?)),
        })
    }
}

/// A value of `key` given as text (environment, `--set`). A key whose value is text (a
/// name, an address, a path, a duration, a size) takes the text as it is; any other
/// (a number, a boolean, a list) reads it as a TOML value, or as text if it is none (for
/// the error to name it).
fn text_value(key: &str, text: &str) -> toml::Value {
    let as_text = toml::Value::String(text.to_string());
    if is_text(key) {
        return as_text;
    }
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or(as_text)
}

/// A value of a key of before the sections given as text: milliseconds and MiB are
/// numbers (converted later), anything else as [`text_value`] reads the new key's.
fn legacy_text_value(unit: Unit, new: &str, text: &str) -> toml::Value {
    match unit {
        Unit::Same => text_value(new, text),
        Unit::Millis | Unit::Mib => text
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(text.to_string())),
    }
}

/// Whether `key`'s value is written as a string: its default is one, or it is a file or a
/// directory (unset by default).
fn is_text(key: &str) -> bool {
    static DEFAULTS: std::sync::OnceLock<toml::Table> = std::sync::OnceLock::new();
    let defaults = DEFAULTS
        .get_or_init(|| toml::Table::try_from(Config::default()).expect("the defaults serialize"));
    let default = match key.split_once('.') {
        Some((section, name)) => defaults.get(section).and_then(|s| s.get(name)),
        None => defaults.get(key),
    };
    match default {
        Some(value) => value.is_str(),
        None => key.ends_with("_file") || key.ends_with("_dir"),
    }
}

/// Puts `value` at the dotted `key` of `table`, creating sections as needed.
fn insert_path(table: &mut toml::Table, key: &str, value: toml::Value) -> anyhow::Result<()> {
    let (section, name) = match key.split_once('.') {
        Some((section, name)) => (Some(section), name),
        None => (None, key),
    };
    let target = match section {
        None => table,
        Some(section) => match table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => t,
            other => anyhow::bail!("`{section}` is a section ([{section}]), not {other}"),
        },
    };
    target.insert(name.to_string(), value);
    Ok(())
}

fn has_path(table: &toml::Table, key: &str) -> bool {
    match key.split_once('.') {
        Some((section, name)) => table
            .get(section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key(name)),
        None => table.contains_key(key),
    }
}

/// Moves the keys of before the sections in `table` to their new places (converted),
/// with a warning each. Both an old key and its new one is an error.
fn migrate_legacy(
    table: &mut toml::Table,
    source: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<()> {
    for (old, new, unit) in LEGACY {
        let Some(value) = table.remove(*old) else {
            continue;
        };
        anyhow::ensure!(
            !has_path(table, new),
            "{source} sets both `{old}` and its new key `{new}`: keep `{new}`"
        );
        let value = unit.convert(old, value)?;
        let (section, name) = new
            .split_once('.')
            .expect("legacy keys moved into sections");
        warnings.push(format!(
            "{source}: `{old}` is now `{name} = {value}` in [{section}] (the old key still works, for now)"
        ));
        insert_path(table, new, value)?;
    }
    Ok(())
}

/// The configuration from `SEALTRAIL_*` variables: the current names, then (below them)
/// the names of before the sections, converted, with a warning each.
fn environment(
    vars: &[(String, String)],
    warnings: &mut Vec<String>,
) -> anyhow::Result<(toml::Table, toml::Table)> {
    let current: std::collections::HashMap<String, &String> =
        env_keys().map(|k| (env_name(k), k)).collect();
    let (mut now, mut old) = (toml::Table::new(), toml::Table::new());
    for (name, text) in vars {
        let (name, text) = (name.as_str(), text.as_str());
        if let Some(key) = current.get(name) {
            insert_path(&mut now, key, text_value(key, text))?;
            continue;
        }
        let Some((legacy, new, unit)) = LEGACY.iter().find(|(legacy, ..)| env_name(legacy) == name)
        else {
            continue; // not a configuration variable (SEALTRAIL_CONFIG, a client's, a test's)
        };
        if *legacy == "witnesses" {
            continue;
        }
        let value = unit
            .convert(name, legacy_text_value(*unit, new, text))
            .with_context(|| format!("environment variable {name}"))?;
        warnings.push(format!(
            "{name} is now {} (the old name still works, for now)",
            env_name(new)
        ));
        insert_path(&mut old, new, value)?;
    }
    Ok((now, old))
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

/// Keys set on the command line: the named flags ([`Overrides::set`]) and `--set KEY=VALUE`
/// ([`Overrides::assign`]); they override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides(toml::Table);

impl Overrides {
    /// Sets `key` (dotted, one of [`keys`]) to `value` if there is one.
    pub fn set<T: Serialize>(mut self, key: &str, value: Option<T>) -> Self {
        debug_assert!(
            keys().iter().any(|k| k == key),
            "{key} is no configuration key"
        );
        if let Some(value) = value {
            let value = toml::Value::try_from(value).expect("a flag's value serializes");
            insert_path(&mut self.0, key, value).expect("keys are sections or top-level");
        }
        self
    }

    /// `--set KEY=VALUE`, each: the key dotted (`api.commit_timeout`), the value as in a
    /// config file but unquoted strings allowed (`--set api.commit_timeout=5s`).
    pub fn assign(mut self, assignments: &[String]) -> anyhow::Result<Self> {
        for assignment in assignments {
            let (key, text) = assignment.split_once('=').with_context(|| {
                format!("--set {assignment:?}: write KEY=VALUE, e.g. --set api.commit_timeout=5s")
            })?;
            let key = key.trim();
            anyhow::ensure!(
                keys().iter().any(|k| k == key),
                "--set {key}: no such configuration key (`sealtrail config defaults` lists them, dotted by section: api.http_addr)"
            );
            insert_path(&mut self.0, key, text_value(key, text.trim()))?;
        }
        Ok(self)
    }
}

impl Config {
    /// The `log.witnesses` entries, parsed; an error names the bad one.
    pub fn witness_configs(&self) -> anyhow::Result<Vec<sealtrail_api::witnessing::WitnessConfig>> {
        self.log
            .witnesses
            .iter()
            .map(|w| sealtrail_api::witnessing::WitnessConfig::parse(w).map_err(anyhow::Error::msg))
            .collect()
    }

    /// Where the log's signing key lives.
    pub fn log_key_path(&self) -> PathBuf {
        self.log
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("log-key.private"))
    }

    /// The dead-letter topic: `kafka.dead_letter_topic`, or `<kafka.topic>-dead-letter`.
    pub fn dead_letter_topic(&self) -> String {
        if self.kafka.dead_letter_topic.is_empty() {
            format!("{}-dead-letter", self.kafka.topic)
        } else {
            self.kafka.dead_letter_topic.clone()
        }
    }

    /// Loads the layered configuration; warnings (keys of before the sections) go to stderr.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let (config, warnings) = Self::load_with_warnings(file, overrides)?;
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        Ok(config)
    }

    /// Loads the layered configuration, and says what in it is out of date.
    pub fn load_with_warnings(
        file: Option<&Path>,
        overrides: Overrides,
    ) -> anyhow::Result<(Self, Vec<String>)> {
        let mut vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("SEALTRAIL_"))
            .collect();
        vars.sort();
        Self::load_from(file, &vars, overrides)
    }

    /// Loads the layered configuration with `vars` as the environment.
    fn load_from(
        file: Option<&Path>,
        vars: &[(String, String)],
        overrides: Overrides,
    ) -> anyhow::Result<(Self, Vec<String>)> {
        let mut warnings = Vec::new();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file = file.map(Path::to_path_buf).or_else(|| {
            vars.iter()
                .find(|(k, _)| k == "SEALTRAIL_CONFIG")
                .map(|(_, v)| PathBuf::from(v))
        });
        if let Some(path) = &file {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let mut table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            if LEGACY.iter().any(|(old, ..)| table.contains_key(*old)) {
                migrate_legacy(&mut table, &path.display().to_string(), &mut warnings)?;
                figment = figment.merge(Serialized::defaults(table));
            } else {
                figment = figment.merge(Toml::file(path));
            }
        }
        let (env, legacy_env) = environment(vars, &mut warnings)?;
        figment = figment
            .merge(Serialized::defaults(legacy_env))
            .merge(Serialized::defaults(env))
            .merge(Serialized::defaults(overrides.0));
        let config: Config = figment.extract().map_err(|e| {
            let errors: Vec<String> = e
                .into_iter()
                .map(|e| match e.path.join(".") {
                    path if path.is_empty() => e.kind.to_string(),
                    path => format!("`{path}`: {}", e.kind),
                })
                .collect();
            anyhow::anyhow!(
                "invalid configuration: {}\n(run `sealtrail config defaults` to see every key and its default)",
                errors.join("; ")
            )
        })?;
        config.check()?;
        Ok((config, warnings))
    }

    /// Checks each section's values, then what spans sections.
    pub fn check(&self) -> anyhow::Result<()> {
        self.api.check().context("[api]")?;
        self.chainer.check().context("[chainer]")?;
        self.log.check().context("[log]")?;
        self.embedded.check().context("[embedded]")?;
        self.retention.check().context("[retention]")?;
        self.stream.check().context("[stream]")?;
        self.kafka.check().context("[kafka]")?;
        self.scylla.check().context("[scylla]")?;
        anyhow::ensure!(
            self.dead_letter_topic() != self.kafka.topic
                && self.dead_letter_topic() != self.kafka.reply_topic,
            "kafka.dead_letter_topic must differ from kafka.topic and kafka.reply_topic"
        );
        Ok(())
    }

    /// The TLS identity from `api.tls_cert_file` and `api.tls_key_file` (`None` when unset).
    pub fn tls(&self) -> anyhow::Result<Option<std::sync::Arc<sealtrail_api::tls::TlsEdge>>> {
        let (Some(cert), Some(key)) = (&self.api.tls_cert_file, &self.api.tls_key_file) else {
            return Ok(None);
        };
        let files = sealtrail_api::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let tls = sealtrail_api::tls::TlsEdge::load(files).map_err(|e| anyhow::anyhow!(e))?;
        Ok(Some(std::sync::Arc::new(tls)))
    }

    /// The fjall store's limits from `[embedded]`.
    pub fn fjall_limits(&self) -> sealtrail_store::fjall::FjallLimits {
        let e = &self.embedded;
        sealtrail_store::fjall::FjallLimits {
            write_buffer_bytes: e.fjall_write_buffer.as_u64(),
            journal_bytes: e.fjall_journal.as_u64(),
            cache_bytes: e.fjall_cache.as_u64(),
            worker_threads: e.fjall_worker_threads,
            min_free_disk_bytes: e.min_free_disk.as_u64(),
            segment_bytes: e.segment_size.as_u64(),
            preallocate_bytes: e.log_preallocation.as_u64(),
            log_page_cache_bytes: e.log_page_cache.as_u64(),
            tail_bytes: e.index_lag.as_u64(),
            commit_delay: e.commit_delay,
        }
    }

    /// The retention settings (`[retention]`).
    pub fn retention(&self) -> sealtrail_api::retention::RetentionConfig {
        sealtrail_api::retention::RetentionConfig {
            default: sealtrail_store::RetentionPolicy {
                days: self.retention.days,
                events: self.retention.events,
            },
            interval: self.retention.interval,
            archive_dir: self.retention.archive_dir.clone(),
        }
    }

    /// The per-key quotas from `api.rate_limit_*` and `api.max_*_per_key`.
    pub fn quotas(&self) -> sealtrail_api::quota::QuotaConfig {
        sealtrail_api::quota::QuotaConfig {
            per_key: self.api.rate_limit_per_key,
            per_tenant: self.api.rate_limit_per_tenant,
            heavy_per_key: self.api.max_heavy_per_key.max(1),
            streams_per_key: self.api.max_streams_per_key.max(1),
        }
    }

    /// The defaults as a TOML file.
    pub fn defaults_toml() -> String {
        let body = toml::to_string(&Config::default()).expect("defaults serialize");
        format!(
            "# sealtrail configuration; every key is optional. Environment: SEALTRAIL_<SECTION>_<KEY>\n# (SEALTRAIL_API_HTTP_ADDR); flags (--set api.http_addr=...) override both.\n{body}"
        )
    }
}

const MIB: u64 = 1 << 20;

impl ApiSection {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_connections >= 16,
            "max_connections must be at least 16, not {}",
            self.max_connections
        );
        for (name, value) in [
            ("body_read_timeout", self.body_read_timeout),
            ("header_read_timeout", self.header_read_timeout),
        ] {
            anyhow::ensure!(
                value >= Duration::from_millis(100),
                "{name} must be at least 100ms, not {}",
                humantime::format_duration(value)
            );
        }
        anyhow::ensure!(
            (8192..=1 << 20).contains(&self.max_header_size.as_u64()),
            "max_header_size must be 8 KiB to 1 MiB, not {} bytes",
            self.max_header_size.as_u64()
        );
        anyhow::ensure!(
            self.commit_timeout >= Duration::from_millis(1),
            "commit_timeout must be at least 1ms"
        );
        anyhow::ensure!(
            self.stream_poll_interval >= Duration::from_millis(10),
            "stream_poll_interval must be at least 10ms"
        );
        anyhow::ensure!(
            self.tls_cert_file.is_some() == self.tls_key_file.is_some(),
            "tls_cert_file and tls_key_file go together: set both for TLS, or neither"
        );
        Ok(())
    }
}

impl ChainerSection {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=256).contains(&self.partitions),
            "partitions must be 1 to 256, not {}",
            self.partitions
        );
        anyhow::ensure!(
            self.max_batch_events >= 1000,
            "max_batch_events must be at least 1000 (one full batch)"
        );
        anyhow::ensure!(
            self.head_cache_tenants > 0,
            "head_cache_tenants must be at least 1"
        );
        Ok(())
    }
}

impl LogSection {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.origin.is_empty()
                && !self.origin.contains('+')
                && !self.origin.chars().any(char::is_whitespace),
            "origin {:?} must be non-empty, without spaces or '+'",
            self.origin
        );
        anyhow::ensure!(
            self.checkpoint_interval >= Duration::from_millis(10),
            "checkpoint_interval must be at least 10ms"
        );
        for witness in &self.witnesses {
            sealtrail_api::witnessing::WitnessConfig::parse(witness)
                .map_err(|e| anyhow::anyhow!("witnesses: {e}"))?;
        }
        Ok(())
    }
}

impl EmbeddedSection {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.queue_capacity > 0, "queue_capacity must be at least 1");
        for (name, value) in [
            ("fjall_write_buffer", self.fjall_write_buffer),
            ("segment_size", self.segment_size),
            ("index_lag", self.index_lag),
        ] {
            anyhow::ensure!(
                (MIB..=4096 * MIB).contains(&value.as_u64()),
                "{name} must be 1 MiB to 4 GiB, not {} bytes",
                value.as_u64()
            );
        }
        anyhow::ensure!(
            self.log_preallocation.as_u64() <= 1024 * MIB,
            "log_preallocation must be at most 1 GiB (0 turns it off), not {} bytes",
            self.log_preallocation.as_u64()
        );
        anyhow::ensure!(
            (1..=64).contains(&self.fjall_worker_threads),
            "fjall_worker_threads must be 1 to 64, not {}",
            self.fjall_worker_threads
        );
        anyhow::ensure!(
            self.commit_delay <= Duration::from_millis(10),
            "commit_delay must be at most 10ms (it is added to every small commit while the store is busy), not {:?}",
            self.commit_delay
        );
        anyhow::ensure!(
            self.fjall_journal.as_u64() >= 64 * MIB
                && self.fjall_journal.as_u64() >= 2 * self.fjall_write_buffer.as_u64(),
            "fjall_journal ({} bytes) must be at least 64 MiB (fjall's minimum) and at least twice fjall_write_buffer ({} bytes): the journal holds what the memtables hold",
            self.fjall_journal.as_u64(),
            self.fjall_write_buffer.as_u64()
        );
        Ok(())
    }
}

impl RetentionSection {
    fn check(&self) -> anyhow::Result<()> {
        sealtrail_api::retention::checked_policy(self.days, self.events)
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            self.interval >= Duration::from_secs(1),
            "interval must be at least 1s"
        );
        Ok(())
    }
}

impl KafkaSection {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.session_timeout >= Duration::from_secs(6),
            "session_timeout must be at least 6s (the brokers' minimum)"
        );
        anyhow::ensure!(
            self.max_poll_interval >= self.session_timeout,
            "max_poll_interval ({}) must be at least session_timeout ({})",
            humantime::format_duration(self.max_poll_interval),
            humantime::format_duration(self.session_timeout)
        );
        anyhow::ensure!(
            self.reply_partitions > 0 && self.replication_factor > 0,
            "reply_partitions and replication_factor must be at least 1"
        );
        anyhow::ensure!(
            self.producer_linger <= Duration::from_secs(1),
            "producer_linger must be at most 1s, not {} (it delays every write)",
            humantime::format_duration(self.producer_linger)
        );
        Ok(())
    }
}

impl ScyllaSection {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.replication_factor > 0,
            "replication_factor must be at least 1"
        );
        anyhow::ensure!(
            self.request_timeout >= Duration::from_millis(100),
            "request_timeout must be at least 100ms"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn layers_file_env_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "[chainer]\npartitions = 3\n[api]\nhttp_addr = \"127.0.0.1:9000\"\ncommit_timeout = \"2s\"\n[embedded]\nfjall_cache = \"12 MiB\"\n",
        );
        let env = vars(&[
            ("SEALTRAIL_API_COMMIT_TIMEOUT", "750ms"),
            ("SEALTRAIL_KAFKA_BROKERS", "k1:9092,k2:9092"),
            ("SEALTRAIL_API_KEY", "a client's, not a key"),
            ("SEALTRAIL_LOG_ORIGIN", "2024-01-01"),
            ("SEALTRAIL_API_MAX_HEAVY_PER_KEY", "9"),
        ]);
        let (c, warnings) = Config::load_from(
            Some(&file),
            &env,
            Overrides::default()
                .set("api.http_addr", Some("127.0.0.1:9100"))
                .assign(&[
                    "api.max_connections=64".into(),
                    "kafka.gateway_id=123".into(),
                    "kafka.producer_linger=5ms".into(),
                    "scylla.keyspace=\"quoted\"".into(),
                ])
                .unwrap(),
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.chainer.partitions, 3);
        assert_eq!(c.api.http_addr, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.api.commit_timeout, Duration::from_millis(750));
        assert_eq!(c.api.max_connections, 64);
        assert_eq!(
            c.log.origin, "2024-01-01",
            "text stays text, though it reads as a TOML date"
        );
        assert_eq!(
            c.kafka.gateway_id, "123",
            "text stays text, though it reads as a number"
        );
        assert_eq!(c.scylla.keyspace, "\"quoted\"", "text is taken as it is");
        assert_eq!(c.kafka.producer_linger, Duration::from_millis(5));
        assert_eq!(c.api.max_heavy_per_key, 9);
        assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(c.embedded.fjall_cache, ByteSize::mib(12));
        assert_eq!(c.data_dir, PathBuf::from("./sealtrail-data"));
    }

    #[test]
    fn keys_of_before_the_sections_are_moved_converted_and_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "partitions = 3\ncommit_timeout_ms = 2500\nfjall_cache_mb = 12\nmax_header_bytes = 16384\nkafka_brokers = \"k:1\"\nwitnesses = []\n",
        );
        let env = vars(&[
            ("SEALTRAIL_HTTP_ADDR", "127.0.0.1:9200"),
            ("SEALTRAIL_KAFKA_SESSION_TIMEOUT_MS", "12000"),
        ]);
        let (c, warnings) = Config::load_from(Some(&file), &env, Overrides::default()).unwrap();
        assert_eq!(c.chainer.partitions, 3);
        assert_eq!(c.api.commit_timeout, Duration::from_millis(2500));
        assert_eq!(c.embedded.fjall_cache, ByteSize::mib(12));
        assert_eq!(c.api.max_header_size, ByteSize::kib(16));
        assert_eq!(c.kafka.brokers, "k:1");
        assert_eq!(c.api.http_addr, "127.0.0.1:9200".parse().unwrap());
        assert_eq!(c.kafka.session_timeout, Duration::from_secs(12));
        assert_eq!(warnings.len(), 8, "{warnings:#?}");
        assert!(
            warnings
                .iter()
                .any(|w| w
                    .contains("`commit_timeout_ms` is now `commit_timeout = \"2500ms\"` in [api]")),
            "{warnings:#?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("SEALTRAIL_HTTP_ADDR is now SEALTRAIL_API_HTTP_ADDR")),
            "{warnings:#?}"
        );

        // an old key beside its new one is refused, not guessed at
        let file = write(&dir, "partitions = 3\n[chainer]\npartitions = 4\n");
        let err = Config::load_from(Some(&file), &[], Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("both `partitions`"), "{err}");
    }

    #[test]
    fn bad_keys_and_values_are_refused_with_what_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let err_of = |text: &str| {
            let file = write(&dir, text);
            format!(
                "{:#}",
                Config::load_from(Some(&file), &[], Overrides::default()).unwrap_err()
            )
        };
        let err = err_of("[chainer]\npartitons = 3\n");
        assert!(err.contains("partitons"), "{err}");
        let err = err_of("[api]\nhttp_addr = \"localhost\"\n");
        assert!(err.contains("http_addr"), "{err}");
        let err = err_of("[api]\ncommit_timeout = 5000\n");
        assert!(
            err.contains("5000 has no unit") && err.contains("\"5000ms\""),
            "{err}"
        );
        let err = err_of("[api]\ncommit_timeout = \"5 parsecs\"\n");
        assert!(err.contains("is not a duration"), "{err}");
        let err = err_of("[embedded]\nfjall_cache = \"8 MegaBytes\"\n");
        assert!(err.contains("is not a size"), "{err}");
        let err = err_of("[embedded]\nsegment_size = 64\n");
        assert!(
            err.contains("[embedded]") && err.contains("segment_size must be 1 MiB"),
            "{err}"
        );
        let err = err_of("[chainer]\npartitions = 0\n");
        assert!(
            err.contains("[chainer]") && err.contains("partitions must be 1 to 256"),
            "{err}"
        );
        let err = err_of("[log]\nwitnesses = [\"nonsense\"]\n");
        assert!(err.contains("[log]") && err.contains("witnesses"), "{err}");
        let err = format!(
            "{:#}",
            Overrides::default()
                .assign(&["api.nope=1".into()])
                .unwrap_err()
        );
        assert!(err.contains("no such configuration key"), "{err}");
    }

    #[test]
    fn the_dead_letter_topic_follows_the_events_topic_unless_set() {
        let mut c = Config::default();
        c.kafka.topic = "audit".into();
        assert_eq!(c.dead_letter_topic(), "audit-dead-letter");
        c.kafka.dead_letter_topic = "poison".into();
        assert_eq!(c.dead_letter_topic(), "poison");
        c.kafka.dead_letter_topic = "audit".into();
        assert!(
            c.check().is_err(),
            "the events topic is no dead-letter topic"
        );
        c.kafka.dead_letter_topic = String::new();
        c.kafka.max_poll_interval = c.kafka.session_timeout - Duration::from_millis(1);
        assert!(
            c.check().is_err(),
            "max poll interval below the session timeout"
        );
        c.kafka.max_poll_interval = c.kafka.session_timeout;
        c.kafka.producer_linger = Duration::from_secs(1);
        c.check().unwrap();
        c.kafka.producer_linger = Duration::from_millis(1001);
        let err = format!("{:#}", c.check().unwrap_err());
        assert!(err.contains("producer_linger must be at most 1s"), "{err}");
    }

    #[test]
    fn every_key_is_read_off_the_sections_has_its_own_variable_and_is_documented() {
        let keys = keys();
        // `sealtrail config defaults` prints every key but the optional ones unset by default
        let defaults: toml::Table = toml::from_str(&Config::defaults_toml()).unwrap();
        let mut printed = 0;
        let mut unset = Vec::new();
        for key in keys {
            if has_path(&defaults, key) {
                printed += 1;
            } else {
                unset.push(key.as_str());
            }
        }
        unset.sort();
        assert_eq!(
            unset,
            [
                "api.tls_cert_file",
                "api.tls_key_file",
                "log.key_file",
                "retention.archive_dir",
                "retention.days",
                "retention.events",
                "stream.ca_file",
                "stream.key_file",
            ]
        );
        // every table of the defaults is a section whose keys were read
        for (name, value) in &defaults {
            assert_eq!(
                value.is_table(),
                section_keys(name).is_some(),
                "{name}: a table in the defaults must be a section in section_keys, and back"
            );
        }
        let tables: usize = defaults
            .values()
            .map(|v| v.as_table().map_or(1, |t| t.len()))
            .sum();
        assert_eq!(tables, printed);

        // each key its own variable, and no variable of before the sections is taken by another key
        let names: std::collections::HashSet<_> = keys.iter().map(|k| env_name(k)).collect();
        assert_eq!(names.len(), keys.len());
        for (old, new, _) in LEGACY {
            assert!(
                keys.iter().any(|k| k == new),
                "{old} moved to {new}, which is no key"
            );
            if names.contains(&env_name(old)) {
                assert_eq!(
                    env_name(old),
                    env_name(new),
                    "{old}'s variable now names another key"
                );
            }
        }
        assert_eq!(env_keys().count(), keys.len() - 1);

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
        let text = Config::defaults_toml();
        assert!(text.contains("commit_timeout = \"10s\""), "{text}");
        assert!(text.contains("segment_size = \"64 MiB\""), "{text}");
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed, Config::default());
    }
}
