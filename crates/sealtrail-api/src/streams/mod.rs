//! Log streams (issue 17): every committed record of a tenant delivered to a destination
//! the tenant's admin registered, in sequence order, at least once, with the checkpoint
//! that covers each batch. In embedded mode the server delivers; in distributed mode the
//! gateways manage destinations and each chainer delivers the tenants of the partitions it
//! holds ([`Deliverer::owns`]; a task claims its destination first, see
//! `Store::claim_delivery`).
//!
//! - **API** (`admin` scope; REST here, the same operations over gRPC and `sealtrail
//!   destinations`): `POST /v1/destinations` with `{"type":"webhook","url":"https://…"}`,
//!   `{"type":"splunk_hec","url":"https://splunk:8088","token":"…"}` or
//!   `{"type":"syslog","host":"logs.example:6514"}` (TLS; `"tls": false` for plain TCP)
//!   answers `201` (a webhook's signing secret shown this once); `GET
//!   /v1/destinations[/{id}]` (cursor, lag, status, last error); `DELETE
//!   /v1/destinations/{id}`; `POST /v1/destinations/{id}/resume` (optionally
//!   `{"from_sequence": N}`).
//! - **A delivery** carries a run of the chain, as committed (with `hash`, `prev_hash`,
//!   `sequence_number`), so a receiver can check the chain itself, and the checkpoint
//!   signed after the batch's last record, so it can check the tree. How each type sends
//!   and acknowledges a batch: [`sink`]. A webhook's is `POST` of
//!   `{"tenant_id","events":[records…],"checkpoint":"<signed note>"}` with
//!   `Sealtrail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`;
//!   any `2xx` acknowledges the batch.
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
//! - **Targets.** `https://` (or syslog in TLS) only, to public addresses: loopback,
//!   private, link-local, shared, documentation and other special-purpose addresses are
//!   refused when the destination is registered and again at every connection (the
//!   resolver drops them, so a DNS answer that changes cannot point a delivery inward).
//!   `stream.allow_private` allows them, plain `http://` and syslog over plain TCP (local
//!   receivers, tests). Redirects are not followed.
//! - **Secrets** (a webhook's key, a Splunk token) are kept sealed (ChaCha20-Poly1305)
//!   with a key the server keeps beside its data (`<data_dir>/stream-secrets.key`); a
//!   webhook's is returned once, at creation; none is ever listed.
//! - **Status** per destination in the API and in `/metrics`: `sealtrail_stream_lag`,
//!   `sealtrail_stream_paused` (1 while paused), `sealtrail_stream_failing` (1 while
//!   retrying), `sealtrail_stream_last_success_seconds` (Unix time), and the counters
//!   `sealtrail_stream_delivered_total` and `sealtrail_stream_failures_total`, each
//!   labelled with `tenant` and `destination`.

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
use sealtrail_log::CommitSignal;
use sealtrail_store::{DeliveryState, Destination, Store, StoreError, now_micros};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Admin, Authenticated};
use crate::body::{parse_object, read_bytes};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ingest::new_id;
use crate::tlog::TransparencyLog;

pub mod sink;
use sink::{Batch, Sink, Spec};

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
    /// TLS for syslog: the public web roots and `stream.ca_file`'s.
    tls: Arc<rustls::ClientConfig>,
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
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut builder = reqwest::Client::builder();
        let mut tls_roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(pem) = &config.extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("stream.ca_file holds no PEM certificate: {e}"))?;
            if roots.is_empty() {
                return Err("stream.ca_file holds no PEM certificate".into());
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("stream.ca_file: {e}"))?;
                tls_roots
                    .add(cert)
                    .map_err(|e| format!("stream.ca_file: {e}"))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(tls_roots)
        .with_no_client_auth();
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
            tls: Arc::new(tls),
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
    check_host(&host, port, allow_private).await?;
    Ok(parsed)
}

/// Checks that `host` resolves, to public addresses only unless `allow_private`.
pub async fn check_host(host: &str, port: u16, allow_private: bool) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
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
    Ok(())
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

