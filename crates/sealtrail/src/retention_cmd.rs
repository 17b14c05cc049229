//! `sealtrail retention …`: a tenant's own retention policy, set straight on the store
//! (like `keys`: the data directory's SQLite file, or the cluster's tables with
//! `--store scylla`), so it works with or without a running server. The server's pruner
//! applies it at its next run (`retention.interval`).

use clap::Subcommand;
use sealtrail_store::RetentionPolicy;

use crate::config::StoreEngine;
use crate::{Common, KeyStoreArgs};

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Show the configured default and every tenant's own policy (with --tenant: that
    /// tenant's policy in force and its boundary, the first record kept).
    Show {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: KeyStoreArgs,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Set a tenant's own policy (overrides `retention.days` / `retention.events`): keep
    /// its records for --days and/or its last --events records; neither keeps them
    /// forever. A record expires at the first limit it passes. The records removed are
    /// gone for good (archived first if `retention.archive_dir` is set); the chain
    /// records each removal as a `sealtrail.retention.prune` event.
    ///
    /// Example: sealtrail retention set --tenant acme --days 365
    Set {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: KeyStoreArgs,
        #[arg(long)]
        tenant: String,
        /// Keep records for this many days (1 to 36500).
        #[arg(long)]
        days: Option<u32>,
        /// Keep the last this many records (1 or more).
        #[arg(long)]
        events: Option<u64>,
    },
    /// Remove a tenant's own policy: the configured default applies again.
    Clear {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: KeyStoreArgs,
        #[arg(long)]
        tenant: String,
    },
}

fn describe(p: &RetentionPolicy) -> String {
    match (p.days, p.events) {
        (None, None) => "forever".into(),
        (Some(d), None) => format!("{d} days"),
        (None, Some(e)) => format!("the last {e} records"),
        (Some(d), Some(e)) => format!("{d} days and at most the last {e} records"),
    }
}

pub fn run(cmd: RetentionCommand) -> anyhow::Result<()> {
    let (common, target) = match &cmd {
        RetentionCommand::Show { common, target, .. }
        | RetentionCommand::Set { common, target, .. }
        | RetentionCommand::Clear { common, target, .. } => (common.clone(), target.clone()),
    };
    let config = crate::load(&common, target.overrides())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = crate::keys_cmd::open(&config).await?;
        let default = config.retention().default;
        match cmd {
            RetentionCommand::Show {
                tenant: Some(tenant),
                ..
            } => {
                let own = store
                    .retention_policies()
                    .await?
                    .into_iter()
                    .find(|(t, _)| *t == tenant);
                let (policy, source) = match own {
                    Some((_, p)) => (p, "its own"),
                    None => (default, "the default"),
                };
                println!("tenant {tenant}: keep {} ({source})", describe(&policy));
                if config.store != StoreEngine::Fjall {
                    println!("first record kept: {}", store.retained_from(&tenant).await?);
                } else {
                    // The fjall index belongs to the server process.
                    println!("first record kept: GET /v1/retention on the server says");
                }
            }
            RetentionCommand::Show { tenant: None, .. } => {
                println!("default: keep {}", describe(&default));
                for (tenant, policy) in store.retention_policies().await? {
                    println!("tenant {tenant}: keep {}", describe(&policy));
                }
            }
            RetentionCommand::Set {
                tenant,
                days,
                events,
                ..
            } => {
                sealtrail_api::keys::check_tenant(&tenant).map_err(anyhow::Error::msg)?;
                let policy = sealtrail_api::retention::checked_policy(days, events)
                    .map_err(|e| anyhow::anyhow!("--{e}"))?;
                store.set_retention_policy(&tenant, Some(policy)).await?;
                println!(
                    "tenant {tenant}: keep {}; the server's next retention run applies it",
                    describe(&policy)
                );
            }
            RetentionCommand::Clear { tenant, .. } => {
                store.set_retention_policy(&tenant, None).await?;
                println!(
                    "tenant {tenant}: the default applies (keep {})",
                    describe(&default)
                );
            }
        }
        store.close();
        Ok(())
    })
}
