//! The `sealtrail` command: `serve` (embedded mode), `gateway`, `chainer` and `migrate`
//! (distributed mode), `keys`, `config`, `verify`, `backup` and `restore`, `witness`,
//! `monitor`, and `redact` and `destinations` (clients of a running server).
//!
//! A library too, for one reason: [`serve::start`] runs embedded mode in the calling
//! process (on listeners the caller bound), which the in-process API tests use. The
//! command itself is [`main`].
#![forbid(unsafe_code)]

mod backup_cmd;
mod client;
pub mod config;
mod data_dir;
mod destinations_cmd;
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
    /// Log streams of a running server: destinations (webhook, Splunk HEC, syslog) that
    /// receive every committed record of the key's tenant, in order, at least once, with
    /// the checkpoint that covers each batch (needs a key with the admin scope).
    #[command(subcommand)]
    Destinations(destinations_cmd::DestinationsCommand),
}

#[derive(Args, Clone, Default)]
pub(crate) struct Common {
    /// Configuration file (TOML); also SEALTRAIL_CONFIG. `sealtrail config defaults` prints
    /// every key.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory [key: data_dir; default ./sealtrail-data].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Any configuration key, dotted by section, e.g. `--set api.commit_timeout=5s`
    /// (repeatable); overrides the file and the environment.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    listen: ListenArgs,
    /// Partitions (parallel chainers) [key: chainer.partitions].
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// Event store: fjall or sqlite [key: store]. Fixed when the data directory is
    /// created; another engine is refused.
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

/// Where the APIs listen.
#[derive(Args, Clone, Default)]
struct ListenArgs {
    /// REST listen address [key: api.http_addr].
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<std::net::SocketAddr>,
    /// gRPC listen address [key: api.grpc_addr].
    #[arg(long, value_name = "HOST:PORT")]
    grpc_addr: Option<std::net::SocketAddr>,
}

impl ListenArgs {
    fn overrides(&self, overrides: Overrides) -> Overrides {
        overrides
            .set("api.http_addr", self.http_addr)
            .set("api.grpc_addr", self.grpc_addr)
    }
}

/// The witnesses checkpoints go to.
#[derive(Args, Clone, Default)]
struct WitnessArgs {
    /// A witness every new checkpoint is sent to, as URL=VKEY (its address, then the key
    /// `sealtrail witness init` printed); repeatable; replaces the `log.witnesses` key.
    #[arg(long = "witness", value_name = "URL=VKEY")]
    witness: Vec<String>,
}

impl WitnessArgs {
    fn overrides(&self, overrides: Overrides) -> Overrides {
        overrides.set(
            "log.witnesses",
            (!self.witness.is_empty()).then(|| self.witness.clone()),
        )
    }
}

/// Where Kafka and Scylla are.
#[derive(Args, Clone, Default)]
struct ClusterArgs {
    /// Kafka bootstrap servers [key: kafka.brokers].
    #[arg(long, value_name = "HOST:PORT,...")]
    kafka_brokers: Option<String>,
    /// Scylla/Cassandra contact points [key: scylla.nodes].
    #[arg(long, value_name = "HOST:PORT,...")]
    scylla_nodes: Option<String>,
    /// Keyspace [key: scylla.keyspace].
    #[arg(long, value_name = "NAME")]
    keyspace: Option<String>,
}

impl ClusterArgs {
    fn overrides(&self) -> Overrides {
        Overrides::default()
            .set("kafka.brokers", self.kafka_brokers.clone())
            .set("scylla.nodes", self.scylla_nodes.clone())
            .set("scylla.keyspace", self.keyspace.clone())
    }
}

#[derive(Args)]
struct GatewayArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    listen: ListenArgs,
    /// This gateway's id for sync replies [key: kafka.gateway_id; default
    /// <hostname>-<random>].
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
    /// Address of the chainer's /healthz and /metrics [key: api.http_addr].
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Partitions of the events topic: the most chainers that can work at once. Fixed
    /// once migrated (tenants map to partitions by it) [key: chainer.partitions].
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// Replication factor of new topics [key: kafka.replication_factor].
    #[arg(long, value_name = "N")]
    kafka_replication_factor: Option<u32>,
    /// Replication factor of a new keyspace [key: scylla.replication_factor].
    #[arg(long, value_name = "N")]
    scylla_replication_factor: Option<u32>,
}

/// Which store `keys` works on.
#[derive(Args, Clone, Default)]
pub(crate) struct KeyStoreArgs {
    /// fjall/sqlite: the data dir's key table; scylla: the cluster's [key: store].
    #[arg(long, value_enum)]
    store: Option<config::StoreEngine>,
    /// Scylla/Cassandra contact points (with --store scylla) [key: scylla.nodes].
    #[arg(long, value_name = "HOST:PORT,...")]
    scylla_nodes: Option<String>,
    /// Keyspace (with --store scylla) [key: scylla.keyspace].
    #[arg(long, value_name = "NAME")]
    keyspace: Option<String>,
}

impl KeyStoreArgs {
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides::default()
            .set("store", self.store)
            .set("scylla.nodes", self.scylla_nodes.clone())
            .set("scylla.keyspace", self.keyspace.clone())
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
    let overrides = extra
        .set("data_dir", common.data_dir.clone())
        .assign(&common.set)?;
    Config::load(common.config.as_deref(), overrides)
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
            let overrides = Overrides::default()
                .set("chainer.partitions", args.partitions)
                .set("store", args.store);
            let overrides = args.witnesses.overrides(args.listen.overrides(overrides));
            load(&args.common, overrides).and_then(|config| serve::run(config, options))
        }
        Command::Gateway(args) => {
            let overrides = args
                .cluster
                .overrides()
                .set("kafka.gateway_id", args.gateway_id);
            let overrides = args.witnesses.overrides(args.listen.overrides(overrides));
            load(&args.common, overrides).and_then(distributed::gateway)
        }
        Command::Chainer(args) => load(
            &args.common,
            args.cluster
                .overrides()
                .set("api.http_addr", args.http_addr),
        )
        .and_then(distributed::chainer),
        Command::Migrate(args) => load(
            &args.common,
            args.cluster
                .overrides()
                .set("chainer.partitions", args.partitions)
                .set("kafka.replication_factor", args.kafka_replication_factor)
                .set("scylla.replication_factor", args.scylla_replication_factor),
        )
        .and_then(|config| {
            let partitions = config.chainer.partitions;
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
        Command::Destinations(cmd) => return destinations_cmd::run(cmd),
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
