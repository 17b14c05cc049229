//! `Ingest`: streaming ingest, one acknowledgement per event, in order.
//!
//! Two tasks per stream. The reader takes the events that have arrived — waiting for
//! one, then taking whatever else is already buffered, up to [`STREAM_BATCH_EVENTS`] — and
//! validates them into a batch. The committer appends each batch to the log as one
//! entry (so a busy stream costs what large REST batches cost), keeps up to
//! [`MAX_IN_FLIGHT`] entries waiting for their commit, and sends their acknowledgements
//! in stream order: the committed record, or an error for that event alone.
//!
//! Contract: an acknowledgement with a record is sent only after the chainer reported the
//! entry stored (durable: fsynced in embedded mode), whatever the log's durability — a
//! stream ack is always a commit. Events read but not acknowledged when the stream ends
//! (server shutdown, revoked key, broken client stream) are never silently dropped: the
//! stream then ends with an error status, and every event without an ack may or may not
//! be committed; resending it with the same id is safe (idempotent ingest).
//!
//! Crash window: a server killed while entries are in flight leaves the client with
//! events it sent but got no ack for; those that were stored before the kill are in the
//! chain, the others are not, and a retry with the same ids resolves both cases.

use std::future::Future;
use std::pin::Pin;

use axum::http::HeaderValue;
use futures::future::Either;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::{FutureExt, Stream};
use prost::Message;
use prost::bytes::{Bytes, BytesMut};
use sealtrail_core::ValidationError;
use sealtrail_core::committed::{Committed, CommittedRef};
use sealtrail_core::event::NormalizedEvent;
use sealtrail_core::receipt::{ItemError, Receipt};
use sealtrail_core::time::format_micros;
use sealtrail_log::{IndexedEvent, LogEntry};
use sealtrail_proto as pb;
use sealtrail_store::now_micros;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::service::{AuditLogService, authorization};
use crate::auth::Scope;
use crate::error::ApiError;
use crate::ingest::{append, new_id, wait_outcome};
use crate::{AppState, Service};

/// Entries of one stream appended and awaiting their commit at once.
pub const MAX_IN_FLIGHT: usize = 2;
/// Most events the reader folds into one entry. With [`MAX_IN_FLIGHT`] this bounds what a
/// stream holds in memory — validated events waiting, entries in flight, acknowledgements
/// (each with its committed record) not yet sent: about `(1 + 2 × MAX_IN_FLIGHT) ×
/// STREAM_BATCH_EVENTS` events. At 8 entries of 1,000 a 1M-event benchmark over 8 streams
/// took the server to ~560 MB; each group commit takes every entry waiting anyway, so
/// smaller entries cost no throughput.
pub const STREAM_BATCH_EVENTS: usize = 256;

/// The acknowledgements of an `Ingest` stream, as the generated `AuditLog` trait has them
/// (see [`AckStream`] for what the server sends).
pub type IngestStream = Pin<Box<dyn Stream<Item = Result<pb::IngestResponse, Status>> + Send>>;

/// The acknowledgements of an `Ingest` stream, encoded from the committed records.
pub type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

/// One event as read: its position in the stream, the id the client gave (if any) and
/// the validated event or why it is invalid.
struct Item {
    client_id: Option<String>,
    event: Result<NormalizedEvent, ValidationError>,
}

/// The events that arrived together, validated, starting at stream position `first`.
struct Batch {
    first: u64,
    created_at: String,
    items: Vec<Item>,
}

type Acks = Vec<Ack>;

/// One acknowledgement: the encoded `IngestResponse` message for one event of the
/// stream. The acknowledgements of an entry are written at once into one buffer, each
/// record straight from the committed record ([`pb::RecordAck`]: no message is built per
/// record, a dozen string copies each), and each `Ack` is its slice of that buffer — so an
/// acknowledgement waiting to be sent holds ~450 bytes, not the record or the store's
/// batch.
pub struct Ack(Bytes);

impl Ack {
    /// The acknowledgement as the generated message.
    pub fn into_response(self) -> pb::IngestResponse {
        // Bytes this module encoded; a failure would be a bug in the encoder.
        pb::IngestResponse::decode(self.0).unwrap_or_else(|e| pb::IngestResponse {
            result: Some(pb::ingest_response::Result::Error(ingest_error(
                "internal",
                &format!("the acknowledgement could not be read back: {e}"),
            ))),
            ..Default::default()
        })
    }
}

/// Encoding only: the server never decodes an acknowledgement (a decoder would skip
/// every field).
impl Message for Ack {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Writes an entry's acknowledgements into one buffer ([`Ack`]).
struct AckWriter {
    buf: BytesMut,
    ends: Vec<usize>,
}

impl AckWriter {
    fn new(events: usize) -> Self {
        Self {
            // A typical acknowledgement with its record is ~450 bytes.
            buf: BytesMut::with_capacity(events * 512),
            ends: Vec::with_capacity(events),
        }
    }

