// A plan's training steps on one GPU through the executor's CUDA backend, without MPI or NCCL:
// the same scheduler, model and kernels as `ditwin execute --backend cuda` on one rank, for GPU
// machines where Open MPI is not installed (tools/device/check.sh). Prints each step and the
// median; writes the measured report (ditwin's report schema: `ditwin compare` reads it), and
// with --calibrate the device profile of `ditwin calibrate --backend cuda` on one GPU; with
// --compare FILE also the cost model's prediction of this step from that profile (one GPU, one
// compute stream: the sum of the ops' predicted times, what the step simulator gives a single
// rank) against the measurement, step and op by op.
// Usage: cuda_dit_step PLAN [--steps 12] [--warmup 3] [--report FILE] [--trace FILE] [--calibrate FILE]
//                           [--compare FILE]
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include <algorithm>
#include <cmath>
#include <map>

#include "cost_models/compute.hpp"
#include "cost_models/profile.hpp"
#include "exec/cuda/cuda_backend.hpp"
#include "exec/cuda/cuda_util.hpp"
#include "exec/cuda_exec.hpp"
#include "exec/runtime.hpp"
#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/program.hpp"
#include "model/report.hpp"

using namespace ditwin;

int main(int argc, char** argv) {
  std::string plan_path, report, trace, calibrate, compare;
  long long steps = 12;
  int warmup = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw InputError(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--steps") steps = std::stoll(next());
      else if (a == "--warmup") warmup = std::stoi(next());
      else if (a == "--report") report = next();
      else if (a == "--trace") trace = next();
      else if (a == "--calibrate") calibrate = next();
      else if (a == "--compare") compare = next();
      else if (!a.empty() && a[0] != '-' && plan_path.empty()) plan_path = a;
      else throw InputError("unknown argument " + a);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cuda_dit_step: %s\nusage: %s PLAN [--steps 12] [--warmup 3] [--report FILE] [--trace FILE] "
                   "[--calibrate FILE]\n", e.what(), argv[0]);
      return 2;
    }
  }
  if (!compare.empty() && calibrate.empty()) {
    std::fprintf(stderr, "cuda_dit_step: --compare needs --calibrate (the prediction uses the profile it measures)\n");
    return 2;
  }
  if (plan_path.empty()) {
    std::fprintf(stderr, "usage: %s PLAN [--steps 12] [--warmup 3] [--report FILE] [--trace FILE] [--calibrate FILE]\n", argv[0]);
    return 2;
  }
  try {
    Plan plan = load_plan(plan_path);
    exec::check_plan(plan, "cuda");
    if (plan.parallelism.world() != 1)
      throw InputError("parallelism.dp: cuda_dit_step runs one GPU; use ditwin execute --backend cuda for more");
    exec::cuda_util::select_device(0);
    exec::cuda_util::Streams streams;
    auto backend = exec::make_cuda_backend(plan, streams.compute, streams.comm);
    auto comm = exec::local_world();
    Program program = lower(plan);
    auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, plan.training.seed);
    exec::ExecOptions options;
    options.steps = steps;
    options.warmup_steps = warmup;
    options.peak_flops = plan.cluster.device.peak_flops(plan.training.precision);
    options.on_step = [&](long long step, double loss, double seconds) {
      std::printf("step %lld/%lld  loss %.5f  %.2f ms  %.1f samples/s\n", step + 1, steps, loss, seconds * 1e3,
                  plan.training.global_batch / seconds);
      std::fflush(stdout);
    };
    const std::string device = ditwin::kernels::cuda::device_description();
    auto result = exec::execute_plan(plan, program, *comm, *data, options, *backend);
    const auto& r = result.report;
    std::printf("measured step of %s on %s: median %.3f ms (%.1f samples/s) after %d warm-up step(s); loss %.5f -> %.5f\n",
                r.plan.c_str(), device.c_str(), r.step_time_s * 1e3, plan.training.global_batch / r.step_time_s,
                warmup, result.losses.front(), result.losses.back());
    if (!report.empty()) write_json_file(to_json(r), report);
    if (!trace.empty()) write_json_file(to_trace(r), trace, -1);
    if (!calibrate.empty()) {
      std::printf("calibrating the cuda backend on one GPU (cuBLASLt GEMMs, flash attention, memory-bound kernels)\n");
      std::fflush(stdout);
      auto compute = exec::calibrate_cuda_compute(exec::CalibrationOptions{});
      nlohmann::json communication = {{"ranks", 1}, {"latency_s", 0.0}, {"bus_bytes_per_s", compute["hbm_bytes_per_s"]},
                                      {"points", nlohmann::json::array()},
                                      {"note", "one GPU: NCCL all-reduce not measured"}};
      auto profile = exec::make_cuda_profile(compute, communication);
      cost::profile_from_json(profile, calibrate);  // the simulator must accept it
      write_json_file(profile, calibrate, 2);
      std::printf("GEMM bf16 peak %.1f TFLOP/s, attention efficiency %.3f, HBM copy %.0f GB/s, memory-bound kernels %.0f GB/s; wrote %s\n",
                  compute["peak_flops_bf16"].get<double>() / 1e12, compute["attention_efficiency"].get<double>(),
                  compute["hbm_bytes_per_s"].get<double>() / 1e9, compute["memory_bytes_per_s"].get<double>() / 1e9,
                  calibrate.c_str());
      if (!compare.empty()) {
        // One rank, one compute stream, no collectives: the predicted step is the sum of the ops.
        const auto dev = cost::profile_from_json(profile, calibrate);
        std::map<std::string, double> measured;
        for (const auto& op : r.ops) measured[op.name] = op.duration_s;
        double predicted_step = 0;
        nlohmann::json ops = nlohmann::json::array();
        for (const auto& op : program.classes.at(0).ops) {
          const double t = cost::compute_time_s(op, dev, plan.training.precision, plan.training.flash_attention);
          predicted_step += t;
          const double m = measured.count(op.name) ? measured[op.name] : 0.0;
          ops.push_back({{"name", op.name}, {"predicted_s", t}, {"measured_s", m}});
        }
        const double error = predicted_step / r.step_time_s - 1;
        std::sort(ops.begin(), ops.end(), [](const nlohmann::json& x, const nlohmann::json& y) {
          return std::fabs(x["predicted_s"].get<double>() - x["measured_s"].get<double>()) >
                 std::fabs(y["predicted_s"].get<double>() - y["measured_s"].get<double>());
        });
        std::printf("predicted step %.3f ms vs measured %.3f ms: %+.1f%% (goal: within 10%%); largest op differences:\n",
                    predicted_step * 1e3, r.step_time_s * 1e3, 100 * error);
        for (std::size_t i = 0; i < std::min<std::size_t>(8, ops.size()); ++i)
          std::printf("  %-28s predicted %8.1f us  measured %8.1f us\n", ops[i]["name"].get<std::string>().c_str(),
                      ops[i]["predicted_s"].get<double>() * 1e6, ops[i]["measured_s"].get<double>() * 1e6);
        write_json_file({{"plan", r.plan}, {"device", device}, {"predicted_step_s", predicted_step},
                         {"measured_step_s", r.step_time_s}, {"relative_error", error}, {"ops", ops}},
                        compare, 1);
      }
    }
  } catch (const InputError& e) {
    std::fprintf(stderr, "cuda_dit_step: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_dit_step: %s\n", e.what());
    return 3;
  }
  return 0;
}
