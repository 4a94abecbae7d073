#!/usr/bin/env bash
# Downloads, here (where apt works), the Debian packages that tools/device/check.sh unpacks on a
# GPU machine with no package registry: the header-only and static libraries the device build
# needs beyond nvcc, cmake, ninja and a C++ compiler. They land in tools/device/debs/ (gitignored);
# pass that folder along with the working tree (the device tool: carry ["tools/device/debs"]).
# Usage: bash tools/device/fetch-debs.sh
set -euo pipefail
cd "$(dirname "$0")"
packages=(
  libeigen3-dev       # CPU kernels (the references the GPU tests compare against)
  nlohmann-json3-dev  # plans, reports, profiles
  libgtest-dev        # the gpu tests (static libgtest + CMake config)
  libgmock-dev        # GTest's CMake config names GMock's targets too
  libssl-dev libssl3  # libcrypto: checkpoint checksums and sealed blobs (exec/)
)
mkdir -p debs
cd debs
if ! apt-get download "${packages[@]}" 2>download.err; then
  cat download.err >&2
  echo "fetch-debs: apt-get download failed; if the package lists are missing, run 'apt-get update' (as root) first" >&2
  exit 1
fi
rm -f download.err
ls -l ./*.deb
