// The timestep strategies against their published distributions (SD3, Esser et al. 2024, eqs. 20,
// 21, 23): 20,000 draws per strategy, one-sample Kolmogorov–Smirnov test at significance 0.01.
// The seed is fixed, so each statistic is one number and the tests are deterministic; each prints
// its D so a change in a distribution shows up as a changed figure. Every strategy is a monotone map
// of one uniform (logit_normal: of one normal) and D is invariant under monotone maps, so the same
// seed gives the same D for every uniform-based strategy when its map is exactly the inverse of the
// published CDF; ExactInversesKeepTheStatisticOfTheirStream holds them to that within 1e-6 (the
// float rounding of a draw moves D by ~1e-8), far tighter than the KS bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "exec/model/timesteps.hpp"
#include "model/errors.hpp"

namespace ditwin {
namespace {

constexpr double pi = 3.14159265358979323846;
constexpr int draws = 20000;
// Asymptotic one-sample KS critical value at significance 0.01: 1.628 / sqrt(n).
const double ks_critical = 1.63 / std::sqrt(static_cast<double>(draws));

using Cdf = std::function<double(double)>;

std::vector<double> sample(const ObjectiveSpec& objective, const ModelSpec& model, std::uint64_t seed = 20240305) {
  exec::Rng rng({seed, 0x74696d65ULL /* "time" */});
  std::vector<double> t(draws);
  for (double& x : t) x = exec::draw_timestep(objective, model, rng);
  return t;
}

// D = sup |F_n(t) - F(t)|, evaluated on both sides of each step of the empirical CDF.
double ks_statistic(std::vector<double> t, const Cdf& cdf) {
  std::sort(t.begin(), t.end());
  const double n = static_cast<double>(t.size());
  double d = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const double f = cdf(t[i]);
    d = std::max({d, f - static_cast<double>(i) / n, static_cast<double>(i + 1) / n - f});
  }
  return d;
}

double ks_reported(const std::string& what, const std::vector<double>& t, const Cdf& cdf) {
  const double d = ks_statistic(t, cdf);
  std::printf("[ KS ] %-44s D = %.5f (critical %.5f at 0.01, n = %d)\n", what.c_str(), d, ks_critical, draws);
  return d;
}

// The published CDFs, written from the formulas rather than from the sampler.
double uniform_cdf(double t) { return std::clamp(t, 0.0, 1.0); }
Cdf logit_normal_cdf(double m, double s) {
  return [=](double t) { return 0.5 * std::erfc(-(std::log(t / (1 - t)) - m) / (s * std::sqrt(2.0))); };
}
double cosmap_cdf(double t) { return 2 / pi * std::atan(t / (1 - t)); }
// f_mode is decreasing from f(0) = 1 to f(1) = 0, so F(t) = P(f(u) <= t) = 1 - f^-1(t).
Cdf mode_cdf(double s) {
  return [=](double t) {
    auto f = [&](double u) { return 1 - u - s * (std::pow(std::cos(pi / 2 * u), 2) - 1 + u); };
    double lo = 0, hi = 1;  // f(lo) >= t >= f(hi)
    for (int i = 0; i < 60; ++i) {
      const double mid = 0.5 * (lo + hi);
      (f(mid) >= t ? lo : hi) = mid;
    }
    return 1 - 0.5 * (lo + hi);
  };
}
// t' = α·t / (1 + (α - 1)·t) is increasing, with inverse t = t' / (α - (α - 1)·t').
Cdf shifted_cdf(const Cdf& cdf, double alpha) {
  return [=](double t) { return cdf(t / (alpha - (alpha - 1) * t)); };
}

ObjectiveSpec strategy(TimestepKind kind) {
  ObjectiveSpec o;
  o.kind = "rectified_flow";
  o.timesteps = kind;
  return o;
}

ModelSpec image_model(int image_size) {
  ModelSpec m;
  m.image_size = image_size;
  return m;
}

TEST(Timesteps, UniformDrawsFollowTheUniformCdf) {
  EXPECT_LT(ks_reported("uniform", sample(strategy(TimestepKind::uniform), image_model(256)), uniform_cdf),
            ks_critical);
}

TEST(Timesteps, LogitNormalDrawsFollowTheLogitNormalCdf) {
  for (auto [m, s] : {std::pair{0.0, 1.0}, std::pair{-0.5, 0.6}, std::pair{1.0, 1.5}}) {
    ObjectiveSpec o = strategy(TimestepKind::logit_normal);
    o.m = m;
    o.s = s;
    char name[64];
    std::snprintf(name, sizeof name, "logit_normal(m=%g, s=%g)", m, s);
    EXPECT_LT(ks_reported(name, sample(o, image_model(256)), logit_normal_cdf(m, s)), ks_critical) << name;
  }
}

TEST(Timesteps, ModeDrawsFollowTheInverseOfFMode) {
  for (double s : {1.29, 0.0, -0.5, mode_scale_min, mode_scale_max}) {
    ObjectiveSpec o = strategy(TimestepKind::mode);
    o.mode_scale = s;
    char name[64];
    std::snprintf(name, sizeof name, "mode(scale=%g)", s);
    EXPECT_LT(ks_reported(name, sample(o, image_model(256)), mode_cdf(s)), ks_critical) << name;
  }
}

TEST(Timesteps, CosmapDrawsFollowTheCosmapCdf) {
  EXPECT_LT(ks_reported("cosmap", sample(strategy(TimestepKind::cosmap), image_model(256)), cosmap_cdf), ks_critical);
}

TEST(Timesteps, ShiftedDrawsFollowTheShiftedCdfOfEveryKind) {
  const Cdf cdfs[] = {uniform_cdf, logit_normal_cdf(0, 1), mode_cdf(1.29), cosmap_cdf};
  const TimestepKind kinds[] = {TimestepKind::uniform, TimestepKind::logit_normal, TimestepKind::mode,
                                TimestepKind::cosmap};
  for (int k = 0; k < 4; ++k) {
    for (double alpha : {3.0, 0.5}) {
      ObjectiveSpec o = strategy(kinds[k]);
      o.shift = alpha;
      const std::string name = std::string(to_string(kinds[k])) + " shifted by " + (alpha == 3.0 ? "3" : "0.5");
      EXPECT_LT(ks_reported(name, sample(o, image_model(256)), shifted_cdf(cdfs[k], alpha)), ks_critical) << name;
    }
  }
}

TEST(Timesteps, AutoShiftIsTheSquareRootOfThePixelRatio) {
  ObjectiveSpec o = strategy(TimestepKind::logit_normal);
  o.shift_auto = true;
  EXPECT_DOUBLE_EQ(exec::timestep_shift(o, image_model(1024)), 4.0);  // sqrt(1024² / 256²)
  EXPECT_DOUBLE_EQ(exec::timestep_shift(o, image_model(256)), 1.0);
  o.base_resolution = 512;
  EXPECT_DOUBLE_EQ(exec::timestep_shift(o, image_model(256)), 0.5);
  EXPECT_DOUBLE_EQ(exec::timestep_shift(strategy(TimestepKind::uniform), image_model(1024)), 1.0);  // none by default
  o.base_resolution = 256;
  EXPECT_LT(ks_reported("logit_normal, auto shift 1024 px over 256 px", sample(o, image_model(1024)),
                        shifted_cdf(logit_normal_cdf(0, 1), 4.0)),
            ks_critical);
  EXPECT_THROW(exec::timestep_shift(o, image_model(0)), InputError);
}

TEST(Timesteps, ExactInversesKeepTheStatisticOfTheirStream) {
  const ModelSpec model = image_model(256);
  const double d_uniform = ks_statistic(sample(strategy(TimestepKind::uniform), model), uniform_cdf);
  const double d_normal = ks_statistic(sample(strategy(TimestepKind::logit_normal), model), logit_normal_cdf(0, 1));
  for (double alpha : {1.0, 3.0, 0.5}) {
    ObjectiveSpec mode = strategy(TimestepKind::mode), cosmap = strategy(TimestepKind::cosmap),
                  logit_normal = strategy(TimestepKind::logit_normal);
    mode.shift = cosmap.shift = logit_normal.shift = alpha;
    logit_normal.m = -0.5;
    logit_normal.s = 0.6;
    EXPECT_NEAR(ks_statistic(sample(mode, model), shifted_cdf(mode_cdf(1.29), alpha)), d_uniform, 1e-6) << alpha;
    EXPECT_NEAR(ks_statistic(sample(cosmap, model), shifted_cdf(cosmap_cdf, alpha)), d_uniform, 1e-6) << alpha;
    EXPECT_NEAR(ks_statistic(sample(logit_normal, model), shifted_cdf(logit_normal_cdf(-0.5, 0.6), alpha)), d_normal,
                1e-6)
        << alpha;
  }
}

// The test has power: each sample against another strategy's CDF is rejected.
TEST(Timesteps, KsTestRejectsTheWrongStrategy) {
  const ModelSpec model = image_model(256);
  const auto uniform = sample(strategy(TimestepKind::uniform), model);
  const auto logit_normal = sample(strategy(TimestepKind::logit_normal), model);
  const auto cosmap = sample(strategy(TimestepKind::cosmap), model);
  ObjectiveSpec shifted = strategy(TimestepKind::logit_normal);
  shifted.shift = 1.5;
  EXPECT_GT(ks_reported("uniform against logit_normal(0, 1)", uniform, logit_normal_cdf(0, 1)), ks_critical);
  EXPECT_GT(ks_reported("logit_normal(0, 1) against cosmap", logit_normal, cosmap_cdf), ks_critical);
  EXPECT_GT(ks_reported("cosmap against mode(1.29)", cosmap, mode_cdf(1.29)), ks_critical);
  EXPECT_GT(ks_reported("logit_normal shifted 1.5 against unshifted", sample(shifted, model), logit_normal_cdf(0, 1)),
            ks_critical);
  EXPECT_GT(ks_reported("logit_normal(0, 1) against logit_normal(0.1, 1)", logit_normal, logit_normal_cdf(0.1, 1)),
            ks_critical);
}

// Synthetic data (and every test that trains on it) depends on the existing kinds drawing exactly
// as before the strategies grew: same values, same RNG calls, nothing shifted at α = 1.
TEST(Timesteps, UniformAndLogitNormalDrawExactlyAsBefore) {
  for (TimestepKind kind : {TimestepKind::uniform, TimestepKind::logit_normal}) {
    ObjectiveSpec o = strategy(kind);
    o.m = 0.25;
    o.s = 0.8;
    exec::Rng ours({11, 22}), before({11, 22});
    for (int i = 0; i < 1000; ++i) {
      const double u = kind == TimestepKind::uniform ? before.uniform()
                                                     : 1.0 / (1.0 + std::exp(-(o.m + o.s * before.normal())));
      ASSERT_EQ(exec::draw_timestep(o, image_model(256), ours), static_cast<float>(std::min(std::max(u, 1e-5), 1.0 - 1e-5)));
    }
    EXPECT_EQ(ours.next(), before.next());  // the streams are still in step
  }
}

TEST(Timesteps, DrawsStayInsideTheOpenInterval) {
  for (TimestepKind kind : {TimestepKind::uniform, TimestepKind::logit_normal, TimestepKind::mode, TimestepKind::cosmap})
    for (double alpha : {1.0, 1e-3, 1e3}) {
      ObjectiveSpec o = strategy(kind);
      o.shift = alpha;
      for (double t : sample(o, image_model(256), 5)) {
        ASSERT_GT(t, 0.0) << to_string(kind) << " shift " << alpha;
        ASSERT_LT(t, 1.0) << to_string(kind) << " shift " << alpha;
      }
    }
}

TEST(Timesteps, CheckRefusesStrategiesThatCannotBeDrawn) {
  EXPECT_NO_THROW(exec::check_timestep_strategy(strategy(TimestepKind::mode)));
  ObjectiveSpec o = strategy(TimestepKind::mode);
  o.mode_scale = 1.8;
  EXPECT_THROW(exec::check_timestep_strategy(o), InputError);
  o = strategy(TimestepKind::logit_normal);
  o.s = 0;
  EXPECT_THROW(exec::check_timestep_strategy(o), InputError);
  o = strategy(TimestepKind::cosmap);
  o.shift = 0;
  EXPECT_THROW(exec::check_timestep_strategy(o), InputError);
  o.shift = -1;
  EXPECT_THROW(exec::check_timestep_strategy(o), InputError);
}

}  // namespace
}  // namespace ditwin
