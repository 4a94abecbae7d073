// `ditwin privacy PLAN.json [--report P.json]`: what DP-SGD as planned costs in privacy.
#include "cli/privacy_command.hpp"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <unistd.h>

#include "exec/privacy_audit.hpp"

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

int run_privacy(const std::string& plan_path, const std::string& report_path, const std::string& accountant) {
  Plan plan = load_plan(plan_path);
  if (!accountant.empty()) plan.training.privacy.accountant = accountant;
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
            << privacy_expected_batch(plan) << " / " << p.dataset_size
            << " = " << num(b.sampling_rate, 6) << "\n"
            << "  steps            " << b.steps << " (" << num(b.epochs, 4) << " epochs)\n"
            << "  noise multiplier " << num(b.noise_multiplier, 6)
            << (b.solved_for_target ? " (solved for target epsilon " + num(p.target_epsilon, 6) + ")" : "") << "\n"
            << "  clip norm        " << num(p.clip_norm, 6) << ", noise std " << num(b.noise_multiplier * p.clip_norm, 6)
            << " on the summed gradient\n"
            ;
  if (b.accountant == Accountant::prv) {
    std::cout << "  epsilon          " << num(b.spent.epsilon, 12) << " at delta " << num(p.delta, 6)
              << " (PRV accountant, an upper bound: discretisation error " << num(b.spent.eps_error, 3)
              << " in epsilon and " << num(b.spent.delta_error, 3) << " in delta)\n"
              << "  PRV bounds       " << num(b.spent.lower, 8) << " <= epsilon <= " << num(b.spent.epsilon, 8)
              << " (estimate " << num(b.spent.estimate, 8) << ")\n"
              << "  RDP              epsilon " << num(b.rdp.epsilon, 12) << " (" << conv << " conversion, best order "
              << num(b.rdp.best_order, 4) << ")\n";
  } else {
    std::cout << "  epsilon          " << num(b.spent.epsilon, 12) << " at delta " << num(p.delta, 6) << " (RDP, "
              << conv << " conversion, best order " << num(b.spent.best_order, 4) << ")\n"
              << "  other conversion " << (b.conversion == EpsilonConversion::improved ? "classic" : "improved")
              << ": epsilon " << num(b.spent_other_conversion.epsilon, 12) << " (order "
              << num(b.spent_other_conversion.best_order, 4) << ")\n";
  }
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
  bool first = true;
  for (std::size_t e = 0; e < n; ++e) {
    if (e % stride != 0 && e + 1 != n) continue;
    std::cout << (first ? " " : ", ") << num(b.per_epoch[e].epoch, 4) << ": " << num(b.per_epoch[e].epsilon, 5);
    first = false;
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
                        {"epsilon_rdp", b.rdp.epsilon},
                        {"epsilon_other_conversion", b.spent_other_conversion.epsilon},
                        {"slots", b.slots},
                        {"expected_batch", privacy_expected_batch(plan)},
                        {"overflow_probability_per_step", b.overflow_probability},
                        {"delta_with_overflow", b.delta_with_overflow},
                        {"accountant", to_string(b.accountant)},
                        {"accountant_method", describe(b.accountant)}};
    if (b.accountant == Accountant::prv)
      j["prv"] = {{"epsilon_upper", b.spent.epsilon}, {"epsilon_estimate", b.spent.estimate}, {"epsilon_lower", b.spent.lower},
                  {"eps_error", b.spent.eps_error}, {"delta_error", b.spent.delta_error}};
    nlohmann::json per_epoch = nlohmann::json::array();
    for (const auto& s : b.per_epoch) per_epoch.push_back({{"epoch", s.epoch}, {"epsilon", s.epsilon}});
    j["epsilon_per_epoch"] = per_epoch;
    if (std::isinf(b.spent.epsilon)) j["epsilon"] = "inf";
    write_json_file(j, report_path, 2);
  }
  return 0;
}


