// Closed-form reliability models, failure presets and checkpoint costs against published figures.
#include <gtest/gtest.h>

#include "cost_models/reliability.hpp"
#include "model/accounting.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace ditwin;
constexpr double day = 86400;

TEST(Reliability, YoungAndDalyIntervalsMatchPublishedExample) {
  // delta = 5 min, M = 24 h: Young sqrt(2 delta M) = 120 min, Daly 116.7 min (issue 4).
  EXPECT_NEAR(cost::young_interval_s(300, day) / 60, 120.0, 1e-9);
  EXPECT_NEAR(cost::daly_interval_s(300, day) / 60, 116.7, 0.05);
  // Beyond delta >= 2M Daly checkpoints once per MTBF.
  EXPECT_DOUBLE_EQ(cost::daly_interval_s(3 * day, day), day);
}

TEST(Reliability, MetaEttrModelMatchesKokolisFigures) {
  double r = 6.5e-3 / day;  // RSC-1 failures per node-second
  EXPECT_NEAR(cost::meta_ettr(2000, r, 300, 3600, 0), 0.684, 0.001);
  EXPECT_NEAR(cost::meta_ettr(2000, r, 300, 300, 0), 0.932, 0.001);
  // The stall term: w = interval halves the ETTR.
  EXPECT_NEAR(cost::meta_ettr(2000, 0, 300, 600, 600), 0.5, 1e-12);
}

TEST(Reliability, RenewalModelAgreesWithMetaToFirstOrder) {
  // Rare failures: both models are 1 - lambda (u0 + interval / 2) to first order.
  double lambda = 10 * 6.5e-3 / day;
  EXPECT_NEAR(cost::renewal_ettr(lambda, 600, 0, 0, 300), cost::meta_ettr(10, 6.5e-3 / day, 300, 600, 0), 1e-4);
  // Frequent failures within an interval: the exact model keeps more than the linear one.
  double big = 2000 * 6.5e-3 / day;
  EXPECT_GT(cost::renewal_ettr(big, 3600, 0, 0, 300), cost::meta_ettr(2000, 6.5e-3 / day, 300, 3600, 0) + 0.02);
  // No failures: only the stall costs.
  EXPECT_NEAR(cost::renewal_ettr(0, 900, 100, 0, 300), 0.9, 1e-12);
  // A slower persist loses checkpoints a failure would otherwise have kept.
  EXPECT_LT(cost::renewal_ettr(big, 600, 0, 300, 300), cost::renewal_ettr(big, 600, 0, 0, 300));
}

TEST(Reliability, Llama3PresetReproducesTable5Counts) {
  auto m = cost::failure_preset("llama3", 8);
  ASSERT_EQ(m.categories.size(), 18u);
  double node_days = 2048.0 * 54;
  EXPECT_NEAR(m.unexpected_per_node_s() * day * node_days, 419, 1e-6);
  EXPECT_NEAR(m.planned_per_node_s * day * node_days, 47, 1e-6);
  EXPECT_EQ(m.categories[0].name, "faulty_gpu");
  EXPECT_NEAR(m.categories[0].per_node_s * day * node_days, 148, 1e-6);
  EXPECT_NEAR(419 / 54.0, 7.76, 0.01);  // the interruption rate the long-run replay must show
  // Rates scale with GPUs: a 4-GPU node fails half as often.
  EXPECT_NEAR(cost::failure_preset("llama3", 4).unexpected_per_node_s(), m.unexpected_per_node_s() / 2, 1e-18);
}

TEST(Reliability, MetaRscPresetIsSixPointFivePerThousandNodeDays) {
  auto m = cost::failure_preset("meta-rsc", 8);
  EXPECT_NEAR(m.unexpected_per_node_s() * day * 1000, 6.5, 1e-9);
  EXPECT_EQ(cost::failure_preset("none", 8).unexpected_per_node_s(), 0);
}

