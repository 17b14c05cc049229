//! Retention (issue 15): a tenant's records are kept for `days` and/or the last `events`,
//! then removed, while every proof stays valid.
//!
//! **How a removal happens.** The pruner ([`prune_tenant`], run every
//! `retention.interval` by [`run_pruner`]) works out a tenant's new boundary — the first
//! record to keep — from its policy (the tenant's own, set with `PUT /v1/retention` or
//! `sealtrail retention set`, else the configured default), optionally archives the
//! records before it (`retention.archive_dir`), then appends a **prune event** to the
//! tenant's chain, synchronously, like any event: action `sealtrail.retention.prune`,
//! actor `{"id":"sealtrail.retention","type":"system"}`, resource `{"type":"chain","id":
//! <tenant>}`, metadata `{"before_sequence_number": B, "policy": {…}}`. The store removes
//! the records before `B` when it commits that event (`Store::prunes`; SQLite: in the same
//! transaction; fjall: when it indexes it, see `Trees::prune`; Scylla: the chainer that
//! derives it, see `sealtrail-scylla`'s `retention.rs`) and keeps the tree, so
//! inclusion proofs of kept records and consistency
//! proofs between any checkpoints still come out.
//!
//! **Distributed mode.** Every gateway runs the pruner, but only the one holding the
//! store's `retention` lease works ([`run_pruner`]); should two ever decide on the same
//! boundary, the prune event's id (`sealtrail.retention.prune-<boundary>`) makes the second
//! a conflict, and a prune event naming an earlier boundary than the current removes
//! nothing.
//!
//! **Crash windows.** Before the prune event commits, nothing is removed (an archive file
//! written for it is written again next time). Once it commits, the removal is the
//! store's: in the same transaction (SQLite), or derived from the committed event at the
//! restart (as a redaction's erasure is). So a SIGKILL anywhere leaves either the old
//! boundary or the new one, never a removal the chain does not record.
//!
//! **Verification from the boundary.** `GET /v1/verify` walks from `B` and reports
//! `retained_from`; the walk requires the prune event naming `B` (else
//! `boundary_unconfirmed`). The evidence pack starts at `B` and carries the tree over the
//! removed records (`proofs.json` `retention`), so `sealtrail verify` checks the kept
//! records against the signed checkpoint's root.

use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use sealtrail_core::pack;
use sealtrail_core::record::{PRUNE_ACTION, Record, prune_input};
use sealtrail_store::{RetentionPolicy, StoreError, now_micros};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Admin, Authenticated};
use crate::body::{parse_object, read_bytes};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ingest::{EventOutcome, ingest_validated, new_id};

/// Most records one prune event removes: a larger backlog is removed over several
/// events (runs), so no single store transaction grows without bound.
pub const MAX_PRUNE_RECORDS: u64 = 100_000;

/// The configured retention (`retention_*` keys).
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// The policy of tenants without their own.
    pub default: RetentionPolicy,
    /// How often the pruner runs.
    pub interval: Duration,
    /// Where the records are written before they are removed: one retention archive (an
    /// evidence pack of the removed slice, `sealtrail verify` checks it) per prune event.
    pub archive_dir: Option<PathBuf>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            default: RetentionPolicy::default(),
            interval: Duration::from_secs(3600),
            archive_dir: None,
        }
    }
}

/// A tenant's retention, as `GET /v1/retention` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetentionStatus {
    pub tenant_id: String,
    /// The policy in force: the tenant's own, else the server's default.
    #[schema(value_type = RetentionPolicyBody)]
    pub policy: RetentionPolicy,
    /// `tenant` (set for this tenant) or `default` (the server's configuration).
    pub source: &'static str,
    /// The first record kept: the records before it were removed (1: none).
    pub retained_from: u64,
}

/// A retention policy: neither member set keeps records forever.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicyBody {
    /// Keep records for this many days (1 to 36500), by their `created_at`.
    #[serde(default)]
    pub days: Option<u32>,
    /// Keep the last this many records (1 or more).
    #[serde(default)]
    pub events: Option<u64>,
}

fn not_supported() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "this server's store does not remove records, so it keeps no retention policy",
    )
}

/// The policy in force for `tenant` and where it comes from.
pub async fn policy_of(
    state: &AppState,
    tenant: &str,
) -> Result<(RetentionPolicy, &'static str), StoreError> {
    let own = state
        .store
        .retention_policies()
        .await?
        .into_iter()
        .find(|(t, _)| t == tenant);
    Ok(match own {
        Some((_, p)) => (p, "tenant"),
        None => (state.config.retention.default, "default"),
    })
}

