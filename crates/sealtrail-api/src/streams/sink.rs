//! The kinds of destination and how one batch reaches each.
//!
//! - **`webhook`**: `POST` of `{"tenant_id","events":[…],"checkpoint"}` with
//!   `Sealtrail-Signature` (HMAC-SHA256 under the secret shown at creation); any `2xx`
//!   acknowledges the batch.
//! - **`splunk_hec`**: `POST` to the Splunk HTTP Event Collector (`…/services/collector/event`)
//!   with `Authorization: Splunk <token>`: one HEC event per record (`time` = the event's
//!   `timestamp`, `sourcetype` `sealtrail:audit`, `event` = the record as committed,
//!   indexed field `tenant_id`), then one `sealtrail:checkpoint` event naming the signed
//!   checkpoint that covers the batch. Any `2xx` acknowledges it (use a token without
//!   indexer acknowledgement). The token is kept sealed like a webhook secret.
//! - **`syslog`**: RFC 5424 messages over TCP, in TLS (RFC 5425) unless `"tls": false`,
//!   framed by octet counting (RFC 6587 §3.4.1). One message per record (facility 13, log
//!   audit; severity 6 for `success`, 5 otherwise; `TIMESTAMP` the record's `created_at`;
//!   APP-NAME `sealtrail`; MSGID `audit`; MSG the record as committed, JSON after a UTF-8
//!   BOM), then one MSGID `checkpoint` message. Syslog has no acknowledgement, so each
//!   batch is its own connection: the sender closes its side after the last frame and
//!   counts the batch delivered only when the receiver closes its side too, that is after
//!   the receiver has read every byte. A reset or a receiver that stays open past
//!   `stream.request_timeout` is a failed attempt, and the batch is sent again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sealtrail_core::record::Record;
use sealtrail_store::now_micros;
use serde::Serialize;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Failure, Streams, check_host, check_target, is_public};

/// The destination types the API accepts.
pub const KINDS: [&str; 3] = ["webhook", "splunk_hec", "syslog"];

/// Where a destination delivers, read from its stored `type` and `url`.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Webhook(reqwest::Url),
    SplunkHec(reqwest::Url),
    /// Stored as `syslog+tls://host:port` or `syslog+tcp://host:port`.
    Syslog {
        host: String,
        port: u16,
        tls: bool,
    },
}

/// A new destination as the API (REST or gRPC) describes it.
#[derive(Debug, Default, Clone)]
pub struct Spec {
    pub kind: String,
    pub url: Option<String>,
    pub token: Option<String>,
    pub host: Option<String>,
    pub tls: Option<bool>,
}

/// A checked new destination: what to store and what to show once.
pub struct Prepared {
    pub url: String,
    /// Sealed before it is stored: the webhook's HMAC key, or the HEC token.
    pub secret: Vec<u8>,
    /// Shown in the `201` (the webhook's key, hex); never again.
    pub shown: Option<String>,
}

/// The splunk path an HEC base URL gets.
const HEC_PATH: &str = "/services/collector/event";

