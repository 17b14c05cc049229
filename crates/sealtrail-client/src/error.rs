//! The SDK's one error type.

use sealtrail_proto::AuditEventInput;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The builder was given something unusable (an endpoint that is not a URI, a key
    /// that cannot be sent as metadata).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The server refused the call for a reason retrying cannot fix (invalid argument,
    /// unauthenticated, permission denied, not found, already exists, …).
    #[error("sealtrail refused the call: {0}")]
    Rejected(tonic::Status),
    /// Every attempt failed with a retryable status; `last` is the final one.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: tonic::Status },
    /// The batcher could not deliver these events (after retries) and was configured to
    /// return them rather than spool them: they are not committed, resend them.
    #[error("{} events were not delivered: {source}", events.len())]
    Undelivered {
        events: Vec<AuditEventInput>,
        #[source]
        source: Box<ClientError>,
    },
    /// Reading or writing the spool file failed; the events it concerns are in `events`
    /// (nothing was dropped).
    #[error("spool file {path}: {source}")]
    Spool {
        path: std::path::PathBuf,
        events: Vec<AuditEventInput>,
        #[source]
        source: std::io::Error,
    },
    /// The batcher's background task has stopped (it panicked or was closed).
    #[error("the batcher has stopped")]
    Closed,
}

impl ClientError {
    /// The gRPC status behind the error, if there is one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Rejected(s) | ClientError::Exhausted { last: s, .. } => Some(s),
            ClientError::Undelivered { source, .. } => source.status(),
            _ => None,
        }
    }
}
