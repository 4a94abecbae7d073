// Predicted vs measured, step and op by op. Works on reports or traces of either source,
// matching ops by the Program's names.
#pragma once
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ditwin {

// Reads a report (`ditwin.step_report/1`) or a Chrome trace written by ditwin; throws InputError
// naming the file when it is neither.
struct RunTimes {
  std::string source, plan, path;
  double step_time_s = 0;
  long long step = -1;  // traces: the step taken (ProfilerStep#N); reports: -1
  std::map<std::string, double> op_seconds;  // per op name, on the lowest rank present; other
                                             // ranks' (each pipeline stage's first) as "name @rank R"
  // Reports only: per rank present, its stage and the seconds its compute stream is busy.
  struct RankBusy {
    int stage = 0;
    double compute_s = 0;
  };
  std::map<long long, RankBusy> busy;
};
// `step`: for a trace, which of its steps (ProfilerStep#N) to take the ops and the step time of;
// -1 (default) picks default_step's. Reports carry one step already and ignore it.
RunTimes read_run_times(const std::string& path, long long step = -1);

// --- One step, op by op (`ditwin compare` on traces, and the GUI's compare view) -------------
// An op of a trace as matching needs it; `tag` is the caller's own handle (the GUI's slice).
struct TraceOp {
  long long rank = 0;
  std::string name;
  double start_s = 0, duration_s = 0;
  std::uint64_t tag = 0;
};
// A rank's step: its "ProfilerStep#N" slice.
struct TraceStep {
  long long rank = 0, step = 0;
  double start_s = 0, duration_s = 0;
};
// The ops (every complete event but the step slices) and steps of a Chrome trace written by
// ditwin (or Kineto); tag = the event's index in traceEvents. Throws InputError naming `path`.
void read_trace_ops(const nlohmann::json& trace, const std::string& path, std::vector<TraceOp>& ops,
                    std::vector<TraceStep>& steps);
// The step compared when none is chosen: on the lowest rank, the step of median duration among
// the steady ones (all but the first, the warm-up, when there are more than one); -1: no steps.
long long default_step(const std::vector<TraceStep>& steps);
// The name two runs share for an op: a long run's segments are "train" whether predicted
// ("train", "train (straggler)") or measured ("train (attempt 2)").
std::string matching_name(const std::string& name);

struct OpPair {
  long long rank = 0;
  std::string name;
  double predicted_start_s = 0, predicted_s = 0;  // starts: from the start of the op's step
  double measured_start_s = 0, measured_s = 0;
  std::uint64_t predicted_tag = 0, measured_tag = 0;
  // predicted / measured - 1, as step_time_error: negative when the run was slower than
  // predicted; 0 when both are 0, +inf when only the measurement is.
  double error() const;
};
struct StepMatch {
  long long predicted_step = -1, measured_step = -1;  // -1: the whole trace (no steps: a long run)
  double predicted_step_s = 0, measured_step_s = 0;   // the lowest rank's step durations
  std::vector<OpPair> pairs;                          // largest |predicted - measured| first
  std::size_t only_predicted = 0, only_measured = 0;  // ops of the step with no counterpart
};
// Lines up the ops of one step of each run (-1: default_step): on each rank, the ops starting
// within its step slice, matched by (rank, matching_name, occurrence in start order). Traces
// without steps (long runs) are matched whole. Throws InputError when a chosen step is absent.
StepMatch match_step(const std::vector<TraceOp>& predicted_ops, const std::vector<TraceStep>& predicted_steps,
                     long long predicted_step, const std::vector<TraceOp>& measured_ops,
                     const std::vector<TraceStep>& measured_steps, long long measured_step);

// The comparison: `step_time_error` = predicted / measured - 1; ops sorted by how much of the
// step-time gap they explain; op families (names without micro-batch) likewise; with reports of
// a pipeline, `stages`: each stage's idle share of the step (1 - compute busy / step time, the
// bubble and exposed communication) predicted and measured.
nlohmann::json compare_runs(const RunTimes& predicted, const RunTimes& measured, int top = 25);
std::string format_comparison(const nlohmann::json& comparison);

// Long runs through failures ("ditwin.longrun_report/1", predicted by `simulate --mode run`,
// measured by `execute --supervise`): ETTR, wall time and lost time by cause side by side.
bool is_longrun_report(const nlohmann::json& document);
nlohmann::json compare_longruns(const nlohmann::json& predicted, const nlohmann::json& measured,
                                const std::string& predicted_path, const std::string& measured_path);
std::string format_longrun_comparison(const nlohmann::json& comparison);

}  // namespace ditwin
