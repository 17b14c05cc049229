#!/usr/bin/env bash
# Distributed-mode benchmark (`make bench-distributed`): Kafka, Cassandra, one gateway and
# one chainer (release build), all on this machine, loaded by wrk. Prints committed
# events/s and latency p50/p99/p99.9 for sync single events and sync batches of 100 (a
# sync answer comes after Kafka acks=all, the chainer's store write and the reply), and
# async single events (answered once Kafka has them), then each process's CPU time.
#
# Starts Kafka and Cassandra (deploy/local/up.sh) unless they run, on fresh topics and a
# fresh keyspace, after a warm-up. Knobs: BENCH_SECONDS (default 15), BENCH_WARMUP_SECONDS (15), BENCH_CONNECTIONS (64),
# BENCH_BATCH_CONNECTIONS (8), BENCH_TENANTS (8), BENCH_PARTITIONS (4), BENCH_WRK_THREADS (2), BENCH_KEEP (set: keep the run's keyspace and topics),
# BENCH_LIST_EVENTS (1000000: then one tenant is filled to that many events with sync
# batches and bench/read_latency.py measures reads of it — by id, a one-filter list with
# its total, a fresh checkpoint, an inclusion proof; 0 skips this).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
CONNS=${BENCH_CONNECTIONS:-64}
BATCH_CONNS=${BENCH_BATCH_CONNECTIONS:-8}
TENANTS=${BENCH_TENANTS:-8}
THREADS=${BENCH_WRK_THREADS:-2}
BIN=${BENCH_BIN:-target/release/sealtrail}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release -p sealtrail
deploy/local/up.sh >/dev/null

others=$(deploy/local/cassandra.sh cqlsh -e "SELECT keyspace_name FROM system_schema.keyspaces" 2>/dev/null \
  | awk 'NF == 1 && $1 ~ /^[A-Za-z0-9_]+$/ && $1 !~ /^system/ && $1 != "keyspace_name" {printf "%s ", $1}' || true)
[[ -z $others ]] || echo "note: Cassandra holds other keyspaces ($others); their memtables share the node's memtable space and make this run flush and compact more often (drop them, or 'deploy/local/down.sh --wipe' for a clean node)" >&2
WORK=$(mktemp -d)
NAME="bench_$(date +%s)"
export SEALTRAIL_KAFKA_TOPIC="$NAME-events" SEALTRAIL_KAFKA_REPLY_TOPIC="$NAME-replies" \
  SEALTRAIL_KAFKA_GROUP_ID="$NAME" SEALTRAIL_SCYLLA_KEYSPACE="$NAME" RUST_LOG=warn SEALTRAIL_API_RATE_LIMIT_PER_KEY=0 SEALTRAIL_API_RATE_LIMIT_PER_TENANT=0
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); CPORT=$(free_port); GRPC=$(free_port)
BASE="http://127.0.0.1:$PORT"
"$BIN" migrate --partitions "${BENCH_PARTITIONS:-4}" 2>"$WORK/migrate.log"
"$BIN" chainer --http-addr "127.0.0.1:$CPORT" 2>"$WORK/chainer.log" &
CPID=$!
"$BIN" gateway --http-addr "127.0.0.1:$PORT" --grpc-addr "127.0.0.1:$GRPC" 2>"$WORK/gateway.log" &
GPID=$!
# At the end the run's keyspace and topics go (BENCH_KEEP=1 keeps them): a keyspace left
# behind keeps its memtables in the node's shared memtable space, so every later run on the
# same node flushes, and compacts, more often (three runs' leftovers: the events table
# flushed 57 times in one run instead of 19, at ~30% more Cassandra CPU per event).
cleanup() {
  kill $GPID $CPID 2>/dev/null; wait $GPID $CPID 2>/dev/null; rm -rf "$WORK"
  if [[ -z ${BENCH_KEEP:-} ]]; then
    deploy/local/cassandra.sh cqlsh -e "DROP KEYSPACE IF EXISTS $NAME" >/dev/null 2>&1 || true
    deploy/local/kafka.sh delete-topics "$NAME-.*" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
for _ in $(seq 300); do curl -sf "$BASE/healthz" >/dev/null && curl -sf "http://127.0.0.1:$CPORT/healthz" | grep -q '"partitions":\[0' && break; sleep 0.2; done

KEYS=""
for i in $(seq "$TENANTS"); do
  k=$("$BIN" keys create --store scylla --tenant "bench-$i" | tail -1)
  KEYS="$KEYS${KEYS:+,}$k"
done
EVENT='{"actor":{"id":"user_4821","type":"human","email":"ada@example.com"},"action":"document.delete","resource":{"id":"doc_99231","type":"document","name":"Q3 board deck"},"outcome":"success","metadata":{"ip":"203.0.113.7","user_agent":"Mozilla/5.0","request_id":"req_8f1c2a"}}'
echo "$EVENT" > "$WORK/event.json"
python3 - "$WORK/batch.json" "$EVENT" <<'PY'
import json, sys
event = json.loads(sys.argv[2])
json.dump({"events": [event] * 100}, open(sys.argv[1], "w"))
PY

cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
printf '\n%-30s %12s %9s %9s %9s %8s\n' "scenario (distributed)" "events/s" "p50 ms" "p99 ms" "p99.9 ms" "errors"
idle() { awk '/^cpu / {print ($5 + $6) / 100; exit}' /proc/stat; }  # machine idle+iowait, CPU-seconds
snapshot() { echo "$(cpu $GPID) $(cpu $CPID) $(cpu "$KPID") $(cpu "$CASSPID") $(idle) $(committed)"; }
run() { # name path body_file connections events_per_request
  local out line before after
  before=$(snapshot)
  out=$(ST_KEYS="$KEYS" ST_PATH="$2" ST_BODY_FILE="$3" wrk -t"$THREADS" -c"$4" -d"${SECONDS_PER_RUN}s" --latency -s bench/ingest.lua "$BASE" 2>&1)
  line=$(grep '^BENCH' <<<"$out") || { echo "$out" >&2; return 1; }
  eval "${line#BENCH }"
  printf '%-30s %12.0f %9s %9s %9s %8s\n' "$1" "$(echo "$requests * $5 / $duration_s" | bc -l)" "$p50_ms" "$p99_ms" "$p999_ms" "$((socket_errors + non2xx))"
  after=$(snapshot)
  # This run's CPU per committed event by process, and how idle the machine stayed (an
  # async run commits what it accepted a little later, so its figures are approximate).
  awk -v b="$before" -v a="$after" -v secs="$duration_s" -v cores="$(nproc)" 'BEGIN {
    split(b, x, " "); split(a, y, " "); ev = y[6] - x[6]; if (ev <= 0) ev = 1
    printf "%-30s gateway %.0f, chainer %.0f, kafka %.0f, cassandra %.0f us/event; machine idle %.0f%%\n", "  CPU of this run", \
      (y[1]-x[1])*1e6/ev, (y[2]-x[2])*1e6/ev, (y[3]-x[3])*1e6/ev, (y[4]-x[4])*1e6/ev, (y[5]-x[5])*100/(secs*cores) }'
}
# Warm-up (JIT of both JVMs, connection pools, caches), not reported.
ST_KEYS="$KEYS" ST_PATH="/v1/events/batch?sync=true" ST_BODY_FILE="$WORK/batch.json" \
  wrk -t"$THREADS" -c"$BATCH_CONNS" -d"${BENCH_WARMUP_SECONDS:-15}s" -s bench/ingest.lua "$BASE" >/dev/null
