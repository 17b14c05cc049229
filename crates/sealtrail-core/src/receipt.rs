//! Receipts: the outcome of one ingest request (one event or one batch).

use serde::{Deserialize, Serialize};

/// Where a receipt stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    /// Durable in the log, not yet chained.
    Queued,
    /// Chained and stored; `ids` are in the chain.
    Committed,
    /// Nothing of the request was committed; `error_message` says why.
    Failed,
}

/// One rejected item of a request, by its index in the request (0 for a single event).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub index: u32,
    pub code: String,
    pub message: String,
}

/// The wire shape of fact0's `AsyncReceipt` (which includes `BatchResult`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub receipt_id: String,
    pub status: ReceiptStatus,
    pub accepted: u32,
    pub rejected: u32,
    /// Ids of the accepted events, in request order.
    pub ids: Vec<String>,
    pub errors: Vec<ItemError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<String>,
}

impl Receipt {
    /// The receipt of a request taken into the log and not committed yet: its accepted
    /// events' `ids` (so `accepted` is their count) and its rejected items. Every receipt
    /// starts here — the gateway's `202`, a pending receipt looked up before its commit,
    /// and the chainer's, which adds the ids it chains and then [`settle`](Self::settle)s.
    pub fn queued(
        receipt_id: String,
        created_at: String,
        ids: Vec<String>,
        errors: Vec<ItemError>,
    ) -> Self {
        Self {
            receipt_id,
            status: ReceiptStatus::Queued,
            accepted: ids.len() as u32,
            rejected: errors.len() as u32,
            ids,
            errors,
            error_message: None,
            created_at,
            committed_at: None,
        }
    }

    /// Decides the status from the counts: committed when anything was accepted (or the
    /// request was empty), failed when every item was rejected.
    pub fn settle(&mut self) {
        if self.accepted == 0 && self.rejected > 0 {
            self.status = ReceiptStatus::Failed;
            let first = &self.errors[0];
            self.error_message = Some(if self.rejected == 1 {
                format!("{}: {}", first.code, first.message)
            } else {
                format!(
                    "all {} events were rejected; first: {}: {}",
                    self.rejected, first.code, first.message
                )
            });
        } else {
            self.status = ReceiptStatus::Committed;
        }
    }
}
