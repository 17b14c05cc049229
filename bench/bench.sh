#!/usr/bin/env bash
# sealtrail benchmark (`make bench`): a release build on a fresh data dir, loaded by wrk
# on the same machine. Prints committed events/s and latency p50/p99/p99.9 for
# single-event async, single-event sync and sync batches of 100, then chain verification
# events/s and the server's peak RSS. Each REST scenario also prints the server's CPU per
# event and wrk's CPU per request; a first scenario, GET /healthz through the same wrk
# script, is the yardstick: what a request that stores nothing costs both on this machine
# in this hour (the machine's speed varies by hour; compare runs by these columns too).
#
# Knobs (environment): BENCH_SECONDS (default 10), BENCH_CONNECTIONS (64),
# BENCH_BATCH_CONNECTIONS (16), BENCH_TENANTS (8), BENCH_WRK_THREADS (2),
# BENCH_VERIFY_FILL_SECONDS (8: how long to fill the chain that is then verified),
# BENCH_GRPC_EVENTS (1000000: events sent over gRPC Ingest streams), BENCH_GRPC_STREAMS (8),
# BENCH_PIN (unset; 1: the server runs on CPU 0 alone and wrk and the gRPC client on the
# other CPUs, so the figures say what the server does with one core of its own instead of
# sharing every core with its load generator).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
BATCH_CONNS=${BENCH_BATCH_CONNECTIONS:-16}
TENANTS=${BENCH_TENANTS:-8}
THREADS=${BENCH_WRK_THREADS:-2}
BIN=${BENCH_BIN:-target/release/sealtrail}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release -p sealtrail
SERVER_PIN=()
CLIENT_PIN=()
if [ "${BENCH_PIN:-}" = 1 ]; then
  command -v taskset >/dev/null || { echo "BENCH_PIN=1 needs taskset (util-linux)" >&2; exit 1; }
  [ "$(nproc)" -ge 2 ] || { echo "BENCH_PIN=1 needs at least 2 CPUs" >&2; exit 1; }
  CLIENT_CPUS="1-$(($(nproc) - 1))"
  SERVER_PIN=(taskset -c 0)
  CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
  echo "BENCH_PIN=1: the server runs on CPU 0 alone, wrk and the gRPC client on CPUs $CLIENT_CPUS"
