//! [`Batcher`]: fire-and-forget sending with batching, retries and no silent drops.
//!
//! Events are queued in memory and sent as synchronous `LogBatch` calls of at most
//! `max_batch_events`, or after `max_batch_delay` at the latest. A batch that still fails
//! after the retry policy is either handed back to the caller (the next `flush`/`close`
//! returns [`ClientError::Undelivered`]) or appended to a spool file that is delivered on
//! the next flush and at the next start ([`OnFailure`]). Events the server rejects for
//! good (invalid, or an id reused with other content) are reported in
//! [`DeliveryReport::rejected`] — never dropped without a word.
//!
//! Spool format: one JSON event per line (REST's `AuditEventInput`, id included), written
//! with an fsync before the batch counts as spooled. Crash windows: the process dying
//! while events sit in memory loses those (the caller has not seen a flush succeed for
//! them); dying after a spool replay was delivered but before the file was truncated
//! sends those events again on the next start, which is harmless: every event carries
//! its id, and the server answers a known id with the original record.

use std::io::{BufRead, Write};
use std::path::Path;

use sealtrail_proto as pb;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::{Client, ensure_id};
use crate::error::ClientError;

/// What happened to the events since the previous report.
#[derive(Debug, Default, Clone)]
pub struct DeliveryReport {
    /// Events committed (including spooled events replayed and committed).
    pub delivered: u64,
    /// Events appended to the spool file.
    pub spooled: u64,
    /// Events the server refused for good, with its error code and message.
    pub rejected: Vec<(pb::AuditEventInput, pb::ItemError)>,
}

// Events are the common case; boxing them would add an allocation per event to save
// queue space only while a flush is queued.
#[allow(clippy::large_enum_variant)]
enum Command {
    Event(pb::AuditEventInput),
    Flush(oneshot::Sender<Result<DeliveryReport, ClientError>>),
}

/// A handle to a background task that batches and delivers events. Dropping it without
/// [`Batcher::close`] still delivers what is queued, but nobody learns the outcome.
pub struct Batcher {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Batcher {
    pub(crate) async fn start(client: Client) -> Result<Batcher, ClientError> {
        let (max_events, _) = client.batch_limits();
        let (commands, rx) = mpsc::channel(max_events * 4);
        let mut worker = Worker {
            client,
            pending: Vec::new(),
            report: DeliveryReport::default(),
            undelivered: Vec::new(),
            last_error: None,
        };
        // Deliver what an earlier run spooled before anything new.
        worker.replay_spool().await;
        let task = tokio::spawn(worker.run(rx));
        Ok(Batcher { commands, task })
    }

