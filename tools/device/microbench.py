#!/usr/bin/env python3
"""Microbenchmarks of one GPU that ditwin's device constants are checked against (run on a lent
H100/H200 with PyTorch): bf16 GEMM TFLOP/s over shapes, sustained GEMM over a minute with the SM
clock and power, flash attention (SDPA) forward/backward, HBM copy bandwidth. Prints a table and
writes $OUT/microbench.json. Usage: python3 tools/device/microbench.py [--sustain-seconds 60]"""
import argparse, json, os, statistics, subprocess, time
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--sustain-seconds", type=float, default=60)
args = ap.parse_args()
dev = torch.device("cuda")
out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

def timed(fn, reps=20):
    fn(); torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)

def smi():
    q = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,power.draw,temperature.gpu",
                        "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout.strip()
    return q

# GEMMs: (m, k, n) = rows, inner, outputs; the shapes DiT-XL/2, MMDiT-8B and Llama-3 layers use.
gemms = []
for m, k, n in [(4096, 4096, 4096), (8192, 8192, 8192), (4096, 1152, 3456), (4096, 1152, 4608), (4096, 4608, 1152),
                (16, 1152, 6912), (8192, 2432, 7296), (8192, 16384, 2304), (8192, 6656, 16384), (1024, 1024, 1024),
                (256, 1152, 1152)]:
    A = torch.randn(m, k, device=dev, dtype=torch.bfloat16); B = torch.randn(k, n, device=dev, dtype=torch.bfloat16)
    t = timed(lambda: A @ B)
    gemms.append({"m": m, "k": k, "n": n, "seconds": t, "tflops": 2 * m * n * k / t / 1e12})
out["gemm"] = gemms

# Flash attention through SDPA (bf16), forward and backward.
attn = []
for b, h, s, d, causal in [(16, 16, 256, 72, False), (8, 24, 1178, 64, False), (1, 32, 4096, 128, True), (1, 16, 8192, 128, True)]:
    q, k_, v = (torch.randn(b, h, s, d, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    f = timed(lambda: F.scaled_dot_product_attention(q, k_, v, is_causal=causal))
    o = F.scaled_dot_product_attention(q, k_, v, is_causal=causal); g = torch.randn_like(o)
    def fb():
        o = F.scaled_dot_product_attention(q, k_, v, is_causal=causal)
        o.backward(g)
    fbt = timed(fb)
    flops = 4 * b * h * s * s * d * (0.5 if causal else 1)
    attn.append({"batch": b, "heads": h, "tokens": s, "head_dim": d, "causal": causal, "forward_s": f,
                 "forward_tflops": flops / f / 1e12, "backward_s": fbt - f, "backward_tflops": 2.5 * flops / (fbt - f) / 1e12})
out["attention"] = attn

# HBM: copy 4 GiB.
x = torch.empty(1 << 30, device=dev, dtype=torch.float32); y = torch.empty_like(x)
t = timed(lambda: y.copy_(x), reps=10)
out["hbm_copy_bytes_per_s"] = 2 * x.numel() * 4 / t
del x, y

# Sustained: one large GEMM back to back; TFLOP/s, clock and power every few seconds.
A = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16); B = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
samples, start = [], time.time()
while time.time() - start < args.sustain_seconds:
    t = timed(lambda: A @ B, reps=50)
    samples.append({"t": round(time.time() - start, 1), "tflops": 2 * 8192 ** 3 / t / 1e12, "smi": smi()})
out["sustained"] = samples
first, last = samples[0]["tflops"], statistics.median(s["tflops"] for s in samples[-5:])
out["sustained_ratio"] = last / first

path = os.path.join(os.environ.get("OUT", "."), "microbench.json")
json.dump(out, open(path, "w"), indent=1)
print(out["device"])
for g in gemms: print(f"gemm {g['m']}x{g['k']}x{g['n']}: {g['tflops']:.0f} TFLOP/s")
for a in attn: print(f"sdpa b{a['batch']} h{a['heads']} s{a['tokens']} d{a['head_dim']} causal={a['causal']}: fwd {a['forward_tflops']:.0f}, bwd {a['backward_tflops']:.0f} TFLOP/s")
print(f"hbm copy {out['hbm_copy_bytes_per_s']/1e9:.0f} GB/s")
print(f"sustained 8192^3: first {first:.0f}, last {last:.0f} TFLOP/s (ratio {out['sustained_ratio']:.3f}); smi first {samples[0]['smi']} last {samples[-1]['smi']}")
