//! The `sealtrail` command: `serve` (embedded mode), `gateway`, `chainer` and `migrate`
//! (distributed mode), `keys`, `config`, `verify`, `backup` and `restore`, `witness`,
//! `monitor`, and `redact` (a client of a running server).
//!
//! A library too, for one reason: [`serve::start`] runs embedded mode in the calling
//! process (on listeners the caller bound), which the in-process API tests use. The
//! command itself is [`main`].
#![forbid(unsafe_code)]

mod backup_cmd;
pub mod config;
mod data_dir;
mod distributed;
mod keys_cmd;
mod monitor;
mod redact_cmd;
mod retention_cmd;
pub mod serve;
mod verify_cmd;
mod witness;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// sealtrail — a tamper-evident audit log with a fact0-compatible API.
///
/// Quick start: `sealtrail serve`, then in another terminal
/// `sealtrail keys create --tenant acme --scopes read,write` and send events to
/// http://127.0.0.1:8080/v1/events with `Authorization: Bearer <key>`.
#[derive(Parser)]
#[command(name = "sealtrail", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole service in one process (embedded mode): REST API, chainers and the
    /// local store in --data-dir. Stops gracefully on SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Distributed mode: a stateless API gateway. Validates and publishes events to Kafka,
    /// answers sync callers once a chainer committed them, serves reads from Scylla. Run
    /// any number behind a load balancer.
    Gateway(GatewayArgs),
    /// Distributed mode: chains the Kafka partitions the consumer group assigns to it and
    /// writes them to Scylla. Run several; partitions move when one stops.
    Chainer(ChainerArgs),
    /// Distributed mode: create or check the Kafka topics and the CQL keyspace (idempotent).
    Migrate(MigrateArgs),
    /// Create, list and revoke API keys (works while a server runs on the same data dir).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Verify an exported log or evidence pack offline: every hash, the chain, the
    /// Merkle tree against the signed checkpoint, and consistency with a kept one.
    /// Exit 0 when everything holds, 1 on the first failure, 2 when it cannot run.
    Verify(verify_cmd::VerifyArgs),
    /// Copy an embedded data directory to a new directory, consistently, while its server
    /// runs (or not): the log, API keys, identity and signing key.
    Backup(backup_cmd::BackupArgs),
    /// Bring a backup back into a new data directory; the server started on it rebuilds
    /// the indexes from the log and serves the same records and checkpoints.
    Restore(backup_cmd::RestoreArgs),
    /// A C2SP tlog-witness for sealtrail logs: its own key and data directory, no store.
    /// It cosigns a tenant's checkpoint only if it is consistent with the last one it
    /// cosigned for that tenant, so a log cannot show two histories.
    #[command(subcommand)]
    Witness(witness::WitnessCommand),
    /// Follow one tenant's log with a read key: every new checkpoint must verify with the
    /// log key and be consistent with the last one verified, and every new record must
    /// hash, chain and build the tree to its root. Exit 1 with a precise report on the
    /// first inconsistency; state kept in --state-dir.
    Monitor(monitor::MonitorArgs),
    /// Redact one record on a running server: erase its content for good, keep its place
    /// in the chain (needs a key with the admin scope).
    ///
    /// For personal data under an erasure request (e.g. GDPR Art. 17): the chain, proofs
    /// and checkpoints stay valid. The server appends a `sealtrail.event.redact` event
    /// naming the record, the key and --reason, then erases every field but id,
    /// tenant_id, sequence_number, prev_hash and hash. Prints the redacted record and the
    /// redaction event's id and sequence number. Exit 0 when committed (if the server had
    /// not finished the erasure when it answered, it says so: the erasure follows), 1
    /// with the server's message when it refuses, 2 when the server cannot be reached.
    ///
    /// Example: sealtrail redact evt_123 --reason "GDPR Art. 17 request 2026-114"
    /// --url http://127.0.0.1:8080 --api-key alk_live_…
    Redact(redact_cmd::RedactArgs),
    /// Retention: how long each tenant's records are kept before they are removed (the
    /// chain and every proof stay valid). Works on the data directory, with or without a
    /// running server.
    #[command(subcommand)]
    Retention(retention_cmd::RetentionCommand),
}

