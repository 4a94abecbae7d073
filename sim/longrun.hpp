// Weeks of training through failures: detection, restart (on hot spares when there are any),
// rollback to the last checkpoint, checkpoint stalls and stragglers, played on SimGrid for many
// independent trials. Gives ETTR, goodput and wall-clock lost by cause (docs/architecture.md).
#pragma once
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cost_models/reliability.hpp"
#include "model/plan.hpp"

namespace ditwin::sim {

// Everything a long run needs, in seconds; longrun_inputs() fills it from a plan, tests by hand.
struct LongRunInputs {
  std::string plan;
  int nodes = 1;
  double step_time_s = 1;  // nominal, from the step simulator
  double mfu = 0;
  double tokens_per_step = 0;
  cost::FailureModel failures;
  double heartbeat_s = 30, timeout_s = 600;
  double reschedule_s = 120, process_start_s = 60, comm_init_s = 30;
  int spare_nodes = 0;
  double spare_swap_s = 60, spare_repair_s = 2 * 86400;
  std::string checkpoint_mode = "async";
  double interval_s = 1800;  // working time between checkpoints (> 0, whole steps)
  double stall_s = 0;        // training blocked per checkpoint
  double persist_s = 0;      // after the stall, until the checkpoint survives a failure
  double load_s = 0;         // reading a checkpoint back on restart
  double stop_write_s = 0;   // synchronous checkpoint before a planned stop
  double checkpoint_bytes = 0;
  double straggler_fraction = 0, straggler_slowdown = 1;
  double duration_s = 0;  // > 0: a fixed wall-clock window
  double work_s = 0;      // else: nominal training time to finish (steps x step time)
  RestartPolicySpec restart;  // its backoff is waited before each restart (counted as reschedule)
  // Deterministic mode (the executor's injected faults): when not empty, every trial plays these
  // failures, at these times from the job's start, instead of sampling the failure model.
  struct Scheduled {
    double t_s = 0;
    std::string name;
    bool hang = false;
    double detect_s = 0;  // from the failure until the job knows
    bool numerical = false;  // a numerical fault: caught by the step guard, handled in process (no restart)
  };
  std::vector<Scheduled> scheduled;
  // Numerical faults (reliability.numerical, issue 18 part 2): sampled at a job-level rate, each costs
  // its policy's price: skip = the step's work; rollback = the work since the last durable
  // checkpoint + a checkpoint load (the skipped data window costs no time: its steps are not run).
  std::string numerical_policy = "skip";
  double numerical_per_s = 0;
  // --- controlled rollouts (reliability.rollouts, issue 18 part 3) ---
  // Each costs a planned restart at a checkpoint (stop_write_s + process_start_s + comm_init_s +
  // load_s; none when restart is false) and, with probability regress_probability, its watched
  // window of work plus a second restart from the checkpoint taken before it (the rollback:
  // process_start_s + comm_init_s + load_s). Played on each trial's result (apply_rollouts).
  struct Rollout {
    std::string name;
    double at_work_s = -1;  // >= 0: when this much nominal training is done (at_step x step time), or
    double at_wall_s = -1;  // >= 0: this long after the job's start (at_hours)
    double watch_s = 0;
    double regress_probability = 0;
    bool restart = true;
  };
  std::vector<Rollout> rollouts;
  double rollout_restart_s() const { return process_start_s + comm_init_s + load_s; }
  // The mean time one trial loses to its rollouts: sum of restart + p x (window + rollback restart).
  double rollout_expected_s() const;
  // --- end controlled rollouts ---
};

// `step_time_s` and `mfu` come from sim::simulate_step on the same plan. An "optimal" interval is
// Daly's for the checkpoint stall and the job's mean time between unexpected failures.
LongRunInputs longrun_inputs(const Plan& plan, double step_time_s, double mfu);

// The wall-clock times at which `inject` (reliability.inject and --inject) fire in a run of
// `steps` steps, played with the executor's rules on the inputs' model: a fault at step s fires
// when the run first starts step s; at_s counts from the start of training of the attempt it
// fires in; kill_during_checkpoint fires `fraction` of the way through the write of that
// checkpoint; each fires once; a restart resumes from the newest checkpoint durable by then.
// Kills are detected after reliability.exit_detection_s, hangs after heartbeat_s. corrupt_shard
// is not modelled (docs/reliability.md). Sets in.scheduled and in.work_s; returns the schedule.
std::vector<LongRunInputs::Scheduled> schedule_injections(LongRunInputs& in, const std::vector<InjectSpec>& inject,
                                                          long long steps, double exit_detection_s);

enum class Cause {
  detection, reschedule, spare_swap, process_start, comm_init, checkpoint_load,
  rollback, checkpoint_stall, stragglers, planned_maintenance,
  numerical,  // issue 18 part 2: numerical faults, at their policy's cost
  rollout,    // issue 18 part 3: controlled rollouts (their restarts, and regressed windows rolled back)
  count
};
const char* to_string(Cause c);
constexpr int cause_count = static_cast<int>(Cause::count);

struct TrialResult {
  double wall_s = 0;        // from the start of the job to its end (or the window's)
  double productive_s = 0;  // nominal training time kept (what an ideal run takes for the same work)
  std::array<double, cause_count> lost_s{};  // productive_s + sum(lost_s) == wall_s
  int failures = 0, planned = 0;
  int numerical = 0;        // numerical faults caught (not interruptions: the processes live on)
  int rollouts = 0, rollouts_regressed = 0;  // controlled rollouts applied, and those rolled back
  bool finished = true;     // a step-count run reached its steps before the simulation cap
  double ettr() const { return wall_s > 0 ? productive_s / wall_s : 0; }
};

struct TimelineEvent {  // one trial's timeline, seconds from the job's start
  std::string name, category;
  double start_s = 0, duration_s = 0;
};

struct LongRunOptions {
  int trials = 100;
  std::uint64_t seed = 1;
  int workers = 2;         // processes that play trials in parallel (results do not depend on it)
  bool timeline = false;   // record trial 0's timeline
};

struct LongRunResult {
  LongRunInputs inputs;
  std::vector<TrialResult> trials;  // in trial order
  std::vector<TimelineEvent> timeline;
  double simgrid_events = 0;        // activities simulated, all trials
};

// Deterministic for (inputs, trials, seed); trial i draws only from (seed, i).
LongRunResult simulate_longrun(const LongRunInputs& inputs, const LongRunOptions& options);

struct Summary {
  double mean = 0, p5 = 0, p50 = 0, p95 = 0, stddev = 0, ci95 = 0;  // ci95: half-width of the mean's 95% interval
};
Summary summarize(std::vector<double> values);

nlohmann::json to_json(const LongRunResult& result);
// Chrome Trace Event Format: one process (the job), threads for training, checkpoints, failures
// and recovery; X events in microseconds.
nlohmann::json to_trace(const LongRunResult& result);

// Sweeps the checkpoint interval (around Young's and Daly's, which are reported with their ETTR)
// and, with `modes`, the checkpoint mode; same seed for every candidate (common random numbers).
nlohmann::json optimize_checkpoint(const Plan& plan, double step_time_s, double mfu, const LongRunOptions& options,
                                   bool modes);

}  // namespace ditwin::sim