/// A destination to register. Each type takes its own fields: `webhook` a `url`;
/// `splunk_hec` a `url` (the collector's; without a path it gets
/// `/services/collector/event`) and a `token`; `syslog` a `host` (`host:port`) and
/// optionally `tls` (default true; false is refused unless `stream.allow_private`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^(webhook|splunk_hec|syslog)$")]
    kind: String,
    #[schema(example = "https://hooks.example/audit")]
    url: Option<String>,
    token: Option<String>,
    #[schema(example = "logs.example:6514")]
    host: Option<String>,
    tls: Option<bool>,
}

/// Where to resume (empty: from the cursor).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// Deliver again from this sequence number.
    #[schema(minimum = 1)]
    from_sequence: Option<u64>,
}

/// A destination as the API shows it (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationView {
    pub id: String,
    /// `webhook`, `splunk_hec` or `syslog`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it delivers: the webhook's or the collector's URL, or
    /// `syslog+tls://host:port` (`syslog+tcp://` without TLS).
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
    /// A webhook's HMAC-SHA256 key of `Sealtrail-Signature`, hex; shown only here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn streams_of(state: &AppState) -> ApiResult<&Arc<Streams>> {
    state.streams.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "this server runs no log streams",
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

/// Registers a destination for `tenant` (any transport): checks it, stores it with its
/// secret sealed, wakes the reconciler.
pub async fn create(state: &AppState, tenant: &str, spec: Spec) -> ApiResult<CreatedDestination> {
    let streams = streams_of(state)?;
    let prepared = spec
        .prepare(streams.config.allow_private)
        .await
        .map_err(|(code, message)| ApiError::bad_request(code, message))?;
    let destination = Destination {
        id: format!("dst_{}", new_id().replace('-', "")),
        tenant_id: tenant.to_string(),
        kind: spec.kind,
        url: prepared.url,
        sealed_secret: streams.seal(&prepared.secret),
        created_at: sealtrail_core::time::format_micros(now_micros()),
        state: DeliveryState::default(),
    };
    state
        .store
        .create_destination(destination.clone())
        .await
        .map_err(destination_error)?;
    streams.wake.notify_one();
    tracing::info!(tenant = %tenant, id = %destination.id, kind = %destination.kind, url = %destination.url, "log-stream destination created");
    Ok(CreatedDestination {
        destination: view(state, &destination).await?,
        secret: prepared.shown,
    })
}

/// The destinations of `tenant` and their delivery status.
pub async fn list(state: &AppState, tenant: &str) -> ApiResult<DestinationList> {
    streams_of(state)?;
    let mut out = Vec::new();
    for d in state
        .store
        .destinations(Some(tenant))
        .await
        .map_err(destination_error)?
    {
        out.push(view(state, &d).await?);
    }
    Ok(DestinationList { destinations: out })
}

/// One destination of `tenant`.
pub async fn get(state: &AppState, tenant: &str, id: &str) -> ApiResult<DestinationView> {
    streams_of(state)?;
    let d = find(state, tenant, id).await?;
    view(state, &d).await
}

/// Stops delivery and forgets the destination.
pub async fn delete(state: &AppState, tenant: &str, id: &str) -> ApiResult<()> {
    let streams = streams_of(state)?;
    let _managing = streams.manage.lock().await;
    streams.stop(tenant, id);
    if state
        .store
        .delete_destination(tenant, id)
        .await
        .map_err(destination_error)?
    {
        tracing::info!(tenant = %tenant, id = %id, "log-stream destination deleted");
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no destination {id:?}")))
    }
}

