//! The fjall store's memory and journal stay bounded under sustained appends (issue 19):
//! with small limits, many times the write buffer and more than twice fjall's 64 MB journal
//! file size go through the store, and neither the memtables nor the journal grow with it.

use std::sync::Arc;

use sealtrail_core::event::validate_event;
use sealtrail_core::record::{ChainedRecord, chain_step};
use sealtrail_store::fjall::{FjallLimits, FjallStore, MAX_SEALED_MEMTABLES};
use sealtrail_store::{CommitBatch, Store};
use serde_json::json;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// fjall preallocates each journal file to this size and starts a new one once the current
/// one passes 64 MB (neither is configurable).
const FJALL_JOURNAL_FILE: u64 = 64 * MIB;
const TENANTS: usize = 4;
const BATCH: usize = 100;
/// ~2 KB of metadata per event, so the test moves many megabytes with few events.
const PAD: usize = 2000;

/// `n` records of `tenant` after sequence number `after`. The store checks sequence
/// numbers (gapless) and links (`prev_hash`), and compares hashes only on replays; it never
/// recomputes them. So one real record is the template and the others carry its canonical
/// bytes with stand-in hashes (record `s` hashes to `s` in hex, so record 1 links to the
/// zero hash): the test spends its time in the store, not in debug-build hashing.
fn records(template: &ChainedRecord, tenant: &str, after: u64, n: usize) -> Vec<ChainedRecord> {
    (after + 1..=after + n as u64)
        .map(|seq| {
            let mut rec = template.clone();
            rec.record.tenant_id = tenant.to_string();
            rec.record.sequence_number = seq;
            rec.record.id = format!("{tenant}-{seq}");
            rec.record.hash = format!("{seq:064x}");
            rec.record.prev_hash = format!("{:064x}", seq - 1);
            rec.client_id = false;
            rec
        })
        .collect()
}

fn template() -> ChainedRecord {
    let event = validate_event(
        json!({
            "id": "template",
            "timestamp": "2024-01-01T00:00:00Z",
            "actor": {"id": "user-1", "type": "human"},
            "action": "document.read",
            "resource": {"id": "doc-1", "type": "document"},
            "outcome": "success",
            "metadata": {"padding": "x".repeat(PAD)}
        }),
        1_704_067_200_000_000,
        || unreachable!("the id is given"),
    )
    .expect("valid event");
    chain_step(None, "template", event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memtables_and_journal_stay_bounded_under_sustained_appends() {
    let dir = tempfile::tempdir().unwrap();
    let limits = FjallLimits {
        write_buffer_bytes: 512 * KIB,
        journal_bytes: 64 * MIB, // fjall's minimum
        cache_bytes: MIB,
        // One worker: the setting under which fjall's own memtable sealing deadlocked.
        worker_threads: 1,
        ..FjallLimits::default()
    };
    // × 4 tenants × ~2.5 KB ≈ 300 MB through the journal
    sustained_appends(dir.path(), limits, limits.memtable_ceiling(), 30_000).await;
}

/// Appends `per_tenant` events for each of [`TENANTS`] tenants at once and checks the
/// memtables stay under `memtable_ceiling` (plus what groups add) and the journal under
/// its bound, and that everything is there after a reopen.
async fn sustained_appends(
    dir: &std::path::Path,
    limits: FjallLimits,
    memtable_ceiling: u64,
    per_tenant: usize,
) {
    let store = Arc::new(FjallStore::open_with(dir, limits).unwrap());
    // Several tenants append at once, so groups carry several batches.
    let mut tasks = Vec::new();
    for t in 0..TENANTS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = format!("tenant-{t}");
            let template = template();
            let mut head = None;
            let (mut peak_memtables, mut peak_journal) = (0, 0);
            for b in 0..per_tenant / BATCH {
                let records = records(&template, &tenant, (b * BATCH) as u64, BATCH);
                head = Some(records.last().unwrap().head());
                store
                    .append(CommitBatch {
                        records,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                peak_memtables = peak_memtables.max(store.memtable_bytes());
                peak_journal = peak_journal.max(store.journal_bytes().unwrap());
            }
            (head.unwrap(), peak_memtables, peak_journal)
        }));
    }
    let mut heads = Vec::new();
    let (mut peak_memtables, mut peak_journal) = (0, 0);
    for task in tasks {
        let (head, memtables, journal) = task.await.unwrap();
        peak_memtables = peak_memtables.max(memtables);
        peak_journal = peak_journal.max(journal);
        heads.push(head);
    }
    // A memtable is sealed after the group that fills it, so each of the
    // (1 + MAX_SEALED_MEMTABLES) memtables a keyspace may hold can exceed the budget by one
    // group: at most every tenant's batch.
    let one_group = (TENANTS * BATCH) as u64 * 3 * KIB;
    let memtable_bound = memtable_ceiling + (1 + MAX_SEALED_MEMTABLES as u64) * one_group;
    assert!(
        peak_memtables <= memtable_bound,
        "memtables reached {peak_memtables} bytes; the bound is {memtable_bound}"
    );
    // The journal: fjall's current file (rotated once past 64 MB, so up to that plus a
    // group) and the sealed files not dropped yet (fjall forces the flushes that drop
    // them once they pass the limit).
    let journal_bound = FJALL_JOURNAL_FILE + limits.journal_bytes + one_group;
    assert!(
        peak_journal <= journal_bound,
        "the journal reached {peak_journal} bytes; the bound is {journal_bound}"
    );
    let written: u64 = (TENANTS * per_tenant) as u64 * (PAD as u64 + 500);
    assert!(
        written > 3 * memtable_bound,
        "the test must write well past the bound to mean anything"
    );

    // Everything is there, after a close and a reopen.
    store.close();
    drop(store);
    let store = FjallStore::open_with(dir, limits).unwrap();
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("tenant-{t}")).collect();
    let stored = store.heads(tenants.clone()).await.unwrap();
    for (tenant, head) in tenants.iter().zip(heads) {
        assert_eq!(
            stored.get(tenant),
            Some(&head),
            "{tenant}'s head after reopen"
        );
    }
}
