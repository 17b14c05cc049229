//! The log's side of C2SP tlog-witness: every checkpoint the log signs is sent to the
//! configured witnesses, and the cosignatures they answer with are served with it
//! (`GET /v1/checkpoint`, one signature line per witness after the log's own).
//!
//! - **One submission per tenant at a time**, always of the newest checkpoint signed for
//!   it: a tenant whose checkpoints are signed faster than the witnesses answer has the
//!   ones in between skipped (a witness needs only the newest; each carries a consistency
//!   proof from the size that witness last cosigned). At most [`MAX_IN_FLIGHT`]
//!   submissions run at once across tenants.
//! - **The size each witness holds** is kept per origin in memory. After a restart it is
//!   unknown: the first submission says `old 0`, the witness answers `409` with its size,
//!   and the log retries once with a proof from that size.
//! - **Alarms**: a witness that refuses a checkpoint as inconsistent with what it
//!   cosigned before (`422`), or holds a size larger than the log has (`409` with a size
//!   the store does not reach: a truncated or rewritten log), is an alarm: logged at error
//!   level, counted in `sealtrail_witness_alarms` (per witness) and listed by `/healthz`
//!   with the origin and sizes, until that witness cosigns that origin again. Network
//!   errors and other refusals are counted in `sealtrail_witness_errors_total` and retried
//!   with the next checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sealtrail_core::cosignature::{CosignatureVerifier, split_note};
use sealtrail_core::proof;
use sealtrail_store::Store;
use tokio::sync::{Semaphore, watch};

/// Submissions (one tenant to every witness) running at once.
const MAX_IN_FLIGHT: usize = 16;
/// Memory stays bounded however many tenants there are: at most this many tenants' newest
/// cosigned checkpoints are kept (then one is dropped per new tenant; a reader asking for
/// a dropped one's cosignatures has its checkpoint sent again) ...
const MAX_COSIGNED: usize = 10_000;
/// ... the per-tenant submission state is pruned of idle tenants beyond this many ...
const MAX_TRACKED: usize = 10_000;
/// ... and a witness's learned sizes are forgotten beyond this many origins (each is
/// learned again from the witness's `409`, at one more request).
const MAX_SIZES: usize = 100_000;
/// How long one request to a witness may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A witness as configured: where it listens and its verifier key.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// Its submission prefix, e.g. `https://witness.example.com` (TLS with the Mozilla
    /// root certificates of `webpki-roots`)
    /// (`<url>/add-checkpoint` is called).
    pub url: String,
    pub key: CosignatureVerifier,
}

impl WitnessConfig {
    /// Parses `URL=VKEY` (`--witness`, the `witnesses` config key).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (url, key) = spec.split_once('=').ok_or_else(|| {
            format!("witness {spec:?}: expected URL=VKEY (the witness's address, then the key `sealtrail witness init` printed)")
        })?;
        let url = url.trim().trim_end_matches('/').to_string();
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!(
                "witness {spec:?}: the URL must start with http:// or https://"
            ));
        }
        let key = CosignatureVerifier::parse(key).map_err(|e| format!("witness {spec:?}: {e}"))?;
        Ok(Self { url, key })
    }
}

/// One alarm: a witness that holds a view of an origin the log contradicts.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct WitnessAlarm {
    pub witness: String,
    pub origin: String,
    pub message: String,
}

/// The cosignatures collected for a tenant's newest cosigned checkpoint.
struct Cosigned {
    note: String,
    /// Per witness (in configuration order), its cosignature line over `note`.
    lines: Vec<Option<String>>,
}

#[derive(Default)]
struct TenantState {
    /// The newest checkpoint signed and not yet submitted.
    pending: Option<(u64, String)>,
    /// A submission task runs for this tenant.
    running: bool,
    /// The size last submitted, and when: the same size again within [`RESUBMIT_AFTER`]
    /// is not sent again.
    last: Option<(u64, std::time::Instant)>,
}

