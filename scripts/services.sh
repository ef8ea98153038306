#!/usr/bin/env bash
# Local Kafka and MongoDB-wire servers for development and tests, without Docker.
#
#   scripts/services.sh up    [kafka|mongo]   start (installing what is missing), wait, print exports
#   scripts/services.sh down  [kafka|mongo]   stop, keeping data
#   scripts/services.sh reset                 stop both and delete their data
#   scripts/services.sh status                say what runs (exit 1 if something is down)
#   scripts/services.sh kafka-acls ARGS...    Kafka's kafka-acls tool against the local broker
#
# Only `export KAFKA_BROKERS=...` / `export MONGODB_URI=...` lines go to stdout, so
# `eval "$(scripts/services.sh up)"` works; progress goes to stderr.
#
# Servers (pinned):
#   Kafka     Apache Kafka 3.9.1, jars from Maven Central (scripts/kafka/pom.xml), KRaft mode,
#             one combined broker+controller on 127.0.0.1:$KAFKA_PORT (controller on +1), and
#             a SASL_SSL listener on +2 (KAFKA_SASL_PORT) like a managed cluster's: SCRAM-SHA-512
#             user `clerk-sync-test`, a broker certificate from a local CA made with openssl at
#             first start. `up` also prints TEST_KAFKA_SASL_* lines for the tests that use it.
#   MongoDB   MONGO_ENGINE=ferretdb (default): FerretDB v1.24.0 from the Go module proxy,
#             SQLite engine (persistent across restarts), on 127.0.0.1:$MONGO_PORT.
#             MONGO_ENGINE=memory: mongo-java-server 1.46.0 from Maven Central, in memory and
#             index-backed (for benchmarks), through scripts/mongo-memory/Launcher.java.
#
# Installs go to $SERVICES_HOME (default ~/.cache/clerk-sync/services) and are reused by every
# clone; data and logs go to <repo>/target/services/.
set -euo pipefail

KAFKA_VERSION=3.9.1
FERRETDB_VERSION=v1.24.0
MONGO_MEMORY_VERSION=1.46.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${SERVICES_DATA:-$ROOT/target/services}
SERVICES_HOME=${SERVICES_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/services}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
# The SASL_SSL listener's user: a local test server's, not a secret.
KAFKA_TEST_USER=clerk-sync-test
KAFKA_TEST_PASSWORD=local-test-password
MONGO_PORT=${MONGO_PORT:-27017}
MONGO_ENGINE=${MONGO_ENGINE:-ferretdb}
case $MONGO_ENGINE in ferretdb | memory) ;; *) echo "[services] error: MONGO_ENGINE must be ferretdb or memory" >&2; exit 1 ;; esac
START_TIMEOUT=${SERVICES_START_TIMEOUT:-120}

KAFKA_HOME=$SERVICES_HOME/kafka-$KAFKA_VERSION
FERRETDB_BIN=$SERVICES_HOME/ferretdb-$FERRETDB_VERSION/ferretdb
MONGO_MEMORY_HOME=$SERVICES_HOME/mongo-java-server-$MONGO_MEMORY_VERSION

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

# --- installation ----------------------------------------------------------------------------

install_kafka() {
  [[ -f $KAFKA_HOME/.complete ]] && return 0
  command -v java >/dev/null || die "java (17 or newer) is needed to run Kafka"
  local jv
  jv=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  ((${jv%%.*} >= 17)) 2>/dev/null || die "Kafka $KAFKA_VERSION here needs java 17 or newer (found ${jv:-none})"
  command -v mvn >/dev/null || die "mvn is needed to fetch Kafka's jars from Maven Central"
  log "installing Apache Kafka $KAFKA_VERSION into $KAFKA_HOME (Maven Central)"
  rm -rf "$KAFKA_HOME"
  mkdir -p "$KAFKA_HOME"
  mvn -B -q -Dstyle.color=never -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$KAFKA_HOME/libs" >&2 \
    || die "could not resolve Kafka $KAFKA_VERSION from Maven Central"
  touch "$KAFKA_HOME/.complete"
}

install_mongo_memory() {
  [[ -f $MONGO_MEMORY_HOME/.complete ]] && return 0
  command -v java >/dev/null || die "java (17 or newer) is needed to run mongo-java-server"
  command -v mvn >/dev/null || die "mvn is needed to fetch mongo-java-server from Maven Central"
  log "installing mongo-java-server $MONGO_MEMORY_VERSION into $MONGO_MEMORY_HOME (Maven Central)"
  rm -rf "$MONGO_MEMORY_HOME"
  mkdir -p "$MONGO_MEMORY_HOME"
  mvn -B -q -Dstyle.color=never -f "$ROOT/scripts/mongo-memory/pom.xml" \
    -Dmongo.java.server.version="$MONGO_MEMORY_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$MONGO_MEMORY_HOME/libs" >&2 \
    || die "could not resolve mongo-java-server $MONGO_MEMORY_VERSION from Maven Central"
  touch "$MONGO_MEMORY_HOME/.complete"
}

