//! The `ids` and `receipts` indexes stay in key order (issue 11): ids minted a moment
//! before others can reach the log a frame later, and one such straggler in a flushed
//! table made it overlap the table before, which fjall then merged (nearly all of its
//! compaction work). Stragglers and ids that are no UUIDv7 go to the `unordered`
//! keyspace instead, and every lookup still finds them, before and after a reopen.

use std::path::Path;

use sealtrail_core::event::validate_event;
use sealtrail_core::receipt::Receipt;
use sealtrail_core::record::{ChainedRecord, chain_step};
use sealtrail_store::fjall::{FjallLimits, FjallStore};
use sealtrail_store::{CommitBatch, Store};
use serde_json::json;

const TENANT: &str = "acme";
const BATCHES: u64 = 80;
const PER_BATCH: u64 = 40;
/// The first millisecond of the ids' timestamps.
const BASE_MS: u64 = 0x0190_a5c2_0000;

/// A UUIDv7 with timestamp `ms`, unique by `n`.
fn uuid7(ms: u64, n: u64) -> String {
    format!(
        "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        n & 0xfff,
        (n >> 12) & 0xfff,
        n
    )
}

/// The id of record `seq`: mostly UUIDv7s whose time rises with `seq`; every 7th a
/// straggler, minted 300 records earlier; every 50th a client id that is no UUIDv7.
fn id_of(seq: u64) -> String {
    if seq.is_multiple_of(50) {
        format!("client-order-{seq}")
    } else if seq.is_multiple_of(7) && seq > 300 {
        uuid7(BASE_MS + seq - 300, seq)
    } else {
        uuid7(BASE_MS + seq, seq)
    }
}

/// The receipt of batch `b`: a UUIDv7 rising with `b`, every 5th one a straggler.
fn receipt_of(b: u64) -> String {
    let ms = if b % 5 == 4 && b > 20 { b - 20 } else { b };
    uuid7(BASE_MS + ms * PER_BATCH, 1_000_000 + b)
}

/// Record `seq` of the chain, after `prev`.
fn record(prev: Option<&ChainedRecord>, seq: u64) -> ChainedRecord {
    let event = validate_event(
        json!({
            "id": id_of(seq),
            "timestamp": "2024-01-01T00:00:00Z",
            "actor": {"id": "user-1", "type": "human"},
            "action": "document.read",
            "resource": {"id": format!("doc-{}", seq % 3), "type": "document"},
            "outcome": "success",
            "metadata": {"padding": "x".repeat(300)}
        }),
        1_704_067_200_000_000,
        || unreachable!("the id is given"),
    )
    .expect("valid event");
    let record = chain_step(prev.map(|p| p.head()).as_ref(), TENANT, event);
    assert_eq!(record.record.sequence_number, seq);
    record
}

/// Batch `b`'s records, chained after `prev`, and its receipt.
fn batch(prev: &mut Option<ChainedRecord>, b: u64) -> CommitBatch {
    let mut records = Vec::new();
    for seq in b * PER_BATCH + 1..=(b + 1) * PER_BATCH {
        let rec = record(prev.as_ref(), seq);
        *prev = Some(rec.clone());
        records.push(rec);
    }
    let ids = records.iter().map(|r| r.record.id.clone()).collect();
    let receipt = Receipt::queued(
        receipt_of(b),
        "2024-01-01T00:00:00.000000Z".into(),
        ids,
        vec![],
    );
    CommitBatch {
        records,
        receipts: vec![(TENANT.to_string(), receipt)],
        ..Default::default()
    }
}

async fn assert_all_found(store: &FjallStore) {
    for seq in 1..=BATCHES * PER_BATCH {
        let id = id_of(seq);
        let found = store.get_event(TENANT, &id).await.unwrap();
        assert_eq!(
            found.map(|e| e.record.sequence_number),
            Some(seq),
            "record {seq} by its id {id}"
        );
    }
    for b in 0..BATCHES {
        let receipt = store.get_receipt(TENANT, &receipt_of(b)).await.unwrap();
        assert_eq!(
            receipt.map(|r| r.ids.len()),
            Some(PER_BATCH as usize),
            "the receipt of batch {b}"
        );
    }
    assert!(
        store
            .get_event(TENANT, &uuid7(BASE_MS + 5, 999_999))
            .await
            .unwrap()
            .is_none(),
        "an id never written"
    );
}

/// The table files of a keyspace (lsm-tree names them by a per-tree counter).
fn table_ids(index: &Path, keyspace: &str) -> Vec<u64> {
    let db = fjall::Database::builder(index).open().unwrap();
    let ks = db
        .keyspace(keyspace, fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let mut ids: Vec<u64> = std::fs::read_dir(ks.path().join("tables"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Every key of a keyspace.
fn keys(index: &Path, keyspace: &str) -> Vec<Vec<u8>> {
    let db = fjall::Database::builder(index).open().unwrap();
    let ks = db
        .keyspace(keyspace, fjall::KeyspaceCreateOptions::default)
        .unwrap();
    ks.iter().map(|item| item.key().unwrap().to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_leave_the_ordered_indexes_unmerged_and_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let limits = FjallLimits {
        // a seal every few batches
        write_buffer_bytes: 16 * 1024,
        ..FjallLimits::default()
    };
    let store = FjallStore::open_with(dir.path(), limits).unwrap();
    let mut prev = None;
    for b in 0..BATCHES {
        store.append(batch(&mut prev, b)).await.unwrap();
        if b % 10 == 9 {
            // let the indexer catch up now and then, so memtables are sealed between
            // batches and stragglers land after a seal
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    }
    assert_all_found(&store).await;
    store.close();
    drop(store);

    let store = FjallStore::open_with(dir.path(), limits).unwrap();
    assert_all_found(&store).await;
    store.close();
    drop(store);

    let index = dir.path().join("index");
    // `ids` holds UUIDv7 keys only; the client ids and the stragglers are in `unordered`.
    let ids = keys(&index, "ids");
    assert!(ids.iter().all(|k| k[0] == 1), "a non-UUIDv7 key in ids");
    let unordered = keys(&index, "unordered");
    let client_ids = (BATCHES * PER_BATCH / 50) as usize;
    let (as_ids, as_receipts) = (
        unordered.iter().filter(|k| k[0] == 1).count(),
        unordered.iter().filter(|k| k[0] == 2).count(),
    );
    assert!(
        as_ids > client_ids,
        "stragglers went to unordered ({as_ids} ids there, {client_ids} client ids)"
    );
    assert!(as_receipts > 0, "straggling receipts went to unordered");
    assert_eq!(
        ids.len() + as_ids,
        (BATCHES * PER_BATCH) as usize,
        "each id is in one of the two"
    );
    // Only flushes made tables and compaction only moved them: every table ever made is
    // still there (a merge would have replaced its inputs with new tables).
    for keyspace in ["ids", "receipts"] {
        let tables = table_ids(&index, keyspace);
        assert_eq!(
            tables,
            (0..tables.len() as u64).collect::<Vec<_>>(),
            "{keyspace}: a table was merged away"
        );
        assert!(
            tables.len() >= 6,
            "{keyspace}: enough flushes to compact ({tables:?})"
        );
    }
}
