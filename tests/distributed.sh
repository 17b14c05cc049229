#!/usr/bin/env bash
# The suites that need Kafka and Cassandra (`make test-distributed`):
#   1. the store conformance suite and fencing tests against Cassandra,
#   2. distributed mode end to end: 2 gateways, 2 chainers, several tenants, SIGKILL of a
#      gateway, a chainer, the Kafka broker and the Cassandra node mid-load, a SIGSTOPped
#      zombie chainer, sync 504 and retry,
#   3. the Kafka feed when a partition goes wrong: a poison entry goes to the dead-letter
#      topic while its neighbours chain; a slow partition delays only itself,
#   4. the fact0 Python SDK suite (and the independent hash check) against a gateway.
# Starts the local Kafka and Cassandra (deploy/local/up.sh) when they are not running and
# stops again whatever it started. PYTHON and CARGO may be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CARGO=${CARGO:-cargo}

started=()
deploy/local/kafka.sh status >/dev/null 2>&1 || started+=(kafka)
deploy/local/cassandra.sh status >/dev/null 2>&1 || started+=(cassandra)
cleanup() {
  for service in "${started[@]}"; do
    "deploy/local/$service.sh" stop || true
  done
}
trap cleanup EXIT
deploy/local/up.sh

echo "== store conformance against Cassandra"
$CARGO test -p sealtrail-scylla --features integration --test cassandra
echo "== distributed mode end to end (kills one process at a time; runs serially)"
$CARGO test -p sealtrail --features integration --test distributed -- --test-threads=1
echo "== distributed mode: a poison entry and a slow partition"
$CARGO test -p sealtrail --features integration --test distributed_feed -- --test-threads=1
echo "== fact0 Python SDK against a gateway"
SEALTRAIL_MODE=distributed SEALTRAIL_BIN="$PWD/target/debug/sealtrail" $PYTHON -m pytest tests/python -q
