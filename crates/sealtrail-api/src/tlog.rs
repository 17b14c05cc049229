//! The verifiable log over HTTP: signed checkpoints, the log key, inclusion and
//! consistency proofs. Every answer reads O(log n) stored tree nodes
//! ([`Store::tree_nodes`]), never the chain.
//!
//! Checkpoints are not stored: Ed25519 is deterministic, so signing the same tree head
//! again yields the same note. A tenant's served checkpoint is re-signed when it is older
//! than `checkpoint_interval` and the log has grown (so it lags the log by at most that
//! interval while events arrive), or at once with `?fresh=true`.
//!
//! With witnesses configured ([`crate::witnessing`]), each newly signed checkpoint is sent
//! to them; the cosignatures they return are kept in this process's memory only (a
//! restarted server collects them again with its next checkpoint) and appended when that
//! exact note is served. So that every tenant's log is witnessed, read or not, the
//! ingest paths mark the tenants they accept writes for ([`TransparencyLog::note_write`])
//! and a background task ([`spawn_witness_feeder`]) signs each marked tenant's checkpoint
//! once per `checkpoint_interval` (so at most one per tenant and interval reaches the
//! witnesses, newest first, at most [`FEED_PER_TICK`] tenants a tick, those waiting
//! longest first). A tenant stays marked until a checkpoint is signed more than
//! [`FEED_SETTLE`] after its last accepted write: writes still in flight then (an async
//! write in distributed mode commits after it is accepted) are covered too. A write that
//! commits later than that (a chainer down for longer) is witnessed with the tenant's
//! next write or read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sealtrail_core::checkpoint::{Checkpoint, tenant_origin};
use sealtrail_core::merkle::{Hash, NodeId, NodeSource, range_nodes};
use sealtrail_core::note::NoteSigner;
use sealtrail_core::proof;
use sealtrail_store::Store;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Authenticated, Read};
use crate::error::{ApiError, ApiResult, ErrorBody, Params};
use crate::witnessing::{WitnessAlarm, WitnessConfig, Witnessing};

/// Tenants whose last checkpoint is kept (then the cache starts over).
const CACHED_TENANTS: usize = 10_000;
/// Tenants the witness feeder signs a checkpoint for per tick (the others wait).
pub const FEED_PER_TICK: usize = 2_000;
/// A tenant stays marked for the witness feeder until this long after its last accepted
/// write (see the module doc).
pub const FEED_SETTLE: Duration = Duration::from_secs(30);
/// Tenants marked at most (a write beyond is witnessed with a later write or a read).
const FEED_MAX_TENANTS: usize = 1_000_000;

/// A tenant with writes accepted since its last checkpoint went to the witnesses.
struct Marked {
    /// The oldest accepted write no signed checkpoint has covered yet.
    since: Instant,
    /// The newest accepted write.
    last: Instant,
}

/// The log's signing identity and checkpoint policy.
pub struct TransparencyLog {
    signer: NoteSigner,
    origin: String,
    interval: Duration,
    cache: Mutex<HashMap<String, (Instant, u64, String)>>,
    /// The witnesses every new checkpoint goes to (see [`crate::witnessing`]).
    witnessing: Option<Arc<Witnessing>>,
    /// Tenants the witness feeder has to sign a checkpoint for.
    marked: Mutex<HashMap<String, Marked>>,
}

impl TransparencyLog {
    /// `origin`: the log's name (also the key name); tenant `t`'s checkpoints are for
    /// `<origin>/<t>`.
    pub fn new(signer: NoteSigner, interval: Duration) -> Self {
        Self {
            origin: signer.name().to_string(),
            signer,
            interval,
            cache: Mutex::new(HashMap::new()),
            witnessing: None,
            marked: Mutex::new(HashMap::new()),
        }
    }

    /// Sends every checkpoint signed from now on to `witnesses` and serves their
    /// cosignatures with it; `store` gives the consistency proofs.
    pub fn with_witnesses(mut self, witnesses: Vec<WitnessConfig>, store: Arc<dyn Store>) -> Self {
        if !witnesses.is_empty() {
            self.witnessing = Some(Arc::new(Witnessing::new(
                witnesses,
                store,
                self.origin.clone(),
            )));
        }
        self
    }

