//! Exports, streamed page by page in constant memory: the records as JSONL (each line the
//! JCS form of a record, so `sealtrail verify` hashes it as is) or CSV, and the evidence
//! pack (a ZIP: records, signed checkpoint, log key, proofs, VERIFY.md; see
//! `sealtrail_core::pack`).

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sealtrail_core::audit::canonical_line;
use sealtrail_core::pack;
use sealtrail_core::record::Record;
use sealtrail_store::{ChainRow, Store};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Authenticated, Read};
use crate::error::{ApiError, ApiResult, ErrorBody, Params};
use crate::tlog::{inclusion, log_size};

/// Records read per store call.
const PAGE: usize = 1_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `jsonl` (default) or `csv`
    #[param(value_type = Option<ExportFormat>, inline)]
    pub format: Option<String>,
    /// first sequence number (inclusive, default 1)
    #[param(value_type = Option<u64>, format = "uint64")]
    pub from: Option<String>,
    /// last sequence number (inclusive, default: the log size when the export starts)
    #[param(value_type = Option<u64>, format = "uint64")]
    pub to: Option<String>,
}

/// The formats of an export, as declared (`format` is parsed by hand, for its error).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// Binary content, as declared.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Binary(Vec<u8>);

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Jsonl,
    Csv,
}

/// `redacted_by`: for a redacted record, the sequence number of the event that redacted
/// it (its content columns are empty); empty otherwise.
const CSV_HEADER: &str = "sequence_number,id,timestamp,created_at,actor_id,actor_type,actor_email,action,resource_id,resource_type,resource_name,outcome,metadata,prev_hash,hash,redacted_by\r\n";

fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_line(r: &Record) -> String {
    let actor_type = r.actor.actor_type.map(|t| {
        serde_json::to_value(t)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    });
    let redacted = r.redacted.is_some();
    let outcome = serde_json::to_value(r.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .filter(|_| !redacted)
        .unwrap_or_default();
    let metadata = if redacted {
        String::new()
    } else {
        serde_json::to_string(&r.metadata).expect("metadata serializes")
    };
    let seq = r.sequence_number.to_string();
    let redacted_by = r
        .redacted
        .as_ref()
        .map(|by| by.sequence_number.to_string())
        .unwrap_or_default();
    let fields: [&str; 16] = [
        &seq,
        &r.id,
        &r.timestamp,
        &r.created_at,
        &r.actor.id,
        actor_type.as_deref().unwrap_or(""),
        r.actor.email.as_deref().unwrap_or(""),
        &r.action,
        &r.resource.id,
        &r.resource.resource_type,
        r.resource.name.as_deref().unwrap_or(""),
        &outcome,
        &metadata,
        &r.prev_hash,
        &r.hash,
        &redacted_by,
    ];
    let mut out = String::with_capacity(512);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, f);
    }
    out.push_str("\r\n");
    out
}

fn parse_seq(name: &str, text: Option<&str>) -> ApiResult<Option<u64>> {
    text.map(|t| {
        t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("{name} must be a sequence number, not {t:?}"),
            )
        })
    })
    .transpose()
}

/// The records `from..=to` of a tenant, page by page.
fn rows(
    store: std::sync::Arc<dyn Store>,
    tenant: String,
    from: u64,
    to: u64,
) -> impl futures::Stream<Item = Result<Vec<ChainRow>, std::io::Error>> {
    futures::stream::unfold(from.saturating_sub(1), move |after| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            if after >= to {
                return None;
            }
            let limit = PAGE.min((to - after) as usize);
            match store.scan_chain(&tenant, after, limit).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let last = page.last().map_or(to, |r| r.sequence_number);
                    Some((Ok(page), last))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), to)),
            }
        }
    })
}

