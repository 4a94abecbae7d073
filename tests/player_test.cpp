// The Program player (model/player): its rules on hand-made Programs with a fake clock, and the
// same Program through both engines — the SimGrid actor, and a fake-clock engine that finishes
// each op after the time the simulation gave it — starting every op at the same moment.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <queue>

#include "cost_models/profile.hpp"
#include "model/player.hpp"
#include "sim/step_sim.hpp"
#include "tests/test_util.hpp"

namespace ditwin {
namespace {

// An engine with a fake clock: op i runs for duration(i) (a compute op blocks nothing but its
// stream; the player keeps streams serial) and ends at a fixed time for `ends_at` ops.
class FakeClockEngine : public PlayerEngine {
 public:
  explicit FakeClockEngine(std::vector<double> durations) : durations_(std::move(durations)), start_(durations_.size(), -1) {}
  std::map<std::size_t, double> ends_at;  // ops that end at a given time (a recv: when its send ends)
  void start(std::size_t i) override {
    start_[i] = now_;
    double end = now_ + durations_[i];
    auto it = ends_at.find(i);
    if (it != ends_at.end()) end = std::max(now_, it->second);
    events_.push({end, i});
  }
  std::size_t wait_any() override {
    auto [t, i] = events_.top();
    events_.pop();
    now_ = t;
    return i;
  }
  const std::vector<double>& starts() const { return start_; }

