//! The CQL schema and `sealtrail migrate`.
//!
//! Tables (keyspace configurable):
//! - `meta`: `key → value`; holds `log_partitions` (the Kafka topic's partition count, which
//!   fixes the tenant → partition mapping the `heads` table is keyed by) and
//!   `schema_version`.
//! - `heads`: one Cassandra partition per *log* partition. Static columns `epoch`/`owner`
//!   fence chainers (see `fence.rs`); one row per tenant holds its chain head. Because a
//!   log partition's tenants share one Cassandra partition, a chainer advances all of its
//!   batch's heads *and* checks its epoch in one conditional (LWT) batch.
//! - `events`: `((tenant_id, bucket), sequence_number)` with `bucket = seq >> 14`, so a
//!   Cassandra partition holds at most 16,384 records of one tenant; rows beyond the
//!   tenant's head are not yet committed and are never returned.
//! - `event_ids`: `((tenant_id, shard), event_id) → sequence_number`, for idempotency and
//!   `GET /v1/events/{id}`; `shard` = murmur2(id) mod 16, so the ids of one append land in
//!   at most 16 partitions per tenant and are written as a few batches, not one mutation
//!   each (a mutation per partition is what a node pays for; see the README's benchmark).
//! - `tree_nodes`: `((tenant_id, level, bucket), idx) → hash`, the complete nodes of each
//!   tenant's Merkle tree (`bucket = idx >> 14`), written with the records that complete
//!   them, so proofs read O(log n) rows.
//! - `receipts`: `((tenant_id, receipt_id)) → receipt JSON`.
//! - `api_keys` (by SHA-256 of the key) and `api_keys_by_id`.
//!
//! Every statement is `IF NOT EXISTS`, so `migrate` is idempotent; a keyspace migrated with
//! another partition count is refused rather than silently re-mapped.

use scylla::client::session::Session;

use crate::{ScyllaError, meta_get};

/// Records per `events` partition, as a power of two.
pub const BUCKET_BITS: u32 = 14;
pub const SCHEMA_VERSION: &str = "1";
/// Partitions of a tenant's id index.
pub const ID_SHARDS: u32 = 16;

/// The id-index shard of an event id.
pub fn id_shard(event_id: &str) -> i32 {
    sealtrail_core::partition::partition_for(event_id, ID_SHARDS) as i32
}

/// The `bucket` of a sequence number.
pub fn bucket(sequence_number: u64) -> i64 {
    (sequence_number >> BUCKET_BITS) as i64
}

/// Replication of the keyspace `migrate` creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy` with this factor (one data center; tests, small clusters).
    Simple(u32),
    /// `NetworkTopologyStrategy` with this factor in every listed data center.
    PerDatacenter(Vec<(String, u32)>),
}

impl Replication {
    fn cql(&self) -> String {
        match self {
            Replication::Simple(rf) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}")
            }
            Replication::PerDatacenter(dcs) => {
                let parts: Vec<String> =
                    dcs.iter().map(|(dc, rf)| format!("'{dc}': {rf}")).collect();
                format!(
                    "{{'class': 'NetworkTopologyStrategy', {}}}",
                    parts.join(", ")
                )
            }
        }
    }
}

fn tables(ks: &str) -> Vec<String> {
    vec![
        format!("CREATE TABLE IF NOT EXISTS {ks}.meta (key text PRIMARY KEY, value text)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.heads (log_partition int, tenant_id text, \
             epoch bigint static, owner text static, sequence_number bigint, hash text, \
             PRIMARY KEY (log_partition, tenant_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.events (tenant_id text, bucket bigint, \
             sequence_number bigint, event_id text, hash text, input_digest text, \
             canonical blob, PRIMARY KEY ((tenant_id, bucket), sequence_number)) \
             WITH CLUSTERING ORDER BY (sequence_number ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.event_ids (tenant_id text, shard int, event_id text, \
             sequence_number bigint, PRIMARY KEY ((tenant_id, shard), event_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.tree_nodes (tenant_id text, level int, bucket bigint, \
             idx bigint, hash blob, PRIMARY KEY ((tenant_id, level, bucket), idx))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.receipts (tenant_id text, receipt_id text, \
             body text, PRIMARY KEY ((tenant_id, receipt_id)))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.api_keys (key_hash text PRIMARY KEY, \
             key_id text, tenant_id text, body text)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.api_keys_by_id (key_id text PRIMARY KEY, key_hash text)"
        ),
        // Chainers' heartbeats (see `crate::beats`): rows expire by themselves.
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.chainer_beats (log_partition int PRIMARY KEY, \
             owner text)"
        ),
    ]
}

