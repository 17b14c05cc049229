//! `sealtrail serve`: embedded mode — gateway, in-process log, one chainer per partition
//! and the fjall store (or SQLite, `--store sqlite`), all in one process.
//!
//! REST on `http_addr` and gRPC on `grpc_addr`, over one `Service`.
//!
//! Shutdown (SIGTERM / Ctrl-C): stop accepting connections on both APIs, let in-flight
//! requests finish (each waits at most the commit timeout), end live streams (gRPC
//! `Ingest` streams after acknowledging what they appended), close the log so chainers
//! drain what is queued, then close the store after its last group commit.

use std::sync::Arc;

use anyhow::Context;
use sealtrail_api::{ApiConfig, Service};
use sealtrail_chainer::{Chainer, ChainerConfig, CommitSignal, Health};
use sealtrail_log::memory::MemoryLog;
use sealtrail_log::{Correlator, LogProducer, PartitionConsumer};
use sealtrail_store::Store;
use sealtrail_store::fjall::FjallStore;
use sealtrail_store::sqlite::SqliteStore;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, StoreEngine};
use crate::data_dir::DataDir;

/// One-off choices of `serve` that are flags, not configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Sign with a new log key although the data directory recorded another one.
    pub new_log_key: bool,
}

pub fn run(config: Config, options: ServeOptions) -> anyhow::Result<()> {
    runtime(&config)?.block_on(serve(config, options))
}

/// Logging to stderr and the multi-threaded runtime every long-running command uses.
pub(crate) fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Blocking threads serve store reads; a small pool bounds memory (each thread keeps
    // its own allocator heap) and is plenty for a store that answers in microseconds.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()?)
}

/// `sealtrail serve`: binds the configured addresses, starts, and stops on SIGTERM or
/// Ctrl-C (or by itself on a fatal chainer error).
async fn serve(config: Config, options: ServeOptions) -> anyhow::Result<()> {
    let embedded = start(config, options, None).await?;
    let stop = embedded.stop.clone();
    let mut finished = embedded.finished.clone();
    tokio::select! {
        _ = wait_for_signal() => {
            let _ = stop.send(true);
        }
        // A fatal chainer error stops the server without a signal.
        _ = finished.wait_for(|done| *done) => {}
    }
    embedded.wait().await
}

/// Embedded mode running in this process ([`start`]).
pub struct Embedded {
    /// Where REST listens.
    pub http_addr: std::net::SocketAddr,
    /// Where gRPC listens.
    pub grpc_addr: std::net::SocketAddr,
    /// The store, for what an operator would do beside the server (the CLI's `keys`).
    pub store: Arc<dyn Store>,
    stop: tokio::sync::watch::Sender<bool>,
    finished: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Embedded {
    /// Begins a graceful shutdown, as SIGTERM does.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the server has stopped: after [`shutdown`](Self::shutdown), or by
    /// itself after a fatal chainer error (then the error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task failed")?
    }
}

/// The process's metrics recorder: installed by the first server started in the process
/// and shared by any later one (the in-process tests start several; their metrics add up).
fn metrics_recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::Mutex<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::Mutex::new(None);
    let mut handle = HANDLE.lock().expect("metrics lock");
    if let Some(handle) = handle.as_ref() {
        return Ok(handle.clone());
    }
    let installed = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    *handle = Some(installed.clone());
    Ok(installed)
}

