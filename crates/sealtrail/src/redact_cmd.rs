//! `sealtrail redact`: redacts one record through a running server's REST API
//! (`POST /v1/events/{id}/redact`) with a key that has the `admin` scope, and prints what
//! the server answered: the record as reads now return it and the redaction event that
//! the chain now holds.
//!
//! Exit codes: 0 when the redaction is committed (`200`, or `202` when the erasure
//! follows); 1 when the server refused it (its message is printed); 2 when it could not be
//! asked (unreachable server, an id no URL path can carry, an answer that is not
//! sealtrail's).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use crate::client::{self, Failure, Server};

#[derive(Args)]
pub(crate) struct RedactArgs {
    /// The id of the event whose content to erase.
    #[arg(value_name = "EVENT_ID")]
    event_id: String,
    /// Why, kept in the redaction event in the chain for good (1-1024 bytes), e.g.
    /// "GDPR Art. 17 request 2026-114".
    #[arg(long, value_name = "TEXT")]
    reason: String,
    #[command(flatten)]
    server: Server,
}

/// Longest wait for the answer: the server answers within its erase wait (10 s) after
/// the commit, or `202`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn run(args: RedactArgs) -> ExitCode {
    client::run(redact(&args))
}

async fn redact(args: &RedactArgs) -> Result<(), Failure> {
    let cannot = Failure::CannotRun;
    // A URL path cannot carry these (every URL parser removes them as dot segments).
    if matches!(args.event_id.as_str(), "." | "..") {
        return Err(cannot(format!(
            "the event id {:?} cannot be sent in a URL path; redact it over gRPC (RedactEvent)",
            args.event_id
        )));
    }
    let (status, answer) = client::call(
        &args.server,
        reqwest::Method::POST,
        &["v1", "events", &args.event_id, "redact"],
        Some(&json!({ "reason": args.reason })),
        REQUEST_TIMEOUT,
    )
    .await?;
    let result = Some(answer)
        .filter(|a| a["record"].is_object() && a["redaction"].is_object())
        .ok_or_else(|| {
            cannot(format!(
                "{}: {status} with an unexpected body",
                args.server.url
            ))
        })?;
    let record = &result["record"];
    let redaction = &result["redaction"];
    println!(
        "{}",
        serde_json::to_string_pretty(record).expect("a JSON value serializes")
    );
    println!(
        "redaction event: {} (sequence {})",
        redaction["id"].as_str().unwrap_or("?"),
        redaction["sequence_number"]
    );
    if result["erased"] == Value::Bool(true) {
        println!(
            "record {} (sequence {}) is redacted",
            args.event_id, record["sequence_number"]
        );
    } else {
        println!(
            "the redaction is committed; the erasure follows (the server had not finished it when it answered): `GET /v1/events/{}` shows the record redacted once it is done",
            args.event_id
        );
    }
    Ok(())
}
