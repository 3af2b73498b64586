#!/usr/bin/env bash
# Configures and builds Mailroom into build/ (incremental; warnings are errors).
#   BUILD_DIR (default build), CMAKE_ARGS (extra -D options)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DMAILROOM_WERROR=ON "${launcher[@]}" ${CMAKE_ARGS:-}
fi
cmake --build "$build" --parallel "$(nproc)"
