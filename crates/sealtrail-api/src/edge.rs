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
//!   open — and answers `431` to a head larger than `api.max_header_size`.
//! - **gRPC** (HTTP/2) sends keep-alive pings and closes connections that stop answering
//!   them; idle gRPC connections are bounded by the cap.
//! - Failing to accept (e.g. `EMFILE`) is logged and retried after a pause; it never
//!   touches the store.
//! - **TLS** (optional, [`crate::tls`]): the handshake runs in the connection's own task
//!   and must finish within `header_read_timeout`, so slow handshakes hold a connection
//!   slot but never the accept loop.
//! - **Errors hyper answers itself** (a request head it cannot parse or that outgrows its
//!   read buffer: `400`, `414`, `431`, written before any handler runs) get the same JSON
//!   error envelope as every other error ([`HyperErrorEnvelope`]).

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

use crate::tls::TlsEdge;

/// Limits of the network edge (config keys `api.max_connections`, `api.header_read_timeout`,
/// `api.max_header_size`).
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

/// The connection cap shared by the REST and gRPC listeners, and their TLS identity.
#[derive(Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
    max: usize,
    tls: Option<Arc<TlsEdge>>,
    handshake_timeout: Duration,
}

impl ConnectionGate {
    pub fn new(max_connections: usize) -> Self {
        let max = max_connections.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Both listeners serve TLS with `tls`; a handshake must finish within `timeout`.
    pub fn with_tls(mut self, tls: Option<Arc<TlsEdge>>, timeout: Duration) -> Self {
        self.tls = tls;
        self.handshake_timeout = timeout;
        self
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS handshake for `stream` when TLS is on (`rest`: ALPN `http/1.1`, else `h2`).
    /// `None`: the handshake failed or timed out (logged at debug; the slot is freed).
    async fn handshake(&self, stream: TcpStream, rest: bool) -> Option<EdgeIo> {
        let Some(tls) = &self.tls else {
            return Some(EdgeIo::Plain(stream));
        };
        let acceptor = if rest {
            tls.rest_acceptor()
        } else {
            tls.grpc_acceptor()
        };
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(EdgeIo::Tls(Box::new(tls))),
            Ok(Err(err)) => {
                metrics::counter!("sealtrail_tls_handshake_failures_total").increment(1);
                tracing::debug!(%err, "TLS handshake failed");
                None
            }
            Err(_) => {
                metrics::counter!("sealtrail_tls_handshake_failures_total").increment(1);
                tracing::debug!("TLS handshake timed out");
                None
            }
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

/// What every REST request passes through before its route's handler, as one middleware:
/// the request metrics ([`crate::telemetry::Track`]), the `Connection: close` of an unread
/// body ([`close_if_body_unread`]) and the head limit ([`head_too_large`]), in that order
/// from the outside. One layer, not three: each layer costs every request a clone of the
/// route's service and a boxed future (measured on single async events: 4 – 17% less
/// server CPU per event in three pairs).
pub async fn front(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let track = crate::telemetry::Track::start(&request);
    let max_header_bytes = state.config.max_header_bytes;
    let response = close_if_body_unread(request, |request| async move {
        match head_too_large(max_header_bytes, &request) {
            Some(refusal) => refusal,
            None => next.run(request).await,
        }
    })
    .await;
    track.finish(&response, &state.request_metrics);
    response
}

/// Refuses a REST request whose head (start line and headers) is larger than
/// `max_header_bytes`: hyper's read buffer bounds head memory only to within one read of
/// it, so the exact limit is kept here: `431 headers_too_large` in the JSON envelope, as
/// hyper's own answer to a head that outgrows its buffer (the target counts too).
fn head_too_large(
    max: usize,
    request: &axum::extract::Request,
) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |p| p.as_str().len());
    // `METHOD target HTTP/1.1\r\n`, each `name: value\r\n`, the blank line.
    let head = request.method().as_str().len()
        + target
        + 12
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
        + 2;
    if head <= max {
        return None;
    }
    Some(
        crate::error::ApiError::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request head is {head} bytes; this server accepts at most {max} \
                 (api.max_header_size): send fewer or smaller headers, and large inputs in the body"
            ),
        )
        .into_response(),
    )
}

