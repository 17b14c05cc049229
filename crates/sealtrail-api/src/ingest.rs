//! `POST /v1/events` and `POST /v1/events/batch`.
//!
//! Validation happens here, before anything is published: a request that fails it writes
//! nothing. Valid events are stamped (`created_at`, a UUIDv7 id when none was given) and
//! appended to the log as one entry. The answer waits for the commit reply whenever the
//! log is volatile (embedded mode) or the caller asked for sync; with a durable log an
//! async caller gets its `202` as soon as the log has the entry.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sealtrail_core::ValidationError;
use sealtrail_core::event::validate_event;
use sealtrail_core::json::parse_strict;
use sealtrail_core::limits::{MAX_BATCH_BODY_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BODY_BYTES};
use sealtrail_core::receipt::{ItemError, Receipt, ReceiptStatus};
use sealtrail_core::record::Record;
use sealtrail_core::time::format_micros;
use sealtrail_log::{Durability, EntryOutcome, IndexedEvent, LogEntry, LogError};
use sealtrail_store::now_micros;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::AppState;
use crate::auth::Scope;
use crate::body::{read_bytes, read_json};
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct IngestParams {
    /// `true` for synchronous ingest (same as the `X-Fact0-Sync: true` header).
    pub sync: Option<String>,
    /// `true` with sync ingest of one event: the `201` record also carries `checkpoint`
    /// (the signed checkpoint of the log up to this record) and `inclusion_proof` (the
    /// record's proof in it), extra members beside fact0's shape.
    pub proof: Option<String>,
}

/// The sync answer of a batch: fact0's `BatchResult` plus the committed records.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

fn wants_sync(headers: &HeaderMap, params: &IngestParams) -> bool {
    let header = headers
        .get("x-fact0-sync")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1");
    let query = params
        .sync
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    header || query
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn params_or_400(
    params: Result<Query<IngestParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<IngestParams> {
    params
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// Publishes `entry` and waits for its outcome when it must; `None` means the log is
/// durable and the caller did not ask to wait.
async fn publish(
    state: &AppState,
    mut entry: LogEntry,
    sync: bool,
) -> ApiResult<Option<(Receipt, Vec<Record>)>> {
    // A caller that does not wait gets no reply from a durable log: don't ask for one.
    let waiter =
        (sync || state.config.pending_receipts.is_none()).then(|| state.correlator.register());
    entry.reply_to = waiter.as_ref().map(|w| w.address.clone());
    let durability = state.log.append(entry).await.map_err(|err| match err {
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
    })?;
    let waiter = match waiter {
        Some(waiter) if sync || durability != Durability::Durable => waiter,
        _ => return Ok(None),
    };
    match waiter.wait(state.config.commit_timeout).await {
        Some(EntryOutcome::Committed { receipt, records }) => Ok(Some((receipt, records))),
        Some(EntryOutcome::Unavailable { message }) => Err(ApiError::unavailable(message)),
        None => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "commit_timeout",
            format!(
                "the commit was not confirmed within {} ms; retry with the same event id(s), which will not be duplicated",
                state.config.commit_timeout.as_millis()
            ),
        )),
    }
}

fn queued_receipt(entry: &LogEntry) -> Receipt {
    Receipt {
        receipt_id: entry.receipt_id.clone(),
        status: ReceiptStatus::Queued,
        accepted: entry.events.len() as u32,
        rejected: entry.rejected.len() as u32,
        ids: entry.events.iter().map(|e| e.event.id.clone()).collect(),
        errors: entry.rejected.clone(),
        error_message: None,
        created_at: entry.created_at.clone(),
        committed_at: None,
    }
}

/// Ingest one audit event.
#[utoipa::path(post, path = "/v1/events", tag = "Ingest", operation_id = "logEvent",
    params(IngestParams, ("X-Fact0-Sync" = Option<String>, Header, description = "`true` for synchronous ingest")),
    request_body(content = Object, description = "An `AuditEventInput`: actor, action, resource, outcome, and optionally id, timestamp, metadata"),
    responses(
        (status = 202, description = "Accepted (async, the default)", body = Receipt),
        (status = 201, description = "Committed (sync)", body = Record),
        (status = 400, description = "Invalid event", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 409, description = "The id exists with different content (sync)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Overloaded; retry after Retry-After", body = ErrorBody),
        (status = 504, description = "Commit not confirmed in time; retry with the same id", body = ErrorBody),
    ),
    security(("apiKey" = [])))]
