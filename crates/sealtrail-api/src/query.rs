//! Reads: receipts, events (list and one), and verification.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sealtrail_core::event::{ActorType, Outcome};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::{Record, hash_hex};
use sealtrail_core::verify::ChainWalker;
use sealtrail_store::{ChainRow, EventQuery, Paging};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Authenticated, Read, ReadOrWrite};
use crate::error::{ApiError, ApiResult, ErrorBody, Params};

/// Rows read per store call while walking a chain.
const VERIFY_PAGE: usize = 2_000;
/// Most broken events listed by `scan_all`.
const MAX_BROKEN_LISTED: usize = 1_000;

/// A path that is not valid percent-encoded UTF-8 (e.g. `/v1/events/%FF`), in the JSON
/// envelope like every other error.
pub(crate) fn path_error(err: PathRejection) -> ApiError {
    ApiError::bad_request("invalid_path", err.body_text())
}

/// Poll an ingest receipt.
#[utoipa::path(get, path = "/v1/receipts/{id}", tag = "Ingest", operation_id = "getReceipt",
    params(("id" = String, Path, description = "receipt_id")),
    responses((status = 200, body = Receipt), (status = 400, description = "The path is not valid percent-encoded UTF-8", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_receipt(
    State(state): State<AppState>,
    // A write-only key may poll the receipts of what it wrote.
    Authenticated(caller, _): Authenticated<ReadOrWrite>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Receipt>> {
    let Path(id) = id.map_err(path_error)?;
    if let Some(receipt) = state.store.get_receipt(&caller.tenant_id, &id).await? {
        return Ok(Json(receipt));
    }
    // Distributed mode answers `202` once Kafka has the entry; its receipt is stored when a
    // chainer commits it. Until then, a recent receipt id (a UUIDv7: its creation time is
    // in it) is reported as queued; the counts are known only once it settles.
    if let crate::Acknowledge::OnLogAppend {
        pending_window: window,
    } = state.config.acknowledge
        && let Some(created) = uuid_v7_micros(&id)
    {
        let age = sealtrail_store::now_micros() - created;
        if (-60_000_000..window.as_micros() as i64).contains(&age) {
            let created_at = sealtrail_core::time::format_micros(created);
            return Ok(Json(Receipt::queued(id, created_at, vec![], vec![])));
        }
    }
    Err(ApiError::not_found(format!("no receipt {id:?}")))
}

/// The creation time (UTC micros) of a canonical UUIDv7 string.
fn uuid_v7_micros(id: &str) -> Option<i64> {
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(secs as i64 * 1_000_000 + nanos as i64 / 1000)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    pub actor_id: Option<String>,
    /// human, agent or system
    #[param(value_type = Option<ActorType>)]
    pub actor_type: Option<String>,
    pub action: Option<String>,
    pub resource_id: Option<String>,
    /// success, failure or error
    #[param(value_type = Option<Outcome>)]
    pub outcome: Option<String>,
    /// RFC 3339 lower bound (inclusive) of the event `timestamp`
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339 upper bound (inclusive) of the event `timestamp`
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// 1-based page number (default 1)
    #[param(value_type = Option<u32>, format = "uint32", minimum = 1, maximum = 4294967295.0)]
    pub page: Option<String>,
    /// events per page, 1 to 1000 (default 50)
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub page_size: Option<String>,
    /// `next_cursor` of a previous answer: keyset paging for deep reads (ignores `page`)
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventListResponse {
    pub events: Vec<Record>,
    /// Events matching the filters, across all pages.
    pub total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub page_size: u32,
    /// Pass as `cursor` to continue after the last event of this page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn parse_number(name: &str, text: Option<&str>, default: u32, max: u32) -> ApiResult<u32> {
    let Some(text) = text else { return Ok(default) };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(
            "invalid_query",
            format!("{name} must be an integer from 1 to {max}, not {text:?}"),
        )),
    }
}

fn parse_time(name: &str, text: Option<String>) -> ApiResult<Option<String>> {
    text.map(|t| {
        sealtrail_core::time::normalize(&t)
            .map_err(|m| ApiError::bad_request("invalid_query", format!("{name}: {m}")))
    })
    .transpose()
}

fn encode_cursor(after: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{after}"))
}

fn decode_cursor(text: &str) -> ApiResult<u64> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("after:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "cursor is not a next_cursor this server issued",
            )
        })
}