    fn record(&mut self, index: u64, id: &str, record: CommittedRef<'_>) {
        let owned;
        let metadata_json: &[u8] = match record.metadata_json() {
            Some(text) => text.as_bytes(),
            None if record.record.redacted.is_some() => b"",
            None => {
                owned = serde_json::to_vec(&record.record.metadata).expect("metadata serializes");
                &owned
            }
        };
        pb::RecordAck {
            index,
            id,
            record: pb::RecordRef {
                record: record.record,
                metadata_json,
            },
        }
        .encode_raw(&mut self.buf);
        self.ends.push(self.buf.len());
    }

    fn error(&mut self, index: u64, id: String, error: pb::IngestError) {
        pb::IngestResponse {
            index,
            id,
            result: Some(pb::ingest_response::Result::Error(error)),
        }
        .encode_raw(&mut self.buf);
        self.ends.push(self.buf.len());
    }

    fn finish(self) -> Acks {
        let all = self.buf.freeze();
        let mut start = 0;
        self.ends
            .into_iter()
            .map(|end| {
                let ack = Ack(all.slice(start..end));
                start = end;
                ack
            })
            .collect()
    }
}

/// `Ingest` as the generated `AuditLog` trait serves it: the same stream, each
/// acknowledgement built as a message. The server routes `Ingest` to [`start`] instead
/// (see `super::routes`).
pub(super) async fn start_messages(
    service: &AuditLogService,
    request: Request<Streaming<pb::IngestRequest>>,
) -> Result<Response<IngestStream>, Status> {
    let acks = start(service, request).await?.into_inner();
    Ok(Response::new(Box::pin(
        acks.map(|ack| ack.map(Ack::into_response)),
    )))
}

pub(super) async fn start(
    service: &AuditLogService,
    request: Request<Streaming<pb::IngestRequest>>,
) -> Result<Response<AckStream>, Status> {
    let caller = service.caller(&request, &[Scope::Write]).await?;
    let auth = authorization(&request);
    let inbound = request.into_inner();
    let (batch_tx, batch_rx) = mpsc::channel(1);
    let (ack_tx, ack_rx) = mpsc::channel::<Result<Acks, Status>>(MAX_IN_FLIGHT);
    tokio::spawn(read(inbound, batch_tx));
    tokio::spawn(commit(
        service.state.clone(),
        auth,
        caller.tenant_id,
        batch_rx,
        ack_tx,
    ));
    let acks = ReceiverStream::new(ack_rx).flat_map(|acks| match acks {
        Ok(acks) => Either::Left(futures::stream::iter(acks).map(Ok)),
        Err(status) => Either::Right(futures::stream::once(std::future::ready(Err(status)))),
    });
    Ok(Response::new(Box::pin(acks)))
}

/// The reader task: batches and validates what arrives until the client half-closes,
/// the stream breaks (forwarded as `Err`), or the committer stops listening.
async fn read(
    mut inbound: Streaming<pb::IngestRequest>,
    batches: mpsc::Sender<Result<Batch, Status>>,
) {
    let mut next = 0u64;
    loop {
        let first = tokio::select! {
            message = inbound.message() => message,
            _ = batches.closed() => return,
        };
        let mut messages = match first {
            Ok(Some(message)) => vec![message],
            Ok(None) => return,
            Err(status) => {
                let _ = batches.send(Err(status)).await;
                return;
            }
        };
        let mut end = None;
        while messages.len() < STREAM_BATCH_EVENTS {
            // `message()` is cancel-safe: a message not ready yet stays in the stream.
            match inbound.message().now_or_never() {
                Some(Ok(Some(message))) => messages.push(message),
                Some(Ok(None)) => {
                    end = Some(Ok(()));
                    break;
                }
                Some(Err(status)) => {
                    end = Some(Err(status));
                    break;
                }
                None => break,
            }
        }
        let now = now_micros();
        let items: Vec<Item> = messages.into_iter().map(|m| validate(m, now)).collect();
        let batch = Batch {
            first: next,
            created_at: format_micros(now),
            items,
        };
        next += batch.items.len() as u64;
        if batches.send(Ok(batch)).await.is_err() {
            return;
        }
        match end {
            None => {}
            Some(Ok(())) => return,
            Some(Err(status)) => {
                let _ = batches.send(Err(status)).await;
                return;
            }
        }
    }
}

fn validate(message: pb::IngestRequest, now: sealtrail_core::time::Micros) -> Item {
    let Some(input) = message.event else {
        return Item {
            client_id: None,
            event: Err(ValidationError::new("missing_field", "event is required")),
        };
    };
    Item {
        client_id: input.id.clone(),
        event: super::service::validate_owned(input, now),
    }
}

/// The committer task (see the module doc). Ends the ack stream normally once every
/// batch is acknowledged after the client half-closed; with an error status when the
/// server shuts down, the key stops authenticating, or the client stream broke.
async fn commit(
    state: AppState,
    auth: Option<HeaderValue>,
    tenant: String,
    mut batches: mpsc::Receiver<Result<Batch, Status>>,
    acks: mpsc::Sender<Result<Acks, Status>>,
) {
    let service: &Service = &state;
    let mut pending: FuturesOrdered<Pin<Box<dyn Future<Output = Acks> + Send + '_>>> =
        FuturesOrdered::new();
    let mut shutdown = state.shutdown.clone();
    let mut reading = !*shutdown.borrow();
    let mut closing: Option<Status> = (!reading).then(shutting_down);
    loop {
        if !reading && pending.is_empty() {
            break;
        }
        tokio::select! {
            Some(done) = pending.next(), if !pending.is_empty() => {
                if acks.send(Ok(done)).await.is_err() {
                    return;
                }
            }
            batch = batches.recv(), if reading && pending.len() < MAX_IN_FLIGHT => match batch {
                None => reading = false,
                Some(Err(status)) => {
                    reading = false;
                    closing = Some(status);
                }
                Some(Ok(batch)) => {
                    // Re-checked per batch (a cached lookup), so a revoked key stops a
                    // long-lived stream within the key cache's TTL.
                    let key = service
                        .keys
                        .authenticate_value(service.store.as_ref(), auth.as_ref(), &[Scope::Write])
                        .await;
                    match key {
                        Ok(_) => pending.push_back(submit(service, &tenant, batch).await),
                        Err(err) => {
                            reading = false;
                            closing = Some(err.into());
                        }
                    }
                }
            },
            _ = shutdown.changed(), if reading => {
                reading = false;
                closing = Some(shutting_down());
            }
        }
    }
    if let Some(status) = closing {
        let _ = acks.send(Err(status)).await;
    }
}

fn shutting_down() -> Status {
    ApiError::unavailable(
        "the server is shutting down; resend the events without an acknowledgement (same ids) to another instance",
    )
    .into()
}

/// Appends the batch's valid events as one log entry and returns the future of its
/// acknowledgements.
async fn submit<'a>(
    state: &'a Service,
    tenant: &str,
    batch: Batch,
) -> Pin<Box<dyn Future<Output = Acks> + Send + 'a>> {
    let mut events = Vec::with_capacity(batch.items.len());
    let mut rejected = Vec::new();
    let mut ids = Vec::with_capacity(batch.items.len());
    for (index, item) in batch.items.into_iter().enumerate() {
        let index = index as u32;
        match item.event {
            Ok(event) => {
                ids.push(event.id.clone());
                events.push(IndexedEvent { index, event });
            }
            Err(err) => {
                ids.push(item.client_id.unwrap_or_default());
                rejected.push(ItemError {
                    index,
                    code: err.code.to_string(),
                    message: err.message,
                });
            }
        }
    }
    let first = batch.first;
    if events.is_empty() {
        return Box::pin(std::future::ready(acknowledge_failure(
            first, ids, &rejected, None,
        )));
    }
    metrics::counter!("sealtrail_events_received_total").increment(events.len() as u64);
    let entry = LogEntry {
        tenant_id: tenant.to_string(),
        receipt_id: new_id(),
        created_at: batch.created_at,
        events,
        rejected: rejected.clone(),
        reply_to: None,
        // A stream acknowledges each event with its record or error and never tells the
        // client this entry's receipt id, so nobody could look the receipt up: it is not
        // stored (it was ~10 KB of JSON per 256 events through the log, the index and its
        // memtables).
        reply_only: true,
        resent: false,
    };
    let tenant = tenant.to_string();
    match append(state, entry).await {
        Ok((waiter, _durability)) => Box::pin(async move {
            match wait_outcome(state, waiter, &tenant).await {
                Ok((receipt, records)) => acknowledge(first, ids, &receipt, &records),
                Err(err) => acknowledge_failure(first, ids, &rejected, Some(err)),
            }
        }),
        // Nothing was appended.
        Err(err) => Box::pin(std::future::ready(acknowledge_failure(
            first,
            ids,
            &rejected,
            Some(err),
        ))),
    }
}