impl Spec {
    /// Checks the fields for the type, and the target (see `check_target`).
    pub async fn prepare(&self, allow_private: bool) -> Result<Prepared, (&'static str, String)> {
        let invalid = |m: String| ("invalid_field", m);
        let refused = |m: String| ("invalid_destination", m);
        let unexpected = |field: &str, present: bool| {
            if present {
                Err(invalid(format!(
                    "{field} does not apply to a {:?} destination",
                    self.kind
                )))
            } else {
                Ok(())
            }
        };
        match self.kind.as_str() {
            "webhook" => {
                unexpected("token", self.token.is_some())?;
                unexpected("host", self.host.is_some())?;
                unexpected("tls", self.tls.is_some())?;
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| invalid("a webhook needs \"url\": \"https://…\"".into()))?;
                let url = check_target(url, allow_private).await.map_err(refused)?;
                let mut secret = vec![0u8; 32];
                getrandom::fill(&mut secret).expect("the OS random source");
                Ok(Prepared {
                    url: url.to_string(),
                    shown: Some(const_hex::encode(&secret)),
                    secret,
                })
            }
            "splunk_hec" => {
                unexpected("host", self.host.is_some())?;
                unexpected("tls", self.tls.is_some())?;
                let url = self.url.as_deref().ok_or_else(|| {
                    invalid("a splunk_hec destination needs \"url\": \"https://splunk.example:8088\" and \"token\"".into())
                })?;
                let token = self.token.as_deref().unwrap_or_default();
                if token.is_empty()
                    || token.len() > 256
                    || !token.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(invalid(
                        "a splunk_hec destination needs \"token\": the HEC token (1-256 printable ASCII characters, no spaces)".into(),
                    ));
                }
                let mut url = check_target(url, allow_private).await.map_err(refused)?;
                if url.path().is_empty() || url.path() == "/" {
                    url.set_path(HEC_PATH);
                }
                Ok(Prepared {
                    url: url.to_string(),
                    secret: token.as_bytes().to_vec(),
                    shown: None,
                })
            }
            "syslog" => {
                unexpected("url", self.url.is_some())?;
                unexpected("token", self.token.is_some())?;
                let tls = self.tls.unwrap_or(true);
                let host = self.host.as_deref().ok_or_else(|| {
                    invalid("a syslog destination needs \"host\": \"logs.example:6514\"".into())
                })?;
                let scheme = if tls { "syslog+tls" } else { "syslog+tcp" };
                let parsed = reqwest::Url::parse(&format!("{scheme}://{host}"))
                    .ok()
                    .filter(|u| {
                        u.host_str().is_some()
                            && u.path().is_empty()
                            && u.username().is_empty()
                            && u.query().is_none()
                    })
                    .ok_or_else(|| {
                        invalid(format!(
                            "host must be host:port, e.g. \"logs.example:6514\", not {host:?}"
                        ))
                    })?;
                if !tls && !allow_private {
                    return Err(refused("syslog without TLS is refused: the events would cross the network in clear; leave \"tls\" on (stream.allow_private allows plain TCP for local receivers)".into()));
                }
                let name = trim_brackets(parsed.host_str().unwrap_or_default());
                let port = parsed.port().unwrap_or(if tls { 6514 } else { 514 });
                check_host(name, port, allow_private)
                    .await
                    .map_err(refused)?;
                Ok(Prepared {
                    url: format!(
                        "{scheme}://{}:{port}",
                        parsed.host_str().unwrap_or_default()
                    ),
                    secret: Vec::new(),
                    shown: None,
                })
            }
            other => Err(invalid(format!(
                "type must be one of \"webhook\", \"splunk_hec\", \"syslog\", not {other:?}"
            ))),
        }
    }
}

fn trim_brackets(host: &str) -> &str {
    host.trim_matches(['[', ']'])
}

impl Sink {
    /// The sink of a stored destination.
    pub fn of(kind: &str, url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("stored url {url:?}: {e}"))?;
        match kind {
            "webhook" => Ok(Self::Webhook(parsed)),
            "splunk_hec" => Ok(Self::SplunkHec(parsed)),
            "syslog" => Ok(Self::Syslog {
                host: trim_brackets(parsed.host_str().unwrap_or_default()).to_string(),
                port: parsed
                    .port()
                    .ok_or(format!("stored url {url:?} has no port"))?,
                tls: parsed.scheme() == "syslog+tls",
            }),
            other => Err(format!("unknown destination type {other:?}")),
        }
    }

    /// Sends one batch; `Ok` once the receiver acknowledged it.
    pub async fn send(
        &self,
        streams: &Streams,
        secret: &[u8],
        batch: &Batch<'_>,
    ) -> Result<(), Failure> {
        match self {
            Self::Webhook(url) => {
                let body = serde_json::to_vec(&WebhookBody {
                    tenant_id: batch.tenant,
                    events: batch.records,
                    checkpoint: batch.checkpoint,
                })
                .expect("records serialize");
                let t = now_micros() / 1_000_000;
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
                mac.update(format!("{t}.").as_bytes());
                mac.update(&body);
                let signature = format!(
                    "t={t},v1={}",
                    const_hex::encode(mac.finalize().into_bytes())
                );
                let request = streams
                    .http
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .header("sealtrail-signature", signature)
                    .body(body);
                http_answer(request).await
            }
            Self::SplunkHec(url) => {
                let token = String::from_utf8_lossy(secret);
                let request = streams
                    .http
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .header("authorization", format!("Splunk {token}"))
                    .body(hec_body(batch));
                http_answer(request).await
            }
            Self::Syslog { host, port, tls } => {
                let frames = syslog_frames(batch);
                tokio::time::timeout(
                    streams.config.request_timeout,
                    syslog_send(streams, host, *port, *tls, &frames),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        "the syslog receiver did not take the batch and close within stream.request_timeout".into(),
                    ))
                })
            }
        }
    }
}

