//! The conformance suite every [`Store`] must pass. A backend's test calls [`run_all`]
//! with a fresh, empty store; each check uses its own tenant names, so one store serves
//! the whole suite.

use sealtrail_core::event::{Outcome, validate_event};
use sealtrail_core::receipt::{Receipt, ReceiptStatus};
use sealtrail_core::record::{ChainHead, ChainedRecord, chain_step};
use serde_json::json;

use crate::{ApiKey, CommitBatch, EventQuery, Paging, Store, StoreError, TreeNode};

/// Builds `n` chained records of `tenant` continuing after `head`.
pub fn make_chain(tenant: &str, head: Option<ChainHead>, n: usize) -> Vec<ChainedRecord> {
    let mut head = head;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let seq = head.as_ref().map_or(1, |h| h.sequence_number + 1);
        let event = validate_event(
            json!({
                "id": format!("{tenant}-evt-{seq}"),
                "timestamp": format!("2024-01-01T00:00:{:02}Z", seq % 60),
                "actor": {"id": format!("actor-{}", i % 3), "type": if i % 2 == 0 { "human" } else { "agent" }},
                "action": if i % 2 == 0 { "document.read" } else { "document.delete" },
                "resource": {"id": format!("doc-{}", i % 4), "type": "document"},
                "outcome": if i % 5 == 4 { "failure" } else { "success" },
                "metadata": {"i": i}
            }),
            1_704_067_200_000_000 + seq as i64,
            || unreachable!("ids are given"),
        )
        .expect("conformance events are valid");
        let rec = chain_step(head.as_ref(), tenant, event);
        head = Some(rec.head());
        out.push(rec);
    }
    out
}

fn receipt(id: &str, ids: Vec<String>) -> Receipt {
    Receipt {
        receipt_id: id.into(),
        status: ReceiptStatus::Committed,
        accepted: ids.len() as u32,
        rejected: 0,
        ids,
        errors: vec![],
        error_message: None,
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        committed_at: Some("2024-01-01T00:00:01.000000Z".into()),
    }
}

/// Runs every check against `store`.
pub async fn run_all(store: &dyn Store) {
    append_then_read_back(store).await;
    replay_is_idempotent_and_forks_are_refused(store).await;
    tenants_are_isolated(store).await;
    list_filters_and_paging(store).await;
    receipts_round_trip(store).await;
    keys_lifecycle(store).await;
    tree_nodes_round_trip(store).await;
}

pub async fn append_then_read_back(store: &dyn Store) {
    let recs = make_chain("conf-a", None, 10);
    let ids: Vec<String> = recs.iter().map(|r| r.record.id.clone()).collect();
    store
        .append(CommitBatch {
            records: recs.clone(),
            receipts: vec![("conf-a".into(), receipt("rcpt-a", ids))],
            ..Default::default()
        })
        .await
        .expect("append");
    let heads = store
        .heads(vec!["conf-a".into(), "conf-none".into()])
        .await
        .unwrap();
    assert_eq!(heads.get("conf-a"), Some(&recs[9].head()));
    assert!(!heads.contains_key("conf-none"));

    let got = store
        .get_event("conf-a", &recs[3].record.id)
        .await
        .unwrap()
        .expect("event 4");
    assert_eq!(got.record, recs[3].record);
    assert_eq!(got.input_digest, recs[3].input_digest);

    let rows = store.scan_chain("conf-a", 0, 100).await.unwrap();
    assert_eq!(rows.len(), 10);
    for (row, rec) in rows.iter().zip(&recs) {
        assert_eq!(row.sequence_number, rec.record.sequence_number);
        assert_eq!(
            row.canonical, rec.canonical,
            "stored bytes must be the hashed bytes"
        );
        assert_eq!(row.record().unwrap(), rec.record);
    }
    assert_eq!(store.scan_chain("conf-a", 7, 100).await.unwrap().len(), 3);
    assert_eq!(store.scan_chain("conf-a", 0, 4).await.unwrap().len(), 4);

    let found = store
        .find_events(vec![
            ("conf-a".into(), recs[0].record.id.clone()),
            ("conf-a".into(), "nope".into()),
        ])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}

