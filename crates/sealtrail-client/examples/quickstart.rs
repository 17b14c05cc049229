//! Quick start: `sealtrail serve` in one terminal, a key from
//! `sealtrail keys create --tenant acme --scopes read,write`, then
//!
//! ```text
//! SEALTRAIL_KEY=alk_live_… cargo run -p sealtrail-client --example quickstart
//! ```
//!
//! Logs one event (sync), a few more through the batcher, reads them back, checks the
//! hash of a record locally and verifies the chain on the server.

use sealtrail_client::proto::{self as pb, record_to_json};
use sealtrail_client::{Client, Event};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::var("SEALTRAIL_KEY").map_err(|_| "set SEALTRAIL_KEY to an API key")?;
    let endpoint =
        std::env::var("SEALTRAIL_GRPC").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let client = Client::builder(endpoint, key).build()?;

    let record = client
        .log_event(
            Event::new("user_1", "document.delete", "doc_1", "document")
                .actor_type(pb::ActorType::Human)
                .metadata(serde_json::json!({"ip": "10.0.0.1"}))
                .build(),
        )
        .await?;
    println!("committed #{} {}", record.sequence_number, record.hash);

    let batcher = client.batcher().await?;
    for i in 0..100 {
        batcher
            .send(Event::new("svc", "job.run", &format!("job_{i}"), "job").build())
            .await?;
    }
    let report = batcher.close().await?;
    println!(
        "batcher: {} delivered, {} rejected",
        report.delivered,
        report.rejected.len()
    );

    // The record as REST serves it; its JCS form hashes to `hash` (any JCS library works).
    println!("{}", record_to_json(&client.get_event(&record.id).await?)?);
    let page = client
        .list_events(pb::ListEventsRequest {
            page_size: 5,
            ..Default::default()
        })
        .await?;
    println!("{} events in all", page.total);
    let verdict = client.verify_chain(Default::default()).await?;
    println!(
        "chain valid: {} ({} events)",
        verdict.valid, verdict.events_checked
    );
    Ok(())
}