KPID=$(cat .build/infra/kafka/kafka.pid); CASSPID=$(cat .build/infra/cassandra/cassandra.pid)
committed() { curl -s "http://127.0.0.1:$CPORT/metrics" | awk '/^sealtrail_events_committed_total/ {s += $2} END {print s + 0}'; }
# CPU and committed events from here on (snapshot: each process's CPU seconds, the
# machine's idle seconds, events committed): the three measured runs only (the JVMs may
# have run before, and the warm-up is not reported).
FIRST=$(snapshot)
run "single sync (c=$CONNS)" "/v1/events?sync=true" "$WORK/event.json" "$CONNS" 1
run "batch 100 sync (c=$BATCH_CONNS)" "/v1/events/batch?sync=true" "$WORK/batch.json" "$BATCH_CONNS" 100
run "single async (c=$CONNS)" /v1/events "$WORK/event.json" "$CONNS" 1
awk -v b="$FIRST" -v a="$(snapshot)" 'BEGIN {
  split(b, x, " "); split(a, y, " "); ev = y[6] - x[6]; if (ev <= 0) ev = 1
  printf "%-30s gateway %.1f s, chainer %.1f s, kafka %.1f s, cassandra %.1f s (the three runs)\n", "CPU time used", y[1]-x[1], y[2]-x[2], y[3]-x[3], y[4]-x[4]
  printf "%-30s %d\n", "events committed", y[6] - x[6]
  printf "%-30s gateway %.0f, chainer %.0f, kafka %.0f, cassandra %.0f\n", "CPU us per committed event", \
    (y[1]-x[1])*1e6/ev, (y[2]-x[2])*1e6/ev, (y[3]-x[3])*1e6/ev, (y[4]-x[4])*1e6/ev }'
printf '%-30s %s\n' "gateway producer replacements" "$(curl -s "$BASE/metrics" | awk '/^sealtrail_kafka_producer_replaced_total/ {print $2}' | grep . || echo 0)"

LIST_EVENTS=${BENCH_LIST_EVENTS:-1000000}
if ((LIST_EVENTS > 0)); then
  KEY1=${KEYS%%,*}
  size() { curl -s -H "Authorization: Bearer $KEY1" "$BASE/v1/events?page_size=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
  have=$(size); started=$(date +%s)
  ST_KEYS="$KEY1" ST_PATH="/v1/events/batch?sync=true" ST_BODY_FILE="$WORK/batch.json" \
    wrk -t"$THREADS" -c"$BATCH_CONNS" -d1h -s bench/ingest.lua "$BASE" >/dev/null 2>&1 &
  WRK=$!
  while have=$(size) && ((have < LIST_EVENTS)); do sleep 2; done
  kill -INT $WRK 2>/dev/null; wait $WRK 2>/dev/null || true
  printf '\nfilled one tenant to %s events in %s s; waiting for its derived rows\n' "$(size)" "$(( $(date +%s) - started ))"
  sleep 3
  python3 bench/read_latency.py "$BASE" "$KEY1" "${BENCH_READS:-200}"
fi
