#!/usr/bin/env bash
# The executor's threads under ThreadSanitizer: ranks as threads of one process
# (ditwin_exec_threads_tests: every layout, ZeRO, the async checkpoint writer) and the training
# data's reader thread (ditwin_data_tests' in-process tests), built with -fsanitize=thread in
# ./build-tsan and run. Any data race fails it. Idempotent: configures once, then rebuilds what
# changed. Extra arguments go to both programs (e.g. --gtest_filter=ExecThreads.*).
# OpenMP stays at one thread a rank: libgomp is not built with TSan, and its own synchronisation
# would be reported as races (the ranks' threads are what this checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cxx=${DITWIN_SANITIZE_CXX:-g++}
targets=(ditwin_exec_threads_tests ditwin_data_tests)

if [ ! -f build-tsan/build.ninja ]; then
  echo "tsan: configuring build-tsan ($cxx, -DDITWIN_SANITIZE=thread)"
  cmake -S . -B build-tsan -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DDITWIN_SANITIZE=thread \
    -DDITWIN_WITH_CUDA=OFF -DDITWIN_WITH_GUI=OFF -DDITWIN_WITH_BENCH=OFF >build-tsan-configure.log 2>&1 ||
    { cat build-tsan-configure.log; exit 1; }
  mv build-tsan-configure.log build-tsan/configure.log
fi
echo "tsan: building ${targets[*]} in build-tsan"
cmake --build build-tsan -j"$(nproc)" --target "${targets[@]}"

export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:${TSAN_OPTIONS:-}"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
# The data tests that run in this process (the ones through `ditwin execute` start MPI ranks).
filters=("--gtest_filter=ExecThreads.*:ThreadWorld.*" "--gtest_filter=-DataExecute.*")
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  echo "tsan: running build-tsan/tests/$t ${filters[$i]} $*"
  start=$(date +%s)
  ./build-tsan/tests/"$t" --gtest_brief=1 "${filters[$i]}" "$@"
  echo "tsan: $t clean in $(( $(date +%s) - start )) s"
done
echo "tsan: no data races reported"