/// A checkpoint size already submitted for a tenant is sent again (a reader asking for
/// cosignatures it lacks) no sooner than this.
const RESUBMIT_AFTER: Duration = Duration::from_secs(2);

pub(crate) struct Witnessing {
    witnesses: Vec<WitnessConfig>,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    origin: String,
    /// Per witness: the size it holds per origin, as last learned.
    sizes: Vec<Mutex<HashMap<String, u64>>>,
    tenants: Mutex<HashMap<String, TenantState>>,
    cosigned: Mutex<HashMap<String, Cosigned>>,
    alarms: Mutex<BTreeMap<(String, String), String>>,
    permits: Semaphore,
    /// Bumped whenever a cosignature arrives (waiters of `?witnesses=N` re-check).
    changed: watch::Sender<u64>,
}

/// What one witness made of one submission.
enum Outcome {
    Cosigned(String),
    /// The witness already holds a newer checkpoint of this origin (another gateway
    /// submitted it): nothing to do until the next one.
    Behind,
    Alarm(String),
    Failed(String),
}

impl Witnessing {
    pub(crate) fn new(
        witnesses: Vec<WitnessConfig>,
        store: Arc<dyn Store>,
        origin: String,
    ) -> Self {
        let sizes = witnesses.iter().map(|_| Mutex::default()).collect();
        Self {
            witnesses,
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("an HTTP client"),
            store,
            origin,
            sizes,
            tenants: Mutex::default(),
            cosigned: Mutex::default(),
            alarms: Mutex::default(),
            permits: Semaphore::new(MAX_IN_FLIGHT),
            changed: watch::channel(0).0,
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.witnesses.len()
    }

    /// Current alarms, ordered by witness and origin.
    pub(crate) fn alarms(&self) -> Vec<WitnessAlarm> {
        self.alarms
            .lock()
            .expect("alarms lock")
            .iter()
            .map(|((witness, origin), message)| WitnessAlarm {
                witness: witness.clone(),
                origin: origin.clone(),
                message: message.clone(),
            })
            .collect()
    }

    /// `note` (the signed checkpoint of `tenant` at `size`) goes to the witnesses, after
    /// the submission running for the tenant, if any (which it supersedes if newer).
    pub(crate) fn submit(self: &Arc<Self>, tenant: &str, size: u64, note: &str) {
        let start = {
            let mut tenants = self.tenants.lock().expect("tenants lock");
            if tenants.len() >= MAX_TRACKED && !tenants.contains_key(tenant) {
                tenants.retain(|_, s| {
                    s.running || s.last.is_some_and(|(_, at)| at.elapsed() < RESUBMIT_AFTER)
                });
            }
            let state = tenants.entry(tenant.to_string()).or_default();
            let recent = state
                .last
                .is_some_and(|(s, at)| s == size && at.elapsed() < RESUBMIT_AFTER);
            if recent || state.pending.as_ref().is_some_and(|(s, _)| *s > size) {
                return;
            }
            state.pending = Some((size, note.to_string()));
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let this = self.clone();
            let tenant = tenant.to_string();
            tokio::spawn(async move { this.run_tenant(tenant).await });
        }
    }

    async fn run_tenant(self: Arc<Self>, tenant: String) {
        loop {
            let next = {
                let mut tenants = self.tenants.lock().expect("tenants lock");
                let state = tenants.get_mut(&tenant).expect("a running tenant");
                let next = state.pending.take();
                match &next {
                    Some((size, _)) => state.last = Some((*size, std::time::Instant::now())),
                    None => state.running = false,
                }
                next
            };
            let Some((size, note)) = next else { return };
            let _permit = self.permits.acquire().await.expect("never closed");
            let submissions =
                (0..self.witnesses.len()).map(|w| self.submit_to(w, &tenant, size, &note));
            let outcomes = futures::future::join_all(submissions).await;
            let mut lines = Vec::with_capacity(outcomes.len());
            for (w, outcome) in outcomes.into_iter().enumerate() {
                let witness = self.witnesses[w].key.name().to_string();
                let origin = sealtrail_core::checkpoint::tenant_origin(&self.origin, &tenant);
                match outcome {
                    Outcome::Cosigned(line) => {
                        metrics::counter!("sealtrail_witness_cosignatures_total", "witness" => witness.clone()).increment(1);
                        self.set_alarm(&witness, &origin, None);
                        lines.push(Some(line));
                    }
                    Outcome::Behind => lines.push(None),
                    Outcome::Alarm(message) => {
                        tracing::error!(witness, origin, "witness alarm: {message}");
                        self.set_alarm(&witness, &origin, Some(message));
                        lines.push(None);
                    }
                    Outcome::Failed(message) => {
                        metrics::counter!("sealtrail_witness_errors_total", "witness" => witness.clone()).increment(1);
                        tracing::warn!(
                            witness,
                            origin,
                            size,
                            "witness submission failed: {message}"
                        );
                        lines.push(None);
                    }
                }
            }
            if lines.iter().any(Option::is_some) {
                let mut cosigned = self.cosigned.lock().expect("cosigned lock");
                let keep_newer = cosigned
                    .get(&tenant)
                    .is_some_and(|c| size_of(&c.note).is_some_and(|held| held > size));
                if !keep_newer {
                    if cosigned.len() >= MAX_COSIGNED
                        && !cosigned.contains_key(&tenant)
                        && let Some(other) = cosigned.keys().next().cloned()
                    {
                        cosigned.remove(&other);
                    }
                    cosigned.insert(tenant.clone(), Cosigned { note, lines });
                }
                drop(cosigned);
                self.changed.send_modify(|n| *n += 1);
            }
        }
    }

    fn set_alarm(&self, witness: &str, origin: &str, message: Option<String>) {
        let mut alarms = self.alarms.lock().expect("alarms lock");
        let key = (witness.to_string(), origin.to_string());
        let changed = match message {
            Some(m) => alarms.insert(key, m).is_none(),
            None => alarms.remove(&key).is_some(),
        };
        if changed {
            let n = alarms.keys().filter(|(w, _)| w == witness).count();
            metrics::gauge!("sealtrail_witness_alarms", "witness" => witness.to_string())
                .set(n as f64);
        }
    }

    /// One witness, one checkpoint: the C2SP exchange, with one retry after a `409`.
    async fn submit_to(&self, w: usize, tenant: &str, size: u64, note: &str) -> Outcome {
        let witness = &self.witnesses[w];
        let origin = sealtrail_core::checkpoint::tenant_origin(&self.origin, tenant);
        let mut old = self.sizes[w]
            .lock()
            .expect("sizes lock")
            .get(&origin)
            .copied()
            .unwrap_or(0);
        for _ in 0..2 {
            if old > size {
                return self.judge_larger(tenant, old).await;
            }
            let hashes = match self.consistency(tenant, old, size).await {
                Ok(h) => h,
                Err(e) => {
                    return Outcome::Failed(format!("no consistency proof {old}→{size}: {e}"));
                }
            };
            let mut body = format!("old {old}\n");
            for h in hashes {
                body.push_str(&B64.encode(h));
                body.push('\n');
            }
            body.push('\n');
            body.push_str(note);
            let response = match self
                .http
                .post(format!("{}/add-checkpoint", witness.url))
                .body(body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let status = response.status().as_u16();
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            match status {
                200 => {
                    let Ok((checkpoint_text, _)) = split_note(note) else {
                        return Outcome::Failed("the log's own note is malformed".into());
                    };
                    let Some(line) = text
                        .lines()
                        .find(|l| witness.key.is_mine(l))
                        .map(|l| format!("{l}\n"))
                    else {
                        return Outcome::Failed(
                            "the answer holds no cosignature by its key".into(),
                        );
                    };
                    if let Err(e) = witness.key.verify_line(checkpoint_text, &line) {
                        return Outcome::Failed(format!("its cosignature does not verify: {e}"));
                    }
                    self.learn_size(w, origin, size);
                    return Outcome::Cosigned(line);
                }
                409 => {
                    let Ok(held) = text.trim().parse::<u64>() else {
                        return Outcome::Failed(format!("409 without a size: {text:?}"));
                    };
                    self.learn_size(w, origin.clone(), held);
                    old = held;
                }
                422 => {
                    return Outcome::Alarm(format!(
                        "refused the checkpoint of size {size} as inconsistent with the checkpoint of size {old} it cosigned: the log's history differs from what this witness saw"
                    ));
                }
                _ => {
                    return Outcome::Failed(format!(
                        "answered {status}: {}",
                        text.trim().chars().take(200).collect::<String>()
                    ));
                }
            }
        }
        Outcome::Failed("the witness's size kept changing".into())
    }

    /// Witness `w` holds `size` records of `origin`.
    fn learn_size(&self, w: usize, origin: String, size: u64) {
        let mut sizes = self.sizes[w].lock().expect("sizes lock");
        if sizes.len() >= MAX_SIZES && !sizes.contains_key(&origin) {
            sizes.clear();
        }
        sizes.insert(origin, size);
    }

    /// A witness holds `held` records of `tenant`'s log, more than the checkpoint sent: an
    /// alarm if the log does not have that many records (truncated or rewritten), else a
    /// newer checkpoint reached it first.
    async fn judge_larger(&self, tenant: &str, held: u64) -> Outcome {
        match crate::tlog::log_size(self.store.as_ref(), tenant).await {
            Ok(size) if size < held => Outcome::Alarm(format!(
                "holds a cosigned checkpoint of size {held}, but the log has only {size} records: it was truncated or rewritten"
            )),
            Ok(_) => Outcome::Behind,
            Err(e) => Outcome::Failed(format!("cannot read the log size: {}", e.message)),
        }
    }

    async fn consistency(
        &self,
        tenant: &str,
        old: u64,
        size: u64,
    ) -> Result<Vec<[u8; 32]>, String> {
        if old == 0 || old == size {
            return Ok(Vec::new());
        }
        let nodes = crate::tlog::fetch(
            self.store.as_ref(),
            tenant,
            proof::consistency_proof_nodes(old, size),
        )
        .await
        .map_err(|e| e.message)?;
        proof::consistency_proof(&nodes, old, size).map_err(|e| format!("{e:?}"))
    }

    /// `note` with the cosignatures collected for exactly that note, and how many.
    pub(crate) fn attach(&self, tenant: &str, note: &str) -> (String, usize) {
        let cosigned = self.cosigned.lock().expect("cosigned lock");
        match cosigned.get(tenant) {
            Some(c) if c.note == note => {
                let lines: Vec<&String> = c.lines.iter().flatten().collect();
                let mut out = note.to_string();
                for line in &lines {
                    out.push_str(line);
                }
                (out, lines.len())
            }
            _ => (note.to_string(), 0),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

fn size_of(note: &str) -> Option<u64> {
    note.lines().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealtrail_core::cosignature::Cosigner;

    #[test]
    fn witness_specs_parse_or_say_what_is_wrong() {
        let key = Cosigner::from_seed("w.example", [4; 32])
            .unwrap()
            .verifier();
        let w = WitnessConfig::parse(&format!("https://w.example/sub/={key}")).unwrap();
        assert_eq!(w.url, "https://w.example/sub");
        assert_eq!(w.key, key);
        assert!(WitnessConfig::parse(&format!("http://127.0.0.1:7380={key}")).is_ok());
        for bad in [
            key.to_string(),
            format!("ftp://w.example={key}"),
            "http://w.example=w.example+00000000+AAAA".to_string(),
        ] {
            assert!(WitnessConfig::parse(&bad).is_err(), "{bad}");
        }
        // a log's key is not a witness key
        let log = sealtrail_core::note::NoteSigner::from_seed("log.example", [5; 32]).unwrap();
        let err = WitnessConfig::parse(&format!("http://w={}", log.verifier())).unwrap_err();
        assert!(err.contains("cosignature"), "{err}");
    }
}
