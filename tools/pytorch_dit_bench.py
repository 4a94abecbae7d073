#!/usr/bin/python3
"""Times one DiT training step in PyTorch. CPU (default): float32, forward + rectified-flow loss +
backward of one micro-batch, gradients zeroed first, no optimizer -- the step bench/dit_cpu_bench.cpp
times in ditwin. GPU (--device cuda): DiT-B/2 at 256 px, batch 32, bf16 autocast on fp32 master
weights, fused SDPA attention, forward + loss + backward + fused AdamW -- the step
`ditwin execute --backend cuda` / bench/cuda_dit_step runs on scenarios/dit-b2-1xh100.json, timed
with CUDA events. The model is tools/dit_reference.py's DiT (the parity oracle), so both time the
same network.

Usage: /usr/bin/python3 tools/pytorch_dit_bench.py [--threads 1 2] [--seconds 5]
       python3 tools/pytorch_dit_bench.py --device cuda [--steps 30] [--json FILE]
Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (docs/performance.md says why).
"""
import argparse
import json
import os
import statistics
import sys
import time

# OpenBLAS sizes its own thread pool when torch loads it, whatever torch.set_num_threads says
# later: without this a "1-thread" PyTorch run does its GEMMs on every core (measured: DiT-S/2
# 2.53 s a step with the pool, 4.01 s on one thread).
if "--threads" in sys.argv and "OPENBLAS_NUM_THREADS" not in os.environ:
    os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[sys.argv.index("--threads") + 1]

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_reference import Attention, DiT  # noqa: E402

CONFIGS = {
    # scenarios/tiny-cpu.json at its micro-batch
    "tiny_cpu_b4": dict(layers=4, hidden=128, heads=4, ffn_hidden=512, latent_channels=4, latent_size=16, patch=2,
                        num_classes=10, learn_sigma=False, frequency_embedding=256, micro_batch=4),
    # DiT-S/2 at 256 px (32x32x4 latents, 256 tokens), as ditwin's preset builds it
    "dit_s2_256px_b8": dict(layers=12, hidden=384, heads=6, ffn_hidden=1536, latent_channels=4, latent_size=32,
                            patch=2, num_classes=1000, learn_sigma=True, frequency_embedding=256, micro_batch=8),
}


def bench(cfg, seconds):
    torch.manual_seed(0)
    model = DiT(cfg).float()
    B, C, S = cfg["micro_batch"], cfg["latent_channels"], cfg["latent_size"]
    x0, eps = torch.randn(B, C, S, S), torch.randn(B, C, S, S)
    t, y = torch.sigmoid(torch.randn(B)), torch.randint(0, cfg["num_classes"], (B,))

    def step():
        model.zero_grad(set_to_none=False)
        tb = t.view(B, 1, 1, 1)
        v_hat = model((1 - tb) * x0 + tb * eps, t, y)
        loss = ((v_hat[:, :C] - (eps - x0)) ** 2).mean()
        loss.backward()

    for _ in range(3):
        step()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


# DiT-B/2 at 256 px as ditwin's preset and scenarios/dit-b2-1xh100.json build it.
GPU_CONFIG = dict(layers=12, hidden=768, heads=12, ffn_hidden=3072, latent_channels=4, latent_size=32, patch=2,
                  num_classes=1000, learn_sigma=True, frequency_embedding=256, micro_batch=32)


def bench_cuda(steps, warmup):
    cfg = GPU_CONFIG
    if not torch.cuda.is_available():
        sys.exit("pytorch_dit_bench: --device cuda needs a CUDA build of PyTorch and a GPU")
    if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        sys.exit(f"pytorch_dit_bench: torch {torch.__version__} has no scaled_dot_product_attention (needs 2.0 or later)")
    torch.manual_seed(0)
    Attention.use_sdpa = True
    dev = torch.device("cuda")
    model = DiT(cfg).float().to(dev)  # fp32 master weights (and the fp32 positional table)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    B, C, S = cfg["micro_batch"], cfg["latent_channels"], cfg["latent_size"]
    x0, eps = torch.randn(B, C, S, S, device=dev), torch.randn(B, C, S, S, device=dev)
    t, y = torch.sigmoid(torch.randn(B, device=dev)), torch.randint(0, cfg["num_classes"], (B,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        tb = t.view(B, 1, 1, 1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            v_hat = model((1 - tb) * x0 + tb * eps, t, y)
        loss = ((v_hat[:, :C].float() - (eps - x0)) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times, losses = [], []
    for _ in range(steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        loss = step()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
        losses.append(loss.item())
    median = statistics.median(times)
    return {"framework": "pytorch", "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
            "model": "DiT-B/2", "image_size": 256, "batch": B, "precision": "bf16 autocast, fp32 master weights",
            "attention": "F.scaled_dot_product_attention", "optimizer": "AdamW(fused=True)",
            "parameters": sum(p.numel() for p in model.parameters()), "steps": steps, "warmup": warmup,
            "step_time_s": median, "samples_per_s": B / median, "step_times_s": times, "losses": losses}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--steps", type=int, default=30, help="timed steps on the GPU")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps on the GPU")
    ap.add_argument("--json", help="write the GPU result here")
    args = ap.parse_args()
    if args.device == "cuda":
        r = bench_cuda(args.steps, args.warmup)
        print(f"pytorch {r['torch']} on {r['device']}: DiT-B/2 256px batch {r['batch']} bf16 step "
              f"{1e3 * r['step_time_s']:.2f} ms (median of {r['steps']}), {r['samples_per_s']:.1f} samples/s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(r, f, indent=1)
        return
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, 'cpu') else ''}")
    for name, cfg in CONFIGS.items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            median, n = bench(cfg, args.seconds)
            print(f"{name:18s} threads={threads}  {1e3 * median:9.2f} ms/step (median of {n})  "
                  f"{cfg['micro_batch'] / median:8.1f} samples/s")


if __name__ == "__main__":
    main()