#[derive(Args, Clone, Default)]
pub(crate) struct Common {
    /// Configuration file (TOML); also SEALTRAIL_CONFIG.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory [default: ./sealtrail-data; env: SEALTRAIL_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// REST listen address [default: 127.0.0.1:8080; env: SEALTRAIL_HTTP_ADDR].
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:50051; env: SEALTRAIL_GRPC_ADDR].
    #[arg(long, value_name = "HOST:PORT")]
    grpc_addr: Option<String>,
    /// Partitions (parallel chainers) [default: 4; env: SEALTRAIL_PARTITIONS].
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// Event store: fjall or sqlite [default: fjall; env: SEALTRAIL_STORE]. Fixed when the
    /// data directory is created; another engine is refused.
    #[arg(long, value_enum)]
    store: Option<config::StoreEngine>,
    /// Sign checkpoints with a new log key although this data directory's were signed
    /// with another (the key file was lost, or a deliberate change). Checkpoints signed
    /// before will not verify with the new key; the change is logged.
    #[arg(long)]
    new_log_key: bool,
    #[command(flatten)]
    witnesses: WitnessArgs,
}

/// The witnesses checkpoints go to.
#[derive(Args, Clone, Default)]
struct WitnessArgs {
    /// A witness every new checkpoint is sent to, as URL=VKEY (its address, then the key
    /// `sealtrail witness init` printed); repeatable; replaces the `witnesses` config key.
    #[arg(long = "witness", value_name = "URL=VKEY")]
    witness: Vec<String>,
}

impl WitnessArgs {
    fn overrides(&self) -> Option<Vec<String>> {
        (!self.witness.is_empty()).then(|| self.witness.clone())
    }
}

/// Where Kafka and Scylla are (each also a config key and `SEALTRAIL_*` variable).
#[derive(Args, Clone, Default)]
struct ClusterArgs {
    /// Kafka bootstrap servers [default: 127.0.0.1:9092; env: SEALTRAIL_KAFKA_BROKERS].
    #[arg(long, value_name = "HOST:PORT,...")]
    kafka_brokers: Option<String>,
    /// Scylla/Cassandra contact points [default: 127.0.0.1:9042; env: SEALTRAIL_SCYLLA_NODES].
    #[arg(long, value_name = "HOST:PORT,...")]
    scylla_nodes: Option<String>,
    /// Keyspace [default: sealtrail; env: SEALTRAIL_SCYLLA_KEYSPACE].
    #[arg(long, value_name = "NAME")]
    keyspace: Option<String>,
}

#[derive(Args)]
struct GatewayArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// REST listen address [default: 127.0.0.1:8080; env: SEALTRAIL_HTTP_ADDR].
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:50051; env: SEALTRAIL_GRPC_ADDR].
    #[arg(long, value_name = "HOST:PORT")]
    grpc_addr: Option<String>,
    /// This gateway's id for sync replies [default: <hostname>-<random>; env: SEALTRAIL_GATEWAY_ID].
    #[arg(long, value_name = "ID")]
    gateway_id: Option<String>,
    #[command(flatten)]
    witnesses: WitnessArgs,
}

#[derive(Args)]
struct ChainerArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Address of the chainer's /healthz and /metrics [default: 127.0.0.1:8080; env: SEALTRAIL_HTTP_ADDR].
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<String>,
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Partitions of the events topic: the most chainers that can work at once. Fixed
    /// once migrated (tenants map to partitions by it) [default: 4; env: SEALTRAIL_PARTITIONS].
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// Replication factor of new topics [default: 1; env: SEALTRAIL_KAFKA_REPLICATION_FACTOR].
    #[arg(long, value_name = "N")]
    kafka_replication_factor: Option<u32>,
    /// Replication factor of a new keyspace [default: 1; env: SEALTRAIL_SCYLLA_REPLICATION_FACTOR].
    #[arg(long, value_name = "N")]
    scylla_replication_factor: Option<u32>,
}

/// Which store `keys` works on.
#[derive(Args, Clone, Default)]
pub(crate) struct KeyStoreArgs {
    /// fjall/sqlite: the data dir's key table; scylla: the cluster's [env: SEALTRAIL_STORE].
    #[arg(long, value_enum)]
    store: Option<config::StoreEngine>,
    /// Scylla/Cassandra contact points (with --store scylla) [env: SEALTRAIL_SCYLLA_NODES].
    #[arg(long, value_name = "HOST:PORT,...")]
    scylla_nodes: Option<String>,
    /// Keyspace (with --store scylla) [env: SEALTRAIL_SCYLLA_KEYSPACE].
    #[arg(long, value_name = "NAME")]
    keyspace: Option<String>,
}

