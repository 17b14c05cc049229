//! Writes a large exported log for benchmarking the offline verifier, and times the
//! verifier's stages in-process:
//!
//! ```sh
//! cargo run --release --example verify_bench -p sealtrail-core -- /tmp/vb 1000000
//! cargo build --release -p sealtrail
//! time target/release/sealtrail verify /tmp/vb/records.jsonl \
//!     --checkpoint /tmp/vb/checkpoint.txt --key /tmp/vb/log-key.txt
//! ```
use std::io::Write;
use std::time::Instant;

use sealtrail_core::audit::{Auditor, Checks, canonical_line, digest_line};
use sealtrail_core::checkpoint::{Checkpoint, tenant_origin};
use sealtrail_core::event::validate_event;
use sealtrail_core::merkle::{Frontier, record_leaf};
use sealtrail_core::note::NoteSigner;
use sealtrail_core::record::chain_step;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/verify-bench".into()));
    let n: usize = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("a count"));
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(dir.join("records.jsonl")).unwrap());
    let mut head = None;
    let mut frontier = Frontier::new();
    let mut lines = Vec::with_capacity(n.min(200_000));
    for i in 0..n {
        let ev = validate_event(
            serde_json::json!({"actor": {"id": format!("user_{}", i % 5000), "type": "human", "email": "ada@example.com"},
                "action": "document.delete", "resource": {"id": format!("doc_{i}"), "type": "document", "name": "Q3 board deck"},
                "outcome": "success", "metadata": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "request_id": format!("req_{i}")}}),
            1_700_000_000_000_000 + i as i64,
            || format!("0190a1b2-c3d4-7e5f-8a9b-{i:012}"),
        )
        .unwrap();
        let c = chain_step(head.as_ref(), "acme", ev);
        head = Some(c.head());
        frontier.push(&record_leaf(&c.record.hash).unwrap(), |_, _| {});
        let line = canonical_line(&c.canonical, &c.record.hash);
        out.write_all(&line).unwrap();
        out.write_all(b"\n").unwrap();
        if lines.len() < lines.capacity() {
            lines.push(line);
        }
    }
    out.flush().unwrap();
    let signer = NoteSigner::from_seed("bench.sealtrail.example", [1; 32]).unwrap();
    let cp = Checkpoint::new(
        tenant_origin(signer.name(), "acme"),
        n as u64,
        frontier.root(),
    );
    let note = cp.sign(&signer).unwrap();
    std::fs::write(dir.join("checkpoint.txt"), &note).unwrap();
    std::fs::write(dir.join("log-key.txt"), signer.verifier().to_string()).unwrap();
    eprintln!(
        "wrote {n} records to {} in {:.1?}",
        dir.display(),
        t.elapsed()
    );

    // one core, in memory: stage 1 (digest) and stage 2 (checks) separately
    let m = lines.len();
    let t = Instant::now();
    let digests: Vec<_> = lines.iter().map(|l| digest_line(l)).collect();
    let d = t.elapsed();
    let key = signer.verifier();
    let mut auditor = Auditor::new(Checks::default(), Some(&key), None, None).unwrap();
    let t = Instant::now();
    for dg in &digests {
        auditor.feed(dg.as_ref()).unwrap();
    }
    let f = t.elapsed();
    println!(
        "one core: digest {:.0} ns/record, checks + tree {:.0} ns/record ({:.2}M records/s per core)",
        d.as_nanos() as f64 / m as f64,
        f.as_nanos() as f64 / m as f64,
        m as f64 / (d + f).as_secs_f64() / 1e6
    );
}
