// The PRV accountant against Opacus's own test cases, and the one-run audit's statistics against
// the reference values of Steinke, Nasr & Jagielski's Appendix D procedure (computed with scipy).
#include <gtest/gtest.h>

#include <cmath>

#include "model/errors.hpp"
#include "model/privacy.hpp"
#include "model/privacy_audit.hpp"
#include "model/prv_accountant.hpp"

namespace {

using ditwin::prv_epsilon;

TEST(PrvAccountant, MatchesOpacusTestPrvAccountant) {
  // opacus/tests/accountants_test.py, test_prv_accountant: sigma 1.5, q 0.04, int(90 // 0.04) =
  // 2249 steps, delta 1e-5 -> 6.777395712150674 (asserted to 7 places).
  auto e = prv_epsilon(0.04, 1.5, 2249, 1e-5);
  EXPECT_NEAR(e.epsilon, 6.777395712150674, 6.777395712150674 * 1e-7);
  EXPECT_LT(e.epsilon, ditwin::RdpAccountant(0.04, 1.5).spent(2249, 1e-5, ditwin::EpsilonConversion::improved).epsilon);
}

TEST(PrvAccountant, MatchesOpacusPrvValuesToOneInTenThousand) {
  // opacus/tests/prv_accountant.py (values from Microsoft's prv_accountant), delta 1e-6; the
  // cases that take under a second here (the 50,000-step ones at q 0.05 are left out).
  struct Case {
    double sigma, q, steps, eps;
  } cases[] = {
      {0.8, 0.001, 100, 0.270403364058}, {1.5, 0.001, 100, 0.0393694193095}, {2, 0.001, 100, 0.0291045369484},
      {3, 0.001, 100, 0.0215200934391},  {0.8, 0.05, 100, 6.74105193941},    {1.5, 0.05, 100, 1.95385313568},
      {2, 0.05, 100, 1.28363737962},     {3, 0.05, 100, 0.767933789667},     {0.8, 0.2, 100, 24.3336641779},
      {1.5, 0.2, 100, 8.49897785912},    {2, 0.2, 100, 5.67205560882},       {3, 0.2, 100, 3.38122051022},
      {0.8, 0.001, 1000, 0.477771266185}, {1.5, 0.001, 1000, 0.0998206602308}, {2, 0.001, 1000, 0.0712187825381},
      {3, 0.001, 1000, 0.0476159308714}, {1.5, 0.05, 1000, 6.20996924658},   {2, 0.05, 1000, 4.17279986669},
      {3, 0.05, 1000, 2.52757432606},    {1.5, 0.001, 20000, 0.437005108655}, {3, 0.001, 20000, 0.194031030686},
  };
  for (const auto& c : cases) {
    auto e = prv_epsilon(c.q, c.sigma, c.steps, 1e-6);
    EXPECT_NEAR(e.epsilon, c.eps, 1e-4 * c.eps) << "sigma " << c.sigma << " q " << c.q << " steps " << c.steps;
    double rdp = ditwin::RdpAccountant(c.q, c.sigma).spent(c.steps, 1e-6, ditwin::EpsilonConversion::improved).epsilon;
    EXPECT_LE(e.epsilon, rdp) << "sigma " << c.sigma << " q " << c.q << " steps " << c.steps;
  }
}

TEST(PrvAccountant, BoundsBracketTheEstimateByTheStatedErrors) {
  auto e = prv_epsilon(0.01, 1.0, 1000, 1e-5);
  EXPECT_DOUBLE_EQ(e.eps_error, 0.01);
  EXPECT_DOUBLE_EQ(e.delta_error, 1e-8);
  EXPECT_LT(e.lower, e.estimate);
  EXPECT_LT(e.estimate, e.epsilon);
  EXPECT_NEAR(e.epsilon, 1.8383716370, 1e-6);  // Opacus 1.6.0's get_epsilon for this case
  // A finer mesh moves the upper bound down towards the estimate.
  auto fine = prv_epsilon(0.01, 1.0, 1000, 1e-5, 0.002);
  EXPECT_LT(fine.epsilon, e.epsilon);
  EXPECT_GT(fine.epsilon, e.lower);
}

TEST(PrvAccountant, CdfIsADistributionAndNoNoiseIsInfinite) {
  EXPECT_EQ(ditwin::prv_cdf(0.1, 1.0, std::log(0.9) - 1e-9), 0.0);
  double prev = 0;
  for (double t = -0.1; t < 20; t += 0.05) {
    double f = ditwin::prv_cdf(0.1, 1.0, t);
    EXPECT_GE(f, prev);
    prev = f;
  }
  EXPECT_NEAR(prev, 1.0, 1e-12);
  EXPECT_TRUE(std::isinf(prv_epsilon(0.1, 0.0, 10, 1e-5).epsilon));
  EXPECT_THROW(prv_epsilon(0.1, 1.0, 10.5, 1e-5), ditwin::InputError);
  EXPECT_THROW(prv_epsilon(0.1, 1.0, 10, 1e-5, 0.01, 1e-4), ditwin::InputError);  // delta_error >= delta
  EXPECT_THROW(prv_epsilon(0.1, 1.0, 1e9, 1e-5, 0.01, 0, 1'000'000), ditwin::InputError);  // mesh too large
}

TEST(PrvAccountant, NoiseForTargetEpsilonIsTheSmallestThatReachesIt) {
  double sigma = ditwin::noise_for_epsilon(8, 0.04, 2250, 1e-5, ditwin::EpsilonConversion::improved, ditwin::Accountant::prv);
  EXPECT_LE(prv_epsilon(0.04, sigma, 2250, 1e-5).epsilon, 8);
  EXPECT_GT(prv_epsilon(0.04, sigma * (1 - 1e-3), 2250, 1e-5).epsilon, 8);
  // Opacus's bisection stops within 0.01 of the target: 1.34765625 (its test, 4 places).
  EXPECT_NEAR(sigma, 1.34765625, 2e-3);
}

TEST(PrivacyAudit, LowerBoundsMatchTheReferenceProcedure) {
  struct Case {
    long long m, r, v;
    double delta, eps;
  } cases[] = {
      {1000, 100, 100, 1e-5, 3.46537635}, {1000, 100, 95, 1e-5, 2.16517580}, {1000, 100, 80, 1e-5, 0.95531853},
      {1000, 100, 60, 1e-5, 0.04954866},  {1000, 100, 50, 1e-5, 0.0},        {1000, 1000, 1000, 1e-5, 5.78228313},
      {1000, 1000, 900, 1e-5, 2.02064560}, {1000, 1000, 600, 1e-5, 0.29722695}, {1000, 100, 100, 0, 3.49296543},
      {1000, 100, 95, 0, 2.17243404},     {1000, 1000, 900, 0, 2.02123323},  {1000, 100, 75, 1e-4, 0.672985},
  };
  for (const auto& c : cases)
    EXPECT_NEAR(ditwin::audit_epsilon_lower_bound(c.m, c.r, c.v, c.delta, 0.05), c.eps, 2e-6)
        << c.m << " " << c.r << " " << c.v << " " << c.delta;
  // delta 0, all right: p^r = beta exactly, eps = log(p / (1 - p)) with p = beta^(1/r).
  double p = std::pow(0.05, 1.0 / 16);
  EXPECT_NEAR(ditwin::audit_epsilon_lower_bound(16, 16, 16, 0, 0.05), std::log(p / (1 - p)), 1e-8);
  EXPECT_NEAR(ditwin::audit_p_value(1000, 100, 95, 1.0, 1e-5), 6.639144683529008e-04, 1e-12);
  EXPECT_NEAR(ditwin::audit_p_value(1000, 100, 95, 2.0, 1e-5), 1.782463464307135e-02, 1e-10);
  EXPECT_EQ(ditwin::audit_p_value(1000, 100, 0, 1.0, 1e-5), 1.0);
}

}  // namespace
