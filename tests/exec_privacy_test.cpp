// DP-SGD in the executor's DiT and kernels: ghost and materialized per-sample norms equal the
// norms of per-sample gradients formed one sample at a time; clipped per-sample gradients stay
// within the clip norm and sum to what the clipped weight-gradient ops produce; with an unbounded
// clip norm DP-SGD's gradients are plain training's, bit for bit; the Gaussian noise has the
// mean and spread it should and does not depend on how its slice is cut.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "exec/model/dit_model.hpp"
#include "kernels/gaussian_noise.hpp"
#include "kernels/per_sample_norm.hpp"
#include "model/plan.hpp"
#include "tests/exec_step_util.hpp"

namespace ditwin {
namespace {

using test::ModelStepper;

nlohmann::json dp_plan_json(double clip_norm) {
  auto j = test::small_dit_plan();
  j["training"]["privacy"] = {{"clip_norm", clip_norm}, {"noise_multiplier", 0.0}, {"sampling", "shuffle"},
                              {"dataset_size", 1000}};
  return j;
}

// Small random parameters everywhere, so that no gradient is zero (adaLN-Zero starts many at 0).
void perturb(std::vector<float>& params) {
  std::mt19937 gen(11);
  std::normal_distribution<float> n(0.0f, 0.05f);
  for (auto& p : params) p += n(gen);
}

// One sample's own gradient (of its own loss), formed by a plain backward over that sample alone.
struct PerSample {
  std::vector<std::vector<float>> grads;  // [mb * B + b]
  std::vector<double> norms;
};
PerSample per_sample_gradients(const Plan& plan, const std::vector<float>& params, exec::SyntheticData& data) {
  auto one = test::small_dit_plan();
  one["training"]["global_batch"] = 1;
  one["training"]["micro_batch"] = 1;
  ModelStepper s(parse_plan(one));
  s.params = params;
  PerSample out;
  const int B = static_cast<int>(plan.training.micro_batch);
  for (int mb = 0; mb < static_cast<int>(plan.micro_batches()); ++mb) {
    exec::Batch batch = data.batch(0, 0, mb, B);
    const std::size_t n = batch.x0.size() / B;
    for (int b = 0; b < B; ++b) {
      exec::Batch single;
      single.size = 1;
      single.x0.assign(batch.x0.begin() + b * n, batch.x0.begin() + (b + 1) * n);
      single.noise.assign(batch.noise.begin() + b * n, batch.noise.begin() + (b + 1) * n);
      single.t = {batch.t[b]};
      single.y = {batch.y[b]};
      s.dit().set_batch(0, single);
      s.run();
      double sq = 0;
      for (float g : s.grads) sq += static_cast<double>(g) * g;
      out.grads.push_back(s.grads);
      out.norms.push_back(std::sqrt(sq));
    }
  }
  return out;
}

struct DpStep {
  std::vector<float> grads;
  std::vector<double> norms;  // [mb * B + b]
  std::vector<float> clip;
};
DpStep dp_step(const Plan& plan, const std::vector<float>& params, exec::SyntheticData& data) {
  ModelStepper s(plan);
  s.dit().enable_privacy(plan.training.privacy.clip_norm);
  s.params = params;
  s.set_batches(data, 0);
  s.run();
  DpStep out{s.grads, {}, {}};
  for (int mb = 0; mb < s.micro_batches(); ++mb) {
    auto n = s.dit().sample_gradient_norms(mb);
    auto c = s.dit().clip_factors(mb);
    out.norms.insert(out.norms.end(), n.begin(), n.end());
    out.clip.insert(out.clip.end(), c.begin(), c.end());
  }
  return out;
}

TEST(ExecPrivacy, GhostNormsEqualNormsOfMaterializedPerSampleGradients) {
  const Plan plan = parse_plan(dp_plan_json(1e30));
  auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 3);
  ModelStepper init(plan);
  perturb(init.params);
  PerSample ref = per_sample_gradients(plan, init.params, *data);
  DpStep dp = dp_step(plan, init.params, *data);
  ASSERT_EQ(dp.norms.size(), ref.norms.size());
  for (std::size_t i = 0; i < ref.norms.size(); ++i) {
    EXPECT_GT(ref.norms[i], 0);
    EXPECT_NEAR(dp.norms[i], ref.norms[i], 1e-4 * ref.norms[i]) << "sample " << i;
    EXPECT_EQ(dp.clip[i], 1.0f);
  }
}

TEST(ExecPrivacy, ClippedPerSampleGradientsStayWithinTheClipNormAndSumToTheStepsGradient) {
  const Plan unbounded = parse_plan(dp_plan_json(1e30));
  auto data = exec::make_synthetic_latents(unbounded.model, unbounded.training.objective, 5);
  ModelStepper init(unbounded);
  perturb(init.params);
  PerSample ref = per_sample_gradients(unbounded, init.params, *data);
  // A clip norm between the smallest and the largest per-sample norm: some samples are clipped.
  std::vector<double> sorted = ref.norms;
  std::sort(sorted.begin(), sorted.end());
  const double clip = 0.5 * (sorted.front() + sorted.back());
  const Plan plan = parse_plan(dp_plan_json(clip));
  DpStep dp = dp_step(plan, init.params, *data);
  const double per_sample_scale = 1.0 / static_cast<double>(plan.training.global_batch);  // B x micro-batches
  std::vector<double> expected(dp.grads.size(), 0.0);
  int clipped = 0;
  for (std::size_t i = 0; i < ref.grads.size(); ++i) {
    double c = dp.clip[i];
    EXPECT_LE(c * ref.norms[i], clip * (1 + 1e-5)) << "sample " << i;
    EXPECT_NEAR(c, std::min(1.0, clip / ref.norms[i]), 1e-4) << "sample " << i;
    clipped += c < 1;
    for (std::size_t k = 0; k < expected.size(); ++k) expected[k] += c * ref.grads[i][k] * per_sample_scale;
  }
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, static_cast<int>(ref.grads.size()));
  double diff = 0, scale = 0;
  for (std::size_t k = 0; k < expected.size(); ++k) {
    diff = std::max(diff, std::fabs(expected[k] - dp.grads[k]));
    scale = std::max(scale, std::fabs(expected[k]));
  }
  EXPECT_LT(diff, 1e-4 * scale);
}

