// ditwin search: the analytic tier's time per candidate (every candidate of the default space,
// feasible or not) and the SimGrid tier's time per simulated candidate, on the shipped scenarios.
// Goal (issue 15): Llama 3 405B on 16,384 H100s, >= 20,000 candidates in <= 10 s on 2 cores and
// the top 20 through SimGrid in <= 30 s. Results: docs/performance.md.
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>

#include "search/search.hpp"

namespace {

std::string scenario(const char* name) { return std::string(DITWIN_SOURCE_DIR) + "/scenarios/" + name; }

void analytic_tier(benchmark::State& state, const char* name) {
  ditwin::search::Options o;
  ditwin::search::Search s(scenario(name), o);
  std::uint64_t considered = 0, feasible = 0;
  double seconds = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    auto t = s.analytic(0, 1, nullptr);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    considered = t.considered;
    feasible = t.feasible;
    benchmark::DoNotOptimize(t.best.data());
  }
  state.counters["candidates"] = static_cast<double>(considered);
  state.counters["feasible"] = static_cast<double>(feasible);
  state.counters["us_per_candidate"] = 1e6 * seconds / static_cast<double>(considered * state.iterations());
}
BENCHMARK_CAPTURE(analytic_tier, llama3_405b_16384, "llama3-405b-16384xh100.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(analytic_tier, mmdit_8b_1024, "mmdit-8b-1024xh100.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(analytic_tier, unified_7b_4096, "unified-7b-4096xh100.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(analytic_tier, dit_xl2_256, "default.json")->Unit(benchmark::kMillisecond);

// The SimGrid tier: the analytic tier's top 20 of Llama 3 405B, each simulated (one rank).
void simgrid_tier(benchmark::State& state) {
  ditwin::search::Options o;
  o.top = 20;
  ditwin::search::Search s(scenario("llama3-405b-16384xh100.json"), o);
  auto merged = ditwin::search::merge({s.analytic(0, 1, nullptr)}, 20);
  for (auto _ : state) benchmark::DoNotOptimize(s.simulate(merged, 0, 1, nullptr).size());
  state.counters["simulated"] = static_cast<double>(merged.best.size());
}
BENCHMARK(simgrid_tier)->Unit(benchmark::kSecond)->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
