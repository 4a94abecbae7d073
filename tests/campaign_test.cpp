// Multi-stage plans (plan key `stages`): each stage is the base plan with its overrides, validated
// like a plan with errors naming `stages[i]`; a simulated campaign's totals are the sums of its
// stages; resharding costs time exactly when the layout changes.
#include <gtest/gtest.h>

#include <cmath>

#include "cost_models/reliability.hpp"
#include "model/accounting.hpp"
#include "model/errors.hpp"
#include "sim/campaign.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace ditwin;

std::string error_of(const nlohmann::json& j) {
  try {
    parse_plan(j);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

nlohmann::json staged(const nlohmann::json& stages) {
  auto j = test::base_plan();
  j["stages"] = stages;
  return j;
}

TEST(Stages, EachStageIsTheBasePlanWithItsOverrides) {
  auto j = staged(nlohmann::json::parse(R"([
    {"name": "low"},
    {"model": {"image_size": 512}, "training": {"global_batch": 32, "optimizer": {"lr": 5e-5}},
     "parallelism": {"dp": 4, "tp": 2}, "run": {"steps": 7}},
    {"run": {"tokens": 1e6}}
  ])"));
  Plan p = parse_plan(j);
  ASSERT_EQ(p.stages.size(), 3u);
  EXPECT_EQ(p.stages[0].stage_name, "low");
  EXPECT_EQ(p.stages[1].stage_name, "stage 2");
  EXPECT_EQ(p.stages[0].model.image_size, 256);
  EXPECT_EQ(p.stages[1].model.image_size, 512);
  EXPECT_EQ(p.stages[1].training.global_batch, 32);
  EXPECT_DOUBLE_EQ(p.stages[1].training.optimizer.lr, 5e-5);
  EXPECT_DOUBLE_EQ(p.stages[1].training.optimizer.beta2, p.training.optimizer.beta2);  // merged, not replaced
  EXPECT_EQ(p.stages[1].parallelism.tp, 2);
  EXPECT_EQ(p.stages[1].run.steps, 7);
  EXPECT_EQ(p.stages[0].run.steps, p.run.steps);
  // 1e6 tokens at 64 samples x 256 tokens a step: ceil(61.03) steps.
  EXPECT_EQ(p.stages[2].run.steps, 62);
  EXPECT_TRUE(p.stages[0].stages.empty());
  EXPECT_FALSE(layout_changes(p.stages[0], p.stages[2]));
  EXPECT_TRUE(layout_changes(p.stages[0], p.stages[1]));
  // A resolution change keeps the parameters (DiT's positions are fixed sin-cos).
  EXPECT_EQ(count_parameters(p.stages[1].model).total, count_parameters(p.model).total);
}

TEST(Stages, ErrorsNameTheStageAndThePath) {
  auto tp = error_of(staged(nlohmann::json::parse(R"([{}, {"parallelism": {"dp": 1, "tp": 8}}])")));
  EXPECT_EQ(tp, "stages[1].parallelism.tp: 8 does not divide model.heads 12") << tp;
  auto world = error_of(staged(nlohmann::json::parse(R"([{"parallelism": {"tp": 2}}])")));
  EXPECT_EQ(world.rfind("stages[0].parallelism: dp x tp x pp x cp = 8 x 2 x 1 x 1 = 16 ranks", 0), 0u) << world;
  auto hidden = error_of(staged(nlohmann::json::parse(R"([{"model": {"hidden": 1024}}])")));
  EXPECT_EQ(hidden.rfind("stages[0].model.hidden: not a stage override", 0), 0u) << hidden;
  auto cluster = error_of(staged(nlohmann::json::parse(R"([{}, {"cluster": {"nodes": 2}}])")));
  EXPECT_EQ(cluster.rfind("stages[1].cluster: not a stage override", 0), 0u) << cluster;
  auto batch = error_of(staged(nlohmann::json::parse(R"([{"training": {"global_batch": 12}}])")));
  EXPECT_EQ(batch.rfind("stages[0].training.global_batch: 12 is not a multiple", 0), 0u) << batch;
  auto size = error_of(staged(nlohmann::json::parse(R"([{"model": {"image_size": 100}}])")));
  EXPECT_EQ(size.rfind("stages[0].model.image_size", 0), 0u) << size;
  auto both = error_of(staged(nlohmann::json::parse(R"([{"run": {"steps": 3, "tokens": 100}}])")));
  EXPECT_EQ(both.rfind("stages[0].run.tokens: give run.steps or run.tokens", 0), 0u) << both;
  auto typo = error_of(staged(nlohmann::json::parse(R"([{"parallelism": {"tpp": 2}}])")));
  EXPECT_EQ(typo.rfind("stages[0].parallelism.tpp: unknown key", 0), 0u) << typo;
  EXPECT_EQ(error_of(staged(nlohmann::json::array())).rfind("stages: must hold at least one stage", 0), 0u);
  EXPECT_EQ(error_of(staged(nlohmann::json::object())).rfind("stages: must be an array", 0), 0u);
  // A GPT's learned positions grow with seq_len: its weights could not carry over.
  auto gpt = nlohmann::json::parse(R"({"model": {"preset": "Megatron-1.7B"}, "training": {"global_batch": 8},
    "cluster": {"device": "H100-SXM", "nodes": 1, "devices_per_node": 1},
    "stages": [{"model": {"seq_len": 4096}}]})");
  auto grow = error_of(gpt);
  EXPECT_EQ(grow.rfind("stages[0].model: changes the parameter count", 0), 0u) << grow;
}

// Step times and MFU by hand: the campaign model is tested apart from the step simulator.
sim::CampaignResult play(const Plan& p, int trials) {
  std::vector<double> step(p.stages.size()), mfu(p.stages.size(), 0.4);
  for (std::size_t i = 0; i < step.size(); ++i) step[i] = 0.5 * static_cast<double>(i + 1);
  sim::LongRunOptions o;
  o.trials = trials;
  o.seed = 3;
  return sim::simulate_campaign(sim::campaign_stages(p, step, mfu), o);
}

Plan short_campaign() {
  auto j = read_json_file(test::scenario("dit-xl2-campaign-1024xh100.json"));
  // A few days a stage keeps the test short; the failure model and layouts stay the scenario's.
  j["stages"][0]["run"] = {{"steps", 200000}};
  j["stages"][1]["run"] = {{"steps", 100000}};
  j["stages"][2]["run"] = {{"steps", 40000}};
  return parse_plan(j);
}

TEST(Campaign, TotalsEqualTheSumOfTheStages) {
  Plan p = short_campaign();
  auto report = sim::to_json(play(p, 12));
  ASSERT_EQ(report["stages"].size(), 3u);
  double wall = 0, gpu_hours = 0, productive = 0, tokens = 0;
  nlohmann::json lost = nlohmann::json::object();
  for (const auto& s : report["stages"]) {
    EXPECT_GT(s["ettr"].get<double>(), 0.5);
    EXPECT_LT(s["ettr"].get<double>(), 1.0);
    wall += s["wall_days"].get<double>();
    gpu_hours += s["gpu_hours"].get<double>();
    productive += s["productive_s"].get<double>();
    tokens += s["tokens"].get<double>();
    double stage_lost = 0;
    for (const auto& [k, v] : s["lost_hours_by_cause"].items()) {
      lost[k] = lost.value(k, 0.0) + v.get<double>();
      stage_lost += v.get<double>();
    }
    // A stage's wall-clock is its productive time plus its lost time, transition included.
    EXPECT_NEAR(s["productive_s"].get<double>() / 3600 + stage_lost, s["wall_days"].get<double>() * 24,
                1e-9 * s["wall_days"].get<double>() * 24);
    EXPECT_NEAR(s["gpu_hours"].get<double>(), s["wall_days"].get<double>() * 24 * 1024, 1e-6);
  }
  EXPECT_NEAR(report["wall_days"].get<double>(), wall, 1e-12 * wall);
  EXPECT_NEAR(report["gpu_hours"].get<double>(), gpu_hours, 1e-12 * gpu_hours);
  EXPECT_NEAR(report["productive_s"].get<double>(), productive, 1e-12 * productive);
  EXPECT_NEAR(report["tokens"].get<double>(), tokens, 1e-12 * tokens);
  EXPECT_NEAR(report["ettr"].get<double>(), productive / (wall * 86400), 1e-12);
  for (const auto& [k, v] : lost.items())
    EXPECT_NEAR(report["lost_hours_by_cause"][k].get<double>(), v.get<double>(), 1e-9) << k;
  // The trial-by-trial campaign lengths average to the same total.
  EXPECT_NEAR(report["wall_days_trials"]["mean"].get<double>(), wall, 1e-9 * wall);
  // Nominal work is what the stages ask for: steps x step time, kept as productive time.
  double work = 200000 * 0.5 + 100000 * 1.0 + 40000 * 1.5;
  EXPECT_NEAR(productive, work, 1e-6 * work);
}

TEST(Campaign, ReshardingCostsTimeExactlyWhenTheLayoutChanges) {
  Plan p = short_campaign();
  ASSERT_FALSE(layout_changes(p.stages[0], p.stages[1]));  // 256 -> 512 px: dp 1024 both
  ASSERT_TRUE(layout_changes(p.stages[1], p.stages[2]));   // 512 -> 1024 px: dp 512 x tp 2
  auto stages = sim::campaign_stages(p, {0.5, 1.0, 1.5}, {0.4, 0.4, 0.4});
  EXPECT_EQ(stages[0].transition.total_s(), 0);
  EXPECT_FALSE(stages[1].transition.layout_changed);
  EXPECT_EQ(stages[1].transition.total_s(), 0);
  const auto& t = stages[2].transition;
  EXPECT_TRUE(t.layout_changed);
  // Priced from the checkpoint bytes and the store's bandwidths the long-run model uses: 12 bytes
  // a parameter (fp32 master + AdamW m, v), a node's share written at 2 GB/s and read at 4 GB/s,
  // plus a process start (60 s) and communicator init (30 s) under the new layout.
  double bytes = count_parameters(p.model).total * 12;
  EXPECT_DOUBLE_EQ(t.bytes, bytes);
  EXPECT_NEAR(t.save_s, bytes / 128 / 2e9, 1e-9);
  EXPECT_NEAR(t.load_s, bytes / 128 / 4e9, 1e-9);
  EXPECT_DOUBLE_EQ(t.restart_s, 90);
  EXPECT_EQ(cost::checkpoint_costs(p.stages[1]).bytes, bytes);
  // The same in the report: resharding is a lost-time cause of the stage it leads into, only there.
  sim::LongRunOptions o;
  o.trials = 2;
  auto report = sim::to_json(sim::simulate_campaign(stages, o));
  EXPECT_EQ(report["stages"][0]["lost_hours_by_cause"]["resharding"].get<double>(), 0);
  EXPECT_EQ(report["stages"][1]["lost_hours_by_cause"]["resharding"].get<double>(), 0);
  EXPECT_NEAR(report["stages"][2]["lost_hours_by_cause"]["resharding"].get<double>(), t.total_s() / 3600, 1e-12);
  EXPECT_NEAR(report["lost_hours_by_cause"]["resharding"].get<double>(), t.total_s() / 3600, 1e-12);
  // Changing only the ZeRO stage reshards too (the optimizer states move between ranks).
  auto j = read_json_file(test::scenario("dit-xl2-campaign-1024xh100.json"));
  j["stages"][1]["parallelism"] = {{"zero", 2}};
  Plan z = parse_plan(j);
  EXPECT_TRUE(layout_changes(z.stages[0], z.stages[1]));
  EXPECT_GT(sim::stage_transition(z.stages[0], z.stages[1]).total_s(), 0);
}

}  // namespace
