//! sealtrail's APIs over one [`Service`] that talks to the log (ingest) and the store
//! (reads): REST (fact0's audit API plus sealtrail's own routes) and gRPC
//! (`sealtrail.v1.AuditLog`, in [`grpc`]). Both call the same functions (e.g.
//! [`ingest::ingest_event`], [`query::list`]) and share one error type, [`error::ApiError`],
//! mapped to an HTTP status and to a gRPC status ([`grpc::status`]).
//!
//! [`router`] returns the whole REST `Router`, so tests can drive it without a socket;
//! [`serve`] runs it on a listener until a shutdown signal, draining in-flight requests;
//! [`grpc::serve`] does the same for gRPC.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod console;
pub mod edge;
pub mod error;
pub mod export;
pub mod grpc;
pub mod ingest;
pub mod keys;
pub mod openapi;
pub mod query;
pub mod quota;
pub mod redact;
pub mod retention;
pub mod stream;
pub mod streams;
pub mod telemetry;
pub mod tiles;
pub mod tlog;
pub mod tls;
pub mod verified;
pub mod witnessing;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use sealtrail_log::{CommitSignal, Health};
use sealtrail_log::{Correlator, LogProducer};
use sealtrail_store::Store;
use tokio::sync::watch;

/// Behaviour of the API layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long an ingest request waits for its commit before answering `504`.
    pub commit_timeout: Duration,
    /// How long past `commit_timeout` a stopping server lets gRPC connections close by
    /// themselves before it drops them.
    pub shutdown_grace: Duration,
    /// How often a live stream polls the store when it gets no commit signal
    /// (distributed gateways); in embedded mode commits wake it at once.
    pub stream_poll_interval: Duration,
    /// When an async ingest call is answered (a sync call always waits for its commit).
    pub acknowledge: Acknowledge,
    /// The longest a client may take to send a request body (`408` past it).
    pub body_read_timeout: Duration,
    /// Largest request head: REST start line and headers (`431`, or `414` for the target
    /// alone), gRPC header list (`max_header_bytes`).
    pub max_header_bytes: usize,
    /// Retention (issue 15): the default policy, the pruner's interval, the archive.
    pub retention: retention::RetentionConfig,
}

/// When an async ingest call (`202`) is answered: the mode's acknowledgement policy,
/// stated once where the mode is wired (`serve`, `gateway`) and read by `publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledge {
    /// Once the events are committed (embedded mode: the in-process queue does not survive
    /// a crash, so nothing is acknowledged before the store has it). The `202` carries the
    /// committed receipt.
    OnCommit,
    /// Once the durable log has the entry (distributed mode: Kafka, `acks=all`). The `202`
    /// carries the queued receipt, which a chainer stores when it commits the entry; until
    /// then `GET /v1/receipts/{id}` reports a receipt id younger than `pending_window`
    /// as `queued` instead of `404`.
    OnLogAppend { pending_window: Duration },
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            commit_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            stream_poll_interval: Duration::from_millis(500),
            acknowledge: Acknowledge::OnCommit,
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            retention: retention::RetentionConfig::default(),
        }
    }
}

/// Everything a request handler needs.
pub struct Service {
    pub log: Arc<dyn LogProducer>,
    pub correlator: Arc<Correlator>,
    pub store: Arc<dyn Store>,
    pub commits: Option<CommitSignal>,
    /// Chainers' store health (embedded mode); `/healthz` reports failing partitions.
    pub health: Option<Health>,
    pub keys: auth::KeyCache,
    pub config: ApiConfig,
    pub metrics: Option<PrometheusHandle>,
    /// The verifiable log (checkpoints, proofs, evidence packs); `None` answers those
    /// routes with `404 not_configured`.
    pub tlog: Option<Arc<tlog::TransparencyLog>>,
    /// Flips to `true` at shutdown; long-lived streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// Where each tenant's chain was last found valid, and the permits for long walks.
    pub verified: verified::Verified,
    /// What a background probe found wrong with the services this process depends on
    /// (distributed gateways); `/readyz` reports it.
    pub readiness: Option<watch::Receiver<Vec<telemetry::NotReady>>>,
    /// Log streams: destinations are managed here (and, in embedded mode, delivered by
    /// `streams::run_streams`); `None` answers `/v1/destinations` with `501`.
    pub streams: Option<Arc<streams::Streams>>,
    /// The request metrics' handles ([`telemetry::Track`]).
    pub request_metrics: telemetry::RequestMetrics,
}

pub type AppState = Arc<Service>;

/// The full HTTP application.
pub fn router(service: AppState) -> Router {
    Router::new()
        .route(
            "/v1/events",
            post(ingest::log_event).get(query::list_events),
        )
        .route("/v1/events/batch", post(ingest::log_batch))
        .route("/v1/events/stream", get(stream::stream_events))
        .route("/v1/events/{id}", get(query::get_event))
        .route("/v1/events/{id}/verify", get(query::verify_event))
        .route("/v1/events/{id}/redact", post(redact::redact_event))
        .route(
            "/v1/retention",
            get(retention::get_retention)
                .put(retention::set_retention)
                .delete(retention::clear_retention),
        )
        .route(
            "/v1/destinations",
            post(streams::create_destination).get(streams::list_destinations),
        )
        .route(
            "/v1/destinations/{id}",
            get(streams::get_destination).delete(streams::delete_destination),
        )
        .route(
            "/v1/destinations/{id}/resume",
            post(streams::resume_destination),
        )
        .route("/v1/receipts/{id}", get(query::get_receipt))
        .route("/v1/verify", get(query::verify_chain))
        .route("/v1/checkpoint", get(tlog::get_checkpoint))
        .route("/v1/log/key", get(tlog::get_log_key))
        .route("/v1/proof/inclusion", get(tlog::get_inclusion_proof))
        .route("/v1/proof/consistency", get(tlog::get_consistency_proof))
        .route("/v1/tlog/{tenant}/checkpoint", get(tiles::get_checkpoint))
        .route("/v1/tlog/{tenant}/tile/{*path}", get(tiles::get_tile))
        .route("/v1/export", get(export::export))
        .route("/v1/export/evidence-pack", get(export::evidence_pack))
        .route("/healthz", get(telemetry::healthz))
        .route("/readyz", get(telemetry::readyz))
        .route("/metrics", get(telemetry::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(console::routes())
        .fallback(telemetry::not_found)
        .method_not_allowed_fallback(telemetry::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            edge::front,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            telemetry::panic_response,
        ))
        .with_state(service)
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves, then stops
/// accepting and waits for in-flight requests (see [`edge`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: edge::EdgeLimits,
    gate: edge::ConnectionGate,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    edge::serve_rest(listener, app, limits, gate, shutdown).await
}
