//! The network edge: how many connections the server holds, how long a client may take
//! to send a request head, and how much header memory it may make the server keep.
//!
//! - **One connection cap** ([`ConnectionGate`]) for REST and gRPC together. At the cap the
//!   server stops accepting (new connections wait in the kernel's backlog) until one
//!   closes. The cap is kept below the process's file-descriptor limit with room to spare
//!   for the store (see the binary's `serve`), so open connections can never take the
//!   descriptors the store needs to flush, which would poison it.
//! - **REST** (HTTP/1.1) closes a connection whose request head does not arrive within
//!   `header_read_timeout` — which is also how long an idle keep-alive connection stays
//!   open — and answers `431` to a head larger than `max_header_bytes`.
//! - **gRPC** (HTTP/2) sends keep-alive pings and closes connections that stop answering
//!   them; idle gRPC connections are bounded by the cap.
//! - Failing to accept (e.g. `EMFILE`) is logged and retried after a pause; it never
//!   touches the store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of the network edge (config keys `max_connections`, `header_read_timeout_ms`,
/// `max_header_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
        }
    }
}

/// The connection cap shared by the REST and gRPC listeners.
#[derive(Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionGate {
    pub fn new(max_connections: usize) -> Self {
        let max = max_connections.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Waits for a free slot, then accepts one connection. Accept errors (out of file
    /// descriptors, a connection reset before it was accepted) are logged and retried.
    async fn accept(&self, listener: &TcpListener) -> (TcpStream, OwnedSemaphorePermit) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the gate's semaphore is never closed");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    metrics::gauge!("sealtrail_connections_open").set(self.open() as f64);
                    return (stream, permit);
                }
                Err(err) => {
                    metrics::counter!("sealtrail_accept_errors_total").increment(1);
                    tracing::warn!(%err, "cannot accept a connection; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves `app` (REST, HTTP/1.1) on `listener` within `limits` until `shutdown`
/// resolves; then stops accepting and waits for the open connections to finish their
/// requests.
pub async fn serve_rest(
    listener: TcpListener,
    app: Router,
    limits: EdgeLimits,
    gate: ConnectionGate,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The read buffer bounds a request head (hyper's minimum is 8 KiB).
        .max_buf_size(limits.max_header_bytes.max(8192));
    loop {
        let (stream, permit) = tokio::select! {
            accepted = gate.accept(&listener) => accepted,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let gate = gate.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
            metrics::gauge!("sealtrail_connections_open").set(gate.open() as f64);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The gRPC server's incoming connections, through the same gate.
pub fn gated_incoming(
    listener: TcpListener,
    gate: ConnectionGate,
) -> impl futures::Stream<Item = std::io::Result<GatedIo>> + Send + 'static {
    futures::stream::unfold((listener, gate), |(listener, gate)| async move {
        let (stream, permit) = gate.accept(&listener).await;
        let io = GatedIo {
            stream,
            _permit: permit,
            gate: gate.clone(),
        };
        Some((Ok(io), (listener, gate)))
    })
}

/// A connection that holds a slot of the gate until it is dropped.
pub struct GatedIo {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    gate: ConnectionGate,
}

impl Drop for GatedIo {
    fn drop(&mut self) {
        // The permit is released right after this; count it as closed already.
        metrics::gauge!("sealtrail_connections_open")
            .set(self.gate.open().saturating_sub(1) as f64);
    }
}

impl AsyncRead for GatedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for GatedIo {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
