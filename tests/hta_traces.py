#!/usr/bin/env python3
"""hta_traces.py DIR RANKS: Holistic Trace Analysis on a --trace-dir folder. Loads every rank-N.json
(and checks it found RANKS distinct ranks: a file HTA cannot read its rank from collapses into
rank 0 without an error), then runs the temporal breakdown, the communication/computation overlap
and the idle-time breakdown, and fails unless each is non-empty, finite and non-negative."""
import math
import sys
import warnings

warnings.filterwarnings("ignore")
from hta.trace_analysis import TraceAnalysis  # noqa: E402

folder, want_ranks = sys.argv[1], int(sys.argv[2])
analysis = TraceAnalysis(trace_dir=folder)
ranks = sorted(analysis.t.traces.keys())
if len(ranks) != want_ranks:
    sys.exit(f"{folder}: HTA read ranks {ranks}, expected {want_ranks}")
results = {
    "temporal breakdown": analysis.get_temporal_breakdown(visualize=False),
    "comm/comp overlap": analysis.get_comm_comp_overlap(visualize=False),
    "idle time": analysis.get_idle_time_breakdown(visualize=False),
}
for name, frame in results.items():
    if isinstance(frame, tuple):
        frame = frame[0]
    numbers = list(frame.select_dtypes("number").to_numpy().ravel())
    if not numbers or not all(math.isfinite(v) and v >= 0 for v in numbers):
        sys.exit(f"{folder}: {name} is empty, NaN or negative:\n{frame.to_string()[:800]}")
    print(f"{folder}: {name}: {len(frame)} rows, all finite and >= 0")
