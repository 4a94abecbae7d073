// How fast the step simulator is: the 16,384-GPU Llama-3-405B step, the scaling curve from 256
// to 16,384 GPUs, and a 100-plan sweep at 1,024 GPUs. Each simulation runs in a child process,
// so wall time (UseRealTime) is the figure; the child's peak RSS is reported as a counter.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <string>

#include "model/plan.hpp"
#include "model/program.hpp"
#include "sim/step_sim.hpp"

namespace {

std::string scenario(const std::string& name) { return std::string(DITWIN_SOURCE_DIR) + "/scenarios/" + name; }

double children_peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_CHILDREN, &u);
  return u.ru_maxrss * 1024.0;
}

// Lowering and simulation together: what `ditwin simulate` does apart from reading and writing.
void simulate(const ditwin::Plan& plan, benchmark::State& state) {
  auto profile = ditwin::cost::profile_for(plan.cluster);
  auto program = ditwin::lower(plan);
  auto report = ditwin::sim::simulate_step(plan, program, profile);
  state.counters["ops"] = static_cast<double>(program.op_count());
  state.counters["predicted_step_ms"] = 1e3 * report.step_time_s;
  state.counters["mfu"] = report.mfu;
}

void BM_Llama405B_16384Gpus(benchmark::State& state) {
  auto plan = ditwin::load_plan(scenario("llama3-405b-16384xh100.json"));
  for (auto _ : state) simulate(plan, state);
  state.counters["child_peak_rss_bytes"] = children_peak_rss_bytes();
}
BENCHMARK(BM_Llama405B_16384Gpus)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

// The 405B layout (TP8 PP16) with DP from 2 to 128: 256 to 16,384 GPUs, 16 sequences per DP rank.
void BM_ScalingGpus(benchmark::State& state) {
  auto doc = ditwin::read_json_file(scenario("llama3-405b-16384xh100.json"));
  long long dp = state.range(0) / 128;
  doc["parallelism"]["dp"] = dp;
  doc["training"]["global_batch"] = 16 * dp;
  doc["cluster"]["nodes"] = state.range(0) / 8;
  auto plan = ditwin::parse_plan(doc);
  for (auto _ : state) simulate(plan, state);
  state.counters["gpus"] = static_cast<double>(state.range(0));
}
BENCHMARK(BM_ScalingGpus)->Arg(256)->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);

// 100 layouts of Llama-3-70B on 1,024 H100s (TP x PP x micro-batch x ZeRO x recompute).
void BM_Sweep100PlansAt1024Gpus(benchmark::State& state) {
  std::vector<ditwin::Plan> plans;
  for (int tp : {1, 2, 4, 8})
    for (int pp : {1, 2, 4, 8, 16})
      for (int mb : {1, 2})
        for (int z : {0, 1})
          for (const char* rc : {"selective", "full"}) {
            if (plans.size() == 100) break;
            nlohmann::json j = {
                {"name", "sweep"},
                {"model", {{"preset", "Llama-3-70B"}, {"seq_len", 4096}}},
                {"training", {{"global_batch", 1024}, {"micro_batch", mb}, {"recompute", rc}}},
                {"parallelism", {{"dp", 1024 / (tp * pp)}, {"tp", tp}, {"pp", pp}, {"zero", z}, {"sequence_parallel", tp > 1}}},
                {"cluster", {{"device", "H100-SXM"}, {"nodes", 128}, {"devices_per_node", 8}}}};
            try {
              plans.push_back(ditwin::parse_plan(j));
            } catch (const std::exception&) {
              // layouts the plan rules refuse (batch not divisible) are skipped
            }
          }
  for (auto _ : state)
    for (const auto& plan : plans) simulate(plan, state);
  state.counters["plans"] = static_cast<double>(plans.size());
  state.counters["seconds_per_plan"] =
      benchmark::Counter(static_cast<double>(plans.size()), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Sweep100PlansAt1024Gpus)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
