// The one-run privacy audit end to end (exec::run_privacy_audit, ranks as threads): with no noise
// it has the power to find a large epsilon; with the plan's noise its lower bound stays under the
// accountant's epsilon on every seed tried; the canaries follow the plan's sampling rate.
#include <gtest/gtest.h>

#include "exec/privacy_audit.hpp"
#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/report.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace ditwin;

// tiny-cpu-dp with a small dataset, so each canary is drawn into about 44% of the steps.
Plan small_dataset(double noise) {
  auto j = read_json_file(test::scenario("tiny-cpu-dp.json"));
  j["training"]["privacy"]["dataset_size"] = 64;
  j["training"]["privacy"]["noise_multiplier"] = noise;
  return parse_plan(j);
}

TEST(PrivacyAudit, WithoutNoiseTheAuditFindsALargeEpsilon) {
  exec::AuditOptions o;
  o.canaries = 400;
  o.guesses = 60;
  o.steps = 12;  // an included canary is never drawn with probability (1 - 0.4375)^12 = 0.1%
  auto a = exec::run_privacy_audit(small_dataset(0.0), o);
  EXPECT_GE(a.correct, 58);  // (nearly) every guess right: the canaries stand out of the gradient
  EXPECT_GT(a.epsilon_lower_bound, 2.0);  // 58 of 60 right: 2.48; all: 2.91
  EXPECT_TRUE(std::isinf(a.epsilon));
  // Included canaries are drawn at the plan's rate: about 12 x 0.4375 x (canaries in).
  double expected = 12 * 0.4375 * static_cast<double>(a.included);
  EXPECT_NEAR(static_cast<double>(a.canary_draws), expected, 5 * std::sqrt(expected));
}

TEST(PrivacyAudit, WithThePlansNoiseTheBoundStaysUnderTheAccountantsEpsilon) {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    exec::AuditOptions o;
    o.canaries = 400;
    o.guesses = 40;
    o.steps = 6;
    o.seed = seed;
    auto a = exec::run_privacy_audit(small_dataset(0.8), o);
    EXPECT_LE(a.epsilon_lower_bound, a.epsilon) << "seed " << seed;
    EXPECT_GT(a.epsilon, 0);
    EXPECT_EQ(a.guessed_in + a.guessed_out, 40);
  }
}

TEST(PrivacyAudit, RefusesPlansWithoutPrivacyAndBadOptions) {
  auto plain = parse_plan(read_json_file(test::scenario("tiny-cpu.json")));
  EXPECT_THROW(exec::run_privacy_audit(plain, {}), InputError);
  exec::AuditOptions o;
  o.canaries = 10;
  o.guesses = 20;
  EXPECT_THROW(exec::run_privacy_audit(small_dataset(1.0), o), InputError);
  o.guesses = 4;
  o.confidence = 1.0;
  EXPECT_THROW(exec::run_privacy_audit(small_dataset(1.0), o), InputError);
}

}  // namespace
