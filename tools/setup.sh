#!/usr/bin/env bash
# Installs every Debian 12 package ditwin needs to build, test and run (as root), and HTA (PyPI)
# into .venv-hta for the trace tests. Idempotent: when everything is already there it checks and
# returns in about a second.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git python3 python3-venv bc
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
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "setup: done" >&2
fi

# Holistic Trace Analysis (PyPI) for the trace tests, in a virtual environment of its own (Debian's
# Python refuses pip installs into the system), pinned to the version the tests were written for.
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv-hta"
if ! "$venv/bin/python" -c "import hta" 2>/dev/null; then
  echo "setup: installing HolisticTraceAnalysis into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "HolisticTraceAnalysis==0.5.0" >&2
fi
