#!/usr/bin/env bash
# The README's second command: set up, build, and run the whole test suite. GPU tests
# (label `gpu`) skip themselves where no GPU is present. The CPU twin's held-out check (label
# `validation`) times real runs and needs a machine nothing else runs on: `ctest -L validation`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
cd build
ctest --output-on-failure -j"$(nproc)" -LE validation "$@"
