//! `POST /v1/events` and `POST /v1/events/batch`.
//!
//! Validation happens here, before anything is published: a request that fails it writes
//! nothing. Valid events are stamped (`created_at`, a UUIDv7 id when none was given) and
//! appended to the log as one entry. The answer waits for the commit reply whenever the
//! log is volatile (embedded mode) or the caller asked for sync; with a durable log an
//! async caller gets its `202` as soon as the log has the entry.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sealtrail_core::ValidationError;
use sealtrail_core::committed::Committed;
use sealtrail_core::event::{NormalizedEvent, validate_event_json};
use sealtrail_core::limits::{MAX_BATCH_BODY_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BODY_BYTES};
use sealtrail_core::receipt::{ItemError, Receipt, ReceiptStatus};
use sealtrail_core::record::Record;
use sealtrail_core::time::{Micros, format_micros};
use sealtrail_log::correlation::Waiter;
use sealtrail_log::{Durability, EntryOutcome, IndexedEvent, LogEntry, LogError};
use sealtrail_store::now_micros;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::auth::{Authenticated, Write};
use crate::body::read_bytes;
use crate::error::{ApiError, ApiResult, ErrorBody, Params, parse_flag};
use crate::{Acknowledge, AppState, Service};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IngestParams {
    /// `true` for synchronous ingest (same as the `X-Fact0-Sync: true` header).
    #[param(value_type = Option<bool>)]
    pub sync: Option<String>,
    /// `true` with sync ingest of one event: the `201` record also carries `checkpoint`
    /// (the signed checkpoint of the log up to this record) and `inclusion_proof` (the
    /// record's proof in it), extra members beside fact0's shape.
    #[param(value_type = Option<bool>)]
    pub proof: Option<String>,
}

/// The ingest header, as declared (read by [`wants_sync`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct SyncHeader {
    /// `true` for synchronous ingest (same as the `sync` parameter)
    #[param(rename = "X-Fact0-Sync", value_type = bool, required = false)]
    x_fact0_sync: Option<bool>,
}

/// The batch's query, as declared (`proof` is for one event only).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct BatchParams {
    /// `true` for synchronous ingest (same as the `X-Fact0-Sync: true` header)
    sync: Option<bool>,
}

/// The sync answer of a batch: fact0's `BatchResult` plus the committed records. The
/// schema of what [`batch_result_json`] writes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // written by `batch_result_json`; here for the OpenAPI document
pub struct BatchResult {
    pub receipt_id: String,
    pub status: ReceiptStatus,
    pub accepted: u32,
    pub rejected: u32,
    pub ids: Vec<String>,
    pub errors: Vec<ItemError>,
    /// The committed records of the accepted events, in request order.
    pub events: Vec<Record>,
}

/// [`BatchResult`]'s members but `events`, in its order.
#[derive(Serialize)]
struct BatchResultHead<'a> {
    receipt_id: &'a str,
    status: ReceiptStatus,
    accepted: u32,
    rejected: u32,
    ids: &'a [String],
    errors: &'a [ItemError],
}

/// A sync batch's answer ([`BatchResult`]). The records are written from the bytes that
/// were hashed ([`sealtrail_core::committed::CommittedRef::write_json`]) rather than
/// serialized again: at 100 records a request that was a twelfth of the server's CPU.
fn batch_result_json(receipt: &Receipt, records: &Committed) -> Vec<u8> {
    let head = BatchResultHead {
        receipt_id: &receipt.receipt_id,
        status: receipt.status,
        accepted: receipt.accepted,
        rejected: receipt.rejected,
        ids: &receipt.ids,
        errors: &receipt.errors,
    };
    let mut out = Vec::with_capacity(512 + 1024 * records.len());
    serde_json::to_writer(&mut out, &head).expect("receipts serialize");
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    out.extend_from_slice(b",\"events\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        record.write_json(&mut out);
    }
    out.extend_from_slice(b"]}");
    out
}

/// A response of JSON bytes already written.
fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Sync when the `X-Fact0-Sync` header or the `sync` parameter says so (one rule for
/// both: `true`/`1`, `false`/`0`, a `400` for anything else — each is checked even when
/// the other already says `true`).
fn wants_sync(headers: &HeaderMap, params: &IngestParams) -> ApiResult<bool> {
    let header = match headers.get("x-fact0-sync") {
        None => false,
        Some(v) => parse_flag(
            "the X-Fact0-Sync header",
            Some(v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", "X-Fact0-Sync must be true or false")
            })?),
        )
        .map_err(|e| ApiError::bad_request("invalid_header", e.message))?,
    };
    let query = parse_flag("sync", params.sync.as_deref())?;
    Ok(header || query)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Publishes `entry` and, unless the acknowledgement policy lets an async caller go once