/// One delivery: a run of a tenant's chain and the checkpoint that covers it.
pub struct Batch<'a> {
    pub tenant: &'a str,
    pub records: &'a [Record],
    pub checkpoint: Option<&'a str>,
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    tenant_id: &'a str,
    events: &'a [Record],
    checkpoint: Option<&'a str>,
}

/// Any `2xx` acknowledges; otherwise the status, the start of the body (HEC says why in
/// it) and `Retry-After`.
async fn http_answer(request: reqwest::RequestBuilder) -> Result<(), Failure> {
    let resp = request
        .send()
        .await
        .map_err(|e| Failure::new(describe(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    let said = resp.text().await.unwrap_or_default();
    let said: String = said.trim().chars().take(200).collect();
    Err(Failure {
        message: if said.is_empty() {
            format!("the receiver answered {status}")
        } else {
            format!("the receiver answered {status}: {said}")
        },
        retry_after,
    })
}

/// A failed request in words: a timeout says which setting, anything else its causes.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "the receiver did not answer within stream.request_timeout (timed out)".into();
    }
    crate::error::with_causes(e)
}

/// `<seconds>.<micros>` of an RFC 3339 time, for HEC's `time` (written as text: an f64
/// would round the microseconds).
fn epoch_seconds(rfc3339: &str) -> String {
    let micros = sealtrail_core::time::parse_rfc3339(rfc3339).unwrap_or_else(|_| now_micros());
    format!(
        "{}.{:06}",
        micros.div_euclid(1_000_000),
        micros.rem_euclid(1_000_000)
    )
}

fn hec_event(
    out: &mut Vec<u8>,
    time: &str,
    sourcetype: &str,
    tenant: &str,
    event: &impl Serialize,
) {
    let tenant = serde_json::to_string(tenant).expect("a string serializes");
    out.extend_from_slice(
        format!(
            "{{\"time\":{time},\"source\":\"sealtrail\",\"sourcetype\":\"{sourcetype}\",\"fields\":{{\"tenant_id\":{tenant}}},\"event\":"
        )
        .as_bytes(),
    );
    serde_json::to_writer(&mut *out, event).expect("records serialize");
    out.extend_from_slice(b"}\n");
}

/// The HEC body: one event per record, then the checkpoint event.
pub fn hec_body(batch: &Batch<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for record in batch.records {
        hec_event(
            &mut out,
            &epoch_seconds(&record.timestamp),
            "sealtrail:audit",
            batch.tenant,
            record,
        );
    }
    if let (Some(checkpoint), Some(last)) = (batch.checkpoint, batch.records.last()) {
        let now = sealtrail_core::time::format_micros(now_micros());
        hec_event(
            &mut out,
            &epoch_seconds(&now),
            "sealtrail:checkpoint",
            batch.tenant,
            &CheckpointEvent {
                tenant_id: batch.tenant,
                checkpoint,
                through_sequence_number: last.sequence_number,
            },
        );
    }
    out
}

#[derive(Serialize)]
struct CheckpointEvent<'a> {
    tenant_id: &'a str,
    checkpoint: &'a str,
    through_sequence_number: u64,
}

/// Facility 13 (log audit), RFC 5424 §6.2.1.
const FACILITY_LOG_AUDIT: u8 = 13;

