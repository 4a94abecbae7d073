// The step simulator against the physics it promises: bus bandwidth on an idle network, links
// that slow exactly the traffic crossing them, oversubscription, the 1F1B bubble, determinism.
#include <gtest/gtest.h>

#include "cost_models/comm.hpp"
#include "cost_models/profile.hpp"
#include "model/errors.hpp"
#include "model/accounting.hpp"
#include "sim/step_sim.hpp"
#include "tests/test_util.hpp"

using nlohmann::json;

namespace {

// A plan whose only purpose is to describe a cluster of `nodes` x 8 GPUs and a layout.
ditwin::Plan cluster_plan(int nodes, json parallelism, json network = json::object()) {
  json j = ditwin::test::base_plan();
  j["model"] = {{"preset", "DiT-XL/2"}};
  j["parallelism"] = parallelism;
  j["training"] = {{"global_batch", 8 * nodes * 8}, {"micro_batch", 1}};
  j["cluster"] = {{"device", "H100-SXM"}, {"nodes", nodes}, {"devices_per_node", 8}, {"network", network}};
  return ditwin::parse_plan(j);
}

ditwin::Op collective(const std::string& name, ditwin::Stream stream, ditwin::GroupKind group, int size, double bytes,
                      ditwin::Collective c = ditwin::Collective::all_reduce) {
  ditwin::Op op;
  op.name = name;
  op.kind = ditwin::OpKind::collective;
  op.stream = stream;
  op.collective = c;
  op.group = group;
  op.group_size = size;
  op.bytes = bytes;
  return op;
}

// A one-stage program holding just these ops, for the plan's layout.
ditwin::Program program_of(const ditwin::Plan& plan, std::vector<ditwin::Op> ops) {
  ditwin::Program p;
  p.dp = plan.parallelism.dp;
  p.tp = plan.parallelism.tp;
  p.pp = 1;
  p.cp = plan.parallelism.cp;
  p.classes.resize(1);
  p.classes[0].rank_count = p.world();
  p.classes[0].ops = std::move(ops);
  return p;
}

double duration_of(const ditwin::StepReport& r, const std::string& name) {
  for (const auto& op : r.ops)
    if (op.name == name) return op.duration_s;
  ADD_FAILURE() << name << " not in the report";
  return 0;
}

double simulate_one(const ditwin::Plan& plan, ditwin::Op op) {
  auto profile = ditwin::cost::profile_for(plan.cluster);
  std::string name = op.name;
  auto report = ditwin::sim::simulate_step(plan, program_of(plan, {op}), profile);
  return duration_of(report, name);
}

constexpr double GiB = 1024.0 * 1024 * 1024;

TEST(StepSim, AllReduceOnIdleNvlinkReachesTheModelsBusBandwidth) {
  auto plan = cluster_plan(1, {{"dp", 8}});
  auto profile = ditwin::cost::profile_for(plan.cluster);
  double t = simulate_one(plan, collective("ar", ditwin::Stream::dp, ditwin::GroupKind::dp, 8, GiB));
  double busbw = GiB * 2 * 7 / 8 / t;
  // The flows run at NVLink x efficiency; only the latency term separates the two.
  EXPECT_NEAR(busbw / ditwin::cost::bus_bandwidth({8, 8}, profile), 1.0, 0.01) << busbw / 1e9 << " GB/s";
  EXPECT_NEAR(t / ditwin::cost::collective_time_s(ditwin::Collective::all_reduce, GiB, {8, 8}, profile), 1.0, 0.01);
}

TEST(StepSim, AllReduceAcrossNodesReachesTheHierarchicalBusBandwidth) {
  auto plan = cluster_plan(4, {{"dp", 32}});
  auto profile = ditwin::cost::profile_for(plan.cluster);
  for (auto c : {ditwin::Collective::all_reduce, ditwin::Collective::all_gather, ditwin::Collective::reduce_scatter}) {
    double t = simulate_one(plan, collective("c", ditwin::Stream::dp, ditwin::GroupKind::dp, 32, GiB, c));
    double expected = ditwin::cost::collective_time_s(c, GiB, {32, 8}, profile);
    EXPECT_NEAR(t / expected, 1.0, 0.01) << ditwin::to_string(c);
  }
  // One GPU per node (DP across nodes with TP 8 inside): each GPU has a NIC to itself.
  auto tp_plan = cluster_plan(4, {{"dp", 4}, {"tp", 8}});
  double t = simulate_one(tp_plan, collective("dp", ditwin::Stream::dp, ditwin::GroupKind::dp, 4, GiB));
  double busbw = GiB * 2 * 3 / 4 / t;
  EXPECT_NEAR(busbw / (profile.nic_bytes_per_s * profile.network_efficiency), 1.0, 0.01);
}

TEST(StepSim, HalvingTheNicSlowsOnlyTrafficThatCrossesIt) {
  auto fast = cluster_plan(4, {{"dp", 4}, {"tp", 8}}, {{"nic_gbps", 400}});
  auto slow = cluster_plan(4, {{"dp", 4}, {"tp", 8}}, {{"nic_gbps", 200}});
  std::vector<ditwin::Op> ops = {collective("tp", ditwin::Stream::tp, ditwin::GroupKind::tp, 8, GiB),
                                 collective("dp", ditwin::Stream::dp, ditwin::GroupKind::dp, 4, GiB)};
  auto a = ditwin::sim::simulate_step(fast, program_of(fast, ops), ditwin::cost::profile_for(fast.cluster));
  auto b = ditwin::sim::simulate_step(slow, program_of(slow, ops), ditwin::cost::profile_for(slow.cluster));
  EXPECT_NEAR(duration_of(b, "tp") / duration_of(a, "tp"), 1.0, 1e-9);   // NVLink: untouched
  EXPECT_NEAR(duration_of(b, "dp") / duration_of(a, "dp"), 2.0, 0.02);   // NIC-bound: twice as long
}

TEST(StepSim, OversubscriptionSlowsInterNodeDpButNotNvlinkTp) {
  // One node per leaf: every inter-node hop climbs through the leaf's uplink.
  json full = {{"nodes_per_leaf", 1}, {"oversubscription", 1}};
  json over = {{"nodes_per_leaf", 1}, {"oversubscription", 4}};
  auto a_plan = cluster_plan(4, {{"dp", 4}, {"tp", 8}}, full);
  auto b_plan = cluster_plan(4, {{"dp", 4}, {"tp", 8}}, over);
  std::vector<ditwin::Op> ops = {collective("tp", ditwin::Stream::tp, ditwin::GroupKind::tp, 8, GiB),
                                 collective("dp", ditwin::Stream::dp, ditwin::GroupKind::dp, 4, GiB)};
  auto a = ditwin::sim::simulate_step(a_plan, program_of(a_plan, ops), ditwin::cost::profile_for(a_plan.cluster));
  auto b = ditwin::sim::simulate_step(b_plan, program_of(b_plan, ops), ditwin::cost::profile_for(b_plan.cluster));
  EXPECT_NEAR(duration_of(b, "tp") / duration_of(a, "tp"), 1.0, 1e-9);
  // All 8 GPUs of a node leave through an uplink a quarter as wide as their NICs together.
  EXPECT_NEAR(duration_of(b, "dp") / duration_of(a, "dp"), 4.0, 0.1);
}

TEST(StepSim, OneFOneBBubbleMatchesTheFormulaWhenCommunicationIsFree) {
  json j = ditwin::test::base_plan();
  j["model"] = {{"preset", "DiT-B/2"}};
  j["parallelism"] = {{"dp", 1}, {"pp", 4}};
  j["training"] = {{"global_batch", 8}, {"micro_batch", 1}};
  j["cluster"] = {{"device", "H100-SXM"}, {"nodes", 1}, {"devices_per_node", 4}, {"nvlink_gbps", 1e9},
                  {"nvlink_latency_us", 0}};
  auto plan = ditwin::parse_plan(j);
  auto profile = ditwin::cost::profile_for(plan.cluster);
  auto report = ditwin::sim::simulate_step(plan, ditwin::lower(plan), profile);
  double p = 4, m = 8;
  // Stage 1's idle time over its forward/backward span: embedding and head sit on other stages.
  double idle = 0, busy_end = 0;
  for (const auto& op : report.ops)
    if (op.stage == 1 && op.kind == ditwin::OpKind::compute) busy_end = std::max(busy_end, op.start_s + op.duration_s);
  double busy = 0;
  for (const auto& op : report.ops)
    if (op.stage == 1 && op.kind == ditwin::OpKind::compute) busy += op.duration_s;
  idle = busy_end - busy;
  EXPECT_NEAR(idle / busy_end, (p - 1) / (m + p - 1), 0.03);
  EXPECT_NEAR(ditwin::pipeline_bubble_fraction(plan), (p - 1) / (m + p - 1), 1e-12);
}

TEST(StepSim, SamePlanGivesByteIdenticalReportsAndTraces) {
  auto plan = ditwin::load_plan(ditwin::test::scenario("default.json"));
  auto profile = ditwin::cost::profile_for(plan.cluster);
  auto program = ditwin::lower(plan);
  auto a = ditwin::sim::simulate_step(plan, program, profile);
  auto b = ditwin::sim::simulate_step(plan, program, profile);
  EXPECT_EQ(ditwin::to_json(a).dump(), ditwin::to_json(b).dump());
  EXPECT_EQ(ditwin::to_trace(a).dump(), ditwin::to_trace(b).dump());
}

TEST(StepSim, ReportHasTheMetricsAndABreakdownThatAddsUp) {
  auto plan = ditwin::load_plan(ditwin::test::scenario("mmdit-8b-1024xh100.json"));
  auto report = ditwin::sim::simulate_step(plan, ditwin::lower(plan), ditwin::cost::profile_for(plan.cluster));
  EXPECT_GT(report.step_time_s, 0);
  EXPECT_GT(report.mfu, 0.05);
  EXPECT_LT(report.mfu, 0.9);
  EXPECT_GE(report.hfu, report.mfu);  // selective recompute adds hardware FLOPs
  const auto& b = report.breakdown;
  double sum = b.compute_s + b.optimizer_s + b.bubble_s;
  for (const auto& [k, v] : b.exposed_comm_s) sum += v;
  EXPECT_NEAR(sum / report.step_time_s, 1.0, 1e-9);
  auto trace = ditwin::to_trace(report);
  bool step_slice = false;
  for (const auto& e : trace["traceEvents"]) {
    ASSERT_TRUE(e["pid"].is_number_integer());
    ASSERT_TRUE(e["tid"].is_number_integer());
    if (e["name"] == "ProfilerStep#0") step_slice = true;
  }
  EXPECT_TRUE(step_slice);
}

TEST(StepSim, MeasuredDeviceWithoutProfileIsRefusedClearly) {
  auto plan = ditwin::load_plan(ditwin::test::scenario("tiny-cpu.json"));
  try {
    ditwin::cost::profile_for(plan.cluster);
    FAIL() << "cpu device accepted without a profile";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ditwin calibrate"), std::string::npos);
  }
}

}  // namespace