/// Answers `Connection: close` to any request whose body the handler did not read to its
/// end (a `413` refused by its declared length, a `401` or `429` answered before the body
/// is read, a `408` for a trickled body). hyper closes such a connection after the answer
/// anyway, since the unread body would be read as the next request head; saying so lets a
/// client drop the connection instead of putting it back in its pool and failing its next
/// request on it (`IncompleteMessage`, broken pipe).
async fn close_if_body_unread<F, Fut>(
    request: axum::extract::Request,
    next: F,
) -> axum::response::Response
where
    F: FnOnce(axum::extract::Request) -> Fut,
    Fut: std::future::Future<Output = axum::response::Response>,
{
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return next(request).await;
    }
    let read = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let request = request.map(|inner| {
        axum::body::Body::new(ReadToEnd {
            inner,
            read: read.clone(),
        })
    });
    let mut response = next(request).await;
    if !read.load(std::sync::atomic::Ordering::Acquire) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A request body that records whether it was read to its end.
struct ReadToEnd {
    inner: axum::body::Body,
    read: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for ReadToEnd {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, std::sync::atomic::Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
        // The read buffer bounds a request head to within one read of `max_header_bytes`
        // (hyper's minimum is 8 KiB); [`head_too_large`] keeps the exact limit.
        .max_buf_size(limits.max_header_bytes.max(8192));
    loop {
        let (stream, permit) = tokio::select! {
            accepted = gate.accept(&listener) => accepted,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let gate = gate.clone();
        let http = http.clone();
        tokio::spawn(async move {
            if let Some(io) = gate.handshake(stream, true).await {
                let io = TokioIo::new(HyperErrorEnvelope::new(io));
                let _ = watcher.watch(http.serve_connection(io, service)).await;
            }
            drop(permit);
            metrics::gauge!("sealtrail_connections_open").set(gate.open() as f64);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The gRPC server's incoming connections, through the same gate. With TLS each
/// handshake runs in its own task, so a slow one never holds up the others.
pub fn gated_incoming(
    listener: TcpListener,
    gate: ConnectionGate,
) -> impl futures::Stream<Item = std::io::Result<GatedIo>> + Send + 'static {
    let (ready_tx, ready) = tokio::sync::mpsc::channel::<GatedIo>(64);
    let acceptor = tokio::spawn(async move {
        loop {
            let (stream, permit) = gate.accept(&listener).await;
            let gate = gate.clone();
            let ready_tx = ready_tx.clone();
            tokio::spawn(async move {
                if let Some(io) = gate.handshake(stream, false).await {
                    let io = GatedIo {
                        io,
                        _permit: permit,
                        gate: gate.clone(),
                    };
                    let _ = ready_tx.send(io).await;
                }
            });
        }
    });
    // The accept loop ends with the stream (when the gRPC server stops).
    let abort = AbortOnDrop(acceptor);
    futures::stream::unfold((ready, abort), |(mut ready, abort)| async move {
        let io = ready.recv().await?;
        Some((Ok(io), (ready, abort)))
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection, plain or TLS.
pub enum EdgeIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl EdgeIo {
    fn tcp(&self) -> &TcpStream {
        match self {
            EdgeIo::Plain(s) => s,
            EdgeIo::Tls(s) => s.get_ref().0,
        }
    }
}

macro_rules! delegate_io {
    ($ty:ty, $self:ident => $inner:expr, $vectored:expr) => {
        impl AsyncRead for $ty {
            fn poll_read(
                mut $self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                $inner.poll_read(cx, buf)
            }
        }
        impl AsyncWrite for $ty {
            fn poll_write(
                mut $self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                $inner.poll_write(cx, buf)
            }
            fn poll_flush(mut $self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                $inner.poll_flush(cx)
            }
            fn poll_shutdown(
                mut $self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                $inner.poll_shutdown(cx)
            }
            fn poll_write_vectored(
                mut $self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                $inner.poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&$self) -> bool {
                $vectored
            }
        }
    };
}

impl EdgeIo {
    fn pinned(&mut self) -> Pin<&mut (dyn AsyncReadWrite + Send)> {
        match self {
            EdgeIo::Plain(s) => Pin::new(s),
            EdgeIo::Tls(s) => Pin::new(s.as_mut()),
        }
    }
}

trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncReadWrite for T {}

delegate_io!(EdgeIo, self => self.pinned(), self.tcp().is_write_vectored() && matches!(self, EdgeIo::Plain(_)));

/// A connection that holds a slot of the gate until it is dropped.
pub struct GatedIo {
    io: EdgeIo,
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

delegate_io!(GatedIo, self => Pin::new(&mut self.io), self.io.is_write_vectored());

impl tonic::transport::server::Connected for GatedIo {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.tcp().connect_info()
    }
}

/// Gives the responses hyper writes by itself the JSON error envelope.
///
/// When hyper cannot parse a request head, or the head outgrows its read buffer, it
/// answers before any handler runs, with an empty body: exactly `HTTP/1.1 <status>
/// <reason>\r\nconnection: close\r\ncontent-length: 0\r\n…\r\n\r\n` for `400`, `414`
/// and `431`. A handler's error always has a JSON body (a non-zero `content-length`), so a
/// write that is precisely such a head can only be hyper's own; it is replaced with the
/// same status, `connection: close` and an envelope saying what to fix. Everything else
/// passes through untouched.
pub struct HyperErrorEnvelope<T> {
    inner: T,
    /// A replacement being written: the bytes, how many are written, and the length of
    /// hyper's buffer to report once all are.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> HyperErrorEnvelope<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The envelope for one of hyper's own error heads, or `None` for any other write.
fn replace_hyper_error(buf: &[u8]) -> Option<Vec<u8>> {
    const CLOSE_EMPTY: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";
    let (code, message) = match buf.get(..13)? {
        b"HTTP/1.1 400 " => (
            "bad_request",
            "the request head is not valid HTTP/1.1 (method, target, version or a header \
             line); the connection is closed",
        ),
        b"HTTP/1.1 414 " => (
            "uri_too_long",
            "the request target is too long; send large inputs in the body",
        ),
        b"HTTP/1.1 431 " => (
            "headers_too_large",
            "the request head (target and headers) is larger than this server accepts \
             (api.max_header_size); send fewer or smaller headers",
        ),
        _ => return None,
    };
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    if !buf[line_end..].starts_with(CLOSE_EMPTY) || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let body =
        serde_json::to_vec(&serde_json::json!({"error": {"code": code, "message": message}}))
            .ok()?;
    let mut out = Vec::with_capacity(buf.len() + body.len() + 64);
    out.extend_from_slice(&buf[..line_end]);
    out.extend_from_slice(b"\r\nconnection: close\r\ncontent-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}", body.len()).as_bytes());
    // The rest of hyper's head (its `date`, the blank line), then the body.
    out.extend_from_slice(&buf[line_end + CLOSE_EMPTY.len() - 2..]);
    out.extend_from_slice(&body);
    Some(out)
}

impl<T: AsyncWrite + Unpin> HyperErrorEnvelope<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        while let Some((bytes, written, reported)) = &mut self.pending {
            if *written == bytes.len() {
                let reported = *reported;
                self.pending = None;
                return Poll::Ready(Ok(reported));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    self.pending = None;
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => {
                    self.pending = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HyperErrorEnvelope<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HyperErrorEnvelope<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.pending.is_none() {
            match replace_hyper_error(buf) {
                Some(bytes) => self.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.poll_pending(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // hyper writes an error head as one buffer; look at the first non-empty one.
        let first = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]);
        if self.pending.is_none() && first.is_some_and(|b| replace_hyper_error(b).is_some()) {
            return self.poll_write(cx, first.unwrap_or_default());
        }
        if self.pending.is_some() {
            return self.poll_pending(cx);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.pending.is_some() {
            match self.poll_pending(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_own_error_heads_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 20:03:08 GMT\r\n\r\n";
        let out = String::from_utf8(replace_hyper_error(hyper_431).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );
        assert!(
            head.contains("\r\ncontent-type: application/json\r\n"),
            "{out}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
            "{out}"
        );
        assert!(
            head.ends_with("\r\ndate: Tue, 01 Dec 2026 20:03:08 GMT"),
            "{out}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "headers_too_large");

        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(replace_hyper_error(hyper_400).is_some());
        // A handler's 400 (a body), a 200, a head followed by more bytes: untouched.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\nHTTP/1.1",
            b"HTTP/1.1 4",
            b"",
        ] {
            assert!(replace_hyper_error(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
