#!/usr/bin/env bash
# Installs everything Mailroom's build, tests and demo need on a fresh Debian
# bookworm machine. Idempotent: safe to run again; does nothing already done.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

packages=(
  build-essential cmake ninja-build pkg-config ccache
  librocksdb-dev librdkafka-dev libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev prometheus-cpp-dev libyaml-cpp-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  libcurl4-openssl-dev libssl-dev libcpp-httplib-dev libgoogle-perftools-dev
  kcat openjdk-17-jre-headless maven curl procps util-linux e2fsprogs
  clang-format
  # delivery tests and benchmarks: Postfix (smtp-sink, smtp-source, the relay),
  # aiosmtpd (scriptable SMTP server), Prometheus' promtool
  postfix python3-aiosmtpd prometheus
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi


# Apache Kafka broker jars, resolved from Maven Central by scripts/kafka/pom.xml.
"$here/kafka.sh" fetch