    /// A write of `tenant` was accepted: with witnesses, the feeder signs its checkpoint
    /// within a `checkpoint_interval` or so (see the module doc). Without, nothing.
    pub fn note_write(&self, tenant: &str) {
        if self.witnessing.is_none() {
            return;
        }
        let now = Instant::now();
        let mut marked = self.marked.lock().expect("marked tenants");
        if let Some(m) = marked.get_mut(tenant) {
            m.last = now;
        } else if marked.len() < FEED_MAX_TENANTS {
            marked.insert(
                tenant.to_string(),
                Marked {
                    since: now,
                    last: now,
                },
            );
        }
    }

    /// Signs the checkpoints of up to [`FEED_PER_TICK`] marked tenants (the longest
    /// waiting first), which sends each new one to the witnesses; unmarks those whose last
    /// write is older than [`FEED_SETTLE`]. Returns how many it signed.
    async fn feed_witnesses(&self, store: &dyn Store) -> usize {
        let batch: Vec<String> = {
            let marked = self.marked.lock().expect("marked tenants");
            let mut all: Vec<(&String, Instant)> =
                marked.iter().map(|(t, m)| (t, m.since)).collect();
            if all.len() > FEED_PER_TICK {
                all.select_nth_unstable_by_key(FEED_PER_TICK, |(_, since)| *since);
                all.truncate(FEED_PER_TICK);
            }
            all.into_iter().map(|(t, _)| t.clone()).collect()
        };
        for tenant in &batch {
            let started = Instant::now();
            if let Err(e) = self.latest(store, tenant, false).await {
                tracing::warn!(
                    tenant,
                    code = e.code,
                    "signing a checkpoint for the witnesses failed: {}",
                    e.message
                );
                continue;
            }
            let mut marked = self.marked.lock().expect("marked tenants");
            if let Some(m) = marked.get_mut(tenant) {
                if started.saturating_duration_since(m.last) > FEED_SETTLE {
                    marked.remove(tenant);
                } else {
                    m.since = started;
                }
            }
        }
        batch.len()
    }

    /// Alarms raised by witnesses (empty without witnesses).
    pub fn witness_alarms(&self) -> Vec<WitnessAlarm> {
        self.witnessing
            .as_ref()
            .map(|w| w.alarms())
            .unwrap_or_default()
    }

    pub fn tenant_origin(&self, tenant: &str) -> String {
        tenant_origin(&self.origin, tenant)
    }

    pub fn verifier_key(&self) -> String {
        self.signer.verifier().to_string()
    }

    /// The signed checkpoint of `tenant`'s tree of exactly `size` leaves.
    pub async fn sign_at(&self, store: &dyn Store, tenant: &str, size: u64) -> ApiResult<String> {
        let root = root_at(store, tenant, size).await?;
        Checkpoint::new(self.tenant_origin(tenant), size, root)
            .sign(&self.signer)
            .map_err(|e| ApiError::internal("signing a checkpoint", e))
    }

    /// The latest checkpoint as served (see the module doc): `(size, signed note)`.
    pub async fn latest(
        &self,
        store: &dyn Store,
        tenant: &str,
        fresh: bool,
    ) -> ApiResult<(u64, String)> {
        let size = log_size(store, tenant).await?;
        if !fresh {
            let cache = self.cache.lock().expect("checkpoint cache");
            if let Some((at, cached_size, note)) = cache.get(tenant)
                && (*cached_size == size || at.elapsed() < self.interval)
            {
                return Ok((*cached_size, note.clone()));
            }
        }
        let note = self.sign_at(store, tenant, size).await?;
        let mut cache = self.cache.lock().expect("checkpoint cache");
        if cache.len() >= CACHED_TENANTS {
            cache.clear();
        }
        let new = cache
            .insert(tenant.to_string(), (Instant::now(), size, note.clone()))
            .is_none_or(|(_, _, old)| old != note);
        drop(cache);
        if new && let Some(w) = &self.witnessing {
            w.submit(tenant, size, &note);
        }
        Ok((size, note))
    }

