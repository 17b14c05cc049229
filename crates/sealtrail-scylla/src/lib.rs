//! The store on ScyllaDB / Apache Cassandra (CQL), for distributed mode.
//!
//! Layout: `schema.rs` (tables, `migrate`), `append.rs` (the write path and its crash
//! windows), `read.rs` (queries), `fence.rs` (partition epochs that fence a stale chainer),
//! `keys.rs` (API keys). Every write goes at the configured consistency (default
//! `LOCAL_QUORUM`), conditional writes use `LOCAL_SERIAL`, and reads of a chain never
//! return rows beyond the tenant's committed head.
#![forbid(unsafe_code)]

mod append;
pub mod beats;
mod derive;
mod destinations;
mod facets;
pub mod fence;
mod keys;
mod read;
mod retention;
pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::ExecutionError;
pub use scylla::statement::Consistency;
use scylla::statement::SerialConsistency;
use scylla::statement::prepared::PreparedStatement;
use sealtrail_core::merkle::{Hash, NodeId};
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::ChainHead;
use sealtrail_store::{
    ApiKey, ChainRow, CommitBatch, DeliveryState, Destination, EventPage, EventQuery,
    RetentionPolicy, Store, StoreError, StoreResult, StoredEvent,
};

pub use fence::Epoch;
pub use schema::{Replication, meta_set_once, migrate};

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ScyllaSettings {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// Consistency of reads and writes (`LOCAL_QUORUM` in production with RF 3).
    pub consistency: Consistency,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ScyllaError {
    /// The cluster did not answer (in time); the caller may retry.
    #[error("cassandra/scylla unavailable: {0}")]
    Unavailable(String),
    /// The schema or settings do not fit (run `sealtrail migrate`, fix the keyspace name…).
    #[error("{0}")]
    Config(String),
}

impl ScyllaError {
    pub(crate) fn from_execution(err: ExecutionError) -> Self {
        ScyllaError::Unavailable(err.to_string())
    }
}

impl From<ScyllaError> for StoreError {
    fn from(err: ScyllaError) -> Self {
        StoreError::Unavailable(err.to_string())
    }
}

pub(crate) fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// Runs `futures` with at most `limit` in flight; results in the order of `futures`; the
/// first error wins. (The futures are
/// collected first: lazily mapped streams of borrowing closures trip the compiler's `Send`
/// inference inside `async_trait` methods.)
pub(crate) async fn run_bounded<T, E, F>(futures: Vec<F>, limit: usize) -> Result<Vec<T>, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(futures)
        .buffered(limit)
        .try_collect()
        .await
}

pub(crate) fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

/// Keyspace names are interpolated into CQL, so only plain identifiers are accepted.
pub(crate) fn check_identifier(name: &str) -> Result<(), ScyllaError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(ScyllaError::Config(format!(
            "invalid keyspace name {name:?}: use 1-48 of a-z 0-9 _, starting with a letter"
        )))
    }
}

/// Connects a session with the settings' consistency and timeout.
pub async fn connect(settings: &ScyllaSettings) -> Result<Session, ScyllaError> {
    let profile = ExecutionProfile::builder()
        .consistency(settings.consistency)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(settings.request_timeout))
        .build();
    SessionBuilder::new()
        .known_nodes(&settings.nodes)
        .connection_timeout(Duration::from_secs(5))
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .map_err(|e| {
            ScyllaError::Unavailable(format!(
                "cannot connect to {} ({e}); is Cassandra/Scylla running there?",
                settings.nodes.join(",")
            ))
        })
}

pub(crate) async fn meta_get(
    session: &Session,
    keyspace: &str,
    key: &str,
) -> Result<Option<String>, ScyllaError> {
    let query = format!("SELECT value FROM {keyspace}.meta WHERE key = ?");
    let result = session
        .query_unpaged(query, (key,))
        .await
        .map_err(ScyllaError::from_execution)?;
    let rows = result
        .into_rows_result()
        .map_err(|e| ScyllaError::Unavailable(e.to_string()))?;
    rows.maybe_first_row::<(String,)>()
        .map(|row| row.map(|(v,)| v))
        .map_err(|e| ScyllaError::Unavailable(e.to_string()))
}

