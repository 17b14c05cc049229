//! Chainers' heartbeats: which log partitions have a live owner right now.
//!
//! Every chainer writes one row per partition it holds about once a second, with a
//! time-to-live of [`BEAT_TTL_SECS`]; a partition whose row has expired has had no owner
//! for that long (its chainer died, froze or lost its session), and gateways report it in
//! `/readyz`. The rows are advisory: the claim that fences writers is the epoch in `heads`.

use std::collections::HashMap;

use crate::{ScyllaError, ScyllaStore};

/// How long a heartbeat counts (seconds): a few missed beats, well under the consumer
/// group's session timeout plus the fail-over it triggers.
pub const BEAT_TTL_SECS: i32 = 4;

impl ScyllaStore {
    /// Records that `owner` holds `partitions` now.
    pub async fn beat(&self, partitions: &[u32], owner: &str) -> Result<(), ScyllaError> {
        let insert = format!(
            "INSERT INTO {}.chainer_beats (log_partition, owner) VALUES (?, ?) USING TTL {BEAT_TTL_SECS}",
            self.keyspace
        );
        for &partition in partitions {
            self.session
                .query_unpaged(insert.as_str(), (partition as i32, owner))
                .await
                .map_err(ScyllaError::from_execution)?;
        }
        Ok(())
    }

    /// The partitions with a live heartbeat, and who holds each. Also the gateway's
    /// probe that the store answers.
    pub async fn owners(&self) -> Result<HashMap<u32, String>, ScyllaError> {
        let select = format!(
            "SELECT log_partition, owner FROM {}.chainer_beats",
            self.keyspace
        );
        let result = self
            .session
            .query_unpaged(select.as_str(), ())
            .await
            .map_err(ScyllaError::from_execution)?;
        let rows = result
            .into_rows_result()
            .map_err(|e| ScyllaError::Unavailable(e.to_string()))?;
        let mut owners = HashMap::new();
        for row in rows
            .rows::<(i32, Option<String>)>()
            .map_err(|e| ScyllaError::Unavailable(e.to_string()))?
        {
            let (partition, owner) = row.map_err(|e| ScyllaError::Unavailable(e.to_string()))?;
            owners.insert(partition as u32, owner.unwrap_or_default());
        }
        Ok(owners)
    }
}
