#!/usr/bin/env bash
# HTA reads ditwin's per-rank trace folders: the predicted default scenario (its representative
# ranks) and a measured 2-rank tiny-cpu run. HTA lives in the virtual environment tools/setup.sh
# makes (.venv-hta); without it the test fails and says so.
set -euo pipefail
ditwin=$1 root=$2
py=$root/.venv-hta/bin/python
[ -x "$py" ] && "$py" -c "import hta" 2>/dev/null || { echo "HTA is not installed in $root/.venv-hta: run bash tools/setup.sh"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"
"$ditwin" simulate scenarios/default.json --trace-dir "$work/pred" > "$work/s.log"
"$ditwin" execute scenarios/tiny-cpu.json --ranks 2 --steps 6 --trace-dir "$work/meas" > "$work/x.log" </dev/null
"$py" tests/hta_traces.py "$work/pred" "$(ls "$work/pred" | wc -l)"
"$py" tests/hta_traces.py "$work/meas" 2
