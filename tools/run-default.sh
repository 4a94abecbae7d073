#!/usr/bin/env bash
# The README's first command: set up, build, and run ditwin on the default scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
./build/cli/ditwin plan scenarios/default.json
echo
./build/cli/ditwin simulate scenarios/default.json --report build/default-report.json --trace build/default-trace.json
echo
./build/cli/ditwin simulate scenarios/default.json --mode run --trials 200 --seed 1 --report build/default-run.json
echo
./build/cli/ditwin search scenarios/default.json --top 5 --report build/default-search.json --best-plan build/default-best.json
echo
echo "reports and the trace are in build/ (open build/default-trace.json in ui.perfetto.dev or ditwin-gui)"
