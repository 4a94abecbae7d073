// Long-run simulator speed: 1,000 trials of a 54-day run on 2,048 nodes (the llama3 preset,
// 8-GPU nodes, async checkpoints every 30 min), played by 2 worker processes. Target: <= 10 s.
#include <benchmark/benchmark.h>

#include "sim/longrun.hpp"

namespace {

void BM_LongRun54Days2048Nodes(benchmark::State& state) {
  ditwin::sim::LongRunInputs in;
  in.plan = "bench";
  in.nodes = 2048;
  in.step_time_s = 8;
  in.failures = ditwin::cost::failure_preset("llama3", 8);
  in.interval_s = 1800;
  in.stall_s = 0.02;
  in.persist_s = 1.2;
  in.load_s = 0.6;
  in.duration_s = 54 * 86400.0;
  ditwin::sim::LongRunOptions o;
  o.trials = static_cast<int>(state.range(0));
  o.workers = 2;
  double interruptions = 0;
  for (auto _ : state) {
    auto r = ditwin::sim::simulate_longrun(in, o);
    for (const auto& t : r.trials) interruptions += t.failures + t.planned;
    benchmark::DoNotOptimize(r);
  }
  state.counters["trials"] = static_cast<double>(o.trials);
  state.counters["interruptions/s"] = benchmark::Counter(interruptions, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LongRun54Days2048Nodes)->Arg(1000)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
