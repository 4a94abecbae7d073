#!/usr/bin/env bash
# One GPU check of ditwin's CUDA executor, for a machine with nvcc, cmake, ninja, a C++ compiler
# and PyTorch but no package registry (and possibly none of Eigen, nlohmann-json, GoogleTest,
# SimGrid, Open MPI, CLI11). It unpacks the Debian packages that tools/device/fetch-debs.sh
# downloaded (tools/device/debs/) into a private prefix, configures the device build
# (-DDITWIN_DEVICE_BUILD=ON: model, cost models, kernels, the executor without MPI), builds the gpu
# tests, the kernel benchmark and the single-GPU training step, and then, on the GPU:
#   1. runs the gpu tests (every CUDA kernel against its CPU version and finite differences; the
#      DiT's bf16 GPU step against the fp32 CPU step where the full build is present);
#   2. benchmarks every kernel (TFLOP/s or GB/s against the card's measured peaks);
#   3. runs the DiT-B/2 training step (scenarios/dit-b2-1xh100.json) through the executor,
#      calibrates the GPU profile the simulator reads (calibrate --backend cuda's compute side) and
#      compares the cost model's prediction of the step from that profile with the measurement;
#   4. runs the same DiT-B/2 step in PyTorch (bf16 autocast, SDPA, fused AdamW);
#   5. if time is left, compute-sanitizer memcheck and racecheck on the attention and norm tests;
# and writes everything to $OUT (check.log, summary.txt, kernels.json, ditwin_dit_b2.json,
# profile.json, predicted_vs_measured.json, pytorch_dit_b2.json) within about 8 minutes.
#
# Usage: bash tools/device/check.sh [--dry-run]
#   --dry-run  everything up to launching GPU work (tools, debs, configure, build, list tests);
#              passes on a machine without a GPU. $OUT defaults to out/device here.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dry=0
for a in "$@"; do
  case "$a" in
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$root/out/device}
mkdir -p "$OUT"
: >"$OUT/check.log"
log() { echo "[check +${SECONDS}s] $*" | tee -a "$OUT/check.log"; }
fail() { log "FAILED: $*"; exit 1; }
# Runs a command with a time limit, its output into check.log (and the terminal).
run() {
  local limit=$1; shift
  log "\$ $*"
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/check.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && log "timed out after ${limit}s: $*"
  return "$rc"
}

# --- 1. tools -------------------------------------------------------------------------------
nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
[ -n "$nvcc" ] || fail "nvcc not found (PATH or /usr/local/cuda/bin)"
for t in cmake ninja c++ python3 timeout; do command -v "$t" >/dev/null || fail "$t not found"; done
log "nvcc: $("$nvcc" --version | tail -1); cmake: $(cmake --version | head -1); ninja $(ninja --version); $(c++ --version | head -1)"
if python3 -c "import torch" 2>/dev/null; then
  log "python3: torch $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
else
  [ $dry -eq 1 ] && log "python3 has no torch here (the device image has it)" || fail "python3 has no torch"
fi

