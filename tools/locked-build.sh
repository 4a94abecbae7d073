#!/usr/bin/env bash
# Builds ./build while holding a machine-wide lock, so that two people (or agents) sharing
# this 2-core machine never compile at the same time. Usage: tools/locked-build.sh [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/ditwin-build.lock
flock 9
if [ ! -f build/build.ninja ]; then cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; fi
if [ $# -gt 0 ]; then cmake --build build -j2 --target "$@"; else cmake --build build -j2; fi
