//! Bearer-key authentication and scope checks (DESIGN.md §1): a missing, unknown or
//! revoked key is 401; a key without the needed scope is 403.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::http::{HeaderMap, HeaderValue};
use sealtrail_store::{ApiKey, Store};

use crate::error::{ApiError, ApiResult};
use crate::keys::hash_key;

/// How long a key lookup is cached; a revocation takes effect within this time.
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

#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
    quotas: crate::quota::Quotas,
    /// How long a looked-up key is trusted before the store is asked again.
    ttl: Duration,
    /// How long a cached key keeps answering while the store cannot be asked (see
    /// [`KeyCache::with_grace`]); zero: never.
    grace: Duration,
    /// After a lookup failed because the store is unavailable: until when keys in their
    /// grace period are served without asking it again.
    store_down_until: Mutex<Option<Instant>>,
}

/// After the store failed a key lookup, how long to serve cached keys before asking again.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl KeyCache {
    /// A key cache enforcing `quotas` on every authenticated request.
    pub fn with_quotas(quotas: crate::quota::QuotaConfig) -> Self {
        Self {
            entries: Mutex::default(),
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

    /// A cached entry for `key_hash` no older than the grace period.
    fn within_grace(&self, key_hash: &str) -> Option<Option<ApiKey>> {
        let entries = self.entries.lock().expect("key cache");
        let (key, at) = entries.get(key_hash)?;
        (at.elapsed() < self.grace).then(|| key.clone())
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

    async fn lookup(&self, store: &dyn Store, key_hash: &str) -> ApiResult<Option<ApiKey>> {
        if let Some((key, at)) = self.entries.lock().expect("key cache").get(key_hash)
            && at.elapsed() < self.ttl
        {
            return Ok(key.clone());
        }
        let store_down = self
            .store_down_until
            .lock()
            .expect("key cache")
            .is_some_and(|until| Instant::now() < until);
        if store_down && let Some(key) = self.within_grace(key_hash) {
            metrics::counter!("sealtrail_key_cache_grace_total").increment(1);
            return Ok(key);
        }
        let key = match store.find_key(key_hash).await {
            Ok(key) => key,
            Err(err) if err.is_retryable() => {
                *self.store_down_until.lock().expect("key cache") =
                    Some(Instant::now() + STORE_RETRY_AFTER);
                match self.within_grace(key_hash) {
                    Some(key) => {
                        metrics::counter!("sealtrail_key_cache_grace_total").increment(1);
                        tracing::warn!(%err, "store unavailable: a cached API key answers (api.key_cache_grace)");
                        return Ok(key);
                    }
                    None => return Err(err.into()),
                }
            }
            Err(err) => return Err(err.into()),
        };
        *self.store_down_until.lock().expect("key cache") = None;
        let mut entries = self.entries.lock().expect("key cache");
        if entries.len() >= KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(key_hash.to_string(), (key.clone(), Instant::now()));
        Ok(key)
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