async fn status(state: &AppState, tenant: &str) -> ApiResult<RetentionStatus> {
    let (policy, source) = policy_of(state, tenant).await?;
    Ok(RetentionStatus {
        tenant_id: tenant.to_string(),
        policy,
        source,
        retained_from: state.store.retained_from(tenant).await?,
    })
}

/// The caller's tenant's retention: the policy in force and the boundary.
#[utoipa::path(get, path = "/v1/retention", tag = "Retention", operation_id = "getRetention",
    responses((status = 200, body = RetentionStatus), (status = 401, body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_retention(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Admin>,
) -> ApiResult<Json<RetentionStatus>> {
    status(&state, &caller.tenant_id).await.map(Json)
}

/// Sets the caller's tenant's own retention policy (`{}` keeps records forever,
/// whatever the server's default).
///
/// Records past the policy are removed by the next pruner run (`retention.interval`),
/// which appends a `sealtrail.retention.prune` event to the chain first.
#[utoipa::path(put, path = "/v1/retention", tag = "Retention", operation_id = "setRetention",
    request_body(content = RetentionPolicyBody),
    responses((status = 200, body = RetentionStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 501, description = "This server's store does not remove records (every store sealtrail ships does)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn set_retention(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(caller, _): Authenticated<Admin>,
    body: Body,
) -> ApiResult<Json<RetentionStatus>> {
    let bytes = read_bytes(&headers, body, 1024, state.config.body_read_timeout).await?;
    let body: RetentionPolicyBody = parse_object(
        &bytes,
        "{\"days\": N, \"events\": N} (either may be left out)",
    )?;
    let policy = checked_policy(body.days, body.events)
        .map_err(|m| ApiError::bad_request("invalid_field", m))?;
    if !state.store.prunes() {
        return Err(not_supported());
    }
    state
        .store
        .set_retention_policy(&caller.tenant_id, Some(policy))
        .await?;
    tracing::info!(
        tenant = caller.tenant_id,
        key = caller.key_id,
        ?policy,
        "retention policy set"
    );
    status(&state, &caller.tenant_id).await.map(Json)
}

/// Removes the caller's tenant's own policy: the server's default applies again.
#[utoipa::path(delete, path = "/v1/retention", tag = "Retention", operation_id = "clearRetention",
    responses((status = 200, body = RetentionStatus), (status = 401, body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 501, description = "This server's store does not remove records (every store sealtrail ships does)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn clear_retention(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Admin>,
) -> ApiResult<Json<RetentionStatus>> {
    if !state.store.prunes() {
        return Err(not_supported());
    }
    state
        .store
        .set_retention_policy(&caller.tenant_id, None)
        .await?;
    status(&state, &caller.tenant_id).await.map(Json)
}

/// A policy from its members, or what is wrong with them.
pub fn checked_policy(days: Option<u32>, events: Option<u64>) -> Result<RetentionPolicy, String> {
    if let Some(d) = days
        && !(1..=36_500).contains(&d)
    {
        return Err(format!("days must be 1 to 36500, not {d}"));
    }
    if events == Some(0) {
        return Err("events must be at least 1".into());
    }
    Ok(RetentionPolicy { days, events })
}

/// The first record `tenant` keeps under `policy` at `now` (microseconds), given its
/// head and current boundary; at most [`MAX_PRUNE_RECORDS`] past the boundary, never past
/// the head (the last record always stays).
async fn boundary(
    state: &AppState,
    tenant: &str,
    policy: RetentionPolicy,
    head: u64,
    current: u64,
    now: i64,
) -> ApiResult<u64> {
    let mut keep_from = current;
    if let Some(events) = policy.events {
        // The prune events at the chain's end do not count: a tenant that writes nothing
        // else would otherwise lose a record and gain a prune event at every run. All of
        // them, not only the last: a prune event that lands behind events which arrived
        // while its boundary was worked out is followed by a second one, and counting
        // that first one would then move the boundary by one at every run, for ever.
        let counted = head - trailing_prunes(state, tenant, head).await?;
        keep_from = keep_from.max(counted.saturating_sub(events) + 1);
    }
    if let Some(days) = policy.days {
        let cutoff = sealtrail_core::time::format_micros(now - i64::from(days) * 86_400_000_000);
        // The first record created at or after the cutoff (records are chained in the
        // order they arrive, so `created_at` grows along the chain).
        let mut after = current.saturating_sub(1);
        let limit = current + MAX_PRUNE_RECORDS;
        'scan: while after < head.min(limit) {
            let rows = state.store.scan_chain(tenant, after, 1000).await?;
            let Some(last) = rows.last() else { break };
            after = last.sequence_number;
            for row in &rows {
                if row.record()?.created_at >= cutoff {
                    keep_from = keep_from.max(row.sequence_number);
                    break 'scan;
                }
                keep_from = keep_from.max(row.sequence_number + 1);
            }
        }
    }
    Ok(keep_from.min(head).min(current + MAX_PRUNE_RECORDS))
}

/// How many records at the end of `tenant`'s chain (whose head is `head`) are prune events.
async fn trailing_prunes(state: &AppState, tenant: &str, head: u64) -> ApiResult<u64> {
    const STEP: u64 = 16;
    let mut n = 0;
    while n < head {
        let upto = head - n;
        let from = upto.saturating_sub(STEP);
        let rows = state
            .store
            .scan_chain(tenant, from, (upto - from) as usize)
            .await?;
        for r in rows.iter().rev() {
            if !r
                .canonical
                .starts_with(sealtrail_core::record::PRUNE_PREFIX)
            {
                return Ok(n);
            }
            n += 1;
        }
        if rows.len() as u64 != upto - from {
            // Removed by an earlier prune: nothing before it counts.
            break;
        }
    }
    Ok(n)
}

/// Applies `policy` (`tenant`'s, in force) once: the prune event it appended and how many
/// records it removed, if any.
pub async fn prune_tenant(
    state: &AppState,
    tenant: &str,
    policy: RetentionPolicy,
    now: i64,
) -> ApiResult<Option<(Record, u64)>> {
    if policy.is_forever() {
        return Ok(None);
    }
    let Some(head) = state
        .store
        .heads(vec![tenant.to_string()])
        .await?
        .remove(tenant)
    else {
        return Ok(None);
    };
    let current = state.store.retained_from(tenant).await?;
    let before = boundary(state, tenant, policy, head.sequence_number, current, now).await?;
    if before <= current {
        return Ok(None);
    }
    if let Some(dir) = &state.config.retention.archive_dir {
        archive(state, dir, tenant, current, before).await?;
    }
    let mut described = serde_json::Map::new();
    if let Some(d) = policy.days {
        described.insert("days".into(), d.into());
    }
    if let Some(e) = policy.events {
        described.insert("events".into(), e.into());
    }
    // The id names the boundary: two pruners that decide on the same one (a lease that
    // ran out mid-run, see `run_pruner`) append one event; the second gets a conflict.
    let mut input = prune_input(tenant, before, described);
    input.id = Some(format!("{PRUNE_ACTION}-{before}"));
    let event = sealtrail_core::event::normalize(input, now, new_id)
        .map_err(|e| ApiError::internal("a prune event is invalid", e.message))?;
    let record = match ingest_validated(state, tenant.to_string(), event, now, true).await {
        Ok(EventOutcome::Committed(c)) => c.into_first().expect("one committed record"),
        Err(e) if e.code == "conflict" => {
            tracing::info!(
                tenant,
                before,
                "retention: another pruner appended this prune event"
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
        Ok(EventOutcome::Accepted(_)) => {
            return Err(ApiError::internal(
                "a sync append answered with a receipt",
                "prune",
            ));
        }
    };
    metrics::counter!("sealtrail_retention_prunes_total").increment(1);
    tracing::info!(
        tenant,
        before,
        removed = before - current,
        event = record.sequence_number,
        "retention: records before the boundary removed"
    );
    Ok(Some((record, before - current)))
}

/// Writes `tenant`'s records `from..before` as a **retention archive** — an evidence pack
/// of that slice of the log (`sealtrail_core::pack::Archive`): the records, the signed
/// checkpoint of the tree at `before - 1`, the log key, inclusion proofs of its first and
/// last records and, when `from` > 1, the tree over the records before it (in earlier
/// archives) — to `<dir>/<tenant>/records-<from>-<last>.zip` (mode 0600), durably (a
/// `.part` file, synced, then renamed), before they are removed. `sealtrail verify` checks it.
///
/// Crash windows: a crash before the rename leaves a `.part` file, never a half archive
/// under an archive's name. An archive whose prune event then does not commit (a crash, or another
/// pruner's event for the same boundary) stays; the next run archives from the same
/// first record, so its records are in the next archive too (the same file when the
/// boundary is the same).
async fn archive(
    state: &AppState,
    dir: &std::path::Path,
    tenant: &str,
    from: u64,
    before: u64,
) -> ApiResult<()> {
    use crate::export::{start_pack, write_records, zip_step};
    let last = before - 1;
    let failed = |e: String| {
        ApiError::internal(
            "cannot archive records before removing them (retention.archive_dir)",
            e,
        )
    };
    let log = state.tlog.as_deref().ok_or_else(|| {
        failed("an archive is an evidence pack: this server has no log key to sign it".into())
    })?;
    let store = state.store.clone();
    let checkpoint = log.sign_at(store.as_ref(), tenant, last).await?;
    let mut proofs = crate::export::pack_proofs(store.as_ref(), tenant, from, last).await?;
    proofs.archive = Some(pack::Archive {
        first: from,
        last,
        removed_before: before,
    });
    let proofs = serde_json::to_string_pretty(&proofs).map_err(|e| failed(e.to_string()))?;
    let key = log.verifier_key();
    let path = dir.join(tenant).join(format!("records-{from}-{last}.zip"));
    let part = path.with_extension("zip.part");
    let at = |e| failed(format!("{}: {e}", part.display()));
    let mut zip = zip_step(part.clone(), move |part| {
        std::fs::create_dir_all(part.parent().expect("a parent"))?;
        // The records' content: readable by the server's user only.
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        let mut zip = zip::ZipWriter::new(file.open(&part)?);
        start_pack(&mut zip, &checkpoint, &key, &proofs)?;
        Ok(zip)
    })
    .await
    .map_err(at)?;
    let mut after = from - 1;
    while after < last {
        let limit = (last - after).min(1000) as usize;
        let rows = state.store.scan_chain(tenant, after, limit).await?;
        let Some(end) = rows.last() else {
            return Err(failed(format!(
                "the chain ended at {after}, before record {last}"
            )));
        };
        after = end.sequence_number;
        zip = zip_step(zip, move |mut zip| {
            write_records(&mut zip, &rows)?;
            Ok(zip)
        })
        .await
        .map_err(at)?;
    }
    let (done, target) = (part.clone(), path.clone());
    zip_step(zip, move |zip| {
        let file = zip.finish()?;
        file.sync_all()?;
        std::fs::rename(&done, &target)?;
        std::fs::File::open(target.parent().expect("a parent"))?.sync_all()?;
        Ok(())
    })
    .await
    .map_err(|e| failed(format!("{}: {e}", path.display())))?;
    metrics::counter!("sealtrail_retention_archived_records_total").increment(before - from);
    tracing::info!(tenant, from, last, path = %path.display(), "retention: records archived");
    Ok(())
}

/// The lease a pruner holds while it runs (`Store::lease`): where gateways share a
/// cluster, one of them prunes.
pub const LEASE: &str = "retention";

/// Runs the pruner until `state.shutdown`: every tenant, every `interval` (the first run
/// soon after the start), while this server holds the [`LEASE`] (taken or renewed before
/// each run, for two intervals: a holder that dies is replaced within that).
pub async fn run_pruner(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    let interval = state.config.retention.interval;
    let holder = new_id();
    let ttl = (interval * 2).max(Duration::from_secs(10));
    let mut next = tokio::time::Instant::now() + Duration::from_secs(5).min(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        next = tokio::time::Instant::now() + interval;
        match state.store.lease(LEASE, &holder, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("another server holds the retention lease");
                continue;
            }
            Err(e) => {
                metrics::counter!("sealtrail_retention_failures_total").increment(1);
                tracing::warn!(error = %e, "cannot take the retention lease; retrying at the next interval");
                continue;
            }
        }
        match prune_all(&state).await {
            Ok(n) if n > 0 => tracing::info!(tenants = n, "retention run done"),
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("sealtrail_retention_failures_total").increment(1);
                tracing::warn!(error = %e.message, "retention run failed; retrying at the next interval");
            }
        }
    }
}

/// One pruner run over every tenant: how many were pruned.
pub async fn prune_all(state: &AppState) -> ApiResult<usize> {
    if !state.store.prunes() {
        return Ok(0);
    }
    let default = state.config.retention.default;
    // The tenants' own policies, read once per run.
    let own: std::collections::HashMap<String, RetentionPolicy> = state
        .store
        .retention_policies()
        .await?
        .into_iter()
        .collect();
    let tenants: Vec<String> = if default.is_forever() {
        // Only tenants with a policy of their own.
        own.iter()
            .filter(|(_, p)| !p.is_forever())
            .map(|(t, _)| t.clone())
            .collect()
    } else {
        state.store.tenants().await?
    };
    let mut pruned = 0;
    for tenant in tenants {
        let policy = own.get(&tenant).copied().unwrap_or(default);
        // Several events for a large backlog (each removes at most MAX_PRUNE_RECORDS).
        while let Some((_, removed)) = prune_tenant(state, &tenant, policy, now_micros()).await? {
            pruned += 1;
            if removed < MAX_PRUNE_RECORDS || *state.shutdown.borrow() {
                break;
            }
        }
        if *state.shutdown.borrow() {
            break;
        }
    }
    Ok(pruned)
}