TEST(Reliability, PlanCategoriesReplaceOrExtendThePreset) {
  auto j = test::base_plan();
  j["reliability"] = nlohmann::json::parse(R"({"failure_rate_scale": 2, "failures": {"preset": "llama3",
      "distribution": "weibull", "weibull_shape": 0.8, "planned_per_node_day": 0,
      "categories": [{"name": "faulty_gpu", "per_node_day": 0.001},
                     {"name": "cosmic_ray", "per_device_hour": 1e-6, "detection": "timeout", "node_lost": false}]}})");
  Plan p = parse_plan(j);
  auto m = cost::failure_model(p.reliability, 8);
  ASSERT_EQ(m.categories.size(), 19u);
  EXPECT_NEAR(m.categories[0].per_node_s * day, 0.002, 1e-12);  // replaced, then scaled
  EXPECT_EQ(m.categories.back().name, "cosmic_ray");
  EXPECT_NEAR(m.categories.back().per_node_s * 3600, 2 * 8e-6, 1e-15);
  EXPECT_TRUE(m.categories.back().hang);
  EXPECT_FALSE(m.categories.back().node_lost);
  EXPECT_EQ(m.planned_per_node_s, 0);
  EXPECT_DOUBLE_EQ(m.weibull_shape, 0.8);
}

TEST(Reliability, BadFailureModelsAreRefusedWithTheirPath) {
  auto j = test::base_plan();
  j["reliability"] = nlohmann::json::parse(R"({"failures": {"categories": [{"name": "x", "per_node_day": 1, "per_device_hour": 1}]}})");
  EXPECT_NE(test::plan_error(j).find("reliability.failures.categories[0].per_node_day: give exactly one"), std::string::npos)
      << test::plan_error(j);
  j["reliability"] = nlohmann::json::parse(R"({"failures": {"categories": [{"name": "x", "per_node_day": 1, "detect": "timeout"}]}})");
  EXPECT_NE(test::plan_error(j).find("reliability.failures.categories[0].detect: unknown key"), std::string::npos)
      << test::plan_error(j);
  j["reliability"] = nlohmann::json::parse(R"({"failures": {"preset": "llama3", "weibull_shape": 0.7}})");
  EXPECT_NE(test::plan_error(j).find("reliability.failures.weibull_shape: needs"), std::string::npos) << test::plan_error(j);
  j["reliability"] = nlohmann::json::parse(R"({"failures": "llama4"})");
  EXPECT_NE(test::plan_error(j).find("reliability.failures"), std::string::npos);
  j["reliability"] = nlohmann::json::parse(R"({"checkpoint": {"write_s": -1}})");
  EXPECT_NE(test::plan_error(j).find("reliability.checkpoint.write_s: must be >= 0"), std::string::npos);
}

TEST(Reliability, CheckpointCostsFollowThePlanSizeAndBandwidth) {
  Plan p = load_plan(test::scenario("llama3-405b-16384xh100.json"));
  double params = count_parameters(p.model).total;
  p.reliability.checkpoint.mode = "sync";
  auto sync = cost::checkpoint_costs(p);
  EXPECT_NEAR(sync.bytes, params * 12, 1);  // fp32 master + Adam m and v
  EXPECT_NEAR(sync.bytes_per_node, sync.bytes / 2048, 1);
  EXPECT_NEAR(sync.stall_s, sync.bytes_per_node / p.reliability.checkpoint.write_bytes_per_s, 1e-9);
  EXPECT_EQ(sync.persist_s, 0);
  p.reliability.checkpoint.mode = "async";
  auto async = cost::checkpoint_costs(p);
  EXPECT_NEAR(async.stall_s, sync.bytes / 16384 / p.reliability.checkpoint.snapshot_bytes_per_s, 1e-9);
  EXPECT_NEAR(async.persist_s, sync.stall_s, 1e-9);
  p.reliability.checkpoint.mode = "in_memory";
  auto mem = cost::checkpoint_costs(p);
  EXPECT_LT(mem.load_s, async.load_s);  // 8 x 400 Gb/s to a peer beats 32 Gb/s from the store
  p.reliability.checkpoint.load_s = 42;
  EXPECT_EQ(cost::checkpoint_costs(p).load_s, 42);
}

}  // namespace
