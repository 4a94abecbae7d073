// Every validation rule of the plan: each broken plan is refused with its JSON path and rule.
#include <gtest/gtest.h>

#include <fstream>

#include "model/errors.hpp"
#include "model/program.hpp"
#include "tests/test_util.hpp"

using ditwin::test::base_plan;
using ditwin::test::plan_error;
using nlohmann::json;

namespace {

void expect_error(json j, const std::string& fragment) {
  std::string message = plan_error(j);
  EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nexpected: " << fragment;
}

TEST(PlanValidation, BasePlanParses) { EXPECT_EQ(plan_error(base_plan()), ""); }

TEST(PlanValidation, MisspeltSectionIsRefusedWithSuggestion) {
  json j = base_plan();
  j["paralelism"] = j["parallelism"];
  j.erase("parallelism");
  expect_error(j, "paralelism: unknown key (did you mean \"parallelism\"?)");
}

TEST(PlanValidation, UnknownNestedKeySuggestsClosest) {
  json j = base_plan();
  j["training"]["micro_bach"] = 2;
  expect_error(j, "training.micro_bach: unknown key (did you mean \"micro_batch\"?)");
  j = base_plan();
  j["cluster"]["network"] = {{"nic_gpbs", 400}};
  expect_error(j, "cluster.network.nic_gpbs: unknown key (did you mean \"nic_gbps\"?)");
}

TEST(PlanValidation, TensorParallelMustDivideHeads) {
  json j = base_plan();
  j["model"] = {{"preset", "DiT-XL/2"}};
  j["parallelism"] = {{"dp", 1}, {"tp", 6}};
  j["cluster"]["devices_per_node"] = 6;
  expect_error(j, "parallelism.tp: 6 does not divide model.heads 16");
}

TEST(PlanValidation, WorldSizeMustMatchCluster) {
  json j = base_plan();
  j["parallelism"]["dp"] = 4;
  expect_error(j, "parallelism: dp x tp x pp x cp = 4 x 1 x 1 x 1 = 4 ranks, but the cluster has 1 x 8 = 8 devices");
}

TEST(PlanValidation, GlobalBatchMustSplitIntoMicroBatches) {
  json j = base_plan();
  j["training"]["global_batch"] = 60;
  expect_error(j, "training.global_batch: 60 is not a multiple of micro_batch x dp = 4 x 8 = 32");
}

TEST(PlanValidation, TypesAndRanges) {
  json j = base_plan();
  j["training"]["global_batch"] = "lots";
  expect_error(j, "training.global_batch: must be an integer");
  j = base_plan();
  j["parallelism"]["zero"] = 4;
  expect_error(j, "parallelism.zero: 4 is not a ZeRO stage");
  j = base_plan();
  j["training"]["precision"] = "bf61";
  expect_error(j, "training.precision: \"bf61\" is not one of");
  j = base_plan();
  j["training"]["micro_batch"] = 0;
  expect_error(j, "training.micro_batch: must be >= 1");
  j = base_plan();
  j["cluster"]["network"] = {{"oversubscription", 0.5}};
  expect_error(j, "cluster.network.oversubscription: must be >= 1");
  j = base_plan();
  j["training"]["optimizer"] = {{"beta2", 1.0}};
  expect_error(j, "training.optimizer.beta2: must be in [0, 1)");
  j = base_plan();
  j["reliability"] = {{"checkpoint", {{"interval_min", "often"}}}};
  expect_error(j, "reliability.checkpoint.interval_min: must be a number of minutes or \"optimal\"");
}

TEST(PlanValidation, RequiredSections) {
  json j = base_plan();
  j.erase("training");
  expect_error(j, "training: is required");
  j = base_plan();
  j.erase("cluster");
  expect_error(j, "cluster: is required");
  j = base_plan();
  j["cluster"].erase("device");
  expect_error(j, "cluster.device: is required");
}

TEST(PlanValidation, UnknownPresetsSuggest) {
  json j = base_plan();
  j["model"]["preset"] = "DiT-XL-2";
  expect_error(j, "model.preset: unknown model preset \"DiT-XL-2\" (did you mean \"DiT-XL/2\"?)");
  j = base_plan();
  j["cluster"]["device"] = "H100";
  expect_error(j, "cluster.device: unknown device \"H100\"");
}

TEST(PlanValidation, ModelShapeRules) {
  json j = base_plan();
  j["model"] = {{"family", "dit"}, {"layers", 2}, {"hidden", 100}, {"heads", 3}, {"image_size", 64}};
  expect_error(j, "model.heads: 3 does not divide model.hidden 100");
  j["model"] = {{"family", "dit"}, {"layers", 2}, {"hidden", 96}, {"heads", 4}, {"image_size", 60}};
  expect_error(j, "model.image_size: 60 is not a multiple of vae_downsample x patch = 16");
  j["model"] = {{"family", "llama"}, {"layers", 2}, {"hidden", 96}, {"heads", 4}, {"kv_heads", 3}, {"seq_len", 16}, {"vocab", 64}};
  expect_error(j, "model.kv_heads: 3 does not divide model.heads 4");
  j["model"] = {{"family", "gpt"}, {"layers", 2}, {"hidden", 96}, {"heads", 4}, {"vocab", 64}};
  expect_error(j, "model.seq_len: must be > 0 for a gpt model");
  j["model"] = {{"layers", 2}};
  expect_error(j, "model.preset: is required unless \"family\"");
  j["model"] = {{"preset", "DiT-B/2"}, {"family", "gpt"}};
  expect_error(j, "model.family: \"gpt\" contradicts preset DiT-B/2");
  j["model"] = {{"preset", "MMDiT-2B"}, {"text_tokens", 0}};
  expect_error(j, "model.text_tokens: must be > 0 for an mmdit model");
}

TEST(PlanValidation, ParallelismRules) {
  json j = base_plan();
  j["model"] = {{"preset", "Llama-3-8B"}, {"seq_len", 1001}};
  j["parallelism"] = {{"dp", 1}, {"cp", 8}};
  expect_error(j, "parallelism.cp: 8 does not divide the 1001 tokens of a sample");
  j = base_plan();
  j["parallelism"] = {{"dp", 1}, {"pp", 8}};
  j["training"]["global_batch"] = 64;
  j["model"] = {{"preset", "DiT-S/2"}, {"layers", 6}};
  expect_error(j, "parallelism.pp: pp x virtual_stages = 8 exceeds model.layers 6");
  j = base_plan();
  j["parallelism"] = {{"dp", 4}, {"pp", 2}, {"schedule", "interleaved"}};
  j["training"]["global_batch"] = 12;
  j["training"]["micro_batch"] = 1;
  expect_error(j, "parallelism.schedule: interleaved 1F1B needs micro-batches per step (3) to be a multiple of pp (2)");
  j = base_plan();
  j["parallelism"]["virtual_stages"] = 2;
  expect_error(j, "parallelism.virtual_stages: > 1 needs schedule \"interleaved\"");
  j = base_plan();
  j["model"] = {{"preset", "Llama-3-8B"}, {"vocab", 128001}};
  j["parallelism"] = {{"dp", 1}, {"tp", 8}};
  expect_error(j, "parallelism.tp: 8 does not divide model.vocab 128001");
  j = base_plan();
  j["parallelism"]["fsdp"] = true;
  j["parallelism"]["zero"] = 1;
  expect_error(j, "parallelism.fsdp: true contradicts zero 1");
}

TEST(PlanValidation, StreamAndScheduleRules) {
  json j = base_plan();
  j["model"] = {{"preset", "MMDiT-2B"}, {"image_size", 256}};  // 256 image + 154 text tokens
  j["parallelism"] = {{"dp", 1}, {"cp", 5}};  // 410 tokens split in 5, but neither stream does
  j["cluster"]["devices_per_node"] = 5;
  j["training"]["global_batch"] = 4;
  expect_error(j, "parallelism.cp: 5 must divide both MMDiT streams: 256 image and 154 text tokens");
  j = base_plan();
  j["model"] = {{"family", "gpt"}, {"layers", 2}, {"hidden", 64}, {"heads", 4}, {"seq_len", 16}, {"vocab", 0}};
  expect_error(j, "model.vocab: must be > 0 for a gpt model");
  j = base_plan();
  j["parallelism"] = {{"dp", 4}, {"pp", 2}, {"schedule", "interleaved"}, {"virtual_stages", 1}};
  j["training"]["global_batch"] = 16;
  expect_error(j, "parallelism.virtual_stages: must be >= 2 with schedule \"interleaved\"");
}

TEST(PlanValidation, TrainingRules) {
  json j = base_plan();
  j["cluster"]["device"] = "A100-SXM-80GB";
  j["training"]["precision"] = "fp8";
  expect_error(j, "training.precision: fp8 is not supported by A100-SXM-80GB");
  j = base_plan();
  j["training"]["objective"] = {{"kind", "next_token"}};
  expect_error(j, "training.objective.kind: \"next_token\" needs a text model");
  j = base_plan();
  j["model"] = {{"preset", "Llama-3-8B"}};
  j["training"]["objective"] = {{"kind", "rectified_flow"}};
  expect_error(j, "training.objective.kind: \"rectified_flow\" needs images");
  j = base_plan();
  j["training"]["privacy"] = {{"enabled", true}};
  expect_error(j, "training.privacy.noise_multiplier: or target_epsilon must be set");
  j["training"]["privacy"] = {{"enabled", true}, {"noise_multiplier", 1.0}, {"dataset_size", 10}};
  expect_error(j, "training.privacy.dataset_size: must be >= training.global_batch (64)");
}

// training.objective.timesteps: each key of each kind, the shift, and the keys of one kind refused under another.
TEST(PlanValidation, TimestepStrategyRules) {
  auto with_timesteps = [](json timesteps) {
    json j = base_plan();
    j["training"]["objective"] = {{"kind", "rectified_flow"}, {"timesteps", timesteps}};
    return j;
  };
  const std::string at = "training.objective.timesteps.";
  expect_error(with_timesteps({{"kind", "cosine"}}),
               at + "kind: \"cosine\" is not one of \"uniform\" \"logit_normal\" \"mode\" \"cosmap\"");
  expect_error(with_timesteps({{"kind", "cosmpa"}}), "(did you mean \"cosmap\"?)");
  expect_error(with_timesteps({{"kind", "mode"}, {"scale", 2.0}}),
               at + "scale: must be in [-1, 2/(pi - 2) = 1.75194] (outside it f_mode is not monotone), got 2");
  expect_error(with_timesteps({{"kind", "mode"}, {"scale", -1.01}}), at + "scale: must be in [-1, ");
  expect_error(with_timesteps({{"kind", "mode"}, {"scale", "big"}}), at + "scale: must be a number");
  expect_error(with_timesteps({{"kind", "mode"}, {"s", 1.29}}),
               at + "s: belongs to kind \"logit_normal\", not \"mode\" (the mode kind's s is \"scale\")");
  expect_error(with_timesteps({{"kind", "uniform"}, {"m", 0.0}}), at + "m: belongs to kind \"logit_normal\", not \"uniform\"");
  expect_error(with_timesteps({{"kind", "cosmap"}, {"scale", 1.0}}), at + "scale: belongs to kind \"mode\", not \"cosmap\"");
  expect_error(with_timesteps({{"kind", "logit_normal"}, {"s", 0}}), at + "s: must be > 0");
  expect_error(with_timesteps({{"shift", 0}}), at + "shift: must be a number > 0 or \"auto\", got 0");
  expect_error(with_timesteps({{"shift", -3.0}}), at + "shift: must be a number > 0 or \"auto\", got -3.0");
  expect_error(with_timesteps({{"shift", "automatic"}}), at + "shift: must be a number > 0 or \"auto\", got \"automatic\"");
  expect_error(with_timesteps({{"shift", true}}), at + "shift: must be a number > 0 or \"auto\", got true");
  expect_error(with_timesteps({{"shfit", 3}}), at + "shfit: unknown key (did you mean \"shift\"?)");
  expect_error(with_timesteps({{"shift", 3}, {"base_resolution", 512}}),
               at + "base_resolution: is used only with \"shift\": \"auto\"");
  expect_error(with_timesteps({{"shift", "auto"}, {"base_resolution", 0}}), at + "base_resolution: must be >= 1");
  json lm = with_timesteps({{"shift", "auto"}});
  lm["model"] = {{"preset", "Llama-3-8B"}};
  lm["training"]["objective"]["kind"] = "next_token";
  expect_error(lm, at + "shift: \"auto\" scales with model.image_size, which a llama model does not have");

  // What parses, and what it means.
  auto objective = [&](json timesteps) { return ditwin::parse_plan(with_timesteps(timesteps)).training.objective; };
  const auto defaults = objective(json::object());
  EXPECT_EQ(defaults.timesteps, ditwin::TimestepKind::logit_normal);
  EXPECT_EQ(defaults.m, 0.0);
  EXPECT_EQ(defaults.s, 1.0);
  EXPECT_EQ(defaults.shift, 1.0);
  EXPECT_FALSE(defaults.shift_auto);
  const auto mode = objective({{"kind", "mode"}});
  EXPECT_EQ(mode.timesteps, ditwin::TimestepKind::mode);
  EXPECT_EQ(mode.mode_scale, 1.29);
  EXPECT_EQ(objective({{"kind", "mode"}, {"scale", -1}}).mode_scale, -1.0);
  const auto cosmap = objective({{"kind", "cosmap"}, {"shift", "auto"}, {"base_resolution", 512}});
  EXPECT_EQ(cosmap.timesteps, ditwin::TimestepKind::cosmap);
  EXPECT_TRUE(cosmap.shift_auto);
  EXPECT_EQ(cosmap.base_resolution, 512);
  const auto shifted = objective({{"kind", "uniform"}, {"shift", 3.0}});
  EXPECT_EQ(shifted.timesteps, ditwin::TimestepKind::uniform);
  EXPECT_EQ(shifted.shift, 3.0);
}

TEST(PlanValidation, WarningsForLegalButDoubtfulChoices) {
  json j = base_plan();
  j["model"] = {{"preset", "DiT-XL/2"}};
  j["parallelism"] = {{"dp", 1}, {"tp", 16}};
  j["cluster"]["nodes"] = 2;
  auto plan = ditwin::parse_plan(j);
  ASSERT_FALSE(plan.warnings.empty());
  EXPECT_NE(plan.warnings[0].find("spans nodes"), std::string::npos);
}

TEST(PlanValidation, BadJsonFileNamesFileAndOffset) {
  std::string path = ::testing::TempDir() + "/broken.json";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("{\"model\": {", f);
  std::fclose(f);
  try {
    ditwin::load_plan(path);
    FAIL() << "broken JSON accepted";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": not valid JSON (byte"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ditwin::load_plan("/nonexistent/plan.json"), ditwin::InputError);
}

TEST(PlanValidation, EveryScenarioParses) {
  for (const char* s : {"default.json", "tiny-cpu.json", "mmdit-8b-1024xh100.json", "unified-7b-4096xh100.json",
                        "llama3-405b-16384xh100.json"}) {
    EXPECT_NO_THROW(ditwin::load_plan(ditwin::test::scenario(s))) << s;
  }
}

// Inputs that once crashed ditwin (stack overflow, SIGFPE, bad_alloc, map::at, an escaping
// nlohmann out_of_range) or were silently accepted: each refused with its path and rule.
TEST(PlanValidation, OversizedValuesAreRefusedBeforeAnythingOverflows) {
  json j = base_plan();
  j["model"]["patch"] = 1 << 30;  // vae_downsample x patch wrapped to 0, then a modulo by it
  expect_error(j, "model.patch: 1073741824 x vae_downsample");
  j = base_plan();
  j["training"]["micro_batch"] = 1LL << 62;  // micro_batch x dp overflowed
  expect_error(j, "training.micro_batch: 4611686018427387904 exceeds global_batch");
  j = base_plan();
  j["training"]["micro_batch"] = 9223372036854775807LL;
  expect_error(j, "training.micro_batch: 9223372036854775807 exceeds global_batch");
  j = base_plan();
  j["training"]["global_batch"] = 1LL << 62;  // tokens_per_step wrapped to 0
  expect_error(j, "training.global_batch: 4611686018427387904 samples a step exceeds");
  j = base_plan();
  j["model"]["image_size"] = 1 << 30;  // tokens a sample overflowed an int
  j["model"]["patch"] = 1;
  expect_error(j, "model.image_size: 1073741824 / (vae_downsample x patch)");
}

TEST(PlanValidation, ProgramsTooLargeToBuildAreRefusedBeforeLowering) {
  json j = base_plan();
  j["model"]["layers"] = 1 << 30;  // std::bad_alloc while lowering
  ditwin::Plan plan = ditwin::parse_plan(j);
  try {
    ditwin::lower(plan);
    FAIL() << "lowered a 2^30-layer plan";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers: the step's Program would hold"), std::string::npos) << e.what();
  }
  j = base_plan();
  j["training"]["global_batch"] = 1 << 30;
  j["training"]["micro_batch"] = 1;
  plan = ditwin::parse_plan(j);
  EXPECT_THROW(ditwin::lower(plan), ditwin::InputError);
  EXPECT_NO_THROW(ditwin::lower(ditwin::parse_plan(base_plan())));
  // The budget is --max-memory's: a plan refused under a small one lowers under the default.
  ditwin::Plan small = ditwin::parse_plan(base_plan());
  std::size_t ops = ditwin::estimated_program_ops(small);
  try {
    ditwin::lower(small, ops * ditwin::program_bytes_per_op / 2);
    FAIL() << "lowered over the budget";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("(--max-memory)"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(ditwin::lower(small, ops * ditwin::program_bytes_per_op * 2));
}

TEST(PlanValidation, FilesNestedTooDeepOrWithUnrepresentableNumbersAreRefused) {
  std::string dir = ::testing::TempDir();
  auto write = [&](const std::string& name, const std::string& text) {
    std::string path = dir + "/" + name;
    std::ofstream(path) << text;
    return path;
  };
  std::string base = base_plan().dump();
  std::string deep = base;
  deep.insert(deep.size() - 1, ",\"x\":" + std::string(70000, '[') + std::string(70000, ']'));
  auto refused = [](const std::string& path, const std::string& fragment) {
    try {
      ditwin::read_json_file(path);
      ADD_FAILURE() << path << " was read";
    } catch (const ditwin::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  refused(write("deep.json", deep), "nested deeper than 64 levels");
  std::string huge = base;
  huge.insert(huge.size() - 1, ",\"x\":1e999");
  refused(write("huge.json", huge), "a number out of range");
  refused(dir, "cannot read file");
}

}  // namespace
