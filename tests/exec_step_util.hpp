// Drives the plan's exec::Model (DiT, MMDiT or unified) through one training step in the order of
// the Program's compute ops for rank 0, the way the executor does: forward, backward and
// recompute ops by name, nothing else.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "exec/model/dit_model.hpp"
#include "exec/model/joint_model.hpp"
#include "model/plan.hpp"
#include "model/program.hpp"
#include "tests/exec_test_util.hpp"

namespace ditwin::test {

class ModelStepper {
 public:
  explicit ModelStepper(const Plan& plan)
      : plan_(plan), program_(lower(plan)), micro_batches_(static_cast<int>(plan.micro_batches())),
        owned_(exec::make_model(plan)), model_(*owned_) {
    params.assign(model_.parameter_count(), 0.0f);
    grads.assign(params.size(), 0.0f);
    model_.init_parameters(params.data(), plan.training.seed);
    for (const auto& g : model_.groups()) model_.bind(g.name, params.data() + g.offset, grads.data() + g.offset);
    for (const Op& op : program_.class_of(0).ops) {
      if (op.kind != OpKind::compute) continue;
      if (op.phase != Phase::forward && op.phase != Phase::backward && op.phase != Phase::recompute) continue;
      steps_.push_back({op.part, op.layer, op.microbatch, op.phase});
    }
  }

  exec::Model& model() { return model_; }
  exec::DiT& dit() { return dynamic_cast<exec::DiT&>(model_); }
  exec::JointModel& joint() { return dynamic_cast<exec::JointModel&>(model_); }
  int micro_batches() const { return micro_batches_; }
  const Program& program() const { return program_; }

  void set_batches(exec::SyntheticData& data, std::int64_t step, int rank = 0) {
    for (int mb = 0; mb < micro_batches_; ++mb)
      model_.set_batch(mb, data.batch(step, rank, mb, static_cast<int>(plan_.training.micro_batch)));
  }
  // Forward (and backward unless forward_only) of every micro-batch; the mean loss.
  double run(bool forward_only = false) {
    if (!forward_only) std::fill(grads.begin(), grads.end(), 0.0f);
    for (const auto& s : steps_) {
      if (forward_only && s.phase == Phase::backward) continue;
      model_.run(s.part, s.layer, s.phase, s.microbatch);
    }
    double loss = 0;
    for (int mb = 0; mb < micro_batches_; ++mb) loss += model_.loss(mb);
    return loss / micro_batches_;
  }

  std::vector<float> params, grads;

 private:
  struct Step {
    std::string part;
    int layer, microbatch;
    Phase phase;
  };
  Plan plan_;
  Program program_;
  int micro_batches_;
  std::unique_ptr<exec::Model> owned_;
  exec::Model& model_;
  std::vector<Step> steps_;
};

// The whole model's gradient (`analytic`, from s.run()) against central differences: the four
// largest and six random coordinates of every parameter group.
inline void expect_every_group_gradient(ModelStepper& s, const std::vector<float>& analytic) {
  std::mt19937 gen(3);
  for (const auto& g : s.model().groups()) {
    std::vector<std::size_t> idx(g.size);
    std::iota(idx.begin(), idx.end(), g.offset);
    std::partial_sort(idx.begin(), idx.begin() + 4, idx.end(),
                      [&](std::size_t a, std::size_t b) { return std::abs(analytic[a]) > std::abs(analytic[b]); });
    std::vector<std::size_t> coords(idx.begin(), idx.begin() + 4);
    std::uniform_int_distribution<std::size_t> pick(g.offset, g.offset + g.size - 1);
    for (int i = 0; i < 6; ++i) coords.push_back(pick(gen));
    expect_gradient(s.params, analytic, [&] { return s.run(true); }, "group " + g.name, 2e-2, 2e-3f, coords);
  }
}

// A small DiT on one rank: 2 layers, hidden 32, 2 heads, 8x8x4 latents in 2x2 patches (16 tokens),
// 3 classes, learn_sigma (so the loss ignores half of the output), 2 micro-batches of 2.
inline nlohmann::json small_dit_plan() {
  return nlohmann::json::parse(R"({
    "name": "small-dit",
    "model": {"family": "dit", "layers": 2, "hidden": 32, "heads": 2, "ffn_hidden": 64, "image_size": 64,
              "patch": 2, "latent_channels": 4, "num_classes": 3, "learn_sigma": true, "frequency_embedding": 16},
    "training": {"global_batch": 4, "micro_batch": 2, "precision": "fp32",
                 "optimizer": {"kind": "adamw", "lr": 1e-3},
                 "objective": {"kind": "rectified_flow", "timesteps": {"kind": "logit_normal", "m": 0.0, "s": 1.0}},
                 "seed": 7},
    "parallelism": {"dp": 1},
    "cluster": {"device": "cpu", "nodes": 1, "devices_per_node": 1},
    "run": {"steps": 1}
  })");
}

// Small text-and-image models on one rank (mmdit or unified), 2 micro-batches of 2.
inline nlohmann::json small_joint_plan(const std::string& family) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "name": "small-joint",
    "training": {"global_batch": 4, "micro_batch": 2, "precision": "fp32",
                 "optimizer": {"kind": "adamw", "lr": 1e-3}, "objective": {"kind": "rectified_flow"}, "seed": 7},
    "parallelism": {"dp": 1},
    "cluster": {"device": "cpu", "nodes": 1, "devices_per_node": 1},
    "run": {"steps": 1}
  })");
  if (family == "mmdit")
    j["model"] = {{"family", "mmdit"}, {"layers", 2}, {"hidden", 32}, {"heads", 2}, {"ffn_hidden", 64},
                  {"image_size", 64}, {"patch", 2}, {"latent_channels", 4}, {"text_tokens", 4},
                  {"context_dim", 8}, {"pooled_dim", 6}, {"frequency_embedding", 16}};
  else
    j["model"] = {{"family", "unified"}, {"layers", 2}, {"hidden", 32}, {"heads", 2}, {"ffn_hidden", 48},
                  {"image_size", 64}, {"patch", 2}, {"latent_channels", 4}, {"text_tokens", 6},
                  {"vocab", 11}, {"frequency_embedding", 16}};
  return j;
}

}  // namespace ditwin::test
