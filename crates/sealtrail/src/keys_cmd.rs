//! `sealtrail keys …`: key management straight on the store, so it works with or without
//! a running server (SQLite serializes the writes).

use std::io::Write;
use std::sync::Arc;

use sealtrail_store::sqlite::SqliteStore;
use sealtrail_store::{Store, now_micros};

use crate::KeysCommand;
use crate::config::{Config, StoreEngine};

pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cmd {
            KeysCommand::Create { common, target, tenant: None, tenants_from: Some(path), scopes } => {
                let config = crate::load(&common, target.overrides())?;
                let scopes = sealtrail_api::keys::parse_scopes(&scopes).map_err(anyhow::Error::msg)?;
                let text = if path.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
                };
                let now = sealtrail_core::time::format_micros(now_micros());
                let mut made = Vec::new();
                for (line, tenant) in text.lines().map(str::trim).enumerate() {
                    if tenant.is_empty() {
                        continue;
                    }
                    let key = sealtrail_api::keys::generate(tenant, scopes.clone(), now.clone())
                        .map_err(|e| anyhow::anyhow!("{}, line {}: {e}; no key was created", path.display(), line + 1))?;
                    made.push(key);
                }
                anyhow::ensure!(!made.is_empty(), "{} names no tenant; no key was created", path.display());
                let store = open(&config).await?;
                store.create_keys(made.iter().map(|(_, key)| key.clone()).collect()).await?;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for (raw, key) in &made {
                    writeln!(out, "{}\t{raw}", key.tenant_id)?;
                }
                out.flush()?;
                eprintln!("created {} keys with scopes {}; store them now: they are shown only once", made.len(), scopes.join(","));
            }
            KeysCommand::Create { common, target, tenant, scopes, .. } => {
                let tenant = tenant.expect("clap requires --tenant without --tenants-from");
                let config = crate::load(&common, target.overrides())?;
                let scopes = sealtrail_api::keys::parse_scopes(&scopes).map_err(anyhow::Error::msg)?;
                let store = open(&config).await?;
                let now = sealtrail_core::time::format_micros(now_micros());
                let (raw, key) = sealtrail_api::keys::generate(&tenant, scopes, now).map_err(anyhow::Error::msg)?;
                store.create_key(key.clone()).await?;
                println!("created key {} for tenant {} with scopes {}", key.key_id, key.tenant_id, key.scopes.join(","));
                println!("store it now: it is shown only once");
                println!("{raw}");
            }
            KeysCommand::List { common, target, tenant } => {
                let config = crate::load(&common, target.overrides())?;
                let store = open(&config).await?;
                let keys = store.list_keys(tenant.as_deref()).await?;
                if keys.is_empty() {
                    eprintln!("no keys; create one with `sealtrail keys create --tenant NAME --scopes read,write`");
                }
                println!("{:<22} {:<24} {:<11} {:<18} {:<28} STATUS", "KEY_ID", "TENANT", "SCOPES", "PREFIX", "CREATED_AT");
                for k in keys {
                    let status = k.revoked_at.map_or("active".to_string(), |at| format!("revoked {at}"));
                    println!(
                        "{:<22} {:<24} {:<11} {:<18} {:<28} {status}",
                        k.key_id,
                        k.tenant_id,
                        k.scopes.join(","),
                        format!("{}…", k.key_prefix),
                        k.created_at
                    );
                }
            }
            KeysCommand::Revoke { common, target, key_id } => {
                let config = crate::load(&common, target.overrides())?;
                let store = open(&config).await?;
                let now = sealtrail_core::time::format_micros(now_micros());
                anyhow::ensure!(
                    store.revoke_key(&key_id, &now).await?,
                    "no active key {key_id:?}; `sealtrail keys list` shows the key ids"
                );
                println!("revoked {key_id}");
            }
        }
        Ok(())
    })
}

/// The key table: the data dir's SQLite file in embedded mode, the cluster's otherwise.
pub(crate) async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.store {
        StoreEngine::Scylla => Arc::new(crate::distributed::connect_store(config).await?),
        StoreEngine::Fjall | StoreEngine::Sqlite => Arc::new(SqliteStore::open(&config.data_dir)?),
    })
}
