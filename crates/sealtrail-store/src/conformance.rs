//! The conformance suite every [`Store`] must pass. A backend's test calls [`run_all`]
//! with a fresh, empty store; each check uses its own tenant names, so one store serves
//! the whole suite.

use sealtrail_core::event::{Outcome, validate_event};
use sealtrail_core::receipt::{Receipt, ReceiptStatus};
use sealtrail_core::record::{ChainHead, ChainedRecord, chain_step};
use serde_json::json;

use crate::rule::RefusalKind;
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
    append_rule_cases(store).await;
    tenants_are_isolated(store).await;
    list_filters_and_paging(store).await;
    receipts_round_trip(store).await;
    keys_lifecycle(store).await;
    destinations_lifecycle(store).await;
    tree_nodes_round_trip(store).await;
    every_node_of_a_larger_tree(store).await;
    redactions_erase_and_keep_the_links(store).await;
    retention_removes_the_records_before_the_boundary(store).await;
}

/// Every check but [`redactions_erase_and_keep_the_links`] (it waits for the erasure,
/// which a store whose derivation is paused never does).
pub async fn run_all_but_erasure(store: &dyn Store) {
    append_then_read_back(store).await;
    replay_is_idempotent_and_forks_are_refused(store).await;
    append_rule_cases(store).await;
    tenants_are_isolated(store).await;
    list_filters_and_paging(store).await;
    receipts_round_trip(store).await;
    keys_lifecycle(store).await;
    tree_nodes_round_trip(store).await;
    every_node_of_a_larger_tree(store).await;
}

/// The redaction event of `target` (issue 15), chained after `head`.
pub fn redaction_of(
    tenant: &str,
    head: &ChainHead,
    target: &sealtrail_core::record::Record,
) -> ChainedRecord {
    let actor = sealtrail_core::event::Actor {
        email: None,
        id: "key_admin".into(),
        actor_type: None,
    };
    let id = format!(
        "{tenant}-redact-{}-{}",
        target.sequence_number, head.sequence_number
    );
    let event = sealtrail_core::event::normalize(
        sealtrail_core::record::redaction_input(
            actor,
            &target.id,
            target.sequence_number,
            "erasure request",
        ),
        1_704_067_300_000_000 + head.sequence_number as i64,
        || id,
    )
    .expect("a redaction event is valid");
    chain_step(Some(head), tenant, event)
}

