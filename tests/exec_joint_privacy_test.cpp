// DP-SGD in the executor's MMDiT and unified models (exec::JointModel): a sample is one example,
// all its image and text tokens. The clip factors are min(1, C / ||g_b||) of each example's own
// gradient (formed by a plain backward over that example alone), the clipped weight-gradient ops
// sum the clipped per-example gradients, and with an unbounded clip norm DP-SGD's gradients are
// plain training's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "exec/model/joint_model.hpp"
#include "model/plan.hpp"
#include "tests/exec_step_util.hpp"

namespace ditwin {
namespace {

using test::ModelStepper;

// tests/exec_step_util.hpp's small MMDiT or unified model, with DP-SGD when clip_norm > 0.
nlohmann::json small_plan(const std::string& family, double clip_norm) {
  nlohmann::json j = test::small_joint_plan(family);
  if (clip_norm > 0)
    j["training"]["privacy"] = {{"clip_norm", clip_norm}, {"noise_multiplier", 0.0}, {"sampling", "shuffle"},
                                {"dataset_size", 1000}};
  return j;
}

void perturb(std::vector<float>& params) {  // no gradient stays zero (adaLN-Zero starts many at 0)
  std::mt19937 gen(11);
  std::normal_distribution<float> n(0.0f, 0.05f);
  for (auto& p : params) p += n(gen);
}

exec::Batch sample_of(const exec::Batch& batch, int b) {
  auto cut = [&](const auto& v) {
    using V = std::decay_t<decltype(v)>;
    if (v.empty()) return V{};
    const std::size_t n = v.size() / static_cast<std::size_t>(batch.size);
    return V(v.begin() + b * n, v.begin() + (b + 1) * n);
  };
  exec::Batch one;
  one.size = 1;
  one.x0 = cut(batch.x0);
  one.noise = cut(batch.noise);
  one.t = cut(batch.t);
  one.y = cut(batch.y);
  one.tokens = cut(batch.tokens);
  one.context = cut(batch.context);
  one.pooled = cut(batch.pooled);
  return one;
}

struct PerSample {
  std::vector<std::vector<float>> grads;
  std::vector<double> norms;
};
PerSample per_sample(const std::string& family, const std::vector<float>& params, exec::SyntheticData& data) {
  auto one = small_plan(family, 0);
  one["training"]["global_batch"] = 1;
  one["training"]["micro_batch"] = 1;
  ModelStepper s(parse_plan(one));
  s.params = params;
  PerSample out;
  for (int mb = 0; mb < 2; ++mb) {
    exec::Batch batch = data.batch(0, 0, mb, 2);
    for (int b = 0; b < 2; ++b) {
      s.model().set_batch(0, sample_of(batch, b));
      s.run();
      double sq = 0;
      for (float g : s.grads) sq += static_cast<double>(g) * g;
      out.grads.push_back(s.grads);
      out.norms.push_back(std::sqrt(sq));
    }
  }
  return out;
}

class JointPrivacy : public ::testing::TestWithParam<std::string> {};

TEST_P(JointPrivacy, ClipFactorsAreThoseOfEachExamplesOwnGradientAndTheClippedSumIsTheSteps) {
  const std::string family = GetParam();
  const Plan plain = parse_plan(small_plan(family, 0));
  auto data = exec::make_synthetic_latents(plain.model, plain.training.objective, 5);
  ModelStepper init(plain);
  perturb(init.params);
  PerSample ref = per_sample(family, init.params, *data);
  std::vector<double> sorted = ref.norms;
  std::sort(sorted.begin(), sorted.end());
  ASSERT_GT(sorted.front(), 0);
  const double clip = 0.5 * (sorted.front() + sorted.back());  // some examples clipped, some not
  const Plan plan = parse_plan(small_plan(family, clip));
  ModelStepper s(plan);
  s.joint().enable_privacy(clip);
  s.params = init.params;
  s.set_batches(*data, 0);
  s.run();
  std::vector<double> expected(s.grads.size(), 0.0);
  int clipped = 0;
  for (int mb = 0; mb < 2; ++mb) {
    auto c = s.joint().clip_factors(mb);
    for (int b = 0; b < 2; ++b) {
      const std::size_t i = static_cast<std::size_t>(mb) * 2 + b;
      EXPECT_NEAR(c[b], std::min(1.0, clip / ref.norms[i]), 1e-4) << family << " example " << i;
      clipped += c[b] < 1;
      for (std::size_t k = 0; k < expected.size(); ++k) expected[k] += c[b] * ref.grads[i][k] / 4.0;  // / global_batch
    }
  }
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, 4);
  double diff = 0, scale = 0;
  for (std::size_t k = 0; k < expected.size(); ++k) {
    diff = std::max(diff, std::fabs(expected[k] - s.grads[k]));
    scale = std::max(scale, std::fabs(expected[k]));
  }
  EXPECT_LT(diff, 1e-4 * scale) << family;
}

TEST_P(JointPrivacy, UnboundedClipIsPlainTraining) {
  const std::string family = GetParam();
  const Plan plain = parse_plan(small_plan(family, 0)), dp = parse_plan(small_plan(family, 1e30));
  auto data = exec::make_synthetic_latents(plain.model, plain.training.objective, 9);
  ModelStepper a(plain), b(dp);
  b.joint().enable_privacy(1e30);
  perturb(a.params);
  b.params = a.params;
  a.set_batches(*data, 0);
  b.set_batches(*data, 0);
  EXPECT_EQ(a.run(), b.run());
  double diff = 0, scale = 0;
  for (std::size_t k = 0; k < a.grads.size(); ++k) {
    diff = std::max(diff, static_cast<double>(std::fabs(a.grads[k] - b.grads[k])));
    scale = std::max(scale, static_cast<double>(std::fabs(a.grads[k])));
  }
  // MMDiT's weights are all linears: the same GEMMs on the same operands, bit for bit. The unified
  // model's RMSNorm gains and token rows are summed per example first: rounding apart.
  if (family == "mmdit") EXPECT_EQ(diff, 0.0);
  else EXPECT_LT(diff, 1e-6 * scale);
}

INSTANTIATE_TEST_SUITE_P(Families, JointPrivacy, ::testing::Values("mmdit", "unified"));

}  // namespace
}  // namespace ditwin