/// List a tenant's events in sequence order.
#[utoipa::path(get, path = "/v1/events", tag = "Query", operation_id = "listEvents", params(ListParams),
    responses((status = 200, body = EventListResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn list_events(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Params(p): Params<ListParams>,
) -> ApiResult<Json<EventListResponse>> {
    list(&state, &caller.tenant_id, p).await.map(Json)
}

/// The query of `GET /v1/events` (and gRPC `ListEvents`) for `tenant_id`.
pub async fn list(
    state: &AppState,
    tenant_id: &str,
    p: ListParams,
) -> ApiResult<EventListResponse> {
    let page_size = parse_number("page_size", p.page_size.as_deref(), 50, 1000)?;
    let (paging, page) = match &p.cursor {
        Some(c) => (
            Paging::After {
                after: decode_cursor(c)?,
                page_size,
            },
            None,
        ),
        None => {
            let page = parse_number("page", p.page.as_deref(), 1, u32::MAX)?;
            (Paging::Page { page, page_size }, Some(page))
        }
    };
    let actor_type = p
        .actor_type
        .map(|t| {
            ActorType::parse(&t).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "actor_type {t:?} is not one of {}",
                        ActorType::ALL.join(", ")
                    ),
                )
            })
        })
        .transpose()?;
    let outcome = p
        .outcome
        .map(|o| {
            Outcome::parse(&o).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("outcome {o:?} is not one of {}", Outcome::ALL.join(", ")),
                )
            })
        })
        .transpose()?;
    let query = EventQuery {
        actor_id: p.actor_id,
        actor_type,
        action: p.action,
        resource_id: p.resource_id,
        outcome,
        from: parse_time("from", p.from)?,
        to: parse_time("to", p.to)?,
        paging,
    };
    let result = state.store.list_events(tenant_id, query).await?;
    let next_cursor = (result.events.len() == page_size as usize)
        .then(|| {
            result
                .events
                .last()
                .map(|e| encode_cursor(e.sequence_number))
        })
        .flatten();
    Ok(EventListResponse {
        events: result.events,
        total: result.total,
        page,
        page_size,
        next_cursor,
    })
}