/// A store that [`Store::erases_redacted`] erases the record a redaction event names:
/// reads return it redacted (same id, sequence number, links and hash), no filter finds
/// it, its stored bytes are the redacted form, the tree is unchanged, and neither a replay
/// of the original record nor a second redaction brings anything back. Records at the
/// start, in the middle (inside a complete 1,024-record block) and at the head.
pub async fn redactions_erase_and_keep_the_links(store: &dyn Store) {
    if !store.erases_redacted() {
        return;
    }
    use sealtrail_core::merkle::{Frontier, NodeId};
    let tenant = "conf-redact";
    let recs = make_chain(tenant, None, 1030);
    let mut frontier = Frontier::new();
    for chunk in recs.chunks(256) {
        let nodes = tree_nodes_of(&mut frontier, chunk);
        store
            .append(CommitBatch {
                records: chunk.to_vec(),
                tree_nodes: nodes,
                ..Default::default()
            })
            .await
            .expect("append");
    }
    let page = |f: &dyn Fn(&mut EventQuery)| {
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
    let by_actor = |a: &str| {
        let a = a.to_string();
        page(&move |q| q.actor_id = Some(a.clone()))
    };
    let in_time = page(&|q| {
        q.from = Some("2024-01-01T00:00:00.000000Z".into());
        q.to = Some("2024-01-01T00:01:00.000000Z".into());
    });
    let total =
        |q: EventQuery| async move { store.list_events(tenant, q).await.expect("list").total };
    let targets = [1usize, 700, 1030];
    let mut actor_totals = Vec::new();
    for t in targets {
        actor_totals.push(total(by_actor(&recs[t - 1].record.actor.id)).await);
    }
    let timed_before = total(in_time.clone()).await;
    assert_eq!(timed_before, 1030);
    let ids = vec![NodeId::new(10, 0), NodeId::new(0, 699), NodeId::new(2, 174)];
    let root_before = store.tree_nodes(tenant, ids.clone()).await.expect("nodes");
    assert!(root_before.iter().all(Option::is_some));

    let mut head = recs.last().unwrap().head();
    let mut redactions = Vec::new();
    for t in targets {
        let redaction = redaction_of(tenant, &head, &recs[t - 1].record);
        head = redaction.head();
        let nodes = tree_nodes_of(&mut frontier, std::slice::from_ref(&redaction));
        store
            .append(CommitBatch {
                records: vec![redaction.clone()],
                tree_nodes: nodes,
                ..Default::default()
            })
            .await
            .expect("append the redaction");
        redactions.push(redaction);
    }
    for (t, redaction) in targets.iter().zip(&redactions) {
        let target = &recs[t - 1].record;
        let (_, _, by) = redaction.record.redaction_order().expect("a redaction");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let got = loop {
            let got = store
                .get_event(tenant, &target.id)
                .await
                .unwrap()
                .expect("a redacted record is still found by id")
                .record;
            if got.redacted.is_some() || std::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(got, target.redact(by.clone()), "record {t} redacted");
        let row = &store.scan_chain(tenant, (*t - 1) as u64, 1).await.unwrap()[0];
        assert_eq!(row.hash, target.hash);
        assert!(
            sealtrail_core::record::is_redacted(&row.canonical),
            "record {t}: the stored bytes are the redacted form"
        );
        assert_eq!(row.record().unwrap(), got);
    }
    // No filter finds them; an unfiltered list shows them redacted.
    for (i, t) in targets.iter().enumerate() {
        let actor = &recs[t - 1].record.actor.id;
        let before = actor_totals[i];
        let shared = targets
            .iter()
            .filter(|u| recs[*u - 1].record.actor.id == *actor)
            .count() as u64;
        let p = store.list_events(tenant, by_actor(actor)).await.unwrap();
        assert_eq!(p.total, before - shared, "actor filter of record {t}");
        assert!(p.events.iter().all(|e| e.redacted.is_none()));
    }
    assert_eq!(total(in_time.clone()).await, 1030 - 3);
    let mut timed = in_time.clone();
    timed.paging = Paging::Page {
        page: 7,
        page_size: 100,
    };
    let p = store.list_events(tenant, timed).await.unwrap();
    assert!(
        p.events
            .iter()
            .all(|e| e.redacted.is_none() && e.sequence_number != 700),
        "a time range never lists a redacted record"
    );
    let p = store
        .list_events(
            tenant,
            EventQuery {
                paging: Paging::Page {
                    page: 7,
                    page_size: 100,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.total, 1033);
    assert!(
        p.events
            .iter()
            .any(|e| e.sequence_number == 700 && e.redacted.is_some())
    );
    // The tree is unchanged.
    assert_eq!(
        store.tree_nodes(tenant, ids).await.expect("nodes"),
        root_before
    );
    // A replay of the original records is a no-op, and brings nothing back.
    store
        .append(CommitBatch {
            records: recs[..256].to_vec(),
            ..Default::default()
        })
        .await
        .expect("a replay of records since redacted is still a replay");
    // A second redaction of the same record erases nothing more: the record still names
    // the first.
    let again = redaction_of(tenant, &head, &recs[699].record);
    let nodes = tree_nodes_of(&mut frontier, std::slice::from_ref(&again));
    store
        .append(CommitBatch {
            records: vec![again],
            tree_nodes: nodes,
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for (t, redaction) in targets.iter().zip(&redactions) {
        let got = store
            .get_event(tenant, &recs[t - 1].record.id)
            .await
            .unwrap()
            .unwrap()
            .record;
        assert_eq!(
            got.redacted.as_ref().map(|r| r.event_id.as_str()),
            Some(redaction.record.id.as_str())
        );
    }
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
    let mut fork = make_chain("conf-replay", Some(recs[3].head()), 1);
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
    assert!(
        matches!(&err, StoreError::Refused(r) if r.kind == RefusalKind::Fork),
        "{err:?}"
    );
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

fn records_only(records: Vec<ChainedRecord>) -> CommitBatch {
    CommitBatch {
        records,
        ..Default::default()
    }
}

/// `record` with its content changed by `change`, hashed again (a well-formed record).
fn rehashed(mut record: ChainedRecord, change: impl FnOnce(&mut ChainedRecord)) -> ChainedRecord {
    change(&mut record);
    record.canonical = record.record.canonical_unhashed();
    record.record.hash = record.record.compute_hash();
    record
}

async fn refused(store: &dyn Store, records: Vec<ChainedRecord>) -> RefusalKind {
    match store.append(records_only(records)).await {
        Err(StoreError::Refused(refusal)) => refusal.kind,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Every case of the append rule (`crate::rule`): each refusal writes nothing.
pub async fn append_rule_cases(store: &dyn Store) {
    let t = "conf-rule";
    let recs = make_chain(t, None, 3);
    store.append(records_only(recs.clone())).await.unwrap();
    let head = recs[2].head();
    let next = make_chain(t, Some(head.clone()), 2);

    // A gap: record 5 without record 4.
    assert_eq!(
        refused(store, vec![next[1].clone()]).await,
        RefusalKind::Gap { after: 3 }
    );
    // A broken link: record 4 that does not point at record 3.
    let unlinked = rehashed(next[0].clone(), |r| {
        r.record.prev_hash = recs[1].record.hash.clone()
    });
    assert_eq!(
        refused(store, vec![unlinked]).await,
        RefusalKind::BrokenLink
    );
    // A first record that does not link to the zero hash.
    let first = make_chain("conf-rule-genesis", None, 1);
    let bad_genesis = rehashed(first[0].clone(), |r| {
        r.record.prev_hash = recs[0].record.hash.clone()
    });
    assert_eq!(
        refused(store, vec![bad_genesis]).await,
        RefusalKind::BrokenLink
    );
    // A duplicate client id at a new sequence number.
    let reused = rehashed(next[0].clone(), |r| r.record.id = recs[1].record.id.clone());
    assert!(reused.client_id);
    assert_eq!(
        refused(store, vec![reused]).await,
        RefusalKind::DuplicateId {
            id: recs[1].record.id.clone(),
            stored_at: 2
        }
    );
    // A replay with one byte changed is a fork.
    let changed = rehashed(recs[1].clone(), |r| {
        r.record.metadata.insert("i".into(), serde_json::json!(7));
    });
    assert_eq!(refused(store, vec![changed]).await, RefusalKind::Fork);
    // Records of the batch that skip a number.
    assert_eq!(
        refused(store, vec![next[0].clone(), next[0].clone()]).await,
        RefusalKind::OutOfOrder { after: 4 }
    );
    // A refused tenant refuses the whole batch: the good tenant's records are not written.
    let good = make_chain("conf-rule-good", None, 2);
    let mut mixed = good.clone();
    mixed.push(next[1].clone());
    assert!(matches!(
        store.append(records_only(mixed)).await,
        Err(StoreError::Refused(_))
    ));
    assert!(
        store
            .heads(vec!["conf-rule-good".into(), "conf-rule-genesis".into()])
            .await
            .unwrap()
            .is_empty(),
        "nothing of a refused batch is written"
    );
    // After all of that the chain is untouched, and a whole replay plus new records in one
    // batch is accepted.
    assert_eq!(store.heads(vec![t.into()]).await.unwrap()[t], head);
    let replay_and_more = [recs.clone(), next.clone()].concat();
    store.append(records_only(replay_and_more)).await.unwrap();
    assert_eq!(
        store.heads(vec![t.into()]).await.unwrap()[t],
        next[1].head()
    );
    let rows = store.scan_chain(t, 0, 100).await.unwrap();
    assert_eq!(rows.len(), 5);
    for (row, rec) in rows.iter().zip(recs.iter().chain(&next)) {
        assert_eq!(row.hash, rec.record.hash);
    }
}

/// Two writers racing to extend the same chain with different records: one wins whole,
/// the other is refused (or fenced), and the chain is the winner's. `first` and `second`
/// may be the same store (an embedded store serializes its writers) or two handles that
/// each believe they own the tenant's partition (Scylla: the one claimed later fences the
/// other). The tenants' names start with `prefix`.
pub async fn racing_writers_leave_one_chain(first: &dyn Store, second: &dyn Store, prefix: &str) {
    for round in 0..5 {
        let t = format!("{prefix}-{round}");
        let base = make_chain(&t, None, 1);
        second.append(records_only(base.clone())).await.unwrap();
        let a = make_chain(&t, Some(base[0].head()), 4);
        let b: Vec<ChainedRecord> = {
            let mut head = base[0].head();
            a.iter()
                .map(|r| {
                    let r = rehashed(r.clone(), |r| {
                        r.record.id = format!("{}-b", r.record.id);
                        r.record.prev_hash = head.hash.clone();
                    });
                    head = r.head();
                    r
                })
                .collect()
        };
        let (ra, rb) = tokio::join!(
            first.append(records_only(a.clone())),
            second.append(records_only(b.clone()))
        );
        let lost = |r: &Result<(), StoreError>| {
            matches!(r, Err(StoreError::Refused(_) | StoreError::Fenced(_)))
        };
        let winner = match (&ra, &rb) {
            (Ok(()), r) if lost(r) => &a,
            (r, Ok(())) if lost(r) => &b,
            other => panic!("exactly one writer must win: {other:?}"),
        };
        let rows = second.scan_chain(&t, 1, 100).await.unwrap();
        assert_eq!(rows.len(), 4);
        for (row, rec) in rows.iter().zip(winner) {
            assert_eq!(row.hash, rec.record.hash);
        }
    }
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

/// Log-stream destinations (issue 17): created, listed by tenant and all, their delivery
/// state stored, deleted; a deleted one takes no state.
pub async fn destinations_lifecycle(store: &dyn Store) {
    use crate::{DeliveryState, Destination};
    let make = |tenant: &str, id: &str| Destination {
        id: id.into(),
        tenant_id: tenant.into(),
        kind: "syslog".into(),
        url: "syslog+tls://logs.example:6514".into(),
        sealed_secret: vec![1, 2, 3],
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        state: DeliveryState::default(),
    };
    let a = make("conf-dst-a", "dst_a1");
    let b = make("conf-dst-b", "dst_b1");
    store.create_destination(a.clone()).await.unwrap();
    store.create_destination(b.clone()).await.unwrap();
    assert_eq!(
        store.destinations(Some("conf-dst-a")).await.unwrap(),
        vec![a.clone()]
    );
    let all = store.destinations(None).await.unwrap();
    assert!(all.contains(&a) && all.contains(&b), "{all:?}");
    assert!(
        store
            .destinations(Some("conf-dst-nobody"))
            .await
            .unwrap()
            .is_empty()
    );

    let generation = a.state.generation;
    assert!(
        store
            .claim_delivery("conf-dst-a", "dst_a1", generation)
            .await
            .unwrap()
    );
    let mut state = DeliveryState {
        delivered_through: 42,
        paused: false,
        failing_since: Some("2024-01-02T00:00:00.000000Z".into()),
        last_error: Some("the receiver answered 503".into()),
        last_success_at: Some("2024-01-01T12:00:00.000000Z".into()),
        generation: generation + 1,
    };
    assert!(
        store
            .record_delivery("conf-dst-a", "dst_a1", state.clone())
            .await
            .unwrap()
    );
    let read = store.destinations(Some("conf-dst-a")).await.unwrap();
    let mut expected = state.clone();
    expected.generation = read[0].state.generation; // a store of one process keeps 0
    assert_eq!(read[0].state, expected);
    assert_eq!(read[0].sealed_secret, vec![1, 2, 3]);

    assert!(
        store
            .delete_destination("conf-dst-a", "dst_a1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_destination("conf-dst-a", "dst_a1")
            .await
            .unwrap()
    );
    state.delivered_through = 43;
    assert!(
        !store
            .record_delivery("conf-dst-a", "dst_a1", state)
            .await
            .unwrap(),
        "a deleted destination takes no state"
    );
    assert!(
        store
            .destinations(Some("conf-dst-a"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .delete_destination("conf-dst-b", "dst_b1")
            .await
            .unwrap()
    );
}

/// A store shared by processes (distributed mode): a claim moves the generation once, and
/// a task whose generation was claimed away writes nothing.
pub async fn destination_claims_fence_stale_tasks(store: &dyn Store) {
    use crate::{DeliveryState, Destination};
    let d = Destination {
        id: "dst_claims".into(),
        tenant_id: "conf-dst-claims".into(),
        kind: "webhook".into(),
        url: "https://hooks.example/x".into(),
        sealed_secret: vec![9],
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        state: DeliveryState::default(),
    };
    store.create_destination(d.clone()).await.unwrap();
    let (t, id) = ("conf-dst-claims", "dst_claims");
    // two tasks read generation 0; one claim wins
    assert!(store.claim_delivery(t, id, 0).await.unwrap());
    assert!(
        !store.claim_delivery(t, id, 0).await.unwrap(),
        "a second claim of 0"
    );
    let first = DeliveryState {
        delivered_through: 10,
        generation: 1,
        ..DeliveryState::default()
    };
    assert!(store.record_delivery(t, id, first.clone()).await.unwrap());
    // a resume (or a new owner) claims generation 1: the first task is stale
    assert!(store.claim_delivery(t, id, 1).await.unwrap());
    let stale = DeliveryState {
        delivered_through: 5,
        ..first.clone()
    };
    assert!(
        !store.record_delivery(t, id, stale).await.unwrap(),
        "a stale task wrote"
    );
    let now = &store.destinations(Some(t)).await.unwrap()[0].state;
    assert_eq!((now.delivered_through, now.generation), (10, 2));
    assert!(store.delete_destination(t, id).await.unwrap());
    assert!(
        !store.claim_delivery(t, id, 2).await.unwrap(),
        "a deleted destination"
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

/// Every complete node of a 600-leaf tree (levels 0 to 9) reads back as the tree has it,
/// appended in batches whose boundaries fall anywhere (a store may keep only the upper
/// levels and compute the lower ones from the leaves); the first node past the end is
/// `None` at every level.
pub async fn every_node_of_a_larger_tree(store: &dyn Store) {
    use sealtrail_core::merkle::{Frontier, NodeId};
    const N: u64 = 600;
    let recs = make_chain("conf-big-tree", None, N as usize);
    let mut frontier = Frontier::new();
    let mut all = Vec::new();
    for chunk in recs.chunks(37) {
        let nodes = tree_nodes_of(&mut frontier, chunk);
        all.extend(nodes.iter().cloned());
        store
            .append(CommitBatch {
                records: chunk.to_vec(),
                tree_nodes: nodes,
                ..Default::default()
            })
            .await
            .expect("append a chunk with its nodes");
    }
    let ids: Vec<NodeId> = all.iter().map(|n| n.id).collect();
    assert!(ids.iter().any(|id| id.level == 9));
    let got = store.tree_nodes("conf-big-tree", ids).await.unwrap();
    for (node, got) in all.iter().zip(got) {
        assert_eq!(got, Some(node.hash), "node {:?}", node.id);
    }
    let past: Vec<NodeId> = (0..=9u8).map(|l| NodeId::new(l, N >> l)).collect();
    let got = store
        .tree_nodes("conf-big-tree", past.clone())
        .await
        .unwrap();
    for (id, got) in past.iter().zip(got) {
        assert_eq!(got, None, "{id:?} is not complete");
    }
    let hashes: Vec<[u8; 32]> = store
        .tree_nodes("conf-big-tree", Frontier::ids(N))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.expect("frontier node"))
        .collect();
    assert_eq!(Frontier::from_nodes(N, hashes).unwrap(), frontier);
}

/// The prune event (issue 15) that removes `tenant`'s records before `before`, chained
/// after `head`.
pub fn prune_of(tenant: &str, head: &ChainHead, before: u64) -> ChainedRecord {
    let mut policy = serde_json::Map::new();
    policy.insert("events".into(), json!(head.sequence_number + 1 - before));
    let event = sealtrail_core::event::normalize(
        sealtrail_core::record::prune_input(tenant, before, policy),
        1_704_067_400_000_000 + head.sequence_number as i64,
        || format!("{tenant}-prune-{before}-{}", head.sequence_number),
    )
    .expect("a prune event is valid");
    chain_step(Some(head), tenant, event)
}

/// A store that [`Store::prunes`] removes a tenant's records before a prune event's
/// boundary when the event is appended: they are not found by id, listed or scanned;
/// the chain goes on from the boundary; the tree keeps every node (proofs over removed
/// records still come out); a replay of a removed record is judged by its kept leaf; a
/// later prune with an earlier boundary moves nothing back; other tenants are untouched.
pub async fn retention_removes_the_records_before_the_boundary(store: &dyn Store) {
    use sealtrail_core::merkle::{Frontier, NodeId};
    if !store.prunes() {
        return;
    }
    let tenant = "conf-prune";
    let recs = make_chain(tenant, None, 50);
    let other = make_chain("conf-prune-other", None, 5);
    let mut frontier = Frontier::new();
    let nodes = tree_nodes_of(&mut frontier, &recs);
    let mut other_frontier = Frontier::new();
    let other_nodes = tree_nodes_of(&mut other_frontier, &other);
    store
        .append(CommitBatch {
            records: recs.iter().chain(&other).cloned().collect(),
            tree_nodes: nodes.into_iter().chain(other_nodes).collect(),
            ..Default::default()
        })
        .await
        .expect("append");
    assert_eq!(store.retained_from(tenant).await.unwrap(), 1);
    let prune = prune_of(tenant, &recs[49].head(), 21);
    let nodes = tree_nodes_of(&mut frontier, std::slice::from_ref(&prune));
    store
        .append(CommitBatch {
            records: vec![prune.clone()],
            tree_nodes: nodes,
            ..Default::default()
        })
        .await
        .expect("append the prune event");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.retained_from(tenant).await.unwrap() != 21 {
        assert!(
            std::time::Instant::now() < deadline,
            "the boundary never moved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (i, rec) in recs.iter().enumerate() {
        let got = store.get_event(tenant, &rec.record.id).await.unwrap();
        assert_eq!(got.is_some(), i >= 20, "record {} by id", i + 1);
    }
    let rows = store.scan_chain(tenant, 0, 100).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.sequence_number).collect::<Vec<_>>(),
        (21..=51).collect::<Vec<_>>()
    );
    let page = store
        .list_events(
            tenant,
            EventQuery {
                paging: Paging::Page {
                    page: 1,
                    page_size: 10,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 31);
    assert_eq!(page.events[0].sequence_number, 21);
    let by_actor = store
        .list_events(
            tenant,
            EventQuery {
                actor_id: Some("actor-0".into()),
                paging: Paging::Page {
                    page: 1,
                    page_size: 100,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(by_actor.events.iter().all(|e| e.sequence_number >= 21));
    assert_eq!(
        by_actor.total,
        recs[20..]
            .iter()
            .filter(|r| r.record.actor.id == "actor-0")
            .count() as u64
    );
    // The tree is whole: every frontier node of the 51 records, and removed leaves.
    let hashes: Vec<_> = store
        .tree_nodes(tenant, Frontier::ids(51))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.expect("frontier node"))
        .collect();
    assert_eq!(Frontier::from_nodes(51, hashes).unwrap(), frontier);
    // Nodes over removed records only (stored, or computed from what the store kept).
    let over_removed = vec![NodeId::new(0, 4), NodeId::new(2, 1), NodeId::new(4, 0)];
    assert!(
        store
            .tree_nodes(tenant, over_removed)
            .await
            .unwrap()
            .iter()
            .all(Option::is_some)
    );
    // A replay of removed records is still a replay; a forged one is a fork.
    store
        .append(CommitBatch {
            records: recs[..30].to_vec(),
            ..Default::default()
        })
        .await
        .expect("a replay of records since removed is a replay");
    let mut forged = recs[4].clone();
    forged.record.hash = "ab".repeat(32);
    let err = store
        .append(CommitBatch {
            records: vec![forged],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    // A later prune with an earlier boundary removes nothing and moves nothing back.
    let again = prune_of(tenant, &prune.head(), 11);
    let nodes = tree_nodes_of(&mut frontier, std::slice::from_ref(&again));
    store
        .append(CommitBatch {
            records: vec![again],
            tree_nodes: nodes,
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(store.retained_from(tenant).await.unwrap(), 21);
    assert_eq!(store.scan_chain(tenant, 0, 100).await.unwrap().len(), 32);
    // The other tenant is untouched.
    assert_eq!(store.retained_from("conf-prune-other").await.unwrap(), 1);
    assert_eq!(
        store
            .scan_chain("conf-prune-other", 0, 100)
            .await
            .unwrap()
            .len(),
        5
    );
    assert!(store.tenants().await.unwrap().iter().any(|t| t == tenant));
}