/// Starts delivery again (paused or not), from the cursor or from record `from`.
pub async fn resume(
    state: &AppState,
    tenant: &str,
    id: &str,
    from: Option<u64>,
) -> ApiResult<DestinationView> {
    let streams = streams_of(state)?;
    if from == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "from_sequence starts at 1",
        ));
    }
    let managing = streams.manage.lock().await;
    streams.stop(tenant, id);
    // Claim the destination from whichever task delivers it (here, or in a chainer): that
    // task's next write fails and it stops; the owner starts a new one from this state. A
    // claim or write that loses a race (a chainer claiming at that moment) is tried again
    // on a fresh read.
    let mut resumed = None;
    for _ in 0..5 {
        let mut d = find(state, tenant, id).await?;
        let generation = d.state.generation;
        d.state.generation += 1;
        if let Some(from) = from {
            d.state.delivered_through = from - 1;
        }
        d.state.paused = false;
        d.state.failing_since = None;
        if state
            .store
            .claim_delivery(tenant, id, generation)
            .await
            .map_err(destination_error)?
            && state
                .store
                .record_delivery(tenant, id, d.state.clone())
                .await
                .map_err(destination_error)?
        {
            resumed = Some(d);
            break;
        }
    }
    let d =
        resumed.ok_or_else(|| ApiError::unavailable("the destination kept changing; try again"))?;
    drop(managing);
    streams.wake.notify_one();
    tracing::info!(tenant = %tenant, id = %id, from = d.state.delivered_through + 1, "log-stream destination resumed");
    view(state, &d).await
}

