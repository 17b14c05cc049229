//! `sealtrail destinations …`: log-stream destinations of a running server, through its
//! REST API (`/v1/destinations`) with a key that has the `admin` scope. The server keeps
//! the secrets and runs the delivery, so these are client commands (exit codes as
//! `redact`'s: 0 done, 1 refused by the server, 2 the server could not be asked).

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::client::{self, Failure, Server};

#[derive(Subcommand)]
pub(crate) enum DestinationsCommand {
    /// Register a destination: every committed record of the key's tenant is delivered
    /// to it in order, at least once, each batch with the checkpoint that covers it.
    /// Prints the destination; for a webhook also its signing secret, shown this once.
    ///
    /// Examples:
    ///   sealtrail destinations create webhook https://hooks.example/audit
    ///   sealtrail destinations create splunk_hec https://splunk.example:8088 --token 0a1b…
    ///   sealtrail destinations create syslog logs.example:6514
    #[command(verbatim_doc_comment)]
    Create {
        /// `webhook` (HTTPS POST of JSON batches, HMAC-signed), `splunk_hec` (Splunk HTTP
        /// Event Collector) or `syslog` (RFC 5424 over TLS, RFC 5425).
        #[arg(value_name = "TYPE", value_parser = ["webhook", "splunk_hec", "syslog"])]
        kind: String,
        /// The webhook's or the collector's `https://` URL, or syslog's `host:port`.
        #[arg(value_name = "TARGET")]
        target: String,
        /// splunk_hec: the HEC token (or SEALTRAIL_HEC_TOKEN).
        #[arg(long, env = "SEALTRAIL_HEC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// syslog: plain TCP instead of TLS (the server refuses it unless
        /// `stream.allow_private` is on).
        #[arg(long)]
        no_tls: bool,
        #[command(flatten)]
        server: Server,
    },
    /// List the tenant's destinations with their status, cursor and lag.
    List {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Show one destination: status, cursor, lag, last error, last success.
    Show {
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Stop delivering to a destination and forget it.
    Delete {
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Start a destination again (a paused one too), from its cursor or from --from.
    Resume {
        #[arg(value_name = "ID")]
        id: String,
        /// Deliver again from this sequence number (1 or more).
        #[arg(long, value_name = "SEQUENCE")]
        from: Option<u64>,
        #[command(flatten)]
        server: Server,
    },
}

const TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run(cmd: DestinationsCommand) -> ExitCode {
    client::run(destinations(cmd))
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("a JSON value serializes")
}

async fn destinations(cmd: DestinationsCommand) -> Result<(), Failure> {
    use reqwest::Method;
    match cmd {
        DestinationsCommand::Create {
            kind,
            target,
            token,
            no_tls,
            server,
        } => {
            let mut body = Map::new();
            body.insert("type".into(), json!(kind));
            if kind == "syslog" {
                body.insert("host".into(), json!(target));
                if no_tls {
                    body.insert("tls".into(), json!(false));
                }
            } else {
                body.insert("url".into(), json!(target));
                if no_tls {
                    return Err(Failure::Refused("--no-tls is for syslog only".into()));
                }
            }
            if let Some(token) = token {
                body.insert("token".into(), json!(token));
            }
            let (_, mut created) = client::call(
                &server,
                Method::POST,
                &["v1", "destinations"],
                Some(&Value::Object(body)),
                TIMEOUT,
            )
            .await?;
            let secret = created.as_object_mut().and_then(|o| o.remove("secret"));
            println!("{}", pretty(&created));
            if let Some(Value::String(secret)) = secret {
                println!(
                    "secret: {secret}\n(shown this once: the receiver checks Sealtrail-Signature with it)"
                );
            }
        }
        DestinationsCommand::List { json, server } => {
            let (_, list) =
                client::call(&server, Method::GET, &["v1", "destinations"], None, TIMEOUT).await?;
            if json {
                println!("{}", pretty(&list));
                return Ok(());
            }
            let all = list["destinations"].as_array().cloned().unwrap_or_default();
            if all.is_empty() {
                println!("no destinations");
                return Ok(());
            }
            println!(
                "{:<36} {:<10} {:<10} {:>10} {:>8}  URL",
                "ID", "TYPE", "STATUS", "DELIVERED", "LAG"
            );
            for d in &all {
                println!(
                    "{:<36} {:<10} {:<10} {:>10} {:>8}  {}",
                    d["id"].as_str().unwrap_or("?"),
                    d["type"].as_str().unwrap_or("?"),
                    d["status"].as_str().unwrap_or("?"),
                    d["delivered_through"],
                    d["lag"],
                    d["url"].as_str().unwrap_or("?"),
                );
                if let Some(error) = d["last_error"].as_str() {
                    println!("    last error: {error}");
                }
            }
        }
        DestinationsCommand::Show { id, server } => {
            let (_, d) = client::call(
                &server,
                Method::GET,
                &["v1", "destinations", &id],
                None,
                TIMEOUT,
            )
            .await?;
            println!("{}", pretty(&d));
        }
        DestinationsCommand::Delete { id, server } => {
            client::call(
                &server,
                Method::DELETE,
                &["v1", "destinations", &id],
                None,
                TIMEOUT,
            )
            .await?;
            println!("destination {id} deleted");
        }
        DestinationsCommand::Resume { id, from, server } => {
            let body = from.map(|n| json!({ "from_sequence": n }));
            let (_, d) = client::call(
                &server,
                Method::POST,
                &["v1", "destinations", &id, "resume"],
                body.as_ref(),
                TIMEOUT,
            )
            .await?;
            println!("{}", pretty(&d));
        }
    }
    Ok(())
}
