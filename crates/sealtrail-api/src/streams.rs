//! Log streams (issue 17; this part: webhooks, embedded mode): every committed record of a
//! tenant delivered to a destination the tenant's admin registered, in sequence order, at
//! least once, with the checkpoint that covers each batch.
//!
//! - **API** (`admin` scope): `POST /v1/destinations` `{"type":"webhook","url":"https://…"}`
//!   answers `201` with the signing secret, shown this once; `GET /v1/destinations[/{id}]`
//!   (cursor, lag, status, last error); `DELETE /v1/destinations/{id}`;
//!   `POST /v1/destinations/{id}/resume` (optionally `{"from_sequence": N}`).
//! - **A delivery** is `POST` of `{"tenant_id","events":[records…],"checkpoint":"<signed
//!   note>"}` with `Sealtrail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>`; any `2xx` acknowledges the batch. The records are as committed (with
//!   `hash`, `prev_hash`, `sequence_number`), so a receiver can check the chain itself,
//!   and the checkpoint (signed after the batch's last record) lets it check the tree.
//! - **Order and the cursor.** One task per destination sends one batch at a time, from
//!   the record after its cursor (`delivered_through`, stored with the key table). The
//!   cursor moves, durably, only after the receiver acknowledged the batch. A crash
//!   between the acknowledgement and the cursor write sends that batch again: receivers
//!   see each record at least once, and a duplicate only from the last unacknowledged
//!   batch (they can drop what is at or below the last sequence number they kept).
//! - **Failures.** A failed attempt (no answer within `stream.request_timeout`, a non-2xx,
//!   a refused connection) is retried after a doubling wait with jitter, 1 s to 60 s, or
//!   the receiver's `Retry-After` if longer. A destination failing for longer than
//!   `stream.pause_after` is paused (never dropped): its status says so and why, and
//!   `POST …/resume` starts it again from its cursor or from any sequence number.
//!   Ingest never waits for a destination: a slow or dead receiver only grows its lag.
//! - **Targets.** `https://` only, to public addresses: loopback, private, link-local,
//!   shared, documentation and other special-purpose addresses are refused when the
//!   destination is registered and again at every connection (the resolver drops them,
//!   so a DNS answer that changes cannot point a delivery inward). `stream.allow_private`
//!   allows them and plain `http://` (local receivers, tests). Redirects are not followed.
//! - **The secret** is kept sealed (ChaCha20-Poly1305) with a key the server keeps beside
//!   its data (`<data_dir>/stream-secrets.key`); it is returned once, at creation, never
//!   listed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use sealtrail_store::{DeliveryState, Destination, StoreError, now_micros};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::AppState;
use crate::auth::{Admin, Authenticated};
use crate::body::{parse_object, read_bytes};
use crate::error::{ApiError, ApiResult};
use crate::ingest::new_id;

/// The `[stream]` settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Allow loopback, private and other special-purpose targets, and plain `http://`.
    pub allow_private: bool,
    /// How long a destination may fail before it is paused.
    pub pause_after: Duration,
    /// Most records in one delivery.
    pub max_batch: usize,
    /// How long one delivery may take.
    pub request_timeout: Duration,
    /// PEM certificates trusted as roots for destinations, besides the public web roots
    /// (a private CA, a test CA).
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            pause_after: Duration::from_secs(3600),
            max_batch: 500,
            request_timeout: Duration::from_secs(10),
            extra_roots_pem: None,
        }
    }
}

/// The log streams of a server: settings, the secret box, the HTTP client and the running
/// delivery tasks.
pub struct Streams {
    config: StreamConfig,
    secrets: ChaCha20Poly1305,
    http: reqwest::Client,
    tasks: Mutex<HashMap<(String, String), tokio::task::JoinHandle<()>>>,
    /// Held by the reconciler while it reads the destinations and starts tasks, and by
    /// `resume` and `delete` while they stop a task and change its destination: without
    /// it, a task started from a state read before the change would write its old cursor
    /// over the new one.
    manage: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
}

