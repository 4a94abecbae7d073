#!/usr/bin/env bash
# `ditwin search` end to end (docs/search.md): one rank and `mpirun -np 2` give the same candidates
# and the same ranking; the best plan loads; a space where nothing fits exits 2 with the reason;
# the Pareto plot is a PNG when the GUI is built. Usage: search_cli_test.sh DITWIN SOURCE_DIR
set -euo pipefail
ditwin=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plan=$src/scenarios/unified-7b-4096xh100.json
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
"$ditwin" search "$plan" --top 4 --report "$work/one.json" --best-plan "$work/best.json" >"$work/one.out"
mpirun -np 2 "$ditwin" search "$plan" --top 4 --report "$work/two.json" >"$work/two.out"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
one, two = json.load(open(f"{w}/one.json")), json.load(open(f"{w}/two.json"))
assert one["candidates"] > 10000, one["candidates"]
assert one["candidates"] == two["candidates"] and one["feasible"] == two["feasible"], "counts differ between 1 and 2 ranks"
assert [t["index"] for t in one["top"]] == [t["index"] for t in two["top"]], "rankings differ between 1 and 2 ranks"
assert two["ranks"] == 2
for k in ("candidates", "feasible", "top"):
    assert k in one, k
for t in one["top"]:
    for k in ("parallelism", "step_time_s", "tokens_per_s", "mfu", "memory_per_gpu_bytes", "ettr", "goodput_tokens_per_s"):
        assert k in t, k
PY
"$ditwin" plan "$work/best.json" >/dev/null
grep -q "search of" "$work/one.out"
# Nothing fits: Llama 3 405B on one node of 8 GPUs.
set +e
"$ditwin" search "$src/scenarios/llama3-405b-16384xh100.json" --gpus 8 >"$work/none.out" 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || { echo "nothing-fits search exited $rc, want 2"; cat "$work/none.out"; exit 1; }
grep -q "ditwin: error: .*none of the .* candidates fits; .* refused by memory" "$work/none.out" || { cat "$work/none.out"; exit 1; }
# The Pareto plot, where the build has Qt.
if "$ditwin" search "$plan" --top 1 --pareto "$work/p.png" >"$work/png.out" 2>&1; then
  python3 -c "import sys; d=open(sys.argv[1],'rb').read(8); sys.exit(0 if d==b'\x89PNG\r\n\x1a\n' else 1)" "$work/p.png"
else
  grep -q "built without Qt" "$work/png.out" || { cat "$work/png.out"; exit 1; }
fi
echo "search CLI: 1 and 2 ranks agree; best plan loads; nothing-fits exits 2; Pareto plot ok"