/// Starts embedded mode — the store in `config.data_dir`, the in-process log, one chainer
/// per partition, REST and gRPC on `listeners` (bound by the caller: REST, gRPC) or, when
/// `None`, on `http_addr` and `grpc_addr` — and returns once it serves. It runs on the
/// caller's Tokio runtime until [`Embedded::shutdown`]; `serve` is this plus the signals.
/// Tests bind port 0 and call it directly. (The configured addresses are bound only once
/// the data directory is locked, so a second server on one directory is told that, not
/// that the port is taken.)
pub async fn start(
    config: Config,
    options: ServeOptions,
    listeners: Option<(tokio::net::TcpListener, tokio::net::TcpListener)>,
) -> anyhow::Result<Embedded> {
    anyhow::ensure!(
        config.store != StoreEngine::Scylla,
        "store = scylla is distributed mode: run `sealtrail gateway` and `sealtrail chainer` (see `sealtrail --help`)"
    );
    let metrics = metrics_recorder()?;

    // Locked and checked (engine, format) before a store opens anything in it.
    let mut data_dir = DataDir::open(&config)?;
    let store: Arc<dyn Store> = match config.store {
        StoreEngine::Fjall => FjallStore::open_with(&config.data_dir, config.fjall_limits())
            .map(|s| Arc::new(s) as Arc<dyn Store>),
        StoreEngine::Sqlite => {
            SqliteStore::open_with_floor(&config.data_dir, config.embedded.min_free_disk.as_u64())
                .map(|s| Arc::new(s) as Arc<dyn Store>)
        }
        StoreEngine::Scylla => unreachable!("refused in run"),
    }
    .with_context(|| {
        format!(
            "opening the data directory {} (is it writable?)",
            config.data_dir.display()
        )
    })?;

    let (log, consumers) =
        MemoryLog::new(config.chainer.partitions, config.embedded.queue_capacity);
    let log: Arc<dyn LogProducer> = Arc::new(log);
    let correlator = Arc::new(Correlator::new("embedded"));
    let commits = CommitSignal::default();
    let health = Health::default();
    let chainer_config = ChainerConfig {
        max_batch_events: config.chainer.max_batch_events,
        head_cache_tenants: config.chainer.head_cache_tenants,
    };
    // A chainer that stops before the log closes (a refused batch, a fatal store error, or a panic)
    // is fatal: its partition would stall. The server then shuts down and exits non-zero
    // instead of timing requests out forever.
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(1);
    let mut chainers = Vec::new();
    for consumer in consumers {
        let partition = consumer.partition();
        let chainer = Chainer::new(
            consumer,
            store.clone(),
            correlator.clone(),
            commits.clone(),
            chainer_config.clone(),
        )
        .with_health(health.clone());
        let task = tokio::spawn(chainer.run());
        let fatal = fatal_tx.clone();
        chainers.push(tokio::spawn(async move {
            let failure = match task.await {
                Ok(Ok(())) => return,
                Ok(Err(err)) => format!("the chainer of partition {partition} stopped: {err}"),
                Err(err) => format!("the chainer of partition {partition} failed: {err}"),
            };
            tracing::error!("{failure}");
            let _ = fatal.send(failure).await;
        }));
    }
    drop(fatal_tx);

    let signer = data_dir.log_signer(&config, options.new_log_key)?;
    tracing::info!(verifier_key = %signer.verifier(), "verifiable log key");
    let tlog = sealtrail_api::tlog::TransparencyLog::new(signer, config.log.checkpoint_interval)
        .with_witnesses(config.witness_configs()?, store.clone());

    let streams = Arc::new(
        sealtrail_api::streams::Streams::new(config.stream.settings()?, stream_key(&config)?)
            .map_err(anyhow::Error::msg)?,
    );
    let streams = Some(streams);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let service = Arc::new(Service {
        log: log.clone(),
        correlator,
        store: store.clone(),
        commits: Some(commits),
        health: Some(health),
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
            // The in-process queue does not survive a crash: every call waits for its commit.
            acknowledge: sealtrail_api::Acknowledge::OnCommit,
        },
        metrics: Some(metrics),
        tlog: Some(Arc::new(tlog)),
        shutdown: shutdown_rx,
        verified: sealtrail_api::verified::Verified::new(config.api.max_full_verifications),
        readiness: None,
        streams: streams.clone(),
        request_metrics: Default::default(),
    });
    sealtrail_api::tlog::spawn_witness_feeder(&service);
    tokio::spawn(sealtrail_api::streams::run_streams(service.clone()));
    if store.prunes() {
        tokio::spawn(sealtrail_api::retention::run_pruner(service.clone()));
    } else {
        anyhow::ensure!(
            config.retention().default.is_forever(),
            "retention.days / retention.events need a store that removes records"
        );
    }

    let tls = config.tls()?;
    let (listener, grpc_listener) = match listeners {
        Some(bound) => bound,
        None => listen_both(&config)?,
    };
    let local = listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let (http, grpc) = schemes(tls.as_deref());
    eprintln!(
        "sealtrail {} listening on {http}://{local} and {grpc}://{grpc_addr} (data in {})",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display()
    );
    if store.list_keys(None).await?.is_empty() {
        eprintln!(
            "no API keys yet. Create one (it works while the server runs):\n  sealtrail keys create --tenant my-tenant --scopes read,write --data-dir {}",
            config.data_dir.display()
        );
    }

    let fatal = Arc::new(std::sync::Mutex::new(None::<String>));
    let fatal_seen = fatal.clone();
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let (finished_tx, finished) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        tokio::select! {
            _ = stop_rx.wait_for(|stop| *stop) => eprintln!("shutting down: finishing in-flight requests"),
            Some(failure) = fatal_rx.recv() => {
                eprintln!("fatal: {failure}; shutting down");
                *fatal_seen.lock().expect("fatal lock") = Some(failure);
            }
        }
        let _ = shutdown_tx.send(true);
    };
    let task_store = store.clone();
    let task = tokio::spawn(async move {
        let served = serve_apis(&config, tls, listener, grpc_listener, service, shutdown).await;
        log.close();
        for chainer in chainers {
            let _ = chainer.await;
        }
        task_store.close();
        // The data directory's lock is held until the store is closed.
        drop(data_dir);
        let _ = finished_tx.send(true);
        served?;
        if let Some(failure) = fatal.lock().expect("fatal lock").take() {
            anyhow::bail!(
                "{failure}; the data is intact up to the last acknowledged event — restart to resume"
            );
        }
        eprintln!("stopped cleanly");
        Ok(())
    });
    Ok(Embedded {
        http_addr: local,
        grpc_addr,
        store,
        stop,
        finished,
        task,
    })
}

