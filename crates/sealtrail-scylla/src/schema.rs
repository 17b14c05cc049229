//! The CQL schema and `sealtrail migrate`.
//!
//! Tables (keyspace configurable):
//! - `meta`: `key → value`; holds `log_partitions` (the Kafka topic's partition count, which
//!   fixes the tenant → partition mapping the `heads` table is keyed by) and
//!   `schema_version`.
//! - `heads`: one Cassandra partition per *log* partition. Static columns `epoch`/`owner`
//!   fence chainers, and `claimed_at` (schema version 3) is the base of the epoch's write
//!   timestamps for derived rows (see `fence.rs`); one row per tenant holds its chain
//!   head. Because a log partition's tenants share one Cassandra partition, a chainer
//!   advances all of its batch's heads *and* checks its epoch in one conditional (LWT)
//!   batch.
//! - `events`: `((tenant_id, bucket), sequence_number)` with `bucket = seq >> 14`, so a
//!   Cassandra partition holds at most 16,384 records of one tenant; rows beyond the
//!   tenant's head are not yet committed and are never returned.
//! - `ids`: `((tenant_id, bucket), event_id) → sequence_number`, for idempotency and
//!   `GET /v1/events/{id}`. `bucket` ([`id_bucket`]) is the UUIDv7 timestamp `>> 16` (about
//!   a minute) for a UUIDv7 id — what the server mints — so the ids of a gather share one
//!   partition per tenant; any other id goes to one of 16 hash shards (negative buckets).
//!   **Derived** (see `derive.rs`).
//! - `tree`: `((tenant_id, span), level, idx) → hash`, the complete nodes of level 3 and
//!   up of each tenant's Merkle tree (lower ones are computed from ≤ 4 record hashes), so
//!   proofs read O(log n) rows. `span` = the node's first leaf `>> 16` for
//!   levels below 16 and `-1` above, so the nodes a run of consecutive records completes
//!   share one partition (one mutation) instead of one per level. **Derived.**
//! - `facets`: `((tenant_id, kind, grp), value, block) → count, postings, min_ts, max_ts`:
//!   for every complete block of 1,024 records, one row per filterable value in it, so a
//!   filtered list and its `total` read the matching rows only (see `facets.rs`; `grp` is
//!   the block `>> 10`, about a million records per partition). **Derived.**
//! - `derived`: `((log_partition), tenant_id) → derived_to`: every record of the tenant up
//!   to `derived_to` has its derived rows (`event_ids`, `tree`). Written with
//!   `USING TIMESTAMP derived_to`, so a late, lower watermark (a slow former owner) never
//!   overwrites a higher one. Records past it are committed but not yet derived: reads
//!   consult them in `events` directly.
//! - `event_ids`, `tree_nodes` and `receipts`: the tables of schema version 1 (one
//!   partition per id shard, per tree level and per receipt); no longer written or read.
//!   A keyspace migrated before has them; its chains have no `derived` rows, so each
//!   partition's next owner derives their `ids` and `tree` rows once (logged). Receipts
//!   stored before the upgrade are not read (they are answered 404).
//! - `receipts_by_bucket`: `((tenant_id, bucket), receipt_id) → receipt JSON`, bucketed
//!   like `ids` (receipt ids are UUIDv7s), so a chainer batch's receipts cost one
//!   partition write per tenant, not one per receipt.
//! - `api_keys` (by SHA-256 of the key) and `api_keys_by_id`.
//! - `retention`: `tenant_id → retained_from, previous`: the tenant's retention boundary
//!   (issue 15; the first record kept) and the one before it, written by the chainer that
//!   derives a prune event **before** it removes the records (`derive.rs`), with
//!   `USING TIMESTAMP retained_from`, so it never moves back. Reads start at it.
//! - `retention_policies`: `tenant_id → days, events`, set through `PUT /v1/retention`.
//! - `leases`: `name → holder`, conditional and expiring (TTL): the gateway holding
//!   `retention` runs the pruner, so gateways do not each append prune events.
//! - `destinations`: log-stream destinations by tenant, with their delivery state; every
//!   write is conditional (see `crate::destinations`).
//!
//! Every statement is `IF NOT EXISTS`, so `migrate` is idempotent; a keyspace migrated with
//! another partition count is refused rather than silently re-mapped.

use scylla::client::session::Session;

use crate::{ScyllaError, meta_get};

/// Records per `events` partition, as a power of two.
pub const BUCKET_BITS: u32 = 14;
pub const SCHEMA_VERSION: &str = "3";
/// Hash shards of a tenant's ids (and receipt ids) that are not UUIDv7s.
pub const ID_SHARDS: u32 = 16;

/// The `ids` / `receipts_by_bucket` partition (with the tenant) of an event or receipt
/// id: a UUIDv7's millisecond timestamp `>> 16` (≈ 65 s), else `-1 - shard` for one of
/// [`ID_SHARDS`] hash shards.
pub fn id_bucket(id: &str) -> i64 {
    match sealtrail_core::event::uuid7_millis(id) {
        Some(ms) => (ms >> 16) as i64,
        None => -1 - sealtrail_core::partition::partition_for(id, ID_SHARDS) as i64,
    }
}