    /// Queues one event (it gets an id now if it has none). Waits while the queue is full.
    pub async fn send(&self, mut event: pb::AuditEventInput) -> Result<(), ClientError> {
        ensure_id(&mut event);
        self.commands
            .send(Command::Event(event))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Delivers everything queued (and replays the spool), then reports what happened
    /// since the last report; `Err(Undelivered)` carries events that could not be sent
    /// when the batcher returns failures instead of spooling.
    pub async fn flush(&self) -> Result<DeliveryReport, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// [`Batcher::flush`], then stops the background task.
    pub async fn close(self) -> Result<DeliveryReport, ClientError> {
        let report = self.flush().await;
        drop(self.commands);
        let _ = self.task.await;
        report
    }
}

struct Worker {
    client: Client,
    pending: Vec<pb::AuditEventInput>,
    report: DeliveryReport,
    undelivered: Vec<pb::AuditEventInput>,
    last_error: Option<ClientError>,
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let (max_events, max_delay) = self.client.batch_limits();
        let mut deadline: Option<Instant> = None;
        loop {
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Event(event)) => {
                        if self.pending.is_empty() {
                            deadline = Some(Instant::now() + max_delay);
                        }
                        self.pending.push(event);
                        if self.pending.len() >= max_events {
                            self.deliver_pending().await;
                            deadline = None;
                        }
                    }
                    Some(Command::Flush(reply)) => {
                        self.deliver_pending().await;
                        deadline = None;
                        self.replay_spool().await;
                        let _ = reply.send(self.take_report());
                    }
                    None => {
                        self.deliver_pending().await;
                        return;
                    }
                },
                _ = timer => {
                    self.deliver_pending().await;
                    deadline = None;
                }
            }
        }
    }

    fn take_report(&mut self) -> Result<DeliveryReport, ClientError> {
        let report = std::mem::take(&mut self.report);
        match self.last_error.take() {
            None => Ok(report),
            Some(ClientError::Spool {
                path,
                events,
                source,
            }) => Err(ClientError::Spool {
                path,
                events: [events, std::mem::take(&mut self.undelivered)].concat(),
                source,
            }),
            Some(err) => Err(ClientError::Undelivered {
                events: std::mem::take(&mut self.undelivered),
                source: Box::new(err),
            }),
        }
    }

    async fn deliver_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        if let Err(err) = self.deliver(batch.clone()).await {
            match self.client.spool_path().cloned() {
                Some(path) => match append_spool(&path, &batch) {
                    Ok(()) => {
                        tracing::warn!(%err, events = batch.len(), path = %path.display(), "sealtrail unreachable; events spooled");
                        self.report.spooled += batch.len() as u64;
                    }
                    Err(source) => {
                        self.last_error = Some(ClientError::Spool {
                            path,
                            events: batch,
                            source,
                        });
                    }
                },
                None => {
                    self.undelivered.extend(batch);
                    self.last_error = Some(err);
                }
            }
        }
    }

    /// Sends `batch` (retried by the client); rejected items go to the report.
    async fn deliver(&mut self, batch: Vec<pb::AuditEventInput>) -> Result<(), ClientError> {
        let response = self.client.log_batch(batch.clone()).await?;
        let receipt = response.receipt.unwrap_or_default();
        self.report.delivered += u64::from(receipt.accepted);
        for error in receipt.errors {
            if let Some(event) = batch.get(error.index as usize) {
                tracing::warn!(code = %error.code, message = %error.message, "sealtrail rejected an event");
                self.report.rejected.push((event.clone(), error));
            }
        }
        Ok(())
    }

    /// Delivers the spool file's events, then empties it. If delivery fails the file is
    /// left as it is (nothing is appended twice) for the next try.
    async fn replay_spool(&mut self) {
        let Some(path) = self.client.spool_path().cloned() else {
            return;
        };
        let events = match read_spool(&path) {
            Ok(events) => events,
            Err(source) => {
                self.last_error = Some(ClientError::Spool {
                    path,
                    events: vec![],
                    source,
                });
                return;
            }
        };
        if events.is_empty() {
            return;
        }
        let (max_events, _) = self.client.batch_limits();
        let mut done = 0;
        for chunk in events.chunks(max_events) {
            if let Err(err) = self.deliver(chunk.to_vec()).await {
                tracing::warn!(%err, "spool replay failed; keeping the spool for later");
                break;
            }
            done += chunk.len();
        }
        if done == events.len() {
            // Crash window: between the delivery above and this truncation the events
            // are both committed and spooled; a replay then is an idempotent retry.
            if let Err(source) = truncate(&path) {
                self.last_error = Some(ClientError::Spool {
                    path,
                    events: vec![],
                    source,
                });
            }
        } else if done > 0 {
            // Keep only what was not delivered (rewritten atomically).
            if let Err(source) = rewrite_spool(&path, &events[done..]) {
                self.last_error = Some(ClientError::Spool {
                    path,
                    events: vec![],
                    source,
                });
            }
        }
    }
}

fn event_to_line(event: &pb::AuditEventInput) -> String {
    let mut json = pb::event_input_to_json(event);
    let metadata = if event.metadata_json.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        // Invalid metadata text is kept as a string; the server will reject the event.
        serde_json::from_str(&event.metadata_json)
            .unwrap_or_else(|_| serde_json::Value::String(event.metadata_json.clone()))
    };
    json.insert("metadata".into(), metadata);
    serde_json::Value::Object(json).to_string()
}

fn append_spool(path: &Path, events: &[pb::AuditEventInput]) -> std::io::Result<()> {
    let mut text = String::new();
    for event in events {
        text.push_str(&event_to_line(event));
        text.push('\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn read_spool(path: &Path) -> std::io::Result<Vec<pb::AuditEventInput>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut events = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        // A torn last line (a crash mid-append) cannot be parsed; it was never counted
        // as spooled, so the batch it belonged to was reported as undelivered.
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(value) => events.push(pb::event_input_from_json(&value)),
            Err(err) => tracing::warn!(%err, "skipping a torn spool line"),
        }
    }
    Ok(events)
}

fn truncate(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(0)?;
    file.sync_all()
}

fn rewrite_spool(path: &Path, events: &[pb::AuditEventInput]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    append_spool(&tmp, events)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_lines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.jsonl");
        let event = pb::AuditEventInput {
            id: Some("e1".into()),
            action: "a.b".into(),
            actor: Some(pb::Actor {
                id: "u".into(),
                r#type: pb::ActorType::Agent as i32,
                email: None,
            }),
            resource: Some(pb::Resource {
                id: "r".into(),
                r#type: "doc".into(),
                name: Some("n".into()),
            }),
            outcome: pb::Outcome::Failure as i32,
            metadata_json: r#"{"k":[1,2.5,"x"]}"#.into(),
            timestamp: None,
        };
        append_spool(&path, &[event.clone(), event.clone()]).unwrap();
        assert_eq!(read_spool(&path).unwrap(), vec![event.clone(), event]);
        truncate(&path).unwrap();
        assert!(read_spool(&path).unwrap().is_empty());
    }
}