/// the log has it ([`Acknowledge::OnLogAppend`]), waits for its commit; `None` means the
/// caller is answered with the queued receipt.
pub(crate) async fn publish(
    state: &AppState,
    mut entry: LogEntry,
    sync: bool,
) -> ApiResult<Option<(Receipt, Committed)>> {
    refuse_if_full(state)?;
    // An error from here on may have an unknown outcome (the entry may be stored): it
    // names the ids the server assigned, so the client can retry exactly these.
    let receipt_id = entry.receipt_id.clone();
    let event_ids: Vec<String> = entry.events.iter().map(|e| e.event.id.clone()).collect();
    let with_ids = move |err: ApiError| err.with_ids(receipt_id.clone(), event_ids.clone());
    if !sync && matches!(state.config.acknowledge, Acknowledge::OnLogAppend { .. }) {
        // A caller that does not wait, on a durable log: no reply to ask the chainer for.
        entry.reply_to = None;
        let tenant = entry.tenant_id.clone();
        let durability = state
            .log
            .append(entry)
            .await
            .map_err(|e| with_ids(log_error(e)))?;
        note_write(state, &tenant);
        return match durability {
            Durability::Durable => Ok(None),
            // Wiring that pairs this policy with an in-process queue: refuse rather than
            // acknowledge what a crash would lose.
            Durability::Volatile => Err(ApiError::internal(
                "acknowledging on append needs a durable log",
                "configuration",
            )),
        };
    }
    let tenant = entry.tenant_id.clone();
    let (waiter, _) = append(state, entry).await.map_err(&with_ids)?;
    wait_outcome(state, waiter, &tenant)
        .await
        .map(Some)
        .map_err(with_ids)
}

/// Appends `entry` to the log with a reply address; the returned waiter receives its
/// outcome. Entries appended one after another by one task reach the chainer in that
/// order (the log's contract), which streaming ingest relies on.
pub(crate) async fn append(
    state: &Service,
    mut entry: LogEntry,
) -> ApiResult<(Waiter<'_>, Durability)> {
    refuse_if_full(state)?;
    let waiter = state.correlator.register();
    entry.reply_to = Some(waiter.address.clone());
    let tenant = entry.tenant_id.clone();
    let durability = state.log.append(entry).await.map_err(log_error)?;
    note_write(state, &tenant);
    Ok((waiter, durability))
}

/// Tells the verifiable log that `tenant` was written (its checkpoints go to the
/// witnesses whether or not they are read).
fn note_write(state: &Service, tenant: &str) {
    if let Some(log) = &state.tlog {
        log.note_write(tenant);
    }
}

/// `507` at once while the store refuses writes for lack of disk space: queueing the
/// entry would only hold the request for the commit timeout.
fn refuse_if_full(state: &Service) -> ApiResult<()> {
    match state.store.write_blocked() {
        Some(reason) => Err(ApiError::insufficient_storage(format!(
            "{reason}; nothing was stored: retry with the same ids once space is freed"
        ))),
        None => Ok(()),
    }
}

pub(crate) fn log_error(err: LogError) -> ApiError {
    match err {
        LogError::Overloaded => {
            ApiError::overloaded("ingest is overloaded; retry after the Retry-After delay")
        }
        LogError::Closed => {
            ApiError::unavailable("the server is shutting down; retry on another instance")
        }
        LogError::Backend(m) => {
            tracing::warn!(%m, "log append failed");
            ApiError::unavailable("the log is unavailable; retry shortly")
        }
    }
}

