// ditwin compare on hand-written reports and traces: matching, pipeline stages' idle shares,
// and malformed inputs refused naming the file and the op.
#include <gtest/gtest.h>

#include <fstream>

#include "model/compare.hpp"
#include "model/plan.hpp"
#include "model/report.hpp"
#include "tests/test_util.hpp"
#include "model/errors.hpp"

namespace {

using nlohmann::json;

std::string write(const std::string& name, const json& j) {
  std::string path = ::testing::TempDir() + "/compare-" + name + ".json";
  std::ofstream(path) << j.dump();
  return path;
}

json report(const std::string& source, double step, const json& ops) {
  return {{"schema", "ditwin.step_report/1"}, {"source", source}, {"plan", "p"}, {"step_time_s", step}, {"ops", ops}};
}

json op(const std::string& name, long long rank, int stage, const std::string& stream, double seconds) {
  return {{"name", name}, {"rank", rank}, {"stage", stage}, {"stream", stream}, {"duration_s", seconds}};
}

TEST(Compare, PipelineStagesIdleSharesAndOpsOfEveryStage) {
  json p = report("predicted", 1.0, {op("L0.fwd.mb0", 0, 0, "compute", 0.8), op("pp.fwd.send.mb0", 0, 0, "pp", 0.1),
                                     op("L1.fwd.mb0", 1, 1, "compute", 0.6), op("pp.fwd.recv.mb0", 1, 1, "pp", 0.1)});
  json m = report("measured", 2.0, {op("L0.fwd.mb0", 0, 0, "compute", 1.0), op("pp.fwd.send.mb0", 0, 0, "pp", 0.2),
                                    op("L1.fwd.mb0", 1, 1, "compute", 1.5), op("pp.fwd.recv.mb0", 1, 1, "pp", 0.3)});
  auto c = ditwin::compare_runs(ditwin::read_run_times(write("p", p)), ditwin::read_run_times(write("m", m)));
  EXPECT_DOUBLE_EQ(c["step_time_error"].get<double>(), -0.5);
  EXPECT_EQ(c["matched_ops"], 4);  // stage 1's ops matched as "name @rank 1"
  ASSERT_EQ(c["stages"].size(), 2u);
  EXPECT_NEAR(c["stages"][0]["predicted_idle_share"].get<double>(), 0.2, 1e-12);
  EXPECT_NEAR(c["stages"][0]["measured_idle_share"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(c["stages"][1]["difference_points"].get<double>(), 100 * (0.4 - 0.25), 1e-9);
}

// An op named like a layer without a dot threw std::out_of_range out of the family grouping.
TEST(Compare, OpNamesWithoutADotAreTheirOwnFamily) {
  json p = report("predicted", 1.0, json::array({op("L5", 0, 0, "compute", 0.5)}));
  json m = report("measured", 1.0, json::array({op("L5", 0, 0, "compute", 0.4)}));
  auto c = ditwin::compare_runs(ditwin::read_run_times(write("l5p", p)), ditwin::read_run_times(write("l5m", m)));
  EXPECT_EQ(c["families"][0]["family"], "L5");
}

// Negative durations were accepted and printed as -inf%.
TEST(Compare, NegativeDurationsAreRefusedNamingTheOp) {
  json bad = report("measured", 1.0, json::array({op("L0.fwd.mb0", 0, 0, "compute", -0.1)}));
  try {
    ditwin::read_run_times(write("neg", bad));
    FAIL() << "accepted a negative duration";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("op L0.fwd.mb0 has duration_s"), std::string::npos) << e.what();
  }
  json trace = {{"traceEvents",
                 {{{"ph", "X"}, {"name", "ProfilerStep#0"}, {"pid", 0}, {"tid", 0}, {"ts", 0}, {"dur", 10}},
                  {{"ph", "X"}, {"name", "L0.fwd.mb0"}, {"pid", 0}, {"tid", 1}, {"ts", 0}, {"dur", -5}}}}};
  EXPECT_THROW(ditwin::read_run_times(write("negtrace", trace)), ditwin::InputError);
}

}  // namespace

// MFU above 100% means the peak is wrong, never the step: the report says so instead of passing
// it on silently (a fresh CPU calibration once predicted tiny-cpu-dp above 100%).
TEST(Metrics, MfuAbove100PercentIsFlaggedInTheReport) {
  const ditwin::Plan plan = ditwin::load_plan(ditwin::test::scenario("tiny-cpu.json"));
  ditwin::StepReport r;
  r.step_time_s = 0.05;
  ditwin::fill_metrics(r, plan, 1e15);  // a peak no CPU reaches: a plausible MFU
  EXPECT_LT(r.mfu, 1.0);
  EXPECT_FALSE(r.extra.is_object() && r.extra.contains("warnings"));
  ditwin::StepReport low;
  low.step_time_s = 0.05;
  ditwin::fill_metrics(low, plan, 1e6);  // a peak below what the step achieves
  EXPECT_GT(low.mfu, 1.0);
  ASSERT_TRUE(low.extra.contains("warnings"));
  EXPECT_NE(low.extra["warnings"][0].get<std::string>().find("exceed 100%"), std::string::npos);
  EXPECT_EQ(ditwin::to_json(low)["extra"]["warnings"].size(), 1u);
}