install_ferretdb() {
  [[ -x $FERRETDB_BIN ]] && return 0
  command -v go >/dev/null || die "go (1.22 or newer) is needed to build FerretDB"
  local gov
  gov=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  [[ $(printf '%s\n' 1.22 "$gov" | sort -V | head -n1) == 1.22 ]] \
    || die "FerretDB $FERRETDB_VERSION needs go 1.22 or newer (found ${gov:-none})"
  log "installing FerretDB $FERRETDB_VERSION into $(dirname "$FERRETDB_BIN") (Go module proxy)"
  # Not `go install ...@version`: that asks the proxy for the module's version list (refused
  # here), and a binary built that way panics at start because the module zip lacks the
  # generated build/version/version.txt. So: download the exact version, give the copy its
  # version file, build it.
  local src build=$SERVICES_HOME/ferretdb-build
  src=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p') || true
  [[ -n $src && -d $src ]] || die "could not download FerretDB $FERRETDB_VERSION from the Go module proxy"
  rm -rf "$build"
  mkdir -p "$(dirname "$build")" "$(dirname "$FERRETDB_BIN")"
  cp -r "$src" "$build"
  chmod -R u+w "$build"
  echo "$FERRETDB_VERSION" >"$build/build/version/version.txt"
  (cd "$build" && go build -trimpath -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) >&2 \
    || die "could not build FerretDB $FERRETDB_VERSION"
  mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  rm -rf "$build"
}

# --- liveness probes (real protocol requests over bash's /dev/tcp) ----------------------------

