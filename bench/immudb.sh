#!/usr/bin/env bash
# sealtrail against immudb, side by side on this machine (`make bench-immudb`): the
# comparison issue 11 asks for. Both servers fsync before they answer (immudb's default
# `--synced`), and each round gives both a fresh data directory, then loads them in turn:
#   - batches: sealtrail sync REST batches of 100 events (wrk, 16 connections) against
#     immudb `SetAll` of 100 key-values of ~350-byte values (16 sessions);
#   - singles: sealtrail sync single events (64 connections) against immudb `Set` (64).
# It prints committed events (entries) per second, latency p50/p99 and the server's
# CPU time per event (microseconds). Each immudb scenario loads a database of its own, created
# with its concurrency limit raised to the number of sessions (immudb's default, 30,
# refuses the 64 sessions' excess writes).
#
# immudb is built from its release's source, fetched through the Go module proxy (`go mod
# download`), with the load generator in bench/immudb/main.go compiled inside that module
# so it uses the release's own client; both binaries are cached in IMMUDB_CACHE.
#
# Needs: Go (1.25 or newer), wrk, bc, curl. Knobs (environment): IMMUDB_VERSION (v1.11.1),
# IMMUDB_CACHE (~/.cache/sealtrail-bench/immudb-$IMMUDB_VERSION), BENCH_ROUNDS (2),
# BENCH_SECONDS (10), BENCH_BIN (target/release/sealtrail).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${IMMUDB_VERSION:-v1.11.1}
CACHE=${IMMUDB_CACHE:-$HOME/.cache/sealtrail-bench/immudb-$VERSION}
ROUNDS=${BENCH_ROUNDS:-2}
SECS=${BENCH_SECONDS:-10}
BIN=${BENCH_BIN:-target/release/sealtrail}

for tool in go wrk bc curl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (Go from go.dev; apt-get install wrk bc curl)" >&2; exit 1; }
done
[ -x "$BIN" ] || cargo build --release -p sealtrail

if [ ! -x "$CACHE/immudb" ] || [ ! -x "$CACHE/immudb-bench" ] || [ bench/immudb/main.go -nt "$CACHE/immudb-bench" ]; then
  echo "building immudb $VERSION and its load generator in $CACHE (once; about a minute)"
  mkdir -p "$CACHE"
  src=$(cd "$CACHE" && go mod download -json "github.com/codenotary/immudb@$VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$CACHE/src" && cp -r "$src" "$CACHE/src" && chmod -R u+w "$CACHE/src"
  mkdir -p "$CACHE/src/cmd/sealtrail-bench"
  cp bench/immudb/main.go "$CACHE/src/cmd/sealtrail-bench/main.go"
  (cd "$CACHE/src" && go build -o "$CACHE/immudb" ./cmd/immudb && go build -o "$CACHE/immudb-bench" ./cmd/sealtrail-bench)
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_us() { # ticks_before ticks_after events -> the server's CPU microseconds per event
  echo "($2 - $1) / $(getconf CLK_TCK) * 1000000 / $3" | bc -l
}
WORK=$(mktemp -d)
SERVER=""
stop() { [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }; SERVER=""; }
trap 'stop; rm -rf "$WORK"' EXIT

EVENT='{"actor":{"id":"user_4821","type":"human","email":"ada@example.com"},"action":"document.delete","resource":{"id":"doc_99231","type":"document","name":"Q3 board deck"},"outcome":"success","metadata":{"ip":"203.0.113.7","user_agent":"Mozilla/5.0","request_id":"req_8f1c2a"}}'
echo "$EVENT" > "$WORK/event.json"
python3 - "$WORK/batch.json" "$EVENT" <<'PY'
import json, sys
event = json.loads(sys.argv[2])
json.dump({"events": [event] * 100}, open(sys.argv[1], "w"))
PY

ROW='%-10s %-8s %-34s %12s %9s %9s %14s\n'
printf "$ROW" round system scenario "events/s" "p50 ms" "p99 ms" "server µs/ev"

immudb_round() {
  local p out t0 t1 line
  p=$(port)
  rm -rf "$WORK/immudb"
  "$CACHE/immudb" --dir "$WORK/immudb" --port "$p" --pgsql-server=false --web-server=false \
    --metrics-server=false --pidfile "" >"$WORK/immudb.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
  sleep 1
  for scenario in "16 100 SetAll(100), 16 sessions" "64 1 Set, 64 sessions"; do
    read -r conns batch name <<<"$scenario"
    t0=$(cpu_ticks "$SERVER")
    out=$("$CACHE/immudb-bench" --port "$p" --connections "$conns" --batch "$batch" --seconds "$SECS" \
      --database "bench$batch")
    t1=$(cpu_ticks "$SERVER")
    line=$(grep '^IMMUDB' <<<"$out")
    eval "${line#IMMUDB }"
    printf "$ROW" "$1" immudb "$name" "$entries_per_s" "$p50_ms" "$p99_ms" \
      "$(printf '%.1f' "$(cpu_us "$t0" "$t1" "$((requests * batch))")")"
  done
  stop
}

sealtrail_round() {
  local p g keys k out t0 t1 line
  p=$(port); g=$(port)
  rm -rf "$WORK/sealtrail"
  SEALTRAIL_API_RATE_LIMIT_PER_KEY=0 SEALTRAIL_API_RATE_LIMIT_PER_TENANT=0 RUST_LOG=warn "$BIN" serve \
    --data-dir "$WORK/sealtrail" --http-addr "127.0.0.1:$p" --grpc-addr "127.0.0.1:$g" 2>"$WORK/sealtrail.log" &
  SERVER=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
  keys=""
  for i in $(seq 8); do
    k=$("$BIN" keys create --tenant "bench-$i" --scopes read,write --data-dir "$WORK/sealtrail" | tail -1)
    keys="$keys${keys:+,}$k"
  done
  for scenario in "16 100 /v1/events/batch?sync=true batch.json sync batches of 100, 16 connections" \
    "64 1 /v1/events?sync=true event.json sync single events, 64 connections"; do
    read -r conns batch path body name <<<"$scenario"
    t0=$(cpu_ticks "$SERVER")
    out=$(ST_KEYS="$keys" ST_PATH="$path" ST_BODY_FILE="$WORK/$body" wrk -t2 -c"$conns" -d"${SECS}s" \
      --latency -s bench/ingest.lua "http://127.0.0.1:$p" 2>&1)
    t1=$(cpu_ticks "$SERVER")
    line=$(grep '^BENCH' <<<"$out") || { echo "$out" >&2; exit 1; }
    eval "${line#BENCH }"
    [ "$((socket_errors + non2xx))" = 0 ] || echo "  ($((socket_errors + non2xx)) errors)" >&2
    printf "$ROW" "$1" sealtrail "$name" "$(printf '%.0f' "$(echo "$requests * $batch / $duration_s" | bc -l)")" \
      "$p50_ms" "$p99_ms" "$(printf '%.1f' "$(cpu_us "$t0" "$t1" "$((requests * batch))")")"
  done
  stop
}

for round in $(seq "$ROUNDS"); do
  immudb_round "$round"
  sealtrail_round "$round"
done
