// Presets and accounting against published figures and the closed forms they come from.
#include <gtest/gtest.h>

#include <cmath>

#include "model/accounting.hpp"
#include "tests/test_util.hpp"

using nlohmann::json;

namespace {

ditwin::Plan plan_with(json model, json parallelism = {{"dp", 8}}, json training = {{"global_batch", 64}, {"micro_batch", 1}}) {
  json j = ditwin::test::base_plan();
  j["model"] = model;
  j["parallelism"] = parallelism;
  j["training"] = training;
  long long world = 1;
  for (const char* k : {"dp", "tp", "pp", "cp"}) world *= parallelism.value(k, 1);
  j["cluster"]["nodes"] = (world + 7) / 8;
  j["cluster"]["devices_per_node"] = world < 8 ? world : 8;
  return ditwin::parse_plan(j);
}

// The DiT paper's "Gflops" (Table 4) are forward multiply-accumulates at 256x256.
TEST(Accounting, DitForwardGmacsMatchThePaper) {
  struct Row { const char* preset; double gmacs; };
  for (Row r : {Row{"DiT-S/2", 6.06}, Row{"DiT-B/2", 23.01}, Row{"DiT-L/2", 80.71}, Row{"DiT-XL/2", 118.64}}) {
    auto plan = plan_with({{"preset", r.preset}});
    double gmacs = ditwin::count_flops(plan).forward_per_sample / 2e9;
    EXPECT_NEAR(gmacs / r.gmacs, 1.0, 0.005) << r.preset << ": " << gmacs;
  }
}

TEST(Accounting, DitXl2HasThePapers675MParameters) {
  // DiT paper, Table 1 / released checkpoint: DiT-XL/2 has 675M parameters.
  auto p = ditwin::count_parameters(ditwin::model_preset("DiT-XL/2", "model.preset"));
  EXPECT_NEAR(p.total / 675e6, 1.0, 0.005) << p.total;
}

TEST(Accounting, LlamaAndGptParameterCounts) {
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("Llama-3-405B", "m")).total / 405e9, 1.0, 0.01);
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("Llama-3-70B", "m")).total / 70.6e9, 1.0, 0.01);
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("Llama-3-8B", "m")).total / 8.03e9, 1.0, 0.01);
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("GPT-3-175B", "m")).total / 175e9, 1.0, 0.01);
  // Megatron-LM Table 1 names its models by parameter count.
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("Megatron-145.6B", "m")).total / 145.6e9, 1.0, 0.01);
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("Megatron-1008B", "m")).total / 1008e9, 1.0, 0.01);
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("Megatron-39.1B", "m")).total / 39.1e9, 1.0, 0.01);
}

TEST(Accounting, MmditSizesMatchTheirNames) {
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("MMDiT-2B", "m")).total / 2.0e9, 1.0, 0.05);
  EXPECT_NEAR(ditwin::count_parameters(ditwin::model_preset("MMDiT-8B", "m")).total / 8.0e9, 1.0, 0.05);
}

TEST(Accounting, EveryPresetLowersAndCounts) {
  for (const auto& name : ditwin::model_preset_names()) {
    auto m = ditwin::model_preset(name, "model.preset");
    EXPECT_GT(ditwin::count_parameters(m).total, 1e6) << name;
    EXPECT_GT(m.tokens_per_sample(), 0) << name;
  }
}

TEST(Accounting, MegatronFlopsFormula) {
  // Narayanan et al. 2021, eq. 3: F = 96 B s l h^2 (1 + s/6h + V/16lh) per iteration, which
  // counts the forward twice (full activation recomputation) except for the logit layer.
  auto plan = plan_with({{"preset", "Megatron-7.5B"}});
  double B = 64, s = 2048, l = 36, h = 4096, V = 51200;
  double with_recompute = 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h));
  double model = 72 * B * s * l * h * h * (1 + s / (6 * h)) + 6 * B * s * h * V;
  EXPECT_NEAR(ditwin::count_flops(plan).model_flops_per_step / model, 1.0, 1e-9);
  plan.training.recompute = ditwin::Recompute::full;
  EXPECT_NEAR(ditwin::count_flops(plan).hardware_flops_per_step / with_recompute, 1.0, 1e-9);
}

