//! Health, metrics, request accounting and the JSON answers for unmatched routes and
//! panics.

use std::any::Any;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// `200 {"status":"ok"}`, or `503 {"status":"degraded","failing_partitions":[…]}` while a
/// chainer is retrying a failing store (its partition's requests are stalled).
pub async fn healthz(State(state): State<AppState>) -> Response {
    let problems = state
        .health
        .as_ref()
        .map(|h| h.problems())
        .unwrap_or_default();
    let blocked = state.store.write_blocked();
    let alarms = state
        .tlog
        .as_ref()
        .map(|t| t.witness_alarms())
        .unwrap_or_default();
    if problems.is_empty() && blocked.is_none() {
        // A witness alarm is no reason to restart this process: `200`, but said.
        if !alarms.is_empty() {
            return axum::Json(
                serde_json::json!({"status": "witness_alarm", "witness_alarms": alarms}),
            )
            .into_response();
        }
        return axum::Json(serde_json::json!({"status": "ok"})).into_response();
    }
    let failing: Vec<_> = problems
        .into_iter()
        .map(|(partition, error)| serde_json::json!({"partition": partition, "error": error}))
        .collect();
    let mut body = serde_json::json!({"status": "degraded", "failing_partitions": failing});
    if let Some(reason) = blocked {
        body["writes_refused"] = serde_json::Value::String(reason);
    }
    if !alarms.is_empty() {
        body["witness_alarms"] = serde_json::json!(alarms);
    }
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// One reason a server should not get traffic now (see [`readyz`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotReady {
    /// `kafka`, `scylla`, `chainer`, `store`, `disk`, `gateway`.
    pub component: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    pub reason: String,
}

/// Readiness, for load balancers: `200 {"status":"ready"}`, or `503
/// {"status":"not_ready","problems":[{component, partition?, reason}]}` while something
/// this server depends on is out: in distributed mode Kafka not acknowledging a
/// partition's appends, the store not answering, a partition without a live chainer; in
/// both modes what `/healthz` reports (a failing store, writes refused for disk space).
/// `/healthz` stays the liveness check: restarting this process would not fix any of these.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems: Vec<NotReady> = state
        .readiness
        .as_ref()
        .map(|r| r.borrow().clone())
        .unwrap_or_default();
    if let Some(health) = &state.health {
        problems.extend(
            health
                .problems()
                .into_iter()
                .map(|(partition, error)| NotReady {
                    component: "store",
                    partition: Some(partition),
                    reason: error,
                }),
        );
    }
    if let Some(reason) = state.store.write_blocked() {
        problems.push(NotReady {
            component: "disk",
            partition: None,
            reason,
        });
    }
    if problems.is_empty() {
        return axum::Json(serde_json::json!({"status": "ready"})).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"status": "not_ready", "problems": problems})),
    )
        .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are not enabled in this process").into_response(),
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

pub fn panic_response(_err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log",
    )
    .into_response()
}

/// Counts requests by route and status and records their latency (a step of
/// [`crate::edge::front`]).
pub struct Track {
    route: String,
    method: String,
    started: Instant,
}

impl Track {
    pub fn start(request: &Request) -> Self {
        Self {
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "unmatched".into()),
            method: request.method().as_str().to_owned(),
            started: Instant::now(),
        }
    }

    pub fn finish(self, response: &Response) {
        let Self {
            route,
            method,
            started,
        } = self;
        let status = response.status().as_u16().to_string();
        metrics::counter!("sealtrail_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
        metrics::histogram!("sealtrail_http_request_seconds", "method" => method, "route" => route)
            .record(started.elapsed().as_secs_f64());
    }
}