fn syslog_frame(out: &mut Vec<u8>, severity: u8, time: &str, msgid: &str, json: &[u8]) {
    let head = format!(
        "<{}>1 {time} - sealtrail - {msgid} - \u{feff}",
        FACILITY_LOG_AUDIT * 8 + severity
    );
    out.extend_from_slice(format!("{} ", head.len() + json.len()).as_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(json);
}

/// The batch as octet-counted RFC 5424 frames: one per record, then the checkpoint.
pub fn syslog_frames(batch: &Batch<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for record in batch.records {
        let severity = if record.outcome.as_str() == "success" {
            6
        } else {
            5
        };
        let json = serde_json::to_vec(record).expect("records serialize");
        syslog_frame(&mut out, severity, &record.created_at, "audit", &json);
    }
    if let (Some(checkpoint), Some(last)) = (batch.checkpoint, batch.records.last()) {
        let json = serde_json::to_vec(&CheckpointEvent {
            tenant_id: batch.tenant,
            checkpoint,
            through_sequence_number: last.sequence_number,
        })
        .expect("serializes");
        let now = sealtrail_core::time::format_micros(now_micros());
        syslog_frame(&mut out, 6, &now, "checkpoint", &json);
    }
    out
}

async fn syslog_send(
    streams: &Streams,
    host: &str,
    port: u16,
    tls: bool,
    frames: &[u8],
) -> Result<(), Failure> {
    let fail =
        |what: &str, e: std::io::Error| Failure::new(format!("syslog {host}:{port}: {what}: {e}"));
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| fail("cannot resolve", e))?
        .filter(|a| streams.config.allow_private || is_public(a.ip()))
        .collect();
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(tcp) = tcp else {
        return Err(match last {
            Some(e) => fail("cannot connect", e),
            None => Failure::new(format!("syslog {host}:{port}: no public address")),
        });
    };
    let _ = tcp.set_nodelay(true);
    if tls {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| Failure::new(format!("syslog {host}: not a TLS server name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&streams.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| fail("TLS", e))?;
        exchange(stream, frames)
            .await
            .map_err(|e| fail("sending", e))
    } else {
        exchange(tcp, frames).await.map_err(|e| fail("sending", e))
    }
}

/// Writes the frames, closes the sending side, and waits until the receiver closes its
/// own: it has then read every byte.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    frames: &[u8],
) -> std::io::Result<()> {
    stream.write_all(frames).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // a TLS receiver that closes without close_notify has still read everything
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, outcome: &str) -> Record {
        serde_json::from_value(serde_json::json!({
            "action": "doc.read", "actor": {"id": "u", "type": "human"},
            "created_at": "2026-12-04T10:00:00.123456Z", "hash": "h", "id": format!("e{seq}"),
            "metadata": {"n": "é"}, "outcome": outcome, "prev_hash": "p",
            "resource": {"id": "r", "type": "doc"}, "sequence_number": seq,
            "tenant_id": "acme", "timestamp": "2026-12-04T09:59:59.5Z"
        }))
        .unwrap()
    }

    #[test]
    fn syslog_frames_are_octet_counted_rfc5424_messages() {
        let records = [record(1, "success"), record(2, "failure")];
        let frames = syslog_frames(&Batch {
            tenant: "acme",
            records: &records,
            checkpoint: Some("origin\n2\nroot\n\n— sig\n"),
        });
        let mut rest = &frames[..];
        let mut messages = Vec::new();
        while !rest.is_empty() {
            let space = rest.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..space])
                .unwrap()
                .parse()
                .unwrap();
            messages.push(String::from_utf8(rest[space + 1..space + 1 + len].to_vec()).unwrap());
            rest = &rest[space + 1 + len..];
        }
        assert_eq!(messages.len(), 3);
        let (head, json) = messages[0].split_once('\u{feff}').unwrap();
        assert_eq!(
            head,
            "<110>1 2026-12-04T10:00:00.123456Z - sealtrail - audit - "
        );
        let back: Record = serde_json::from_str(json).unwrap();
        assert_eq!(back, records[0]);
        assert!(messages[1].starts_with("<109>1 "), "{}", messages[1]);
        let (head, json) = messages[2].split_once('\u{feff}').unwrap();
        assert!(head.ends_with(" - sealtrail - checkpoint - "), "{head}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["through_sequence_number"], 2);
        assert_eq!(v["checkpoint"], "origin\n2\nroot\n\n— sig\n");
    }

    #[test]
    fn a_hec_body_is_one_event_per_record_then_the_checkpoint() {
        let records = [record(1, "success"), record(2, "error")];
        let body = hec_body(&Batch {
            tenant: "acme",
            records: &records,
            checkpoint: Some("note"),
        });
        let events: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&body)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0]["sourcetype"], "sealtrail:audit");
        assert_eq!(events[0]["fields"]["tenant_id"], "acme");
        assert_eq!(
            serde_json::from_value::<Record>(events[1]["event"].clone()).unwrap(),
            records[1]
        );
        // the event's own time, to the microsecond
        assert!(
            body.starts_with(b"{\"time\":1796378399.500000,"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(events[2]["sourcetype"], "sealtrail:checkpoint");
        assert_eq!(events[2]["event"]["through_sequence_number"], 2);
    }

    #[tokio::test]
    async fn each_type_takes_its_own_fields() {
        let spec = |kind: &str,
                    url: Option<&str>,
                    token: Option<&str>,
                    host: Option<&str>,
                    tls: Option<bool>| Spec {
            kind: kind.into(),
            url: url.map(Into::into),
            token: token.map(Into::into),
            host: host.map(Into::into),
            tls,
        };
        let hec = spec(
            "splunk_hec",
            Some("http://127.0.0.1:8088"),
            Some("abc-123"),
            None,
            None,
        )
        .prepare(true)
        .await
        .ok()
        .unwrap();
        assert_eq!(hec.url, "http://127.0.0.1:8088/services/collector/event");
        assert_eq!(hec.secret, b"abc-123");
        assert!(
            hec.shown.is_none(),
            "the token is the caller's: nothing to show"
        );
        let syslog = spec("syslog", None, None, Some("127.0.0.1:6514"), None)
            .prepare(true)
            .await
            .ok()
            .unwrap();
        assert_eq!(syslog.url, "syslog+tls://127.0.0.1:6514");
        assert_eq!(
            Sink::of("syslog", &syslog.url).unwrap(),
            Sink::Syslog {
                host: "127.0.0.1".into(),
                port: 6514,
                tls: true
            }
        );
        let plain = spec("syslog", None, None, Some("[::1]"), Some(false))
            .prepare(true)
            .await
            .ok()
            .unwrap();
        assert_eq!(plain.url, "syslog+tcp://[::1]:514");
        assert_eq!(
            Sink::of("syslog", &plain.url).unwrap(),
            Sink::Syslog {
                host: "::1".into(),
                port: 514,
                tls: false
            }
        );
        for (bad, code, why) in [
            (
                spec("splunk_hec", Some("https://1.1.1.1"), None, None, None),
                "invalid_field",
                "needs \"token\"",
            ),
            (
                spec(
                    "splunk_hec",
                    Some("https://1.1.1.1"),
                    Some("a b"),
                    None,
                    None,
                ),
                "invalid_field",
                "no spaces",
            ),
            (
                spec("webhook", Some("https://1.1.1.1"), Some("t"), None, None),
                "invalid_field",
                "token does not apply",
            ),
            (
                spec("syslog", None, None, None, None),
                "invalid_field",
                "needs \"host\"",
            ),
            (
                spec("syslog", None, None, Some("a/b:1"), None),
                "invalid_field",
                "host:port",
            ),
            (
                spec("syslog", None, None, Some("127.0.0.1:514"), Some(false)),
                "invalid_destination",
                "in clear",
            ),
            (
                spec("syslog", None, None, Some("10.0.0.1:6514"), None),
                "invalid_destination",
                "not a public address",
            ),
            (
                spec("syslog", Some("https://x"), None, Some("h:1"), None),
                "invalid_field",
                "url does not apply",
            ),
        ] {
            let (c, m) = bad.prepare(false).await.err().unwrap();
            assert_eq!(c, code, "{bad:?}: {m}");
            assert!(m.contains(why), "{bad:?}: {m}");
        }
    }
}