    /// The checkpoint as `GET /v1/checkpoint` serves it: [`latest`](Self::latest) with
    /// the witnesses' cosignatures collected for it; with `witnesses = Some(n)`, waiting
    /// up to `wait` for `n` of them.
    pub async fn latest_cosigned(
        &self,
        store: &dyn Store,
        tenant: &str,
        fresh: bool,
        witnesses: Option<usize>,
        wait: Duration,
    ) -> ApiResult<String> {
        let (size, note) = self.latest(store, tenant, fresh).await?;
        self.with_cosignatures(tenant, size, note, witnesses, wait)
            .await
    }

    /// `note`, `tenant`'s signed checkpoint of `size` leaves, followed by the
    /// cosignatures collected for exactly it; with `witnesses = Some(n)`, after waiting up
    /// to `wait` for `n` of them (it is sent to the witnesses if it was not).
    pub async fn with_cosignatures(
        &self,
        tenant: &str,
        size: u64,
        note: String,
        witnesses: Option<usize>,
        wait: Duration,
    ) -> ApiResult<String> {
        let Some(w) = &self.witnessing else {
            return match witnesses {
                Some(n) if n > 0 => Err(ApiError::bad_request(
                    "invalid_query",
                    format!("witnesses={n}: this log has no witnesses configured"),
                )),
                _ => Ok(note),
            };
        };
        let wanted = witnesses.unwrap_or(0);
        if wanted > w.count() {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "witnesses={wanted}: this log has {} witnesses configured",
                    w.count()
                ),
            ));
        }
        let mut changes = w.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        let mut asked = false;
        loop {
            let (cosigned, have) = w.attach(tenant, &note);
            if !asked && have < w.count() {
                // A failed or superseded submission is not retried by itself (a size
                // submitted in the last 2 s is not sent again).
                w.submit(tenant, size, &note);
                asked = true;
            }
            if have >= wanted {
                return Ok(cosigned);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                let alarms = self.witness_alarms();
                return Err(ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "witnesses_unavailable",
                        format!(
                            "the checkpoint of size {size} has {have} of the {wanted} cosignatures asked for after {} ms{}",
                            wait.as_millis(),
                            if alarms.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    "; witness alarms: {}",
                                    alarms
                                        .iter()
                                        .map(|a| format!(
                                            "{} on {}: {}",
                                            a.witness, a.origin, a.message
                                        ))
                                        .collect::<Vec<_>>()
                                        .join("; ")
                                )
                            }
                        ),
                    )
                });
            }
        }
    }
}

/// With witnesses configured, signs the checkpoints of the tenants written to once per
/// `checkpoint_interval` until `state` shuts down, so each reaches the witnesses whether
/// or not anyone reads it (see the module doc).
pub fn spawn_witness_feeder(state: &AppState) {
    let Some(log) = state.tlog.clone() else {
        return;
    };
    if log.witnessing.is_none() {
        return;
    }
    let store = state.store.clone();
    let mut shutdown = state.shutdown.clone();
    let tick = log.interval.max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let signed = log.feed_witnesses(store.as_ref()).await;
            metrics::counter!("sealtrail_witness_feeder_signed_total").increment(signed as u64);
        }
    });
}

/// The number of records in `tenant`'s log.
pub async fn log_size(store: &dyn Store, tenant: &str) -> ApiResult<u64> {
    let heads = store.heads(vec![tenant.to_string()]).await?;
    Ok(heads.get(tenant).map_or(0, |h| h.sequence_number))
}

/// Stored node hashes, fetched in one store call, as a [`NodeSource`].
pub(crate) struct Fetched(HashMap<NodeId, Hash>);

impl Fetched {
    /// The hash of `id`, one of the nodes fetched.
    pub(crate) fn get(&self, id: &NodeId) -> Option<Hash> {
        self.0.get(id).copied()
    }
}

impl NodeSource for Fetched {
    type Error = NodeId;
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, NodeId> {
        ids.iter()
            .map(|id| self.0.get(id).copied().ok_or(*id))
            .collect()
    }
}

