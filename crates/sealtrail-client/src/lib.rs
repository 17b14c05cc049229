//! The Rust SDK of sealtrail, over its gRPC API (`sealtrail.v1.AuditLog`).
//!
//! - [`Client`]: typed calls — sync ingest of one event or a batch, streaming ingest,
//!   receipts, records, lists, verification, redaction and a resumable tail — each
//!   retried with exponential backoff that honours the server's retry hints
//!   ([`RetryPolicy`]; a redaction only when the server did nothing).
//! - [`Batcher`]: fire-and-forget sending with batches bounded in size and time; what
//!   cannot be delivered is returned to the caller or spooled to a file and replayed,
//!   by the caller's choice ([`OnFailure`]). Nothing is dropped silently.
//! - Every event sent gets a client-side id (UUIDv7) when it has none, so a retry can
//!   never commit it twice: the server answers a known id with the original record.
//!
//! Records arrive as [`proto::Record`]; [`proto::record_to_json`] gives the REST JSON
//! form, which hashes (RFC 8785 + SHA-256) to the record's `hash`.
//!
//! ```no_run
//! use sealtrail_client::{Client, Event, OnFailure};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), sealtrail_client::ClientError> {
//! let client = Client::builder("http://127.0.0.1:50051", "alk_live_…")
//!     .max_batch_events(500)
//!     .max_batch_delay(std::time::Duration::from_millis(20))
//!     .on_failure(OnFailure::Spool("audit-spool.jsonl".into()))
//!     .build()?;
//!
//! // One event, committed before this returns.
//! let record = client
//!     .log_event(
//!         Event::new("user_1", "document.delete", "doc_9", "document")
//!             .actor_type(sealtrail_client::proto::ActorType::Human)
//!             .metadata(json!({"ip": "10.0.0.1"}))
//!             .build(),
//!     )
//!     .await?;
//! println!("sequence {} hash {}", record.sequence_number, record.hash);
//!
//! // Many events, batched in the background.
//! let batcher = client.batcher().await?;
//! for i in 0..10_000 {
//!     batcher
//!         .send(Event::new("svc", "job.run", &format!("job_{i}"), "job").build())
//!         .await?;
//! }
//! let report = batcher.close().await?;
//! println!("{} delivered, {} rejected", report.delivered, report.rejected.len());
//! # Ok(())
//! # }
//! ```
//!
//! See also `examples/` (`quickstart`, and `grpc_bench`, the streaming benchmark).
#![forbid(unsafe_code)]

mod batcher;
mod client;
mod error;
mod retry;

pub use batcher::{Batcher, DeliveryReport};
pub use client::{BearerAuth, Client, ClientBuilder, OnFailure, RawClient, ensure_id};
pub use error::ClientError;
pub use retry::{RetryPolicy, is_retryable, retry_hint};
/// The generated messages and conversions (`sealtrail-proto`).
pub use sealtrail_proto as proto;

use sealtrail_proto::{ActorType, AuditEventInput, Outcome};

/// Builds an [`AuditEventInput`]; the outcome defaults to success.
#[derive(Debug, Clone)]
pub struct Event(AuditEventInput);

impl Event {
    /// An event: `actor_id` did `action` (dot notation) to a resource of `resource_type`.
    pub fn new(actor_id: &str, action: &str, resource_id: &str, resource_type: &str) -> Self {
        Event(AuditEventInput {
            actor: Some(proto::Actor {
                id: actor_id.into(),
                ..Default::default()
            }),
            action: action.into(),
            resource: Some(proto::Resource {
                id: resource_id.into(),
                r#type: resource_type.into(),
                name: None,
            }),
            outcome: Outcome::Success as i32,
            ..Default::default()
        })
    }
    /// The idempotency key (default: a UUIDv7 given when the event is sent).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.0.id = Some(id.into());
        self
    }
    /// When it happened (RFC 3339; default: when sealtrail accepts it).
    pub fn timestamp(mut self, timestamp: impl Into<String>) -> Self {
        self.0.timestamp = Some(timestamp.into());
        self
    }
    pub fn actor_type(mut self, actor_type: ActorType) -> Self {
        if let Some(actor) = self.0.actor.as_mut() {
            actor.r#type = actor_type as i32;
        }
        self
    }
    pub fn actor_email(mut self, email: impl Into<String>) -> Self {
        if let Some(actor) = self.0.actor.as_mut() {
            actor.email = Some(email.into());
        }
        self
    }
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        if let Some(resource) = self.0.resource.as_mut() {
            resource.name = Some(name.into());
        }
        self
    }
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.0.outcome = outcome as i32;
        self
    }
    /// Metadata: a JSON object, sent as JSON text (exact, unlike protobuf's Struct).
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.0.metadata_json = metadata.to_string();
        self
    }
    pub fn build(self) -> AuditEventInput {
        self.0
    }
}

impl From<Event> for AuditEventInput {
    fn from(event: Event) -> Self {
        event.0
    }
}
