#!/usr/bin/env bash
# sealtrail scale benchmark (`make bench-scale`): fills one embedded server (release build,
# default config, fresh data dir) with sync REST batches of 100 at full speed until it
# holds SCALE_EVENTS events, printing per slice the rate, the server's RSS and the store's
# journal and table sizes; then SIGKILLs it, restarts it on the same data and times how
# long until /healthz answers, and checks every tenant's event count survived.
#
# "errors" counts non-2xx answers and wrk socket errors (wrk gives up on a request after
# 2 s); "stall s" is how long store commits waited for memtable flushes in the slice.
#
# At the target it reports the ingest rate of the last 10% against the first 10%, bytes on
# disk per event and read latencies (bench/read_latency.py: a record by id, a one-filter
# list with its total, a fresh checkpoint, an inclusion proof).
#
# Then, on a fresh server, the many-tenants run: SCALE_MANY_TENANTS (default 100000)
# tenants with one key each (created in one `keys create --tenants-from` call) send one
# sync batch of SCALE_MANY_EVENTS (10) events each; it reports the rate, p99, RSS, bytes
# per event, read latencies of one tenant, and the restart after a SIGKILL, and checks
# 200 sampled tenants hold exactly their events. SCALE_MANY_TENANTS=0 skips it.
#
# Knobs (environment): SCALE_EVENTS (default 10000000), SCALE_SLICE_SECONDS (20),
# SCALE_READS (200 requests of each read kind),
# SCALE_CONNECTIONS (16), SCALE_TENANTS (8), SCALE_WRK_THREADS (2), SCALE_STORE (fjall),
# SCALE_DATA_DIR (default: a fresh temporary directory, removed at the end), BENCH_BIN (the
# binary; default target/release/sealtrail, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${SCALE_EVENTS:-10000000}
((TARGET >= 10)) || TARGET=10 # the first and last 10% must hold a slice each
SLICE=${SCALE_SLICE_SECONDS:-20}
CONNS=${SCALE_CONNECTIONS:-16}
TENANTS=${SCALE_TENANTS:-8}
THREADS=${SCALE_WRK_THREADS:-2}
STORE=${SCALE_STORE:-fjall}
BIN=${BENCH_BIN:-target/release/sealtrail}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release -p sealtrail