impl KeyStoreArgs {
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            store: self.store,
            scylla_nodes: self.scylla_nodes.clone(),
            scylla_keyspace: self.keyspace.clone(),
            ..Default::default()
        }
    }
}

impl ClusterArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            kafka_brokers: self.kafka_brokers.clone(),
            scylla_nodes: self.scylla_nodes.clone(),
            scylla_keyspace: self.keyspace.clone(),
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key for a tenant; the key is printed once, as the last line of stdout.
    /// With --tenants-from, one key per listed tenant, printed as `TENANT<TAB>KEY` lines.
    Create {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: KeyStoreArgs,
        /// Tenant the key belongs to (1-128 of A-Z a-z 0-9 - _ . :).
        #[arg(
            long,
            required_unless_present = "tenants_from",
            conflicts_with = "tenants_from"
        )]
        tenant: Option<String>,
        /// Bulk provisioning: a file with one tenant per line (`-`: stdin). Every name is
        /// checked first; then the keys are created and printed to stdout as
        /// `TENANT<TAB>KEY`, in input order. Embedded stores create them in one SQLite
        /// transaction (all or none); Scylla one by one, so a failure part-way leaves the
        /// earlier keys created but unprinted: revoke them (`keys list --tenant`).
        #[arg(long, value_name = "FILE")]
        tenants_from: Option<std::path::PathBuf>,
        /// Comma-separated scopes: read (list, get, verify, stream), write (ingest), admin
        /// (redact; not implied by the others).
        #[arg(long, default_value = "read,write")]
        scopes: String,
    },
    /// List keys (ids, tenants, scopes, prefixes — never the keys).
    List {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: KeyStoreArgs,
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by its id (from `keys list`); takes effect within a second.
    Revoke {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: KeyStoreArgs,
        /// The key id, e.g. key_0123456789abcdef.
        key_id: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every configuration key with its default, as TOML.
    Defaults,
    /// Print the effective configuration (defaults < file < env < flags).
    Show {
        #[command(flatten)]
        common: Common,
    },
}

fn load(common: &Common, extra: Overrides) -> anyhow::Result<Config> {
    Config::load(
        common.config.as_deref(),
        Overrides {
            data_dir: common.data_dir.clone(),
            ..extra
        },
    )
}

/// The `sealtrail` command line: parses the arguments and runs the command.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify(args) => return verify_cmd::run(args),
        Command::Serve(args) => {
            let options = serve::ServeOptions {
                new_log_key: args.new_log_key,
            };
            load(
                &args.common,
                Overrides {
                    http_addr: args.http_addr,
                    grpc_addr: args.grpc_addr,
                    partitions: args.partitions,
                    store: args.store,
                    witnesses: args.witnesses.overrides(),
                    ..Default::default()
                },
            )
            .and_then(|config| serve::run(config, options))
        }
        Command::Gateway(args) => load(
            &args.common,
            Overrides {
                http_addr: args.http_addr,
                grpc_addr: args.grpc_addr,
                gateway_id: args.gateway_id,
                witnesses: args.witnesses.overrides(),
                ..args.cluster.overrides()
            },
        )
        .and_then(distributed::gateway),
        Command::Chainer(args) => load(
            &args.common,
            Overrides {
                http_addr: args.http_addr,
                ..args.cluster.overrides()
            },
        )
        .and_then(distributed::chainer),
        Command::Migrate(args) => load(
            &args.common,
            Overrides {
                partitions: args.partitions,
                kafka_replication_factor: args.kafka_replication_factor,
                scylla_replication_factor: args.scylla_replication_factor,
                ..args.cluster.overrides()
            },
        )
        .and_then(|config| {
            let partitions = config.partitions;
            distributed::migrate(config, partitions)
        }),
        Command::Keys(cmd) => keys_cmd::run(cmd),
        Command::Backup(args) => {
            load(&args.common, Overrides::default()).and_then(|c| backup_cmd::backup(c, &args))
        }
        Command::Restore(args) => backup_cmd::restore(&args),
        Command::Witness(cmd) => witness::run(cmd),
        Command::Monitor(args) => return monitor::run(args),
        Command::Redact(args) => return redact_cmd::run(args),
        Command::Retention(cmd) => retention_cmd::run(cmd),
        Command::Config(ConfigCommand::Defaults) => {
            print!("{}", Config::defaults_toml());
            Ok(())
        }
        Command::Config(ConfigCommand::Show { common }) => {
            load(&common, Overrides::default()).map(|c| {
                print!("{}", toml::to_string(&c).expect("config serializes"));
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
