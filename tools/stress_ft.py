#!/usr/bin/env python3
"""Stress test of fault-tolerant execution: many supervised 2-rank runs of a small DiT, each
with random faults — kills at step starts, kills at random moments (a timer in the rank), kills
in the middle of checkpoint writes, corrupted shards followed by a kill, hangs, and kill -9 from
outside at a random moment — in sync and async checkpoint mode. Every run must finish, load no
checkpoint that was uncommitted or corrupted, and end with weights bitwise equal to the
uninterrupted run's; a hang must be found within the heartbeat timeout (+0.5 s).

    /usr/bin/python3 tools/stress_ft.py --runs 200 [--build build] [--seed 1] [--json out.json]

Prints one line per run and a summary table (docs/reliability.md quotes the latest).
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HEARTBEAT_S = 1.0
STEPS = 8
INTERVAL = 2


def write_plan(root, source):
    with open(os.path.join(source, "scenarios", "tiny-cpu.json")) as f:
        plan = json.load(f)
    plan["name"] = "stress-ft"
    plan["model"].update({"layers": 2, "hidden": 64, "image_size": 64})
    plan["training"].update({"global_batch": 8, "micro_batch": 2})
    plan["parallelism"] = {"dp": 2, "zero": 1, "bucket_mb": 0.05}
    plan["reliability"] = {"checkpoint": {"mode": "sync", "interval_steps": INTERVAL, "keep": 2},
                           "heartbeat_s": HEARTBEAT_S, "nccl_timeout_s": 30,
                           "restart": {"max_restarts": 10, "backoff_s": 0.0}}
    paths = {}
    for mode in ("sync", "async"):
        plan["reliability"]["checkpoint"]["mode"] = mode
        paths[mode] = os.path.join(root, f"plan-{mode}.json")
        with open(paths[mode], "w") as f:
            json.dump(plan, f)
    return paths


def draw_faults(rng):
    faults = []
    for _ in range(rng.randint(1, 3)):
        rank = rng.randint(0, 1)
        kind = rng.choice(["step", "time", "checkpoint", "corrupt", "hang", "outside"])
        if kind == "step":
            faults.append(f"kill:rank={rank},step={rng.randint(1, STEPS - 1)}")
        elif kind == "time":
            faults.append(f"kill:rank={rank},seed={rng.randrange(10**6)},within_s=0.25")
        elif kind == "checkpoint":
            faults.append(f"kill_during_checkpoint:rank={rank},step={INTERVAL * rng.randint(1, (STEPS - 1) // INTERVAL)},"
                          f"fraction=0.{rng.randint(1, 9)}")
        elif kind == "corrupt":
            c = INTERVAL * rng.randint(1, (STEPS - 1) // INTERVAL)
            faults += [f"corrupt_shard:rank={rank},step={c}", f"kill:rank={1 - rank},step={c + 1}"]
        elif kind == "hang":
            faults.append(f"hang:rank={rank},step={rng.randint(1, STEPS - 1)}")
        else:
            faults.append("outside")
    return faults


def outside_killer(run_dir, rng, stop, record):
    """kill -9 a random rank once it has done a random number of steps (a random moment)."""
    rank, after = rng.randint(0, 1), rng.randint(1, STEPS - 2)
    delay = rng.uniform(0, 0.05)
    while not stop.is_set():
        try:
            with open(os.path.join(run_dir, f"heartbeat-{rank}")) as f:
                pid, step = f.read().split()[:2]
            if int(step) >= after:
                time.sleep(delay)
                os.kill(int(pid), signal.SIGKILL)
                record.append({"rank": rank, "after_step": after})
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.002)


def safety(events):
    """Every checkpoint loaded had all its shards written before its manifest (rank 0's
    checkpoint_shards_written event, which precedes the manifest's rename: the commit event itself
    can be lost when the supervisor kills rank 0 right after the rename), and none was loaded after
    an injection corrupted it, unless a later attempt wrote that step again."""
    written, corrupted, bad, loads, refused = set(), {}, [], 0, 0
    for e in events:
        k = e.get("event")
        if k == "checkpoint_shards_written":
            written.add(e["step"])
            if e["step"] in corrupted and corrupted[e["step"]] < e["attempt"]:
                del corrupted[e["step"]]
        elif k == "injected" and e.get("kind") == "corrupt_shard":
            corrupted[int(e["spec"].split("step=")[1].split(",")[0])] = e["attempt"]
        elif k == "loaded":
            refused += len(e.get("refused", []))
            if e["step"] > 0:
                loads += 1
                if e["step"] not in written or e["step"] in corrupted:
                    bad.append(e["step"])
    return bad, loads, refused


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default="build")
    ap.add_argument("--ditwin", help="the ditwin binary (default BUILD/cli/ditwin); a copy keeps rebuilds out of a long run")
    ap.add_argument("--json", help="write the per-run results and the summary here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ditwin = os.path.abspath(args.ditwin or os.path.join(source, args.build, "cli", "ditwin"))
    if not os.access(ditwin, os.X_OK):
        sys.exit(f"stress_ft: {ditwin} not found; build first (bash tools/locked-build.sh ditwin)")
    root = tempfile.mkdtemp(prefix="ditwin-stress-ft-")
    plans = write_plan(root, source)

    base = os.path.join(root, "baseline.params")
    subprocess.run([ditwin, "execute", plans["sync"], "--steps", str(STEPS), "--ranks", "2", "--save-parameters", base],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(base, "rb") as f:
        baseline = hashlib.sha256(f.read()).hexdigest()

    rng = random.Random(args.seed)
    results = []
    t_start = time.time()
    for i in range(args.runs):
        mode = rng.choice(["sync", "async"])
        faults = draw_faults(rng)
        ck = os.path.join(root, f"ck{i}")
        params, report, log = (os.path.join(root, f"run{i}.{x}") for x in ("params", "report.json", "log"))
        cmd = [ditwin, "execute", plans[mode], "--steps", str(STEPS), "--ranks", "2", "--supervise", "--checkpoint-dir", ck,
               "--save-parameters", params, "--report", report]
        for fault in faults:
            if fault != "outside":
                cmd += ["--inject", fault]
        stop, outside = threading.Event(), []
        killers = [threading.Thread(target=outside_killer, args=(os.path.join(ck, "supervisor"), random.Random(rng.random()),
                                                                 stop, outside))
                   for fault in faults if fault == "outside"][:1]
        t0 = time.time()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            for k in killers:
                k.start()
            try:
                rc = proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "timeout"
        stop.set()
        for k in killers:
            k.join()
        seconds = time.time() - t0
        row = {"run": i, "mode": mode, "faults": faults, "rc": rc, "seconds": seconds, "outside_kills": len(outside)}
        try:
            with open(params, "rb") as f:
                row["bit_identical"] = hashlib.sha256(f.read()).hexdigest() == baseline
            with open(report) as f:
                rep = json.load(f)
            row["restarts"] = rep["supervisor"]["restarts"]
            row["failures"] = [{"kind": x["kind"], "detected_after_s": x["detected_after_s"]} for x in rep.get("failures", [])]
            row["fired"] = sum(1 for x in rep["injections"] if x["fired"])
            row["unsafe_loads"], row["loads"], row["refused"] = safety(rep["events"])
            row["ettr"] = rep["ettr"]["mean"]
        except (OSError, ValueError, KeyError) as e:
            row["bit_identical"] = False
            row["error"] = repr(e)
        hang_ok = all(HEARTBEAT_S <= x["detected_after_s"] < HEARTBEAT_S + 0.5 for x in row.get("failures", [])
                      if x["kind"] == "hang")
        row["hang_in_time"] = hang_ok
        row["ok"] = rc == 0 and row["bit_identical"] and not row.get("unsafe_loads") and hang_ok
        results.append(row)
        print(f"run {i:3d} {mode:5s} rc={rc} restarts={row.get('restarts', '?')} "
              f"{'OK ' if row['ok'] else 'BAD'} {seconds:5.1f}s  {' '.join(faults)}", flush=True)
        if row["ok"] and not args.keep:
            shutil.rmtree(ck, ignore_errors=True)

    # Summary.
    n = len(results)
    fails = [f for r in results for f in r.get("failures", [])]
    by_kind = {}
    for f in fails:
        by_kind.setdefault(f["kind"], []).append(f["detected_after_s"])
    kinds = {}
    for r in results:
        for fault in r["faults"]:
            k = fault.split(":")[0] if fault != "outside" else "outside kill -9"
            if k == "kill" and "within_s" in fault:
                k = "kill at a random time"
            kinds[k] = kinds.get(k, 0) + 1
    summary = {
        "runs": n, "finished": sum(r["rc"] == 0 for r in results),
        "bit_identical": sum(bool(r.get("bit_identical")) for r in results),
        "all_checks_passed": sum(r["ok"] for r in results),
        "restarts": sum(r.get("restarts", 0) for r in results),
        "checkpoints_loaded": sum(r.get("loads", 0) for r in results),
        "checkpoints_refused": sum(r.get("refused", 0) for r in results),
        "unsafe_loads": sum(len(r.get("unsafe_loads", [])) for r in results),
        "outside_kills_done": sum(r["outside_kills"] for r in results),
        "faults_planned": kinds,
        "detection_s": {k: {"count": len(v), "median": statistics.median(v), "max": max(v)} for k, v in by_kind.items()},
        "run_seconds": {"mean": statistics.mean(r["seconds"] for r in results), "max": max(r["seconds"] for r in results)},
        "wall_minutes": (time.time() - t_start) / 60,
    }
    print("\nsummary of", n, "runs (seed", args.seed, ")")
    rows = [("runs", n), ("finished", summary["finished"]), ("weights bit-identical to the uninterrupted run", summary["bit_identical"]),
            ("all checks passed", summary["all_checks_passed"]), ("restarts", summary["restarts"]),
            ("checkpoints loaded on resume", summary["checkpoints_loaded"]),
            ("checkpoints refused on resume (corrupt / uncommitted)", summary["checkpoints_refused"]),
            ("corrupt or partly written checkpoints loaded", summary["unsafe_loads"]),
            ("outside kill -9 delivered", summary["outside_kills_done"])]
    for k, v in sorted(kinds.items()):
        rows.append((f"faults planned: {k}", v))
    for k, v in sorted(summary["detection_s"].items()):
        rows.append((f"detected {k} (count, median s, max s)", f"{v['count']}, {v['median']:.3f}, {v['max']:.3f}"))
    rows.append(("seconds per run (mean, max)", f"{summary['run_seconds']['mean']:.1f}, {summary['run_seconds']['max']:.1f}"))
    rows.append(("wall time (min)", f"{summary['wall_minutes']:.1f}"))
    width = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": results}, f, indent=1)
    if not args.keep and summary["all_checks_passed"] == n:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print("kept", root)
    sys.exit(0 if summary["all_checks_passed"] == n else 1)


if __name__ == "__main__":
    main()
