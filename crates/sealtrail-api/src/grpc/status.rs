//! The one API error as a gRPC status, consistently with its HTTP status (DESIGN.md §1).
//!
//! | HTTP | gRPC |
//! |---|---|
//! | 400, 413 | `INVALID_ARGUMENT` |
//! | 401 | `UNAUTHENTICATED` |
//! | 403 | `PERMISSION_DENIED` |
//! | 404 | `NOT_FOUND` |
//! | 409 | `ALREADY_EXISTS` (`FAILED_PRECONDITION` for one of state: `not_redactable`) |
//! | 503 `overloaded`, 507 | `RESOURCE_EXHAUSTED` |
//! | 503 otherwise | `UNAVAILABLE` |
//! | 504 | `DEADLINE_EXCEEDED` |
//! | 500 | `INTERNAL` |
//! | 501 | `UNIMPLEMENTED` |
//!
//! Every status carries a `google.rpc.ErrorInfo` detail (domain `sealtrail`, reason = the
//! REST error code) and the same code in the `sealtrail-error-code` trailer; a retryable
//! one also carries `google.rpc.RetryInfo` and a `retry-after` trailer (seconds), which a
//! client honours before retrying.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::ApiError;

/// The `ErrorInfo` domain of sealtrail's errors.
pub const ERROR_DOMAIN: &str = "sealtrail";

/// The gRPC code of an API error (see the module table).
pub fn grpc_code(err: &ApiError) -> Code {
    if let Some(code) = err.grpc {
        return code;
    }
    match err.status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::CONFLICT => Code::AlreadyExists,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::INTERNAL_SERVER_ERROR => Code::Internal,
        StatusCode::NOT_IMPLEMENTED => Code::Unimplemented,
        _ => Code::Unknown,
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let code = grpc_code(&err);
        let mut details = ErrorDetails::new();
        let mut info = HashMap::new();
        if let Some(receipt_id) = &err.receipt_id {
            info.insert("receipt_id".to_string(), receipt_id.clone());
        }
        if let Some(ids) = &err.event_ids {
            info.insert("event_ids".to_string(), ids.join(","));
        }
        details.set_error_info(err.code, ERROR_DOMAIN, info);
        if let Some(secs) = err.retry_after {
            details.set_retry_info(Some(Duration::from_secs(secs.into())));
        }
        let mut status = Status::with_error_details(code, err.message, details);
        let metadata = status.metadata_mut();
        metadata.insert("sealtrail-error-code", MetadataValue::from_static(err.code));
        if let Some(secs) = err.retry_after {
            metadata.insert("retry-after", MetadataValue::from(secs));
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_resource_exhausted_with_retry_info() {
        let status = Status::from(ApiError::overloaded("busy"));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(1))
        );
        assert_eq!(details.error_info().unwrap().reason, "overloaded");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    }

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        let cases = [
            (
                ApiError::bad_request("invalid_field", "x"),
                Code::InvalidArgument,
            ),
            (ApiError::unauthorized("x"), Code::Unauthenticated),
            (
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", "x"),
                Code::PermissionDenied,
            ),
            (ApiError::not_found("x"), Code::NotFound),
            (
                ApiError::new(StatusCode::CONFLICT, "conflict", "x"),
                Code::AlreadyExists,
            ),
            (ApiError::unavailable("x"), Code::Unavailable),
            (
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "x"),
                Code::Unimplemented,
            ),
            (ApiError::insufficient_storage("x"), Code::ResourceExhausted),
            (
                ApiError::from(sealtrail_store::StoreError::NoSpace("x".into())),
                Code::ResourceExhausted,
            ),
            (
                ApiError::from(sealtrail_store::StoreError::Corrupt("x".into())),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let reason = err.code;
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(
                status.metadata().get("sealtrail-error-code").unwrap(),
                reason
            );
        }
    }
}
