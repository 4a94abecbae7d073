// Multi-stage plans at the command line: the stage summaries of `ditwin plan` and the campaign of
// `ditwin simulate --mode run` (cli/campaign.hpp).
#include "cli/campaign.hpp"

#include <cstdio>
#include <iostream>

#include "cost_models/profile.hpp"
#include "model/errors.hpp"
#include "model/plan_summary.hpp"
#include "model/program.hpp"
#include "model/report.hpp"
#include "sim/campaign.hpp"
#include "sim/step_sim.hpp"

namespace ditwin::cli {

namespace {

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// "256 px, 256 tokens/sample" or "8192 tokens/sample"
std::string resolution(const Plan& p) {
  std::string s = p.model.is_diffusion() || p.model.family == ModelFamily::unified
                      ? std::to_string(p.model.image_size) + " px, "
                      : "";
  return s + std::to_string(p.model.tokens_per_sample()) + " tokens/sample";
}

}  // namespace

nlohmann::json print_stage_summaries(const Plan& plan, double memory_budget_bytes) {
  nlohmann::json out = nlohmann::json::array();
  std::cout << "\ncampaign: " << plan.stages.size() << " stages\n";
  long long step0 = 0;
  for (std::size_t i = 0; i < plan.stages.size(); ++i) {
    const Plan& s = plan.stages[i];
    Program program = lower(s, memory_budget_bytes);
    nlohmann::json j = plan_summary(s, program);
    const auto& mem = j["memory"];
    double tokens = static_cast<double>(s.run.steps) * static_cast<double>(s.tokens_per_step());
    std::cout << "  stage " << i + 1 << " \"" << s.stage_name << "\": " << resolution(s) << ", "
              << human_count(j["parameters"]["total"].get<double>()) << " parameters\n"
              << "    layout   " << describe_layout(s) << (i > 0 && layout_changes(plan.stages[i - 1], s) ? " (resharded from the previous stage)" : "")
              << "\n    batch    " << s.training.global_batch << " samples (micro-batch " << s.training.micro_batch
              << "), lr " << s.training.optimizer.lr << ", recompute " << to_string(s.training.recompute) << "\n"
              << "    steps    " << s.run.steps << " (" << step0 << " -> " << step0 + s.run.steps << "), "
              << human_count(tokens) << " tokens\n"
              << "    memory   " << human_bytes(mem["peak_bytes"].get<double>()) << " of "
              << human_bytes(mem["capacity_bytes"].get<double>()) << " per GPU"
              << (mem["fits"].get<bool>() ? " (fits)" : " (DOES NOT FIT)") << "\n";
    for (const auto& w : j["warnings"]) std::cout << "    warning: " << w.get<std::string>() << "\n";
    j["stage"] = {{"index", i}, {"name", s.stage_name}, {"steps", s.run.steps}, {"first_step", step0},
                  {"tokens", tokens}};
    step0 += s.run.steps;
    out.push_back(std::move(j));
  }
  return out;
}

int run_campaign_simulation(const Plan& plan, const std::string& profile_path, const std::string& report_path,
                            int trials, std::uint64_t seed, double memory_budget_bytes) {
  for (std::size_t i = 0; i < plan.stages.size(); ++i)
    if (!plan.stages[i].reliability.inject.empty())
      throw InputError("stages[" + std::to_string(i) + "].reliability.inject: a campaign simulation samples failures; "
                       "injected faults are played by --mode run on a one-stage plan");
  std::vector<double> step_time_s, mfu;
  const std::size_t n = plan.stages.size();
  for (std::size_t i = 0; i < n; ++i) {
    const Plan& s = plan.stages[i];
    std::cout << "stage " << i + 1 << "/" << n << " \"" << s.stage_name << "\": simulating one step ("
              << describe_layout(s) << ")\n" << std::flush;
    cost::DeviceProfile profile = profile_path.empty() ? cost::profile_for(s.cluster) : cost::load_profile(profile_path);
    Program program = lower(s, memory_budget_bytes);
    StepReport step = sim::simulate_step(s, program, profile);
    if (!step.memory.value("fits", true))
      std::cout << "  warning: stage " << i + 1 << " does not fit in device memory ("
                << human_bytes(step.memory["peak_bytes"].get<double>()) << " per GPU)\n";
    step_time_s.push_back(step.step_time_s);
    mfu.push_back(step.mfu);
    std::cout << "  step " << fixed(step.step_time_s, 3) << " s, MFU " << fixed(100 * step.mfu, 1) << "%\n" << std::flush;
  }
  auto stages = sim::campaign_stages(plan, step_time_s, mfu);
  sim::LongRunOptions options;
  options.trials = trials;
  options.seed = seed;
  auto result = sim::simulate_campaign(stages, options, [&](std::size_t i) {
    const auto& s = stages[i];
    std::cout << "stage " << i + 1 << "/" << n << " \"" << s.name << "\": playing " << trials << " trials of "
              << s.steps << " steps (" << fixed(s.inputs.work_s / 3600, 1) << " h of work each)\n" << std::flush;
  });
  nlohmann::json report = sim::to_json(result);
  std::cout << "\ncampaign " << plan.name << ": " << n << " stages on " << plan.cluster.gpus() << " x "
            << plan.cluster.device.name << ", " << trials << " trials, seed " << seed << "\n";
  std::printf("  %-3s %-16s %-32s %10s %10s %8s %12s %10s\n", "#", "stage", "layout", "steps", "wall days", "ETTR",
              "GPU-hours", "reshard h");
  for (std::size_t i = 0; i < n; ++i) {
    const auto& s = report["stages"][i];
    std::printf("  %-3zu %-16s %-32s %10lld %10.3f %7.2f%% %12.0f %10.2f\n", i + 1,
                s["name"].get<std::string>().substr(0, 16).c_str(), s["layout"].get<std::string>().c_str(),
                s["steps"].get<long long>(), s["wall_days"].get<double>(), 100 * s["ettr"].get<double>(),
                s["gpu_hours"].get<double>(), s["transition"]["total_s"].get<double>() / 3600);
  }
  std::printf("  %-3s %-16s %-32s %10s %10.3f %7.2f%% %12.0f %10.2f\n", "", "total", "", "",
              report["wall_days"].get<double>(), 100 * report["ettr"].get<double>(), report["gpu_hours"].get<double>(),
              report["transition_s"].get<double>() / 3600);
  std::cout << "  goodput          " << human_count(report["goodput"]["tokens_per_s"].get<double>()) << " tokens/s over "
            << human_count(report["tokens"].get<double>()) << " tokens\n  lost (h)        ";
  for (const auto& [k, v] : report["lost_hours_by_cause"].items()) std::cout << " " << k << " " << fixed(v.get<double>(), 3);
  std::cout << "\n" << std::flush;
  if (!report_path.empty()) write_json_file(report, report_path);
  return 0;
}

}  // namespace ditwin::cli