/// The lowest stored tree level: a node below it covers at most 4 records, and is computed
/// from their hashes when asked for (so a record costs a quarter of a `tree` row, not two).
pub const MIN_TREE_LEVEL: u8 = 3;

/// Leaves per `tree` span below [`TOP_LEVEL`], as a power of two.
pub const SPAN_BITS: u32 = 16;
/// Nodes of this level and above share one `tree` partition per tenant (span `-1`): there
/// are few of them (one per 65,536 records).
pub const TOP_LEVEL: u8 = 16;

/// The `tree` partition (`span`) of a node.
pub fn span(id: sealtrail_core::merkle::NodeId) -> i64 {
    if id.level >= TOP_LEVEL {
        -1
    } else {
        (id.start() >> SPAN_BITS) as i64
    }
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

/// `gc_grace_seconds` of the `facets` and `ids` tables (see [`tables`]).
pub const DELETED_ROWS_GC_GRACE_SECONDS: u32 = 3 * 3600;

fn tables(ks: &str) -> Vec<String> {
    vec![
        format!("CREATE TABLE IF NOT EXISTS {ks}.meta (key text PRIMARY KEY, value text)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.heads (log_partition int, tenant_id text, \
             epoch bigint static, owner text static, claimed_at bigint static, \
             sequence_number bigint, hash text, \
             PRIMARY KEY (log_partition, tenant_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.events (tenant_id text, bucket bigint, \
             sequence_number bigint, event_id text, hash text, input_digest text, \
             canonical blob, PRIMARY KEY ((tenant_id, bucket), sequence_number)) \
             WITH CLUSTERING ORDER BY (sequence_number ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.ids (tenant_id text, bucket bigint, event_id text, \
             sequence_number bigint, PRIMARY KEY ((tenant_id, bucket), event_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.tree (tenant_id text, span bigint, level int, \
             idx bigint, hash blob, PRIMARY KEY ((tenant_id, span), level, idx))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.facets (tenant_id text, kind int, grp bigint, \
             value text, block bigint, count int, postings blob, min_ts text, max_ts text, \
             PRIMARY KEY ((tenant_id, kind, grp), value, block))"
        ),
        // A redaction deletes the filter-index rows of values only the erased record had,
        // and a row's tombstone keeps its key — the value — until `gc_grace_seconds` have
        // passed and a compaction purges it. Cassandra's default is 10 days (for repairs
        // of a replica that missed a delete); a facet row that comes back so would only
        // let a filter find a record that reads redacted, so 3 hours (the default hint
        // window) is enough here. Set on every migrate (idempotent).
        format!("ALTER TABLE {ks}.facets WITH gc_grace_seconds = {DELETED_ROWS_GC_GRACE_SECONDS}"),
        // Retention deletes the `ids` rows of the records it removes (`retention.rs`): the
        // same reasoning — an `ids` row that came back would name a removed record, which
        // reads as not found.
        format!("ALTER TABLE {ks}.ids WITH gc_grace_seconds = {DELETED_ROWS_GC_GRACE_SECONDS}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.derived (log_partition int, tenant_id text, \
             derived_to bigint, PRIMARY KEY (log_partition, tenant_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.receipts_by_bucket (tenant_id text, bucket bigint, \
             receipt_id text, body text, PRIMARY KEY ((tenant_id, bucket), receipt_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.api_keys (key_hash text PRIMARY KEY, \
             key_id text, tenant_id text, body text)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.api_keys_by_id (key_id text PRIMARY KEY, key_hash text)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.retention (tenant_id text PRIMARY KEY, \
             retained_from bigint, previous bigint)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.retention_policies (tenant_id text PRIMARY KEY, \
             days int, events bigint)"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.leases (name text PRIMARY KEY, holder text)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.destinations (tenant_id text, id text, kind text, \
             url text, sealed_secret blob, created_at text, delivered_through bigint, \
             paused boolean, failing_since text, last_error text, last_success_at text, \
             generation bigint, PRIMARY KEY (tenant_id, id))"
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
    // Schema version 3: `heads.claimed_at`, added to a keyspace migrated before (CQL has no
    // `ADD IF NOT EXISTS` that both Cassandra and ScyllaDB take, so look first).
    let has_claimed_at = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? \
             AND table_name = 'heads' AND column_name = 'claimed_at'",
            (keyspace,),
        )
        .await
        .map_err(ScyllaError::from_execution)?
        .into_rows_result()
        .map_err(|e| ScyllaError::Unavailable(e.to_string()))?
        .rows_num()
        > 0;
    if !has_claimed_at {
        session
            .query_unpaged(
                format!("ALTER TABLE {keyspace}.heads ADD claimed_at bigint static"),
                (),
            )
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