/// The key that seals the log-stream destinations' secrets: `<data_dir>/stream-secrets.key`
/// (32 random bytes, mode 0600), created on first start. A backup must carry it along
/// (`sealtrail backup` does); without it the destinations' secrets cannot be opened and
/// their delivery pauses with that reason.
fn stream_key(config: &Config) -> anyhow::Result<[u8; 32]> {
    if let Some(key) = config.stream.configured_key()? {
        return Ok(key);
    }
    let path = config.data_dir.join(STREAM_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a stream key (32 bytes); restore it from a backup",
                    path.display()
                )
            });
        }
        // Only a missing key is made anew: one that cannot be read is never replaced (the
        // destinations' secrets would be lost with it).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading the stream key {}", path.display()));
        }
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("no randomness for the stream key: {e}"))?;
    sealtrail_store::write_durably(&path, &key, true)
        .with_context(|| format!("writing the stream key {}", path.display()))?;
    Ok(key)
}

/// The file, in the data directory, of the key that seals log-stream secrets.
pub const STREAM_KEY_FILE: &str = "stream-secrets.key";

/// Binds the REST and the gRPC listeners, with errors that name the flag to change.
pub(crate) fn listen_both(
    config: &Config,
) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
    let rest = listen_at(config.api.http_addr).with_context(|| {
        format!(
            "cannot listen on {} (in use? pick another with --http-addr)",
            config.api.http_addr
        )
    })?;
    let grpc = listen_at(config.api.grpc_addr).with_context(|| {
        format!(
            "cannot listen on {} (in use? pick another with --grpc-addr)",
            config.api.grpc_addr
        )
    })?;
    Ok((rest, grpc))
}

