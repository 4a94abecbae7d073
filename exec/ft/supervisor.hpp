// The supervisor of `ditwin execute --supervise`: launches the ranks (one mpirun per attempt, in
// its own process group), detects failures — a rank that dies (mpirun exits non-zero), a rank
// that stops beating (hang), a rank that reports a collective timeout — kills what is left,
// and restarts everyone from the newest good checkpoint under the plan's restart policy. From the
// events of all attempts it measures the run's ETTR and lost time by cause, in the schema of the
// simulator's long-run report (docs/reliability.md).
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "model/plan.hpp"

namespace ditwin::exec {

struct SupervisorConfig {
  std::string run_dir;  // heartbeats, events.jsonl (cleared at start)
  int ranks = 1;
  double heartbeat_timeout_s = 30;  // reliability.heartbeat_s: a rank silent this long is hung
  double startup_timeout_s = 60;    // from launch until a rank's first heartbeat
  RestartPolicySpec restart;
  std::vector<InjectSpec> inject;   // numbered as the ranks number them
  // argv of attempt `attempt` (from 1), given the injections that already fired.
  std::function<std::vector<std::string>(int attempt, const std::set<int>& fired)> command;
  // Environment set in the launched process (name, value), on top of the supervisor's.
  std::vector<std::pair<std::string, std::string>> environment;
  std::function<void(const std::string&)> log;  // progress lines
  // --- controlled rollouts (issue 18 part 3) ---
  // Called when an attempt exits with status 0, with every event so far: true launches another
  // attempt (a planned restart: a rollout, its rollback, or going on after it), false ends the run.
  // Events it appends to `add` are recorded (time and rank -1 set). Planned restarts are not
  // failures: the restart policy (max_restarts, backoff) counts failures only.
  std::function<bool(int attempt, const std::vector<nlohmann::json>& events, std::vector<nlohmann::json>& add)> after_finish;
  // Called at every poll while an attempt runs: true stops it now (SIGKILL, a planned stop, then the
  // next attempt as after after_finish), e.g. a watched window that regressed.
  std::function<bool(int attempt, const std::vector<nlohmann::json>& events, std::vector<nlohmann::json>& add)> watch;
  // --- end controlled rollouts ---
};

struct SupervisedRun {
  bool finished = false;
  int attempts = 0;
  std::string stopped_because;  // when not finished
  int exit_code = 0;            // of the last attempt
  nlohmann::json events;        // every event of the supervisor and the ranks, in time order
};

SupervisedRun supervise(const SupervisorConfig& config);

// The measured long-run report ("ditwin.longrun_report/1", "source": "measured") from a
// supervised run's events: ETTR = productive time / wall time from the first attempt's first
// step to the end, and the rest of wall time by cause (rollback, detection, restart steps,
// checkpoint stall), which add up to it exactly. `timeline` entries are (name, lane, start, duration).
nlohmann::json measured_longrun_report(const std::string& plan, const nlohmann::json& events);
// Chrome trace of that report's timeline, the lanes the simulator's long-run trace uses.
nlohmann::json measured_longrun_trace(const nlohmann::json& report);

}  // namespace ditwin::exec