/// Stores `value` under `key` in the keyspace's `meta` table unless a value is there, and
/// returns the stored value (a conditional insert: concurrent callers agree).
pub async fn meta_set_once(
    session: &Session,
    keyspace: &str,
    key: &str,
    value: &str,
) -> Result<String, ScyllaError> {
    crate::check_identifier(keyspace)?;
    let insert = format!("INSERT INTO {keyspace}.meta (key, value) VALUES (?, ?) IF NOT EXISTS");
    session
        .query_unpaged(insert, (key, value))
        .await
        .map_err(ScyllaError::from_execution)?;
    meta_get(session, keyspace, key)
        .await?
        .ok_or_else(|| ScyllaError::Unavailable(format!("{keyspace}.meta lost {key}")))
}

/// Creates or updates the keyspace and tables, and records `log_partitions`. Idempotent.
/// Fails when the keyspace was migrated for another partition count.
pub async fn migrate(
    session: &Session,
    keyspace: &str,
    replication: &Replication,
    log_partitions: u32,
) -> Result<(), ScyllaError> {
    crate::check_identifier(keyspace)?;
    // ScyllaDB creates keyspaces with tablets by default, and tablets do not support the
    // lightweight transactions the heads table relies on: ask for vnodes. Cassandra does
    // not know the option, so it gets the plain statement.
    let ddl = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
        replication.cql()
    );
    let scylla_ddl = format!("{ddl} AND tablets = {{'enabled': false}}");
    if let Err(err) = session.query_unpaged(scylla_ddl, ()).await {
        tracing::debug!(%err, "keyspace without the tablets option (not ScyllaDB)");
        session
            .query_unpaged(ddl, ())
            .await
            .map_err(ScyllaError::from_execution)?;
    }
    for ddl in tables(keyspace) {
        session
            .query_unpaged(ddl, ())
            .await
            .map_err(ScyllaError::from_execution)?;
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|e| ScyllaError::Unavailable(format!("schema agreement: {e}")))?;
    match meta_get(session, keyspace, "log_partitions").await? {
        Some(existing) if existing == log_partitions.to_string() => {}
        Some(existing) => {
            return Err(ScyllaError::Config(format!(
                "keyspace {keyspace} was migrated for {existing} log partitions, not {log_partitions}; \
                 tenants are mapped to partitions by that count, so it cannot change in place"
            )));
        }
        None => {
            let insert = format!(
                "INSERT INTO {keyspace}.meta (key, value) VALUES ('log_partitions', ?) IF NOT EXISTS"
            );
            session
                .query_unpaged(insert, (log_partitions.to_string(),))
                .await
                .map_err(ScyllaError::from_execution)?;
            // A concurrent migrate with another count may have won the race.
            let stored = meta_get(session, keyspace, "log_partitions").await?;
            if stored.as_deref() != Some(log_partitions.to_string().as_str()) {
                return Err(ScyllaError::Config(format!(
                    "keyspace {keyspace} has log_partitions {stored:?}, not {log_partitions}"
                )));
            }
        }
    }
    let version = format!("INSERT INTO {keyspace}.meta (key, value) VALUES ('schema_version', ?)");
    session
        .query_unpaged(version, (SCHEMA_VERSION,))
        .await
        .map_err(ScyllaError::from_execution)?;
    Ok(())
}
