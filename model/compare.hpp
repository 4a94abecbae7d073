// Predicted vs measured, step and op by op. Works on reports or traces of either source,
// matching ops by the Program's names.
#pragma once
#include <nlohmann/json.hpp>
#include <map>
#include <string>

namespace ditwin {

// Reads a report (`ditwin.step_report/1`) or a Chrome trace written by ditwin; throws InputError
// naming the file when it is neither.
struct RunTimes {
  std::string source, plan, path;
  double step_time_s = 0;
  std::map<std::string, double> op_seconds;  // per op name, on the lowest rank present; other
                                             // ranks' (each pipeline stage's first) as "name @rank R"
  // Reports only: per rank present, its stage and the seconds its compute stream is busy.
  struct RankBusy {
    int stage = 0;
    double compute_s = 0;
  };
  std::map<long long, RankBusy> busy;
};
RunTimes read_run_times(const std::string& path);

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