impl Streams {
    /// `key`: the 32-byte key that seals the destinations' secrets.
    pub fn new(config: StreamConfig, key: [u8; 32]) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &config.extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("stream.ca_file holds no PEM certificate: {e}"))?;
            if roots.is_empty() {
                return Err("stream.ca_file holds no PEM certificate".into());
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let http = builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .user_agent(concat!("sealtrail/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private,
            }))
            .build()
            .map_err(|e| format!("cannot build the stream client: {e}"))?;
        Ok(Self {
            secrets: ChaCha20Poly1305::new(&key.into()),
            config,
            http,
            tasks: Mutex::new(HashMap::new()),
            manage: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn seal(&self, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let mut out = nonce.to_vec();
        out.extend(
            self.secrets
                .encrypt(Nonce::from_slice(&nonce), secret)
                .expect("sealing cannot fail"),
        );
        out
    }

    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < 12 {
            return Err("the sealed secret is too short".into());
        }
        self.secrets
            .decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..])
            .map_err(|_| {
                "the secret cannot be opened with this server's stream key (stream-secrets.key replaced?)".into()
            })
    }

    /// Stops the delivery task of a destination (before its state is changed under it).
    fn stop(&self, tenant: &str, id: &str) {
        if let Some(task) = self
            .tasks
            .lock()
            .expect("tasks lock")
            .remove(&(tenant.to_string(), id.to_string()))
        {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------- targets

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

/// Checks a destination URL: its scheme, and that it names a host that resolves (to
/// public addresses only, unless `allow_private`).
pub async fn check_target(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => {
            return Err("plain http:// is refused: the events would cross the network in clear; use https:// (stream.allow_private allows http for local receivers)".into());
        }
        other => return Err(format!("the scheme must be https, not {other}")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "credentials in the URL are refused; the signature authenticates the sender".into(),
        );
    }
    let host = parsed
        .host_str()
        .ok_or("the URL names no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    if !allow_private && let Some(inner) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, which is not a public address: refused (stream.allow_private allows local and private receivers)",
            inner.ip()
        ));
    }
    Ok(parsed)
}

/// Resolves a destination's host for a connection, dropping non-public addresses unless
/// allowed: a DNS answer cannot point a delivery inward after the URL was checked.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} has no public address", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

// ---------------------------------------------------------------- API

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(rename = "type")]
    kind: String,
    url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    from_sequence: Option<u64>,
}

/// A destination as the API shows it (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub created_at: String,
    /// `delivering` (caught up or sending), `failing` (retrying), or `paused`.
    pub status: &'static str,
    /// The last sequence number the receiver acknowledged (0: none yet).
    pub delivered_through: u64,
    /// Committed records not yet acknowledged.
    pub lag: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
}

/// `201` to a new destination: its view and, this once, its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedDestination {
    #[serde(flatten)]
    pub destination: DestinationView,
    /// The HMAC-SHA256 key of `Sealtrail-Signature`, hex; shown only here.
    pub secret: String,
}

fn streams_of(state: &AppState) -> ApiResult<&Arc<Streams>> {
    state.streams.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "log streams run in embedded mode (sealtrail serve) for now",
        )
    })
}

fn destination_error(err: StoreError) -> ApiError {
    match err {
        StoreError::Unsupported(what) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            format!("this store keeps no {what}"),
        ),
        other => other.into(),
    }
}

async fn view(state: &AppState, d: &Destination) -> ApiResult<DestinationView> {
    let head = state
        .store
        .heads(vec![d.tenant_id.clone()])
        .await?
        .get(&d.tenant_id)
        .map_or(0, |h| h.sequence_number);
    Ok(DestinationView {
        id: d.id.clone(),
        kind: d.kind.clone(),
        url: d.url.clone(),
        created_at: d.created_at.clone(),
        status: if d.state.paused {
            "paused"
        } else if d.state.failing_since.is_some() {
            "failing"
        } else {
            "delivering"
        },
        delivered_through: d.state.delivered_through,
        lag: head.saturating_sub(d.state.delivered_through),
        last_error: d.state.last_error.clone(),
        failing_since: d.state.failing_since.clone(),
        last_success_at: d.state.last_success_at.clone(),
    })
}

