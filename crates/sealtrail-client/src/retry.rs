//! Retries with exponential backoff and full jitter, never sooner than the server's
//! retry hint (`google.rpc.RetryInfo`, or the `retry-after` trailer in seconds).

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::error::ClientError;

/// How calls are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubles each retry.
    pub initial_backoff: Duration,
    /// Largest backoff (a server hint may still ask for longer).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Whether a status may succeed if the same call (same event ids) is sent again.
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted
    )
}

/// The server's retry hint, if it sent one.
pub fn retry_hint(status: &Status) -> Option<Duration> {
    if let Some(delay) = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
    {
        return Some(delay);
    }
    status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): a random duration up to the
    /// exponential ceiling, but at least the server's hint.
    pub fn backoff(&self, retry: u32, hint: Option<Duration>) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let jitter = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
        let wait = ceiling.mul_f64(jitter);
        hint.map_or(wait, |h| wait.max(h))
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts run out. The call
    /// must be idempotent — the SDK makes ingest so by giving every event an id.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.run_if(is_retryable, call).await
    }

    /// [`Self::run`], retrying only the statuses `retryable` accepts: for a call that is
    /// safe to repeat after some failures only.
    pub async fn run_if<T, F, Fut>(
        &self,
        retryable: fn(&Status) -> bool,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(status) if !retryable(&status) => return Err(ClientError::Rejected(status)),
                Err(status) if attempt >= self.max_attempts.max(1) => {
                    return Err(ClientError::Exhausted {
                        attempts: attempt,
                        last: status,
                    });
                }
                Err(status) => {
                    let wait = self.backoff(attempt, retry_hint(&status));
                    tracing::debug!(code = ?status.code(), ?wait, attempt, "retrying a sealtrail call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_honours_the_hint() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        };
        for retry in 1..10 {
            assert!(policy.backoff(retry, None) <= Duration::from_millis(400));
        }
        assert!(policy.backoff(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
    }

    #[test]
    fn retry_after_trailer_is_a_hint() {
        let mut status = Status::resource_exhausted("busy");
        status
            .metadata_mut()
            .insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_hint(&status), Some(Duration::from_secs(3)));
        assert!(is_retryable(&status));
        assert!(!is_retryable(&Status::invalid_argument("bad")));
    }
}
