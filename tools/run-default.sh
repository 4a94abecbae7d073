#!/usr/bin/env bash
# The README's first command: set up, build, and run ditwin on the default scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
./build/cli/ditwin plan scenarios/default.json
if ./build/cli/ditwin simulate --help >/dev/null 2>&1; then
  echo
  ./build/cli/ditwin simulate scenarios/default.json --report build/default-report.json --trace build/default-trace.json
fi
