#!/usr/bin/env python3
"""DP-SGD's slowdown on this machine, measured and predicted: tiny-cpu-dp against the same plan
without privacy (scenarios/privacy/tiny-cpu-dp-nonprivate.json), each executed on 2 ranks in
alternating pairs, and both simulated with a fresh `ditwin calibrate` profile.

Usage: tools/privacy_slowdown.py [--ditwin build/cli/ditwin] [--pairs 3] [--steps 20] [--zero Z]
                                [--plan P.json] [--profile PROFILE.json]
(--zero runs both plans with parallelism.zero = Z, e.g. 3 for DP-SGD's noise per ZeRO-3 group;
--plan measures another DP-SGD plan against itself with training.privacy.enabled false, e.g. an
MMDiT or unified plan with a privacy section; --profile reuses a calibrated profile)
Prints per run the median step time and the sum of rank 0's per-op compute medians (less
sensitive to other load on the machine than the wall-clock step), then the ratios."""
import argparse, json, os, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLANS = {"dp": os.path.join(ROOT, "scenarios/tiny-cpu-dp.json"),
         "plain": os.path.join(ROOT, "scenarios/privacy/tiny-cpu-dp-nonprivate.json")}


def compute_sum(report):
    return sum(op["duration_s"] for op in report["ops"] if op.get("stream", "compute") == "compute")


def dp_ops(report):
    out = {}
    for op in report["ops"]:
        n = op["name"]
        for tag in (".sample_norm.", ".wgrad.", "privacy.clip", ".noise"):
            if tag in n or n.endswith(tag):
                out[tag.strip(".")] = out.get(tag.strip("."), 0) + op["duration_s"]
    return out


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--ditwin", default=os.path.join(ROOT, "build/cli/ditwin"))
    a.add_argument("--pairs", type=int, default=3)
    a.add_argument("--steps", type=int, default=20)
    a.add_argument("--zero", type=int, default=None, choices=[0, 1, 2, 3])
    a.add_argument("--plan", default=None)
    a.add_argument("--profile", default=None)
    o = a.parse_args()
    tmp = tempfile.mkdtemp(prefix="dp-slowdown-")
    if o.plan:
        plan = json.load(open(o.plan))
        if "privacy" not in plan.get("training", {}):
            sys.exit(f"{o.plan}: no training.privacy section to measure")
        PLANS["dp"] = os.path.abspath(o.plan)
        plan["training"]["privacy"]["enabled"] = False
        PLANS["plain"] = os.path.join(tmp, "plain.json")
        json.dump(plan, open(PLANS["plain"], "w"))
    if o.zero is not None:
        for kind in list(PLANS):
            plan = json.load(open(PLANS[kind]))
            plan["parallelism"]["zero"] = o.zero
            PLANS[kind] = os.path.join(tmp, f"{kind}-zero{o.zero}.json")
            json.dump(plan, open(PLANS[kind], "w"))
    step, comp = {"dp": [], "plain": []}, {"dp": [], "plain": []}
    for i in range(o.pairs):
        for kind in ("dp", "plain"):
            rep = os.path.join(tmp, f"{kind}{i}.json")
            subprocess.run([o.ditwin, "execute", PLANS[kind], "--steps", str(o.steps), "--ranks", "2", "--report", rep],
                           check=True, stdout=subprocess.DEVNULL)
            r = json.load(open(rep))
            step[kind].append(r["step_time_s"])
            comp[kind].append(compute_sum(r))
            extra = {k: round(v * 1e3, 2) for k, v in dp_ops(r).items()}
            print(f"{kind:5s} run {i}: step {r['step_time_s'] * 1e3:7.1f} ms, compute ops {compute_sum(r) * 1e3:6.1f} ms {extra}",
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    med = lambda v: statistics.median(v)
    print(f"measured: step {med(step['dp']) * 1e3:.1f} / {med(step['plain']) * 1e3:.1f} ms = {med(step['dp']) / med(step['plain']):.3f}x;"
          f" compute ops {med(comp['dp']) * 1e3:.1f} / {med(comp['plain']) * 1e3:.1f} ms = {med(comp['dp']) / med(comp['plain']):.3f}x")
    prof = o.profile or os.path.join(tmp, "profile.json")
    if not o.profile:
        subprocess.run([o.ditwin, "calibrate", "--backend", "cpu", "--out", prof], check=True, stdout=subprocess.DEVNULL)
    pred = {}
    for kind in ("dp", "plain"):
        rep = os.path.join(tmp, f"sim-{kind}.json")
        subprocess.run([o.ditwin, "simulate", PLANS[kind], "--profile", prof, "--report", rep], check=True, stdout=subprocess.DEVNULL)
        r = json.load(open(rep))
        pred[kind] = (r["step_time_s"], compute_sum(r))
    print(f"predicted: step {pred['dp'][0] * 1e3:.1f} / {pred['plain'][0] * 1e3:.1f} ms = {pred['dp'][0] / pred['plain'][0]:.3f}x;"
          f" compute ops {pred['dp'][1] * 1e3:.1f} / {pred['plain'][1] * 1e3:.1f} ms = {pred['dp'][1] / pred['plain'][1]:.3f}x")


if __name__ == "__main__":
    sys.exit(main())
