#!/usr/bin/env bash
# Regenerates every image docs/gui.md shows, from the scenarios, with this checkout's build
# (build/cli/ditwin, build/gui/ditwin-gui; offscreen Qt, no display needed), so the figures and
# pictures in docs/gui.md come from the current code. Prints the figures the text quotes.
# Usage: tools/gui_screenshots.sh [--all-ranks] [OUT_DIR]   (default docs/images; BUILD=dir for another build)
# --all-ranks also remakes gui-16384-ranks.png from a 4.8 M-slice, 1.2 GB trace of every rank:
# writing it takes ~18 GB of memory and minutes (the writer builds the whole JSON document).
set -euo pipefail
cd "$(dirname "$0")/.."
ALL_RANKS=0
if [ "${1:-}" = "--all-ranks" ]; then ALL_RANKS=1; shift; fi
BUILD=${BUILD:-build}
OUT=${1:-docs/images}
DITWIN=$BUILD/cli/ditwin
GUI=$BUILD/gui/ditwin-gui
for b in "$DITWIN" "$GUI"; do [ -x "$b" ] || { echo "missing $b: build it with tools/locked-build.sh ditwin ditwin-gui" >&2; exit 2; }; done
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export QT_QPA_PLATFORM=offscreen

# One simulated step of the default scenario (DiT-XL/2 on 256 H100s).
"$DITWIN" simulate scenarios/default.json --report "$WORK/r.json" --trace "$WORK/t.json" > "$WORK/default.txt"
"$GUI" --screenshot "$OUT/gui-default.png" --report "$WORK/r.json" "$WORK/t.json"
# The end of the step with the all-gathers searched.
"$GUI" --screenshot "$OUT/gui-default-zoom.png" --report "$WORK/r.json" --range 0:8 --search all_gather "$WORK/t.json"
# A selected op: its details, its dependency arrows, and a measured time range.
"$GUI" --screenshot "$OUT/gui-details.png" --report "$WORK/r.json" --range 0:0.9 --select L0.adaln.fwd \
  --measure 0.076:0.323 "$WORK/t.json"

# Llama-3 405B on 16,384 H100s: the simulator's 16 representative ranks.
"$DITWIN" simulate scenarios/llama3-405b-16384xh100.json --report "$WORK/llama_r.json" --trace "$WORK/llama.json" > "$WORK/llama.txt"
"$GUI" --screenshot "$OUT/gui-llama3-405b.png" --report "$WORK/llama_r.json" "$WORK/llama.json"

# Every one of 16,384 ranks (--trace-ranks all) with the busy-share overview: DiT-B/2 in pure data
# parallelism on 2,048 nodes (the Llama-3 plan would make 59 M slices, beyond one file's limit).
python3 - "$WORK/b2.json" <<'PY'
import json, sys
p = json.load(open("scenarios/dit-b2-1xh100.json"))
p["name"] = "dit-b2-16384xh100"
p["training"]["global_batch"] = 16384 * 32
p["parallelism"].update({"dp": 16384, "zero": 1})
p["cluster"] = {"device": "H100-SXM", "nodes": 2048, "devices_per_node": 8,
                "network": {"topology": "fat_tree", "nic_gbps": 400, "oversubscription": 1}}
json.dump(p, open(sys.argv[1], "w"))
PY
if [ "$ALL_RANKS" = 1 ]; then
  "$DITWIN" simulate "$WORK/b2.json" --trace "$WORK/b2_all.json" --trace-ranks all > "$WORK/b2.txt"
  "$GUI" --timings --screenshot "$OUT/gui-16384-ranks.png" --expand --range 0:2 --select L0.attn.qkv.fwd "$WORK/b2_all.json"
fi

# Compare view: the default plan as the prediction, the same plan with 200 Gb/s NICs as the
# "measurement" (its otherData.source set to measured).
python3 - "$WORK/variant.json" <<'PY'
import json, sys
p = json.load(open("scenarios/default.json"))
p["name"] += "-nic200"
p["cluster"]["network"]["nic_gbps"] = 200
json.dump(p, open(sys.argv[1], "w"))
PY
"$DITWIN" simulate "$WORK/variant.json" --trace "$WORK/v.json" > "$WORK/variant.txt"
python3 - "$WORK/v.json" "$WORK/v_measured.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["otherData"]["source"] = "measured"
json.dump(d, open(sys.argv[2], "w"))
PY
"$GUI" --screenshot "$OUT/gui-compare.png" --report "$WORK/r.json" "$WORK/t.json" "$WORK/v_measured.json"

# A long run: Llama-3 405B through failures, 10 trials.
"$DITWIN" simulate scenarios/llama3-405b-16384xh100.json --mode run --trials 10 --trace "$WORK/run.json" \
  --report "$WORK/run_r.json" > "$WORK/run.txt"
"$GUI" --screenshot "$OUT/gui-run.png" --report "$WORK/run_r.json" "$WORK/run.json"

# The figures docs/gui.md quotes, from these runs.
python3 - "$WORK" <<'PY'
import json, sys, os
w = sys.argv[1]
r = json.load(open(os.path.join(w, "r.json")))
b = r["breakdown"]
print(f"default: step {r['step_time_s'] * 1e3:.2f} ms, MFU {r['mfu'] * 100:.1f}%, compute {b['compute_s'] * 1e3:.2f} ms, "
      f"exposed dp {b['exposed_comm_s'].get('dp', 0) / r['step_time_s'] * 100:.1f}%")
t = json.load(open(os.path.join(w, "t.json")))
v = json.load(open(os.path.join(w, "v.json")))
print(f"compare: variant step {v['otherData']['step_time_s'] * 1e3:.2f} ms vs {t['otherData']['step_time_s'] * 1e3:.2f} ms "
      f"({(v['otherData']['step_time_s'] / t['otherData']['step_time_s'] - 1) * 100:+.1f}%)")
if os.path.exists(os.path.join(w, "b2_all.json")):
    print(f"16,384 ranks: {os.path.getsize(os.path.join(w, 'b2_all.json')) / 1e6:.0f} MB")
run = json.load(open(os.path.join(w, "run_r.json")))
e = run.get("ettr", {})
print("run: ETTR mean", e.get("mean") if isinstance(e, dict) else e)
PY
ls -la "$OUT"
