// A one-run privacy audit of a DP-SGD plan (Steinke, Nasr & Jagielski 2023): m Dirac canaries,
// each included with probability 1/2 (exec/runtime.hpp, Canaries), one real training run of the
// plan with its ranks as threads of this process, a membership score per canary (the released
// noisy gradient at its coordinate, summed over the steps), guesses for the r/2 highest ("in")
// and the r/2 lowest ("out"), and from the right guesses an empirical lower bound on epsilon at
// the plan's delta (model/privacy_audit.hpp) beside the accountant's epsilon.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "model/plan.hpp"

namespace ditwin::exec {

struct AuditOptions {
  long long canaries = 1000;
  long long guesses = 0;      // r, split evenly between "in" and "out"; 0 = canaries / 10
  double confidence = 0.95;   // 1 - beta
  long long steps = 0;        // 0 = run.steps
  std::uint64_t seed = 0;     // picks the canaries' coordinates, membership and draws; 0 = training.seed
  std::function<void(long long step, double loss)> on_step;  // after each step
};

struct AuditResult {
  long long canaries = 0, included = 0, guesses = 0, correct = 0, steps = 0, canary_draws = 0;
  long long guessed_in = 0, correct_in = 0, guessed_out = 0, correct_out = 0;
  double confidence = 0, delta = 0;
  double epsilon_lower_bound = 0;  // empirical, at `delta`, with probability >= confidence
  double epsilon = 0;              // the accountant's, for the same steps
  std::string accountant;
  double noise_multiplier = 0, sampling_rate = 0, clip_norm = 0;
  double seconds = 0;              // the training run's wall time
  double final_loss = 0;
};

// Throws InputError for plans without DP-SGD, model-parallel layouts, or bad options.
AuditResult run_privacy_audit(const Plan& plan, const AuditOptions& options);

}  // namespace ditwin::exec
