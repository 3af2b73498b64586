#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, then unit tests and the
# integration tests against a real Kafka broker that ctest starts and stops
# (scripts/kafka.sh on port 19092). Extra arguments go to ctest, e.g. -L unit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure --timeout 900 "$@"
