//! One error type for every route: `{"error":{"code","message"}}` with the matching status.
//! Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealtrail_core::ValidationError;
use sealtrail_store::StoreError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 503 (overload, unavailable) and 507 answers.
    pub retry_after: Option<u32>,
    /// The gRPC code when the HTTP status alone does not decide it (a 503 that means
    /// "slow down" is `RESOURCE_EXHAUSTED`, one that means "down" is `UNAVAILABLE`); set by
    /// the constructor that knows which, never derived from the code string.
    pub grpc: Option<tonic::Code>,
    /// For an error whose outcome may be unknown (a `503`/`504`/`507` after the events were
    /// handed to the log): the receipt id and the event ids the server assigned, so a
    /// client that sent events without ids can retry them without duplicates.
    pub receipt_id: Option<String>,
    pub event_ids: Option<Vec<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// On a `503`/`504`/`507` after the events reached the log: the receipt id assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<String>,
    /// On a `503`/`504`/`507` after the events reached the log: the event ids assigned, in
    /// request order — retry with these, and nothing is stored twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_ids: Option<Vec<String>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            grpc: None,
            receipt_id: None,
            event_ids: None,
        }
    }

    /// Names the receipt and event ids of the request when the outcome may be unknown
    /// (`503`, `504`, `507`); other errors are returned as they are.
    pub fn with_ids(mut self, receipt_id: String, event_ids: Vec<String>) -> Self {
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::INSUFFICIENT_STORAGE
        ) {
            self.receipt_id = Some(receipt_id);
            self.event_ids = Some(event_ids);
        }
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            grpc: Some(tonic::Code::ResourceExhausted),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
    /// `429`: over a rate or concurrency limit; retry after `wait`.
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u32),
            grpc: Some(tonic::Code::ResourceExhausted),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
    /// `507`: the store's disk is below its free-space floor; nothing was stored.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(30),
            grpc: Some(tonic::Code::ResourceExhausted),
            ..Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                message,
            )
        }
    }
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

/// The one rule for boolean query parameters and headers: absent is `false`; `true`/`1`
/// and `false`/`0` (any case, surrounding blanks ignored) are what they say; anything else
/// (`banana`, an empty value) is a `400` naming the parameter.
/// A route's query parameters: a query that does not parse as `T` is `400
/// invalid_query` in the one error shape, before the handler runs (and after the key is
/// checked, when the handler takes [`crate::auth::Authenticated`] first).
pub struct Params<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(t)| Params(t))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// `err` and its sources, `: `-separated (reqwest's own message leaves out why a request
/// failed, e.g. "connection refused").
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn parse_flag(name: &str, value: Option<&str>) -> ApiResult<bool> {
    let Some(raw) = value else { return Ok(false) };
    let v = raw.trim();
    if v.eq_ignore_ascii_case("true") || v == "1" {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") || v == "0" {
        Ok(false)
    } else {
        Err(ApiError::bad_request(
            "invalid_query",
            format!("{name} must be true or false (or 1 or 0), not {raw:?}"),
        ))
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::bad_request(err.code, err.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(m) => {
                tracing::warn!(%m, "store unavailable");
                Self::unavailable("the store is unavailable; retry shortly")
            }
            StoreError::NoSpace(m) => Self::insufficient_storage(format!(
                "{m}; nothing was stored: retry with the same ids once the operator freed space"
            )),
            other => Self::internal("store error", other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                receipt_id: self.receipt_id,
                event_ids: self.event_ids,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_flags() {
        assert!(!parse_flag("sync", None).unwrap());
        for yes in ["true", "TRUE", " 1 ", "True"] {
            assert!(parse_flag("sync", Some(yes)).unwrap(), "{yes}");
        }
        for no in ["false", "0", "False"] {
            assert!(!parse_flag("sync", Some(no)).unwrap(), "{no}");
        }
        for bad in ["banana", "", "yes", "2"] {
            let err = parse_flag("sync", Some(bad)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(err.message.contains("sync"));
        }
    }
}
