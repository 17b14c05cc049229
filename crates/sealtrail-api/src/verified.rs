//! What `GET /v1/verify` remembers between calls, so a repeated call costs only the
//! records appended since the last one, and what bounds the walks that cost more.
//!
//! - **Verified-up-to positions.** After a walk finds a tenant's whole chain valid, the
//!   head it reached (sequence number and hash) is kept here. The next call resumes there:
//!   it re-reads that one record and checks it still hashes to the remembered hash (a
//!   record rewritten since is `changed_since_verified`; a chain that no longer reaches it
//!   was truncated), then checks every record after it. Positions live in this process's
//!   memory only, never in the store: whoever can rewrite the store cannot also move them,
//!   and a restarted server walks each chain once from the start again. `full=true` asks
//!   for a walk from the start regardless.
//! - **Long walks are limited.** A walk over more than [`FREE_WALK`] records (a full walk
//!   of a long chain, or a resumed one far behind) needs one of `max_full_verifications`
//!   permits for the whole server; when all are taken the call is refused with `429
//!   rate_limited` and `Retry-After` instead of queueing behind them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sealtrail_core::record::ChainHead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Records a walk may cover without a permit (about a quarter of a second of hashing).
pub const FREE_WALK: u64 = 100_000;
/// Tenants whose position is remembered; past it the oldest-verified is forgotten (its
/// next call walks from the start).
const MAX_POSITIONS: usize = 100_000;

/// Verified-up-to positions per tenant and the permits for long walks.
pub struct Verified {
    positions: Mutex<Positions>,
    long_walks: Arc<Semaphore>,
    max_long_walks: usize,
}

#[derive(Default)]
struct Positions {
    by_tenant: HashMap<String, (ChainHead, u64)>,
    /// Bumped on every record; the entry with the smallest stamp is evicted first.
    stamp: u64,
}

impl Verified {
    /// `max_long_walks`: concurrent walks over more than [`FREE_WALK`] records (0: none
    /// allowed, every long walk is refused).
    pub fn new(max_long_walks: usize) -> Self {
        Self {
            positions: Mutex::new(Positions::default()),
            long_walks: Arc::new(Semaphore::new(max_long_walks)),
            max_long_walks,
        }
    }

    /// Where `tenant`'s chain was last found valid by this process.
    pub fn position(&self, tenant: &str) -> Option<ChainHead> {
        let positions = self.positions.lock().expect("verified positions lock");
        positions
            .by_tenant
            .get(tenant)
            .map(|(head, _)| head.clone())
    }

    /// Remembers that `tenant`'s chain is valid up to `head`. A position only moves
    /// forward: a slower walk that ends behind a faster one does not move it back.
    pub fn record(&self, tenant: &str, head: ChainHead) {
        let mut positions = self.positions.lock().expect("verified positions lock");
        positions.stamp += 1;
        let stamp = positions.stamp;
        if let Some((known, at)) = positions.by_tenant.get_mut(tenant) {
            if head.sequence_number > known.sequence_number {
                *known = head;
                *at = stamp;
            }
            return;
        }
        if positions.by_tenant.len() >= MAX_POSITIONS
            && let Some(oldest) = positions
                .by_tenant
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(t, _)| t.clone())
        {
            positions.by_tenant.remove(&oldest);
        }
        positions
            .by_tenant
            .insert(tenant.to_string(), (head, stamp));
    }

    /// A permit for a walk over `records` records: none needed up to [`FREE_WALK`],
    /// otherwise one of the server's long-walk permits or `429`.
    pub fn permit_for(&self, records: u64) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        if records <= FREE_WALK {
            return Ok(None);
        }
        match self.long_walks.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                metrics::counter!("sealtrail_rate_limited_total", "limit" => "long_verifications")
                    .increment(1);
                Err(ApiError::rate_limited(
                    format!(
                        "this walk covers {records} records and the server already runs its \
                         {} verifications of more than {FREE_WALK} records \
                         (max_full_verifications); retry later",
                        self.max_long_walks
                    ),
                    std::time::Duration::from_secs(5),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(n: u64) -> ChainHead {
        ChainHead {
            sequence_number: n,
            hash: format!("{n:064x}"),
        }
    }

    #[test]
    fn positions_only_move_forward() {
        let v = Verified::new(1);
        assert_eq!(v.position("t"), None);
        v.record("t", head(10));
        v.record("t", head(5));
        assert_eq!(v.position("t"), Some(head(10)));
        v.record("t", head(12));
        assert_eq!(v.position("t"), Some(head(12)));
        assert_eq!(v.position("u"), None);
    }

    #[test]
    fn long_walks_take_a_permit_short_ones_do_not() {
        let v = Verified::new(1);
        assert!(v.permit_for(FREE_WALK).unwrap().is_none());
        let held = v.permit_for(FREE_WALK + 1).unwrap();
        assert!(held.is_some());
        let refused = v.permit_for(FREE_WALK + 1).unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        assert!(v.permit_for(10).unwrap().is_none());
        drop(held);
        assert!(v.permit_for(FREE_WALK + 1).unwrap().is_some());
        assert!(Verified::new(0).permit_for(FREE_WALK + 1).is_err());
    }
}
