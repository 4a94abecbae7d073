// Every kind of trace ditwin writes keeps the rules Perfetto and HTA read by (tests/trace_test_util):
// the predicted step trace (representative ranks and every rank), the per-rank Kineto-style files,
// the long-run trace; times on one nanosecond grid (at most three decimals of a microsecond), work
// that truly overlaps on one stream on its own lanes, rank r as pid r + 1.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "cost_models/profile.hpp"
#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/report.hpp"
#include "sim/step_sim.hpp"
#include "tests/test_util.hpp"
#include "tests/trace_test_util.hpp"

namespace ditwin {
namespace {

// A scenario on H100s (the CPU ones have no built-in device figures: their profile is measured).
Plan on_h100(const std::string& scenario) {
  auto j = read_json_file(test::scenario(scenario));
  if (j["cluster"]["device"] == "cpu") {
    j["cluster"]["device"] = "H100-SXM";
    j["training"]["precision"] = "bf16";
  }
  return parse_plan(j);
}
StepReport predicted(const std::string& scenario) {
  Plan plan = on_h100(scenario);
  return sim::simulate_step(plan, lower(plan), cost::profile_for(plan.cluster));
}

bool three_decimals(double us) { return std::abs(us * 1000 - std::round(us * 1000)) < 1e-6 * std::max(1.0, std::abs(us)); }

TEST(Trace, PredictedTracesKeepTheNestingRuleAndNameEveryLane) {
  for (const char* scenario : {"default.json", "tiny-cpu-pp2.json", "tiny-mmdit-cpu.json"}) {
    StepReport r = predicted(scenario);
    nlohmann::json t = to_trace(r);
    auto rules = test::trace_rules(t);
    EXPECT_TRUE(rules.ok()) << scenario << ": " << rules.describe();
    for (const auto& e : t["traceEvents"]) {
      if (e["ph"] != "X") continue;
      EXPECT_TRUE(three_decimals(e["ts"].get<double>())) << scenario << " " << e.dump();
      EXPECT_TRUE(three_decimals(e["dur"].get<double>())) << scenario << " " << e.dump();
    }
    for (long long rank : trace_ranks(r)) {
      auto k = test::trace_rules(to_kineto_trace(r, rank));
      EXPECT_TRUE(k.ok()) << scenario << " rank " << rank << ": " << k.describe();
    }
  }
}

TEST(Trace, OpArgsNameTheirProgramDependenciesOnTheSameRank) {
  Plan plan = on_h100("tiny-cpu-pp2.json");
  Program program = lower(plan);
  StepReport r = sim::simulate_step(plan, program, cost::profile_for(plan.cluster));
  nlohmann::json t = to_trace(r);
  // (pid, name) -> end of that op, in microseconds: every dependency is an op of the same rank
  // that ends before (or as) its dependent starts.
  std::map<std::pair<long long, std::string>, double> end_of;
  for (const auto& e : t["traceEvents"])
    if (e["ph"] == "X") end_of[{e["pid"].get<long long>(), e["name"].get<std::string>()}] = e["ts"].get<double>() + e["dur"].get<double>();
  std::size_t with_deps = 0, without = 0;
  for (const auto& e : t["traceEvents"]) {
    if (e["ph"] != "X" || e["cat"] == "step") continue;
    const auto& args = e["args"];
    if (!args.contains("deps")) {
      ++without;
      continue;
    }
    ++with_deps;
    ASSERT_TRUE(args["deps"].is_array() && !args["deps"].empty()) << e.dump();  // written only when there are some
    for (const auto& d : args["deps"]) {
      auto it = end_of.find({e["pid"].get<long long>(), d.get<std::string>()});
      ASSERT_NE(it, end_of.end()) << e.dump();
      EXPECT_LE(it->second, e["ts"].get<double>() + 1e-3) << d << " -> " << e["name"];
    }
  }
  EXPECT_GT(with_deps, without);
  // The Program's own dependencies, by name, on the first op that has some.
  const RankClass& c0 = program.classes[0];
  for (const Op& op : c0.ops) {
    if (op.deps.empty()) continue;
    auto names = dep_names(c0, op);
    ASSERT_EQ(names.size(), op.deps.size());
    EXPECT_EQ(names.front(), c0.ops[op.deps.front()].name);
    break;
  }
}

TEST(Trace, RankIsPidPlusOneAndEveryRankExpandsFromItsStage) {
  Plan plan = on_h100("tiny-cpu-pp2.json");
  Program program = lower(plan);
  StepReport r = sim::simulate_step(plan, program, cost::profile_for(plan.cluster));
  StepReport all = with_every_rank(r, program);
  const std::vector<long long> listed = trace_ranks(all);
  std::set<long long> ranks(listed.begin(), listed.end());
  EXPECT_EQ(static_cast<long long>(ranks.size()), program.world());
  nlohmann::json t = to_trace(all);
  std::map<long long, std::string> names;
  for (const auto& e : t["traceEvents"])
    if (e["ph"] == "M" && e["name"] == "process_name") names[e["pid"].get<long long>()] = e["args"]["name"];
  for (long long rank = 0; rank < program.world(); ++rank) EXPECT_EQ(names[rank + 1], "rank " + std::to_string(rank));
  EXPECT_TRUE(test::trace_rules(t).ok()) << test::trace_rules(t).describe();
  // Too many slices for one file: refused with the way out.
  try {
    with_every_rank(r, program, 10);
    ADD_FAILURE() << "no refusal";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--trace-dir"), std::string::npos) << e.what();
  }
}

TEST(Trace, OverlappingWorkOnOneStreamGoesToItsOwnLaneAndSubNanosecondEndsNeverCross) {
  StepReport r;
  r.source = "measured";
  r.step_time_s = 1e-3;
  auto op = [&](const std::string& name, Stream s, double start, double dur) {
    OpRecord o;
    o.name = name;
    o.stream = s;
    o.kind = s == Stream::compute ? OpKind::compute : OpKind::collective;
    o.collective = s == Stream::compute ? Collective::none : Collective::all_reduce;
    o.start_s = start;
    o.duration_s = dur;
    r.timeline.push_back(o);
  };
  // Back to back with sub-nanosecond digits (1.0000004 us + 0.9999996 us), and three all-reduces in
  // flight at once on the dp stream.
  op("a", Stream::compute, 0.0, 1.0000004e-6);
  op("b", Stream::compute, 1.0000004e-6, 0.9999996e-6);
  op("ar0", Stream::dp, 1e-6, 5e-6);
  op("ar1", Stream::dp, 2e-6, 5e-6);
  op("ar2", Stream::dp, 3e-6, 1e-6);
  r.steps = {{0.0, 1e-5}};
  nlohmann::json t = to_trace(r);
  auto rules = test::trace_rules(t);
  EXPECT_TRUE(rules.ok()) << rules.describe();
  std::set<long long> dp_lanes;
  for (const auto& e : t["traceEvents"])
    if (e["ph"] == "X" && e["name"].get<std::string>().rfind("ar", 0) == 0) dp_lanes.insert(e["tid"].get<long long>());
  EXPECT_EQ(dp_lanes.size(), 3u);
  auto kineto = to_kineto_trace(r, 0);
  EXPECT_TRUE(test::trace_rules(kineto).ok()) << test::trace_rules(kineto).describe();
  EXPECT_EQ(kineto["distributedInfo"]["rank"], 0);
  // HTA finds the rank by a text search for `"rank": N`: the file must keep that space.
  EXPECT_NE(kineto.dump(1).find("\"rank\": 0"), std::string::npos);
}

TEST(Trace, LongRunTracesNameTheirLanesAndScopeFailuresToTheirLane) {
  std::vector<RunEvent> events = {{"train", "train", 0, 3600}, {"checkpoint", "checkpoint", 1800, 30},
                                  {"failure: GPU", "failure", 3600, 0}, {"restart", "recovery", 3600, 400},
                                  {"lost work", "rollback", 3000, 600}};
  nlohmann::json t = to_run_trace("job x", events, {{"kind", "longrun"}});
  auto rules = test::trace_rules(t);
  EXPECT_TRUE(rules.ok()) << rules.describe();
  bool instant = false;
  for (const auto& e : t["traceEvents"])
    if (e["ph"] == "i") {
      instant = true;
      EXPECT_EQ(e["s"], "t");
      EXPECT_NE(e["pid"], 0);
    }
  EXPECT_TRUE(instant);
}

}  // namespace
}  // namespace ditwin
