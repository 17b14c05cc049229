//! sealtrail's gRPC API (`sealtrail.v1.AuditLog`, see `proto/`) over the same
//! [`Service`](crate::Service) as REST, plus the standard health service
//! (`grpc.health.v1.Health`) and server reflection (v1 and v1alpha), so `grpcurl` and
//! load balancers work without our protos.
//!
//! Embedded mode (`sealtrail serve`) and the distributed gateway both call [`serve`]
//! with the `Service` they built; [`routes`] gives the services alone, for a caller that
//! runs its own tonic server.
//!
//! Every call authenticates with the `authorization: Bearer alk_live_…` metadata and the
//! same scopes as REST, runs the same function as the REST handler, and maps the one
//! [`ApiError`](crate::error::ApiError) to a gRPC status ([`status`]).

mod ingest;
mod service;
pub mod status;

use std::future::Future;

use sealtrail_core::limits::MAX_BATCH_BODY_BYTES;
use sealtrail_proto::audit_log_server::AuditLogServer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;

pub use ingest::MAX_IN_FLIGHT;
pub use service::AuditLogService;
pub(crate) use service::validate_message;

use crate::AppState;

/// Largest request message accepted: a full `LogBatch` (the REST batch body limit).
pub const MAX_MESSAGE_BYTES: usize = MAX_BATCH_BODY_BYTES;

/// The gRPC services: AuditLog, health (reporting AuditLog and the server, `""`, as
/// serving) and reflection. The health reporter is returned so the caller can report
/// `NOT_SERVING` when it starts shutting down.
pub async fn routes(state: AppState) -> (Routes, HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AuditLogServer<AuditLogService>>()
        .await;
    let audit_log = AuditLogServer::new(AuditLogService::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(usize::MAX);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sealtrail_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    let mut routes = Routes::new(audit_log)
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    // `Ingest` is served with acknowledgements encoded from the committed records
    // (`ingest::Ack`) rather than through the generated server's messages; the same
    // call otherwise (path, message limits, no compression, as the generated server).
    // This route takes the path before the generated server's; that server's `ingest`
    // (the same stream, each ack decoded into a message) answers only a caller that
    // mounts `AuditLogServer` alone. Both put the same bytes on the wire (the ack tests
    // compare them), so only the speed tells which one served a call.
    let ingest = IngestMethod(AuditLogService::new(state));
    let ingest = axum::routing::any(move |request: axum::extract::Request| async move {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
            ingest::Ack,
            sealtrail_proto::IngestRequest,
        >::default())
        .apply_max_message_size_config(Some(MAX_MESSAGE_BYTES), Some(usize::MAX));
        grpc.streaming(ingest, request).await
    });
    let path = format!("/{}/Ingest", sealtrail_proto::SERVICE_NAME);
    let router = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = router.route(&path, ingest);
    (routes, reporter)
}

/// `Ingest` for [`tonic::server::Grpc::streaming`].
#[derive(Clone)]
struct IngestMethod(AuditLogService);

impl tonic::server::StreamingService<sealtrail_proto::IngestRequest> for IngestMethod {
    type Response = ingest::Ack;
    type ResponseStream = ingest::AckStream;
    type Future = futures::future::BoxFuture<
        'static,
        Result<tonic::Response<ingest::AckStream>, tonic::Status>,
    >;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<sealtrail_proto::IngestRequest>>,
    ) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { ingest::start(&service, request).await })
    }
}

/// Serves the gRPC API on `listener` until `shutdown` resolves: health then reports
/// `NOT_SERVING`, new connections are refused, `Tail` and `Ingest` streams end (on the
/// service's shutdown flag, `Ingest` after acknowledging what it appended) and in-flight
/// calls finish. A peer that does not take part in the graceful close (HTTP/2 GOAWAY and
/// PING) cannot hold the server: connections still open `shutdown_grace` after the
/// commit timeout are dropped (`ApiConfig`).
///
/// Contract for the caller: the log must stay open until this returns, so that entries
/// appended by in-flight calls are committed and acknowledged.
pub async fn serve(
    listener: TcpListener,
    gate: crate::edge::ConnectionGate,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let grace = state.config.commit_timeout + state.config.shutdown_grace;
    let max_header_list = u32::try_from(state.config.max_header_bytes).unwrap_or(u32::MAX);
    let (routes, reporter) = routes(state.clone()).await;
    tokio::spawn(mirror_health(state, reporter.clone()));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = started_tx.send(());
        reporter
            .set_not_serving::<AuditLogServer<AuditLogService>>()
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // What a client may send ahead of what the server has read: the server buffers up
        // to this much per stream (and per connection). 1 MiB covers a busy stream's
        // ~20 ms on a LAN; the 1M-event benchmark ran as fast with 1 MiB as with 4, and
        // 4 MiB per stream took 8 streams to ~14 MB of server memory each.
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(2 << 20))
        // Dead or vanished peers are dropped; idle connections are bounded by the gate.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        // Header memory per connection, as for REST.
        .http2_max_header_list_size(Some(max_header_list))
        .add_routes(routes)
        .serve_with_incoming_shutdown(crate::edge::gated_incoming(listener, gate), shutdown);
    let deadline = async move {
        if started_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        _ = deadline => {
            tracing::warn!("gRPC connections still open after the shutdown grace period; closing them");
            Ok(())
        }
    }
}

/// Mirrors `/healthz` into the gRPC health service: `sealtrail.v1.AuditLog` is
/// `NOT_SERVING` while a chainer retries a failing store (its requests are stalled), and
/// `SERVING` again once it recovers. Ends at shutdown (which reports `NOT_SERVING`).
async fn mirror_health(state: AppState, reporter: HealthReporter) {
    let Some(health) = state.health.clone() else {
        return;
    };
    let mut shutdown = state.shutdown.clone();
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let healthy = health.problems().is_empty() && state.store.write_blocked().is_none();
        if healthy != serving && !*shutdown.borrow() {
            serving = healthy;
            let status = if healthy {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter
                .set_service_status(sealtrail_proto::SERVICE_NAME, status)
                .await;
        }
    }
}