# Sends a Kafka Metadata v0 request and succeeds when the answer lists at least one broker.
kafka_answers() {
  local hex
  hex=$(timeout 3 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/'"$KAFKA_PORT"' || exit 1
    printf "\x00\x00\x00\x11\x00\x03\x00\x00\x00\x00\x00\x01\x00\x03svc\x00\x00\x00\x00" >&3
    head -c 12 <&3 | od -An -v -tx1' 2>/dev/null) || return 1
  hex=${hex//[[:space:]]/}
  # size(4) correlation_id(4) broker_count(4)
  [[ ${#hex} -eq 24 && ${hex:8:8} == 00000001 && ${hex:16:8} != 00000000 ]]
}

# Sends an OP_MSG {ping: 1, $db: "admin"} and succeeds when the reply carries ok: 1.0.
mongo_answers() {
  local hex
  hex=$(timeout 3 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/'"$MONGO_PORT"' || exit 1
    printf "\x33\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\x00\x00\x00\x00\x00" >&3
    printf "\x1e\x00\x00\x00\x10ping\x00\x01\x00\x00\x00\x02\$db\x00\x06\x00\x00\x00admin\x00\x00" >&3
    len=$(head -c 4 <&3 | od -An -tu4 | tr -d " ")
    [ -n "$len" ] && [ "$len" -gt 4 ] && [ "$len" -lt 65536 ] || exit 1
    head -c $((len - 4)) <&3 | od -An -v -tx1' 2>/dev/null) || return 1
  hex=${hex//[[:space:]]/}
  # "ok" as a double 1.0 (type 0x01) or an int32 1 (type 0x10)
  [[ $hex == *016f6b00000000000000f03f* || $hex == *106f6b0001000000* ]]
}

wait_until() {
  local what=$1 probe=$2 pidfile=$3 logfile=$4 deadline=$((SECONDS + START_TIMEOUT))
  until $probe; do
    if ! pid_alive "$pidfile"; then
      tail -n 30 "$logfile" >&2 || true
      die "$what exited during start-up (log: $logfile)"
    fi
    ((SECONDS < deadline)) || die "$what did not answer within ${START_TIMEOUT}s (log: $logfile)"
    sleep 0.5
  done
}

# --- processes -------------------------------------------------------------------------------

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_pid() {
  local what=$1 pidfile=$2 pid
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  log "stopping $what (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$what did not stop within 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$pidfile"
}

# A CA, a broker certificate it signed (for 127.0.0.1 and localhost) in a PKCS12 keystore,
# and a second, unrelated CA (a "wrong CA" for tests). Made once per data directory.
make_tls() {
  local tls=$1
  [[ -f $tls/.complete ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed for the SASL_SSL listener's certificates"
  rm -rf "$tls"
  mkdir -p "$tls"
  (
    cd "$tls"
    for ca in ca other-ca; do
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=clerk-sync test $ca" \
        -keyout "$ca.key" -out "$ca.pem"
    done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out broker.pem
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout pass:changeit -out broker.p12
  ) >"$DATA/kafka/tls.log" 2>&1 || { cat "$DATA/kafka/tls.log" >&2; die "could not make the TLS material"; }
  touch "$tls/.complete"
}

# The SCRAM user of the SASL_SSL listener (KRaft keeps it in the metadata log: once per
# data directory).
add_scram_user() {
  [[ -f $DATA/kafka/scram.done ]] && return 0
  java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j.configuration=file:/dev/null -cp "$KAFKA_HOME/libs/*" \
    kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
    --add-config "SCRAM-SHA-512=[iterations=4096,password=$KAFKA_TEST_PASSWORD]" \
    --entity-type users --entity-name "$KAFKA_TEST_USER" >"$DATA/kafka/scram.log" 2>&1 \
    || { cat "$DATA/kafka/scram.log" >&2; die "could not add the SCRAM user"; }
  touch "$DATA/kafka/scram.done"
}

kafka_up() {
  local dir=$DATA/kafka pidfile=$DATA/kafka/kafka.pid
  if pid_alive "$pidfile" && kafka_answers; then
    log "kafka already running on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  install_kafka
  mkdir -p "$dir"
  if ! pid_alive "$pidfile"; then
    port_busy "$KAFKA_PORT" && die "port $KAFKA_PORT is in use by another program (set KAFKA_PORT)"
    port_busy "$KAFKA_CONTROLLER_PORT" \
      && die "port $KAFKA_CONTROLLER_PORT is in use by another program (set KAFKA_CONTROLLER_PORT)"
    port_busy "$KAFKA_SASL_PORT" \
      && die "port $KAFKA_SASL_PORT is in use by another program (set KAFKA_SASL_PORT)"
    make_tls "$dir/tls"
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
# Like a managed cluster: SCRAM-SHA-512 over TLS with a certificate from a private CA.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=changeit
ssl.key.password=changeit
log.dirs=$dir/data
# Like most managed clusters: topics exist only when someone creates them.
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=1
# ACLs are enforced, and everything is allowed until someone adds one: tests use
# services.sh kafka-acls to take rights away (a topic clerk-sync may not write, a
# principal without CREATE).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
EOF
    cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.clients=WARN
EOF
    local java_opts=(-Xms256m -Xmx768m -XX:+UseSerialGC -Djava.awt.headless=true
      "-Dlog4j.configuration=file:$dir/log4j.properties" -cp "$KAFKA_HOME/libs/*")
    if [[ ! -f $dir/data/meta.properties ]]; then
      local cluster_id
      cluster_id=$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid)
      log "formatting Kafka storage (cluster $cluster_id)"
      java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
        || { cat "$dir/format.log" >&2; die "kafka storage format failed"; }
    fi
    log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
    setsid nohup java "${java_opts[@]}" kafka.Kafka "$dir/server.properties" \
      >"$dir/stdout.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  wait_until kafka kafka_answers "$pidfile" "$dir/server.log"
  add_scram_user
  log "kafka answers on 127.0.0.1:$KAFKA_PORT (SASL_SSL on $KAFKA_SASL_PORT)"
}

mongo_up() {
  if [[ $MONGO_ENGINE == memory ]]; then
    memory_up
    return
  fi
  local dir=$DATA/mongo pidfile=$DATA/mongo/ferretdb.pid
  pid_alive "$DATA/mongo/memory.pid" && die "the memory engine runs on $MONGO_PORT; stop it first (services.sh down mongo)"
  if pid_alive "$pidfile" && mongo_answers; then
    log "ferretdb already running on 127.0.0.1:$MONGO_PORT"
    return 0
  fi
  install_ferretdb
  mkdir -p "$dir/sqlite"
  if ! pid_alive "$pidfile"; then
    port_busy "$MONGO_PORT" && die "port $MONGO_PORT is in use by another program (set MONGO_PORT)"
    log "starting FerretDB $FERRETDB_VERSION (SQLite) on 127.0.0.1:$MONGO_PORT"
    setsid nohup "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$dir/sqlite/" \
      --listen-addr="127.0.0.1:$MONGO_PORT" --telemetry=disable --debug-addr=- \
      --state-dir="$dir" --log-level=warn \
      >"$dir/ferretdb.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  wait_until ferretdb mongo_answers "$pidfile" "$dir/ferretdb.log"
  log "ferretdb answers on 127.0.0.1:$MONGO_PORT"
}

# mongo-java-server: nothing persists; a restart starts empty.
memory_up() {
  local dir=$DATA/mongo pidfile=$DATA/mongo/memory.pid
  pid_alive "$DATA/mongo/ferretdb.pid" && die "FerretDB runs on $MONGO_PORT; stop it first (services.sh down mongo)"
  if pid_alive "$pidfile" && mongo_answers; then
    log "mongo-java-server already running on 127.0.0.1:$MONGO_PORT"
    return 0
  fi
  install_mongo_memory
  mkdir -p "$dir"
  if ! pid_alive "$pidfile"; then
    port_busy "$MONGO_PORT" && die "port $MONGO_PORT is in use by another program (set MONGO_PORT)"
    log "starting mongo-java-server $MONGO_MEMORY_VERSION (memory) on 127.0.0.1:$MONGO_PORT"
    setsid nohup java -Xms2g -Xmx6g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Xlog:gc:file="$dir/gc.log" \
      -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
      -cp "$MONGO_MEMORY_HOME/libs/*" "$ROOT/scripts/mongo-memory/Launcher.java" "$MONGO_PORT" \
      >"$dir/memory.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  wait_until mongo-java-server mongo_answers "$pidfile" "$dir/memory.log"
  log "mongo-java-server answers on 127.0.0.1:$MONGO_PORT"
}

exports() {
  local which=$1
  if [[ $which == all || $which == kafka ]]; then
    echo "export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
    # For the tests of the SASL_SSL path; not the contract's KAFKA_* names, so nothing else
    # picks them up.
    echo "export TEST_KAFKA_SASL_BROKERS=127.0.0.1:$KAFKA_SASL_PORT"
    echo "export TEST_KAFKA_SASL_USERNAME=$KAFKA_TEST_USER"
    echo "export TEST_KAFKA_SASL_PASSWORD=$KAFKA_TEST_PASSWORD"
    echo "export TEST_KAFKA_SASL_CA_FILE=$DATA/kafka/tls/ca.pem"
    echo "export TEST_KAFKA_WRONG_CA_FILE=$DATA/kafka/tls/other-ca.pem"
  fi
  [[ $which == all || $which == mongo ]] && echo "export MONGODB_URI=mongodb://127.0.0.1:$MONGO_PORT/"
  return 0
}

status() {
  local rc=0
  if kafka_answers; then log "kafka: up on 127.0.0.1:$KAFKA_PORT"; else log "kafka: down"; rc=1; fi
  if mongo_answers; then log "mongo: up on 127.0.0.1:$MONGO_PORT"; else log "mongo: down"; rc=1; fi
  return $rc
}

# --- main ------------------------------------------------------------------------------------

cmd=${1:-}
if [[ $cmd == kafka-acls ]]; then
  shift
  install_kafka
  exec java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j.configuration=file:/dev/null -cp "$KAFKA_HOME/libs/*" \
    kafka.admin.AclCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" "$@"
fi
which=${2:-all}
case $which in all | kafka | mongo) ;; *) die "unknown component '$which' (kafka or mongo)" ;; esac

case $cmd in
  up)
    [[ $which == all || $which == kafka ]] && kafka_up
    [[ $which == all || $which == mongo ]] && mongo_up
    exports "$which"
    ;;
  down)
    [[ $which == all || $which == kafka ]] && stop_pid kafka "$DATA/kafka/kafka.pid"
    if [[ $which == all || $which == mongo ]]; then
      stop_pid ferretdb "$DATA/mongo/ferretdb.pid"
      stop_pid mongo-java-server "$DATA/mongo/memory.pid"
    fi
    true
    ;;
  reset)
    stop_pid kafka "$DATA/kafka/kafka.pid"
    stop_pid ferretdb "$DATA/mongo/ferretdb.pid"
    stop_pid mongo-java-server "$DATA/mongo/memory.pid"
    rm -rf "$DATA/kafka" "$DATA/mongo"
    log "data deleted"
    ;;
  install)
    [[ $which == all || $which == kafka ]] && install_kafka
    if [[ $which == all || $which == mongo ]]; then
      if [[ $MONGO_ENGINE == memory ]]; then install_mongo_memory; else install_ferretdb; fi
    fi
    true
    ;;
  status) status ;;
  *)
    sed -n '2,10p' "$0" >&2
    exit 2
    ;;
esac
