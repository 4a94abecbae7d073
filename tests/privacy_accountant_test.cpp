// The RDP accountant against published figures (Opacus's own test, the TF-Privacy MNIST tutorial),
// against closed forms where they exist, and the privacy section's validation.
#include <gtest/gtest.h>

#include <cmath>

#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/privacy.hpp"
#include "tests/test_util.hpp"

namespace {

using ditwin::EpsilonConversion;
using ditwin::RdpAccountant;

TEST(PrivacyAccountant, MatchesOpacusReferenceWithImprovedConversion) {
  // Opacus tests/privacy_analysis: sigma 1.5, q 0.04, 2,250 steps, delta 1e-5 -> 7.32911117143.
  auto spent = RdpAccountant(0.04, 1.5).spent(2250, 1e-5, EpsilonConversion::improved);
  EXPECT_NEAR(spent.epsilon, 7.32911117143, 7.32911117143 * 1e-6);
}

TEST(PrivacyAccountant, MatchesTfPrivacyTutorialWithClassicConversion) {
  // TF-Privacy's MNIST tutorial: sigma 1.12, batch 256 of 60,000, 60 epochs of 234 steps -> 2.92.
  auto spent = RdpAccountant(256.0 / 60000, 1.12).spent(14040, 1e-5, EpsilonConversion::classic);
  EXPECT_NEAR(spent.epsilon, 2.92, 0.005);
  // The improved conversion is never worse than the classic one.
  EXPECT_LT(RdpAccountant(256.0 / 60000, 1.12).spent(14040, 1e-5, EpsilonConversion::improved).epsilon, spent.epsilon);
}

TEST(PrivacyAccountant, FullBatchIsTheGaussianMechanism) {
  for (double a : {1.5, 2.0, 7.3, 32.0}) EXPECT_DOUBLE_EQ(ditwin::rdp_sampled_gaussian(1.0, 2.0, a), a / 8.0);
  EXPECT_EQ(ditwin::rdp_sampled_gaussian(0.0, 2.0, 4.0), 0.0);
  EXPECT_TRUE(std::isinf(ditwin::rdp_sampled_gaussian(0.01, 0.0, 4.0)));
}

TEST(PrivacyAccountant, FractionalSeriesMeetsIntegerFormulaAtIntegerOrders) {
  // The fractional series are a different formula from the binomial sum: near an integer order
  // they must agree with it (RDP is continuous in alpha).
  for (double q : {0.001, 0.01, 0.1})
    for (double sigma : {0.7, 1.1, 4.0})
      for (int a : {2, 3, 8, 20}) {
        double exact = ditwin::rdp_sampled_gaussian(q, sigma, a);
        double near = ditwin::rdp_sampled_gaussian(q, sigma, a + 1e-7);
        EXPECT_NEAR(near, exact, 1e-5 * exact + 1e-12) << "q " << q << " sigma " << sigma << " alpha " << a;
      }
}

TEST(PrivacyAccountant, RdpGrowsWithOrderAndSamplingRateAndFallsWithNoise) {
  double prev = 0;
  for (double a : ditwin::default_rdp_orders()) {
    double r = ditwin::rdp_sampled_gaussian(0.02, 1.0, a);
    EXPECT_GE(r, prev) << a;
    prev = r;
  }
  EXPECT_LT(ditwin::rdp_sampled_gaussian(0.01, 1.0, 8), ditwin::rdp_sampled_gaussian(0.02, 1.0, 8));
  EXPECT_GT(ditwin::rdp_sampled_gaussian(0.01, 1.0, 8), ditwin::rdp_sampled_gaussian(0.01, 1.5, 8));
  // Small q: the binomial sum's k = 2 term dominates, A = 1 + C(a,2) q^2 (e^(1/sigma^2) - 1) + O(q^3),
  // so RDP = log A / (a - 1) ~ a q^2 (e^(1/sigma^2) - 1) / 2, at integer and fractional orders alike.
  double q = 1e-4, sigma = 2;
  for (double a : {4.0, 5.5})
    EXPECT_NEAR(ditwin::rdp_sampled_gaussian(q, sigma, a) / (a * q * q * std::expm1(1 / (sigma * sigma)) / 2), 1.0, 0.01) << a;
}

TEST(PrivacyAccountant, DefaultOrdersAreOpacusGrid) {
  auto o = ditwin::default_rdp_orders();
  ASSERT_EQ(o.size(), 99u + 52u);
  EXPECT_DOUBLE_EQ(o.front(), 1.1);
  EXPECT_DOUBLE_EQ(o[98], 10.9);
  EXPECT_DOUBLE_EQ(o[99], 12);
  EXPECT_DOUBLE_EQ(o.back(), 63);
}

TEST(PrivacyAccountant, NoiseForTargetEpsilonIsTheSmallestThatReachesIt) {
  double q = 0.01, steps = 5000, delta = 1e-5;
  for (double target : {0.5, 2.0, 8.0}) {
    double sigma = ditwin::noise_for_epsilon(target, q, steps, delta, EpsilonConversion::improved);
    EXPECT_LE(RdpAccountant(q, sigma).spent(steps, delta, EpsilonConversion::improved).epsilon, target);
    EXPECT_GT(RdpAccountant(q, sigma * (1 - 1e-3)).spent(steps, delta, EpsilonConversion::improved).epsilon, target);
  }
  // And the Opacus case backwards: 7.32911117143 needs sigma 1.5.
  EXPECT_NEAR(ditwin::noise_for_epsilon(7.32911117143, 0.04, 2250, 1e-5, EpsilonConversion::improved), 1.5, 1.5e-3);
}

TEST(PrivacyAccountant, ReferencePlansGiveReferenceEpsilons) {
  auto opacus = ditwin::privacy_budget(ditwin::load_plan(ditwin::test::scenario("privacy/opacus-reference.json")));
  EXPECT_NEAR(opacus.sampling_rate, 0.04, 1e-15);
  EXPECT_EQ(opacus.steps, 2250);
  EXPECT_NEAR(opacus.spent.epsilon, 7.32911117143, 7.32911117143 * 1e-6);
  EXPECT_EQ(opacus.per_epoch.size(), 90u);  // 25 steps per epoch
  EXPECT_DOUBLE_EQ(opacus.per_epoch.front().epoch, 1);
  EXPECT_DOUBLE_EQ(opacus.per_epoch.back().epsilon, opacus.spent.epsilon);
  for (std::size_t e = 1; e < opacus.per_epoch.size(); ++e) EXPECT_GT(opacus.per_epoch[e].epsilon, opacus.per_epoch[e - 1].epsilon);
  auto tf = ditwin::privacy_budget(ditwin::load_plan(ditwin::test::scenario("privacy/tf-privacy-reference.json")));
  EXPECT_EQ(tf.conversion, EpsilonConversion::classic);
  EXPECT_NEAR(tf.spent.epsilon, 2.92, 0.005);
  EXPECT_NEAR(tf.epochs, 60, 1e-12);
}

TEST(PrivacyAccountant, PrvPlanKeyAndItsPerEpochPoints) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("privacy/opacus-reference.json"));
  j["training"]["privacy"]["accountant"] = "prv";
  auto b = ditwin::privacy_budget(ditwin::parse_plan(j));
  EXPECT_EQ(b.accountant, ditwin::Accountant::prv);
  EXPECT_NEAR(b.spent.epsilon, 6.7791320763, 1e-6);  // Opacus 1.6.0, 2,250 steps
  EXPECT_NEAR(b.rdp.epsilon, 7.32911117143, 1e-6);
  EXPECT_LE(b.per_epoch.size(), 12u);  // each point is a composition: at most 12
  EXPECT_DOUBLE_EQ(b.per_epoch.back().epoch, 90);
  EXPECT_DOUBLE_EQ(b.per_epoch.back().epsilon, b.spent.epsilon);
  for (std::size_t e = 1; e < b.per_epoch.size(); ++e) EXPECT_GT(b.per_epoch[e].epsilon, b.per_epoch[e - 1].epsilon);
  j["training"]["privacy"]["accountant"] = "moments";
  EXPECT_NE(ditwin::test::plan_error(j).find("training.privacy.accountant"), std::string::npos);
}