fi
GRPC_BENCH=target/release/examples/grpc_bench
cargo build --release -q -p sealtrail-client --example grpc_bench

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GRPC=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
SEALTRAIL_API_RATE_LIMIT_PER_KEY=0 SEALTRAIL_API_RATE_LIMIT_PER_TENANT=0 RUST_LOG=warn ${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$BIN" serve --data-dir "$WORK/data" --http-addr "127.0.0.1:$PORT" --grpc-addr "127.0.0.1:$GRPC" 2>"$WORK/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done

KEYS=""
for i in $(seq "$TENANTS"); do
  k=$("$BIN" keys create --tenant "bench-$i" --scopes read,write --data-dir "$WORK/data" | tail -1)
  KEYS="$KEYS${KEYS:+,}$k"
done
FIRST_KEY=${KEYS%%,*}

EVENT='{"actor":{"id":"user_4821","type":"human","email":"ada@example.com"},"action":"document.delete","resource":{"id":"doc_99231","type":"document","name":"Q3 board deck"},"outcome":"success","metadata":{"ip":"203.0.113.7","user_agent":"Mozilla/5.0","request_id":"req_8f1c2a"}}'
echo "$EVENT" > "$WORK/event.json"
python3 - "$WORK/batch.json" "$EVENT" <<'PY'
import json, sys
event = json.loads(sys.argv[2])
json.dump({"events": [event] * 100}, open(sys.argv[1], "w"))
PY

# The peak RSS of each scenario: the kernel's high-water mark, reset before it (clear_refs 5).
reset_peak() { echo 5 > /proc/$PID/clear_refs 2>/dev/null || true; }
peak_mb() { awk '/VmHWM/ {print $2/1024}' /proc/$PID/status; }
# Each scenario's peak goes to a file: note_peak runs in a command substitution (a subshell).
note_peak() { local p; p=$(peak_mb); echo "$p" >> "$WORK/peaks"; echo "$p"; }
# CPU seconds (user + system) the server has used so far.
TICKS=$(getconf CLK_TCK)
server_cpu() { awk -v t="$TICKS" '{print ($14 + $15) / t}' /proc/$PID/stat; }
# Seconds in `times` output (`0m1.230s`).
secs() { awk -F'[ms]' '{print $1 * 60 + $2}' <<<"$1"; }
printf '\n%-28s %12s %9s %9s %9s %8s %9s %10s %10s\n' "scenario" "events/s" "p50 ms" "p99 ms" "p99.9 ms" "errors" "peak MB" "server us" "wrk us"
run() { # name path body_file connections events_per_request [method]
  local out line c0 c1 wrk_cpu wrk_user wrk_sys
  reset_peak
  c0=$(server_cpu)
  # `times` in the substitution's shell: the CPU time of its child, wrk (user, system).
  out=$(ST_KEYS="$KEYS" ST_PATH="$2" ST_BODY_FILE="$3" ST_METHOD="${6:-POST}" ${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} wrk -t"$THREADS" -c"$4" -d"${SECONDS_PER_RUN}s" --latency -s bench/ingest.lua "$BASE" 2>&1; times)
  c1=$(server_cpu)
  line=$(grep '^BENCH' <<<"$out") || { echo "$out" >&2; return 1; }
  eval "${line#BENCH }"
  read -r wrk_user wrk_sys < <(tail -1 <<<"$out")
  wrk_cpu=$(echo "$(secs "$wrk_user") + $(secs "$wrk_sys")" | bc -l)
  # server us: the server's CPU per event (µs); wrk us: wrk's CPU per request.
  printf '%-28s %12.0f %9s %9s %9s %8s %9.0f %10.1f %10.1f\n' "$1" "$(echo "$requests * $5 / $duration_s" | bc -l)" "$p50_ms" "$p99_ms" "$p999_ms" "$((socket_errors + non2xx))" "$(note_peak)" \
    "$(echo "($c1 - $c0) * 1000000 / ($requests * $5)" | bc -l)" "$(echo "$wrk_cpu * 1000000 / $requests" | bc -l)"
}
run "yardstick: GET /healthz" /healthz "" "$CONNS" 1 GET
run "single async (c=$CONNS)" /v1/events "$WORK/event.json" "$CONNS" 1
run "single sync (c=$CONNS)" "/v1/events?sync=true" "$WORK/event.json" "$CONNS" 1
run "batch 100 sync (c=$BATCH_CONNS)" "/v1/events/batch?sync=true" "$WORK/batch.json" "$BATCH_CONNS" 100

# gRPC streaming ingest: BENCH_GRPC_STREAMS Ingest streams over the tenants, each event
# counted once its acknowledgement carries the committed record.
reset_peak
c0=$(server_cpu)
line=$(${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} "$GRPC_BENCH" --endpoint "http://127.0.0.1:$GRPC" --keys "$KEYS" --events "${BENCH_GRPC_EVENTS:-1000000}" --streams "${BENCH_GRPC_STREAMS:-8}" | grep '^BENCH_GRPC')
c1=$(server_cpu)
eval "${line#BENCH_GRPC }"
printf '%-28s %12.0f   (%s events in %.2f s over %s streams, %s failed; peak %.0f MB, server %.1f us per event)\n' "grpc Ingest stream" "$events_per_s" "$committed" "$seconds" "$streams" "$failed" "$(note_peak)" "$(echo "($c1 - $c0) * 1000000 / $committed" | bc -l)"

# Chain verification: fill one tenant's chain with sync batches, then walk it whole
# through GET /v1/verify (hash of every record, every link).
reset_peak
VKEY=$("$BIN" keys create --tenant bench-verify --scopes read,write --data-dir "$WORK/data" | tail -1)
ST_KEYS="$VKEY" ST_PATH="/v1/events/batch?sync=true" ST_BODY_FILE="$WORK/batch.json" \
  ${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} wrk -t"$THREADS" -c"$BATCH_CONNS" -d"${BENCH_VERIFY_FILL_SECONDS:-8}s" -s bench/ingest.lua "$BASE" >/dev/null
start=$(date +%s.%N)
verify=$(curl -sf -H "Authorization: Bearer $VKEY" "$BASE/v1/verify")
end=$(date +%s.%N)
checked=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["valid"], d; print(d["events_checked"])' "$verify")
printf '%-28s %12.0f   (%s events in %.2f s, valid; fill and walk peak %.0f MB)\n' "verify chain (GET /v1/verify)" "$(echo "$checked / ($end - $start)" | bc -l)" "$checked" "$(echo "$end - $start" | bc -l)" "$(note_peak)"
printf '%-28s %9.1f MB\n' "server peak RSS (all runs)" "$(sort -g "$WORK/peaks" | tail -1)"