async fn find(state: &AppState, tenant: &str, id: &str) -> ApiResult<Destination> {
    state
        .store
        .destinations(Some(tenant))
        .await
        .map_err(destination_error)?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no destination {id:?}")))
}

/// `POST /v1/destinations`: registers a webhook; `201` with its secret (shown once).
pub async fn create_destination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(caller, _): Authenticated<Admin>,
    body: Body,
) -> ApiResult<(StatusCode, Json<CreatedDestination>)> {
    let streams = streams_of(&state)?;
    let bytes = read_bytes(&headers, body, 4096, state.config.body_read_timeout).await?;
    let body: CreateBody = parse_object(&bytes, "{\"type\": \"webhook\", \"url\": \"https://…\"}")?;
    if body.kind != "webhook" {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "type must be \"webhook\" (Splunk HEC and syslog are not built yet), not {:?}",
                body.kind
            ),
        ));
    }
    let url = check_target(&body.url, streams.config.allow_private)
        .await
        .map_err(|m| ApiError::bad_request("invalid_destination", m))?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the OS random source");
    let destination = Destination {
        id: format!("dst_{}", new_id().replace('-', "")),
        tenant_id: caller.tenant_id.clone(),
        kind: body.kind,
        url: url.to_string(),
        sealed_secret: streams.seal(&secret),
        created_at: sealtrail_core::time::format_micros(now_micros()),
        state: DeliveryState::default(),
    };
    state
        .store
        .create_destination(destination.clone())
        .await
        .map_err(destination_error)?;
    streams.wake.notify_one();
    tracing::info!(tenant = %caller.tenant_id, id = %destination.id, url = %destination.url, "log-stream destination created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedDestination {
            destination: view(&state, &destination).await?,
            secret: hex::encode(secret),
        }),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationList {
    pub destinations: Vec<DestinationView>,
}

/// `GET /v1/destinations`: the caller's tenant's destinations and their delivery status.
pub async fn list_destinations(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Admin>,
) -> ApiResult<Json<DestinationList>> {
    streams_of(&state)?;
    let mut out = Vec::new();
    for d in state
        .store
        .destinations(Some(&caller.tenant_id))
        .await
        .map_err(destination_error)?
    {
        out.push(view(&state, &d).await?);
    }
    Ok(Json(DestinationList { destinations: out }))
}

/// `GET /v1/destinations/{id}`.
pub async fn get_destination(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Admin>,
    Path(id): Path<String>,
) -> ApiResult<Json<DestinationView>> {
    streams_of(&state)?;
    let d = find(&state, &caller.tenant_id, &id).await?;
    Ok(Json(view(&state, &d).await?))
}

/// `DELETE /v1/destinations/{id}`: stops delivery and forgets the destination; `204`.
pub async fn delete_destination(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Admin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let streams = streams_of(&state)?;
    let _managing = streams.manage.lock().await;
    streams.stop(&caller.tenant_id, &id);
    if state
        .store
        .delete_destination(&caller.tenant_id, &id)
        .await
        .map_err(destination_error)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no destination {id:?}")))
    }
}

/// `POST /v1/destinations/{id}/resume` (body optional: `{"from_sequence": N}`): delivery
/// starts again, from the cursor or from record N.
pub async fn resume_destination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(caller, _): Authenticated<Admin>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<DestinationView>> {
    let streams = streams_of(&state)?;
    let bytes = read_bytes(&headers, body, 4096, state.config.body_read_timeout).await?;
    let body: ResumeBody = if bytes.is_empty() {
        ResumeBody::default()
    } else {
        parse_object(&bytes, "{\"from_sequence\": N} or empty")?
    };
    let managing = streams.manage.lock().await;
    let mut d = find(&state, &caller.tenant_id, &id).await?;
    streams.stop(&caller.tenant_id, &id);
    if let Some(from) = body.from_sequence {
        if from == 0 {
            return Err(ApiError::bad_request(
                "invalid_field",
                "from_sequence starts at 1",
            ));
        }
        d.state.delivered_through = from - 1;
    }
    d.state.paused = false;
    d.state.failing_since = None;
    state
        .store
        .record_delivery(&d.tenant_id, &d.id, d.state.clone())
        .await
        .map_err(destination_error)?;
    drop(managing);
    streams.wake.notify_one();
    Ok(Json(view(&state, &d).await?))
}

