//! The `sealtrail` command: `serve` (embedded mode), `keys`, `config`.
#![forbid(unsafe_code)]

mod config;
mod keys_cmd;
mod serve;
mod verify_cmd;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// mimalloc (its v2 line, which returned memory to the OS sooner than v3 in our benchmark):
/// ingest allocates and frees many small objects across threads, where glibc's allocator
/// spent a third of the CPU time in the benchmark's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
}

#[derive(Args, Clone, Default)]
struct Common {
    /// Configuration file (TOML); also SEALTRAIL_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory [default: ./sealtrail-data; env: SEALTRAIL_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
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
    /// Event store: fjall or sqlite [default: fjall; env: SEALTRAIL_STORE].
    #[arg(long, value_enum)]
    store: Option<config::StoreEngine>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key for a tenant; the key is printed once, as the last line of stdout.
    Create {
        #[command(flatten)]
        common: Common,
        /// Tenant the key belongs to (1-128 of A-Z a-z 0-9 - _ . :).
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: read (list, get, verify, stream), write (ingest).
        #[arg(long, default_value = "read,write")]
        scopes: String,
    },
    /// List keys (ids, tenants, scopes, prefixes — never the keys).
    List {
        #[command(flatten)]
        common: Common,
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by its id (from `keys list`); takes effect within a second.
    Revoke {
        #[command(flatten)]
        common: Common,
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify(args) => return verify_cmd::run(args),
        Command::Serve(args) => load(
            &args.common,
            Overrides {
                http_addr: args.http_addr,
                grpc_addr: args.grpc_addr,
                partitions: args.partitions,
                store: args.store,
                ..Default::default()
            },
        )
        .and_then(serve::run),
        Command::Keys(cmd) => keys_cmd::run(cmd),
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
