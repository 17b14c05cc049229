//! Health, metrics, request accounting and the JSON answers for unmatched routes and
//! panics.

use std::any::Any;
use std::collections::HashMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
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
    route: Option<MatchedPath>,
    method: Method,
    started: Instant,
}

impl Track {
    pub fn start(request: &Request) -> Self {
        Self {
            route: request.extensions().get::<MatchedPath>().cloned(),
            method: request.method().clone(),
            started: Instant::now(),
        }
    }

    pub fn finish(self, response: &Response, metrics: &RequestMetrics) {
        let route = self.route.as_ref().map_or("unmatched", |p| p.as_str());
        let seconds = self.started.elapsed().as_secs_f64();
        metrics.record(route, &self.method, response.status(), seconds);
    }
}

/// The handles of the request metrics (`sealtrail_http_requests_total` by method, route
/// and status, `sealtrail_http_request_seconds` by method and route), kept per route so
/// that a request finds them under a read lock: asking the recorder each time built
/// three owned labels and looked them up in its registry twice, ~2% of the runtime's
/// CPU on single events. A method outside the standard ones is counted as `other`, so a
/// client cannot grow the metrics (or this map) by making methods up.
#[derive(Default)]
pub struct RequestMetrics {
    by_route: std::sync::RwLock<HashMap<Box<str>, Vec<MethodMetrics>>>,
}

struct MethodMetrics {
    method: &'static str,
    status: StatusCode,
    requests: metrics::Counter,
    seconds: metrics::Histogram,
}

impl RequestMetrics {
    /// Counts one request and records how long it took.
    fn record(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        let method = standard_method(method);
        let count = |list: &[MethodMetrics]| {
            let m = list
                .iter()
                .find(|m| m.method == method && m.status == status)?;
            m.requests.increment(1);
            m.seconds.record(seconds);
            Some(())
        };
        let by_route = self.by_route.read().expect("request metrics lock");
        if by_route.get(route).and_then(|list| count(list)).is_some() {
            return;
        }
        drop(by_route);
        let mut by_route = self.by_route.write().expect("request metrics lock");
        let list = by_route.entry(route.into()).or_default();
        // Another request may have added them since the read.
        if count(list).is_none() {
            let status_label = status.as_u16().to_string();
            list.push(MethodMetrics {
                method,
                status,
                requests: metrics::counter!("sealtrail_http_requests_total", "method" => method, "route" => route.to_owned(), "status" => status_label),
                seconds: metrics::histogram!("sealtrail_http_request_seconds", "method" => method, "route" => route.to_owned()),
            });
            count(list);
        }
    }
}

/// The methods that keep their name as a metrics label.
static STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::TRACE,
    Method::CONNECT,
];

/// `method` as a metrics label: its name if standard, else `other`.
fn standard_method(method: &Method) -> &'static str {
    STANDARD_METHODS
        .iter()
        .find(|m| *m == method)
        .map_or("other", Method::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(standard_method(&Method::POST), "POST");
        assert_eq!(standard_method(&Method::PATCH), "PATCH");
        let made_up = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(standard_method(&made_up), "other");
    }

    #[test]
    fn each_route_method_and_status_gets_its_handles_once() {
        let metrics = RequestMetrics::default();
        for _ in 0..3 {
            metrics.record("/v1/events", &Method::POST, StatusCode::CREATED, 0.1);
            metrics.record("/v1/events", &Method::POST, StatusCode::ACCEPTED, 0.1);
            metrics.record("/v1/events", &Method::GET, StatusCode::OK, 0.1);
            metrics.record("/healthz", &Method::GET, StatusCode::OK, 0.1);
            for m in [&b"BREW"[..], b"WHEN"] {
                let m = Method::from_bytes(m).unwrap();
                metrics.record("unmatched", &m, StatusCode::METHOD_NOT_ALLOWED, 0.1);
            }
        }
        let by_route = metrics.by_route.read().unwrap();
        assert_eq!(by_route.len(), 3);
        assert_eq!(by_route["/v1/events"].len(), 3);
        assert_eq!(by_route["/healthz"].len(), 1);
        // two made-up methods: one `other` entry
        assert_eq!(by_route["unmatched"].len(), 1);
    }
}
