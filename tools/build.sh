#!/usr/bin/env bash
# Configures (once) and builds ditwin in ./build with Ninja, Release, on every core.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${DITWIN_CMAKE_ARGS:-} >build-configure.log 2>&1 ||
    { cat build-configure.log; exit 1; }
  mv build-configure.log build/configure.log
fi
cmake --build build -j"$(nproc)"
