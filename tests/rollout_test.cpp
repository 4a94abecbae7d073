// Controlled rollouts (issue 18 part 3): reliability.rollouts is validated with errors naming the
// key, and the long-run simulator's mean rollout cost matches its analytic value.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "model/errors.hpp"
#include "model/plan.hpp"
#include "sim/longrun.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace ditwin;

nlohmann::json with_rollout(const nlohmann::json& rollout) {
  auto j = read_json_file(test::scenario("tiny-cpu.json"));
  j["reliability"]["rollouts"] = nlohmann::json::array({rollout});
  return j;
}

std::string error_of(const nlohmann::json& document) {
  try {
    parse_plan(document);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

nlohmann::json good() {
  return {{"at_step", 8}, {"change", "lr up"}, {"plan", {{"training", {{"optimizer", {{"lr", 0.01}}}}}}},
          {"watch_steps", 4}, {"regression", {{"step_time", 0.2}}}, {"regress_probability", 0.3}};
}

TEST(Rollouts, AValidRolloutResolvesItsSecondPlanUnderTheStageRule) {
  Plan p = parse_plan(with_rollout(good()));
  ASSERT_EQ(p.reliability.rollouts.size(), 1u);
  const auto& r = p.reliability.rollouts[0];
  EXPECT_EQ(r.at_step, 8);
  EXPECT_EQ(r.watch_steps, 4);
  EXPECT_DOUBLE_EQ(r.regress_probability, 0.3);
  EXPECT_DOUBLE_EQ(r.plan_document["training"]["optimizer"]["lr"].get<double>(), 0.01);
  EXPECT_FALSE(r.plan_document["reliability"].contains("rollouts"));
}

TEST(Rollouts, ErrorsNameTheRolloutsKey) {
  auto bad = [](const char* key, const nlohmann::json& value) {
    auto r = good();
    if (value.is_null()) r.erase(key);
    else r[key] = value;
    return error_of(with_rollout(r));
  };
  EXPECT_NE(bad("at_step", 20).find("reliability.rollouts[0].at_step"), std::string::npos);  // run.steps is 20
  EXPECT_NE(bad("at_hours", 1).find("reliability.rollouts[0].at_step: give exactly one"), std::string::npos);
  EXPECT_NE(bad("regress_probability", 1.5).find("reliability.rollouts[0].regress_probability"), std::string::npos);
  EXPECT_NE(bad("watch_steps", 40).find("reliability.rollouts[0].watch_steps"), std::string::npos);
  EXPECT_NE(bad("watch_steps", nullptr).find("reliability.rollouts[0].watch_minutes: give exactly one"), std::string::npos);
  EXPECT_NE(bad("regression", {{"step_tme", 0.1}}).find("reliability.rollouts[0].regression.step_tme"), std::string::npos);
  // The second plan: the stage rule's keys, and every plan rule.
  EXPECT_NE(bad("plan", {{"model", {{"layers", 8}}}}).find("reliability.rollouts[0].plan.model.layers: not a stage override"),
            std::string::npos);
  EXPECT_NE(bad("plan", {{"training", {{"micro_batch", 3}}}}).find("reliability.rollouts[0].plan.training.global_batch"),
            std::string::npos);
  EXPECT_NE(bad("colour", "red").find("reliability.rollouts[0].colour"), std::string::npos);
  auto two = with_rollout(good());
  two["reliability"]["rollouts"].push_back(good());  // the same step: inside the first one's window
  EXPECT_NE(error_of(two).find("reliability.rollouts[1].at_step: must come after"), std::string::npos);
}

TEST(Rollouts, APlanFileIsResolvedRelativeToThePlan) {
  std::string dir = ::testing::TempDir() + "/rollout_files";
  std::filesystem::create_directories(dir);
  auto second = read_json_file(test::scenario("tiny-cpu.json"));
  second["training"]["micro_batch"] = 2;
  std::ofstream(dir + "/second.json") << second.dump();
  auto r = good();
  r["plan"] = "second.json";
  std::ofstream(dir + "/first.json") << with_rollout(r).dump();
  Plan p = load_plan(dir + "/first.json");
  EXPECT_EQ(p.reliability.rollouts[0].plan_document["training"]["micro_batch"].get<int>(), 2);
  r["plan"] = "missing.json";
  std::ofstream(dir + "/bad.json") << with_rollout(r).dump();
  try {
    load_plan(dir + "/bad.json");
    FAIL() << "a missing second plan was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("reliability.rollouts[0].plan ("), std::string::npos) << e.what();
  }
}

// Expected cost of one rollout: restart (stop write + process start + comm init + load) + p x
// (watched window + rollback restart). 4,000 trials of a failure-free run: the mean's standard
// error is window x sqrt(p(1-p)/n) = 0.7% of the window; 4 standard errors is the tolerance.
TEST(Rollouts, MeanRolloutCostMatchesTheAnalyticValue) {
  sim::LongRunInputs in;
  in.plan = "rollouts";
  in.step_time_s = 1;
  in.interval_s = 1800;
  in.work_s = 10 * 86400.0;
  in.process_start_s = 60;
  in.comm_init_s = 30;
  in.load_s = 45;
  in.stop_write_s = 20;
  in.rollouts.push_back({"a", 86400, -1, 1800, 0.3, true});
  in.rollouts.push_back({"b", -1, 5 * 86400, 3600, 0.1, true});
  in.rollouts.push_back({"c", 8 * 86400, -1, 600, 0.5, false});
  sim::LongRunOptions o;
  o.trials = 4000;
  o.seed = 7;
  sim::LongRunResult r = sim::simulate_longrun(in, o);
  double restart = 60 + 30 + 45, mean = 0;
  double analytic = (20 + restart + 0.3 * (1800 + restart)) + (20 + restart + 0.1 * (3600 + restart)) + (0.5 * (600 + restart));
  EXPECT_NEAR(in.rollout_expected_s(), analytic, 1e-9);
  for (const auto& t : r.trials) {
    mean += t.lost_s[static_cast<int>(sim::Cause::rollout)] / r.trials.size();
    double lost = 0;
    for (double l : t.lost_s) lost += l;
    EXPECT_NEAR(t.productive_s + lost, t.wall_s, 1e-6);
    EXPECT_EQ(t.rollouts, 3);
  }
  double se = std::sqrt(1800.0 * 1800 * 0.3 * 0.7 + 3600.0 * 3600 * 0.1 * 0.9 + 600.0 * 600 * 0.25) / std::sqrt(4000.0);
  EXPECT_NEAR(mean, analytic, 4 * se) << "standard error " << se << " s";
  auto j = sim::to_json(r);
  EXPECT_NEAR(j["lost_hours_by_cause"]["rollout"].get<double>() * 3600, mean, 1e-6);
  EXPECT_NEAR(j["rollouts"]["analytic_lost_hours"].get<double>() * 3600, analytic, 1e-6);
}

TEST(Rollouts, NeverRegressingRolloutsCostTheirRestartsOnlyAndWindowsGiveTime) {
  sim::LongRunInputs in;
  in.step_time_s = 1;
  in.interval_s = 600;
  in.duration_s = 86400;  // a fixed window: the rollout's time comes out of training
  in.process_start_s = 10;
  in.stop_write_s = 5;
  in.rollouts.push_back({"x", 3600, -1, 900, 0, true});
  in.rollouts.push_back({"never reached", -1, 2 * 86400, 900, 1, true});
  sim::LongRunOptions o;
  o.trials = 4;
  o.timeline = true;
  auto r = sim::simulate_longrun(in, o);
  for (const auto& t : r.trials) {
    EXPECT_NEAR(t.lost_s[static_cast<int>(sim::Cause::rollout)], 5 + 10 + 30, 1e-9);  // stop write, process start, comm init (default)
    EXPECT_NEAR(t.wall_s, 86400, 1e-6);
    EXPECT_EQ(t.rollouts, 1);
  }
  bool lane = false;
  for (const auto& e : r.timeline) lane = lane || e.category == "rollout";
  EXPECT_TRUE(lane);
}

}  // namespace
