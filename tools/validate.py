#!/usr/bin/env python3
"""Simulates every validation plan and prints predicted vs published as a Markdown table.
Usage: tools/validate.py [path/to/ditwin] [--candidates]   (default: build/cli/ditwin)
--candidates: the candidate rows of scenarios/validation/candidates/ (not yet held by the tests)."""
import json, os, subprocess, sys, tempfile, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
args = [a for a in sys.argv[1:] if a != "--candidates"]
candidates = "--candidates" in sys.argv[1:]
ditwin = args[0] if args else os.path.join(root, "build", "cli", "ditwin")
folder = os.path.join(root, "scenarios", "validation", *(["candidates"] if candidates else []))
rows = json.load(open(os.path.join(folder, "candidates.json" if candidates else "published.json")))["rows"]
print("| plan | metric | published | predicted | error | MFU | simulated in |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
worst = 0.0
for row in rows:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        t0 = time.time()
        subprocess.run([ditwin, "simulate", os.path.join(folder, row["plan"]), "--report", out.name],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        report = json.load(open(out.name))
    predicted = report[row["metric"]]
    error = predicted / row["published"] - 1
    if row.get("checked", True):
        worst = max(worst, abs(error))
    mark = "" if row.get("checked", True) else " (not checked)"
    print(f"| {row['plan'][:-5]}{mark} | {row['metric']} | {row['published']} | {predicted:.3g} | {100 * error:+.1f}% "
          f"| {100 * report['mfu']:.1f}% | {wall:.1f} s |")
print(f"\nlargest error over checked rows: {100 * worst:.1f}%")