// ---------------------------------------------------------------- delivery

/// Runs the server's log streams until shutdown: one delivery task per destination that
/// is not paused, started as destinations appear or resume.
pub async fn run_streams(state: AppState) {
    let Some(streams) = state.streams.clone() else {
        return;
    };
    let mut shutdown = state.shutdown.clone();
    loop {
        let managing = streams.manage.lock().await;
        match state.store.destinations(None).await {
            Ok(all) => {
                let mut tasks = streams.tasks.lock().expect("tasks lock");
                tasks.retain(|_, task| !task.is_finished());
                for d in all {
                    let key = (d.tenant_id.clone(), d.id.clone());
                    if d.state.paused || tasks.contains_key(&key) {
                        continue;
                    }
                    tasks.insert(
                        key,
                        tokio::spawn(deliver(state.clone(), streams.clone(), d)),
                    );
                }
            }
            Err(StoreError::Unsupported(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log-stream destinations; retrying")
            }
        }
        drop(managing);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = streams.wake.notified() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            for (_, task) in streams.tasks.lock().expect("tasks lock").drain() {
                task.abort();
            }
            return;
        }
    }
}

/// Why an attempt failed, and how long the receiver asked to wait.
struct Failure {
    message: String,
    retry_after: Option<Duration>,
}

