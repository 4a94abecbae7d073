// The measured trace of `ditwin execute` on 2 ranks agrees with its report and keeps Perfetto's
// rules: each rank's ops sit inside that rank's step slices; the step slices last what the
// report's step_times_s says; the per-rank folder (--trace-dir) has one Kineto-style file per rank.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "model/plan.hpp"
#include "model/report.hpp"
#include "tests/test_util.hpp"
#include "tests/trace_test_util.hpp"

namespace {

TEST(ExecTrace, MeasuredTraceAgreesWithItsReportAndKeepsTheRules) {
  const std::string dir = ::testing::TempDir() + "/exec_trace";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string cmd = std::string(DITWIN_BINARY) + " execute " + ditwin::test::scenario("tiny-cpu.json") +
                    " --ranks 2 --steps 4 --report " + dir + "/r.json --trace " + dir + "/t.json --trace-dir " + dir +
                    "/ranks > " + dir + "/log 2>&1 </dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto report = ditwin::read_json_file(dir + "/r.json");
  auto trace = ditwin::read_json_file(dir + "/t.json");
  auto rules = ditwin::test::trace_rules(trace);
  EXPECT_TRUE(rules.ok()) << rules.describe();
  std::vector<double> step_times;
  for (const auto& s : report["extra"]["step_times_s"]) step_times.push_back(s.get<double>() * 1e6);
  std::map<long long, std::vector<std::pair<double, double>>> steps;  // pid -> (ts, end) in us
  for (const auto& e : trace["traceEvents"])
    if (e["ph"] == "X" && e["tid"] == 0) steps[e["pid"].get<long long>()].push_back({e["ts"], e["ts"].get<double>() + e["dur"].get<double>()});
  ASSERT_EQ(steps.size(), 2u);
  for (auto& [pid, v] : steps) {
    ASSERT_EQ(v.size(), step_times.size()) << "pid " << pid;
    for (std::size_t k = 0; k < v.size(); ++k) EXPECT_NEAR(v[k].second - v[k].first, step_times[k], 2e-3) << "pid " << pid << " step " << k;
  }
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] != "X" || e["tid"] == 0) continue;
    const double ts = e["ts"], end = ts + e["dur"].get<double>();
    bool inside = false;
    for (auto [a, b] : steps[e["pid"].get<long long>()]) inside = inside || (ts >= a - 1e-3 && end <= b + 1e-3);
    EXPECT_TRUE(inside) << e["name"] << " on pid " << e["pid"] << " at " << ts << " lies outside its rank's steps";
  }
  for (int rank : {0, 1}) {
    auto k = ditwin::read_json_file(dir + "/ranks/rank-" + std::to_string(rank) + ".json");
    EXPECT_EQ(k["distributedInfo"]["rank"], rank);
    EXPECT_EQ(k["distributedInfo"]["world_size"], 2);
    auto kr = ditwin::test::trace_rules(k);
    EXPECT_TRUE(kr.ok()) << "rank " << rank << ": " << kr.describe();
  }
}

}  // namespace
