//! [`Client`]: the typed calls, each retried under the client's [`RetryPolicy`].

use std::path::PathBuf;
use std::time::Duration;

use futures::Stream;
use sealtrail_proto as pb;
use sealtrail_proto::audit_log_client::AuditLogClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

use crate::batcher::Batcher;
use crate::error::ClientError;
use crate::retry::RetryPolicy;

/// What the [`Batcher`] does with events it could not deliver after all retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// Hand them back: the next `flush`/`close` returns [`ClientError::Undelivered`]
    /// with the events.
    ReturnError,
    /// Append them to this file (JSON lines, fsynced) and deliver them again on the next
    /// flush and at the next start. One batcher per spool file.
    Spool(PathBuf),
}

/// Configuration of a [`Client`]; build it with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoint: String,
    api_key: String,
    retry: RetryPolicy,
    timeout: Duration,
    connect_timeout: Duration,
    max_batch_events: usize,
    max_batch_delay: Duration,
    on_failure: OnFailure,
}

impl ClientBuilder {
    /// Retry policy of every call (default: 8 attempts, 50 ms doubling to 5 s).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Deadline of one unary call (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Connection timeout (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Most events the [`Batcher`] sends in one `LogBatch` (1 to 1000; default 500).
    pub fn max_batch_events(mut self, n: usize) -> Self {
        self.max_batch_events = n.clamp(1, 1000);
        self
    }
    /// Longest an event waits in the [`Batcher`] before its batch is sent (default 50 ms).
    pub fn max_batch_delay(mut self, delay: Duration) -> Self {
        self.max_batch_delay = delay;
        self
    }
    /// What the [`Batcher`] does with undeliverable events (default: return them).
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// The client. It connects lazily, on the first call, and reconnects by itself.
    pub fn build(self) -> Result<Client, ClientError> {
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| ClientError::Config(format!("endpoint {:?}: {e}", self.endpoint)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        let key: AsciiMetadataValue = format!("Bearer {}", self.api_key)
            .parse()
            .map_err(|_| ClientError::Config("the API key is not valid ASCII".into()))?;
        let channel = endpoint.connect_lazy();
        let grpc = AuditLogClient::with_interceptor(channel, BearerAuth(key))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        Ok(Client { grpc, config: self })
    }
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct BearerAuth(AsciiMetadataValue);

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The generated tonic client with the key interceptor, for calls the SDK does not wrap.
pub type RawClient = AuditLogClient<InterceptedService<Channel, BearerAuth>>;

/// A sealtrail client over gRPC. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct Client {
    grpc: RawClient,
    config: ClientBuilder,
}

/// Gives the event an id (a UUIDv7) when it has none, so that retrying it can never
/// commit it twice (DESIGN.md §4.5: the same id with the same content is the same event).
pub fn ensure_id(event: &mut pb::AuditEventInput) -> &str {
    event
        .id
        .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
}

impl Client {
    /// Starts configuring a client of the server at `endpoint` (e.g.
    /// `http://127.0.0.1:50051`) with an API key (`alk_live_…`).
    pub fn builder(endpoint: impl Into<String>, api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            api_key: api_key.into(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_batch_events: 500,
            max_batch_delay: Duration::from_millis(50),
            on_failure: OnFailure::ReturnError,
        }
    }

    /// The generated client (with the key), for streaming calls and anything else.
    pub fn raw(&self) -> RawClient {
        self.grpc.clone()
    }

    pub(crate) fn spool_path(&self) -> Option<&PathBuf> {
        match &self.config.on_failure {
            OnFailure::Spool(path) => Some(path),
            OnFailure::ReturnError => None,
        }
    }

    pub(crate) fn batch_limits(&self) -> (usize, Duration) {
        (self.config.max_batch_events, self.config.max_batch_delay)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.config.timeout);
        request
    }

    /// Commits one event and returns its record (sync ingest). The event gets an id
    /// first if it has none, so retries are safe. A reused id with other content is
    /// `ALREADY_EXISTS` ([`ClientError::Rejected`]).
    pub async fn log_event(
        &self,
        mut event: pb::AuditEventInput,
    ) -> Result<pb::Record, ClientError> {
        ensure_id(&mut event);
        let response = self
            .config
            .retry
            .run(|| {
                let mut grpc = self.grpc.clone();
                let request = self.request(pb::LogEventRequest {
                    event: Some(event.clone()),
                    sync: true,
                });
                async move { grpc.log_event(request).await }
            })
            .await?;
        match response.into_inner().result {
            Some(pb::log_event_response::Result::Record(record)) => Ok(record),
            _ => Err(ClientError::Rejected(Status::internal(
                "the server answered a sync LogEvent without a record",
            ))),
        }
    }

