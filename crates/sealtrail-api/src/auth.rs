//! Bearer-key authentication and scope checks (DESIGN.md §1): a missing, unknown or
//! revoked key is 401; a key without the needed scope is 403.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::http::{HeaderMap, HeaderValue};
use sealtrail_store::{ApiKey, Store};

use crate::error::{ApiError, ApiResult};
use crate::keys::hash_key;

/// How long a looked-up key is trusted by default ([`KeyCache::with_ttl`]).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
const KEY_CACHE_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    /// Redactions (issue 15): erasing a record's content is never part of read or write.
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// What a route needs of the caller's key: any one of [`Needs::SCOPES`].
pub trait Needs: Send + Sync + 'static {
    const SCOPES: &'static [Scope];
}

/// Routes that read a tenant's log.
pub struct Read;
/// Routes that append to it.
pub struct Write;
/// Receipts: whoever wrote the event, or may read the log.
pub struct ReadOrWrite;
/// Routes that change what is stored of the log (a redaction).
pub struct Admin;

impl Needs for Read {
    const SCOPES: &'static [Scope] = &[Scope::Read];
}
impl Needs for Write {
    const SCOPES: &'static [Scope] = &[Scope::Write];
}
impl Needs for ReadOrWrite {
    const SCOPES: &'static [Scope] = &[Scope::Read, Scope::Write];
}
impl Needs for Admin {
    const SCOPES: &'static [Scope] = &[Scope::Admin];
}

/// The extractor every authenticated route takes: the caller of a valid, unrevoked key
/// with a scope `N` asks for, within its quota; otherwise the request is answered `401`,
/// `403` or `429` with the one error shape before the handler runs.
pub struct Authenticated<N: Needs>(pub Caller, pub std::marker::PhantomData<N>);

impl<N: Needs> std::ops::Deref for Authenticated<N> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<N: Needs> axum::extract::FromRequestParts<crate::AppState> for Authenticated<N> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::AppState,
    ) -> Result<Self, ApiError> {
        let caller = state
            .keys
            .authenticate(state.store.as_ref(), &parts.headers, N::SCOPES)
            .await?;
        Ok(Self(caller, std::marker::PhantomData))
    }
}

/// The caller, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's public id (rate limits and slots are per key).
    pub key_id: String,
    pub tenant_id: String,
    pub scopes: Vec<String>,
}

/// Looked-up keys (and unknown ones, as `None`), each with when the store answered.
type Entries = quick_cache::sync::Cache<String, (Option<ApiKey>, Instant)>;

/// Looked-up API keys, so that a request costs a store read at most once per key per
/// `ttl`:
/// - **One lookup per key at a time** (single flight): when a key's entry is missing or
///   older than `ttl`, the first request asks the store and the others with the same key
///   wait for its answer (a burst of requests on a key that just expired used to send
///   the store one read each).
/// - **Bounded and scan resistant** (`quick_cache`, S3-FIFO): a flood of made-up
///   keys (each one a store read, cached as unknown) cannot push out the keys in use (the
///   old map was cleared whole when full).
pub struct KeyCache {
    entries: Entries,
    quotas: crate::quota::Quotas,
    /// How long a looked-up key is trusted before the store is asked again.
    ttl: Duration,
    /// How long a cached key keeps answering while the store cannot be asked (see
    /// [`KeyCache::with_grace`]); zero: never.
    grace: Duration,
    /// After a lookup failed because the store is unavailable: until when keys in their
    /// grace period are served without asking it again, and unknown ones are refused
    /// without asking it (the requests waiting on one lookup then fail fast, not each
    /// after its own store timeout).
    store_down_until: Mutex<Option<Instant>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::with_quotas(crate::quota::QuotaConfig::default())
    }
}

