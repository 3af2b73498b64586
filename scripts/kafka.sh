#!/usr/bin/env bash
# Runs Apache Kafka 4.x as a single-node KRaft broker on 127.0.0.1.
#   scripts/kafka.sh fetch|start|stop|status
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1),
#   KAFKA_DIR (state: logs, data; default /tmp/mailroom-kafka-$KAFKA_PORT),
#   MAILROOM_CACHE (jar cache; default ~/.cache/mailroom).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
state=${KAFKA_DIR:-/tmp/mailroom-kafka-$port}
cache=${MAILROOM_CACHE:-$HOME/.cache/mailroom}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
libs=$cache/kafka-$version/libs
pidfile=$state/broker.pid

fetch() {
  [ -f "$libs/.complete" ] && return 0
  mkdir -p "$libs"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
  touch "$libs/.complete"
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() { kcat -b "127.0.0.1:$port" -L -m 2 >/dev/null 2>&1; }

java_run() {
  java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" \
    -cp "$libs/*" "$@"
}

configure() {
  mkdir -p "$state/data"
  cat >"$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$state/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=268435456
PROPS
  cat >"$state/log4j2.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$state/broker.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
PROPS
}

start() {
  fetch
  if running; then echo "kafka already running on 127.0.0.1:$port"; return 0; fi
  configure
  if [ ! -f "$state/data/meta.properties" ]; then
    id=$(java_run kafka.tools.StorageTool random-uuid)
    java_run kafka.tools.StorageTool format -t "$id" -c "$state/server.properties" >"$state/format.log"
  fi
  nohup java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$state/server.properties" >"$state/stdout.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if answers; then echo "kafka $version up on 127.0.0.1:$port"; return 0; fi
    running || { echo "kafka exited; see $state/stdout.log $state/broker.log" >&2; tail -20 "$state/stdout.log" >&2; return 1; }
    sleep 0.5
  done
  echo "kafka did not answer within 60 s; see $state/broker.log" >&2
  return 1
}

stop() {
  running || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

status() {
  if running && answers; then echo "kafka up on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "kafka down"; return 1; fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
