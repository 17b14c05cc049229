//! `POST /v1/events/{id}/redact` (issue 15): erase one record's content and keep every
//! proof valid.
//!
//! The redaction is itself an audit event: the server appends `sealtrail.event.redact`
//! (actor: the admin key; resource: `{"type":"event","id":<the record's id>}`; metadata:
//! `{"reason","sequence_number"}`) to the tenant's chain, synchronously, like any event.
//! The store erases the record when it indexes that event (`Store::erases_redacted`):
//! every member but `id`, `tenant_id`, `sequence_number`, `prev_hash` and `hash` leaves
//! the store, and reads return the redacted record, which names its redaction event.
//! Verifiers check a redacted record by its links and that event (`sealtrail_core::verify`).
//!
//! The request answers once the erasure is visible (`200`), or, if it takes longer than
//! [`ERASE_WAIT`], `202` with the committed redaction event (the erasure follows: it is
//! derived from the chain, also after a crash).

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sealtrail_core::event::{Actor, normalize};
use sealtrail_core::record::{REDACT_ACTION, Record, redaction_input};
use sealtrail_store::now_micros;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Admin, Authenticated};
use crate::body::read_bytes;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ingest::{EventOutcome, ingest_validated, new_id};
use crate::query::path_error;

/// How long the request waits for the store to erase the record before answering `202`.
pub const ERASE_WAIT: Duration = Duration::from_secs(10);
/// The longest `reason`, in UTF-8 bytes.
pub const MAX_REASON_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 8 * 1024;

/// The body of a redaction.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactRequest {
    /// Why (kept in the redaction event, in the chain): e.g. "GDPR Art. 17 request 2026-114".
    /// 1–1024 bytes, not blank.
    pub reason: String,
}

/// What a redaction answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RedactResult {
    /// The record as reads now return it: redacted (`redacted` set), unless `erased` is
    /// false.
    pub record: Record,
    /// The redaction event appended to the chain (who, which record, why, when).
    pub redaction: Record,
    /// Whether the store had erased the record when this answered (`false` only with
    /// `202`: the erasure follows).
    pub erased: bool,
}

/// Redact one event: erase its content, keep its place in the chain.
///
/// Needs a key with the `admin` scope. Appends a `sealtrail.event.redact` audit event
/// naming the record (the caller's key id, `reason`, the time) and erases every member of
/// the record but `id`, `tenant_id`, `sequence_number`, `prev_hash` and `hash`; reads then
/// return `{"hash","id","prev_hash","redacted":{"event_id","sequence_number"},
/// "sequence_number","tenant_id"}`. The chain, proofs and checkpoints stay valid.
/// Redacting a redacted record again answers its existing redaction.
#[utoipa::path(post, path = "/v1/events/{id}/redact", tag = "Redaction", operation_id = "redactEvent",
    params(("id" = String, Path, description = "event id")),
    request_body(content = RedactRequest, description = "why"),
    responses(
        (status = 200, description = "Redacted (or already redacted)", body = RedactResult),
        (status = 202, description = "The redaction is committed; the erasure had not finished in time and follows", body = RedactResult),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A redaction event cannot be redacted", body = ErrorBody),
        (status = 501, description = "This server's store cannot erase records (every store sealtrail ships can)", body = ErrorBody),
    ),
    security(("apiKey" = [])))]
pub async fn redact_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(caller, _): Authenticated<Admin>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Response> {
    let Path(id) = id.map_err(path_error)?;
    let bytes = read_bytes(
        &headers,
        body,
        MAX_BODY_BYTES,
        state.config.body_read_timeout,
    )
    .await?;
    let request: RedactRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be {{\"reason\": \"…\"}}: {e}"),
        )
    })?;
    let reason = checked_reason(&request.reason)?;
    let (status, result) = redact(&state, &caller.tenant_id, &caller.key_id, &id, reason).await?;
    Ok((status, Json(result)).into_response())
}

/// The `reason` of a redaction (REST body or gRPC request), trimmed: at most
/// [`MAX_REASON_BYTES`] as sent, and not blank.
pub fn checked_reason(reason: &str) -> ApiResult<&str> {
    let trimmed = reason.trim();
    if trimmed.is_empty() || reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("reason must be 1 to {MAX_REASON_BYTES} bytes and not blank"),
        ));
    }
    Ok(trimmed)
}

/// The redaction of `tenant_id`'s record `id` by key `key_id` (REST and gRPC), for a
/// `reason` that passed [`checked_reason`].
pub async fn redact(
    state: &AppState,
    tenant_id: &str,
    key_id: &str,
    id: &str,
    reason: &str,
) -> ApiResult<(StatusCode, RedactResult)> {
    if !state.store.erases_redacted() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "this server's store cannot erase records, so it does not redact them",
        ));
    }
    let not_found = || ApiError::not_found(format!("no event {id:?}"));
    let record = state
        .store
        .get_event(tenant_id, id)
        .await?
        .ok_or_else(not_found)?
        .record;
    if let Some(by) = &record.redacted {
        let redaction = state
            .store
            .get_event(tenant_id, &by.event_id)
            .await?
            .ok_or_else(|| {
                ApiError::internal(
                    "a redacted record's redaction event is missing",
                    &by.event_id,
                )
            })?
            .record;
        return Ok((
            StatusCode::OK,
            RedactResult {
                record,
                redaction,
                erased: true,
            },
        ));
    }
    if record.action == REDACT_ACTION {
        // A 409 of state, not of a reused id: FAILED_PRECONDITION over gRPC.
        return Err(ApiError {
            grpc: Some(tonic::Code::FailedPrecondition),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "not_redactable",
                "a redaction event cannot be redacted: it is what keeps the redacted record verifiable",
            )
        });
    }
    let actor = Actor {
        email: None,
        id: key_id.to_string(),
        actor_type: None,
    };
    let now = now_micros();
    let event = normalize(
        redaction_input(actor, &record.id, record.sequence_number, reason),
        now,
        new_id,
    )
    .map_err(|e| ApiError::bad_request(e.code, e.message))?;
    let redaction = match ingest_validated(state, tenant_id.to_string(), event, now, true).await? {
        EventOutcome::Committed(c) => c.into_first().expect("one committed record"),
        EventOutcome::Accepted(_) => {
            return Err(ApiError::internal(
                "a sync append answered with a receipt",
                "redaction",
            ));
        }
    };
    metrics::counter!("sealtrail_redactions_total").increment(1);
    tracing::info!(
        tenant = tenant_id,
        key = key_id,
        seq = record.sequence_number,
        by = redaction.sequence_number,
        "record redacted"
    );
    let started = Instant::now();
    loop {
        let now = state
            .store
            .get_event(tenant_id, id)
            .await?
            .ok_or_else(not_found)?
            .record;
        if now.redacted.is_some() {
            return Ok((
                StatusCode::OK,
                RedactResult {
                    record: now,
                    redaction,
                    erased: true,
                },
            ));
        }
        if started.elapsed() >= ERASE_WAIT {
            return Ok((
                StatusCode::ACCEPTED,
                RedactResult {
                    record: now,
                    redaction,
                    erased: false,
                },
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