/// Serves REST and gRPC over one service until `shutdown` completes (it must flip the
/// service's shutdown flag); both stop together and finish their in-flight calls.
pub(crate) async fn serve_apis(
    config: &Config,
    tls: Option<Arc<sealtrail_api::tls::TlsEdge>>,
    rest: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let limits = edge_limits(config);
    if let Some(tls) = &tls {
        tls.reload_on_sighup()
            .context("cannot listen for SIGHUP (TLS reload)")?;
        tracing::info!(certificate = %tls.describe(), "TLS on; SIGHUP reloads api.tls_cert_file and api.tls_key_file");
    }
    let gate = sealtrail_api::edge::ConnectionGate::new(limits.max_connections)
        .with_tls(tls, limits.header_read_timeout);
    let mut grpc_stop = service.shutdown.clone();
    let grpc = tokio::spawn(sealtrail_api::grpc::serve(
        grpc,
        gate.clone(),
        service.clone(),
        async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
        },
    ));
    sealtrail_api::serve(rest, sealtrail_api::router(service), limits, gate, shutdown).await?;
    grpc.await.context("the gRPC server task failed")??;
    Ok(())
}

/// How the listening message names the REST and gRPC endpoints.
pub(crate) fn schemes(tls: Option<&sealtrail_api::tls::TlsEdge>) -> (&'static str, &'static str) {
    if tls.is_some() {
        ("https", "grpcs")
    } else {
        ("http", "grpc")
    }
}

/// The edge limits from the configuration, with the connection cap kept below the
/// process's file-descriptor limit (raised to its hard limit first): the store must
/// always find descriptors for its flushes and compactions, or a failed flush poisons it.
pub(crate) fn edge_limits(config: &Config) -> sealtrail_api::edge::EdgeLimits {
    /// Descriptors kept for the store, logs and everything but connections.
    const RESERVE: u64 = 512;
    let mut max_connections = config.api.max_connections;
    if let rustix::process::Rlimit {
        current: Some(soft),
        maximum,
    } = rustix::process::getrlimit(rustix::process::Resource::Nofile)
    {
        let mut soft = soft;
        if maximum.is_none_or(|hard| hard > soft) {
            let wanted = maximum.unwrap_or(soft.max(65_536)).min(1 << 20);
            let raised = rustix::process::Rlimit {
                current: Some(wanted),
                maximum,
            };
            if rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).is_ok() {
                soft = wanted;
            }
        }
        let room = soft.saturating_sub(RESERVE).max(soft / 2) as usize;
        if room < max_connections {
            tracing::warn!(
                max_connections,
                fd_limit = soft,
                "max_connections lowered to {room} to leave file descriptors for the store; raise the limit (ulimit -n) to allow more"
            );
            max_connections = room;
        }
    }
    sealtrail_api::edge::EdgeLimits {
        max_connections,
        header_read_timeout: config.api.header_read_timeout,
        max_header_bytes: config.api.max_header_size.as_u64() as usize,
    }
}

/// Binds with SO_REUSEADDR, so a restart right after a crash can take the port back
/// while the old connections linger in TIME_WAIT.
pub(crate) fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    listen_at(addr)
}

/// Binds `addr` (address reuse on, a backlog of 1024).
pub(crate) fn listen_at(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Reads a signer key file and checks it is named for `origin`.
pub(crate) fn load_log_key(
    path: &std::path::Path,
    origin: &str,
) -> anyhow::Result<sealtrail_core::note::NoteSigner> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the log key {}", path.display()))?;
    parse_log_key(&text, origin).with_context(|| format!("the log key {}", path.display()))
}

/// Parses a signer key and checks it is named for `origin`.
pub(crate) fn parse_log_key(
    text: &str,
    origin: &str,
) -> anyhow::Result<sealtrail_core::note::NoteSigner> {
    let signer = sealtrail_core::note::NoteSigner::parse(text).context("not a signer key")?;
    anyhow::ensure!(
        signer.name() == origin,
        "the log key is named {:?} but log.origin is {:?}; keep the origin the key was made for, or use a new key (earlier checkpoints then no longer verify with it)",
        signer.name(),
        origin
    );
    Ok(signer)
}
