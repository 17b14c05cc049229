//! API keys: `api_keys` by the key's SHA-256 (what authentication looks up) and
//! `api_keys_by_id` (what `keys revoke` looks up). The key itself is never stored.

use futures::StreamExt;
use sealtrail_store::{ApiKey, StoreError, StoreResult};

use crate::{ScyllaStore, corrupt, unavailable};

impl ScyllaStore {
    pub(crate) async fn insert_key(&self, key: ApiKey) -> StoreResult<()> {
        let body = serde_json::to_string(&key).map_err(corrupt)?;
        // By id first: a crash in between leaves an id pointing at no key (revoke reports
        // "no such key"), never a usable key that cannot be revoked by id.
        self.session
            .execute_unpaged(
                &self.stmts.insert_key_id,
                (key.key_id.as_str(), key.key_hash.as_str()),
            )
            .await
            .map_err(unavailable)?;
        self.session
            .execute_unpaged(
                &self.stmts.insert_key,
                (
                    key.key_hash.as_str(),
                    key.key_id.as_str(),
                    key.tenant_id.as_str(),
                    body,
                ),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        let row = self
            .one_row::<(String,)>(&self.stmts.select_key, (key_hash,))
            .await?;
        row.map(|(body,)| serde_json::from_str(&body).map_err(corrupt))
            .transpose()
    }

    pub(crate) async fn all_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        let mut rows = self
            .session
            .execute_iter(self.stmts.select_keys.clone(), ())
            .await
            .map_err(unavailable)?
            .rows_stream::<(String,)>()
            .map_err(unavailable)?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next().await {
            let (body,) = row.map_err(unavailable)?;
            let key: ApiKey = serde_json::from_str(&body).map_err(corrupt)?;
            if tenant.is_none_or(|t| t == key.tenant_id) {
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| (&a.created_at, &a.key_id).cmp(&(&b.created_at, &b.key_id)));
        Ok(keys)
    }

    pub(crate) async fn revoke(&self, key_id: &str, revoked_at: &str) -> StoreResult<bool> {
        let hash = self
            .one_row::<(String,)>(&self.stmts.select_key_id, (key_id,))
            .await?;
        let Some((hash,)) = hash else {
            return Ok(false);
        };
        let Some(mut key) = self.key_by_hash(&hash).await? else {
            return Ok(false);
        };
        if key.revoked_at.is_some() {
            return Ok(false);
        }
        key.revoked_at = Some(revoked_at.to_string());
        let body = serde_json::to_string(&key).map_err(corrupt)?;
        self.session
            .execute_unpaged(&self.stmts.update_key, (body, hash.as_str()))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(true)
    }
}
