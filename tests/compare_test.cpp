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

// A measured trace of three steps on one rank: the op "L0.fwd.mb0" takes 9, 4 and 5 ms.
json three_step_trace() {
  json ev = json::array();
  ev.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 1}, {"tid", 0}, {"args", {{"name", "rank 0"}, {"rank", 0}}}});
  const double spans_us[] = {10000, 5000, 6000}, op_us[] = {9000, 4000, 5000};
  double at = 0;
  for (int k = 0; k < 3; ++k) {
    ev.push_back({{"ph", "X"}, {"name", "ProfilerStep#" + std::to_string(k)}, {"pid", 1}, {"tid", 0}, {"ts", at}, {"dur", spans_us[k]}});
    ev.push_back({{"ph", "X"}, {"name", "L0.fwd.mb0"}, {"pid", 1}, {"tid", 1}, {"ts", at}, {"dur", op_us[k]}});
    at += spans_us[k];
  }
  return {{"traceEvents", ev}, {"otherData", {{"source", "measured"}, {"plan", "p"}}}};
}

TEST(Compare, ATraceGivesTheMedianSteadyStepNotAMixOfSteps) {
  // Steps 1 and 2 are steady (step 0 is the warm-up): the lower median of their lengths, step 1,
  // gives both the step time and the op's time; --step picks another.
  std::string path = write("steps", three_step_trace());
  auto t = ditwin::read_run_times(path);
  EXPECT_EQ(t.step, 1);
  EXPECT_NEAR(t.step_time_s, 5e-3, 1e-12);
  EXPECT_NEAR(t.op_seconds.at("L0.fwd.mb0"), 4e-3, 1e-12);
  auto two = ditwin::read_run_times(path, 2);
  EXPECT_NEAR(two.step_time_s, 6e-3, 1e-12);
  EXPECT_NEAR(two.op_seconds.at("L0.fwd.mb0"), 5e-3, 1e-12);
  EXPECT_THROW(ditwin::read_run_times(path, 3), ditwin::InputError);
  // The comparison's sign: predicted / measured - 1, for the step and for the op.
  json predicted = {{"traceEvents", {{{"ph", "X"}, {"name", "ProfilerStep#0"}, {"pid", 1}, {"tid", 0}, {"ts", 0}, {"dur", 4000}},
                                     {{"ph", "X"}, {"name", "L0.fwd.mb0"}, {"pid", 1}, {"tid", 1}, {"ts", 0}, {"dur", 3000}}}}};
  auto c = ditwin::compare_runs(ditwin::read_run_times(write("pred", predicted)), t);
  EXPECT_NEAR(c["step_time_error"].get<double>(), 4.0 / 5.0 - 1, 1e-12);
  EXPECT_NEAR(c["ops"][0]["error"].get<double>(), 3.0 / 4.0 - 1, 1e-12);
  EXPECT_EQ(c["measured"]["step"].get<long long>(), 1);
}

TEST(Compare, StepMatchingPairsOccurrencesAndLongRunAttempts) {
  using ditwin::TraceOp;
  using ditwin::TraceStep;
  EXPECT_EQ(ditwin::matching_name("train (attempt 3)"), "train");
  EXPECT_EQ(ditwin::matching_name("train (straggler)"), "train");
  EXPECT_EQ(ditwin::matching_name("L0.attn.qkv.fwd.mb0"), "L0.attn.qkv.fwd.mb0");
  EXPECT_EQ(ditwin::default_step({}), -1);
  // Two ops of one name on a rank pair in start order; an op outside the step is not compared.
  std::vector<TraceOp> p = {{0, "a", 0.0, 1.0, 0}, {0, "a", 2.0, 1.0, 1}}, m = {{0, "a", 10.5, 2.0, 0}, {0, "a", 13.0, 1.0, 1}, {0, "b", 20.0, 1.0, 2}};
  std::vector<TraceStep> ps = {{0, 0, 0.0, 4.0}}, ms = {{0, 3, 10.0, 5.0}, {0, 4, 15.0, 6.0}};
  auto match = ditwin::match_step(p, ps, -1, m, ms, 3);
  ASSERT_EQ(match.pairs.size(), 2u);
  EXPECT_EQ(match.only_measured, 0u);  // "b" lies in step 4
  EXPECT_EQ(match.pairs[0].measured_tag, 0u);  // the largest difference first: 1 s vs 2 s
  EXPECT_NEAR(match.pairs[0].measured_start_s, 0.5, 1e-12);
  EXPECT_NEAR(match.pairs[0].error(), -0.5, 1e-12);
  EXPECT_NEAR(match.pairs[1].error(), 0.0, 1e-12);
  // A long run (no steps): the predicted segments meet the measured attempts in order.
  std::vector<TraceOp> pr = {{0, "train", 0, 3, 0}, {0, "train", 4, 2, 1}}, mr = {{0, "train (attempt 1)", 0, 3.3, 0}, {0, "train (attempt 2)", 4.5, 2, 1}};
  auto run = ditwin::match_step(pr, {}, -1, mr, {}, -1);
  ASSERT_EQ(run.pairs.size(), 2u);
  EXPECT_EQ(run.only_predicted + run.only_measured, 0u);
}

