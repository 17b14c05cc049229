#!/usr/bin/env bash
# Stop the local Kafka and Cassandra (SIGTERM, then SIGKILL after a timeout).
# Usage: deploy/local/down.sh [--wipe]
#   --wipe  also delete their data (Kafka log dirs, Cassandra data/commitlog), keeping the
#           downloaded jars and cqlsh, so the next up.sh starts from an empty cluster.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=SCRIPTDIR/env.sh
source "$here/env.sh"

wipe=0
case ${1:-} in
  "") ;;
  --wipe) wipe=1 ;;
  *) die "usage: $0 [--wipe]" ;;
esac
rc=0
# Both in parallel: each waits for its own JVM to exit.
"$here/kafka.sh" stop &
kpid=$!
"$here/cassandra.sh" stop &
cpid=$!
wait "$kpid" || rc=1
wait "$cpid" || rc=1
((rc == 0)) || die "a service did not stop; see above, then rerun deploy/local/down.sh"
if ((wipe)); then
  rm -rf "$KAFKA_DATA" "$CASSANDRA_DATA"
  log "wiped $KAFKA_DATA and $CASSANDRA_DATA"
fi