/// How long a sync call waits for its commit before the readiness probe's word that no
/// chainer holds its partition counts: a chainer that has just taken the partition writes
/// its first heartbeat within a second, and the probe reads it within another.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Resolves once the readiness probe (distributed gateways) reports that no chainer holds
/// `partition`, [`ORPHAN_GRACE`] into the wait at the earliest; never without a probe.
async fn orphaned(state: &Service, partition: u32) {
    let Some(mut ready) = state.readiness.clone() else {
        return std::future::pending().await;
    };
    tokio::time::sleep(ORPHAN_GRACE).await;
    loop {
        let orphaned = ready
            .borrow_and_update()
            .iter()
            .any(|p| p.component == "chainer" && p.partition == Some(partition));
        if orphaned {
            return;
        }
        if ready.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Waits (at most the commit timeout) for the outcome of an appended entry of `tenant`.
/// When the gateway knows that no chainer holds the tenant's partition (its readiness
/// probe), it answers a retryable `503` at once instead of waiting out the timeout.
pub(crate) async fn wait_outcome(
    state: &Service,
    waiter: Waiter<'_>,
    tenant: &str,
) -> ApiResult<(Receipt, Committed)> {
    let partition = sealtrail_core::partition::partition_for(tenant, state.log.partitions());
    let outcome = tokio::select! {
        outcome = waiter.wait(state.config.commit_timeout) => outcome,
        () = orphaned(state, partition) => {
            metrics::counter!("sealtrail_sync_orphaned_total").increment(1);
            return Err(ApiError::unavailable(format!(
                "no chainer holds partition {partition} of this tenant right now (it missed its \
                 heartbeats): the events are in the log and will be committed when a chainer \
                 takes the partition. Retry with the ids in event_ids (an id is never chained \
                 twice) or look up receipt_id later"
            )));
        }
    };
    match outcome {
        Some(EntryOutcome::Committed { receipt, records }) => Ok((receipt, records)),
        Some(EntryOutcome::Unavailable {
            message,
            no_space: true,
        }) => Err(ApiError::insufficient_storage(message)),
        Some(EntryOutcome::Unavailable { message, .. }) => Err(ApiError::unavailable(message)),
        None => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "commit_timeout",
            format!(
                "the commit was not confirmed within {} ms, so its outcome is unknown: the events may or may not be stored. Retry with the ids in event_ids (an id is never chained twice) or look up receipt_id later",
                state.config.commit_timeout.as_millis()
            ),
        )),
    }
}

pub(crate) fn queued_receipt(entry: &LogEntry) -> Receipt {
    Receipt::queued(
        entry.receipt_id.clone(),
        entry.created_at.clone(),
        entry.events.iter().map(|e| e.event.id.clone()).collect(),
        entry.rejected.clone(),
    )
}

/// Ingest one audit event.
#[utoipa::path(post, path = "/v1/events", tag = "Ingest", operation_id = "logEvent",
    params(IngestParams, SyncHeader),
    request_body(content = crate::openapi::AuditEventInput, description = "One audit event"),
    responses(
        (status = 202, description = "Accepted (async, the default)", body = Receipt),
        (status = 201, description = "Committed (sync); with `proof=true` also its checkpoint and inclusion proof", body = ref("#/components/schemas/RecordWithProof")),
        (status = 400, description = "Invalid event, body or parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time; nothing stored", body = ErrorBody),
        (status = 409, description = "The id exists with different content (sync)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Overloaded; retry after Retry-After", body = ErrorBody),
        (status = 504, description = "Commit not confirmed in time; retry with the same id", body = ErrorBody),
        (status = 507, description = "The server's disk is below its free-space floor; nothing stored, retry later with the same id", body = ErrorBody),
    ),
    security(("apiKey" = [])))]
