// The one-run privacy audit's driver: canaries in, one training run, scores, guesses, bound.
#include "exec/privacy_audit.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <numeric>
#include <thread>
#include <vector>

#include "exec/comm/communicator.hpp"
#include "exec/data/data_source.hpp"
#include "exec/model/rng.hpp"
#include "exec/runtime.hpp"
#include "model/errors.hpp"
#include "model/program.hpp"
#include "model/privacy.hpp"
#include "model/privacy_audit.hpp"

namespace ditwin::exec {

AuditResult run_privacy_audit(const Plan& plan_in, const AuditOptions& o) {
  const auto& p = plan_in.training.privacy;
  if (!p.enabled)
    throw InputError("privacy audit: the plan trains without DP-SGD (training.privacy); there is no guarantee to audit");
  if (o.canaries < 2) throw InputError("--canaries: need at least 2, got " + std::to_string(o.canaries));
  long long guesses = o.guesses > 0 ? o.guesses : std::max<long long>(2, o.canaries / 10);
  if (guesses > o.canaries)
    throw InputError("--guesses: " + std::to_string(guesses) + " is more than the " + std::to_string(o.canaries) + " canaries");
  if (!(o.confidence > 0 && o.confidence < 1))
    throw InputError("--confidence: must be in (0, 1), got " + std::to_string(o.confidence));
  if (o.steps < 0) throw InputError("--steps: must be >= 1");
  Plan plan = plan_in;
  if (o.steps > 0) plan.run.steps = o.steps;
  check_plan(plan, "cpu");
  Program program = lower(plan);
  const int ranks = static_cast<int>(program.world());

  // The canaries: membership by fair coins from the audit's own stream.
  Canaries canaries;
  std::uint64_t seed = o.seed != 0 ? o.seed : static_cast<std::uint64_t>(plan.training.seed);
  canaries.key = Rng({seed, 0x6175646974ULL}).next();  // "audit"
  Rng coin({canaries.key, 0x636f696eULL});               // "coin"
  canaries.included.resize(static_cast<std::size_t>(o.canaries));
  for (auto& in : canaries.included) in = coin.uniform() < 0.5 ? 1 : 0;

  ExecOptions options;
  options.steps = plan.run.steps;
  options.warmup_steps = 0;
  options.canaries = &canaries;
  if (o.on_step) options.on_step = [&](long long step, double loss, double) { o.on_step(step, loss); };
  auto world = thread_world(ranks);
  std::vector<std::exception_ptr> errors(world.size());
  ExecResult result;
  auto t0 = std::chrono::steady_clock::now();
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] {
        try {
          auto data = make_data_source(plan);
          ExecOptions mine = options;
          if (r != 0) mine.on_step = nullptr;
          ExecResult res = execute_plan(plan, program, *world[static_cast<std::size_t>(r)], *data, mine);
          if (r == 0) result = std::move(res);
        } catch (...) {
          errors[static_cast<std::size_t>(r)] = std::current_exception();
        }
      });
    for (auto& t : threads) t.join();
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  AuditResult a;
  a.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (result.canary_scores.size() != canaries.included.size())
    throw std::logic_error("privacy audit: the run returned " + std::to_string(result.canary_scores.size()) + " scores for " +
                           std::to_string(canaries.included.size()) + " canaries");

  // Guesses: the highest half of r scores "in", the lowest half "out"; ties by canary index.
  std::vector<std::size_t> order(canaries.included.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t x, std::size_t y) { return result.canary_scores[x] > result.canary_scores[y]; });
  a.guessed_in = guesses / 2;
  a.guessed_out = guesses - a.guessed_in;
  for (long long k = 0; k < a.guessed_in; ++k) a.correct_in += canaries.included[order[static_cast<std::size_t>(k)]] ? 1 : 0;
  for (long long k = 0; k < a.guessed_out; ++k)
    a.correct_out += canaries.included[order[order.size() - 1 - static_cast<std::size_t>(k)]] ? 0 : 1;
  a.canaries = o.canaries;
  a.included = std::count(canaries.included.begin(), canaries.included.end(), 1);
  a.guesses = guesses;
  a.correct = a.correct_in + a.correct_out;
  a.steps = plan.run.steps;
  a.canary_draws = result.canary_draws;
  a.confidence = o.confidence;
  a.delta = p.delta;
  a.epsilon_lower_bound = audit_epsilon_lower_bound(a.canaries, a.guesses, a.correct, p.delta, 1 - o.confidence);
  a.noise_multiplier = resolved_noise_multiplier(plan);
  a.clip_norm = p.clip_norm;
  a.sampling_rate = privacy_sampling_rate(plan);
  Accountant acc = accountant_of(p);
  a.accountant = to_string(acc);
  a.epsilon = privacy_spent(acc, conversion_of(p), a.sampling_rate, a.noise_multiplier, static_cast<double>(a.steps), p.delta).epsilon;
  a.final_loss = result.losses.empty() ? 0 : result.losses.back();
  return a;
}

}  // namespace ditwin::exec