int run_audit(const std::string& plan_path, const std::string& report_path, const std::string& accountant,
              const exec::AuditOptions& options) {
  Plan plan = load_plan(plan_path);
  if (!accountant.empty()) plan.training.privacy.accountant = accountant;
  const bool tty = isatty(1);
  exec::AuditOptions o = options;
  long long steps = o.steps > 0 ? o.steps : plan.run.steps;
  o.on_step = [&](long long step, double loss) {
    std::string line = "audit step " + std::to_string(step + 1) + "/" + std::to_string(steps) + "  loss " + num(loss, 5);
    if (tty) std::cout << "\r" << line << "   " << std::flush;
    else std::cout << line << "\n";
  };
  std::cout << "one-run privacy audit of " << plan.name << ": " << o.canaries << " canaries, each in with probability 1/2; "
            << "training " << steps << " steps\n";
  exec::AuditResult a;
  try {
    a = exec::run_privacy_audit(plan, o);
  } catch (const InputError& e) {
    throw InputError(plan_path + ": " + e.what());
  }
  if (tty) std::cout << "\n";
  std::cout << "  canaries         " << a.canaries << " (" << a.included << " in), drawn into a step " << a.canary_draws
            << " times in all (sampling rate " << num(a.sampling_rate, 4) << ")\n"
            << "  guesses          " << a.guesses << ": " << a.correct_in << "/" << a.guessed_in << " \"in\" right, "
            << a.correct_out << "/" << a.guessed_out << " \"out\" right\n"
            << "  epsilon >=       " << num(a.epsilon_lower_bound, 6) << " at delta " << num(a.delta, 6) << " with confidence "
            << num(a.confidence, 4) << " (empirical lower bound)\n"
            << "  accountant       epsilon " << num(a.epsilon, 8) << " (" << a.accountant << ", noise multiplier "
            << num(a.noise_multiplier, 6) << ", " << a.steps << " steps)\n";
  if (a.epsilon_lower_bound > a.epsilon)
    std::cout << "  WARNING          the audit's lower bound exceeds the accountant's epsilon: the implementation leaks "
                 "more than its budget says (or the run is not the planned mechanism)\n";
  if (!report_path.empty()) {
    nlohmann::json j = {{"plan", plan.name},
                        {"method", "one-run audit, Dirac gradient canaries (Steinke, Nasr & Jagielski 2023)"},
                        {"score", "sum over steps of the released noisy gradient at the canary's coordinate"},
                        {"canaries", a.canaries},
                        {"canaries_in", a.included},
                        {"canary_draws", a.canary_draws},
                        {"guesses", a.guesses},
                        {"guessed_in", a.guessed_in},
                        {"correct_in", a.correct_in},
                        {"guessed_out", a.guessed_out},
                        {"correct_out", a.correct_out},
                        {"correct", a.correct},
                        {"confidence", a.confidence},
                        {"delta", a.delta},
                        {"epsilon_lower_bound", a.epsilon_lower_bound},
                        {"epsilon", std::isinf(a.epsilon) ? nlohmann::json("inf") : nlohmann::json(a.epsilon)},
                        {"accountant", a.accountant},
                        {"noise_multiplier", a.noise_multiplier},
                        {"clip_norm", a.clip_norm},
                        {"sampling_rate", a.sampling_rate},
                        {"steps", a.steps},
                        {"final_loss", a.final_loss},
                        {"wall_s", a.seconds}};
    write_json_file(j, report_path, 2);
  }
  return 0;
}

}  // namespace

std::function<int()> add_privacy_command(CLI::App& app) {
  struct Args {
    std::string plan, report, accountant;
    std::string audit_plan, audit_report, audit_accountant;
    exec::AuditOptions audit;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "privacy", "DP-SGD privacy budget of a plan: epsilon (RDP or PRV accountant), per epoch, or the noise for a target "
                 "epsilon; `privacy audit PLAN` measures an empirical lower bound in one training run");
  cmd->add_option("plan", args->plan, "Training plan (JSON) with a training.privacy section");
  cmd->add_option("--report", args->report, "Also write the budget as JSON");
  cmd->add_option("--accountant", args->accountant, "rdp or prv (default: the plan's training.privacy.accountant, else rdp)")
      ->check(CLI::IsMember({"rdp", "prv"}));
  auto* audit = cmd->add_subcommand(
      "audit", "One-run privacy audit (Steinke et al. 2023): train the plan once with canaries and report an empirical "
               "lower bound on epsilon beside the accountant's");
  audit->add_option("plan", args->audit_plan, "Training plan (JSON) with a training.privacy section")->required();
  audit->add_option("--report", args->audit_report, "Also write the audit as JSON");
  audit->add_option("--accountant", args->audit_accountant, "rdp or prv, for the epsilon shown beside the bound")
      ->check(CLI::IsMember({"rdp", "prv"}));
  audit->add_option("--canaries", args->audit.canaries, "Canaries (m), each included with probability 1/2 (default 1000)");
  audit->add_option("--guesses", args->audit.guesses, "Guesses (r), half \"in\" and half \"out\" (default m / 10)");
  audit->add_option("--confidence", args->audit.confidence, "Confidence of the bound (default 0.95)");
  audit->add_option("--steps", args->audit.steps, "Training steps (default run.steps)");
  audit->add_option("--seed", args->audit.seed, "Seed of the canaries (default training.seed)");
  return [=]() -> int {
    if (!cmd->parsed()) return -1;
    if (audit->parsed()) return run_audit(args->audit_plan, args->audit_report, args->audit_accountant, args->audit);
    if (args->plan.empty()) throw InputError("privacy: give a plan (ditwin privacy PLAN.json), or `ditwin privacy audit PLAN.json`");
    return run_privacy(args->plan, args->report, args->accountant);
  };
}

}  // namespace ditwin::cli
