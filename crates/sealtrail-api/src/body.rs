//! Reading request bodies with a size limit and strict JSON parsing, so every way a body
//! can be wrong becomes a JSON error (413 for size, 400 otherwise).

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use sealtrail_core::json::parse_strict;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Reads at most `limit` bytes of `body` and parses them as strict I-JSON.
pub async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
) -> ApiResult<Value> {
    let bytes = read_bytes(headers, body, limit, deadline).await?;
    parse_strict(&bytes).map_err(|e| ApiError::bad_request(e.code, e.message))
}

/// Reads at most `limit` bytes of a non-empty body (413 past the limit) within `deadline`
/// (408 past it: a client trickling its body would otherwise hold a connection slot
/// indefinitely).
pub async fn read_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
) -> ApiResult<axum::body::Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms; nothing was stored",
                    deadline.as_millis()
                ),
            )
        })?;
    let bytes = read.map_err(|err| {
        let is_limit = std::error::Error::source(&err)
            .map(|s| s.is::<http_body_util::LengthLimitError>())
            .unwrap_or(false);
        if is_limit {
            too_large()
        } else {
            ApiError::bad_request("invalid_body", format!("could not read the body: {err}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the request body is empty; send a JSON object",
        ));
    }
    Ok(bytes)
}

/// Reads `bytes` as one JSON object shaped as `T` (serde alone would also read a struct
/// from an array); anything else is a `400 invalid_body` saying the body must be `shape`.
pub fn parse_object<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> ApiResult<T> {
    let invalid =
        |e: String| ApiError::bad_request("invalid_body", format!("the body must be {shape}: {e}"));
    let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if !value.is_object() {
        return Err(invalid("not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}
