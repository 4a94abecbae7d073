#!/usr/bin/env bash
# Installs every Debian 12 package ditwin needs to build, test and run (as root). Idempotent:
# when everything is already there it checks and returns in well under a second.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git python3 bc
  libsimgrid-dev            # simulation engine (SimGrid 3.32, S4U)
  nlohmann-json3-dev        # plan, report and trace JSON
  libeigen3-dev             # CPU linear algebra
  libopenblas-dev           # CPU GEMMs (cblas_sgemm; Eigen when absent)
  libopenmpi-dev openmpi-bin  # ranks and CPU collectives
  libcli11-dev              # command line
  libgtest-dev libgmock-dev libbenchmark-dev  # tests and benchmarks
  libssl-dev                # SHA-256 / encryption for checkpoints
  qt6-base-dev              # the optional GUI
  python3-torch libopenblas0-pthread python3-numpy  # the PyTorch oracle for CPU parity tests
  # tools/fuzz.sh and tools/sanitize.sh: Clang; libclang-rt-14-dev holds libFuzzer and Clang's
  # sanitizer runtimes (only recommended by clang, so --no-install-recommends leaves it out);
  # libomp-dev is Clang's OpenMP (the kernels need it to configure); llvm has llvm-symbolizer,
  # which turns sanitizer stacks into file:line.
  clang libclang-rt-14-dev libomp-dev llvm
)
if [ "${DITWIN_NO_GUI:-0}" = 1 ]; then
  packages=("${packages[@]/qt6-base-dev}")
fi

missing=()
for p in "${packages[@]}"; do
  [ -n "$p" ] || continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
