# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings for the local Kafka + Cassandra used by sealtrail's distributed mode.
# Sourced by the other scripts in deploy/local/; every value can be overridden from the
# environment. Nothing here starts or installs anything.

SEALTRAIL_LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SEALTRAIL_REPO_ROOT=$(cd "$SEALTRAIL_LOCAL_DIR/../.." && pwd)

# ---- pinned versions (Maven Central coordinates) --------------------------------------
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}                 # org.apache.kafka:kafka_2.13 (KRaft)
KAFKA_SCALA_VERSION=${KAFKA_SCALA_VERSION:-2.13}
# Kafka 4.4.0 itself depends on log4j-core 2.25.5 and slf4j-api 1.7.36 but ships no slf4j
# binding in its pom. We add log4j-slf4j2-impl (same log4j version as Kafka's) and lift
# slf4j-api to 2.0.x so that binding is found (slf4j 1.7 would ignore it and log nothing).
LOG4J_VERSION=${LOG4J_VERSION:-2.25.5}                # org.apache.logging.log4j:log4j-slf4j2-impl
SLF4J_VERSION=${SLF4J_VERSION:-2.0.17}                # org.slf4j:slf4j-api
CASSANDRA_VERSION=${CASSANDRA_VERSION:-5.0.9}         # org.apache.cassandra:cassandra-all
MAVEN_DEPENDENCY_PLUGIN_VERSION=${MAVEN_DEPENDENCY_PLUGIN_VERSION:-3.8.1}
CQLSH_VERSION=${CQLSH_VERSION:-6.2.2}                 # PyPI cqlsh, used only to check/poke Cassandra

# ---- network (all on loopback) --------------------------------------------------------
INFRA_HOST=${INFRA_HOST:-127.0.0.1}
KAFKA_PORT=${KAFKA_PORT:-9092}                        # PLAINTEXT listener (clients)
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}  # KRaft controller listener
CASSANDRA_CQL_PORT=${CASSANDRA_CQL_PORT:-9042}        # native transport (CQL)
CASSANDRA_STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-7000} # inter-node (gossip/messaging)
CASSANDRA_JMX_PORT=${CASSANDRA_JMX_PORT:-7199}        # JMX for nodetool (loopback only)
KAFKA_BOOTSTRAP="$INFRA_HOST:$KAFKA_PORT"

# ---- JVM sizing and timeouts ----------------------------------------------------------
KAFKA_HEAP=${KAFKA_HEAP:-512m}
CASSANDRA_HEAP=${CASSANDRA_HEAP:-1g}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}        # seconds for `kafka.sh wait`
CASSANDRA_START_TIMEOUT=${CASSANDRA_START_TIMEOUT:-180}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-60}          # SIGTERM grace before SIGKILL
CASSANDRA_STOP_TIMEOUT=${CASSANDRA_STOP_TIMEOUT:-60}
# A file appended to the generated cassandra.yaml on start (keys it does not set already).
CASSANDRA_EXTRA_YAML=${CASSANDRA_EXTRA_YAML:-}
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}

# ---- directories ----------------------------------------------------------------------
# Everything (jars, config, data, logs, pid files) lives under one base directory.
# .build/ is git-ignored. Use another SEALTRAIL_INFRA_DIR (and other ports) for a second,
# independent set of services.
SEALTRAIL_INFRA_DIR=${SEALTRAIL_INFRA_DIR:-$SEALTRAIL_REPO_ROOT/.build/infra}
BASE=$SEALTRAIL_INFRA_DIR
KAFKA_HOME=$BASE/kafka
KAFKA_LIBS=$KAFKA_HOME/libs
KAFKA_CONF=$KAFKA_HOME/conf
KAFKA_DATA=$KAFKA_HOME/data
KAFKA_LOGS=$KAFKA_HOME/logs
KAFKA_PID=$KAFKA_HOME/kafka.pid
CASSANDRA_HOME=$BASE/cassandra
CASSANDRA_LIBS=$CASSANDRA_HOME/libs
CASSANDRA_CONF=$CASSANDRA_HOME/conf
CASSANDRA_DATA=$CASSANDRA_HOME/data
CASSANDRA_LOGS=$CASSANDRA_HOME/logs
CASSANDRA_PID=$CASSANDRA_HOME/cassandra.pid
TOOLS_DIR=$BASE/tools                                 # cqlsh virtualenv
# Optional: a private Maven local repository (default: Maven's own, ~/.m2/repository).
SEALTRAIL_MAVEN_REPO=${SEALTRAIL_MAVEN_REPO:-}

export SEALTRAIL_INFRA_DIR KAFKA_BOOTSTRAP

# ---- helpers --------------------------------------------------------------------------
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# True when something accepts TCP connections on host:port.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# Install a Debian package when running as root (CI, fresh machines); else explain.
apt_install() {
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian package(s): $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
        || die "apt-get install $* failed; install it by hand and retry"
    fi
  else
    die "missing $*; install it (e.g. 'sudo apt-get install $*') and retry"
  fi
}

require_java() {
  command -v "$JAVA" >/dev/null || apt_install openjdk-17-jre-headless
  local v
  v=$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  [[ ${v%%.*} -ge 17 ]] || die "Java 17+ needed (found '$v' at $(command -v "$JAVA")); set JAVA=/path/to/java17"
}

# pid_alive PIDFILE MARKER: pid from the file is running and its command line carries
# MARKER (guards against a stale pid file whose pid was reused by another process).
pid_alive() {
  local pidfile=$1 marker=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker "
}

# stop_pid NAME PIDFILE MARKER TIMEOUT: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name=$1 pidfile=$2 marker=$3 timeout=$4 pid i
  if ! pid_alive "$pidfile" "$marker"; then
    rm -f "$pidfile"
    log "$name: not running"
    return 0
  fi
  pid=$(<"$pidfile")
  log "$name: stopping pid $pid (SIGTERM, up to ${timeout}s)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still alive after ${timeout}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  kill -0 "$pid" 2>/dev/null && die "$name: pid $pid survived SIGKILL; check 'ps -fp $pid'"
  rm -f "$pidfile"
  log "$name: stopped"
}

# Peak and current resident memory of a pid, for reports.
rss_of() {
  awk '/^VmHWM|^VmRSS/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$1/status" 2>/dev/null
}
