// The one-run privacy audit end to end (exec::run_privacy_audit, ranks as threads): with no noise
// it has the power to find a large epsilon; with the plan's noise its lower bound stays under the
// accountant's epsilon on every seed tried; the canaries follow the plan's sampling rate; model-
// parallel layouts audit as data parallelism does.
#include <gtest/gtest.h>

#include <tuple>

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

TEST(PrivacyAudit, ModelParallelLayoutsAuditAsDataParallelDoes) {
  // A canary is a coordinate of the one-rank model, added where that element's noise goes and
  // scored and counted once by its owner: under TP x PP and CP the same training (equal to a
  // float's rounding) gives the same draws, the same guesses and the same bound as under DP.
  exec::AuditOptions o;
  o.canaries = 400;
  o.guesses = 60;
  o.steps = 6;
  auto dp = exec::run_privacy_audit(small_dataset(0.0), o);
  for (const auto& [tp, pp, cp] : {std::tuple{2, 2, 1}, std::tuple{1, 1, 2}}) {
    auto j = read_json_file(test::scenario("tiny-cpu-dp.json"));
    j["training"]["privacy"]["dataset_size"] = 64;
    j["training"]["privacy"]["noise_multiplier"] = 0.0;
    j["parallelism"] = {{"dp", 1}, {"tp", tp}, {"pp", pp}, {"cp", cp}, {"zero", 0}, {"bucket_mb", 0.25}};
    j["cluster"]["devices_per_node"] = tp * pp * cp;
    auto a = exec::run_privacy_audit(parse_plan(j), o);
    std::string tag = "tp" + std::to_string(tp) + " pp" + std::to_string(pp) + " cp" + std::to_string(cp);
    EXPECT_EQ(a.canary_draws, dp.canary_draws) << tag;
    EXPECT_EQ(a.correct, dp.correct) << tag;
    EXPECT_EQ(a.epsilon_lower_bound, dp.epsilon_lower_bound) << tag;
    EXPECT_NEAR(a.final_loss, dp.final_loss, 1e-6 * dp.final_loss) << tag;
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
