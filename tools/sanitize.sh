#!/usr/bin/env bash
# The test programs that need no MPI launch (ditwin_tests: plans, lowering, simulation, long
# runs; ditwin_exec_tests: kernels, DiT training, PyTorch parity, privacy, crypto; the quick part
# of ditwin_search_tests: spaces, enumeration, ranks, refusals, the best plan) built with
# AddressSanitizer + UndefinedBehaviorSanitizer in ./build-asan and run. Any leak, bad access or
# undefined behaviour fails it. Idempotent: configures once, then rebuilds what changed.
#   bash tools/sanitize.sh                     # everything in both programs
#   bash tools/sanitize.sh --gtest_filter=Ft*  # extra arguments go to both programs
# DITWIN_SANITIZE_CXX picks the compiler (default g++, the compiler of the ordinary build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cxx=${DITWIN_SANITIZE_CXX:-g++}
targets=(ditwin_tests ditwin_exec_tests)
# ditwin search's readers and driver too (the SimGrid-heavy accuracy tests stay in the plain suite).
search_filter="Search.Spearman*:Search.Enumeration*:Search.Bad*:Search.NothingFits*:Search.RanksMerge*:Search.BestPlan*:Search.Goodput*"

if [ ! -f build-asan/build.ninja ]; then
  echo "sanitize: configuring build-asan ($cxx, -DDITWIN_SANITIZE=address,undefined)"
  # -O1 -g1: line numbers in the reports, and the kernels' own -O3 still applies; no -DNDEBUG,
  # so assert()s are checked too.
  cmake -S . -B build-asan -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DDITWIN_SANITIZE=address,undefined \
    -DDITWIN_WITH_CUDA=OFF -DDITWIN_WITH_GUI=OFF -DDITWIN_WITH_BENCH=OFF >build-asan-configure.log 2>&1 ||
    { cat build-asan-configure.log; exit 1; }
  mv build-asan-configure.log build-asan/configure.log
fi
echo "sanitize: building ${targets[*]} in build-asan"
cmake --build build-asan -j"$(nproc)" --target "${targets[@]}" ditwin_search_tests

# detect_leaks: a leak is a failure (SimGrid and Open MPI leak nothing at exit here, so there is
# no suppression list). UBSan stops at the first report (halt_on_error) with its stack.
# Not detect_stack_use_after_return: SimGrid switches its actors' stacks with its own context
# code, which ASan's fake stacks cannot follow (false reports in the simulation tests). For the
# same reason each simulation prints "ASan is ignoring requested __asan_handle_no_return": harmless.
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
for t in "${targets[@]}"; do
  echo "sanitize: running build-asan/tests/$t $*"
  start=$(date +%s)
  ./build-asan/tests/"$t" --gtest_brief=1 "$@"
  echo "sanitize: $t clean in $(( $(date +%s) - start )) s"
done
echo "sanitize: running build-asan/tests/ditwin_search_tests --gtest_filter=$search_filter"
start=$(date +%s)
./build-asan/tests/ditwin_search_tests --gtest_brief=1 --gtest_filter="$search_filter"
echo "sanitize: ditwin_search_tests clean in $(( $(date +%s) - start )) s"
echo "sanitize: no sanitizer reports"