WORK=$(mktemp -d)
DATA=${SCALE_DATA_DIR:-$WORK/data}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GRPC=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
PID=
start_server() {
  SEALTRAIL_API_RATE_LIMIT_PER_KEY=0 SEALTRAIL_API_RATE_LIMIT_PER_TENANT=0 RUST_LOG=warn "$BIN" serve --data-dir "$DATA" --store "$STORE" --http-addr "127.0.0.1:$PORT" \
    --grpc-addr "127.0.0.1:$GRPC" 2>>"$WORK/server.log" &
  PID=$!
}
WRK=
cleanup() {
  [ -n "$WRK" ] && kill "$WRK" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  [ -z "${SCALE_DATA_DIR:-}" ] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT
wait_healthy() { # seconds to wait
  local deadline=$((SECONDS + $1))
  until curl -sf "$BASE/healthz" >/dev/null; do
    ((SECONDS < deadline)) || { echo "server not healthy after $1 s; log:" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
    kill -0 "$PID" 2>/dev/null || { echo "server exited; log:" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
    sleep 0.05
  done
}
start_server
wait_healthy 30

KEYS=""
for i in $(seq "$TENANTS"); do
  k=$("$BIN" keys create --tenant "scale-$i" --scopes read,write --data-dir "$DATA" --store "$STORE" | tail -1)
  KEYS="$KEYS${KEYS:+,}$k"
done

EVENT='{"actor":{"id":"user_4821","type":"human","email":"ada@example.com"},"action":"document.delete","resource":{"id":"doc_99231","type":"document","name":"Q3 board deck"},"outcome":"success","metadata":{"ip":"203.0.113.7","user_agent":"Mozilla/5.0","request_id":"req_8f1c2a"}}'
python3 - "$WORK/batch.json" "$EVENT" <<'PY'
import json, sys
event = json.loads(sys.argv[2])
json.dump({"events": [event] * 100}, open(sys.argv[1], "w"))
PY

# Events stored, summed over the tenants (each list's `total` is its chain head).
stored() {
  local sum=0 k t
  for k in ${KEYS//,/ }; do
    t=$(curl -sf -H "Authorization: Bearer $k" "$BASE/v1/events?page_size=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
    sum=$((sum + t))
  done
  echo "$sum"
}
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
journal_bytes() { find "$DATA" -name '*.jnl' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
store_bytes() { du -sb "$DATA" | cut -f1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
# One sample of a metric from /metrics (first series with that name; 0 if absent).
# (awk reads to the end: an early exit would fail curl's write, and pipefail the script)
metric() { curl -sf "$BASE/metrics" | awk -v m="$1" '!found && ($1 == m || index($1, m "{") == 1) {v=$2; found=1} END {print found ? v : 0}'; }

printf 'sealtrail scale: %s store, sync batches of 100, %s connections, %s tenants, %s s slices, target %s events\n' \
  "$STORE" "$CONNS" "$TENANTS" "$SLICE" "$TARGET"
printf '%5s %12s %10s %9s %8s %8s %9s %12s %11s %9s\n' slice stored events/s "p99 ms" errors "stall s" "RSS MB" "memtable MB" "journal MB" "disk MB"
count=0
slice=0
peak_rss=0
# Time spent and events added by the slices that filled the first and the last 10%.
first_events=0; first_s=0; last_events=0; last_s=0
while ((count < TARGET)); do
  slice=$((slice + 1))
  before=$count
  stall_before=$(metric sealtrail_store_write_stall_microseconds_total)
  out=$(ST_KEYS="$KEYS" ST_PATH="/v1/events/batch?sync=true" ST_BODY_FILE="$WORK/batch.json" \
    wrk -t"$THREADS" -c"$CONNS" -d"${SLICE}s" --latency -s bench/ingest.lua "$BASE" 2>&1)
  line=$(grep '^BENCH' <<<"$out") || { echo "$out" >&2; exit 1; }
  eval "${line#BENCH }"
  count=$(stored)
  if ((before < TARGET / 10)); then
    first_events=$((first_events + count - before)); first_s=$(echo "$first_s + $duration_s" | bc -l)
  fi
  if ((count > TARGET * 9 / 10)); then
    last_events=$((last_events + count - before)); last_s=$(echo "$last_s + $duration_s" | bc -l)
  fi
  rss=$(rss_kb)
  ((rss > peak_rss)) && peak_rss=$rss
  stall=$(metric sealtrail_store_write_stall_microseconds_total)
  printf '%5d %12d %10.0f %9s %8d %8.1f %9.0f %12s %11s %9s\n' "$slice" "$count" \
    "$(echo "($count - $before) / $duration_s" | bc -l)" "$p99_ms" "$((socket_errors + non2xx))" \
    "$(echo "($stall - $stall_before) / 1000000" | bc -l)" "$(echo "$rss / 1024" | bc -l)" \
    "$(mb "$(metric sealtrail_store_memtable_bytes)")" "$(mb "$(journal_bytes)")" "$(mb "$(store_bytes)")"
done
printf 'peak RSS at the end of a slice: %.0f MB (VmHWM %.0f MB)\n' "$(echo "$peak_rss / 1024" | bc -l)" \
  "$(awk '/VmHWM/ {print $2/1024}' "/proc/$PID/status")"

first_rate=$(echo "$first_events / $first_s" | bc -l)
last_rate=$(echo "$last_events / $last_s" | bc -l)
printf 'ingest rate: first 10%% %.0f events/s, last 10%% %.0f events/s (ratio %.2f)\n' "$first_rate" "$last_rate" \
  "$(echo "$last_rate / $first_rate" | bc -l)"
printf 'on disk: %s MB for %s events, %.0f bytes per event\n' "$(mb "$(store_bytes)")" "$count" \
  "$(echo "$(store_bytes) / $count" | bc -l)"
sleep 2 # let the indexer catch up, so reads measure the indexes, not the in-memory tail
echo "read latencies at $count events (one tenant of $TENANTS, one request at a time):"
python3 bench/read_latency.py "$BASE" "${KEYS%%,*}" "${SCALE_READS:-200}"

# Crash and restart: SIGKILL (no shutdown, no final flush), then time until healthy.
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
printf 'killed with %s events stored; journal %s MB, data dir %s MB\n' "$count" "$(mb "$(journal_bytes)")" "$(mb "$(store_bytes)")"
t0=$(date +%s.%N)
start_server
wait_healthy 600
t1=$(date +%s.%N)
after=$(stored)
printf 'restart after SIGKILL: healthy in %.2f s (RSS %.0f MB); %s events after restart\n' \
  "$(echo "$t1 - $t0" | bc -l)" "$(echo "$(rss_kb) / 1024" | bc -l)" "$after"
[ "$after" -ge "$count" ] || { echo "LOST EVENTS: $count before the kill, $after after" >&2; exit 1; }

MANY=${SCALE_MANY_TENANTS:-100000}
PER=${SCALE_MANY_EVENTS:-10}
((MANY > 0)) || exit 0
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
[ -z "${SCALE_DATA_DIR:-}" ] && rm -rf "$DATA"
DATA=$WORK/many
start_server
wait_healthy 30
seq -f "many-%.0f" 1 "$MANY" > "$WORK/tenants.txt"
t0=$(date +%s.%N)
"$BIN" keys create --tenants-from "$WORK/tenants.txt" --scopes read,write --data-dir "$DATA" --store "$STORE" \
  > "$WORK/many-keys.tsv" 2>/dev/null
t1=$(date +%s.%N)
python3 - "$WORK/batch10.json" "$EVENT" "$PER" <<'PY'
import json, sys
event = json.loads(sys.argv[2])
json.dump({"events": [event] * int(sys.argv[3])}, open(sys.argv[1], "w"))
PY
printf '\nsealtrail scale, many tenants: %s tenants (keys created in %.1f s), one sync batch of %s events each, %s connections\n' \
  "$MANY" "$(echo "$t1 - $t0" | bc -l)" "$PER" "$CONNS"
# wrk runs until every batch is committed (each key once, then /healthz), then SIGINT.
ST_KEYS_FILE="$WORK/many-keys.tsv" ST_ONCE=1 ST_THREADS="$THREADS" \
  ST_PATH="/v1/events/batch?sync=true" ST_BODY_FILE="$WORK/batch10.json" \
  wrk -t"$THREADS" -c"$CONNS" -d3600s --latency -s bench/ingest.lua "$BASE" > "$WORK/many-wrk.txt" 2>&1 &
WRK=$!
t0=$(date +%s.%N)
want=$((MANY * PER))
committed=0; last=-1; still=0
while ((committed < want)); do
  sleep 0.2
  committed=$(metric sealtrail_events_committed_total); committed=${committed%.*}
  if ((committed == last)); then still=$((still + 1)); else still=0; last=$committed; fi
  ((still < 150)) || { echo "no progress for 30 s at $committed of $want events" >&2; break; }
done
t1=$(date +%s.%N)
kill -INT "$WRK"; wait "$WRK" || true
WRK=
line=$(grep '^BENCH' "$WORK/many-wrk.txt") || { cat "$WORK/many-wrk.txt" >&2; exit 1; }
eval "${line#BENCH }"
elapsed=$(echo "$t1 - $t0" | bc -l)
printf 'committed %s events in %.1f s: %.0f events/s (p99 %s ms over requests incl. a few /healthz; errors %s); RSS %.0f MB (VmHWM %.0f MB)\n' \
  "$committed" "$elapsed" "$(echo "$committed / $elapsed" | bc -l)" "$p99_ms" "$((socket_errors + non2xx))" \
  "$(echo "$(rss_kb) / 1024" | bc -l)" "$(awk '/VmHWM/ {print $2/1024}' "/proc/$PID/status")"
printf 'on disk: %s MB, %.0f bytes per event\n' "$(mb "$(store_bytes)")" "$(echo "$(store_bytes) / $committed" | bc -l)"
sleep 2
echo "read latencies (one tenant of $MANY, $PER events):"
python3 bench/read_latency.py "$BASE" "$(head -1 "$WORK/many-keys.tsv" | cut -f2)" "${SCALE_READS:-200}"
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
t0=$(date +%s.%N)
start_server
wait_healthy 600
t1=$(date +%s.%N)
printf 'restart after SIGKILL: healthy in %.2f s (RSS %.0f MB)\n' "$(echo "$t1 - $t0" | bc -l)" "$(echo "$(rss_kb) / 1024" | bc -l)"
bad=0
for k in $(shuf -n 200 "$WORK/many-keys.tsv" | cut -f2); do
  t=$(curl -sf -H "Authorization: Bearer $k" "$BASE/v1/events?page_size=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
  [ "$t" = "$PER" ] || bad=$((bad + 1))
done
echo "200 sampled tenants after the restart: $((200 - bad)) hold exactly $PER events"
[ "$bad" = 0 ] || { echo "TENANTS WITH WRONG COUNTS: $bad" >&2; exit 1; }
exit 0