TEST(PrivacyAccountant, PoissonOverflowProbabilityIsTheBinomialTailAndEntersDelta) {
  // Against the tail summed directly for a small case, and the upper-tail shortcut for a large one.
  auto direct = [](int n, double q, int slots) {
    double p = 0;
    for (int k = slots + 1; k <= n; ++k) p += std::exp(std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0) +
                                                      k * std::log(q) + (n - k) * std::log1p(-q));
    return p;
  };
  for (int slots : {5, 30, 45, 60}) EXPECT_NEAR(ditwin::poisson_overflow_probability(100, 0.3, slots), direct(100, 0.3, slots), 1e-12) << slots;
  EXPECT_EQ(ditwin::poisson_overflow_probability(100, 0.3, 100), 0.0);
  EXPECT_NEAR(ditwin::poisson_overflow_probability(50001, 64.0 / 50000, 64), 0.467, 0.01);  // slots = expected: about half
  auto dp = ditwin::privacy_budget(ditwin::load_plan(ditwin::test::scenario("tiny-cpu-dp.json")));
  EXPECT_EQ(dp.slots, 64);
  EXPECT_NEAR(dp.sampling_rate, 28.0 / 50000, 1e-15);
  EXPECT_LT(dp.overflow_probability, 1e-8);
  EXPECT_NEAR(dp.delta_with_overflow, 1e-5 + (1 + std::exp(dp.spent.epsilon)) * 20 * dp.overflow_probability, 1e-15);
  EXPECT_LT(dp.delta_with_overflow, 1.1e-5);
  auto j = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu-dp.json"));
  j["training"]["privacy"]["expected_batch"] = 65;
  EXPECT_NE(ditwin::test::plan_error(j).find("training.privacy.expected_batch: must be in [1, training.global_batch = 64]"),
            std::string::npos);
  j["training"]["privacy"]["expected_batch"] = 32;
  j["training"]["privacy"]["sampling"] = "shuffle";
  EXPECT_NE(ditwin::test::plan_error(j).find("training.privacy.expected_batch: applies to poisson sampling only"), std::string::npos);
}

