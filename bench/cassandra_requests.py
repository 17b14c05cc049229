"""What one request of each kind a chainer sends costs the local Cassandra node.

`make bench-cassandra-requests`, or `deploy/local/cassandra.sh python
bench/cassandra_requests.py [--concurrency N] [--rounds N] [--requests N]` (cqlsh's Python
has the DataStax driver), against the node `deploy/local/up.sh` started. In a keyspace of
its own (dropped at the end) it sends, in turn, the request shapes of the distributed
write path — a one-row insert, an `events` row, an unlogged batch of four `events` rows
of one partition, the conditional batch that moves a log partition's heads under its
epoch guard, a plain read of a head — keeping `--concurrency` requests in flight, and
prints for each the rate, the node's CPU per request and its threads' context switches
per request (from /proc: the node must run on this machine). The first round warms the
JIT; compare the later ones.

The figures explain why a single event costs the node what it does (README, "Distributed
mode"): the node's work per request is mostly hand-offs between its thread pools, not
the rows a request carries.
"""

import argparse
import glob
import os
import time

from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster
from cassandra.query import BatchStatement, BatchType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def node_pid(path):
    try:
        return int(open(path).read().strip())
    except OSError as e:
        raise SystemExit(f"no Cassandra pid file at {path} ({e}): start the node with deploy/local/up.sh")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid):
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            for line in open(status):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--requests", type=int, default=5000, help="requests of each kind per round (5000)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the first warms the JIT (3)")
    parser.add_argument(
        "--pid-file",
        default=os.path.join(ROOT, ".build/infra/cassandra/cassandra.pid"),
        help="the node's pid file (deploy/local's by default)",
    )
    args = parser.parse_args()
    pid = node_pid(args.pid_file)

    cluster = Cluster([args.host])
    session = cluster.connect()
    ks = "request_costs"
    session.execute(f"DROP KEYSPACE IF EXISTS {ks}")
    session.execute(
        f"CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    )
    # The shapes of sealtrail-scylla's `heads` and `events` (schema.rs), copied rather than
    # made by `sealtrail migrate` so the bench needs no build; keep them in step.
    session.execute(
        f"CREATE TABLE {ks}.heads (log_partition int, tenant_id text, epoch bigint static, "
        "owner text static, sequence_number bigint, hash text, PRIMARY KEY (log_partition, tenant_id))"
    )
    session.execute(
        f"CREATE TABLE {ks}.events (tenant_id text, bucket bigint, sequence_number bigint, "
        "event_id text, hash text, input_digest text, canonical blob, "
        "PRIMARY KEY ((tenant_id, bucket), sequence_number))"
    )
    session.execute(f"CREATE TABLE {ks}.kv (k int PRIMARY KEY, v text)")
    heads = {}
    for p in range(4):
        session.execute(f"INSERT INTO {ks}.heads (log_partition, epoch, owner) VALUES (%s, 1, 'bench')", (p,))
        for t in range(2):
            tenant = f"t{p}{t}"
            session.execute(
                f"INSERT INTO {ks}.heads (log_partition, tenant_id, sequence_number, hash) VALUES (%s, %s, 0, 'h')",
                (p, tenant),
            )
            heads[tenant] = 0
    guard = session.prepare(f"UPDATE {ks}.heads SET owner = ? WHERE log_partition = ? IF epoch = ?")
    advance = session.prepare(
        f"UPDATE {ks}.heads SET sequence_number = ?, hash = ? WHERE log_partition = ? AND tenant_id = ? "
        "IF sequence_number = ?"
    )
    insert_event = session.prepare(
        f"INSERT INTO {ks}.events (tenant_id, bucket, sequence_number, event_id, hash, input_digest, "
        "canonical) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    insert_kv = session.prepare(f"INSERT INTO {ks}.kv (k, v) VALUES (?, ?)")
    read_head = session.prepare(f"SELECT sequence_number, hash FROM {ks}.heads WHERE log_partition = ? AND tenant_id = ?")
    canonical = b"x" * 420  # about the bench's event, canonicalized
    seq = iter(range(1, 1 << 62))

    def kv(i):
        return session.execute_async(insert_kv, (i, "v"))

    def event_row(i):
        return session.execute_async(insert_event, (f"t{i % 8}", 1, next(seq), "id", "h" * 64, "d" * 64, canonical))

    def event_batch(i):
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for _ in range(4):
            batch.add(insert_event, (f"t{i % 8}", 0, next(seq), "id", "h" * 64, "d" * 64, canonical))
        return session.execute_async(batch)

    def conditional(i):
        p = i % 4
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
        batch.add(guard, ("bench", p, 1))
        for t in range(2):
            tenant = f"t{p}{t}"
            batch.add(advance, (heads[tenant] + 1, "h", p, tenant, heads[tenant]))
            heads[tenant] += 1
        return session.execute_async(batch)

    def head_read(i):
        return session.execute_async(read_head, (i % 4, f"t{i % 4}0"))

    kinds = [
        ("one-row insert", kv),
        ("events row", event_row),
        ("unlogged batch, 4 events rows", event_batch),
        ("conditional heads batch (LWT)", conditional),
        ("plain head read", head_read),
    ]
    # The conditional batches of one partition must not overlap (each expects the head the
    # previous one set): at most one in flight per partition.
    print(f"{'request':34s} {'requests/s':>10s} {'node CPU us':>12s} {'ctx switches':>13s}   (per request)")
    try:
        for rnd in range(1, args.rounds + 1):
            print(f"round {rnd}{' (JIT warm-up)' if rnd == 1 and args.rounds > 1 else ''}")
            for name, send in kinds:
                window = min(args.concurrency, 4) if send is conditional else args.concurrency
                c0, s0, t0 = cpu_seconds(pid), context_switches(pid), time.monotonic()
                futures = []

                def settle():
                    for f in futures:
                        result = f.result()
                        # A conditional batch that did not apply did less work than one
                        # that did, and every later one would fail the same way.
                        if send is conditional and not result.was_applied:
                            raise SystemExit("a conditional batch did not apply: the heads are not where this run left them")
                    futures.clear()

                for i in range(args.requests):
                    futures.append(send(i))
                    if len(futures) >= window:
                        settle()
                settle()
                dt = time.monotonic() - t0
                c1, s1 = cpu_seconds(pid), context_switches(pid)
                n = args.requests
                print(f"  {name:32s} {n / dt:10.0f} {(c1 - c0) * 1e6 / n:12.0f} {(s1 - s0) / n:13.1f}")
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {ks}")
        cluster.shutdown()


if __name__ == "__main__":
    main()