pub(crate) async fn fetch(store: &dyn Store, tenant: &str, ids: Vec<NodeId>) -> ApiResult<Fetched> {
    let hashes = store.tree_nodes(tenant, ids.clone()).await?;
    let mut out = HashMap::with_capacity(ids.len());
    for (id, hash) in ids.into_iter().zip(hashes) {
        // nodes are written with their records, so a missing one is damage, not a race
        let hash = hash.ok_or_else(|| {
            ApiError::internal(
                "reading the tree",
                format!("node {id:?} of {tenant:?} missing"),
            )
        })?;
        out.insert(id, hash);
    }
    Ok(Fetched(out))
}

fn proof_error<E: std::fmt::Debug>(e: proof::ProofError<E>) -> ApiError {
    match e {
        proof::ProofError::InvalidRequest(m) => ApiError::bad_request("invalid_query", m),
        proof::ProofError::Source(e) => ApiError::internal("reading the tree", format!("{e:?}")),
    }
}

async fn root_at(store: &dyn Store, tenant: &str, size: u64) -> ApiResult<Hash> {
    let nodes = fetch(store, tenant, range_nodes(0, size)).await?;
    proof::root_at(&nodes, size).map_err(proof_error)
}

pub(crate) fn parse_u64(name: &str, text: Option<&str>) -> ApiResult<Option<u64>> {
    text.map(|t| {
        t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("{name} must be a non-negative integer, not {t:?}"),
            )
        })
    })
    .transpose()
}

fn log_of(state: &AppState) -> ApiResult<&TransparencyLog> {
    state.tlog.as_deref().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_configured",
            "this server has no verifiable log configured",
        )
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckpointParams {
    /// `true`: sign the current tree head now instead of serving one up to
    /// `log.checkpoint_interval` old
    #[param(value_type = Option<bool>)]
    pub fresh: Option<String>,
    /// wait (up to 10 s) until this many of the configured witnesses have cosigned the
    /// checkpoint; `503 witnesses_unavailable` if they have not by then
    #[param(value_type = Option<u32>, minimum = 0)]
    pub witnesses: Option<String>,
}

/// Longest `GET /v1/checkpoint?witnesses=N` (and the evidence pack's) waits for the
/// cosignatures.
pub(crate) const WITNESS_WAIT: Duration = Duration::from_secs(10);

