//! What the commands that are clients of a running server (`redact`, `destinations`)
//! share: the server and key arguments, one REST call, and the exit codes: 0 done; 1 the
//! server refused (its message is printed); 2 it could not be asked (unreachable, or an
//! answer that is not sealtrail's).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sealtrail_api::error::with_causes;
use serde_json::Value;

/// The server to ask and the key to ask with.
#[derive(Args, Clone)]
pub(crate) struct Server {
    /// The server's REST base URL, as its clients use it (e.g. `http://127.0.0.1:8080`).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// An API key of the tenant with the `admin` scope (`sealtrail keys create --scopes
    /// admin`).
    #[arg(
        long,
        alias = "key",
        env = "SEALTRAIL_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: String,
}

pub(crate) enum Failure {
    /// The server answered with an error.
    Refused(String),
    /// The server could not be asked, or did not answer like sealtrail.
    CannotRun(String),
}

/// Runs a client command on a small runtime and maps its result to the exit code.
pub(crate) fn run<F: std::future::Future<Output = Result<(), Failure>>>(work: F) -> ExitCode {
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
    match runtime.block_on(work) {
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

/// One call: `method` to `path` (segments, each escaped) under the server's URL, with
/// `body` as JSON if any. The answer's status and JSON body (`Null` for an empty one);
/// a sealtrail error answer is `Refused` with its message.
pub(crate) async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &[&str],
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(reqwest::StatusCode, Value), Failure> {
    let cannot = Failure::CannotRun;
    let mut url = reqwest::Url::parse(server.url.trim_end_matches('/'))
        .map_err(|e| cannot(format!("--url {:?}: {e}", server.url)))?;
    url.path_segments_mut()
        .map_err(|()| cannot(format!("--url {:?} cannot be a base URL", server.url)))?
        .pop_if_empty()
        .extend(path);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .map_err(|e| cannot(e.to_string()))?;
    let mut request = http
        .request(method, url.clone())
        .bearer_auth(&server.api_key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| cannot(format!("{url}: {}", with_causes(&e))))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| cannot(format!("{url}: {status}: {}", with_causes(&e))))?;
    let answer: Option<Value> = if text.is_empty() {
        Some(Value::Null)
    } else {
        serde_json::from_str(&text).ok()
    };
    if !status.is_success() {
        return Err(match answer.as_ref().and_then(error_of) {
            Some((code, message)) => Failure::Refused(format!("{message} ({code}, {status})")),
            None => Failure::CannotRun(format!("{url}: {status}: {}", excerpt(&text))),
        });
    }
    let answer = answer.ok_or_else(|| {
        cannot(format!(
            "{url}: {status} with a body that is not JSON: {}",
            excerpt(&text)
        ))
    })?;
    Ok((status, answer))
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
pub(crate) fn excerpt(body: &str) -> String {
    body.chars().take(300).collect()
}
