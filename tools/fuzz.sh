#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with Clang, ASan and UBSan in ./build-fuzz, generates their
# seed corpora (tools/fuzz_seeds.py), and runs each for SECONDS_PER_TARGET (default 60) from a
# fixed seed. Fails when any target finds a crash, a leak, a timeout or undefined behaviour; the
# input is then in build-fuzz/findings/<target>/ (replay: build-fuzz/fuzz/<target> FILE).
#   bash tools/fuzz.sh                 # 60 s per target
#   bash tools/fuzz.sh 3600            # the long run
#   bash tools/fuzz.sh 20 fuzz_plan    # some targets only
# Idempotent: configures once, rebuilds what changed, starts each run from fresh seeds. The seeds
# need the ditwin program: build/cli/ditwin (tools/build.sh builds it when missing) or $DITWIN_BINARY.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
all_targets=(fuzz_plan fuzz_profile fuzz_run_times fuzz_checkpoint fuzz_npy)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi
bash tools/setup.sh

if [ ! -f build-fuzz/build.ninja ]; then
  echo "fuzz: configuring build-fuzz (clang++, -DDITWIN_FUZZ=ON: libFuzzer + address,undefined)"
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DDITWIN_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DDITWIN_WITH_TESTS=OFF -DDITWIN_WITH_CUDA=OFF -DDITWIN_WITH_GUI=OFF -DDITWIN_WITH_BENCH=OFF \
    >build-fuzz-configure.log 2>&1 || { cat build-fuzz-configure.log; exit 1; }
  mv build-fuzz-configure.log build-fuzz/configure.log
fi
echo "fuzz: building ${targets[*]} in build-fuzz"
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"

ditwin=${DITWIN_BINARY:-build/cli/ditwin}
if [ ! -x "$ditwin" ]; then
  echo "fuzz: $ditwin missing (it writes the report and trace seeds); building it"
  bash tools/build.sh
fi
python3 tools/fuzz_seeds.py build-fuzz/seeds "$ditwin"

export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
failed=()
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t findings=build-fuzz/findings/$t log=build-fuzz/$t.log
  rm -rf "$corpus" && mkdir -p "$corpus" "$findings"
  echo "fuzz: $t for ${seconds} s (-seed=1; corpus $corpus, findings $findings/, log $log)"
  # -timeout: one input taking 10 s is a finding (a hang); -rss_limit_mb: so is 2 GB of memory.
  if ./build-fuzz/fuzz/"$t" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" "build-fuzz/seeds/$t" >"$log" 2>&1; then
    echo "fuzz: $t clean: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions," \
         "$(ls "$corpus" | wc -l) corpus inputs"
  else
    echo "fuzz: $t FOUND A PROBLEM (input in $findings/):"
    grep -E 'ERROR|runtime error|#[0-9]+ 0x|SUMMARY|Test unit written' "$log" | head -25
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}"
  exit 1
fi
echo "fuzz: ${targets[*]}: no findings in ${seconds} s each"
