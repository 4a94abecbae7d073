#!/usr/bin/env python3
"""The CPU twin on held-out plans: calibrate once (microbenchmarks, never these plans), then for each
plan predict with `ditwin simulate --profile` and measure with `ditwin execute`, and print
predicted vs measured as a Markdown table: six data-parallel plans, then the model-parallel
scenarios tiny-cpu-tp2, -pp2 and -cp2 (with each pipeline stage's idle share, predicted and
measured), and the other families' tiny scenarios (tiny-mmdit-cpu, tiny-unified-cpu: 2 ranks DP,
then TP, CP, PP and MMDiT's TP with sequence parallelism). Exits 1 when a plan's step-time error exceeds the tolerance.
Usage: tools/validate_cpu.py [path/to/ditwin] [--steps N] [--tolerance 0.15]"""
import json, os, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def option(name, default, kind):
    return kind(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default
args = [a for i, a in enumerate(sys.argv[1:]) if not a.startswith("--") and not sys.argv[i].startswith("--")]
ditwin = args[0] if args else os.path.join(root, "build", "cli", "ditwin")
steps = option("--steps", 12, int)
tolerance = option("--tolerance", 0.15, float)
base = json.load(open(os.path.join(root, "scenarios", "tiny-cpu.json")))

# Two model sizes x two batch sizes, 1 and 2 ranks, DDP and two ZeRO stages.
plans = [
    ("small-b8-1rank-ddp", 4, 128, 8, 1, 0),
    ("small-b16-2rank-ddp", 4, 128, 16, 2, 0),
    ("small-b16-2rank-zero1", 4, 128, 16, 2, 1),
    ("wide-b8-2rank-zero3", 4, 256, 8, 2, 3),
    ("wide-b16-1rank-ddp", 4, 256, 16, 1, 0),
    ("wide-b16-2rank-zero1", 4, 256, 16, 2, 1),
]
tmp = tempfile.mkdtemp(prefix="ditwin-twin-")
profile = os.path.join(tmp, "profile.json")
# One kernel thread per rank everywhere, so that the profile describes every run.
subprocess.run([ditwin, "calibrate", "--backend", "cpu", "--threads", "1", "--out", profile], check=True,
               stdout=subprocess.DEVNULL)
print("| plan | ranks | ZeRO | predicted ms | measured ms | error |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
worst = 0
for name, layers, hidden, batch, ranks, zero in plans:
    p = json.loads(json.dumps(base))
    p["name"] = name
    p["model"].update({"layers": layers, "hidden": hidden})
    p["training"].update({"global_batch": batch, "micro_batch": batch // ranks // 2})
    p["parallelism"] = {"dp": ranks, "zero": zero, "bucket_mb": 0.25}
    p["cluster"]["devices_per_node"] = ranks
    path = os.path.join(tmp, name + ".json")
    json.dump(p, open(path, "w"))
    s, m, c = (os.path.join(tmp, name + x) for x in (".s.json", ".m.json", ".c.json"))
    subprocess.run([ditwin, "simulate", path, "--profile", profile, "--report", s], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([ditwin, "execute", path, "--steps", str(steps), "--ranks", str(ranks), "--threads", "1", "--report", m],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([ditwin, "compare", s, m, "--report", c], check=True, stdout=subprocess.DEVNULL)
    r = json.load(open(c))
    err = r["step_time_error"]
    worst = max(worst, abs(err))
    print(f"| {name} | {ranks} | {zero} | {1e3 * r['predicted']['step_time_s']:.1f} | "
          f"{1e3 * r['measured']['step_time_s']:.1f} | {100 * err:+.1f}% |")

# The layouts: TP, a 1F1B pipeline and CP; then MMDiT and the unified model; each on 2 ranks.
print("\n| scenario | predicted ms | measured ms | error | stage idle share, predicted / measured |")
print("| --- | ---: | ---: | ---: | --- |")
# (name, scenario, parallelism overrides): the shipped layouts, then the other families' tiny
# scenarios as shipped (DP) and re-laid out as TP, CP, a 1F1B pipeline and (MMDiT) TP with SP.
layouts = [(n, n, {}) for n in ("tiny-cpu-tp2", "tiny-cpu-pp2", "tiny-cpu-cp2", "tiny-mmdit-cpu", "tiny-unified-cpu")]
for fam in ("mmdit", "unified"):
    for lay, par in (("tp2", {"tp": 2}), ("cp2", {"cp": 2}), ("pp2", {"pp": 2}),
                     ("tp2-sp", {"tp": 2, "sequence_parallel": True})):
        if fam == "unified" and lay == "tp2-sp":
            continue  # refused: the unified model's vocabulary-parallel LM head reads every text row
        layouts.append((f"tiny-{fam}-cpu-{lay}", f"tiny-{fam}-cpu", dict(par, dp=1)))
for name, scenario, overrides in layouts:
    path = os.path.join(root, "scenarios", scenario + ".json")
    if overrides:
        p = json.load(open(path))
        p["name"] = name
        p["parallelism"].update(overrides)
        path = os.path.join(tmp, name + ".json")
        json.dump(p, open(path, "w"))
    s, m, c = (os.path.join(tmp, name + x) for x in (".s.json", ".m.json", ".c.json"))
    subprocess.run([ditwin, "simulate", path, "--profile", profile, "--report", s], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([ditwin, "execute", path, "--steps", str(steps), "--ranks", "2", "--threads", "1", "--report", m],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([ditwin, "compare", s, m, "--report", c], check=True, stdout=subprocess.DEVNULL)
    r = json.load(open(c))
    err = r["step_time_error"]
    worst = max(worst, abs(err))
    stages = "; ".join(f"stage {st['stage']}: {100 * st['predicted_idle_share']:.1f}% / {100 * st['measured_idle_share']:.1f}%"
                       for st in r.get("stages", [])) or "-"
    print(f"| {name} | {1e3 * r['predicted']['step_time_s']:.1f} | {1e3 * r['measured']['step_time_s']:.1f} | "
          f"{100 * err:+.1f}% | {stages} |")
print(f"\nlargest error: {100 * worst:.1f}% (tolerance {100 * tolerance:.0f}%)")
sys.exit(0 if worst <= tolerance else 1)
