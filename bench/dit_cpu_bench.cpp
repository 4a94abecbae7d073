// One training step of the executor's model on the CPU: forward + backward of one micro-batch
// (gradients zeroed first, the optimizer not included), run op by op in the Program's order for
// tiny-cpu's DiT (micro-batch 4), DiT-S/2 at 256 px (micro-batch 8), and the tiny MMDiT and
// unified scenarios (micro-batch 4), on 1 and 2 threads.
// tools/pytorch_dit_bench.py times the same step in PyTorch; docs/performance.md has both.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "exec/model/model.hpp"
#include "kernels/threads.hpp"
#include "model/plan.hpp"
#include "model/program.hpp"

namespace {
using namespace ditwin;

nlohmann::json one_micro_batch(const std::string& scenario) {
  auto j = read_json_file(std::string(DITWIN_SOURCE_DIR) + "/scenarios/" + scenario);
  j["training"]["global_batch"] = j["training"]["micro_batch"];
  j["parallelism"] = {{"dp", 1}};
  j["cluster"]["devices_per_node"] = 1;
  return j;
}
nlohmann::json tiny_cpu() { return one_micro_batch("tiny-cpu.json"); }
nlohmann::json tiny_mmdit() { return one_micro_batch("tiny-mmdit-cpu.json"); }
nlohmann::json tiny_unified() { return one_micro_batch("tiny-unified-cpu.json"); }

nlohmann::json dit_s2() {
  return nlohmann::json::parse(R"({
    "name": "dit-s2-cpu",
    "model": {"preset": "DiT-S/2", "image_size": 256, "latent_channels": 4, "num_classes": 1000},
    "training": {"global_batch": 8, "micro_batch": 8, "precision": "fp32",
                 "optimizer": {"kind": "adamw", "lr": 1e-4},
                 "objective": {"kind": "rectified_flow", "timesteps": {"kind": "logit_normal", "m": 0.0, "s": 1.0}}},
    "parallelism": {"dp": 1},
    "cluster": {"device": "cpu", "nodes": 1, "devices_per_node": 1},
    "run": {"steps": 1}
  })");
}

void BM_DitTrainingStep(benchmark::State& state, nlohmann::json (*make_plan)()) {
  kernels::set_num_threads(static_cast<int>(state.range(0)));
  const Plan plan = parse_plan(make_plan());
  const Program program = lower(plan);
  const int b = static_cast<int>(plan.training.micro_batch);
  std::unique_ptr<exec::Model> model = exec::make_model(plan);
  exec::Model& dit = *model;
  std::vector<float> params(dit.parameter_count()), grads(params.size());
  dit.init_parameters(params.data(), 1);
  for (auto& p : params) p += 1e-3f;  // adaLN-Zero aside, the work is the same; keep values generic
  for (const auto& g : dit.groups()) dit.bind(g.name, params.data() + g.offset, grads.data() + g.offset);
  auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 1);
  const exec::Batch batch = data->batch(0, 0, 0, b);
  std::vector<const Op*> ops;
  for (const Op& op : program.class_of(0).ops)
    if (op.kind == OpKind::compute && (op.phase == Phase::forward || op.phase == Phase::backward)) ops.push_back(&op);
  for (auto _ : state) {
    std::fill(grads.begin(), grads.end(), 0.0f);
    dit.set_batch(0, batch);
    for (const Op* op : ops) dit.run(op->part, op->layer, op->phase, op->microbatch);
    benchmark::DoNotOptimize(grads.data());
  }
  state.SetItemsProcessed(state.iterations() * b);
  state.counters["params"] = static_cast<double>(params.size());
  state.counters["loss"] = dit.loss(0);
  state.SetLabel(std::string(DITWIN_BENCH_FLAGS) + ", " + std::to_string(kernels::num_threads()) + " threads");
}

BENCHMARK_CAPTURE(BM_DitTrainingStep, tiny_cpu_b4, tiny_cpu)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_DitTrainingStep, tiny_mmdit_b4, tiny_mmdit)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_DitTrainingStep, tiny_unified_b4, tiny_unified)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_DitTrainingStep, dit_s2_256px_b8, dit_s2)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);

}  // namespace

int main(int argc, char** argv) {
  ditwin::kernels::restart_with_passive_openmp(argv);  // as the ditwin CLI runs (kernels/threads.hpp)
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