/// After the store failed a key lookup, how long to serve cached keys before asking again.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl KeyCache {
    /// A key cache enforcing `quotas` on every authenticated request.
    pub fn with_quotas(quotas: crate::quota::QuotaConfig) -> Self {
        Self {
            entries: Entries::new(KEY_CACHE_MAX),
            quotas: crate::quota::Quotas::new(quotas),
            ttl: KEY_CACHE_TTL,
            grace: Duration::ZERO,
            store_down_until: Mutex::default(),
        }
    }

    /// A key the store answered for (or did not know) is trusted this long before the
    /// store is asked again: a revoked key stops working at most `ttl` after the revocation.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Keys looked up within the last `grace` keep answering while the store is
    /// unavailable (a ScyllaDB outage), so async ingest goes on being accepted into the
    /// log. The price: a key revoked during the outage keeps working until the store
    /// answers again or `grace` has passed since it was last looked up.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// A slot for one expensive response of `caller` (see [`crate::quota`]); keep the
    /// permit alive as long as the response runs.
    pub fn slot(
        &self,
        caller: &Caller,
        kind: crate::quota::Heavy,
    ) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        self.quotas.slot(&caller.key_id, kind)
    }

    fn store_down(&self) -> bool {
        self.store_down_until
            .lock()
            .expect("key cache")
            .is_some_and(|until| Instant::now() < until)
    }

    async fn lookup(&self, store: &dyn Store, key_hash: &str) -> ApiResult<Option<ApiKey>> {
        // The common case, under a shared lock: a fresh entry.
        if let Some((key, at)) = self.entries.get(key_hash)
            && at.elapsed() < self.ttl
        {
            return Ok(key);
        }
        let (ttl, grace) = (self.ttl, self.grace);
        let asked = Instant::now();
        // Missing or stale: take the entry's place (others asking for this key now wait
        // for this lookup), unless a lookup that finished meanwhile refreshed it, or the
        // store is down and the entry is within its grace period.
        let (guard, stale) = match self
            .entries
            // Judged when the entry is seen, which may be after waiting for another
            // lookup of this key (whose failure may have marked the store down).
            .entry_async(key_hash, |_, (key, at)| {
                let age = at.elapsed();
                // Fresh, or looked up after this request arrived (it waited for that
                // lookup): even with a `ttl` of 0, requests that arrive together share one.
                if age < ttl || *at >= asked {
                    quick_cache::sync::EntryAction::Retain(key.clone())
                } else if age < grace && self.store_down() {
                    metrics::counter!("sealtrail_key_cache_grace_total").increment(1);
                    quick_cache::sync::EntryAction::Retain(key.clone())
                } else {
                    quick_cache::sync::EntryAction::ReplaceWithGuard
                }
            })
            .await
        {
            quick_cache::sync::EntryResult::Retained(key) => return Ok(key),
            quick_cache::sync::EntryResult::Replaced(guard, stale) => (guard, Some(stale)),
            quick_cache::sync::EntryResult::Vacant(guard) => (guard, None),
            // Neither happens (the callback never removes; only the blocking `entry`
            // times out); answered as an error rather than a panic all the same.
            quick_cache::sync::EntryResult::Removed(..)
            | quick_cache::sync::EntryResult::Timeout => {
                return Err(ApiError::internal(
                    "key cache",
                    "an unexpected cache answer; retry",
                ));
            }
        };
        // A failed lookup less than a second ago: do not ask the store again yet (and do
        // not move that second on: only a failure of the store itself does).
        let asked_store = !self.store_down();
        let found = if asked_store {
            store.find_key(key_hash).await
        } else {
            Err(sealtrail_store::StoreError::Unavailable(
                "the store cannot be asked for API keys now; retry shortly".into(),
            ))
        };
        let err = match found {
            Ok(key) => {
                *self.store_down_until.lock().expect("key cache") = None;
                let _ = guard.insert((key.clone(), Instant::now()));
                return Ok(key);
            }
            Err(err) => err,
        };
        if asked_store && err.is_retryable() {
            *self.store_down_until.lock().expect("key cache") =
                Some(Instant::now() + STORE_RETRY_AFTER);
        }
        // A stale entry goes back as it was, so that its grace period keeps counting from
        // its last successful lookup (the next request judges it again); it answers now
        // if the store is unavailable and it is within that period.
        let Some((key, at)) = stale else {
            return Err(err.into());
        };
        let _ = guard.insert((key.clone(), at));
        if err.is_retryable() && at.elapsed() < grace {
            metrics::counter!("sealtrail_key_cache_grace_total").increment(1);
            tracing::warn!(%err, "store unavailable: a cached API key answers (api.key_cache_grace)");
            return Ok(key);
        }
        Err(err.into())
    }

    /// Authenticates the request's bearer key. `scopes`: the caller needs any one of them.
    pub async fn authenticate(
        &self,
        store: &dyn Store,
        headers: &HeaderMap,
        scopes: &[Scope],
    ) -> ApiResult<Caller> {
        self.authenticate_value(
            store,
            headers.get(axum::http::header::AUTHORIZATION),
            scopes,
        )
        .await
    }

    /// [`Self::authenticate`] given the `Authorization` value (gRPC passes its
    /// `authorization` metadata).
    pub async fn authenticate_value(
        &self,
        store: &dyn Store,
        value: Option<&HeaderValue>,
        scopes: &[Scope],
    ) -> ApiResult<Caller> {
        let value = value.ok_or_else(|| {
            ApiError::unauthorized(
                "missing Authorization header; send `Authorization: Bearer alk_live_…`",
            )
        })?;
        let raw = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer alk_live_…`")
            })?;
        let key = self.lookup(store, &hash_key(raw)).await?;
        let key = match key {
            Some(k) if k.revoked_at.is_none() => k,
            Some(_) => return Err(ApiError::unauthorized("this API key has been revoked")),
            None => return Err(ApiError::unauthorized("unknown API key")),
        };
        if !scopes
            .iter()
            .any(|s| key.scopes.iter().any(|k| k == s.as_str()))
        {
            let need: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key lacks the {} scope", need.join(" or ")),
            ));
        }
        self.quotas.admit(&key.key_id, &key.tenant_id)?;
        Ok(Caller {
            key_id: key.key_id,
            tenant_id: key.tenant_id,
            scopes: key.scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use sealtrail_store::{StoreError, StoreResult};

    use super::*;

    /// A store that knows one key, counts its key lookups, takes 50 ms for each, and can
    /// be made unavailable. Nothing else is asked of it here.
    #[derive(Default)]
    struct KeyStore {
        lookups: AtomicUsize,
        down: AtomicBool,
    }

    const KEY: &str = "alk_live_single_flight";

    #[async_trait::async_trait]
    impl Store for KeyStore {
        async fn append_shared(&self, _: Arc<sealtrail_store::CommitBatch>) -> StoreResult<()> {
            Ok(())
        }
        async fn heads(
            &self,
            _: Vec<String>,
        ) -> StoreResult<std::collections::HashMap<String, sealtrail_core::ChainHead>> {
            Ok(Default::default())
        }
        async fn find_events(
            &self,
            _: Vec<(String, String)>,
        ) -> StoreResult<Vec<sealtrail_store::StoredEvent>> {
            Ok(vec![])
        }
        async fn get_event(
            &self,
            _: &str,
            _: &str,
        ) -> StoreResult<Option<sealtrail_store::StoredEvent>> {
            Ok(None)
        }
        async fn get_receipt(
            &self,
            _: &str,
            _: &str,
        ) -> StoreResult<Option<sealtrail_core::Receipt>> {
            Ok(None)
        }
        async fn list_events(
            &self,
            _: &str,
            _: sealtrail_store::EventQuery,
        ) -> StoreResult<sealtrail_store::EventPage> {
            Ok(sealtrail_store::EventPage {
                events: vec![],
                total: 0,
            })
        }
        async fn scan_chain(
            &self,
            _: &str,
            _: u64,
            _: usize,
        ) -> StoreResult<Vec<sealtrail_store::ChainRow>> {
            Ok(vec![])
        }
        async fn tree_nodes(
            &self,
            _: &str,
            ids: Vec<sealtrail_core::merkle::NodeId>,
        ) -> StoreResult<Vec<Option<sealtrail_core::merkle::Hash>>> {
            Ok(vec![None; ids.len()])
        }
        async fn create_key(&self, _: ApiKey) -> StoreResult<()> {
            Ok(())
        }
        async fn find_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable(
                    "injected: the store is down".into(),
                ));
            }
            Ok((key_hash == hash_key(KEY)).then(|| ApiKey {
                key_id: "key_1".into(),
                tenant_id: "acme".into(),
                key_hash: key_hash.into(),
                key_prefix: "alk_live_sin".into(),
                scopes: vec!["write".into()],
                created_at: "2024-01-01T00:00:00Z".into(),
                revoked_at: None,
            }))
        }
        async fn list_keys(&self, _: Option<&str>) -> StoreResult<Vec<ApiKey>> {
            Ok(vec![])
        }
        async fn revoke_key(&self, _: &str, _: &str) -> StoreResult<bool> {
            Ok(false)
        }
    }

    fn bearer(key: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap()
    }

    async fn burst(cache: &Arc<KeyCache>, store: &Arc<KeyStore>, key: &str, n: usize) -> usize {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (cache, store) = (cache.clone(), store.clone());
                let value = bearer(key);
                tokio::spawn(async move {
                    cache
                        .authenticate_value(store.as_ref(), Some(&value), &[Scope::Write])
                        .await
                        .is_ok()
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        ok
    }

    /// A burst of requests on a key that is not cached (or just expired) asks the store
    /// once, not once per request; an unknown key likewise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_on_one_key_asks_the_store_once() {
        let store = Arc::new(KeyStore::default());
        let cache = Arc::new(KeyCache::default().with_ttl(Duration::from_millis(300)));
        assert_eq!(burst(&cache, &store, KEY, 64).await, 64);
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1, "cold key");
        assert_eq!(burst(&cache, &store, KEY, 64).await, 64);
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1, "cached");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(burst(&cache, &store, KEY, 64).await, 64);
        assert_eq!(
            store.lookups.load(Ordering::SeqCst),
            2,
            "expired: one refresh"
        );
        assert_eq!(burst(&cache, &store, "alk_live_made_up", 64).await, 0);
        assert_eq!(store.lookups.load(Ordering::SeqCst), 3, "an unknown key");
    }

    /// With a `ttl` of 0 every request asks the store, but requests that arrive while a
    /// lookup of their key runs share it (they do not queue up for one lookup each).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_no_ttl_concurrent_requests_share_a_lookup() {
        let store = Arc::new(KeyStore::default());
        let cache = Arc::new(KeyCache::default().with_ttl(Duration::ZERO));
        assert_eq!(burst(&cache, &store, KEY, 64).await, 64);
        let lookups = store.lookups.load(Ordering::SeqCst);
        assert!(lookups <= 3, "{lookups} lookups for one burst");
        assert_eq!(burst(&cache, &store, KEY, 1).await, 1);
        assert_eq!(
            store.lookups.load(Ordering::SeqCst),
            lookups + 1,
            "a later request asks again"
        );
    }

    /// A flood of made-up keys (more than the cache holds) does not push out a key in
    /// use: it is still answered without asking the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn made_up_keys_do_not_push_out_the_keys_in_use() {
        let cache = KeyCache::default().with_ttl(Duration::from_secs(3600));
        let store = KeyStore::default();
        let value = bearer(KEY);
        for _ in 0..3 {
            cache
                .authenticate_value(&store, Some(&value), &[Scope::Write])
                .await
                .unwrap();
        }
        // Made-up keys straight into the cache (as unknown), as a flood would leave them,
        // without the store's 50 ms each.
        for n in 0..3 * KEY_CACHE_MAX {
            cache
                .entries
                .insert(hash_key(&format!("alk_live_x{n}")), (None, Instant::now()));
        }
        let before = store.lookups.load(Ordering::SeqCst);
        cache
            .authenticate_value(&store, Some(&value), &[Scope::Write])
            .await
            .unwrap();
        assert_eq!(
            store.lookups.load(Ordering::SeqCst),
            before,
            "the key in use was kept"
        );
    }

    /// With the store down, an expired key within its grace period answers; the requests
    /// waiting on a failed lookup fail fast instead of each asking the store in turn; and
    /// once the store answers again, the key is looked up again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_outage_serves_the_grace_period_and_fails_fast() {
        let store = Arc::new(KeyStore::default());
        let cache = Arc::new(
            KeyCache::default()
                .with_ttl(Duration::from_millis(100))
                .with_grace(Duration::from_secs(60)),
        );
        assert_eq!(burst(&cache, &store, KEY, 1).await, 1);
        store.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(burst(&cache, &store, KEY, 32).await, 32, "within grace");
        assert_eq!(store.lookups.load(Ordering::SeqCst), 2, "one failed lookup");
        // An unknown key while the store is down: refused (503), and the store is not
        // asked again within a second of the failure.
        assert_eq!(burst(&cache, &store, "alk_live_new", 32).await, 0);
        assert_eq!(store.lookups.load(Ordering::SeqCst), 2, "fails fast");
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(burst(&cache, &store, KEY, 32).await, 32);
        assert_eq!(store.lookups.load(Ordering::SeqCst), 3, "asked again once");
    }
}
