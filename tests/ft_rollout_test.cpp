// Controlled rollouts run for real by the supervisor (mpirun, 2 ranks, tiny-cpu): a rollout that
// regresses is rolled back within its window and the run ends on the first plan with the weights
// of a run that never rolled out; a rollout that does not regress is kept.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "model/plan.hpp"
#include "tests/test_util.hpp"

namespace {

namespace fs = std::filesystem;
constexpr int steps = 14;  // the rollout at step 8, its window of 4 steps, 2 more after it

struct RolloutRun {
  int rc = -1;
  std::string log;
  std::string parameters;
  nlohmann::json report;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

RolloutRun supervised(const std::string& plan, const std::string& tag) {
  std::string base = ::testing::TempDir() + "/rollout_" + tag;
  fs::remove_all(base + ".ck");
  std::string cmd = std::string(DITWIN_BINARY) + " execute " + plan + " --steps " + std::to_string(steps) +
                    " --ranks 2 --supervise --fresh --checkpoint-dir " + base + ".ck --save-parameters " + base +
                    ".params --report " + base + ".report.json </dev/null > " + base + ".log 2>&1";
  RolloutRun r;
  int status = std::system(cmd.c_str());
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.log = slurp(base + ".log");
  r.parameters = slurp(base + ".params");
  if (fs::exists(base + ".report.json")) r.report = ditwin::read_json_file(base + ".report.json");
  return r;
}

std::vector<std::string> rollout_events(const nlohmann::json& report) {
  std::vector<std::string> out;
  for (const auto& e : report["events"]) {
    std::string k = e.value("event", "");
    if (k.rfind("rollout_", 0) == 0) out.push_back(k);
  }
  return out;
}


TEST(FtRollout, ARegressedRolloutIsRolledBackWithinItsWindowAndEndsOnTheFirstPlan) {
  RolloutRun plain = supervised(ditwin::test::scenario("tiny-cpu.json"), "plain");
  ASSERT_EQ(plain.rc, 0) << plain.log;
  RolloutRun r = supervised(ditwin::test::scenario("tiny-cpu-rollout.json"), "regressed");
  ASSERT_EQ(r.rc, 0) << r.log;
  EXPECT_EQ(rollout_events(r.report),
            (std::vector<std::string>{"rollout_start", "rollout_regressed", "rollout_rolled_back"}))
      << r.log;
  // Within the window: the regression is judged on the window's 4 steps, and the roll-back goes to
  // the checkpoint of the rollout's step, from which the last attempt resumed.
  for (const auto& e : r.report["events"]) {
    if (e.value("event", "") == "rollout_regressed") { EXPECT_EQ(e["window_steps"].get<int>(), 4); }
    if (e.value("event", "") == "rollout_rolled_back") { EXPECT_EQ(e["to_step"].get<int>(), 8); }
  }
  int attempts = r.report["supervisor"]["attempts"].get<int>();
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(r.report["supervisor"]["restarts"].get<int>(), 0);
  EXPECT_EQ(r.report["supervisor"]["planned_restarts"].get<int>(), 2);
  bool last_on_first = false;
  for (const auto& e : r.report["events"])
    if (e.value("event", "") == "rollout_rolled_back")
      last_on_first = e.value("plan", "").find("tiny-cpu-rollout.json") != std::string::npos;
  EXPECT_TRUE(last_on_first);
  EXPECT_GT(r.report["lost_seconds_by_cause"]["rollout"].get<double>(), 0);
  EXPECT_NEAR(r.report["unaccounted_s"].get<double>(), 0, 1e-6);
  // Training ended on the first plan: the weights are bitwise those of a run that never rolled out.
  ASSERT_FALSE(plain.parameters.empty());
  EXPECT_TRUE(r.parameters == plain.parameters) << "the rolled-back run's weights differ from the plain run's";
}

TEST(FtRollout, ARolloutThatDoesNotRegressIsKept) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu-rollout.json"));
  auto& r0 = j["reliability"]["rollouts"][0];
  r0["change"] = "micro_batch 4 -> 2";
  r0["plan"] = {{"training", {{"micro_batch", 2}}}};
  r0["regression"] = {{"step_time", 2.0}, {"loss", 0.5}};  // 3x the step time, or 1.5x the loss: not by micro_batch
  std::string path = ::testing::TempDir() + "/rollout_kept.json";
  std::ofstream(path) << j.dump();
  RolloutRun r = supervised(path, "kept");
  ASSERT_EQ(r.rc, 0) << r.log;
  EXPECT_EQ(rollout_events(r.report), (std::vector<std::string>{"rollout_start", "rollout_kept"})) << r.log;
  EXPECT_EQ(r.report["supervisor"]["planned_restarts"].get<int>(), 1);  // to the second plan; kept, it runs on
  EXPECT_NE(r.log.find("rollout-1.plan.json"), std::string::npos);
  EXPECT_GT(r.report["lost_seconds_by_cause"]["rollout"].get<double>(), 0);
  EXPECT_EQ(r.report["steps"].get<int>(), steps);
}

}  // namespace
