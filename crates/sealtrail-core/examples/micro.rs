//! Rough per-event CPU cost of the pure pipeline steps: `cargo run --release --example micro -p sealtrail-core`.
use std::time::Instant;

use sealtrail_core::event::{validate_event, validate_event_json};
use sealtrail_core::json::parse_strict;
use sealtrail_core::record::chain_step;

fn main() {
    let body = br#"{"actor":{"id":"user_4821","type":"human","email":"ada@example.com"},"action":"document.delete","resource":{"id":"doc_99231","type":"document","name":"Q3 board deck"},"outcome":"success","metadata":{"ip":"203.0.113.7","user_agent":"Mozilla/5.0","request_id":"req_8f1c2a"}}"#;
    let n = 200_000;
    let t = Instant::now();
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let v = parse_strict(body).unwrap();
        events.push(
            validate_event(v, 1_700_000_000_000_000 + i as i64, || format!("id-{i}")).unwrap(),
        );
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("parse + validate + digest (through a Value): {per:.0} ns/event");
    drop(events);
    let t = Instant::now();
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        events.push(
            validate_event_json(body, 1_700_000_000_000_000 + i as i64, || format!("id-{i}"))
                .unwrap(),
        );
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("parse + validate + digest (typed, validate_event_json): {per:.0} ns/event");
    let t = Instant::now();
    let mut head = None;
    let mut recs = Vec::with_capacity(n);
    for e in events {
        let r = chain_step(head.as_ref(), "tenant", e);
        head = Some(r.head());
        recs.push(r);
    }
    println!(
        "chain step (JCS + SHA-256): {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let t = Instant::now();
    let mut bytes = 0;
    for r in &recs {
        bytes += serde_json::to_vec(&r.record).unwrap().len();
    }
    println!(
        "serialize record: {:.0} ns/event ({} bytes)",
        t.elapsed().as_nanos() as f64 / n as f64,
        bytes / n
    );
    let t = Instant::now();
    for r in &recs {
        std::hint::black_box(
            sealtrail_core::record::Record::from_canonical(&r.canonical, &r.record.hash).unwrap(),
        );
    }
    println!(
        "decode stored record: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let t = Instant::now();
    let mut w = sealtrail_core::verify::ChainWalker::new("tenant");
    for r in &recs {
        w.check(&r.record.hash, &r.canonical).unwrap();
    }
    println!(
        "verify walk: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
