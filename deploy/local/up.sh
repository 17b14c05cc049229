#!/usr/bin/env bash
# Fetch (once), start and wait for the local Kafka and Cassandra. Idempotent: services
# that already run are left alone. Exits 0 only when both answer.
# Usage: deploy/local/up.sh [kafka|cassandra]   (default: both)
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=SCRIPTDIR/env.sh
source "$here/env.sh"

what=${1:-all}
case $what in kafka | cassandra | all) ;; *) die "usage: $0 [kafka|cassandra]" ;; esac
start=$SECONDS
"$here/fetch.sh" "$what"
# Start both before waiting, so the two JVMs boot in parallel.
[[ $what == cassandra ]] || "$here/kafka.sh" start
[[ $what == kafka ]] || "$here/cassandra.sh" start
[[ $what == cassandra ]] || "$here/kafka.sh" wait
[[ $what == kafka ]] || "$here/cassandra.sh" wait
msg=""
[[ $what == cassandra ]] || msg+=" Kafka $KAFKA_BOOTSTRAP"
[[ $what == kafka ]] || msg+=" Cassandra CQL $INFRA_HOST:$CASSANDRA_CQL_PORT"
log "up in $((SECONDS - start))s:$msg (stop with deploy/local/down.sh)"
