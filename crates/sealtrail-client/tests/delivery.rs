//! The SDK against a scripted in-process gRPC server: retries honour the server's hints,
//! ids make retries idempotent, and the batcher returns or spools what it cannot deliver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealtrail_client::proto::audit_log_server::{AuditLog, AuditLogServer};
use sealtrail_client::proto::{self as pb};
use sealtrail_client::{Client, ClientError, Event, OnFailure, RetryPolicy};
use tonic::{Request, Response, Status, Streaming};

/// One LogBatch received: its event ids and its authorization metadata.
type Call = (Vec<String>, String);

/// Answers LogBatch from a script: each entry is `Some(status)` to fail, `None` to accept.
#[derive(Default, Clone)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Option<Status>>>>,
    /// Every LogBatch received: (event ids, authorization).
    calls: Arc<Mutex<Vec<Call>>>,
}

fn overloaded() -> Status {
    let mut status = Status::resource_exhausted("busy");
    status
        .metadata_mut()
        .insert("retry-after", "1".parse().unwrap());
    status
}

#[tonic::async_trait]
impl AuditLog for Scripted {
    async fn log_batch(
        &self,
        request: Request<pb::LogBatchRequest>,
    ) -> Result<Response<pb::LogBatchResponse>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let events = request.into_inner().events;
        let ids: Vec<String> = events.iter().map(|e| e.id.clone().unwrap()).collect();
        self.calls.lock().unwrap().push((ids.clone(), auth));
        if let Some(Some(status)) = self.script.lock().unwrap().pop_front() {
            return Err(status);
        }
        // Reject events whose action is "bad", accept the rest.
        let errors: Vec<pb::ItemError> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.action == "bad")
            .map(|(i, _)| pb::ItemError {
                index: i as u32,
                code: "invalid_field".into(),
                message: "bad action".into(),
            })
            .collect();
        Ok(Response::new(pb::LogBatchResponse {
            receipt: Some(pb::Receipt {
                accepted: (events.len() - errors.len()) as u32,
                rejected: errors.len() as u32,
                ids,
                errors,
                ..Default::default()
            }),
            records: vec![],
        }))
    }

    async fn log_event(
        &self,
        _: Request<pb::LogEventRequest>,
    ) -> Result<Response<pb::LogEventResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    type IngestStream = tokio_stream::wrappers::ReceiverStream<Result<pb::IngestResponse, Status>>;
    async fn ingest(
        &self,
        _: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn get_receipt(
        &self,
        _: Request<pb::GetReceiptRequest>,
    ) -> Result<Response<pb::GetReceiptResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn get_event(
        &self,
        _: Request<pb::GetEventRequest>,
    ) -> Result<Response<pb::GetEventResponse>, Status> {
        Err(Status::not_found("no event"))
    }
    async fn list_events(
        &self,
        _: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn verify_event(
        &self,
        _: Request<pb::VerifyEventRequest>,
    ) -> Result<Response<pb::VerifyEventResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn verify_chain(
        &self,
        _: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    type TailStream = tokio_stream::wrappers::ReceiverStream<Result<pb::TailResponse, Status>>;
    async fn tail(
        &self,
        _: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn redact_event(
        &self,
        _: Request<pb::RedactEventRequest>,
    ) -> Result<Response<pb::RedactEventResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn create_destination(
        &self,
        _: Request<pb::CreateDestinationRequest>,
    ) -> Result<Response<pb::CreateDestinationResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn list_destinations(
        &self,
        _: Request<pb::ListDestinationsRequest>,
    ) -> Result<Response<pb::ListDestinationsResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn get_destination(
        &self,
        _: Request<pb::GetDestinationRequest>,
    ) -> Result<Response<pb::GetDestinationResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn delete_destination(
        &self,
        _: Request<pb::DeleteDestinationRequest>,
    ) -> Result<Response<pb::DeleteDestinationResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn resume_destination(
        &self,
        _: Request<pb::ResumeDestinationRequest>,
    ) -> Result<Response<pb::ResumeDestinationResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
}

async fn start(server: Scripted) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuditLogServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

fn event(action: &str) -> pb::AuditEventInput {
    Event::new("u", action, "r", "doc").build()
}

#[tokio::test]
async fn retries_honour_the_retry_hint_and_keep_the_same_ids() {
    let server = Scripted::default();
    server.script.lock().unwrap().push_back(Some(overloaded()));
    let url = start(server.clone()).await;
    let client = Client::builder(url, "alk_live_test")
        .retry(fast_retries(3))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .log_batch(vec![event("a.b"), event("a.c")])
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry came before the server's 1 s hint"
    );
    assert_eq!(response.receipt.unwrap().accepted, 2);
    let calls = server.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, calls[1].0, "a retry must resend the same ids");
    assert_eq!(calls[0].1, "Bearer alk_live_test");
}

#[tokio::test]
async fn a_final_error_is_not_retried() {
    let server = Scripted::default();
    let url = start(server.clone()).await;
    let client = Client::builder(url, "k")
        .retry(fast_retries(5))
        .build()
        .unwrap();
    let err = client.get_event("nope").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Rejected(ref s) if s.code() == tonic::Code::NotFound),
        "{err}"
    );
}