TEST(PrivacyAccountant, TargetEpsilonPlanSolvesTheNoise) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("privacy/opacus-reference.json"));
  j["training"]["privacy"].erase("noise_multiplier");
  j["training"]["privacy"]["target_epsilon"] = 7.32911117143;
  auto b = ditwin::privacy_budget(ditwin::parse_plan(j));
  EXPECT_TRUE(b.solved_for_target);
  EXPECT_NEAR(b.noise_multiplier, 1.5, 1.5e-3);
  EXPECT_LE(b.spent.epsilon, 7.32911117143);
}

TEST(PrivacyAccountant, PrivacySectionRules) {
  using ditwin::test::plan_error;
  auto j = ditwin::test::base_plan();
  j["training"]["privacy"] = {{"noise_multiplier", 1.0}, {"dataset_size", 6400}};
  EXPECT_EQ(plan_error(j), "");
  EXPECT_TRUE(ditwin::parse_plan(j).training.privacy.enabled);  // a section turns it on
  j["training"]["privacy"]["enabled"] = false;
  EXPECT_FALSE(ditwin::parse_plan(j).training.privacy.enabled);
  j["training"]["privacy"] = {{"noise_multiplier", 1.0}};
  EXPECT_NE(plan_error(j).find("training.privacy.dataset_size: is required when privacy is enabled"), std::string::npos);
  j["training"]["privacy"] = {{"dataset_size", 6400}};
  EXPECT_NE(plan_error(j).find("training.privacy.noise_multiplier: or target_epsilon must be set"), std::string::npos);
  j["training"]["privacy"] = {{"dataset_size", 6400}, {"noise_multiplier", 1.0}, {"target_epsilon", 3.0}};
  EXPECT_NE(plan_error(j).find("training.privacy.target_epsilon: and noise_multiplier are both set"), std::string::npos);
  j["training"]["privacy"] = {{"dataset_size", 6400}, {"noise_multiplier", 1.0}, {"conversion", "clasic"}};
  EXPECT_NE(plan_error(j).find("training.privacy.conversion: \"clasic\" is not one of"), std::string::npos);
  j["training"]["privacy"] = {{"dataset_size", 6400}, {"noise_multiplier", 1.0}, {"clip_nrom", 1.0}};
  EXPECT_NE(plan_error(j).find("training.privacy.clip_nrom: unknown key (did you mean \"clip_norm\"?)"), std::string::npos);
  j["training"]["privacy"] = {{"dataset_size", 6400}, {"noise_multiplier", 0.0}};
  auto plan = ditwin::parse_plan(j);  // legal (clipping only), but warned
  bool warned = false;
  for (const auto& w : plan.warnings) warned |= w.find("noise_multiplier 0 adds no noise") != std::string::npos;
  EXPECT_TRUE(warned);
  j["training"]["privacy"] = {{"dataset_size", 6400}, {"noise_multiplier", 1.0}};
  j["parallelism"] = {{"dp", 2}, {"cp", 2}, {"pp", 2}};  // every layout takes DP-SGD
  EXPECT_NO_THROW(ditwin::parse_plan(j));
  // Without a privacy section the budget is refused, naming the section.
  try {
    ditwin::privacy_budget(ditwin::parse_plan(ditwin::test::base_plan()));
    ADD_FAILURE() << "no error";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("training.privacy"), std::string::npos);
  }
}

}  // namespace