/// Prepared statements, shared by every handle on one session.
pub(crate) struct Statements {
    pub insert_event: PreparedStatement,
    pub insert_event_id: PreparedStatement,
    pub advance_head: PreparedStatement,
    pub guard_epoch: PreparedStatement,
    pub select_head: PreparedStatement,
    pub select_head_serial: PreparedStatement,
    pub select_epoch: PreparedStatement,
    pub select_epoch_plain: PreparedStatement,
    pub claim_epoch: PreparedStatement,
    pub select_rows: PreparedStatement,
    pub select_row: PreparedStatement,
    pub select_event_ids: PreparedStatement,
    pub insert_node: PreparedStatement,
    pub select_node: PreparedStatement,
    pub set_derived: PreparedStatement,
    pub insert_facet: PreparedStatement,
    pub select_facet_counts: PreparedStatement,
    pub select_facet_postings: PreparedStatement,
    pub select_derived: PreparedStatement,
    pub select_partition_heads: PreparedStatement,
    pub select_partition_derived: PreparedStatement,
    pub select_tail_ids: PreparedStatement,
    pub select_tail_full: PreparedStatement,
    pub erase_event: PreparedStatement,
    pub delete_facet: PreparedStatement,
    pub select_retention: PreparedStatement,
    pub set_retention: PreparedStatement,
    pub shell_event: PreparedStatement,
    pub delete_event_id: PreparedStatement,
    pub insert_receipt: PreparedStatement,
    pub select_receipt: PreparedStatement,
    pub insert_key: PreparedStatement,
    pub insert_key_id: PreparedStatement,
    pub select_key: PreparedStatement,
    pub select_key_id: PreparedStatement,
    pub select_keys: PreparedStatement,
    pub update_key: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> Result<Self, ScyllaError> {
        let p = |cql: String| async move {
            session.prepare(cql).await.map_err(|e| {
                ScyllaError::Config(format!(
                    "cannot prepare a statement on keyspace {ks} ({e}); run `sealtrail migrate` first"
                ))
            })
        };
        let mut select_head_serial = p(format!(
            "SELECT sequence_number, hash FROM {ks}.heads WHERE log_partition = ? AND tenant_id = ?"
        ))
        .await?;
        select_head_serial.set_consistency(Consistency::LocalSerial);
        let mut select_epoch = p(format!(
            "SELECT epoch, owner, claimed_at FROM {ks}.heads WHERE log_partition = ? LIMIT 1"
        ))
        .await?;
        select_epoch.set_consistency(Consistency::LocalSerial);
        let mut select_rows = p(format!(
            "SELECT sequence_number, hash, canonical, input_digest FROM {ks}.events \
             WHERE tenant_id = ? AND bucket = ? AND sequence_number >= ? AND sequence_number <= ?"
        ))
        .await?;
        select_rows.set_page_size(1000);
        let mut select_partition_heads = p(format!(
            "SELECT tenant_id, sequence_number, hash FROM {ks}.heads WHERE log_partition = ?"
        ))
        .await?;
        select_partition_heads.set_page_size(5000);
        let mut select_partition_derived = p(format!(
            "SELECT tenant_id, derived_to FROM {ks}.derived WHERE log_partition = ?"
        ))
        .await?;
        select_partition_derived.set_page_size(5000);
        let mut select_tail_ids = p(format!(
            "SELECT sequence_number, hash, event_id FROM {ks}.events \
             WHERE tenant_id = ? AND bucket = ? AND sequence_number >= ? AND sequence_number <= ?"
        ))
        .await?;
        select_tail_ids.set_page_size(5000);
        let mut select_tail_full = p(format!(
            "SELECT sequence_number, hash, event_id, canonical FROM {ks}.events \
             WHERE tenant_id = ? AND bucket = ? AND sequence_number >= ? AND sequence_number <= ?"
        ))
        .await?;
        select_tail_full.set_page_size(1000);
        let mut select_facet_counts = p(format!(
            "SELECT block, count, min_ts, max_ts FROM {ks}.facets \
             WHERE tenant_id = ? AND kind = ? AND grp = ? AND value = ?"
        ))
        .await?;
        select_facet_counts.set_page_size(2000);
        let mut select_keys = p(format!("SELECT body FROM {ks}.api_keys")).await?;
        select_keys.set_page_size(1000);
        Ok(Self {
            insert_event: p(format!(
                "INSERT INTO {ks}.events (tenant_id, bucket, sequence_number, event_id, hash, \
                 input_digest, canonical) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            insert_event_id: p(format!(
                "INSERT INTO {ks}.ids (tenant_id, bucket, event_id, sequence_number) \
                 VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            advance_head: p(format!(
                "UPDATE {ks}.heads SET sequence_number = ?, hash = ? \
                 WHERE log_partition = ? AND tenant_id = ? IF sequence_number = ?"
            ))
            .await?,
            guard_epoch: p(format!(
                "UPDATE {ks}.heads SET owner = ? WHERE log_partition = ? IF epoch = ?"
            ))
            .await?,
            select_head: p(format!(
                "SELECT sequence_number, hash FROM {ks}.heads WHERE log_partition = ? AND tenant_id = ?"
            ))
            .await?,
            select_head_serial,
            select_epoch,
            select_epoch_plain: p(format!(
                "SELECT epoch FROM {ks}.heads WHERE log_partition = ? LIMIT 1"
            ))
            .await?,
            claim_epoch: p(format!(
                "UPDATE {ks}.heads SET epoch = ?, owner = ?, claimed_at = ? WHERE log_partition = ? \
                 IF epoch = ?"
            ))
            .await?,
            select_rows,
            select_row: p(format!(
                "SELECT sequence_number, hash, canonical, input_digest, event_id FROM {ks}.events \
                 WHERE tenant_id = ? AND bucket = ? AND sequence_number = ?"
            ))
            .await?,
            select_event_ids: p(format!(
                "SELECT event_id, sequence_number FROM {ks}.ids \
                 WHERE tenant_id = ? AND bucket = ? AND event_id IN ?"
            ))
            .await?,
            insert_node: p(format!(
                "INSERT INTO {ks}.tree (tenant_id, span, level, idx, hash) VALUES (?, ?, ?, ?, ?)"
            ))
            .await?,
            select_node: p(format!(
                "SELECT hash FROM {ks}.tree WHERE tenant_id = ? AND span = ? AND level = ? AND idx = ?"
            ))
            .await?,
            set_derived: p(format!(
                "INSERT INTO {ks}.derived (log_partition, tenant_id, derived_to) VALUES (?, ?, ?) \
                 USING TIMESTAMP ?"
            ))
            .await?,
            select_derived: p(format!(
                "SELECT derived_to FROM {ks}.derived WHERE log_partition = ? AND tenant_id = ?"
            ))
            .await?,
            insert_facet: p(format!(
                "INSERT INTO {ks}.facets (tenant_id, kind, grp, value, block, count, postings, \
                 min_ts, max_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            select_facet_counts,
            select_facet_postings: p(format!(
                "SELECT postings FROM {ks}.facets WHERE tenant_id = ? AND kind = ? AND grp = ? \
                 AND value = ? AND block = ?"
            ))
            .await?,
            select_partition_heads,
            select_partition_derived,
            select_tail_ids,
            select_tail_full,
            // An erasure's timestamp is the present (microseconds): above the small
            // epoch-based timestamps of record writes, so a replay that rewrites the
            // record's row can never bring its content back.
            erase_event: p(format!(
                "UPDATE {ks}.events USING TIMESTAMP ? SET canonical = ? \
                 WHERE tenant_id = ? AND bucket = ? AND sequence_number = ?"
            ))
            .await?,
            delete_facet: p(format!(
                "DELETE FROM {ks}.facets USING TIMESTAMP ? WHERE tenant_id = ? AND kind = ? \
                 AND grp = ? AND value = ? AND block = ?"
            ))
            .await?,
            select_retention: p(format!(
                "SELECT retained_from, previous FROM {ks}.retention WHERE tenant_id = ?"
            ))
            .await?,
            // The boundary's own value as timestamp: it never moves back (see `retention.rs`).
            set_retention: p(format!(
                "INSERT INTO {ks}.retention (tenant_id, retained_from, previous) VALUES (?, ?, ?) \
                 USING TIMESTAMP ?"
            ))
            .await?,
            // A removed record keeps its hash (its tree leaf, and what a replay is judged
            // by); the present as timestamp, like an erasure.
            shell_event: p(format!(
                "UPDATE {ks}.events USING TIMESTAMP ? SET canonical = 0x, input_digest = '', \
                 event_id = '' WHERE tenant_id = ? AND bucket = ? AND sequence_number = ?"
            ))
            .await?,
            delete_event_id: p(format!(
                "DELETE FROM {ks}.ids USING TIMESTAMP ? WHERE tenant_id = ? AND bucket = ? \
                 AND event_id = ?"
            ))
            .await?,
            insert_receipt: p(format!(
                "INSERT INTO {ks}.receipts_by_bucket (tenant_id, bucket, receipt_id, body) \
                 VALUES (?, ?, ?, ?)"
            ))
            .await?,
            select_receipt: p(format!(
                "SELECT body FROM {ks}.receipts_by_bucket \
                 WHERE tenant_id = ? AND bucket = ? AND receipt_id = ?"
            ))
            .await?,
            insert_key: p(format!(
                "INSERT INTO {ks}.api_keys (key_hash, key_id, tenant_id, body) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            insert_key_id: p(format!(
                "INSERT INTO {ks}.api_keys_by_id (key_id, key_hash) VALUES (?, ?)"
            ))
            .await?,
            select_key: p(format!("SELECT body FROM {ks}.api_keys WHERE key_hash = ?")).await?,
            select_key_id: p(format!(
                "SELECT key_hash FROM {ks}.api_keys_by_id WHERE key_id = ?"
            ))
            .await?,
            select_keys,
            update_key: p(format!("UPDATE {ks}.api_keys SET body = ? WHERE key_hash = ?")).await?,
        })
    }
}

/// The store. Cheap to clone; clones share the session, the statements and the head cache.
///
/// **Writers:** appends for the tenants of one log partition must come from one writer at a
/// time. In distributed mode each chainer appends through a [`fenced`](ScyllaStore::fenced)
/// handle holding its partition's epoch, which makes a stale writer's late appends fail
/// with [`StoreError::Fenced`] instead of forking a chain.
#[derive(Clone)]
pub struct ScyllaStore {
    pub(crate) session: Arc<Session>,
    pub(crate) stmts: Arc<Statements>,
    pub(crate) log_partitions: u32,
    pub(crate) keyspace: Arc<str>,
    /// This handle's claim on a log partition, if any.
    pub(crate) epoch: Option<Epoch>,
    /// Heads this handle has committed (never ahead of the store).
    pub(crate) heads: Arc<Mutex<HashMap<String, ChainHead>>>,
    /// A fenced handle's task writing derived rows behind its appends (`derive.rs`).
    pub(crate) deriver: Option<Arc<derive::Deriver>>,
    /// Write timestamps of this handle's derived rows and removals (`fence.rs`).
    pub(crate) stamps: Arc<fence::Stamps>,
    /// Tests: holds this handle's facet writes (`facets.rs`).
    pub(crate) hold: Arc<facets::Hold>,
}

impl ScyllaStore {
    /// Connects to a migrated keyspace.
    pub async fn connect(settings: &ScyllaSettings) -> Result<Self, ScyllaError> {
        check_identifier(&settings.keyspace)?;
        let session = connect(settings).await?;
        Self::with_session(Arc::new(session), &settings.keyspace).await
    }

    /// A store over an existing session.
    pub async fn with_session(session: Arc<Session>, keyspace: &str) -> Result<Self, ScyllaError> {
        check_identifier(keyspace)?;
        let partitions = meta_get(&session, keyspace, "log_partitions")
            .await
            .map_err(|e| match e {
                ScyllaError::Unavailable(m)
                    if m.contains("does not exist") || m.contains("unconfigured") =>
                {
                    ScyllaError::Config(format!(
                        "keyspace {keyspace} is not set up; run `sealtrail migrate` first"
                    ))
                }
                other => other,
            })?
            .ok_or_else(|| {
                ScyllaError::Config(format!(
                    "keyspace {keyspace} is not set up; run `sealtrail migrate` first"
                ))
            })?;
        let log_partitions: u32 = partitions.parse().map_err(|_| {
            ScyllaError::Config(format!(
                "bad log_partitions {partitions:?} in {keyspace}.meta"
            ))
        })?;
        let stmts = Statements::prepare(&session, keyspace).await?;
        Ok(Self {
            session,
            stmts: Arc::new(stmts),
            log_partitions,
            keyspace: keyspace.into(),
            epoch: None,
            heads: Arc::default(),
            deriver: None,
            stamps: Arc::new(fence::Stamps::unfenced()),
            hold: Arc::default(),
        })
    }

    /// A value of the keyspace's `meta` table.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, ScyllaError> {
        meta_get(&self.session, &self.keyspace, key).await
    }

    /// Sets a `meta` value unless it is set (a conditional insert); the value it holds.
    pub async fn meta_set_once(&self, key: &str, value: &str) -> Result<String, ScyllaError> {
        meta_set_once(&self.session, &self.keyspace, key, value).await
    }

    /// Stops (`true`) or resumes this fenced handle's writing of derived rows, so tests
    /// can keep committed records past the watermark. No effect on an unfenced handle.
    #[doc(hidden)]
    pub fn pause_deriving(&self, paused: bool) {
        if let Some(deriver) = &self.deriver {
            deriver.pause(paused);
        }
    }

    /// How long a fenced handle waits to gather appends before writing their derived rows.
    pub const DERIVE_LINGER: Duration = derive::LINGER;

    /// The partition count the keyspace was migrated for.
    pub fn log_partitions(&self) -> u32 {
        self.log_partitions
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Runs a statement that selects at most one row (a full primary key) and decodes it.
    pub(crate) async fn one_row<R>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> StoreResult<Option<R>>
    where
        R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(unavailable)?
            .maybe_first_row::<R>()
            .map_err(corrupt)
    }

    pub(crate) fn partition_of(&self, tenant: &str) -> i32 {
        sealtrail_core::partition::partition_for(tenant, self.log_partitions) as i32
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn append_shared(&self, batch: Arc<CommitBatch>) -> StoreResult<()> {
        self.append_batch(&batch).await
    }

    async fn heads(&self, tenants: Vec<String>) -> StoreResult<HashMap<String, ChainHead>> {
        // At the configured consistency, not serial: API reads (checkpoints) must not pay
        // Paxos, and a chainer's fenced handle needs none (see `append.rs`, step 1).
        self.read_heads(&tenants, false).await
    }

    async fn find_events(&self, keys: Vec<(String, String)>) -> StoreResult<Vec<StoredEvent>> {
        self.find_committed(keys).await
    }

    async fn get_event(&self, tenant_id: &str, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        Ok(self
            .find_committed(vec![(tenant_id.to_string(), event_id.to_string())])
            .await?
            .pop())
    }

    async fn get_receipt(&self, tenant_id: &str, receipt_id: &str) -> StoreResult<Option<Receipt>> {
        self.read_receipt(tenant_id, receipt_id).await
    }

    async fn list_events(&self, tenant_id: &str, query: EventQuery) -> StoreResult<EventPage> {
        self.list(tenant_id, &query).await
    }

    async fn scan_chain(
        &self,
        tenant_id: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<ChainRow>> {
        // The boundary before the head (records before it are removed, `retention.rs`).
        let after = after.max(self.retained(tenant_id).await?.saturating_sub(1));
        let Some(head) = self.committed_head(tenant_id).await? else {
            return Ok(Vec::new());
        };
        let last = head.min(after.saturating_add(limit as u64));
        Ok(self
            .read_range(tenant_id, after + 1, last)
            .await?
            .into_iter()
            .map(|(row, _)| row)
            .collect())
    }

    async fn tree_nodes(
        &self,
        tenant_id: &str,
        ids: Vec<NodeId>,
    ) -> StoreResult<Vec<Option<Hash>>> {
        self.read_nodes(tenant_id, &ids).await
    }

    fn min_tree_level(&self) -> u8 {
        schema::MIN_TREE_LEVEL
    }

    /// The chainer that derives a redaction event erases the record it names
    /// (`derive.rs`, [`ScyllaStore::erase`]).
    fn erases_redacted(&self) -> bool {
        true
    }

    /// The chainer that derives a prune event removes the records before its boundary
    /// (`retention.rs`).
    fn prunes(&self) -> bool {
        true
    }

    async fn retained_from(&self, tenant_id: &str) -> StoreResult<u64> {
        self.retained(tenant_id).await
    }

    async fn tenants(&self) -> StoreResult<Vec<String>> {
        self.all_tenants().await
    }

    async fn retention_policies(&self) -> StoreResult<Vec<(String, RetentionPolicy)>> {
        self.policies().await
    }

    async fn set_retention_policy(
        &self,
        tenant_id: &str,
        policy: Option<RetentionPolicy>,
    ) -> StoreResult<()> {
        self.set_policy(tenant_id, policy).await
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> StoreResult<bool> {
        self.take_lease(name, holder, ttl).await
    }

    async fn create_destination(&self, destination: Destination) -> StoreResult<()> {
        self.insert_destination(destination).await
    }

    async fn destinations(&self, tenant_id: Option<&str>) -> StoreResult<Vec<Destination>> {
        self.select_destinations(tenant_id).await
    }

    async fn delete_destination(&self, tenant_id: &str, id: &str) -> StoreResult<bool> {
        self.remove_destination(tenant_id, id).await
    }

    async fn claim_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        generation: u64,
    ) -> StoreResult<bool> {
        self.claim_destination(tenant_id, id, generation).await
    }

    async fn record_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        state: DeliveryState,
    ) -> StoreResult<bool> {
        self.update_delivery(tenant_id, id, state).await
    }

    async fn create_key(&self, key: ApiKey) -> StoreResult<()> {
        self.insert_key(key).await
    }

    async fn find_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        self.key_by_hash(key_hash).await
    }

    async fn list_keys(&self, tenant_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        self.all_keys(tenant_id).await
    }

    async fn revoke_key(&self, key_id: &str, revoked_at: &str) -> StoreResult<bool> {
        self.revoke(key_id, revoked_at).await
    }
}
