// `ditwin privacy PLAN.json [--report P.json]`: what DP-SGD as planned costs in privacy.
#include "cli/privacy_command.hpp"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/privacy.hpp"
#include "model/report.hpp"

namespace ditwin::cli {

namespace {

std::string num(double v, int digits = 4) {
  if (std::isinf(v)) return "inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

int run_privacy(const std::string& plan_path, const std::string& report_path) {
  Plan plan = load_plan(plan_path);
  PrivacyBudget b;
  try {
    b = privacy_budget(plan);
  } catch (const InputError& e) {  // name the file, as load_plan's errors do
    throw InputError(plan_path + ": " + e.what());
  }
  const auto& p = plan.training.privacy;
  const char* conv = b.conversion == EpsilonConversion::improved ? "improved (Balle et al. 2020)" : "classic (Mironov 2017)";
  std::cout << "DP-SGD budget of " << plan.name << "\n"
            << "  sampling         " << p.sampling << ", q = "
            << (p.sampling == "poisson" ? p.expected_batch : plan.training.global_batch) << " / " << p.dataset_size
            << " = " << num(b.sampling_rate, 6) << "\n"
            << "  steps            " << b.steps << " (" << num(b.epochs, 4) << " epochs)\n"
            << "  noise multiplier " << num(b.noise_multiplier, 6)
            << (b.solved_for_target ? " (solved for target epsilon " + num(p.target_epsilon, 6) + ")" : "") << "\n"
            << "  clip norm        " << num(p.clip_norm, 6) << ", noise std " << num(b.noise_multiplier * p.clip_norm, 6)
            << " on the summed gradient\n"
            << "  epsilon          " << num(b.spent.epsilon, 12) << " at delta " << num(p.delta, 6) << " (RDP, "
            << conv << " conversion, best order " << num(b.spent.best_order, 4) << ")\n"
            << "  other conversion " << (b.conversion == EpsilonConversion::improved ? "classic" : "improved")
            << ": epsilon " << num(b.spent_other_conversion.epsilon, 12) << " (order "
            << num(b.spent_other_conversion.best_order, 4) << ")\n";
  if (p.sampling == "poisson") {
    std::cout << "  overflow         " << num(b.overflow_probability, 3) << " per step that a draw exceeds the " << b.slots
              << " slots (expected " << p.expected_batch << "); dropping the excess makes delta "
              << num(b.delta_with_overflow, 3) << "\n";
    if (b.delta_with_overflow >= 0.01)
      std::cout << "  note             that delta is no guarantee: set training.privacy.expected_batch well below "
                   "global_batch (e.g. half) so that draws fit the slots\n";
  }
  if (p.sampling == "shuffle")
    std::cout << "  note             shuffled batches are accounted as Poisson-sampled (as Opacus and TF-Privacy do);"
                 " only poisson sampling carries the formal guarantee\n";
  std::cout << "  epsilon per epoch";
  std::size_t n = b.per_epoch.size();
  std::size_t stride = n <= 12 ? 1 : (n + 9) / 10;
  for (std::size_t e = 0; e < n; ++e) {
    if (e % stride != 0 && e + 1 != n) continue;
    std::cout << (e == 0 ? " " : ", ") << (e + 1 == n && b.epochs != std::floor(b.epochs) ? num(b.epochs, 4) : std::to_string(e + 1))
              << ": " << num(b.per_epoch[e].epsilon, 5);
  }
  std::cout << "\n";
  if (!report_path.empty()) {
    nlohmann::json j = {{"plan", plan.name},
                        {"sampling", p.sampling},
                        {"sampling_rate", b.sampling_rate},
                        {"dataset_size", p.dataset_size},
                        {"steps", b.steps},
                        {"epochs", b.epochs},
                        {"noise_multiplier", b.noise_multiplier},
                        {"noise_solved_for_target", b.solved_for_target},
                        {"clip_norm", p.clip_norm},
                        {"delta", p.delta},
                        {"conversion", to_string(b.conversion)},
                        {"epsilon", b.spent.epsilon},
                        {"best_order", b.spent.best_order},
                        {"epsilon_other_conversion", b.spent_other_conversion.epsilon},
                        {"slots", b.slots},
                        {"expected_batch", p.sampling == "poisson" ? p.expected_batch : plan.training.global_batch},
                        {"overflow_probability_per_step", b.overflow_probability},
                        {"delta_with_overflow", b.delta_with_overflow},
                        {"accountant", "rdp, Poisson-subsampled Gaussian (Mironov, Talwar & Zhang 2019)"}};
    nlohmann::json per_epoch = nlohmann::json::array();
    for (const auto& s : b.per_epoch) per_epoch.push_back(s.epsilon);
    j["epsilon_per_epoch"] = per_epoch;
    if (std::isinf(b.spent.epsilon)) j["epsilon"] = "inf";
    write_json_file(j, report_path, 2);
  }
  return 0;
}

}  // namespace

std::function<int()> add_privacy_command(CLI::App& app) {
  auto args = std::make_shared<std::array<std::string, 2>>();
  auto* cmd = app.add_subcommand("privacy", "DP-SGD privacy budget of a plan: epsilon (RDP accountant), per epoch, or the noise for a target epsilon");
  cmd->add_option("plan", (*args)[0], "Training plan (JSON) with a training.privacy section")->required();
  cmd->add_option("--report", (*args)[1], "Also write the budget as JSON");
  return [=]() -> int { return cmd->parsed() ? run_privacy((*args)[0], (*args)[1]) : -1; };
}

}  // namespace ditwin::cli
