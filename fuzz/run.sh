#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS each, one
# after the other, and prints the inputs executed per target and in total. Exits non-zero
# if a target found a crash (the input is saved under fuzz/artifacts/<target>/; replay it
# with `cd fuzz && cargo fuzz run -O -a -s none <target> <file>`).
#
# Knobs (environment): FUZZ_SECONDS per target (default 300, ~50M inputs in all on 2
# cores; CI runs 30), FUZZ_TARGETS (default: all), FUZZ_MAX_LEN (65536).
#
# Build: release with debug assertions and overflow checks on, no sanitizer (the core
# forbids unsafe code; a panic is what we look for), so it builds on stable Rust and
# quickly. Inputs: fuzz/corpus/<target>/ (generated, kept between runs, not committed)
# starting from the committed seeds in fuzz/seeds/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-300}
targets=${FUZZ_TARGETS:-json_strict ingest_event ingest_batch verify_export verify_proofs}
max_len=${FUZZ_MAX_LEN:-65536}
flags=(--release --debug-assertions --sanitizer none)

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# The committed lock file is the one used: fail rather than let cargo update it.
cargo metadata --locked --format-version 1 >/dev/null
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz build: $(($(date +%s) - start)) s"

mkdir -p target/logs
total=0
fuzz_seconds=0
failed=()
printf '%-14s %12s %8s %10s %8s\n' target inputs seconds inputs/s corpus
for t in $targets; do
  mkdir -p "corpus/$t"
  log="target/logs/$t.log"
  t0=$(date +%s)
  status=0
  cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  took=$(($(date +%s) - t0))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  if [[ -z "$runs" ]]; then # a crash ends the run before the final stats
    runs=$(grep -oE '^#[0-9]+' "$log" | tail -n1 | tr -d '#')
  fi
  runs=${runs:-0}
  total=$((total + runs))
  fuzz_seconds=$((fuzz_seconds + took))
  printf '%-14s %12d %8d %10d %8d\n' "$t" "$runs" "$took" $((runs / (took > 0 ? took : 1))) \
    "$(find "corpus/$t" -type f | wc -l)"
  if ((status != 0)); then
    failed+=("$t")
    echo "!! $t failed (exit $status); the end of $PWD/$log:"
    tail -n 40 "$log"
  fi
done
printf '%-14s %12d %8d %10d\n' total "$total" "$fuzz_seconds" $((total / (fuzz_seconds > 0 ? fuzz_seconds : 1)))
echo "fuzz: $total inputs in $fuzz_seconds s of fuzzing, $(($(date +%s) - start)) s with the build"

if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]} (inputs under fuzz/artifacts/)"
  exit 1
fi
