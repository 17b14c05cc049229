//! Log-stream destinations (issue 17) in the `destinations` table, one partition per
//! tenant. Gateways create, list, delete and resume them; the chainer that owns a tenant's
//! log partition delivers them (`sealtrail_api::streams`).
//!
//! Every write is a lightweight transaction, so they apply in one order whichever
//! process makes them: the insert `IF NOT EXISTS`, the delete `IF EXISTS`, and every
//! change of the delivery state `IF generation = g`. A delivery task claims the
//! destination by moving `generation` from g to g + 1 and then writes its cursor only
//! while it is still g + 1. A resume claims it the same way, so the task that was
//! delivering stops at its next write (it learns the destination moved on) and the owner
//! starts a new one from the resumed state; so does a chainer that lost the partition
//! and has not noticed yet. Such a stale task can send one batch that a receiver already
//! has (the at-least-once window), but it can never write its older cursor over a newer
//! one. These writes are one per delivered batch, not per event.

use futures::StreamExt;
use sealtrail_store::{DeliveryState, Destination, StoreResult};

use crate::{ScyllaStore, corrupt, fence, unavailable};

type Row = (
    String,
    String,
    String,
    String,
    Vec<u8>,
    String,
    i64,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

const COLUMNS: &str = "tenant_id, id, kind, url, sealed_secret, created_at, delivered_through, \
                       paused, failing_since, last_error, last_success_at, generation";

fn destination(row: Row) -> Destination {
    let (
        tenant_id,
        id,
        kind,
        url,
        sealed_secret,
        created_at,
        through,
        paused,
        since,
        error,
        success,
        generation,
    ) = row;
    Destination {
        id,
        tenant_id,
        kind,
        url,
        sealed_secret,
        created_at,
        state: DeliveryState {
            delivered_through: through.max(0) as u64,
            paused,
            failing_since: since,
            last_error: error,
            last_success_at: success,
            generation: generation.max(0) as u64,
        },
    }
}

impl ScyllaStore {
    /// Runs one conditional write (`{ks}` in `cql` is the keyspace); whether it applied.
    async fn conditional(
        &self,
        cql: &str,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> StoreResult<bool> {
        let result = self
            .session
            .query_unpaged(cql.replace("{ks}", &self.keyspace), values)
            .await
            .map_err(unavailable)?;
        fence::applied(result).map_err(unavailable)
    }

    pub(crate) async fn insert_destination(&self, d: Destination) -> StoreResult<()> {
        let cql = format!(
            "INSERT INTO {{ks}}.destinations ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        );
        let applied = self
            .conditional(
                &cql,
                (
                    d.tenant_id.as_str(),
                    d.id.as_str(),
                    d.kind.as_str(),
                    d.url.as_str(),
                    d.sealed_secret.as_slice(),
                    d.created_at.as_str(),
                    d.state.delivered_through as i64,
                    d.state.paused,
                    d.state.failing_since.as_deref(),
                    d.state.last_error.as_deref(),
                    d.state.last_success_at.as_deref(),
                    d.state.generation as i64,
                ),
            )
            .await?;
        if applied {
            Ok(())
        } else {
            Err(sealtrail_store::StoreError::Corrupt(format!(
                "destination id {} is already taken",
                d.id
            )))
        }
    }

    pub(crate) async fn select_destinations(
        &self,
        tenant: Option<&str>,
    ) -> StoreResult<Vec<Destination>> {
        let ks = &self.keyspace;
        let mut out = Vec::new();
        match tenant {
            Some(tenant) => {
                let rows = self
                    .session
                    .query_unpaged(
                        format!("SELECT {COLUMNS} FROM {ks}.destinations WHERE tenant_id = ?"),
                        (tenant,),
                    )
                    .await
                    .map_err(unavailable)?
                    .into_rows_result()
                    .map_err(unavailable)?;
                for row in rows.rows::<Row>().map_err(corrupt)? {
                    out.push(destination(row.map_err(corrupt)?));
                }
            }
            None => {
                let mut rows = self
                    .session
                    .query_iter(format!("SELECT {COLUMNS} FROM {ks}.destinations"), ())
                    .await
                    .map_err(unavailable)?
                    .rows_stream::<Row>()
                    .map_err(unavailable)?;
                while let Some(row) = rows.next().await {
                    out.push(destination(row.map_err(unavailable)?));
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.tenant_id, &a.created_at, &a.id).cmp(&(&b.tenant_id, &b.created_at, &b.id))
        });
        Ok(out)
    }

    pub(crate) async fn remove_destination(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        self.conditional(
            "DELETE FROM {ks}.destinations WHERE tenant_id = ? AND id = ? IF EXISTS",
            (tenant, id),
        )
        .await
    }

    pub(crate) async fn claim_destination(
        &self,
        tenant: &str,
        id: &str,
        generation: u64,
    ) -> StoreResult<bool> {
        self.conditional(
            "UPDATE {ks}.destinations SET generation = ? WHERE tenant_id = ? AND id = ? IF generation = ?",
            (generation as i64 + 1, tenant, id, generation as i64),
        )
        .await
    }

    pub(crate) async fn update_delivery(
        &self,
        tenant: &str,
        id: &str,
        s: DeliveryState,
    ) -> StoreResult<bool> {
        self.conditional(
            "UPDATE {ks}.destinations SET delivered_through = ?, paused = ?, failing_since = ?, \
             last_error = ?, last_success_at = ? WHERE tenant_id = ? AND id = ? IF generation = ?",
            (
                s.delivered_through as i64,
                s.paused,
                s.failing_since.as_deref(),
                s.last_error.as_deref(),
                s.last_success_at.as_deref(),
                tenant,
                id,
                s.generation as i64,
            ),
        )
        .await
    }
}