/// Registers a log-stream destination for the caller's tenant.
///
/// Every committed record is then delivered to it in sequence order, at least once,
/// each batch with the signed checkpoint that covers it. A webhook's signing secret is
/// in this answer only. Targets must be public and encrypted (`https://`, syslog in TLS)
/// unless the server's `stream.allow_private` is on.
#[utoipa::path(post, path = "/v1/destinations", tag = "Log streams", operation_id = "createDestination",
    request_body(content = CreateBody),
    responses((status = 201, body = CreatedDestination), (status = 400, description = "A field is missing or wrong for the type (`invalid_field`), or the target is refused (`invalid_destination`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 501, description = "This server runs no log streams (a store without destinations)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn create_destination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(caller, _): Authenticated<Admin>,
    body: Body,
) -> ApiResult<(StatusCode, Json<CreatedDestination>)> {
    streams_of(&state)?;
    let bytes = read_bytes(&headers, body, 4096, state.config.body_read_timeout).await?;
    let body: CreateBody = parse_object(
        &bytes,
        "{\"type\": \"webhook\", \"url\": \"https://…\"}, {\"type\": \"splunk_hec\", \"url\": \"https://…\", \"token\": \"…\"} or {\"type\": \"syslog\", \"host\": \"host:port\"}",
    )?;
    let spec = Spec {
        kind: body.kind,
        url: body.url,
        token: body.token,
        host: body.host,
        tls: body.tls,
    };
    Ok((
        StatusCode::CREATED,
        Json(create(&state, &caller.tenant_id, spec).await?),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationList {
    pub destinations: Vec<DestinationView>,
}

/// The caller's tenant's destinations and their delivery status.
#[utoipa::path(get, path = "/v1/destinations", tag = "Log streams", operation_id = "listDestinations",
    responses((status = 200, body = DestinationList), (status = 401, body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 501, description = "This server runs no log streams (a store without destinations)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn list_destinations(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Admin>,
) -> ApiResult<Json<DestinationList>> {
    Ok(Json(list(&state, &caller.tenant_id).await?))
}

/// One destination and its delivery status: cursor, lag, last error, last success.
#[utoipa::path(get, path = "/v1/destinations/{id}", tag = "Log streams", operation_id = "getDestination",
    params(("id" = String, Path, description = "The destination's id")),
    responses((status = 200, body = DestinationView), (status = 401, body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 501, description = "This server runs no log streams (a store without destinations)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_destination(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Admin>,
    Path(id): Path<String>,
) -> ApiResult<Json<DestinationView>> {
    Ok(Json(get(&state, &caller.tenant_id, &id).await?))
}

/// Stops delivery and forgets the destination.
#[utoipa::path(delete, path = "/v1/destinations/{id}", tag = "Log streams", operation_id = "deleteDestination",
    params(("id" = String, Path, description = "The destination's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 501, description = "This server runs no log streams (a store without destinations)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn delete_destination(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Admin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete(&state, &caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts delivery again (a paused destination too), from its cursor or from record
/// `from_sequence`. The body is optional.
#[utoipa::path(post, path = "/v1/destinations/{id}/resume", tag = "Log streams", operation_id = "resumeDestination",
    params(("id" = String, Path, description = "The destination's id")),
    request_body(content = Option<ResumeBody>),
    responses((status = 200, body = DestinationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 501, description = "This server runs no log streams (a store without destinations)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn resume_destination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(caller, _): Authenticated<Admin>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<DestinationView>> {
    streams_of(&state)?;
    let bytes = read_bytes(&headers, body, 4096, state.config.body_read_timeout).await?;
    let body: ResumeBody = if bytes.is_empty() {
        ResumeBody::default()
    } else {
        parse_object(&bytes, "{\"from_sequence\": N} or empty")?
    };
    Ok(Json(
        resume(&state, &caller.tenant_id, &id, body.from_sequence).await?,
    ))
}

// ---------------------------------------------------------------- delivery

/// Whether this process delivers a tenant's destinations.
pub type Owns = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What delivery needs: the store, the signer of the checkpoints, and which tenants this
/// process delivers. A server in embedded mode delivers every tenant; in distributed
/// mode the chainers deliver, each the tenants of the log partitions it holds.
#[derive(Clone)]
pub struct Deliverer {
    pub store: Arc<dyn Store>,
    pub tlog: Option<Arc<TransparencyLog>>,
    /// Wakes a caught-up task at a commit (embedded mode); without it tasks poll.
    pub commits: Option<CommitSignal>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub streams: Arc<Streams>,
    /// Which tenants to deliver (`None`: all). Asked at every reconciliation: a task whose
    /// tenant is no longer owned is stopped.
    pub owns: Option<Owns>,
}

/// Runs a server's log streams (embedded mode) until shutdown.
pub async fn run_streams(state: AppState) {
    let Some(streams) = state.streams.clone() else {
        return;
    };
    run_deliveries(Deliverer {
        store: state.store.clone(),
        tlog: state.tlog.clone(),
        commits: state.commits.clone(),
        shutdown: state.shutdown.clone(),
        streams,
        owns: None,
    })
    .await
}

/// Runs delivery until shutdown: one task per destination that is not paused and whose
/// tenant this process owns, started as destinations appear, resume or move here (every
/// 2 s, or at once when this process registers or resumes one). Each task claims its
/// destination first (`Store::claim_delivery`), so two processes never both write one
/// destination's cursor.
pub async fn run_deliveries(ctx: Deliverer) {
    let streams = ctx.streams.clone();
    let mut shutdown = ctx.shutdown.clone();
    let owned = |tenant: &str| ctx.owns.as_ref().is_none_or(|owns| owns(tenant));
    loop {
        let managing = streams.manage.lock().await;
        match ctx.store.destinations(None).await {
            Ok(all) => {
                let fresh: Vec<Destination> = {
                    let mut tasks = streams.tasks.lock().expect("tasks lock");
                    tasks.retain(|(tenant, _), task| {
                        let keep = !task.is_finished() && owned(tenant);
                        if !keep {
                            task.abort(); // a tenant no longer owned here (a no-op if finished)
                        }
                        keep
                    });
                    all.into_iter()
                        .filter(|d| {
                            !d.state.paused
                                && owned(&d.tenant_id)
                                && !tasks.contains_key(&(d.tenant_id.clone(), d.id.clone()))
                        })
                        .collect()
                };
                for mut d in fresh {
                    match ctx
                        .store
                        .claim_delivery(&d.tenant_id, &d.id, d.state.generation)
                        .await
                    {
                        Ok(true) => d.state.generation += 1,
                        // changed since it was read (resumed, deleted, claimed): next round
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(destination = %d.id, error = %e, "cannot claim a log-stream destination; retrying");
                            continue;
                        }
                    }
                    let key = (d.tenant_id.clone(), d.id.clone());
                    let task = tokio::spawn(deliver(ctx.clone(), d));
                    streams.tasks.lock().expect("tasks lock").insert(key, task);
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
pub struct Failure {
    message: String,
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(message: String) -> Self {
        Self {
            message,
            retry_after: None,
        }
    }
}

/// A destination's series in `/metrics`.
struct Gauges {
    lag: metrics::Gauge,
    paused: metrics::Gauge,
    failing: metrics::Gauge,
    last_success: metrics::Gauge,
    delivered: metrics::Counter,
    failures: metrics::Counter,
}

impl Gauges {
    fn of(d: &Destination) -> Self {
        let labels = [
            ("tenant", d.tenant_id.clone()),
            ("destination", d.id.clone()),
        ];
        Self {
            lag: metrics::gauge!("sealtrail_stream_lag", &labels),
            paused: metrics::gauge!("sealtrail_stream_paused", &labels),
            failing: metrics::gauge!("sealtrail_stream_failing", &labels),
            last_success: metrics::gauge!("sealtrail_stream_last_success_seconds", &labels),
            delivered: metrics::counter!("sealtrail_stream_delivered_total", &labels),
            failures: metrics::counter!("sealtrail_stream_failures_total", &labels),
        }
    }

    fn show(&self, state: &DeliveryState) {
        self.paused.set(if state.paused { 1.0 } else { 0.0 });
        self.failing.set(if state.failing_since.is_some() {
            1.0
        } else {
            0.0
        });
        if let Some(t) = state
            .last_success_at
            .as_deref()
            .and_then(|t| sealtrail_core::time::parse_rfc3339(t).ok())
        {
            self.last_success.set(t as f64 / 1e6);
        }
    }
}

/// Delivers one destination's records in order until it is deleted, paused or the
/// server stops.
async fn deliver(state: Deliverer, mut d: Destination) {
    let streams = state.streams.clone();
    let gauges = Gauges::of(&d);
    gauges.show(&d.state);
    let opened = streams
        .open(&d.sealed_secret)
        .and_then(|secret| Ok((secret, Sink::of(&d.kind, &d.url)?)));
    let (secret, sink) = match opened {
        Ok(opened) => opened,
        Err(message) => {
            pause(&state, &mut d, message, &gauges).await;
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
        gauges
            .lag
            .set(head.saturating_sub(d.state.delivered_through) as f64);
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
        let result = attempt(&state, &streams, &d, &sink, &secret).await;
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
                    generation: d.state.generation,
                };
                gauges.delivered.increment(sent);
                gauges.show(&d.state);
                if !record(&state, &d).await {
                    return;
                }
            }
            Err(failure) => {
                gauges.failures.increment(1);
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
                    pause(&state, &mut d, why, &gauges).await;
                    return;
                }
                gauges.show(&d.state);
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
    state: &Deliverer,
    streams: &Streams,
    d: &Destination,
    sink: &Sink,
    secret: &[u8],
) -> Result<u64, Failure> {
    let rows = state
        .store
        .scan_chain(
            &d.tenant_id,
            d.state.delivered_through,
            streams.config.max_batch,
        )
        .await
        .map_err(|e| Failure::new(format!("reading the records: {e}")))?;
    let Some(last) = rows.last().map(|r| r.sequence_number) else {
        return Err(Failure::new(
            "no records after the cursor (removed by retention?)".into(),
        ));
    };
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        records.push(row.record().map_err(|e| Failure::new(e.to_string()))?);
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
            .map_err(|e| Failure::new(format!("signing the checkpoint: {}", e.message)))?,
        ),
        None => None,
    };
    let batch = Batch {
        tenant: &d.tenant_id,
        records: &records,
        checkpoint: checkpoint.as_deref(),
    };
    sink.send(streams, secret, &batch).await?;
    Ok(last)
}

/// Stores `d`'s state; false when the destination is gone or claimed by another task or
/// a resume (the task then ends).
async fn record(state: &Deliverer, d: &Destination) -> bool {
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

async fn pause(state: &Deliverer, d: &mut Destination, why: String, gauges: &Gauges) {
    tracing::error!(destination = %d.id, tenant = %d.tenant_id, "log stream paused: {why}");
    d.state.paused = true;
    d.state.last_error = Some(why);
    gauges.show(&d.state);
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
