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

#[derive(Args)]
pub(crate) struct RedactArgs {
    /// The id of the event whose content to erase.
    #[arg(value_name = "EVENT_ID")]
    event_id: String,
    /// Why, kept in the redaction event in the chain for good (1-1024 bytes), e.g.
    /// "GDPR Art. 17 request 2026-114".
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// The server's REST base URL, as its clients use it (e.g. `http://127.0.0.1:8080`).
    #[arg(long, value_name = "URL")]
    url: String,
    /// An API key of the record's tenant with the `admin` scope (`sealtrail keys create
    /// --scopes admin`).
    #[arg(
        long,
        alias = "key",
        env = "SEALTRAIL_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: String,
}

/// Longest wait for the answer: the server answers within its erase wait (10 s) after
/// the commit, or `202`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn run(args: RedactArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(redact(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::CannotRun(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

enum Failure {
    /// The server answered with an error.
    Refused(String),
    /// The server could not be asked, or did not answer like sealtrail.
    CannotRun(String),
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
    let mut url = reqwest::Url::parse(args.url.trim_end_matches('/'))
        .map_err(|e| cannot(format!("--url {:?}: {e}", args.url)))?;
    url.path_segments_mut()
        .map_err(|()| cannot(format!("--url {:?} cannot be a base URL", args.url)))?
        .pop_if_empty()
        .extend(["v1", "events", &args.event_id, "redact"]);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| cannot(e.to_string()))?;
    let response = http
        .post(url.clone())
        .bearer_auth(&args.api_key)
        .json(&json!({ "reason": args.reason }))
        .send()
        .await
        .map_err(|e| cannot(format!("{url}: {}", with_causes(&e))))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| cannot(format!("{url}: {status}: {}", with_causes(&e))))?;
    let answer: Option<Value> = serde_json::from_str(&body).ok();
    if !status.is_success() {
        return Err(match answer.as_ref().and_then(error_of) {
            Some((code, message)) => Failure::Refused(format!("{message} ({code}, {status})")),
            None => Failure::CannotRun(format!("{url}: {status}: {}", excerpt(&body))),
        });
    }
    let result = answer
        .filter(|a| a["record"].is_object() && a["redaction"].is_object())
        .ok_or_else(|| {
            cannot(format!(
                "{url}: {status} with an unexpected body: {}",
                excerpt(&body)
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

/// `(code, message)` of sealtrail's error body `{"error":{"code","message"}}`.
fn error_of(body: &Value) -> Option<(&str, &str)> {
    let error = body.get("error")?;
    Some((
        error.get("code")?.as_str()?,
        error.get("message")?.as_str()?,
    ))
}

/// The start of a body that is not sealtrail's, for an error message.
fn excerpt(body: &str) -> String {
    body.chars().take(300).collect()
}

/// `err` and its sources (reqwest's own message leaves out why a request failed, e.g.
/// "connection refused").
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