/// Delivers one destination's records in order until it is deleted, paused or the
/// server stops.
async fn deliver(state: AppState, streams: Arc<Streams>, mut d: Destination) {
    let gauge = metrics::gauge!("sealtrail_stream_lag", "destination" => d.id.clone());
    let secret = match streams.open(&d.sealed_secret) {
        Ok(secret) => secret,
        Err(message) => {
            pause(&state, &mut d, message).await;
            return;
        }
    };
    let mut commits = state.commits.as_ref().map(|c| c.subscribe());
    let fresh_backoff =
        || sealtrail_core::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut backoff = fresh_backoff();
    loop {
        let head = match state.store.heads(vec![d.tenant_id.clone()]).await {
            Ok(heads) => heads.get(&d.tenant_id).map_or(0, |h| h.sequence_number),
            Err(e) => {
                tracing::warn!(error = %e, "log stream: cannot read the head; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        gauge.set(head.saturating_sub(d.state.delivered_through) as f64);
        if head <= d.state.delivered_through {
            // caught up: wait for a commit (embedded) or poll
            match commits.as_mut() {
                Some(rx) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
            continue;
        }
        let result = attempt(&state, &streams, &d, &secret).await;
        let now = sealtrail_core::time::format_micros(now_micros());
        match result {
            Ok(last) => {
                backoff = fresh_backoff();
                let sent = last - d.state.delivered_through;
                d.state = DeliveryState {
                    delivered_through: last,
                    paused: false,
                    failing_since: None,
                    last_error: None,
                    last_success_at: Some(now),
                };
                metrics::counter!("sealtrail_stream_delivered_total").increment(sent);
                if !record(&state, &d).await {
                    return;
                }
            }
            Err(failure) => {
                metrics::counter!("sealtrail_stream_failures_total").increment(1);
                let since = d.state.failing_since.get_or_insert(now).clone();
                d.state.last_error = Some(failure.message.clone());
                let failing_for = sealtrail_core::time::parse_rfc3339(&since)
                    .map(|t| Duration::from_micros((now_micros() - t).max(0) as u64))
                    .unwrap_or_default();
                if failing_for >= streams.config.pause_after {
                    let why = format!(
                        "failing since {since} (longer than stream.pause_after): {}",
                        failure.message
                    );
                    pause(&state, &mut d, why).await;
                    return;
                }
                if !record(&state, &d).await {
                    return;
                }
                let wait = jitter(backoff.wait()).max(failure.retry_after.unwrap_or_default());
                tracing::warn!(destination = %d.id, error = %failure.message, retry_in = ?wait, "log stream delivery failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Sends the records after the cursor (one batch); the last sequence number sent.
async fn attempt(
    state: &AppState,
    streams: &Streams,
    d: &Destination,
    secret: &[u8],
) -> Result<u64, Failure> {
    let fail = |message: String| Failure {
        message,
        retry_after: None,
    };
    let rows = state
        .store
        .scan_chain(
            &d.tenant_id,
            d.state.delivered_through,
            streams.config.max_batch,
        )
        .await
        .map_err(|e| fail(format!("reading the records: {e}")))?;
    let Some(last) = rows.last().map(|r| r.sequence_number) else {
        return Err(fail(
            "no records after the cursor (removed by retention?)".into(),
        ));
    };
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        events.push(row.record().map_err(|e| fail(e.to_string()))?);
    }
    let checkpoint = match &state.tlog {
        Some(tlog) => Some(
            tlog.latest_cosigned(
                state.store.as_ref(),
                &d.tenant_id,
                true,
                None,
                Duration::ZERO,
            )
            .await
            .map_err(|e| fail(format!("signing the checkpoint: {}", e.message)))?,
        ),
        None => None,
    };
    let body = serde_json::to_vec(&serde_json::json!({
        "tenant_id": d.tenant_id,
        "events": events,
        "checkpoint": checkpoint,
    }))
    .expect("records serialize");
    let t = now_micros() / 1_000_000;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    let resp = streams
        .http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("sealtrail-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| fail(format!("{e}")))?;
    if resp.status().is_success() {
        return Ok(last);
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    Err(Failure {
        message: format!("the receiver answered {}", resp.status()),
        retry_after,
    })
}

/// Stores `d`'s state; false when the destination is gone (the task then ends).
async fn record(state: &AppState, d: &Destination) -> bool {
    loop {
        match state
            .store
            .record_delivery(&d.tenant_id, &d.id, d.state.clone())
            .await
        {
            Ok(there) => return there,
            Err(e) => {
                tracing::warn!(error = %e, "log stream: cannot store the cursor; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn pause(state: &AppState, d: &mut Destination, why: String) {
    tracing::error!(destination = %d.id, tenant = %d.tenant_id, "log stream paused: {why}");
    metrics::counter!("sealtrail_stream_paused_total").increment(1);
    d.state.paused = true;
    d.state.last_error = Some(why);
    record(state, d).await;
}

/// A wait between 50% and 100% of `wait`, so receivers coming back are not hit at once.
fn jitter(wait: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    wait / 2 + wait.mul_f64(f64::from(byte[0]) / 510.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn targets_are_checked_before_anything_is_sent() {
        for (url, why) in [
            ("http://127.0.0.1:9/x", "plain http://"),
            ("https://127.0.0.1:9/x", "not a public address"),
            ("https://10.0.0.7/x", "not a public address"),
            ("https://[::1]/x", "not a public address"),
            ("https://localhost/x", "not a public address"),
            ("ftp://example.com/x", "scheme must be https"),
            ("https://user:pw@example.com/x", "credentials"),
            ("not a url", "is not a URL"),
        ] {
            let err = check_target(url, false).await.unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        assert!(check_target("http://127.0.0.1:9/x", true).await.is_ok());
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key() {
        let a = Streams::new(StreamConfig::default(), [7; 32]).unwrap();
        let b = Streams::new(StreamConfig::default(), [8; 32]).unwrap();
        let sealed = a.seal(b"secret");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(a.open(&sealed).unwrap(), b"secret");
        assert!(b.open(&sealed).is_err());
        assert_ne!(a.seal(b"secret"), sealed, "a fresh nonce each time");
    }
}
