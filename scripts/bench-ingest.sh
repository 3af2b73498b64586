#!/usr/bin/env bash
# Ingest benchmark (bench/ingest_bench.cc): starts Kafka, prints the table.
#   BENCH_DIR (default /tmp/mailroom-bench: the disk to measure), extra args go to the bench.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
BUILD_DIR=${BUILD_DIR:-$root/build-bench} CMAKE_ARGS="-DMAILROOM_BENCH=ON -DMAILROOM_TESTS=OFF -DCMAKE_BUILD_TYPE=Release" \
  "$root/scripts/build.sh" >/dev/null
export KAFKA_PORT=${KAFKA_PORT:-19192}
"$root/scripts/kafka.sh" start >/dev/null
trap '"$root/scripts/kafka.sh" stop' EXIT
"${BUILD_DIR:-$root/build-bench}/bench/ingest_bench" --brokers "127.0.0.1:$KAFKA_PORT" \
  --dir "${BENCH_DIR:-/tmp/mailroom-bench}" "$@"