 private:
  struct Later {
    bool operator()(const std::pair<double, std::size_t>& a, const std::pair<double, std::size_t>& b) const {
      return a.first > b.first || (a.first == b.first && a.second > b.second);
    }
  };
  std::vector<double> durations_, start_;
  std::priority_queue<std::pair<double, std::size_t>, std::vector<std::pair<double, std::size_t>>, Later> events_;
  double now_ = 0;
};

Op make_op(const std::string& name, Stream stream, std::vector<std::uint32_t> deps = {}) {
  Op op;
  op.name = name;
  op.stream = stream;
  op.kind = stream == Stream::compute ? OpKind::compute : stream == Stream::pp ? OpKind::p2p : OpKind::collective;
  op.deps = std::move(deps);
  return op;
}

TEST(Player, StreamsAreSerialInProgramOrderExceptPipelineTransfers) {
  std::vector<Op> ops = {
      make_op("c0", Stream::compute),       // 0
      make_op("dp0", Stream::dp, {0}),      // 1: ready after c0
      make_op("dp1", Stream::dp, {0}),      // 2: ready too, but waits for dp0 (serial stream)
      make_op("c1", Stream::compute, {0}),  // 3
      make_op("pp0", Stream::pp, {0}),      // 4: pp ops run side by side
      make_op("pp1", Stream::pp, {0}),      // 5
      make_op("c2", Stream::compute, {3, 1}),
  };
  FakeClockEngine e({1, 5, 5, 2, 4, 4, 1});
  auto order = ProgramPlayer(ops).play(e);
  const auto& s = e.starts();
  EXPECT_DOUBLE_EQ(s[1], 1);  // dp0 after c0
  EXPECT_DOUBLE_EQ(s[2], 6);  // dp1 after dp0, not beside it
  EXPECT_DOUBLE_EQ(s[4], 1);
  EXPECT_DOUBLE_EQ(s[5], 1);  // both transfers at once
  EXPECT_DOUBLE_EQ(s[3], 1);
  EXPECT_DOUBLE_EQ(s[6], 6);  // c2 waits for dp0 (its dependency), not for dp1
  // Ready at the same moment: communication is handed to the engine before compute.
  auto pos = [&](std::size_t i) { return std::find(order.begin(), order.end(), i) - order.begin(); };
  EXPECT_LT(pos(1), pos(3));
  EXPECT_LT(pos(4), pos(3));
  EXPECT_LT(pos(5), pos(3));
}

// Dependencies point to earlier ops only: then the lowest unstarted op can always start once the
// running ones end, and a Program always finishes; anything else is refused up front.
TEST(Player, RefusesDependenciesOnLaterOps) {
  std::vector<Op> self = {make_op("x", Stream::compute)};
  self[0].deps = {0};
  EXPECT_THROW(ProgramPlayer{self}, std::logic_error);
  std::vector<Op> later = {make_op("a", Stream::dp), make_op("b", Stream::compute)};
  later[0].deps = {1};
  EXPECT_THROW(ProgramPlayer{later}, std::logic_error);
}

// The Program of a pipeline-, tensor- and data-parallel tiny DiT on an H100 node, simulated; then
// each stage's Program replayed through the fake-clock engine with the simulated durations: the
// player, the same in both, starts every op at the moment SimGrid started it.
TEST(Player, SimulatorAndFakeClockEngineStartEveryOpTogether) {
  for (const char* layout : {"pp", "tp_pp_dp"}) {
    nlohmann::json doc = read_json_file(test::scenario("tiny-cpu.json"));
    bool pp_only = std::string(layout) == "pp";
    doc["cluster"] = {{"device", "H100-SXM"}, {"nodes", 1}, {"devices_per_node", pp_only ? 2 : 8}};
    doc["training"]["precision"] = "bf16";
    if (pp_only) doc["parallelism"] = {{"dp", 1}, {"pp", 2}, {"schedule", "1f1b"}};
    else doc["parallelism"] = {{"dp", 2}, {"tp", 2}, {"pp", 2}, {"schedule", "interleaved"}, {"virtual_stages", 2}, {"zero", 1}};
    Plan plan = parse_plan(doc);
    Program program = lower(plan);
    StepReport r = sim::simulate_step(plan, program, cost::profile_for(plan.cluster));
    long long stage_size = 1LL * program.tp * program.cp * program.dp;
    std::map<std::string, double> sent_end;  // p2p match -> when the send finished
    for (int s = 0; s < program.pp; ++s)
      for (const auto& rec : r.ops)
        if (rec.rank == s * stage_size && rec.kind == OpKind::p2p && rec.collective == Collective::send)
          for (const Op& op : program.classes[s].ops)
            if (op.name == rec.name) sent_end[op.match] = rec.start_s + rec.duration_s;
    for (int s = 0; s < program.pp; ++s) {
      const auto& ops = program.classes[s].ops;
      std::map<std::string, const OpRecord*> by_name;
      for (const auto& rec : r.ops)
        if (rec.rank == s * stage_size) by_name[rec.name] = &rec;
      std::vector<double> durations(ops.size());
      for (std::size_t i = 0; i < ops.size(); ++i) {
        ASSERT_TRUE(by_name.count(ops[i].name)) << ops[i].name;
        durations[i] = by_name.at(ops[i].name)->duration_s;
      }
      FakeClockEngine e(durations);
      for (std::size_t i = 0; i < ops.size(); ++i)
        if (ops[i].kind == OpKind::p2p && ops[i].collective == Collective::recv) e.ends_at[i] = sent_end.at(ops[i].match);
      ProgramPlayer(ops).play(e);
      int compared = 0;
      for (std::size_t i = 0; i < ops.size(); ++i) {
        const OpRecord& rec = *by_name.at(ops[i].name);
        if (ops[i].kind == OpKind::p2p && ops[i].collective == Collective::recv) {
          // The simulator reports a receive from when its data started to move; compare its end.
          EXPECT_NEAR(e.starts()[i] + std::max(0.0, sent_end.at(ops[i].match) - e.starts()[i]),
                      rec.start_s + rec.duration_s, 1e-9) << layout << " stage " << s << " " << ops[i].name;
          continue;
        }
        EXPECT_NEAR(e.starts()[i], rec.start_s, 1e-9) << layout << " stage " << s << " " << ops[i].name;
        ++compared;
      }
      EXPECT_GT(compared, 100);
    }
  }
}

}  // namespace
}  // namespace ditwin