# --- 2. unpack the Debian packages into a private prefix ---------------------------------------
debs=("$root"/tools/device/debs/*.deb)
[ -e "${debs[0]}" ] || fail "no packages in tools/device/debs: run 'bash tools/device/fetch-debs.sh' where apt works, and carry tools/device/debs to this machine"
prefix=${DITWIN_DEVICE_PREFIX:-${TMPDIR:-/tmp}/ditwin-device-prefix}
rm -rf "$prefix"
mkdir -p "$prefix"
for d in "${debs[@]}"; do
  if command -v dpkg >/dev/null; then
    dpkg -x "$d" "$prefix" || fail "dpkg -x $d"
  else  # a .deb is an ar archive holding data.tar.*
    (cd "$prefix" && ar p "$d" "$(ar t "$d" | grep '^data.tar')" | tar -x -a -f - 2>/dev/null ||
     ar p "$d" "$(ar t "$d" | grep '^data.tar')" | tar -xJ) || fail "cannot unpack $d (no dpkg, ar or tar)"
  fi
  log "unpacked $(basename "$d")"
done

# --- 3. configure and build the device build ------------------------------------------------------
if [ $dry -eq 0 ]; then
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: is this a GPU machine?"
  run 30 nvidia-smi
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
else
  cap=${DITWIN_CUDA_ARCH:-90}
  gpu_name="(dry run)"
fi
arch=${DITWIN_CUDA_ARCH:-$cap}
build=$root/build-device
# On a shared development machine, builds take turns (tools/locked-build.sh's lock); on a lent GPU
# machine the lock is private and free.
if command -v flock >/dev/null; then
  exec 9>/tmp/ditwin-build.lock
  flock 9
fi
run 300 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDITWIN_DEVICE_BUILD=ON -DDITWIN_WITH_GUI=OFF \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_PREFIX_PATH="$prefix/usr" ||
  fail "configure (see check.log)"
jobs=$(nproc)
run 420 cmake --build "$build" -j"$jobs" --target ditwin_cuda_tests cuda_kernels_bench cuda_dit_step || fail "build (see check.log)"
(cd "$build" && run 60 ctest -N -L gpu) || fail "listing the gpu tests"
if [ $dry -eq 1 ]; then
  log "dry run passed: tools, packages, configure (sm_$arch), build and the gpu test list are ready; stopped before GPU work"
  exit 0
fi

# --- 4. on the GPU ----------------------------------------------------------------------------
# Measured peaks (docs/measurements): H100 SXM 745 TFLOP/s bf16 GEMM, 3014 GB/s copy; H200 790, 4300.
case "$gpu_name" in
  *H200*) peak_tf=790; peak_gbps=4300 ;;
  *) peak_tf=745; peak_gbps=3014 ;;
esac
status=0
(cd "$build" && run 200 ctest -L gpu --output-on-failure --timeout 150) || { status=1; log "gpu tests FAILED"; }
run 120 "$build/bench/cuda_kernels_bench" --json "$OUT/kernels.json" --peak-tflops $peak_tf --peak-gbps $peak_gbps ||
  { status=1; log "kernel benchmark FAILED"; }
run 150 "$build/bench/cuda_dit_step" "$root/scenarios/dit-b2-1xh100.json" --steps 20 --warmup 5 \
  --report "$OUT/ditwin_dit_b2.json" --calibrate "$OUT/profile.json" --compare "$OUT/predicted_vs_measured.json" ||
  { status=1; log "ditwin DiT-B/2 step FAILED"; }
run 120 python3 "$root/tools/pytorch_dit_bench.py" --device cuda --steps 30 --warmup 5 --json "$OUT/pytorch_dit_b2.json" ||
  { status=1; log "PyTorch DiT-B/2 step FAILED"; }

# --- 5. summary against the goals ---------------------------------------------------------------
python3 - "$OUT" "$gpu_name" <<'PY' | tee "$OUT/summary.txt" | tee -a "$OUT/check.log"
import json, os, sys
out, gpu = sys.argv[1], sys.argv[2]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        print(f"{name}: missing ({e})")
        return None
print(f"ditwin CUDA check on {gpu}")
k = load("kernels.json")
if k:
    for r in k["rows"]:
        print(f"  {r['kernel']:40s} {r['shape']:30s} {r['rate']:9.1f} {r['unit']:8s} {100 * r['peak_fraction']:5.1f}% of peak")
    att = [r for r in k["rows"] if r["kernel"] == "attention fwd+bwd" and "s4096 d128" in r["shape"]]
    if att:
        print(f"goal attention fwd+bwd >= 250 TFLOP/s at s4096 d128: {att[0]['rate']:.0f} -> {'met' if att[0]['rate'] >= 250 else 'NOT met'}")
    mem = [r for r in k["rows"] if r["unit"] == "GB/s" and not r["kernel"].startswith("device copy")]
    if mem:
        worst = min(mem, key=lambda r: r["rate"])
        print(f"goal fused memory-bound kernels >= 2500 GB/s: slowest {worst['kernel']} {worst['rate']:.0f} GB/s -> "
              f"{'met' if worst['rate'] >= 2500 else 'NOT met'}")
d, p = load("ditwin_dit_b2.json"), load("pytorch_dit_b2.json")
if d and p:
    ratio = p["step_time_s"] / d["step_time_s"]
    print(f"DiT-B/2 256px batch 32 step: ditwin {1e3 * d['step_time_s']:.2f} ms, PyTorch {1e3 * p['step_time_s']:.2f} ms "
          f"({p['torch']}): ditwin at {ratio:.2f}x PyTorch's throughput -> goal >= 1.0x {'met' if ratio >= 1.0 else 'NOT met'}")
pm = load("predicted_vs_measured.json")
if pm:
    e = pm["relative_error"]
    print(f"predicted vs measured DiT-B/2 step (profile from this run): {1e3 * pm['predicted_step_s']:.2f} vs "
          f"{1e3 * pm['measured_step_s']:.2f} ms, {100 * e:+.1f}% -> goal within 10% {'met' if abs(e) <= 0.10 else 'NOT met'}")
prof = load("profile.json")
if prof:
    c = prof["measurements"]["compute"]
    print(f"profile: GEMM bf16 peak {c['peak_flops_bf16'] / 1e12:.0f} TFLOP/s, attention efficiency {c['attention_efficiency']:.3f}, "
          f"HBM copy {c['hbm_bytes_per_s'] / 1e9:.0f} GB/s, memory-bound kernels {c['memory_bytes_per_s'] / 1e9:.0f} GB/s")
PY
# --- 6. if time is left: compute-sanitizer on the kernels with shared memory and atomics ------------
# memcheck (out-of-bounds, misaligned accesses) and racecheck (shared-memory hazards) on the
# attention and LayerNorm tests: the bugs a correct-looking result can hide.
sanitizer=$(command -v compute-sanitizer || true)
[ -z "$sanitizer" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && sanitizer=/usr/local/cuda/bin/compute-sanitizer
if [ -n "$sanitizer" ] && [ "$SECONDS" -lt 330 ]; then
  run 90 "$sanitizer" --tool memcheck --error-exitcode 9 "$build/tests/ditwin_cuda_tests" \
    --gtest_filter='CudaAttention.*:CudaLayernorm.*:CudaElementwise.GatedResidual*' || { status=1; log "memcheck FAILED (or timed out)"; }
  [ "$SECONDS" -lt 420 ] && { run 90 "$sanitizer" --tool racecheck --error-exitcode 9 "$build/tests/ditwin_cuda_tests" \
    --gtest_filter='CudaAttention.*' || { status=1; log "racecheck FAILED (or timed out)"; }; }
else
  log "compute-sanitizer skipped (${sanitizer:-not found}; ${SECONDS}s used)"
fi

log "done in ${SECONDS}s; status $status; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status
