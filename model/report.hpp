// One report and trace schema for predicted (sim/) and measured (exec/) steps, so that
// `ditwin compare` and the GUI treat both alike. Keys are documented in docs/report.md.
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/plan.hpp"
#include "model/program.hpp"

namespace ditwin {

// One executed (or simulated) op on one rank.
struct OpRecord {
  std::string name;
  long long rank = 0;
  int stage = 0;
  Stream stream = Stream::compute;
  OpKind kind = OpKind::compute;
  Collective collective = Collective::none;
  int group_size = 1;
  double start_s = 0;     // from the start of the step
  double duration_s = 0;
  double flops = 0;
  double bytes = 0;
  // Names of the ops this one waits for on the same rank (the Program's Op::deps), for the
  // trace's args.deps and the GUI's dependency arrows. Empty when unknown.
  std::vector<std::string> deps;
};

// The names of `op`'s dependencies in its rank class, for OpRecord::deps.
std::vector<std::string> dep_names(const RankClass& cls, const Op& op);

// Where a rank's step time went; the parts add up to the step time.
struct StepBreakdown {
  long long rank = 0;                       // the rank the breakdown is taken on (the slowest)
  double compute_s = 0;                     // compute stream busy, optimizer excluded
  double optimizer_s = 0;
  std::map<std::string, double> exposed_comm_s;  // by stream: tp, cp, dp, pp; compute idle meanwhile
  double bubble_s = 0;                      // nothing running: waiting on other pipeline stages
};

// A measured run's steps vary and its ranks differ within a step: both are reported beside the
// breakdown, never folded into it (measured_breakdown).
struct StepVariability {
  long long step = -1;         // the step the breakdown is of: the median steady-state one
  long long steady_steps = 0;  // steps after the warm-up
  double median_s = 0, mean_s = 0, stddev_s = 0, min_s = 0, max_s = 0;  // their lengths
  // Within that step: the least and most compute-stream busy time of a rank, and whose.
  double rank_busy_min_s = 0, rank_busy_max_s = 0;
  long long fastest_rank = 0, slowest_rank = 0;
};

struct StepReport {
  std::string source;  // "predicted" or "measured"
  std::string plan;
  std::string device;
  long long gpus = 0;
  double step_time_s = 0;
  double samples_per_s = 0, tokens_per_s = 0;
  double tflops_per_gpu = 0, hardware_tflops_per_gpu = 0;
  double mfu = 0, hfu = 0;
  StepBreakdown breakdown;
  nlohmann::json memory;   // from the accounting
  nlohmann::json extra;    // source-specific details (simulator statistics, losses, ...)
  std::vector<OpRecord> ops;
  // Optional: every op of every step on every rank (measured runs), with the steps' spans.
  // Empty for predictions, whose trace is drawn from `ops` as one step.
  std::vector<OpRecord> timeline;
  std::vector<std::pair<double, double>> steps;  // start, duration (seconds)
  std::optional<StepVariability> variability;    // measured runs (measured_breakdown)
};

// Fills throughput, TFLOP/s, MFU/HFU (PaLM's definitions: model FLOPs without recompute over
// the dense peak; hardware FLOPs with it) and the memory section from the plan and step time.
void fill_metrics(StepReport& report, const Plan& plan, double peak_flops_per_gpu);
// Splits the slowest rank's step into compute, optimizer, exposed communication and bubble.
StepBreakdown breakdown_of(const std::vector<OpRecord>& ops, double step_time_s);
// A measured run's breakdown by the same definitions: breakdown_of on the ops of one real step on
// every rank (model/compare's default_step: the median steady-state step, the one `ditwin compare`
// and the GUI compare), not on per-op medians, which leave gaps that are variance, not idle time.
// The steps' spread and the ranks' busy times in that step go to `variability`. Needs `timeline`
// and `steps`; with fewer, keeps breakdown_of(ops).
void measured_breakdown(StepReport& report);

// Reports list every op up to this many; beyond, `op_summary` totals them per op family and stage.
constexpr std::size_t max_report_ops = 200000;
nlohmann::json to_json(const StepReport& report);
// Chrome Trace Event Format: pid = rank, tid = stream, X events in microseconds, M metadata,
// one ProfilerStep#N slice per step.
// Overlapping work on one stream (concurrent collectives) goes to extra lanes; times are whole
// nanoseconds (at most three decimals of a microsecond); rank r is pid r + 1, named "rank r".
nlohmann::json to_trace(const StepReport& report);
// A long run's timeline, predicted (sim/longrun) or measured (the supervisor): one process (pid 1,
// named `title`), a lane per category (train, checkpoint, failure, recovery, rollback; others after
// them), slices in whole nanoseconds, zero-length events as thread-scoped instants on their lane.
struct RunEvent {
  std::string name, category;
  double start_s = 0, duration_s = 0;
};
nlohmann::json to_run_trace(const std::string& title, const std::vector<RunEvent>& events, const nlohmann::json& other_data);
// The ranks a report's trace holds (the simulator's representative ranks, or every measured one).
std::vector<long long> trace_ranks(const StepReport& report);
// One rank's timeline in the PyTorch profiler's (Kineto's) per-rank form, which Holistic Trace
// Analysis reads: distributedInfo {rank, world_size}, ProfilerStep#N annotations and a launch per
// op on the host thread, each op a "kernel" on its stream's lane (collectives named ncclDevKernel_*).
// as_rank (>= 0) writes rank `rank`'s timeline under another rank number (the copies below).
nlohmann::json to_kineto_trace(const StepReport& report, long long rank, long long as_rank = -1);
// `--trace-dir DIR`: rank-N.json for every rank of trace_ranks(report), or with `every_rank`, for
// every rank of that Program, each a copy of its stage's representative (DIR created if missing).
void write_kineto_traces(const StepReport& report, const std::string& dir, const Program* every_rank = nullptr);
// The lowest rank of each pipeline stage in the report: what the simulator's representative ranks are.
std::map<int, long long> representative_of_stage(const StepReport& report);
// `--trace-ranks all`: every rank of the Program with its real number, each a skewless copy of its
// stage's representative rank. Throws InputError beyond max_ops slices (use --trace-dir then).
StepReport with_every_rank(const StepReport& report, const Program& program, std::size_t max_ops = 20'000'000);
void write_json_file(const nlohmann::json& j, const std::string& path, int indent = 1);
// Refuses (InputError naming `option` and the path) an output that could not be written later:
// its directory missing or not writable, or the path itself a directory or not writable. Called
// before long work (training, a long-run simulation, calibration) so that its result is not lost
// at the end. An empty path (the output not asked for) passes.
void require_writable_output(const std::string& path, const std::string& option);
// The same for an output folder (created when missing).
void require_writable_dir(const std::string& path, const std::string& option);

}  // namespace ditwin