/// The tenant's latest signed checkpoint: a C2SP tlog-checkpoint signed as a C2SP signed
/// note (Ed25519), followed by one C2SP tlog-cosignature line per configured witness that
/// has cosigned it.
#[utoipa::path(get, path = "/v1/checkpoint", tag = "Verifiable log", operation_id = "getCheckpoint",
    params(CheckpointParams),
    responses((status = 200, content_type = "text/plain", body = String), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "No verifiable log is configured (`not_configured`)", body = ErrorBody),
        (status = 503, description = "`?witnesses=N` and fewer than N witnesses cosigned within 10 s (`witnesses_unavailable`)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_checkpoint(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Params(p): Params<CheckpointParams>,
) -> ApiResult<impl IntoResponse> {
    let fresh = crate::error::parse_flag("fresh", p.fresh.as_deref())?;
    let witnesses = parse_u64("witnesses", p.witnesses.as_deref())?.map(|n| n as usize);
    let note = log_of(&state)?
        .latest_cosigned(
            state.store.as_ref(),
            &caller.tenant_id,
            fresh,
            witnesses,
            WITNESS_WAIT,
        )
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogKey {
    /// The origin line of this tenant's checkpoints.
    pub origin: String,
    /// `<name>+<key id>+<base64 Ed25519 public key>` (C2SP signed-note verifier key).
    pub verifier_key: String,
}

/// The log's public key and this tenant's checkpoint origin.
#[utoipa::path(get, path = "/v1/log/key", tag = "Verifiable log", operation_id = "getLogKey",
    responses((status = 200, body = LogKey), (status = 401, body = ErrorBody), (status = 404, description = "No verifiable log is configured (`not_configured`)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_log_key(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
) -> ApiResult<Json<LogKey>> {
    let log = log_of(&state)?;
    Ok(Json(LogKey {
        origin: log.tenant_origin(&caller.tenant_id),
        verifier_key: log.verifier_key(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionParams {
    /// the record to prove (1-based), at most `tree_size`
    #[param(value_type = u64, format = "uint64", minimum = 1)]
    pub sequence_number: Option<String>,
    /// size of the tree to prove it in, at most the log size (default: the log size)
    #[param(value_type = Option<u64>, format = "uint64", minimum = 1)]
    pub tree_size: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InclusionProofResponse {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// base64
    pub root_hash: String,
    /// base64, nearest the leaf first (RFC 6962 audit path)
    pub hashes: Vec<String>,
}

/// Proof that record `sequence_number` is in the tree of `tree_size` records.
#[utoipa::path(get, path = "/v1/proof/inclusion", tag = "Verifiable log", operation_id = "getInclusionProof",
    params(InclusionParams),
    responses((status = 200, body = InclusionProofResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, description = "No verifiable log is configured (`not_configured`)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_inclusion_proof(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Params(p): Params<InclusionParams>,
) -> ApiResult<Json<InclusionProofResponse>> {
    log_of(&state)?;
    let seq = parse_u64("sequence_number", p.sequence_number.as_deref())?
        .ok_or_else(|| ApiError::bad_request("invalid_query", "sequence_number is required"))?;
    let size = log_size(state.store.as_ref(), &caller.tenant_id).await?;
    let tree_size = parse_u64("tree_size", p.tree_size.as_deref())?.unwrap_or(size);
    if seq == 0 || seq > tree_size || tree_size > size {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "need 1 <= sequence_number <= tree_size <= {size} (the log size); got sequence_number {seq}, tree_size {tree_size}"
            ),
        ));
    }
    Ok(Json(
        inclusion(state.store.as_ref(), &caller.tenant_id, seq, tree_size).await?,
    ))
}

/// The inclusion proof of record `seq` in the tree of `tree_size` records (validated).
pub async fn inclusion(
    store: &dyn Store,
    tenant: &str,
    seq: u64,
    tree_size: u64,
) -> ApiResult<InclusionProofResponse> {
    let index = seq - 1;
    let mut ids = proof::inclusion_proof_nodes(index, tree_size);
    ids.extend(range_nodes(0, tree_size));
    let nodes = fetch(store, tenant, ids).await?;
    let hashes = proof::inclusion_proof(&nodes, index, tree_size).map_err(proof_error)?;
    let root = proof::root_at(&nodes, tree_size).map_err(proof_error)?;
    Ok(InclusionProofResponse {
        leaf_index: index,
        tree_size,
        root_hash: B64.encode(root),
        hashes: hashes.iter().map(|h| B64.encode(h)).collect(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyParams {
    /// the earlier tree size, at most `to`
    #[param(value_type = u64, format = "uint64", minimum = 1)]
    pub from: Option<String>,
    /// the later tree size, at most the log size (default: the log size)
    #[param(value_type = Option<u64>, format = "uint64", minimum = 1)]
    pub to: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsistencyProofResponse {
    pub from: u64,
    pub to: u64,
    /// base64 (RFC 6962 consistency proof)
    pub hashes: Vec<String>,
}

/// Proof that the tree of `to` records extends the tree of `from` records.
#[utoipa::path(get, path = "/v1/proof/consistency", tag = "Verifiable log", operation_id = "getConsistencyProof",
    params(ConsistencyParams),
    responses((status = 200, body = ConsistencyProofResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, description = "No verifiable log is configured (`not_configured`)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_consistency_proof(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Params(p): Params<ConsistencyParams>,
) -> ApiResult<Json<ConsistencyProofResponse>> {
    log_of(&state)?;
    let from = parse_u64("from", p.from.as_deref())?
        .ok_or_else(|| ApiError::bad_request("invalid_query", "from is required"))?;
    let size = log_size(state.store.as_ref(), &caller.tenant_id).await?;
    let to = parse_u64("to", p.to.as_deref())?.unwrap_or(size);
    if from == 0 || from > to || to > size {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("need 1 <= from <= to <= {size} (the log size); got from {from}, to {to}"),
        ));
    }
    let nodes = fetch(
        state.store.as_ref(),
        &caller.tenant_id,
        proof::consistency_proof_nodes(from, to),
    )
    .await?;
    let hashes = proof::consistency_proof(&nodes, from, to).map_err(proof_error)?;
    Ok(Json(ConsistencyProofResponse {
        from,
        to,
        hashes: hashes.iter().map(|h| B64.encode(h)).collect(),
    }))
}
