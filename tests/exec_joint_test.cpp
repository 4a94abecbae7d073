// The executor's MMDiT and unified models: parameter groups against the accounting and the
// Program, the whole gradient against finite differences (every group), the unified model's mask
// (text never sees the image or later text), training on synthetic captions, and refusals.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "exec/model/joint_model.hpp"
#include "kernels/threads.hpp"
#include "model/accounting.hpp"
#include "model/errors.hpp"
#include "tests/exec_step_util.hpp"
#include "tests/exec_test_util.hpp"
#include "tests/test_util.hpp"

namespace ditwin {
namespace {
using test::ModelStepper;

nlohmann::json small_plan(const std::string& family) { return test::small_joint_plan(family); }

std::vector<Plan> variants() {
  std::vector<Plan> out;
  out.push_back(load_plan(test::scenario("tiny-mmdit-cpu.json")));
  out.push_back(load_plan(test::scenario("tiny-unified-cpu.json")));
  out.push_back(parse_plan(small_plan("mmdit")));
  auto nobias = small_plan("mmdit");
  nobias["model"]["linear_bias"] = false;
  out.push_back(parse_plan(nobias));
  out.push_back(parse_plan(small_plan("unified")));
  auto gelu = small_plan("unified");
  gelu["model"]["gated_mlp"] = false;
  gelu["model"]["linear_bias"] = true;
  gelu["training"]["objective"]["image_weight"] = 2.0;
  out.push_back(parse_plan(gelu));
  return out;
}

TEST(ExecJoint, ParameterGroupsMatchTheAccountingAndTheProgram) {
  for (const Plan& plan : variants()) {
    SCOPED_TRACE(plan.name + " " + to_string(plan.model.family));
    auto model = exec::make_model(plan);
    const auto counts = count_parameters(plan.model);
    const auto& groups = model->groups();
    ASSERT_EQ(groups.size(), static_cast<std::size_t>(plan.model.layers + 2));
    EXPECT_EQ(groups.front().size, counts.embedding);
    EXPECT_EQ(groups.back().size, counts.head);
    for (std::size_t i = 1; i + 1 < groups.size(); ++i) EXPECT_EQ(groups[i].size, counts.per_layer);
    EXPECT_EQ(model->parameter_count(), counts.total);
    std::set<std::string> names;
    for (const auto& g : groups) names.insert(g.name);
    const Program program = lower(plan);
    for (const Op& op : program.class_of(0).ops)
      for (const auto& g : op.param_groups) EXPECT_TRUE(names.count(g)) << op.name << " moves unknown group " << g;
  }
}

// Every compute op of the Program runs (forward, backward, recompute) and the loss is finite.
TEST(ExecJoint, EveryProgramOpRunsUnderEveryRecomputeMode) {
  for (const char* family : {"mmdit", "unified"})
    for (const char* recompute : {"none", "selective", "full"}) {
      auto j = small_plan(family);
      j["training"]["recompute"] = recompute;
      const Plan plan = parse_plan(j);
      ModelStepper s(plan);
      auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 3);
      s.set_batches(*data, 0);
      EXPECT_TRUE(std::isfinite(s.run())) << family << " " << recompute;
    }
}

// The whole model's gradient against central differences: the largest and some random
// coordinates of every group, weights perturbed so that adaLN-Zero's gates are alive.
TEST(ExecJoint, WholeModelGradientMatchesFiniteDifferences) {
  for (const Plan& plan : variants()) {
    if (plan.model.hidden > 32) continue;  // the small ones: finite differences run the model 40x per group
    SCOPED_TRACE(plan.name + " " + to_string(plan.model.family));
    ModelStepper s(plan);
    auto noise = test::random_vector(s.params.size(), 31, 0.05f);
    for (std::size_t i = 0; i < s.params.size(); ++i) s.params[i] += noise[i];
    auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 11);
    s.set_batches(*data, 0);
    s.run();
    const std::vector<float> analytic = s.grads;
    test::expect_every_group_gradient(s, analytic);
  }
}

// Transfusion's mask: text is causal and never sees the image; the image sees the whole caption.
TEST(ExecJoint, UnifiedTextNeverSeesTheImageButTheImageSeesTheText) {
  const Plan plan = parse_plan(small_plan("unified"));
  ModelStepper s(plan);
  auto noise = test::random_vector(s.params.size(), 5, 0.05f);
  for (std::size_t i = 0; i < s.params.size(); ++i) s.params[i] += noise[i];
  auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 2);
  exec::Batch b = data->batch(0, 0, 0, 2);
  auto losses = [&](const exec::Batch& batch) {
    for (int mb = 0; mb < 2; ++mb) s.model().set_batch(mb, batch);
    s.run(true);
    return std::make_pair(s.joint().text_loss(0), s.joint().image_loss(0));
  };
  const auto base = losses(b);
  exec::Batch other_image = b;
  for (auto& x : other_image.x0) x += 0.5f;
  const auto img = losses(other_image);
  EXPECT_EQ(img.first, base.first) << "the text loss moved with the image";
  EXPECT_NE(img.second, base.second);
  exec::Batch other_text = b;
  other_text.tokens[0] = (other_text.tokens[0] + 1) % plan.model.vocab;
  const auto txt = losses(other_text);
  EXPECT_NE(txt.second, base.second) << "the image did not see the caption";
  EXPECT_NE(txt.first, base.first);
  EXPECT_DOUBLE_EQ(s.model().loss(0), txt.first + plan.training.objective.image_weight * txt.second);
}