    /// Commits up to 1000 events as one request (sync) and returns the receipt (rejected
    /// events by index) and the records of the accepted ones. Events get ids first.
    pub async fn log_batch(
        &self,
        mut events: Vec<pb::AuditEventInput>,
    ) -> Result<pb::LogBatchResponse, ClientError> {
        events.iter_mut().for_each(|e| {
            ensure_id(e);
        });
        let response = self
            .config
            .retry
            .run(|| {
                let mut grpc = self.grpc.clone();
                let request = self.request(pb::LogBatchRequest {
                    events: events.clone(),
                    sync: true,
                });
                async move { grpc.log_batch(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Streaming ingest: sends `events` over one `Ingest` stream and returns the
    /// acknowledgements (one per event, in order). Events must carry ids for a resend
    /// after a broken stream to be safe; see [`ensure_id`]. Not retried: the caller
    /// knows from the acks which events to resend.
    pub async fn ingest<S>(&self, events: S) -> Result<Streaming<pb::IngestResponse>, ClientError>
    where
        S: Stream<Item = pb::IngestRequest> + Send + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ingest(Request::new(events))
            .await
            .map(|r| r.into_inner())
            .map_err(ClientError::Rejected)
    }

    /// The receipt of an earlier request.
    pub async fn get_receipt(&self, receipt_id: &str) -> Result<pb::Receipt, ClientError> {
        let response = self
            .config
            .retry
            .run(|| {
                let mut grpc = self.grpc.clone();
                let request = self.request(pb::GetReceiptRequest {
                    receipt_id: receipt_id.to_string(),
                });
                async move { grpc.get_receipt(request).await }
            })
            .await?;
        response
            .into_inner()
            .receipt
            .ok_or_else(|| ClientError::Rejected(Status::internal("empty GetReceipt answer")))
    }

    /// One record by event id (`NOT_FOUND` for an unknown or another tenant's id).
    pub async fn get_event(&self, id: &str) -> Result<pb::Record, ClientError> {
        let response = self
            .config
            .retry
            .run(|| {
                let mut grpc = self.grpc.clone();
                let request = self.request(pb::GetEventRequest { id: id.to_string() });
                async move { grpc.get_event(request).await }
            })
            .await?;
        response
            .into_inner()
            .record
            .ok_or_else(|| ClientError::Rejected(Status::internal("empty GetEvent answer")))
    }

    /// One page of records (filters and cursor as `GET /v1/events`).
    pub async fn list_events(
        &self,
        query: pb::ListEventsRequest,
    ) -> Result<pb::ListEventsResponse, ClientError> {
        let response = self
            .config
            .retry
            .run(|| {
                let mut grpc = self.grpc.clone();
                let request = self.request(query.clone());
                async move { grpc.list_events(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Recomputes one record's hash and checks its link.
    pub async fn verify_event(&self, id: &str) -> Result<pb::VerifyEventResponse, ClientError> {
        let response = self
            .config
            .retry
            .run(|| {
                let mut grpc = self.grpc.clone();
                let request = self.request(pb::VerifyEventRequest { id: id.to_string() });
                async move { grpc.verify_event(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Redacts one record (needs a key with the `admin` scope): the server appends a
    /// `sealtrail.event.redact` event naming it and erases its content; the answer holds
    /// the record as reads now return it, the redaction event, and whether the erasure
    /// was done (`erased`; when false it follows, and [`Client::get_event`] shows it).
    /// Redacting a redacted record answers its existing redaction.
    ///
    /// Retried only on `RESOURCE_EXHAUSTED` (the server did nothing). Another failure
    /// may come after the redaction event was committed, and a call repeated while its
    /// erasure is pending would append a second one: read the record first (`redacted`
    /// set means done).
    pub async fn redact_event(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<pb::RedactEventResponse, ClientError> {
        let response = self
            .config
            .retry
            .run_if(
                |status| status.code() == tonic::Code::ResourceExhausted,
                || {
                    let mut grpc = self.grpc.clone();
                    let request = self.request(pb::RedactEventRequest {
                        id: id.to_string(),
                        reason: reason.to_string(),
                    });
                    async move { grpc.redact_event(request).await }
                },
            )
            .await?;
        Ok(response.into_inner())
    }

    /// Walks the whole chain on the server.
    pub async fn verify_chain(
        &self,
        query: pb::VerifyChainRequest,
    ) -> Result<pb::VerifyChainResponse, ClientError> {
        let response = self
            .config
            .retry
            .run(|| {
                let mut grpc = self.grpc.clone();
                let mut request = Request::new(query.clone());
                // A long chain takes a while: no deadline beyond the caller's own.
                request.set_timeout(Duration::from_secs(3600));
                async move { grpc.verify_chain(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Records committed after `after_sequence_number` (`None`: from now on), as they
    /// commit. To resume after a broken stream, call again with the last sequence
    /// number received.
    pub async fn tail(
        &self,
        after_sequence_number: Option<u64>,
    ) -> Result<Streaming<pb::TailResponse>, ClientError> {
        let response = self
            .config
            .retry
            .run(|| {
                let mut grpc = self.grpc.clone();
                let request = Request::new(pb::TailRequest {
                    after_sequence_number,
                });
                async move { grpc.tail(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// A background batcher over this client (see [`Batcher`]).
    pub async fn batcher(&self) -> Result<Batcher, ClientError> {
        Batcher::start(self.clone()).await
    }
}