TEST(ExecPrivacy, UnboundedClipAndNoNoiseIsPlainTrainingBitForBit) {
  const Plan plain = parse_plan(test::small_dit_plan());
  const Plan dp_plan = parse_plan(dp_plan_json(1e30));
  auto data = exec::make_synthetic_latents(plain.model, plain.training.objective, 9);
  ModelStepper a(plain), b(dp_plan);
  b.dit().enable_privacy(1e30);
  perturb(a.params);
  b.params = a.params;
  for (int step = 0; step < 2; ++step) {
    a.set_batches(*data, step);
    b.set_batches(*data, step);
    EXPECT_EQ(a.run(), b.run());
    ASSERT_EQ(a.grads.size(), b.grads.size());
    EXPECT_EQ(std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * sizeof(float)), 0) << "step " << step;
  }
}

TEST(ExecPrivacy, PerSampleNormKernelGhostAndMaterializedAgreeWithTheDefinition) {
  std::mt19937 gen(3);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int batch = 3, rows = 5, d_in = 7, d_out = 4;
  std::vector<float> a(batch * rows * d_in), g(batch * rows * d_out);
  for (auto& x : a) x = n(gen);
  for (auto& x : g) x = n(gen);
  std::vector<double> naive(batch, 0.0);
  for (int b = 0; b < batch; ++b) {
    for (int o = 0; o < d_out; ++o) {
      double bias = 0;
      for (int i = 0; i < d_in; ++i) {
        double w = 0;
        for (int t = 0; t < rows; ++t) w += static_cast<double>(g[(b * rows + t) * d_out + o]) * a[(b * rows + t) * d_in + i];
        naive[b] += w * w;
      }
      for (int t = 0; t < rows; ++t) bias += g[(b * rows + t) * d_out + o];
      naive[b] += bias * bias;
    }
  }
  for (bool ghost : {true, false}) {
    std::vector<double> got(batch, 0.0);
    std::vector<float> scratch(kernels::per_sample_norm_scratch(rows, d_in, d_out, ghost));
    kernels::linear_per_sample_sq_norms(got.data(), a.data(), g.data(), batch, rows, d_in, d_out, true, ghost, scratch.data());
    for (int b = 0; b < batch; ++b) EXPECT_NEAR(got[b], naive[b], 1e-4 * naive[b]) << (ghost ? "ghost " : "materialized ") << b;
  }
}

TEST(ExecPrivacy, GaussianNoiseHasUnitSpreadAndDoesNotDependOnTheSlicing) {
  const std::size_t n = 1 << 20;
  std::vector<float> whole(n, 0.0f), pieces(n, 0.0f);
  kernels::add_gaussian_noise(whole.data(), n, 0, 42, 1.0f);
  // The same stream cut at odd places (a slice may start on either half of a Box-Muller pair).
  std::size_t cuts[] = {0, 1, 4, 333, 334, 100001, n};
  for (std::size_t k = 0; k + 1 < std::size(cuts); ++k)
    kernels::add_gaussian_noise(pieces.data() + cuts[k], cuts[k + 1] - cuts[k], cuts[k], 42, 1.0f);
  EXPECT_EQ(std::memcmp(whole.data(), pieces.data(), n * sizeof(float)), 0);
  double sum = 0, sq = 0, lag = 0, within1 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sum += whole[i];
    sq += static_cast<double>(whole[i]) * whole[i];
    if (i + 1 < n) lag += static_cast<double>(whole[i]) * whole[i + 1];
    within1 += std::fabs(whole[i]) < 1;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 5 / std::sqrt(static_cast<double>(n)));  // 5 standard errors
  EXPECT_NEAR(std::sqrt(var), 1.0, 0.005);
  EXPECT_NEAR(lag / n, 0.0, 5 / std::sqrt(static_cast<double>(n)));  // neighbours independent
  EXPECT_NEAR(within1 / n, 0.682689, 0.003);                        // a normal's mass within 1 sd
  // Scaled by stddev, added on top, and a different key gives different draws.
  std::vector<float> other(16, 1.0f);
  kernels::add_gaussian_noise(other.data(), 16, 0, 43, 2.0f);
  for (int i = 0; i < 16; ++i) EXPECT_NE(other[i], 1.0f + 2.0f * whole[i]);
}

}  // namespace
}  // namespace ditwin
