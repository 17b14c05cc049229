//! Streaming-ingest benchmark (`make bench` runs it): sends events over several gRPC
//! `Ingest` streams at once and reports committed events/s — an event counts once its
//! acknowledgement carries the committed record.
//!
//! ```text
//! cargo run --release -p sealtrail-client --example grpc_bench -- \
//!     --endpoint http://127.0.0.1:50051 --keys alk_live_a,alk_live_b --events 1000000 --streams 8
//! ```
//!
//! Streams are spread over the keys (one tenant each). Events carry no id, as in the
//! REST benchmark: the server generates UUIDv7s.

use std::time::Instant;

use futures::StreamExt;
use sealtrail_client::proto::{self as pb, IngestRequest};
use sealtrail_client::{Client, Event};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = arg(&args, "--endpoint", "http://127.0.0.1:50051");
    let keys: Vec<String> = arg(&args, "--keys", "")
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        return Err("--keys KEY[,KEY…] is required".into());
    }
    let total: u64 = arg(&args, "--events", "1000000").parse()?;
    let streams: u64 = arg(&args, "--streams", "8").parse()?;
    let event = Event::new("user_4821", "document.delete", "doc_99231", "document")
        .actor_type(pb::ActorType::Human)
        .actor_email("ada@example.com")
        .resource_name("Q3 board deck")
        .metadata(serde_json::json!({"ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "request_id": "req_8f1c2a"}))
        .build();

    // One client (connection) per stream, so streams do not share one HTTP/2 connection.
    let mut tasks = Vec::new();
    let started = Instant::now();
    for s in 0..streams {
        let client =
            Client::builder(endpoint.clone(), keys[s as usize % keys.len()].clone()).build()?;
        let n = total / streams + u64::from(s < total % streams);
        let event = event.clone();
        tasks.push(tokio::spawn(async move {
            let requests = futures::stream::iter(0..n).map(move |_| IngestRequest {
                event: Some(event.clone()),
            });
            let mut acks = client.ingest(requests).await?;
            let (mut committed, mut failed) = (0u64, 0u64);
            while let Some(ack) = acks.next().await {
                match ack?.result {
                    Some(pb::ingest_response::Result::Record(_)) => committed += 1,
                    _ => failed += 1,
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((committed, failed))
        }));
    }
    let (mut committed, mut failed) = (0u64, 0u64);
    for task in tasks {
        let (c, f) = task.await?.map_err(|e| e.to_string())?;
        committed += c;
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "BENCH_GRPC committed={committed} failed={failed} seconds={secs:.3} streams={streams} tenants={} events_per_s={:.0}",
        keys.len(),
        committed as f64 / secs
    );
    Ok(())
}
