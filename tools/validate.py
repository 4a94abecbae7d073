#!/usr/bin/env python3
"""Simulates every validation plan and prints predicted vs published as a Markdown table.
Usage: tools/validate.py [path/to/ditwin]   (default: build/cli/ditwin)"""
import json, os, subprocess, sys, tempfile, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ditwin = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "cli", "ditwin")
folder = os.path.join(root, "scenarios", "validation")
rows = json.load(open(os.path.join(folder, "published.json")))["rows"]
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