pub async fn log_event(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Write>,
    Params(params): Params<IngestParams>,
    // The whole request last, not `HeaderMap` and `Body`: that extractor clones every header.
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let sync = wants_sync(&headers, &params)?;
    let with_proof = parse_flag("proof", params.proof.as_deref())?;
    let bytes = read_bytes(
        &headers,
        body,
        MAX_EVENT_BODY_BYTES,
        state.config.body_read_timeout,
    )
    .await?;
    match ingest_event(&state, caller.tenant_id, EventBody::Json(&bytes), sync).await? {
        EventOutcome::Accepted(receipt) => {
            Ok((StatusCode::ACCEPTED, Json(receipt)).into_response())
        }
        EventOutcome::Committed(committed) if with_proof && state.tlog.is_some() => {
            let record = committed.into_first().expect("one committed record");
            let log = state.tlog.as_deref().expect("checked");
            let (tenant, seq) = (record.tenant_id.clone(), record.sequence_number);
            let checkpoint = log.sign_at(state.store.as_ref(), &tenant, seq).await?;
            let proof = crate::tlog::inclusion(state.store.as_ref(), &tenant, seq, seq).await?;
            let mut body = serde_json::to_value(&record).expect("records serialize");
            body["checkpoint"] = serde_json::Value::String(checkpoint);
            body["inclusion_proof"] = serde_json::to_value(proof).expect("proofs serialize");
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        EventOutcome::Committed(committed) => {
            let mut body = Vec::with_capacity(1024);
            if let Some(record) = committed.first() {
                record.write_json(&mut body);
            }
            Ok(json_response(StatusCode::CREATED, body))
        }
    }
}

/// What ingesting one event answers (REST: `202` + receipt or `201` + record).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per request, moved once: boxing buys nothing
pub enum EventOutcome {
    /// Async: the receipt (queued, or committed when the log made us wait anyway).
    Accepted(Receipt),
    /// Sync: the committed record (exactly one).
    Committed(Committed),
}

/// One event as a transport hands it over, before validation.
pub enum EventBody<'a> {
    /// Its JSON text (REST): parsed strictly and validated in one step
    /// ([`validate_event_json`], the same result as parsing then validating).
    Json(&'a [u8]),
    /// A gRPC message ([`crate::grpc::validate_message`]: the same rules).
    Message(&'a sealtrail_proto::AuditEventInput),
}

impl EventBody<'_> {
    fn validate(self, now: Micros) -> Result<NormalizedEvent, ValidationError> {
        match self {
            EventBody::Json(bytes) => validate_event_json(bytes, now, new_id),
            EventBody::Message(input) => crate::grpc::validate_message(input, now),
        }
    }
}

/// Validates one event of `tenant_id`, publishes it and waits for its commit when
/// the log is volatile or `sync` asks. Shared by REST and gRPC: one set of rules.
pub async fn ingest_event(
    state: &AppState,
    tenant_id: String,
    body: EventBody<'_>,
    sync: bool,
) -> ApiResult<EventOutcome> {
    let now = now_micros();
    let event = body.validate(now)?;
    ingest_validated(state, tenant_id, event, now, sync).await
}

/// [`ingest_event`] of an event already validated (or built by the server: a redaction).
pub(crate) async fn ingest_validated(
    state: &AppState,
    tenant_id: String,
    event: NormalizedEvent,
    now: Micros,
    sync: bool,
) -> ApiResult<EventOutcome> {
    let entry = LogEntry {
        tenant_id,
        receipt_id: new_id(),
        created_at: format_micros(now),
        events: vec![IndexedEvent { index: 0, event }],
        rejected: vec![],
        reply_to: None,
        // A sync caller gets the record, never the receipt id: no receipt to store.
        reply_only: sync,
        resent: false,
    };
    let queued = queued_receipt(&entry);
    metrics::counter!("sealtrail_events_received_total").increment(1);
    match publish(state, entry, sync).await? {
        None => Ok(EventOutcome::Accepted(queued)),
        Some((receipt, records)) if sync => {
            if records.is_empty() {
                Err(conflict_from(&receipt))
            } else {
                Ok(EventOutcome::Committed(records))
            }
        }
        Some((receipt, _)) => Ok(EventOutcome::Accepted(receipt)),
    }
}

fn conflict_from(receipt: &Receipt) -> ApiError {
    match receipt.errors.first() {
        Some(e) if e.code == "conflict" => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.message.clone())
        }
        Some(e) => ApiError::internal("unexpected rejection of a validated event", &e.message),
        None => ApiError::internal("commit reply without record or error", "empty outcome"),
    }
}

/// Ingest up to 1000 audit events.
#[utoipa::path(post, path = "/v1/events/batch", tag = "Ingest", operation_id = "logBatch",
    params(BatchParams, SyncHeader),
    request_body(content = crate::openapi::BatchInput, description = "1 to 1000 events; invalid items are rejected by index, the others committed"),
    responses(
        (status = 202, description = "Accepted (async)", body = Receipt),
        (status = 200, description = "Committed (sync)", body = BatchResult),
        (status = 400, description = "Invalid batch envelope or parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time; nothing stored", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Overloaded; retry after Retry-After", body = ErrorBody),
        (status = 504, description = "Commit not confirmed in time; retry with the same ids", body = ErrorBody),
        (status = 507, description = "The server's disk is below its free-space floor; nothing stored, retry later with the same ids", body = ErrorBody),
    ),
    security(("apiKey" = [])))]