pub async fn log_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<IngestParams>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> ApiResult<Response> {
    let caller = state
        .keys
        .authenticate(state.store.as_ref(), &headers, &[Scope::Write])
        .await?;
    let params = params_or_400(params)?;
    let sync = wants_sync(&headers, &params);
    let with_proof = params.proof.as_deref() == Some("true");
    let value = read_json(&headers, body, MAX_EVENT_BODY_BYTES).await?;
    let now = now_micros();
    let event = validate_event(value, now, new_id)?;
    let entry = LogEntry {
        tenant_id: caller.tenant_id,
        receipt_id: new_id(),
        created_at: format_micros(now),
        events: vec![IndexedEvent { index: 0, event }],
        rejected: vec![],
        reply_to: None,
        // A sync caller gets the record, never the receipt id: no receipt to store.
        reply_only: sync,
    };
    let queued = queued_receipt(&entry);
    metrics::counter!("sealtrail_events_received_total").increment(1);
    match publish(&state, entry, sync).await? {
        None => Ok((StatusCode::ACCEPTED, Json(queued)).into_response()),
        Some((receipt, mut records)) if sync => match records.pop() {
            Some(record) if with_proof && state.tlog.is_some() => {
                let log = state.tlog.as_deref().expect("checked");
                let (tenant, seq) = (record.tenant_id.clone(), record.sequence_number);
                let checkpoint = log.sign_at(state.store.as_ref(), &tenant, seq).await?;
                let proof = crate::tlog::inclusion(state.store.as_ref(), &tenant, seq, seq).await?;
                let mut body = serde_json::to_value(&record).expect("records serialize");
                body["checkpoint"] = serde_json::Value::String(checkpoint);
                body["inclusion_proof"] = serde_json::to_value(proof).expect("proofs serialize");
                Ok((StatusCode::CREATED, Json(body)).into_response())
            }
            Some(record) => Ok((StatusCode::CREATED, Json(record)).into_response()),
            None => Err(conflict_from(&receipt)),
        },
        Some((receipt, _)) => Ok((StatusCode::ACCEPTED, Json(receipt)).into_response()),
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
    params(IngestParams, ("X-Fact0-Sync" = Option<String>, Header, description = "`true` for synchronous ingest")),
    request_body(content = Object, description = "`{\"events\": [AuditEventInput, …]}` with 1 to 1000 events; invalid items are rejected by index, the others committed"),
    responses(
        (status = 202, description = "Accepted (async)", body = Receipt),
        (status = 200, description = "Committed (sync)", body = BatchResult),
        (status = 400, description = "Invalid batch envelope", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Overloaded; retry after Retry-After", body = ErrorBody),
        (status = 504, description = "Commit not confirmed in time; retry with the same ids", body = ErrorBody),
    ),
    security(("apiKey" = [])))]
pub async fn log_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<IngestParams>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> ApiResult<Response> {
    let caller = state
        .keys
        .authenticate(state.store.as_ref(), &headers, &[Scope::Write])
        .await?;
    let sync = wants_sync(&headers, &params_or_400(params)?);
    let bytes = read_bytes(&headers, body, MAX_BATCH_BODY_BYTES).await?;
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
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "events must hold at least one event",
        ));
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_BATCH_EVENTS} events; this one has {}",
                items.len()
            ),
        ));
    }
    let now = now_micros();
    let mut events = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let index = index as u32;
        let parsed = parse_strict(item.get().as_bytes()).map_err(ValidationError::from);
        match parsed.and_then(|value| validate_event(value, now, new_id)) {
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
        tenant_id: caller.tenant_id,
        receipt_id: new_id(),
        created_at: format_micros(now),
        events,
        rejected,
        reply_to: None,
        reply_only: false,
    };
    let queued = queued_receipt(&entry);
    match publish(&state, entry, sync).await? {
        None => Ok((StatusCode::ACCEPTED, Json(queued)).into_response()),
        Some((receipt, records)) if sync => Ok((
            StatusCode::OK,
            Json(BatchResult {
                receipt_id: receipt.receipt_id,
                status: receipt.status,
                accepted: receipt.accepted,
                rejected: receipt.rejected,
                ids: receipt.ids,
                errors: receipt.errors,
                events: records,
            }),
        )
            .into_response()),
        Some((receipt, _)) => Ok((StatusCode::ACCEPTED, Json(receipt)).into_response()),
    }
}
