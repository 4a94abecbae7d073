// The long-run simulator's deterministic mode: injected faults become failures at the times the
// executor's rules give, and the player's accounting of one small run can be checked by hand.
#include <gtest/gtest.h>

#include "sim/longrun.hpp"

namespace {

using namespace ditwin;

// 1-second steps, a sync checkpoint (0.5 s) every 2 steps, 6 steps; a kill is noticed after
// 0.1 s and a restart takes 1 s.
sim::LongRunInputs small_run() {
  sim::LongRunInputs in;
  in.plan = "hand";
  in.step_time_s = 1;
  in.checkpoint_mode = "sync";
  in.interval_s = 2;
  in.stall_s = 0.5;
  in.process_start_s = 1;
  in.comm_init_s = 0;
  in.load_s = 0;
  in.heartbeat_s = 3;
  return in;
}

InjectSpec inject(const std::string& text) { return parse_inject(text, "test"); }

TEST(FtLongRun, InjectedKillIsPlayedAtItsStepAndAccountedByHand) {
  auto in = small_run();
  auto schedule = sim::schedule_injections(in, {inject("kill:rank=1,step=3")}, 6, 0.1);
  ASSERT_EQ(schedule.size(), 1u);
  EXPECT_DOUBLE_EQ(schedule[0].t_s, 3.5);  // steps 0-2 and the checkpoint after step 2
  sim::LongRunOptions o;
  o.trials = 1;
  auto r = sim::simulate_longrun(in, o);
  const auto& t = r.trials.at(0);
  // Attempt 2 starts from step 2 at 3.5 + 0.1 + 1 = 4.6: steps 2-5 and the checkpoint after step 4.
  EXPECT_NEAR(t.wall_s, 9.1, 1e-6);
  EXPECT_NEAR(t.productive_s, 6.0, 1e-6);
  EXPECT_NEAR(t.lost_s[static_cast<int>(sim::Cause::rollback)], 1.0, 1e-6);
  EXPECT_NEAR(t.lost_s[static_cast<int>(sim::Cause::checkpoint_stall)], 1.0, 1e-6);
  EXPECT_NEAR(t.lost_s[static_cast<int>(sim::Cause::detection)], 0.1, 1e-6);
  EXPECT_NEAR(t.lost_s[static_cast<int>(sim::Cause::process_start)], 1.0, 1e-6);
  EXPECT_EQ(t.failures, 1);
}

TEST(FtLongRun, FaultsFireOnceAndACheckpointKillRollsBackToTheOneBefore) {
  auto in = small_run();
  in.restart.backoff_s = 0.25;
  auto schedule = sim::schedule_injections(
      in, {inject("kill:rank=0,step=3"), inject("kill_during_checkpoint:rank=0,step=4,fraction=0.5"), inject("hang:rank=1,step=3")},
      6, 0.1);
  ASSERT_EQ(schedule.size(), 3u);
  EXPECT_DOUBLE_EQ(schedule[0].t_s, 3.5);
  // Restart 1 waits 0.25 s: attempt 2 starts at 3.5 + 0.1 + 0.25 + 1 = 4.85 from step 2; the hang
  // at step 3 (not fired yet) fires at 5.85, detected after the heartbeat timeout.
  EXPECT_DOUBLE_EQ(schedule[1].t_s, 5.85);
  EXPECT_TRUE(schedule[1].hang);
  EXPECT_DOUBLE_EQ(schedule[1].detect_s, 3);
  // Restart 2 waits 0.5 s: attempt 3 starts at 5.85 + 3 + 0.5 + 1 = 10.35 from step 2; the
  // checkpoint after step 4 is written from 12.35, killed half-way through.
  EXPECT_DOUBLE_EQ(schedule[2].t_s, 12.6);
  sim::LongRunOptions o;
  o.trials = 1;
  auto r = sim::simulate_longrun(in, o);
  EXPECT_EQ(r.trials.at(0).failures, 3);
  double sum = r.trials[0].productive_s;
  for (double l : r.trials[0].lost_s) sum += l;
  EXPECT_NEAR(sum, r.trials[0].wall_s, 1e-6);
  EXPECT_NEAR(r.trials[0].productive_s, 6.0, 1e-6);
}

// --- numerical faults (issue 18 part 2) ---
// A NaN at step 3 (0-based) of the 6-step run above. Skip: caught after the checkpoint that follows
// the step (the executor still takes it), the step's work lost, nothing else moves. Rollback: caught
// at the step's end (3 + 0.5 + 1 = 4.5 s), back to the checkpoint of step 2, in process (no
// detection, no process start): steps 2-3 are computed again.
TEST(FtLongRun, InjectedNanIsScheduledAndCostedByItsPolicy) {
  constexpr double off_s = 1e-3;  // the player's down time per event, counted as numerical
  const int num = static_cast<int>(sim::Cause::numerical);
  {
    auto in = small_run();
    auto schedule = sim::schedule_injections(in, {inject("nan:rank=0,step=3")}, 6, 0.1);
    ASSERT_EQ(schedule.size(), 1u);
    EXPECT_TRUE(schedule[0].numerical);
    EXPECT_DOUBLE_EQ(schedule[0].t_s, 5.0);  // steps 0-3, the checkpoints after steps 1 and 3
    sim::LongRunOptions o;
    o.trials = 1;
    auto r = sim::simulate_longrun(in, o);
    const auto& t = r.trials.at(0);
    EXPECT_NEAR(t.wall_s, 7.0 + off_s, 1e-6);  // 6 steps + 2 checkpoints, as without the fault
    EXPECT_NEAR(t.productive_s, 5.0, 1e-6);
    EXPECT_NEAR(t.lost_s[num], 1.0 + off_s, 1e-6);
    EXPECT_EQ(t.failures, 0);
    EXPECT_EQ(t.numerical, 1);
    auto j = sim::to_json(r);
    EXPECT_NEAR(j["lost_hours_by_cause"]["numerical"].get<double>() * 3600, 1.0 + off_s, 1e-6);
    EXPECT_EQ(j["scheduled_failures"][0]["category"], "numerical");
  }
  {
    auto in = small_run();
    in.numerical_policy = "rollback";
    in.load_s = 0.25;
    auto schedule = sim::schedule_injections(in, {inject("nan:rank=0,step=3"), inject("kill:rank=1,step=5")}, 6, 0.1);
    ASSERT_EQ(schedule.size(), 2u);
    EXPECT_DOUBLE_EQ(schedule[0].t_s, 4.5);
    // Back at step 2 at 4.5 + 0.001 + 0.25: steps 2-4 and the checkpoint after step 3, then the kill at step 5.
    EXPECT_NEAR(schedule[1].t_s, 4.751 + 3.5, 1e-9);
    EXPECT_FALSE(schedule[1].numerical);
    sim::LongRunOptions o;
    o.trials = 1;
    auto r = sim::simulate_longrun(in, o);
    const auto& t = r.trials.at(0);
    // numerical: steps 2-3 again (2 s), the load, the down time; the kill's restart is not numerical.
    EXPECT_NEAR(t.lost_s[num], 2.0 + 0.25 + off_s, 1e-6);
    EXPECT_EQ(t.numerical, 1);
    EXPECT_EQ(t.failures, 1);
    EXPECT_NEAR(t.productive_s, 6.0, 1e-6);
  }
  {  // sampled: a rate per day, on its own random stream (the other draws do not move)
    auto in = small_run();
    in.work_s = 86400;
    in.interval_s = 3600;
    in.numerical_per_s = 4.0 / 86400;
    sim::LongRunOptions o;
    o.trials = 200;
    auto r = sim::simulate_longrun(in, o);
    double faults = 0, lost = 0;
    for (const auto& t : r.trials) faults += t.numerical, lost += t.lost_s[num];
    EXPECT_NEAR(faults / 200, 4.0, 0.5);               // Poisson(4) over about a day
    EXPECT_NEAR(lost / faults, 1.0 + off_s, 1e-6);     // skip: one 1-second step each
  }
}

}  // namespace

