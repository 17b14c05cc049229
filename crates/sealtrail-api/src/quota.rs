//! What one API key (and one tenant) may ask of the server: a request rate (GCRA, the
//! `governor` crate) and how many expensive responses — exports, evidence packs, full
//! verifications, live streams — it may have open at once. Over either, the answer is
//! `429 rate_limited` with `Retry-After` (gRPC: `RESOURCE_EXHAUSTED` with `RetryInfo`), which
//! the fact0 SDKs honour.
//!
//! The limits are generous by default (they stop a runaway client, not a busy one) and
//! configurable (`rate_limit_per_key`, `rate_limit_per_tenant`, `max_heavy_per_key`,
//! `max_streams_per_key`; 0 turns a rate limit off). State is kept per key id and tenant
//! that authenticated, so it is bounded by the keys that exist.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ApiResult};

/// The configured limits.
#[derive(Debug, Clone, Copy)]
pub struct QuotaConfig {
    /// Requests per second per API key (bursts up to twice that); 0: unlimited.
    pub per_key: u32,
    /// Requests per second per tenant, all its keys together; 0: unlimited.
    pub per_tenant: u32,
    /// Exports, evidence packs and full verifications one key may run at once.
    pub heavy_per_key: usize,
    /// Live streams (SSE, gRPC tail) one key may hold open at once.
    pub streams_per_key: usize,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            per_key: 20_000,
            per_tenant: 50_000,
            heavy_per_key: 4,
            streams_per_key: 32,
        }
    }
}

/// An expensive kind of response, limited in concurrency per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Heavy {
    /// Exports, evidence packs, full chain verifications.
    Bulk,
    /// Live event streams.
    Stream,
}

pub struct Quotas {
    config: QuotaConfig,
    per_key: Option<DefaultKeyedRateLimiter<String>>,
    per_tenant: Option<DefaultKeyedRateLimiter<String>>,
    slots: Mutex<HashMap<(String, Heavy), Arc<Semaphore>>>,
    clock: DefaultClock,
}

impl Default for Quotas {
    fn default() -> Self {
        Self::new(QuotaConfig::default())
    }
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(DefaultKeyedRateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl Quotas {
    pub fn new(config: QuotaConfig) -> Self {
        Self {
            config,
            per_key: limiter(config.per_key),
            per_tenant: limiter(config.per_tenant),
            slots: Mutex::default(),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `key_id` (of `tenant`); `429` when either rate is exceeded.
    pub fn admit(&self, key_id: &str, tenant: &str) -> ApiResult<()> {
        for (limiter, subject, what) in [
            (&self.per_key, key_id, "this API key"),
            (&self.per_tenant, tenant, "this tenant"),
        ] {
            let Some(limiter) = limiter else { continue };
            if let Err(not_until) = limiter.check_key(&subject.to_string()) {
                let wait = not_until.wait_time_from(self.clock.now());
                metrics::counter!("sealtrail_rate_limited_total", "limit" => if what == "this API key" { "key" } else { "tenant" })
                    .increment(1);
                return Err(ApiError::rate_limited(
                    format!("{what} is over its request rate; retry after the Retry-After delay"),
                    wait,
                ));
            }
        }
        Ok(())
    }

    /// A slot for one expensive response of `key_id`, held until the returned permit is
    /// dropped (with the response body); `429` when the key holds all of them.
    pub fn slot(&self, key_id: &str, kind: Heavy) -> ApiResult<OwnedSemaphorePermit> {
        let max = match kind {
            Heavy::Bulk => self.config.heavy_per_key,
            Heavy::Stream => self.config.streams_per_key,
        }
        .max(1);
        let semaphore = self
            .slots
            .lock()
            .expect("quota slots lock")
            .entry((key_id.to_string(), kind))
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone();
        semaphore.try_acquire_owned().map_err(|_| {
            metrics::counter!("sealtrail_rate_limited_total", "limit" => match kind { Heavy::Bulk => "bulk", Heavy::Stream => "streams" })
                .increment(1);
            let what = match kind {
                Heavy::Bulk => "exports, evidence packs or full verifications",
                Heavy::Stream => "live streams",
            };
            ApiError::rate_limited(
                format!("this API key already has {max} {what} running; wait for one to finish"),
                std::time::Duration::from_secs(1),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_rate_is_refused_with_a_delay() {
        let quotas = Quotas::new(QuotaConfig {
            per_key: 5,
            per_tenant: 0,
            ..QuotaConfig::default()
        });
        // The burst (twice the rate), then refusals.
        for _ in 0..10 {
            quotas.admit("k1", "t").unwrap();
        }
        let err = quotas.admit("k1", "t").unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(err.retry_after.is_some_and(|s| s >= 1));
        // Another key has its own budget.
        quotas.admit("k2", "t").unwrap();
    }

    #[test]
    fn heavy_slots_are_returned_with_their_permit() {
        let quotas = Quotas::new(QuotaConfig {
            heavy_per_key: 2,
            ..QuotaConfig::default()
        });
        let a = quotas.slot("k", Heavy::Bulk).unwrap();
        let _b = quotas.slot("k", Heavy::Bulk).unwrap();
        assert!(quotas.slot("k", Heavy::Bulk).is_err());
        assert!(
            quotas.slot("k", Heavy::Stream).is_ok(),
            "kinds are separate"
        );
        assert!(
            quotas.slot("other", Heavy::Bulk).is_ok(),
            "keys are separate"
        );
        drop(a);
        assert!(quotas.slot("k", Heavy::Bulk).is_ok());
    }
}