/// Export a tenant's records (streamed): JSONL of canonical records, or CSV.
#[utoipa::path(get, path = "/v1/export", tag = "Verifiable log", operation_id = "exportEvents",
    params(ExportParams),
    responses((status = 200, description = "One canonical record per line (JSONL), or CSV with a header row", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn export(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Params(p): Params<ExportParams>,
) -> ApiResult<Response> {
    let format = match p.format.as_deref() {
        None | Some("jsonl") => Format::Jsonl,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("format must be jsonl or csv, not {other:?}"),
            ));
        }
    };
    let slot = state.keys.slot(&caller, crate::quota::Heavy::Bulk)?;
    let size = log_size(state.store.as_ref(), &caller.tenant_id).await?;
    let from = parse_seq("from", p.from.as_deref())?.unwrap_or(1).max(1);
    let to = parse_seq("to", p.to.as_deref())?.unwrap_or(size).min(size);
    let header_line =
        (format == Format::Csv).then(|| Ok(Bytes::from_static(CSV_HEADER.as_bytes())));
    let body = rows(state.store.clone(), caller.tenant_id.clone(), from, to).map(move |page| {
        let page = page?;
        let mut out = Vec::with_capacity(page.len() * 700);
        for row in &page {
            match format {
                Format::Jsonl => {
                    out.extend_from_slice(&canonical_line(&row.canonical, &row.hash));
                    out.push(b'\n');
                }
                Format::Csv => {
                    let record = row
                        .record()
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    out.extend_from_slice(csv_line(&record).as_bytes());
                }
            }
        }
        Ok::<_, std::io::Error>(Bytes::from(out))
    });
    // The slot goes with the body: released when the export ends or the client leaves.
    let body = futures::stream::iter(header_line)
        .chain(body)
        .map(move |chunk| {
            let _held = &slot;
            chunk
        });
    let (content_type, ext) = match format {
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let disposition = format!(
        "attachment; filename=\"sealtrail-{}.{ext}\"",
        caller.tenant_id
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The bytes the ZIP writer has produced and the HTTP body has not taken yet. The writer
/// only ever appends here (it never waits); the producing task moves the bytes to the
/// body between pages.
#[derive(Clone, Default)]
struct ZipBytes(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for ZipBytes {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("zip bytes lock")
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ZipBytes {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().expect("zip bytes lock")))
    }
}

type PackError = Box<dyn std::error::Error + Send + Sync>;

/// Runs one step of ZIP writing (compression: CPU work) on a blocking thread. The step
/// waits for nothing — no store read, no client — so the blocking pool can never fill up
/// with steps waiting for each other (eight concurrent packs used to freeze every store
/// operation that way).
pub(crate) async fn zip_step<Z: Send + 'static, T: Send + 'static>(
    zip: Z,
    step: impl FnOnce(Z) -> Result<T, PackError> + Send + 'static,
) -> Result<T, PackError> {
    tokio::task::spawn_blocking(move || step(zip)).await?
}

/// Writes a pack's entries before its records (VERIFY.md, the checkpoint, the log key,
/// `proofs.json`) and opens `records.jsonl` ([`write_records`] fills it): what an evidence
/// pack and a retention archive both begin with.
pub(crate) fn start_pack<W: Write + std::io::Seek>(
    zip: &mut zip::ZipWriter<W>,
    checkpoint: &str,
    key: &str,
    proofs: &str,
) -> Result<(), PackError> {
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for (name, text) in [
        (pack::README, VERIFY_MD),
        (pack::CHECKPOINT, checkpoint),
        (pack::KEY, &format!("{key}\n")),
        (pack::PROOFS, proofs),
    ] {
        zip.start_file(name, opts)?;
        zip.write_all(text.as_bytes())?;
    }
    zip.start_file(pack::RECORDS, opts)?;
    Ok(())
}

/// A page of records into `records.jsonl`: each its JCS form, one per line.
pub(crate) fn write_records(out: &mut impl Write, rows: &[ChainRow]) -> std::io::Result<()> {
    for row in rows {
        out.write_all(&canonical_line(&row.canonical, &row.hash))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub(crate) const VERIFY_MD: &str = include_str!("VERIFY.md");

/// The `proofs.json` of a pack of `tenant`'s records `first..=size` (checkpoint at `size`):
/// inclusion proofs of the first and last records and, when `first` > 1, the tree over the
/// records before it ([`pack::RetentionPrefix`]).
pub(crate) async fn pack_proofs(
    store: &dyn Store,
    tenant: &str,
    first: u64,
    size: u64,
) -> ApiResult<pack::Proofs> {
    let mut proofs = pack::Proofs::default();
    if first > 1 {
        let ids = sealtrail_core::merkle::Frontier::ids(first - 1);
        let hashes = store.tree_nodes(tenant, ids).await?;
        let prefix = hashes
            .into_iter()
            .map(|h| {
                h.map(|h| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, h))
                    .ok_or_else(|| {
                        ApiError::internal(
                            "a tree node before the retention boundary is missing",
                            tenant,
                        )
                    })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        proofs.retention = Some(pack::RetentionPrefix {
            retained_from: first,
            prefix,
        });
    }
    for seq in [first, size] {
        if seq == 0 || proofs.inclusion.iter().any(|p| p.sequence_number == seq) {
            continue;
        }
        let p = inclusion(store, tenant, seq, size).await?;
        let row = store.scan_chain(tenant, seq - 1, 1).await?;
        let hash = row.first().map(|r| r.hash.clone()).unwrap_or_default();
        proofs.inclusion.push(pack::InclusionProof {
            sequence_number: seq,
            hash,
            leaf_index: p.leaf_index,
            tree_size: p.tree_size,
            root_hash: p.root_hash,
            hashes: p.hashes,
        });
    }
    Ok(proofs)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PackParams {
    /// wait (up to 10 s) until this many of the configured witnesses have cosigned the
    /// pack's checkpoint; `503 witnesses_unavailable` if they have not by then
    #[param(value_type = Option<u32>, minimum = 0)]
    pub witnesses: Option<String>,
}

/// The evidence pack: a ZIP with the tenant's records 1..=n, the signed checkpoint of
/// those n records (with the witnesses' cosignatures collected for it), the log's verifier
/// key, inclusion proofs of the first and last records, and VERIFY.md. n is the log size
/// when the request starts.
#[utoipa::path(get, path = "/v1/export/evidence-pack", tag = "Verifiable log", operation_id = "exportEvidencePack",
    params(PackParams),
    responses((status = 200, description = "A ZIP archive", content_type = "application/zip", body = Binary), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "No verifiable log is configured (`not_configured`)", body = ErrorBody),
        (status = 503, description = "`?witnesses=N` and fewer than N witnesses cosigned within 10 s (`witnesses_unavailable`)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn evidence_pack(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Params(params): Params<PackParams>,
) -> ApiResult<Response> {
    let witnesses =
        crate::tlog::parse_u64("witnesses", params.witnesses.as_deref())?.map(|n| n as usize);
    let log = state.tlog.as_deref().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_configured",
            "this server has no verifiable log configured",
        )
    })?;
    let slot = state.keys.slot(&caller, crate::quota::Heavy::Bulk)?;
    let tenant = caller.tenant_id.clone();
    let store = state.store.clone();
    let size = log_size(store.as_ref(), &tenant).await?;
    let checkpoint = log.sign_at(store.as_ref(), &tenant, size).await?;
    let checkpoint = log
        .with_cosignatures(
            &tenant,
            size,
            checkpoint,
            witnesses,
            crate::tlog::WITNESS_WAIT,
        )
        .await?;
    // Retention removed the records before `first` (issue 15): the pack starts there, with
    // the tree over the removed ones in their place.
    let first = store.retained_from(&tenant).await?.min(size.max(1));
    let proofs = pack_proofs(store.as_ref(), &tenant, first, size).await?;
    let key = log.verifier_key();
    // The producer is an async task: store reads and waits for a slow client hold no
    // thread; only the compression of each page runs on a blocking thread (`zip_step`).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let bytes = ZipBytes::default();
        let result: Result<(), PackError> = async {
            let proofs = serde_json::to_string_pretty(&proofs)?;
            let zip = zip::ZipWriter::new_stream(bytes.clone());
            let mut zip = zip_step(zip, move |mut zip| {
                start_pack(&mut zip, &checkpoint, &key, &proofs)?;
                Ok(zip)
            })
            .await?;
            let mut after = first - 1;
            while after < size {
                let limit = PAGE.min((size - after) as usize);
                let page = store.scan_chain(&tenant, after, limit).await?;
                let Some(last) = page.last() else {
                    return Err("the chain ended before its head".into());
                };
                after = last.sequence_number;
                zip = zip_step(zip, move |mut zip| {
                    write_records(&mut zip, &page)?;
                    Ok(zip)
                })
                .await?;
                // Waits for the client (bounded channel), holding no thread.
                tx.send(Ok(bytes.take()))
                    .await
                    .map_err(|_| "the client went away")?;
            }
            zip_step(zip, |zip| {
                zip.finish()?;
                Ok(())
            })
            .await?;
            tx.send(Ok(bytes.take()))
                .await
                .map_err(|_| "the client went away")?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "evidence pack stopped midway");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    // The slot goes with the body: released when the client has it all, or leaves.
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"sealtrail-evidence-{}.zip\"",
                    caller.tenant_id
                ),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = String::new();
        for f in ["plain", "a,b", "say \"hi\"", "two\nlines", ""] {
            csv_field(&mut out, f);
            out.push('|');
        }
        assert_eq!(out, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"||");
    }
}
