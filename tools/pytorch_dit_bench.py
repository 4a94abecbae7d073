#!/usr/bin/python3
"""Times one DiT training step in PyTorch (float32, CPU): forward + rectified-flow loss + backward of
one micro-batch, gradients zeroed first, no optimizer -- the step bench/dit_cpu_bench.cpp times in
ditwin. The model is tools/dit_reference.py's DiT (the parity oracle), so both time the same network.

Usage: /usr/bin/python3 tools/pytorch_dit_bench.py [--threads 1 2] [--seconds 5]
Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (docs/performance.md says why).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_reference import DiT  # noqa: E402

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, 'cpu') else ''}")
    for name, cfg in CONFIGS.items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            median, n = bench(cfg, args.seconds)
            print(f"{name:18s} threads={threads}  {1e3 * median:9.2f} ms/step (median of {n})  "
                  f"{cfg['micro_batch'] / median:8.1f} samples/s")


if __name__ == "__main__":
    main()
