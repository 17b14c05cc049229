//! `GET /v1/events/stream`: Server-Sent Events of newly committed records.
//!
//! Each event carries `id: <sequence_number>` and `data: <record JSON>`. A client resumes
//! with the standard `Last-Event-ID` header (or `?after=N`) and receives every record
//! after that sequence number, read from the store, so nothing is missed across
//! reconnects; without either it starts at the current head. The feed reads the store,
//! woken by commit signals (embedded) or by polling (distributed).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::AppState;
use crate::auth::{Authenticated, Read};
use crate::error::{ApiError, ApiResult, ErrorBody, Params};

const STREAM_PAGE: usize = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Start after this sequence number (as `Last-Event-ID` does); default: the current head
    #[param(value_type = Option<u64>, format = "uint64")]
    pub after: Option<String>,
}

/// The resume header, as declared (read by [`stream_events`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ResumeHeader {
    /// Resume after this sequence number (the `id` of the last event received); wins over
    /// `after`
    #[param(rename = "Last-Event-ID", value_type = u64, format = "uint64", required = false)]
    last_event_id: Option<u64>,
}

/// Live stream of committed events (SSE).
#[utoipa::path(get, path = "/v1/events/stream", tag = "Stream", operation_id = "streamEvents", params(StreamParams, ResumeHeader),
    responses((status = 200, description = "text/event-stream of records", content_type = "text/event-stream"),
        (status = 400, description = "`after` or `Last-Event-ID` is not a sequence number", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(caller, _): Authenticated<Read>,
    Params(params): Params<StreamParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Both are checked (one rule: a 400 for anything but a sequence number); the header
    // wins, as a reconnecting EventSource sends it with the URL it first used.
    let query = params
        .after
        .as_deref()
        .map(|text| sequence_number("after", "invalid_query", text))
        .transpose()?;
    let header = headers
        .get("last-event-id")
        .map(|v| match v.to_str() {
            Ok(text) => sequence_number("Last-Event-ID", "invalid_header", text),
            Err(_) => Err(ApiError::bad_request(
                "invalid_header",
                "Last-Event-ID must be a sequence number",
            )),
        })
        .transpose()?;
    let slot = state.keys.slot(&caller, crate::quota::Heavy::Stream)?;
    let after = match header.or(query) {
        Some(after) => after,
        None => head_sequence(&state, &caller.tenant_id).await?,
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(STREAM_PAGE);
    let feed = feed(state.clone(), caller.tenant_id, after, tx, |seq, record| {
        let data = serde_json::to_string(&record).expect("records serialize");
        Ok(Event::default().id(seq.to_string()).data(data))
    });
    // The slot is held as long as the stream runs.
    tokio::spawn(async move {
        feed.await;
        drop(slot);
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sequence_number(name: &str, code: &'static str, text: &str) -> ApiResult<u64> {
    text.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_request(
            code,
            format!("{name} must be a sequence number, not {text:?}"),
        )
    })
}

/// The sequence number of the tenant's chain head (0 for an empty chain).
pub async fn head_sequence(state: &AppState, tenant_id: &str) -> ApiResult<u64> {
    Ok(state
        .store
        .heads(vec![tenant_id.to_string()])
        .await?
        .remove(tenant_id)
        .map_or(0, |h| h.sequence_number))
}

/// Copies the tenant's committed records after `after`, each made into a message by
/// `make(sequence_number, record)`, into the client's channel until it disconnects or
/// the server shuts down. Used by SSE and by gRPC `Tail`.
pub async fn feed<T: Send + 'static>(
    state: AppState,
    tenant: String,
    mut after: u64,
    tx: mpsc::Sender<T>,
    make: impl Fn(u64, sealtrail_core::record::Record) -> T + Send + 'static,
) {
    let mut commits = state.commits.as_ref().map(|c| c.subscribe());
    let mut shutdown = state.shutdown.clone();
    metrics::gauge!("sealtrail_streams_open").increment(1.0);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let rows = match state.store.scan_chain(&tenant, after, STREAM_PAGE).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(%err, "stream read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let full = rows.len() == STREAM_PAGE;
        for row in rows {
            // Move past the row first, so an unreadable record is reported once, not re-read on
            // every wake-up while it is the newest row.
            after = row.sequence_number;
            let record = match row.record() {
                Ok(record) => record,
                Err(err) => {
                    tracing::error!(%err, tenant = %tenant, sequence_number = after, "skipping an unreadable record in a stream; /v1/verify reports it");
                    continue;
                }
            };
            if tx.send(make(after, record)).await.is_err() {
                metrics::gauge!("sealtrail_streams_open").decrement(1.0);
                return;
            }
        }
        if full {
            continue;
        }
        let wait = tokio::time::sleep(state.config.stream_poll_interval);
        tokio::select! {
            _ = wait => {}
            _ = tx.closed() => break,
            _ = shutdown.changed() => {}
            _ = async { match commits.as_mut() { Some(c) => { let _ = c.changed().await; } None => std::future::pending().await } } => {}
        }
    }
    metrics::gauge!("sealtrail_streams_open").decrement(1.0);
}