TEST(Accounting, ZeroStagesFollowTheZeroPaper) {
  auto base = plan_with({{"preset", "DiT-XL/2"}});
  double psi = ditwin::count_parameters(base.model).total, n = 8;
  double expected[] = {16 * psi, 4 * psi + 12 * psi / n, 2 * psi + 14 * psi / n, 16 * psi / n};
  double layer = ditwin::count_parameters(base.model).per_layer;
  for (int z = 0; z <= 3; ++z) {
    base.parallelism.zero = z;
    const auto s = ditwin::account_memory(base).stages[0];  // a copy: the report is a temporary
    double states = s.weights_bytes + s.gradients_bytes + s.optimizer_bytes;
    double gathered = z == 3 ? 2 * layer * 2 + layer * 2 : 0;  // ZeRO-3 working set
    EXPECT_NEAR(states / (expected[z] + gathered), 1.0, 1e-9) << "zero " << z;
  }
}

TEST(Accounting, MemoryFallsAsZeroStageRises) {
  auto plan = plan_with({{"preset", "Llama-3-8B"}}, {{"dp", 8}});
  double last = 1e300;
  for (int z = 0; z <= 3; ++z) {
    plan.parallelism.zero = z;
    double peak = ditwin::account_memory(plan).peak_bytes();
    EXPECT_LT(peak, last) << "zero " << z;
    last = peak;
  }
}

// Korthikanti et al. 2022, eqs. 1-5: activation bytes per layer for GPT with dropout.
TEST(Accounting, ActivationsFollowKorthikanti) {
  json training = {{"global_batch", 8}, {"micro_batch", 1}, {"flash_attention", false}};
  auto plan = plan_with({{"preset", "Megatron-22B"}}, {{"dp", 1}, {"tp", 8}}, training);
  double s = 2048, b = 1, h = 6144, a = 64, t = 8;
  EXPECT_NEAR(ditwin::activation_bytes_per_layer(plan) / (s * b * h * (10 + 24 / t + 5 * a * s / (h * t))), 1, 1e-12);
  plan.parallelism.sequence_parallel = true;
  EXPECT_NEAR(ditwin::activation_bytes_per_layer(plan) / (s * b * h / t * (34 + 5 * a * s / h)), 1, 1e-12);
  plan.training.recompute = ditwin::Recompute::selective;
  EXPECT_NEAR(ditwin::activation_bytes_per_layer(plan) / (s * b * h / t * 34), 1, 1e-12);
  plan.parallelism.sequence_parallel = false;
  plan.training.recompute = ditwin::Recompute::full;
  EXPECT_NEAR(ditwin::activation_bytes_per_layer(plan) / (2 * s * b * h), 1, 1e-12);
}

TEST(Accounting, PipelineBubbleIsPMinusOneOverMPlusPMinusOne) {
  auto plan = plan_with({{"preset", "Megatron-1.7B"}}, {{"dp", 2}, {"pp", 4}}, {{"global_batch", 16}, {"micro_batch", 1}});
  EXPECT_NEAR(ditwin::pipeline_bubble_fraction(plan), 3.0 / (8 + 3), 1e-12);
}

TEST(Accounting, UnevenLayersComeOffTheEnds) {
  auto sizes = ditwin::layers_per_chunk(126, 16);
  EXPECT_EQ(sizes.front(), 7);
  EXPECT_EQ(sizes.back(), 7);
  int total = 0;
  for (int s : sizes) total += s;
  EXPECT_EQ(total, 126);
  EXPECT_EQ(ditwin::layers_per_chunk(24, 4), (std::vector<int>{6, 6, 6, 6}));
}

TEST(Accounting, DevicePresetsCarryDatasheetPeaks) {
  auto h100 = ditwin::device_preset("H100-SXM", "cluster.device");
  EXPECT_DOUBLE_EQ(h100.peak_flops(ditwin::Precision::bf16), 989.4e12);
  EXPECT_DOUBLE_EQ(h100.peak_flops(ditwin::Precision::fp8), 1978.9e12);
  EXPECT_DOUBLE_EQ(ditwin::device_preset("A100-SXM-80GB", "d").peak_flops(ditwin::Precision::bf16), 312e12);
  EXPECT_GT(ditwin::device_preset("H200", "d").memory_bytes, 140e9);
  EXPECT_GT(ditwin::device_preset("B200", "d").peak_flops_bf16, h100.peak_flops_bf16 * 2);
  EXPECT_TRUE(ditwin::device_preset("cpu", "d").measured);
}

}  // namespace
