//! Measures the CQL operations the store's append path uses, on a live node:
//! `cargo run --release -p sealtrail-scylla --example cql_probe [host:port]`.
//! Prints the throughput of concurrent plain inserts, unlogged single-partition batches
//! (with the local node's CPU per batch, by rows per batch and row size) and the latency
//! of sequential lightweight transactions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sealtrail_scylla::{Consistency, ScyllaSettings, connect};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let node = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9042".into());
    let settings = ScyllaSettings {
        nodes: vec![node],
        keyspace: "probe".into(),
        consistency: Consistency::LocalQuorum,
        request_timeout: Duration::from_secs(10),
    };
    let s = Arc::new(connect(&settings).await.unwrap());
    s.query_unpaged("CREATE KEYSPACE IF NOT EXISTS probe WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", ()).await.unwrap();
    s.query_unpaged(
        "CREATE TABLE IF NOT EXISTS probe.rows (p text, c bigint, v blob, PRIMARY KEY (p, c))",
        (),
    )
    .await
    .unwrap();
    s.query_unpaged(
        "CREATE TABLE IF NOT EXISTS probe.heads (p int, t text, n bigint, PRIMARY KEY (p, t))",
        (),
    )
    .await
    .unwrap();
    let insert = s
        .prepare("INSERT INTO probe.rows (p, c, v) VALUES (?, ?, ?)")
        .await
        .unwrap();
    let blob = vec![7u8; 600];

    for concurrency in [1usize, 16, 64] {
        let n = 4000usize;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let (s, insert, blob) = (s.clone(), insert.clone(), blob.clone());
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(concurrency) {
                    s.execute_unpaged(&insert, (format!("k{}", i % 97), i as i64, &blob))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "insert, concurrency {concurrency:>3}: {:>8.0} rows/s",
            n as f64 / secs
        );
    }

    use scylla::statement::batch::{Batch, BatchType};
    for (label, same_partition) in [("one partition", true), ("scattered", false)] {
        let rows = 50usize;
        let batches = 200usize;
        let concurrency = 8usize;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let (s, insert, blob) = (s.clone(), insert.clone(), blob.clone());
            tasks.push(tokio::spawn(async move {
                for b in (w..batches).step_by(concurrency) {
                    let mut batch = Batch::new(BatchType::Unlogged);
                    let mut values = Vec::new();
                    for r in 0..rows {
                        batch.append_statement(insert.clone());
                        let p = if same_partition {
                            format!("b{b}")
                        } else {
                            format!("b{b}-{r}")
                        };
                        values.push((p, r as i64, blob.clone()));
                    }
                    s.batch(&batch, values).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "unlogged batches of {rows} ({label}), concurrency {concurrency}: {:>8.0} rows/s",
            (rows * batches) as f64 / secs
        );
    }

    // Cassandra's CPU per write, by shape (rows per single-partition batch × row size),
    // read from /proc for the local node started by deploy/local (skipped elsewhere).
    let cass_pid = std::fs::read_to_string(".build/infra/cassandra/cassandra.pid").ok();
    let cpu = || -> Option<f64> {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", cass_pid.as_ref()?.trim())).ok()?;
        let f: Vec<&str> = stat.split_whitespace().collect();
        Some((f[13].parse::<f64>().ok()? + f[14].parse::<f64>().ok()?) / 100.0)
    };
    for (rows, size) in [
        (200usize, 600usize),
        (200, 50),
        (1, 600),
        (1, 30_000),
        (1, 120_000),
    ] {
        let total_bytes = if size < 100 { 2_000_000 } else { 24_000_000 };
        let batches = total_bytes / (rows * size);
        let blob = vec![7u8; size];
        let c0 = cpu();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (s, insert, blob) = (s.clone(), insert.clone(), blob.clone());
            tasks.push(tokio::spawn(async move {
                for b in (w..batches).step_by(8) {
                    let mut batch = Batch::new(BatchType::Unlogged);
                    let mut values = Vec::new();
                    for r in 0..rows {
                        batch.append_statement(insert.clone());
                        values.push((
                            format!("x{rows}-{size}-{}", b / 4),
                            (b * rows + r) as i64,
                            blob.clone(),
                        ));
                    }
                    s.batch(&batch, values).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let per_batch = cpu_per_batch(c0, cpu(), batches);
        println!(
            "{batches} batches of {rows} rows x {size} B, concurrency 8: {:>6.0} batches/s{per_batch}",
            batches as f64 / secs
        );
    }

    let lwt = s
        .prepare("UPDATE probe.heads SET n = ? WHERE p = ? AND t = ? IF n = ?")
        .await
        .unwrap();
    let first = s
        .prepare("UPDATE probe.heads SET n = ? WHERE p = ? AND t = ? IF n = null")
        .await
        .unwrap();
    let t = format!("t{}", std::process::id());
    s.execute_unpaged(&first, (0i64, 1i32, &t)).await.unwrap();
    let started = Instant::now();
    let n = 200;
    for i in 0..n {
        s.execute_unpaged(&lwt, (i as i64 + 1, 1i32, &t, i as i64))
            .await
            .unwrap();
    }
    println!(
        "sequential LWT: {:.2} ms each",
        started.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
    let started = Instant::now();
    for i in 0..n {
        s.execute_unpaged(&insert, ("seq", i as i64, &blob))
            .await
            .unwrap();
    }
    println!(
        "sequential insert: {:.2} ms each",
        started.elapsed().as_secs_f64() * 1000.0 / n as f64
    );

    // The commit step's shapes (`append.rs`): per log partition, one batch that moves two
    // tenants' heads, issued back to back by 4 writers (one per partition) as the chainer
    // does. Cassandra's CPU and the latency per batch, for: the conditional batch the
    // store uses (epoch guard + a condition per head), one with the epoch guard only, and
    // the same writes unconditional.
    s.query_unpaged(
        "CREATE TABLE IF NOT EXISTS probe.cheads (p int, t text, epoch bigint static, \
         owner text static, n bigint, h text, PRIMARY KEY (p, t))",
        (),
    )
    .await
    .unwrap();
    let guard = s
        .prepare("UPDATE probe.cheads SET owner = ? WHERE p = ? IF epoch = ?")
        .await
        .unwrap();
    let advance = s
        .prepare("UPDATE probe.cheads SET n = ?, h = ? WHERE p = ? AND t = ? IF n = ?")
        .await
        .unwrap();
    let plain_advance = s
        .prepare("UPDATE probe.cheads SET n = ?, h = ? WHERE p = ? AND t = ?")
        .await
        .unwrap();
    let plain_owner = s
        .prepare("UPDATE probe.cheads SET owner = ? WHERE p = ?")
        .await
        .unwrap();
    let hash = "f".repeat(64);
    for (label, shape) in [
        ("guard + a condition per head", 0),
        ("epoch guard only", 1),
        ("unconditional", 2),
    ] {
        let base = (shape + 1) * 1000 + (std::process::id() % 1000) as i32 * 10;
        for w in 0..4 {
            s.query_unpaged(
                "UPDATE probe.cheads SET epoch = 1, owner = 'o' WHERE p = ?",
                (base + w,),
            )
            .await
            .unwrap();
            for t in ["a", "b"] {
                s.query_unpaged(
                    "UPDATE probe.cheads SET n = 0 WHERE p = ? AND t = ?",
                    (base + w, t),
                )
                .await
                .unwrap();
            }
        }
        let per_writer = 400usize;
        let c0 = cpu();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (s, hash) = (s.clone(), hash.clone());
            let (guard, advance) = (guard.clone(), advance.clone());
            let (plain_advance, plain_owner) = (plain_advance.clone(), plain_owner.clone());
            tasks.push(tokio::spawn(async move {
                let p = base + w;
                for i in 0..per_writer as i64 {
                    let mut batch = Batch::new(BatchType::Logged);
                    match shape {
                        0 => {
                            batch.append_statement(guard.clone());
                            batch.append_statement(advance.clone());
                            batch.append_statement(advance.clone());
                            let values = (
                                ("o", p, 1i64),
                                (i + 1, &hash, p, "a", i),
                                (i + 1, &hash, p, "b", i),
                            );
                            let r = s.batch(&batch, values).await.unwrap();
                            assert!(applied(r), "refused");
                        }
                        1 => {
                            batch.append_statement(guard.clone());
                            batch.append_statement(plain_advance.clone());
                            batch.append_statement(plain_advance.clone());
                            let values = (
                                ("o", p, 1i64),
                                (i + 1, &hash, p, "a"),
                                (i + 1, &hash, p, "b"),
                            );
                            let r = s.batch(&batch, values).await.unwrap();
                            assert!(applied(r), "refused");
                        }
                        _ => {
                            batch.append_statement(plain_owner.clone());
                            batch.append_statement(plain_advance.clone());
                            batch.append_statement(plain_advance.clone());
                            let values = (("o", p), (i + 1, &hash, p, "a"), (i + 1, &hash, p, "b"));
                            s.batch(&batch, values).await.unwrap();
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let batches = 4 * per_writer;
        let secs = started.elapsed().as_secs_f64();
        let per_batch = cpu_per_batch(c0, cpu(), batches);
        println!(
            "head moves, {label}: {:.2} ms per batch (4 writers){per_batch}",
            secs * 1000.0 * 4.0 / batches as f64
        );
    }
}

/// Whether a conditional batch applied (its first column, `[applied]`).
fn applied(result: scylla::response::query_result::QueryResult) -> bool {
    let rows = result
        .into_rows_result()
        .expect("conditional batches return rows");
    let row = rows.maybe_first_row::<scylla::value::Row>().expect("a row");
    matches!(
        row.and_then(|r| r.columns.into_iter().next().flatten()),
        Some(scylla::value::CqlValue::Boolean(true))
    )
}

/// `", Cassandra CPU … ms per batch"` from the node's CPU seconds before and after
/// `batches` batches (empty when the node's CPU cannot be read).
fn cpu_per_batch(before: Option<f64>, after: Option<f64>, batches: usize) -> String {
    match (before, after) {
        (Some(a), Some(b)) => format!(
            ", Cassandra CPU {:.2} ms per batch",
            (b - a) * 1000.0 / batches as f64
        ),
        _ => String::new(),
    }
}
