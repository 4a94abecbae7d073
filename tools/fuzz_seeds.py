#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/) into OUT/<target>/: the plans in scenarios/,
the device profiles under docs/measurements, reports and traces that `ditwin simulate` writes,
and well-formed checkpoints. Generated on every run (tools/fuzz.sh), never committed.

  tools/fuzz_seeds.py OUT DITWIN_BINARY
"""
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Seeds above this slow every execution that mutates them and add no reader paths the small
# ones lack (the traces of the 16,384-GPU plans run to megabytes).
MAX_SEED_BYTES = 256 * 1024


def copy_seeds(paths, out):
    n = 0
    for p in sorted(paths):
        if os.path.getsize(p) <= MAX_SEED_BYTES:
            shutil.copy(p, os.path.join(out, os.path.relpath(p, ROOT).replace("/", "_")))
            n += 1
    return n


def plan_seeds(out):
    return copy_seeds(glob.glob(f"{ROOT}/scenarios/*.json") + glob.glob(f"{ROOT}/scenarios/*/*.json"), out)


def profile_seeds(out):
    return copy_seeds(glob.glob(f"{ROOT}/docs/measurements/**/profile*.json", recursive=True), out)


def run_times_seeds(out, ditwin):
    """A pipeline plan's report and trace (stages, p2p ops), a one-GPU plan's, a long-run report."""
    profile = sorted(glob.glob(f"{ROOT}/docs/measurements/**/profile.json", recursive=True))[0]
    runs = [
        ("pp2", ["simulate", f"{ROOT}/scenarios/tiny-cpu-pp2.json", "--profile", profile]),
        ("dit-b2", ["simulate", f"{ROOT}/scenarios/dit-b2-1xh100.json"]),
    ]
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in runs:
            report, trace = f"{out}/{name}-report.json", f"{out}/{name}-trace.json"
            subprocess.run([ditwin, *args, "--report", report, "--trace", trace], check=True,
                           stdout=subprocess.DEVNULL, cwd=tmp)
            n += 2
        subprocess.run([ditwin, "simulate", f"{ROOT}/scenarios/dit-b2-1xh100.json", "--mode", "run", "--trials", "3",
                        "--seed", "1", "--report", f"{out}/dit-b2-longrun.json"], check=True,
                       stdout=subprocess.DEVNULL, cwd=tmp)
        n += 1
    for p in os.listdir(out):
        if os.path.getsize(f"{out}/{p}") > MAX_SEED_BYTES:
            os.remove(f"{out}/{p}")
            n -= 1
    # Measured reports and comparisons kept with the docs (`ditwin execute`'s side of a compare).
    measured = [p for p in glob.glob(f"{ROOT}/docs/measurements/**/*.json", recursive=True)
                if not os.path.basename(p).startswith("profile")]
    return n + copy_seeds(measured, out)


def shard_bytes(rank, ranks, step, slices):
    """The shard file format of exec/ft/checkpoint.cpp: magic, u64 header length, JSON header, floats."""
    header = {"rank": rank, "ranks": ranks, "step": step,
              "slices": [{"array": a, "begin": b, "count": len(v)} for a, b, v in slices]}
    h = json.dumps(header, separators=(",", ":")).encode()
    data = b"".join(struct.pack(f"<{len(v)}f", *v) for _, _, v in slices)
    return b"DITWIN-SHARD/1\n" + struct.pack("<Q", len(h)) + h + data


def checkpoint_seeds(out):
    """Inputs of fuzz/fuzz_checkpoint.cpp: u32 body length, manifest body, shard 0 (it fills in the checksums)."""
    parameters = 16  # the harness's plan (fuzz_parameters there)
    params = [0.25 * i for i in range(parameters)]
    cases = {
        "params-only": [("params", 0, params)],
        "adamw-state": [("params", 0, params), ("m", 0, [0.0] * parameters), ("v", 0, [1e-8] * parameters)],
        "two-slices": [("params", 0, params[:5]), ("params", 5, params[5:])],
    }
    for name, slices in cases.items():
        body = {"step": 1, "ranks": 1, "plan_identity": "fuzz-plan", "plan": "fuzz", "parameters": parameters,
                "optimizer": "adamw", "seed": 7, "codec": "identity", "loss": 0.5,
                "shards": [{"file": "shard-00000.bin", "sha256": "", "bytes": 0}]}
        b = json.dumps(body).encode()
        with open(f"{out}/{name}", "wb") as f:
            f.write(struct.pack("<I", len(b)) + b + shard_bytes(0, 1, 1, slices))
    return len(cases)


def npy_seeds(out):
    """Inputs of fuzz/fuzz_npy.cpp: .npy headers as numpy.save writes them (v1 and v2), and Python 2's."""
    cases = {
        "latents-v1": (1, "{'descr': '<f4', 'fortran_order': False, 'shape': (256, 4, 32, 32), }"),
        "labels-v1": (1, "{'descr': '<i8', 'fortran_order': False, 'shape': (256,), }"),
        "tokens-v2": (2, "{'descr': '<i4', 'fortran_order': False, 'shape': (8, 77), }"),
        "scalar-v3": (3, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }"),
        "python2-long": (1, "{'descr': '>f8', 'fortran_order': True, 'shape': (2L, 3L), }"),
    }
    for name, (major, d) in cases.items():
        preamble = 10 if major == 1 else 12
        header = d + " " * ((64 - (preamble + len(d) + 1) % 64) % 64) + "\n"
        length = struct.pack("<H" if major == 1 else "<I", len(header))
        with open(f"{out}/{name}", "wb") as f:
            f.write(b"\x93NUMPY" + bytes([major, 0]) + length + header.encode() + b"\0" * 16)
    return len(cases)


def main():
    out, ditwin = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    made = {}
    for target, make in [("fuzz_plan", plan_seeds), ("fuzz_profile", profile_seeds),
                         ("fuzz_run_times", lambda o: run_times_seeds(o, ditwin)),
                         ("fuzz_checkpoint", checkpoint_seeds), ("fuzz_npy", npy_seeds)]:
        d = os.path.join(out, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        made[target] = make(d)
    print("fuzz seeds: " + ", ".join(f"{t} {n}" for t, n in made.items()) + f" (in {out})")


if __name__ == "__main__":
    main()