// Trains a tiny scenario's model (its Program for one of its 2 ranks) with AdamW.
std::vector<double> train(const std::string& scenario, int steps) {
  kernels::set_num_threads(1);
  const Plan plan = load_plan(test::scenario(scenario));
  ModelStepper s(plan);
  auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 1);
  std::vector<float> m(s.params.size(), 0.f), v(s.params.size(), 0.f);
  std::vector<double> losses;
  for (int step = 1; step <= steps; ++step) {
    s.set_batches(*data, step);
    losses.push_back(s.run());
    exec::adamw_update(s.params.data(), s.grads.data(), m.data(), v.data(), s.params.size(), plan.training.optimizer,
                       step);
  }
  return losses;
}

TEST(ExecJoint, LossFallsOnSyntheticCaptionsAndLatents) {
  for (const char* scenario : {"tiny-mmdit-cpu.json", "tiny-unified-cpu.json"}) {
    const auto l = train(scenario, 30);
    // Measured here: mmdit ~1.9 -> ~1.3 (image MSE); unified ~15 -> ~11.5 (CE + 5 x MSE).
    const double first = (l[0] + l[1] + l[2]) / 3, last = (l[25] + l[26] + l[27] + l[28] + l[29]) / 5;
    EXPECT_LT(last, 0.85 * first) << scenario << ": first " << first << " last " << last;
    for (double x : l) EXPECT_TRUE(std::isfinite(x)) << scenario;
  }
}

TEST(ExecJoint, RefusesLayoutsItCannotRunPrivacyUnderSequenceParallelismAndBatchesWithoutText) {
  const Plan plan = parse_plan(small_plan("mmdit"));
  exec::ModelShard cp;
  cp.cp = 3;
  EXPECT_THROW(exec::make_model(plan, cp), InputError);  // 3 does not divide 16 image tokens
  exec::ModelShard tp;
  tp.tp = 2;
  tp.sequence_parallel = true;
  EXPECT_THROW(exec::make_model(parse_plan(small_plan("unified")), tp), InputError);  // the LM head reads every row
  tp.sequence_parallel = false;
  tp.tp = 3;
  EXPECT_THROW(exec::make_model(plan, tp), InputError);  // 3 does not divide 2 heads
  auto model = exec::make_model(plan);
  exec::ModelShard tp2;
  tp2.tp = 2;
  EXPECT_NO_THROW(exec::make_model(plan, tp2)->enable_privacy(1.0));  // DP-SGD runs under TP
  tp2.sequence_parallel = true;
  EXPECT_THROW(exec::make_model(plan, tp2)->enable_privacy(1.0), InputError);  // but not with SP
  exec::ModelShard pp2;
  pp2.pp = 2;
  EXPECT_NO_THROW(exec::make_model(plan, pp2)->enable_privacy(1.0));  // PP and CP run it too
  exec::ModelShard cp2;
  cp2.cp = 2;
  EXPECT_NO_THROW(exec::make_model(plan, cp2)->enable_privacy(1.0));
  auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 1);
  exec::Batch b = data->batch(0, 0, 0, 2);
  b.context.pop_back();
  EXPECT_THROW(model->set_batch(0, b), std::invalid_argument);
  const Plan uni = parse_plan(small_plan("unified"));
  auto u = exec::make_model(uni);
  auto udata = exec::make_synthetic_latents(uni.model, uni.training.objective, 1);
  exec::Batch ub = udata->batch(0, 0, 0, 2);
  ub.tokens[3] = uni.model.vocab;
  EXPECT_THROW(u->set_batch(0, ub), std::invalid_argument);
  EXPECT_THROW(u->run("embed.context", -1, Phase::forward, 0), std::logic_error);  // no batch yet, and no such op
  auto j = small_plan("mmdit");
  j["training"]["objective"]["image_weight"] = 2.0;  // one loss: nothing to weigh
  EXPECT_THROW(parse_plan(j), InputError);
  auto tied = small_plan("unified");
  tied["model"]["tied_embeddings"] = true;  // would be silently untied otherwise
  EXPECT_THROW(exec::make_model(parse_plan(tied)), InputError);
}

}  // namespace
}  // namespace ditwin