/// Get one event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "Query", operation_id = "getEvent",
    params(("id" = String, Path, description = "event id")),
    responses((status = 200, body = Record), (status = 400, description = "The path is not valid percent-encoded UTF-8", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_event(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Record>> {
    let Path(id) = id.map_err(path_error)?;
    // Another tenant's id is simply not found: 404, never 403 (which would leak existence).
    let stored = state.store.get_event(&caller.tenant_id, &id).await?;
    stored
        .map(|s| Json(s.record))
        .ok_or_else(|| ApiError::not_found(format!("no event {id:?}")))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SingleVerifyResult {
    pub valid: bool,
    pub event_id: String,
    pub sequence_number: u64,
    pub stored_hash: String,
    /// SHA-256 of the JCS form of the record as served, recomputed now.
    pub computed_hash: String,
    /// Whether `prev_hash` equals the stored hash of the previous record. `false` for the
    /// first record kept by retention (issue 15), whose predecessor was removed: that
    /// link is bound by the signed tree instead, and `valid` does not need it.
    pub prev_hash_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when the record is redacted: its content is erased, so its hash cannot be
    /// recomputed; `computed_hash` is then the hash the next record's `prev_hash` links
    /// to, and the redaction event named here is checked to be a redaction of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted: Option<sealtrail_core::record::Redaction>,
}

/// Recompute one event's hash and check its link to the previous event.
#[utoipa::path(get, path = "/v1/events/{id}/verify", tag = "Verify", operation_id = "verifyEvent",
    params(("id" = String, Path, description = "event id")),
    responses((status = 200, body = SingleVerifyResult), (status = 400, description = "The path is not valid percent-encoded UTF-8", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn verify_event(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SingleVerifyResult>> {
    let Path(id) = id.map_err(path_error)?;
    verify_one(&state, &caller.tenant_id, &id).await.map(Json)
}

/// `GET /v1/events/{id}/verify` (and gRPC `VerifyEvent`) for `tenant_id`.
pub async fn verify_one(
    state: &AppState,
    tenant_id: &str,
    id: &str,
) -> ApiResult<SingleVerifyResult> {
    let stored = state.store.get_event(tenant_id, id).await?;
    let record = stored
        .ok_or_else(|| ApiError::not_found(format!("no event {id:?}")))?
        .record;
    // Full re-canonicalization of the record as it is served (not the stored bytes).
    let computed_hash = hash_hex(&record.canonical_unhashed());
    let seq = record.sequence_number;
    let expected_prev = if seq <= 1 {
        Some(sealtrail_core::ZERO_HASH.to_string())
    } else {
        state
            .store
            .scan_chain(tenant_id, seq - 2, 1)
            .await?
            .into_iter()
            .next()
            .filter(|r| r.sequence_number == seq - 1)
            .map(|r| r.hash)
    };
    // The first record kept by retention links to a removed one: that link is bound by
    // the tree (its leaf), not checkable from the records.
    let at_boundary =
        seq > 1 && expected_prev.is_none() && state.store.retained_from(tenant_id).await? == seq;
    let prev_hash_valid = expected_prev.as_deref() == Some(record.prev_hash.as_str());
    if let Some(by) = &record.redacted {
        return verify_redacted(state, tenant_id, &record, by, prev_hash_valid).await;
    }
    let hash_valid = computed_hash == record.hash;
    let reason = match (hash_valid, prev_hash_valid || at_boundary) {
        (true, true) => None,
        (false, _) => {
            Some("hash_mismatch: the record does not hash to its stored hash".to_string())
        }
        (true, false) => {
            Some("prev_hash_mismatch: prev_hash is not the previous record's hash".to_string())
        }
    };
    Ok(SingleVerifyResult {
        valid: hash_valid && (prev_hash_valid || at_boundary),
        event_id: record.id,
        sequence_number: seq,
        stored_hash: record.hash,
        computed_hash,
        prev_hash_valid,
        reason,
        redacted: None,
    })
}

/// A redacted record cannot be hashed again: it is valid when its `prev_hash` links to
/// the previous record, the next record's `prev_hash` is its stored hash (so is its
/// Merkle leaf, which proofs check), and the record it names as its redaction is a
/// redaction of it. `computed_hash` is then the hash the next record links to.
async fn verify_redacted(
    state: &AppState,
    tenant_id: &str,
    record: &Record,
    by: &sealtrail_core::record::Redaction,
    prev_hash_valid: bool,
) -> ApiResult<SingleVerifyResult> {
    let seq = record.sequence_number;
    let next = state
        .store
        .scan_chain(tenant_id, seq, 1)
        .await?
        .into_iter()
        .next()
        .filter(|r| r.sequence_number == seq + 1)
        .map(|r| r.record())
        .transpose()?;
    let redaction = state
        .store
        .get_event(tenant_id, &by.event_id)
        .await?
        .map(|s| s.record);
    let confirmed = redaction.as_ref().is_some_and(|r| {
        r.sequence_number == by.sequence_number
            && r.action == sealtrail_core::record::REDACT_ACTION
            && r.resource.id == record.id
    });
    let bound_hash = next.as_ref().map(|n| n.prev_hash.clone());
    let bound = bound_hash.as_deref() == Some(record.hash.as_str());
    let reason = if !prev_hash_valid {
        Some("prev_hash_mismatch: prev_hash is not the previous record's hash".to_string())
    } else if !confirmed {
        Some(format!(
            "redaction_unconfirmed: the record is marked redacted by record {}, which is not a redaction of it",
            by.sequence_number
        ))
    } else if !bound {
        Some(
            "hash_mismatch: the next record does not link to this record's stored hash".to_string(),
        )
    } else {
        None
    };
    Ok(SingleVerifyResult {
        valid: reason.is_none(),
        event_id: record.id.clone(),
        sequence_number: seq,
        stored_hash: record.hash.clone(),
        computed_hash: bound_hash.unwrap_or_default(),
        prev_hash_valid,
        reason,
        redacted: Some(by.clone()),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// RFC 3339: report only events whose `timestamp` is at or after this
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339: report only events whose `timestamp` is at or before this
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `true` to list every broken event instead of stopping at the first
    #[param(value_type = Option<bool>)]
    pub scan_all: Option<String>,
    /// `true` to walk the whole chain from its first record. By default a call resumes
    /// where this server last found the chain valid (see `resumed_from`)
    #[param(value_type = Option<bool>)]
    pub full: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BrokenEvent {
    pub event_id: String,
    pub sequence_number: u64,
    pub timestamp: String,
    pub action: String,
    pub actor_id: String,
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyResult {
    pub valid: bool,
    pub tenant_id: String,
    /// Events the result vouches for (within from/to when given): those checked by this
    /// call plus, when it resumed (`resumed_from`), those found valid before.
    pub events_checked: u64,
    /// Events whose hash and link this call checked (sealtrail extension).
    pub newly_checked: u64,
    /// When this call resumed where the server last found the chain valid: that record's
    /// sequence number (re-read and checked unchanged; the walk continued after it).
    /// Absent for a walk from the first record (sealtrail extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
    /// Hash of the last event walked: the chain head when the walk reached the end.
    pub root_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken_event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub broken_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_broken_events: Option<Vec<BrokenEvent>>,
    /// Redacted records among those this call checked: their links and their redaction
    /// event were checked, not their hash (their content is erased). Absent when none
    /// (sealtrail extension).
    #[serde(skip_serializing_if = "is_zero")]
    pub redacted_checked: u64,
    /// The retention boundary (issue 15): the records before it were removed by the
    /// tenant's retention policy, so the walk starts there (its first record's link to the
    /// removed ones is bound by the signed tree, not checked here) and requires the prune
    /// event that set it. Absent when nothing was removed (sealtrail extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained_from: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Walk the tenant's chain and verify every hash and link.
///
/// A link can only be checked against its predecessor. Without `from`/`to` and unless
/// `full=true`, the walk resumes where this server last found the chain valid: it checks
/// that record is unchanged and every record after it, so repeated calls cost only new
/// records (`newly_checked`; `events_checked` counts the whole chain). Otherwise it starts
/// at the first record; `from`/`to` narrow which events are counted and reported. A walk
/// over more than 100,000 records needs one of the server's `max_full_verifications`
/// slots: `429` with `Retry-After` when they are all taken.
#[utoipa::path(get, path = "/v1/verify", tag = "Verify", operation_id = "verifyChain", params(VerifyParams),
    responses((status = 200, body = VerifyResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, description = "Too many verifications at once for this key, or every long-walk slot of the server is taken", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn verify_chain(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Params(p): Params<VerifyParams>,
) -> ApiResult<Json<VerifyResult>> {
    let _slot = state.keys.slot(&caller, crate::quota::Heavy::Bulk)?;
    verify_walk(&state, &caller.tenant_id, p).await.map(Json)
}

/// `GET /v1/verify` (and gRPC `VerifyChain`) for `tenant_id`.
pub async fn verify_walk(
    state: &AppState,
    tenant_id: &str,
    p: VerifyParams,
) -> ApiResult<VerifyResult> {
    let from = parse_time("from", p.from)?;
    let to = parse_time("to", p.to)?;
    let scan_all = crate::error::parse_flag("scan_all", p.scan_all.as_deref())?;
    let full = crate::error::parse_flag("full", p.full.as_deref())?;
    let tenant = tenant_id.to_string();
    // Resume where this server last found the chain valid, unless asked for a full walk
    // or for a time range (whose counts need the whole chain read).
    let ranged = from.is_some() || to.is_some();
    // Records before the retention boundary were removed (issue 15): the walk starts
    // there, and an anchor below it is gone with them.
    let retained_from = state.store.retained_from(&tenant).await?;
    let anchor = if full || ranged {
        None
    } else {
        state
            .verified
            .position(&tenant)
            .filter(|a| a.sequence_number >= retained_from)
    };
    let head = state
        .store
        .heads(vec![tenant.clone()])
        .await?
        .remove(&tenant)
        .map_or(0, |h| h.sequence_number);
    let start = anchor.as_ref().map_or(retained_from, |a| a.sequence_number);
    let _long_walk = state
        .verified
        .permit_for(head.saturating_sub(start).saturating_add(1))?;
    // Reading (on a blocking thread) and checking (hashing, on another) overlap: a reader
    // task pages through the chain while pages already read are checked.
    let (pages_tx, mut pages) = tokio::sync::mpsc::channel::<Vec<ChainRow>>(2);
    let store = state.store.clone();
    let reader_tenant = tenant.clone();
    let first_after = start - 1;
    let reader = tokio::spawn(async move {
        let mut after = first_after;
        loop {
            let rows = store.scan_chain(&reader_tenant, after, VERIFY_PAGE).await?;
            let Some(last) = rows.last() else {
                return Ok::<(), sealtrail_store::StoreError>(());
            };
            after = last.sequence_number;
            let full_page = rows.len() == VERIFY_PAGE;
            if pages_tx.send(rows).await.is_err() || !full_page {
                return Ok(());
            }
        }
    });
    let mut walk = Walk {
        walker: match &anchor {
            Some(anchor) => ChainWalker::resume_at(&tenant, anchor),
            None => ChainWalker::from_boundary(&tenant, retained_from),
        },
        any_break: false,
        from: from.clone(),
        to: to.clone(),
        scan_all,
        counted: 0,
        broken: Vec::new(),
        broken_count: 0,
        stopped: false,
    };
    while let Some(rows) = pages.recv().await {
        walk = tokio::task::spawn_blocking(move || {
            walk.check_page(&rows);
            walk
        })
        .await
        .map_err(|e| ApiError::internal("verification task failed", e))?;
        if walk.stopped {
            break;
        }
    }
    drop(pages);
    reader
        .await
        .map_err(|e| ApiError::internal("verification reader failed", e))??;
    let Walk {
        walker,
        counted,
        mut broken,
        mut broken_count,
        any_break,
        stopped,
        ..
    } = walk;
    metrics::counter!("sealtrail_verified_events_total").increment(walker.checked());
    let resumed_from = anchor.as_ref().map(|a| a.sequence_number);
    let unconfirmed = !walker.unconfirmed_redactions().is_empty()
        || (!stopped && walker.unconfirmed_boundary().is_some());
    if !stopped && let Some(first) = walker.unconfirmed_boundary() {
        broken_count += 1;
        broken.push(BrokenEvent {
            event_id: String::new(),
            sequence_number: first,
            timestamp: String::new(),
            action: String::new(),
            actor_id: String::new(),
            reason: format!(
                "boundary_unconfirmed: the chain starts at record {first} (the records before it were removed), but no prune event (sealtrail.retention.prune) in it names that boundary"
            ),
        });
    }
    if !stopped {
        // The walk reached the head: a record marked redacted by a record it did not
        // meet was marked by one that does not exist.
        for (seq, id, by) in walker.unconfirmed_redactions() {
            broken_count += 1;
            if broken.len() < MAX_BROKEN_LISTED {
                broken.push(BrokenEvent {
                    event_id: id,
                    sequence_number: seq,
                    timestamp: String::new(),
                    action: String::new(),
                    actor_id: String::new(),
                    reason: format!(
                        "redaction_unconfirmed: record {seq} is marked redacted by record {by}, which the chain does not have"
                    ),
                });
            }
        }
    }
    if let Some(anchor) = anchor.as_ref().filter(|_| walker.anchor_pending()) {
        // Not even the record found valid earlier was read back: records were removed.
        broken_count += 1;
        broken.push(BrokenEvent {
            event_id: String::new(),
            sequence_number: anchor.sequence_number,
            timestamp: String::new(),
            action: String::new(),
            actor_id: String::new(),
            reason: format!(
                "chain_truncated: this server found the chain valid up to record {} (hash {}), \
                 which the store no longer returns",
                anchor.sequence_number, anchor.hash
            ),
        });
    } else if !any_break && !unconfirmed && !stopped && walker.checked() > 0 {
        state.verified.record(
            &tenant,
            sealtrail_core::record::ChainHead {
                sequence_number: walker.last_sequence(),
                hash: walker.last_hash().to_string(),
            },
        );
    }
    let newly_checked =
        walker.checked() - u64::from(resumed_from.is_some() && walker.checked() > 0);
    let first = broken.first();
    Ok(VerifyResult {
        valid: broken_count == 0,
        tenant_id: tenant,
        // A resumed walk is never ranged: it vouches for the records before the anchor too.
        events_checked: counted + resumed_from.map_or(0, |seq| seq - 1),
        newly_checked,
        resumed_from,
        root_hash: walker.last_hash().to_string(),
        from,
        to,
        first_broken_event_id: first
            .map(|b| b.event_id.clone())
            .filter(|id| !id.is_empty()),
        reason: first.map(|b| b.reason.clone()),
        broken_count,
        all_broken_events: scan_all.then_some(broken),
        redacted_checked: walker.redacted(),
        retained_from: (retained_from > 1).then_some(retained_from),
    })
}

/// The state of one chain walk (see [`verify_chain`]).
struct Walk {
    walker: ChainWalker,
    /// Any broken record, in range or not (a chain with one is not remembered as valid).
    any_break: bool,
    from: Option<String>,
    to: Option<String>,
    scan_all: bool,
    counted: u64,
    broken: Vec<BrokenEvent>,
    broken_count: u64,
    /// Set at the first break unless `scan_all`.
    stopped: bool,
}

impl Walk {
    fn check_page(&mut self, rows: &[ChainRow]) {
        let ranged = self.from.is_some() || self.to.is_some();
        for row in rows {
            let in_range = !ranged
                || timestamp_in_range(&row.canonical, self.from.as_deref(), self.to.as_deref());
            if in_range {
                self.counted += 1;
            }
            let checked = self.walker.check(&row.hash, &row.canonical);
            self.any_break |= checked.is_err();
            if let Err(b) = checked
                && in_range
            {
                self.broken_count += 1;
                if self.broken.len() < MAX_BROKEN_LISTED {
                    self.broken.push(BrokenEvent {
                        event_id: b.event_id,
                        sequence_number: b.sequence_number,
                        timestamp: b.timestamp,
                        action: b.action,
                        actor_id: b.actor_id,
                        reason: format!("{}: {}", b.code, b.reason),
                    });
                }
                if !self.scan_all {
                    self.stopped = true;
                    return;
                }
            }
        }
    }
}

fn timestamp_in_range(canonical: &[u8], from: Option<&str>, to: Option<&str>) -> bool {
    #[derive(Deserialize)]
    struct Ts<'a> {
        #[serde(borrow)]
        timestamp: std::borrow::Cow<'a, str>,
    }
    let Ok(ts) = serde_json::from_slice::<Ts>(canonical) else {
        return true;
    };
    from.is_none_or(|f| ts.timestamp.as_ref() >= f) && to.is_none_or(|t| ts.timestamp.as_ref() <= t)
}