#[tokio::test]
async fn batcher_returns_undeliverable_events_and_reports_rejections() {
    let server = Scripted::default();
    for _ in 0..2 {
        server
            .script
            .lock()
            .unwrap()
            .push_back(Some(Status::unavailable("down")));
    }
    let url = start(server.clone()).await;
    let client = Client::builder(url, "k")
        .retry(fast_retries(2))
        .max_batch_events(3)
        .build()
        .unwrap();
    let batcher = client.batcher().await.unwrap();
    for action in ["a.one", "a.two", "a.three"] {
        batcher.send(event(action)).await.unwrap();
    }
    // The first full batch fails twice (all attempts): returned, not dropped.
    match batcher.flush().await {
        Err(ClientError::Undelivered { events, .. }) => assert_eq!(events.len(), 3),
        other => panic!("expected Undelivered, got {other:?}"),
    }
    batcher.send(event("a.four")).await.unwrap();
    batcher.send(event("bad")).await.unwrap();
    let report = batcher.close().await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].1.code, "invalid_field");
}

#[tokio::test]
async fn batcher_spools_what_it_cannot_deliver_and_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    let server = Scripted::default();
    for _ in 0..2 {
        server
            .script
            .lock()
            .unwrap()
            .push_back(Some(Status::unavailable("down")));
    }
    let url = start(server.clone()).await;
    let client = Client::builder(url, "k")
        .retry(fast_retries(2))
        .max_batch_events(2)
        .max_batch_delay(Duration::from_millis(5))
        .on_failure(OnFailure::Spool(spool.clone()))
        .build()
        .unwrap();
    let batcher = client.batcher().await.unwrap();
    batcher.send(event("a.one").into_id("e1")).await.unwrap();
    batcher.send(event("a.two").into_id("e2")).await.unwrap();
    // Wait for the batch to fail and be spooled.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&spool)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "nothing was spooled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The server is back: a flush replays the spool and empties it.
    let report = batcher.close().await.unwrap();
    assert_eq!(report.spooled, 2);
    assert_eq!(report.delivered, 2);
    assert_eq!(std::fs::read_to_string(&spool).unwrap(), "");
    let calls = server.calls.lock().unwrap().clone();
    assert_eq!(
        calls.last().unwrap().0,
        vec!["e1".to_string(), "e2".to_string()]
    );
}

trait WithId {
    fn into_id(self, id: &str) -> Self;
}

impl WithId for pb::AuditEventInput {
    fn into_id(mut self, id: &str) -> Self {
        self.id = Some(id.into());
        self
    }
}