fn ingest_error(code: &str, message: &str) -> pb::IngestError {
    pb::IngestError {
        code: code.to_string(),
        message: message.to_string(),
        retryable: false,
        retry_after_ms: 0,
    }
}

/// One ack per event of a committed entry (entry index `i` is stream position
/// `first + i`): an error when the receipt lists one for `i` (validation, or an id the
/// chainer found stored with other content), else the next record (records come in
/// entry order).
fn acknowledge(first: u64, ids: Vec<String>, receipt: &Receipt, records: &Committed) -> Acks {
    let mut errors = receipt.errors.iter().peekable();
    let mut records = records.iter();
    let mut acks = AckWriter::new(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let index = first + i as u64;
        match errors.next_if(|e| e.index as usize == i) {
            Some(e) => acks.error(index, id, ingest_error(&e.code, &e.message)),
            None => match records.next() {
                Some(record) => acks.record(index, &id, record),
                None => acks.error(
                    index,
                    id,
                    ingest_error(
                        "internal",
                        "the commit reply has no record for this event; resend it with the same id",
                    ),
                ),
            },
        }
    }
    acks.finish()
}

/// Acks for an entry that did not commit (or had no valid event): the rejected events
/// keep their own errors, every other event gets `failure` (retryable when it is a 503
/// or 504, with the server's retry hint).
fn acknowledge_failure(
    first: u64,
    ids: Vec<String>,
    rejected: &[ItemError],
    failure: Option<ApiError>,
) -> Acks {
    let failure = failure.map(|err| pb::IngestError {
        code: err.code.to_string(),
        message: err.message,
        retryable: matches!(err.status.as_u16(), 503 | 504),
        retry_after_ms: err.retry_after.map_or(0, |s| s * 1000),
    });
    let mut errors = rejected.iter().peekable();
    let mut acks = AckWriter::new(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let error = match errors.next_if(|e| e.index as usize == i) {
            Some(e) => ingest_error(&e.code, &e.message),
            None => failure
                .clone()
                .unwrap_or_else(|| ingest_error("internal", "event neither rejected nor appended")),
        };
        acks.error(first + i as u64, id, error);
    }
    acks.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sealtrail_core::committed::ChainedBatch;
    use sealtrail_core::event::validate_event;
    use sealtrail_core::record::{Redaction, chain_step};
    use serde_json::json;

    use super::*;

    fn chained(n: u64) -> sealtrail_core::record::ChainedRecord {
        let input = json!({"actor": {"id": "u", "type": "human", "email": "a@b.c"},
            "action": "a.b", "resource": {"id": format!("r{n}"), "type": "t", "name": "é"},
            "outcome": "failure", "metadata": {"n": n, "s": "x\"y", "list": [1, {"k": null}]}});
        let event = validate_event(input, 1_704_164_645_678_901, || format!("id-{n}")).unwrap();
        chain_step(None, "acme", event)
    }

    /// Every kind of acknowledgement — a record shared with the store's batch (metadata
    /// from its canonical bytes), an owned one (a retry answered from the store), a
    /// redacted one, an error, and an event the reply had no record for — encodes to the
    /// bytes of the message built the old way, and that message carries the record.
    #[test]
    fn acknowledgements_encode_as_the_messages_they_stand_for() {
        let shared = chained(1);
        let owned = chained(2).record;
        let redacted = chained(3).record.redact(Redaction {
            event_id: "id-9".into(),
            sequence_number: 9,
        });
        let mut records = Committed::with_capacity(3);
        records.push_chained(0);
        records.push_record(owned.clone());
        records.push_record(redacted.clone());
        records.share(Arc::new(vec![shared.clone()]) as Arc<dyn ChainedBatch>);
        let receipt = Receipt {
            errors: vec![ItemError {
                index: 1,
                code: "invalid_field".into(),
                message: "no".into(),
            }],
            ..Receipt::queued("r".into(), "now".into(), vec![], vec![])
        };
        let ids = ["id-1", "bad", "id-2", "id-3", "id-4"]
            .map(String::from)
            .to_vec();
        let acks = acknowledge(40, ids, &receipt, &records);
        assert_eq!(acks.len(), 5);
        let mut messages = Vec::new();
        for ack in acks {
            let bytes = ack.encode_to_vec();
            let message = ack.into_response();
            assert_eq!(bytes, message.encode_to_vec());
            assert_eq!(pb::IngestResponse::decode(&bytes[..]).unwrap(), message);
            messages.push(message);
        }
        let record = |i: usize| match &messages[i].result {
            Some(pb::ingest_response::Result::Record(r)) => pb::record_to_core(r).unwrap(),
            other => panic!("ack {i}: {other:?}"),
        };
        let error = |i: usize| match &messages[i].result {
            Some(pb::ingest_response::Result::Error(e)) => e.code.clone(),
            other => panic!("ack {i}: {other:?}"),
        };
        assert_eq!(
            messages.iter().map(|m| m.index).collect::<Vec<_>>(),
            [40, 41, 42, 43, 44]
        );
        assert_eq!(record(0), shared.record);
        assert_eq!(error(1), "invalid_field");
        assert_eq!(record(2), owned);
        assert_eq!(record(3).redacted, redacted.redacted);
        assert_eq!(error(4), "internal");
    }
}