pub async fn replay_is_idempotent_and_forks_are_refused(store: &dyn Store) {
    let recs = make_chain("conf-replay", None, 5);
    store
        .append(CommitBatch {
            records: recs.clone(),
            receipts: vec![],
            ..Default::default()
        })
        .await
        .unwrap();
    // Replaying a suffix writes nothing new and succeeds.
    store
        .append(CommitBatch {
            records: recs[2..].to_vec(),
            receipts: vec![],
            ..Default::default()
        })
        .await
        .expect("replay is a no-op");
    assert_eq!(
        store.scan_chain("conf-replay", 0, 100).await.unwrap().len(),
        5
    );

    // A different record at an occupied sequence number is a fork: refused, nothing written.
    let mut fork = make_chain("conf-replay", Some(recs[3].head()), 2);
    fork[0].record.sequence_number = 5;
    fork[0].record.id = "forked".into();
    fork[0].canonical = fork[0].record.canonical_unhashed();
    fork[0].record.hash = fork[0].record.compute_hash();
    let err = store
        .append(CommitBatch {
            records: fork,
            receipts: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let rows = store.scan_chain("conf-replay", 0, 100).await.unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[4].hash, recs[4].record.hash);
    assert!(
        store
            .get_event("conf-replay", "forked")
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn tenants_are_isolated(store: &dyn Store) {
    let a = make_chain("conf-iso-a", None, 3);
    let b = make_chain("conf-iso-b", None, 2);
    store
        .append(CommitBatch {
            records: [a.clone(), b.clone()].concat(),
            receipts: vec![],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        store
            .get_event("conf-iso-b", &a[0].record.id)
            .await
            .unwrap()
            .is_none()
    );
    let page = store
        .list_events("conf-iso-b", EventQuery::default())
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    assert!(page.events.iter().all(|e| e.tenant_id == "conf-iso-b"));
    assert_eq!(
        store.scan_chain("conf-iso-a", 0, 10).await.unwrap().len(),
        3
    );
}

pub async fn list_filters_and_paging(store: &dyn Store) {
    let recs = make_chain("conf-list", None, 20);
    store
        .append(CommitBatch {
            records: recs.clone(),
            receipts: vec![],
            ..Default::default()
        })
        .await
        .unwrap();
    let query = |f: fn(&mut EventQuery)| {
        let mut q = EventQuery {
            paging: Paging::Page {
                page: 1,
                page_size: 100,
            },
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let expect = |pred: &dyn Fn(&sealtrail_core::record::Record) -> bool| {
        recs.iter()
            .filter(|r| pred(&r.record))
            .map(|r| r.record.sequence_number)
            .collect::<Vec<_>>()
    };
    let seqs = |p: crate::EventPage| {
        p.events
            .iter()
            .map(|e| e.sequence_number)
            .collect::<Vec<_>>()
    };

    let p = store
        .list_events("conf-list", query(|q| q.actor_id = Some("actor-1".into())))
        .await
        .unwrap();
    assert_eq!(seqs(p), expect(&|r| r.actor.id == "actor-1"));
    let p = store
        .list_events(
            "conf-list",
            query(|q| q.action = Some("document.delete".into())),
        )
        .await
        .unwrap();
    assert_eq!(seqs(p), expect(&|r| r.action == "document.delete"));
    let p = store
        .list_events("conf-list", query(|q| q.outcome = Some(Outcome::Failure)))
        .await
        .unwrap();
    assert_eq!(seqs(p), expect(&|r| r.outcome == Outcome::Failure));
    let p = store
        .list_events("conf-list", query(|q| q.resource_id = Some("doc-2".into())))
        .await
        .unwrap();
    assert_eq!(seqs(p), expect(&|r| r.resource.id == "doc-2"));
    let p = store
        .list_events(
            "conf-list",
            query(|q| {
                q.from = Some("2024-01-01T00:00:05.000000Z".into());
                q.to = Some("2024-01-01T00:00:09.000000Z".into());
            }),
        )
        .await
        .unwrap();
    assert_eq!(p.total, 5);
    assert_eq!(seqs(p), vec![5, 6, 7, 8, 9]);

    // fact0 pages
    let page2 = store
        .list_events(
            "conf-list",
            EventQuery {
                paging: Paging::Page {
                    page: 2,
                    page_size: 7,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page2.total, 20);
    assert_eq!(seqs(page2), (8..=14).collect::<Vec<_>>());
    // keyset paging
    let after = store
        .list_events(
            "conf-list",
            EventQuery {
                paging: Paging::After {
                    after: 17,
                    page_size: 50,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(after), vec![18, 19, 20]);
}

pub async fn receipts_round_trip(store: &dyn Store) {
    let r = receipt("rcpt-round", vec!["x".into(), "y".into()]);
    store
        .append(CommitBatch {
            records: vec![],
            receipts: vec![("conf-rcpt".into(), r.clone())],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_receipt("conf-rcpt", "rcpt-round").await.unwrap(),
        Some(r)
    );
    assert_eq!(
        store.get_receipt("conf-other", "rcpt-round").await.unwrap(),
        None,
        "receipts are per tenant"
    );
    let mut unstamped = receipt("rcpt-stamp", vec!["z".into()]);
    unstamped.committed_at = None;
    store
        .append(CommitBatch {
            records: vec![],
            receipts: vec![("conf-rcpt".into(), unstamped)],
            ..Default::default()
        })
        .await
        .unwrap();
    let stamped = store
        .get_receipt("conf-rcpt", "rcpt-stamp")
        .await
        .unwrap()
        .unwrap();
    let at = stamped.committed_at.expect("the store stamps committed_at");
    assert!(sealtrail_core::time::parse_rfc3339(&at).is_ok(), "{at}");
}

pub async fn keys_lifecycle(store: &dyn Store) {
    let key = ApiKey {
        key_id: "key_conf1".into(),
        tenant_id: "conf-keys".into(),
        key_hash: "ab".repeat(32),
        key_prefix: "alk_live_abcd".into(),
        scopes: vec!["read".into(), "write".into()],
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        revoked_at: None,
    };
    store.create_key(key.clone()).await.unwrap();
    assert_eq!(
        store.find_key(&key.key_hash).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.find_key(&"cd".repeat(32)).await.unwrap(), None);
    assert_eq!(
        store.list_keys(Some("conf-keys")).await.unwrap(),
        vec![key.clone()]
    );
    assert!(
        store
            .list_keys(Some("conf-nobody"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .revoke_key("key_conf1", "2024-01-02T00:00:00.000000Z")
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_key("key_conf1", "2024-01-03T00:00:00.000000Z")
            .await
            .unwrap(),
        "already revoked"
    );
    let revoked = store.find_key(&key.key_hash).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at.as_deref(),
        Some("2024-01-02T00:00:00.000000Z")
    );
}

/// The tree nodes complete after appending `records` to a tree of `frontier`.
pub fn tree_nodes_of(
    frontier: &mut sealtrail_core::merkle::Frontier,
    records: &[ChainedRecord],
) -> Vec<TreeNode> {
    let mut out = Vec::new();
    for c in records {
        let leaf = sealtrail_core::merkle::record_leaf(&c.record.hash).expect("hex hash");
        frontier.push(&leaf, |id, hash| {
            out.push(TreeNode {
                tenant_id: c.record.tenant_id.clone(),
                id,
                hash,
            })
        });
    }
    out
}

/// Tree nodes are stored with their records, read back by id (missing ones as `None`),
/// rewritten harmlessly on replay, and isolated per tenant.
pub async fn tree_nodes_round_trip(store: &dyn Store) {
    use sealtrail_core::merkle::{Frontier, NodeId};
    let recs = make_chain("conf-tree", None, 11);
    let mut frontier = Frontier::new();
    let nodes = tree_nodes_of(&mut frontier, &recs[..6]);
    let batch = CommitBatch {
        records: recs[..6].to_vec(),
        tree_nodes: nodes.clone(),
        ..Default::default()
    };
    store
        .append(batch.clone())
        .await
        .expect("append with nodes");
    store
        .append(batch)
        .await
        .expect("a replay with nodes is a no-op");
    let rest = tree_nodes_of(&mut frontier, &recs[6..]);
    store
        .append(CommitBatch {
            records: recs[6..].to_vec(),
            tree_nodes: rest.clone(),
            ..Default::default()
        })
        .await
        .expect("append the rest");
    let all: Vec<TreeNode> = nodes.into_iter().chain(rest).collect();
    assert_eq!(all.len(), 2 * 11 - 3, "2n - popcount(n) complete nodes");
    let ids: Vec<NodeId> = all.iter().map(|n| n.id).collect();
    let got = store.tree_nodes("conf-tree", ids.clone()).await.unwrap();
    let want: Vec<Option<[u8; 32]>> = all.iter().map(|n| Some(n.hash)).collect();
    assert_eq!(got, want);
    // a node not complete yet, and another tenant's view
    let missing = store
        .tree_nodes("conf-tree", vec![NodeId::new(3, 1), NodeId::new(0, 11)])
        .await
        .unwrap();
    assert_eq!(missing, vec![None, None]);
    let other = store.tree_nodes("conf-tree-other", ids).await.unwrap();
    assert!(other.iter().all(Option::is_none));
    // the frontier reloads from the store
    let ids = Frontier::ids(11);
    let hashes: Vec<[u8; 32]> = store
        .tree_nodes("conf-tree", ids)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.expect("frontier node stored"))
        .collect();
    assert_eq!(Frontier::from_nodes(11, hashes).unwrap(), frontier);

    // a batch of nodes alone (how a chain stored without them is backfilled)
    let recs = make_chain("conf-tree-backfill", None, 3);
    store
        .append(CommitBatch {
            records: recs.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let nodes = tree_nodes_of(&mut Frontier::new(), &recs);
    store
        .append(CommitBatch {
            tree_nodes: nodes.clone(),
            ..Default::default()
        })
        .await
        .expect("a batch of tree nodes only");
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    let got = store.tree_nodes("conf-tree-backfill", ids).await.unwrap();
    assert!(got.iter().all(Option::is_some));
}