TEST(Report, AMeasuredBreakdownIsOfOneRealStepWithSpreadAndSkewBeside) {
  // Two ranks, three steps; in step k each rank computes a then b back to back, then all-reduces
  // until the step ends. The ops move between steps (medians of starts and durations taken across
  // steps can leave gaps that are variance); the breakdown of the median steady step has none,
  // and the steps' spread and the ranks' skew are reported beside it.
  ditwin::StepReport r;
  r.source = "measured";
  const double a[] = {9e-3, 2e-3, 4e-3}, b[] = {3e-3, 5e-3, 2e-3}, spans[] = {20e-3, 10e-3, 12e-3};
  double at = 0;
  for (int k = 0; k < 3; ++k) {
    for (long long rank : {0LL, 1LL}) {
      const double slow = rank == 1 ? 1e-3 : 0;  // rank 1 computes 1 ms longer
      auto rec = [&](const std::string& name, ditwin::Stream stream, double start, double d) {
        ditwin::OpRecord o;
        o.name = name;
        o.rank = rank;
        o.stream = stream;
        o.kind = stream == ditwin::Stream::compute ? ditwin::OpKind::compute : ditwin::OpKind::collective;
        o.start_s = at + start;
        o.duration_s = d;
        r.timeline.push_back(o);
      };
      rec("a", ditwin::Stream::compute, 0, a[k] + slow);
      rec("b", ditwin::Stream::compute, a[k] + slow, b[k]);
      rec("allreduce", ditwin::Stream::dp, a[k] + slow + b[k], spans[k] - a[k] - slow - b[k]);
    }
    r.steps.push_back({at, spans[k]});
    at += spans[k];
  }
  r.step_time_s = 11e-3;
  ditwin::measured_breakdown(r);
  ASSERT_TRUE(r.variability.has_value());
  const auto& v = *r.variability;
  EXPECT_EQ(v.step, 1);  // steady steps 1 and 2 (10 and 12 ms): the lower median
  EXPECT_EQ(v.steady_steps, 2);
  EXPECT_NEAR(v.median_s, 11e-3, 1e-12);
  EXPECT_NEAR(v.stddev_s, 1e-3, 1e-12);
  EXPECT_NEAR(r.breakdown.compute_s, 8e-3, 1e-12);  // the slowest rank (1): 3 + 5 ms
  EXPECT_NEAR(r.breakdown.exposed_comm_s.at("dp"), 2e-3, 1e-12);
  EXPECT_NEAR(r.breakdown.bubble_s, 0, 1e-12);
  EXPECT_EQ(r.breakdown.rank, 1);
  EXPECT_NEAR(v.rank_busy_max_s - v.rank_busy_min_s, 1e-3, 1e-12);
  EXPECT_EQ(v.slowest_rank, 1);
  auto j = ditwin::to_json(r);
  EXPECT_NEAR(j["variability"]["rank_skew_s"].get<double>(), 1e-3, 1e-12);
  EXPECT_EQ(j["variability"]["breakdown_step"].get<long long>(), 1);
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