namespace {

// A profile's figures are bounded (attention_half_tokens 1e300 once printed "step time inf ms"),
// and a plan whose precision the profile has no peak for is refused (a CPU calibration with a
// bf16 plan ended in SimGrid's "Deadlock detected" abort).
TEST(SimProfileSanity, AbsurdFiguresAndMissingPeaksAreRefused) {
  ditwin::Plan plan = ditwin::parse_plan(ditwin::test::base_plan());
  nlohmann::json j = ditwin::cost::profile_for(plan.cluster).to_json();
  j["attention_half_tokens"] = 1e300;
  try {
    ditwin::cost::profile_from_json(j, "p.json");
    FAIL() << "accepted attention_half_tokens 1e300";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("p.json: attention_half_tokens: is implausibly large"), std::string::npos) << e.what();
  }
  j = ditwin::cost::profile_for(plan.cluster).to_json();
  j["peak_flops_bf16"] = 0;
  ditwin::cost::DeviceProfile no_bf16 = ditwin::cost::profile_from_json(j, "p.json");
  plan.training.precision = ditwin::Precision::bf16;
  try {
    ditwin::sim::simulate_step(plan, ditwin::lower(plan), no_bf16);
    FAIL() << "simulated a bf16 plan on a profile without a bf16 peak";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("training.precision: \"bf16\" but the device profile (p.json) has no bf16 peak"),
              std::string::npos) << e.what();
  }
}

}  // namespace