pub async fn log_batch(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Write>,
    Params(params): Params<IngestParams>,
    // The whole request last, not `HeaderMap` and `Body`: that extractor clones every header.
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let sync = wants_sync(&headers, &params)?;
    let bytes = read_bytes(
        &headers,
        body,
        MAX_BATCH_BODY_BYTES,
        state.config.body_read_timeout,
    )
    .await?;
    // Only the documented envelope, an object: serde would also read a struct from an
    // array (`[[event, …]]`).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid_body",
            "a batch must be a JSON object {\"events\": [event, …]}",
        ));
    }
    // The envelope is parsed on its own and each item strictly by itself, so an item that
    // is not I-JSON (or not valid) is rejected by its index while the others commit.
    let envelope: BatchEnvelope = serde_json::from_slice(&bytes).map_err(|err| {
        let code = if err.is_data() {
            "invalid_body"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(
            code,
            format!("a batch must be {{\"events\": [event, …]}}: {err}"),
        )
    })?;
    let items = envelope.events;
    check_batch_len(items.len())?;
    // Each item is parsed strictly by itself, so an item that is not I-JSON (or not
    // valid) is rejected by its index while the others commit.
    let items = items
        .iter()
        .map(|item| Ok(EventBody::Json(item.get().as_bytes())))
        .collect();
    match ingest_batch(&state, caller.tenant_id, items, sync).await? {
        BatchOutcome::Accepted(receipt) => {
            Ok((StatusCode::ACCEPTED, Json(receipt)).into_response())
        }
        BatchOutcome::Committed { receipt, records } => Ok(json_response(
            StatusCode::OK,
            batch_result_json(&receipt, &records),
        )),
    }
}

/// Refuses an empty batch or one over [`MAX_BATCH_EVENTS`].
pub fn check_batch_len(len: usize) -> ApiResult<()> {
    if len == 0 {
        return Err(ApiError::bad_request(
            "missing_field",
            "events must hold at least one event",
        ));
    }
    if len > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("a batch holds at most {MAX_BATCH_EVENTS} events; this one has {len}"),
        ));
    }
    Ok(())
}

/// What ingesting a batch answers (REST: `202` + receipt or `200` + result).
#[derive(Debug)]
pub enum BatchOutcome {
    Accepted(Receipt),
    /// Sync: the receipt and the committed records of the accepted events, in order.
    Committed {
        receipt: Receipt,
        records: Committed,
    },
}

/// Validates a batch of `tenant_id` (each item already parsed, or its parse error),
/// publishes its valid events as one log entry and waits like [`ingest_event`]. Invalid
/// items are rejected by index in the receipt. Shared by REST and gRPC.
pub async fn ingest_batch(
    state: &AppState,
    tenant_id: String,
    items: Vec<Result<EventBody<'_>, ValidationError>>,
    sync: bool,
) -> ApiResult<BatchOutcome> {
    check_batch_len(items.len())?;
    let now = now_micros();
    let mut events = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, parsed) in items.into_iter().enumerate() {
        let index = index as u32;
        match parsed.and_then(|body| body.validate(now)) {
            Ok(event) => events.push(IndexedEvent { index, event }),
            Err(err) => rejected.push(ItemError {
                index,
                code: err.code.to_string(),
                message: err.message,
            }),
        }
    }
    metrics::counter!("sealtrail_events_received_total").increment(events.len() as u64);
    let entry = LogEntry {
        tenant_id,
        receipt_id: new_id(),
        created_at: format_micros(now),
        events,
        rejected,
        reply_to: None,
        reply_only: false,
        resent: false,
    };
    let queued = queued_receipt(&entry);
    match publish(state, entry, sync).await? {
        None => Ok(BatchOutcome::Accepted(queued)),
        Some((receipt, records)) if sync => Ok(BatchOutcome::Committed { receipt, records }),
        Some((receipt, _)) => Ok(BatchOutcome::Accepted(receipt)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(sync: Option<&str>) -> IngestParams {
        IngestParams {
            sync: sync.map(str::to_string),
            proof: None,
        }
    }

    /// A bad `sync` is a `400` even when the header already asks for sync (it used to be
    /// skipped then: `X-Fact0-Sync: true` with `?sync=AAA` committed).
    #[test]
    fn both_sync_flags_are_checked() {
        let mut headers = HeaderMap::new();
        headers.insert("x-fact0-sync", "true".parse().unwrap());
        let err = wants_sync(&headers, &params(Some("AAA"))).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(wants_sync(&headers, &params(Some("false"))).unwrap());
        assert!(wants_sync(&HeaderMap::new(), &params(Some("1"))).unwrap());
        assert!(!wants_sync(&HeaderMap::new(), &params(None)).unwrap());
        headers.insert("x-fact0-sync", "null".parse().unwrap());
        let err = wants_sync(&headers, &params(Some("true"))).unwrap_err();
        assert_eq!(err.code, "invalid_header");
    }
}
