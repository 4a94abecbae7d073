// The supervisor loop and the measured ETTR. One attempt = one mpirun in its own process group;
// the supervisor polls it every 10 ms: its exit status, every rank's heartbeat file, and the
// events the ranks append (injections that fired, checkpoints, resume steps). On a failure it
// SIGKILLs the group and every rank pid the heartbeats named (the ranks may sit in groups of
// their own), reaps them (it is their subreaper), waits the backoff and starts the next attempt
// with the fired injections disarmed.
#include "exec/ft/supervisor.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "exec/ft/fault_tolerance.hpp"
#include "model/report.hpp"  // defines: to_run_trace

namespace ditwin::exec {

namespace fs = std::filesystem;

namespace {

// SIGINT / SIGTERM to the supervisor: the ranks sit in a process group of their own, so the
// supervisor ends them itself before it exits.
volatile std::sig_atomic_t interrupted = 0;
void on_interrupt(int) { interrupted = 1; }

struct Heartbeat {
  int pid = -1;
  long long step = -2;
  double t = 0;               // the rank's wall clock: for people reading the file, not for detection
  int attempt = 0;
  unsigned long long beat = 0;
  std::string line;           // what the file held: a change is a beat
};

Heartbeat read_heartbeat(const std::string& path) {
  Heartbeat h;
  std::ifstream in(path);
  if (!in || !std::getline(in, h.line)) return Heartbeat{};
  std::istringstream fields(h.line);
  if (!(fields >> h.pid >> h.step >> h.t >> h.attempt >> h.beat)) {
    std::string line = h.line;
    h = Heartbeat{};
    h.line = line;
  }
  return h;
}

// The job's own processes: mpirun and every rank carry `--ft-run-dir RUN_DIR` on their command
// lines. A pid read from a heartbeat file is acted on (watched, killed) only when it is one of
// them: the file is data anyone with access to the run directory could have written.
bool runs_in(int pid, const std::string& run_dir) {
  if (pid <= 0 || pid == ::getpid()) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  if (!in) return false;
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string needle = std::string("--ft-run-dir") + '\0' + run_dir + '\0';
  return cmdline.find(needle) != std::string::npos;
}

// Every live process of this run left by an earlier supervisor (one killed with -9 before its
// mpirun could take them down): ended before a new attempt starts. Returns their pids.
std::vector<int> end_orphans(const std::string& run_dir) {
  std::vector<int> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    int pid = std::stoi(name);
    if (runs_in(pid, run_dir)) found.push_back(pid);
  }
  for (int pid : found) ::kill(pid, SIGKILL);
  return found;
}

// Reads complete new lines of a file that others append to.
class Tail {
 public:
  explicit Tail(std::string path) : path_(std::move(path)) {}
  std::vector<nlohmann::json> read() {
    std::vector<nlohmann::json> out;
    std::ifstream in(path_, std::ios::binary);
    if (!in) return out;
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t start = 0;
    for (std::size_t nl; (nl = chunk.find('\n', start)) != std::string::npos; start = nl + 1) {
      try {
        out.push_back(nlohmann::json::parse(chunk.substr(start, nl - start)));
      } catch (const nlohmann::json::exception&) {
        // a torn line cannot happen with one write() per line; skip anything else
      }
    }
    offset_ += start;
    return out;
  }

 private:
  std::string path_;
  std::size_t offset_ = 0;
};

bool gone(int pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

void reap_children() {
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

SupervisedRun supervise(const SupervisorConfig& c) {
  auto log = [&](const std::string& line) {
    if (c.log) c.log(line);
  };
  // Ranks orphaned by a killed mpirun are re-parented here, so they can be reaped.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  interrupted = 0;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  fs::create_directories(c.run_dir);
  // The caller holds the run's lock: anything still running with this run directory is an orphan
  // of a supervisor that died, and would train on (and write checkpoints) beside the new attempt.
  if (auto orphans = end_orphans(c.run_dir); !orphans.empty()) {
    std::string list;
    for (int p : orphans) list += (list.empty() ? "" : ", ") + std::to_string(p);
    log("supervisor: ended " + std::to_string(orphans.size()) + " process(es) an earlier supervisor of this run left (pids " +
        list + ")");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (int p : orphans)
      while (!gone(p) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::string events_path = c.run_dir + "/events.jsonl";
  fs::remove(events_path);
  for (int r = 0; r < c.ranks; ++r) fs::remove(c.run_dir + "/heartbeat-" + std::to_string(r));
  std::vector<nlohmann::json> events;
  auto record = [&](nlohmann::json e) {
    e["t"] = wall_now();
    e["rank"] = -1;
    events.push_back(e);
  };
  Tail tail(events_path);
  auto drain = [&](int attempt, std::set<int>& fired, std::vector<nlohmann::json>& seen) {
    for (auto& e : tail.read()) {
      std::string kind = e.value("event", "");
      if (kind == "injected") {
        fired.insert(e.at("index").get<int>());
        log("supervisor: attempt " + std::to_string(attempt) + ": rank " + std::to_string(e.value("rank", -1)) +
            " injected " + e.value("spec", "") + " (" + e.value("detail", "") + ")");
      } else if (kind == "loaded") {
        std::string line = "supervisor: attempt " + std::to_string(attempt) + ": ";
        line += e.value("step", 0LL) > 0 ? "resumed from the checkpoint of step " + std::to_string(e.value("step", 0LL))
                                         : std::string("no usable checkpoint, starting from step 0");
        for (const auto& r : e.value("refused", nlohmann::json::array()))
          line += "; refused step " + r["step"].dump() + ": " + r.value("why", "");
        log(line);
      } else if (kind == "checkpoint_committed") {
        log("supervisor: attempt " + std::to_string(attempt) + ": checkpoint of step " + e["step"].dump() + " committed");
      } else if (kind == "rank_error") {
        log("supervisor: attempt " + std::to_string(attempt) + ": rank " + std::to_string(e.value("rank", -1)) +
            " reported: " + e.value("message", ""));
      }
      seen.push_back(e);
      events.push_back(std::move(e));
    }
  };

  SupervisedRun run;
  std::set<int> fired;
  int planned = 0;  // controlled rollouts: planned restarts so far (not failures)
  for (int attempt = 1;; ++attempt) {
    run.attempts = attempt;
    std::vector<std::string> argv = c.command(attempt, fired);
    double launch_t = wall_now();
    nlohmann::json fired_list = nlohmann::json::array();
    for (int i : fired) fired_list.push_back(i);
    record({{"event", "launch"}, {"attempt", attempt}, {"fired", fired_list}});
    log("supervisor: attempt " + std::to_string(attempt) + ": launching " + std::to_string(c.ranks) + " rank(s)");
    std::fflush(nullptr);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("supervisor: cannot fork");
    if (pid == 0) {
      ::setpgid(0, 0);
      // mpirun dies with the supervisor (kill -9 included), and its ranks with it (they set the
      // same on their parent): no job keeps training unsupervised.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) _exit(127);
      for (const auto& [k, v] : c.environment) ::setenv(k.c_str(), v.c_str(), 0);
      std::vector<char*> args;
      for (auto& s : argv) args.push_back(s.data());
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      std::perror(("ditwin: supervisor: cannot start " + argv[0]).c_str());
      _exit(127);
    }
    ::setpgid(pid, pid);

    std::vector<nlohmann::json> seen;
    bool exited = false;
    int exit_code = 0;
    int hung_rank = -1, dead_rank = -1;
    double hung_since = 0;
    // Per rank: the heartbeat line last seen, when it last changed (the supervisor's monotonic
    // clock, and the wall time then for the report), and its pid once known to be this job's.
    using Clock = std::chrono::steady_clock;
    std::vector<std::string> last_line(c.ranks);
    std::vector<Clock::time_point> changed_at(c.ranks, Clock::now());
    std::vector<double> changed_wall(c.ranks, launch_t);
    std::vector<int> verified(c.ranks, -1);
    auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
    bool planned_kill = false;  // controlled rollouts: c.watch stopped the attempt
    while (true) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      drain(attempt, fired, seen);
      if (c.watch) {  // controlled rollouts: a watched window judged while the attempt runs
        std::vector<nlohmann::json> add;
        planned_kill = c.watch(attempt, events, add);
        for (auto& e : add) record(std::move(e));
        if (planned_kill) break;
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      auto now = Clock::now();
      for (int r = 0; r < c.ranks && hung_rank < 0 && dead_rank < 0; ++r) {
        Heartbeat h = read_heartbeat(c.run_dir + "/heartbeat-" + std::to_string(r));
        bool this_attempt = h.attempt == attempt && h.pid > 0;
        if (this_attempt && h.line != last_line[r]) {
          last_line[r] = h.line;
          changed_at[r] = now;
          changed_wall[r] = wall_now();
          if (verified[r] != h.pid && runs_in(h.pid, c.run_dir)) verified[r] = h.pid;
        }
        // A rank process that is gone is a failure now; mpirun takes about a second to notice
        // and tear the others down.
        if (this_attempt && verified[r] == h.pid && h.step != FaultTolerance::exiting_step && gone(h.pid)) {
          dead_rank = r;
          break;
        }
        bool long_phase = !this_attempt || h.step == FaultTolerance::starting_step ||
                          h.step == FaultTolerance::finishing_step || h.step == FaultTolerance::checkpointing_step;
        double limit = long_phase ? c.startup_timeout_s + c.heartbeat_timeout_s : c.heartbeat_timeout_s;
        if (seconds(now - changed_at[r]) > limit) {
          hung_rank = r;
          hung_since = changed_wall[r];
        }
      }
      if (hung_rank >= 0 || dead_rank >= 0 || interrupted) break;
    }
    // --- controlled rollouts: a planned stop by SIGKILL (the ranks and their checkpoints after the
    // rollout's are thrown away: the next attempt restarts from the checkpoint before it) ---
    if (planned_kill) {
      ::kill(-pid, SIGKILL);
      std::vector<int> pids;
      for (int r = 0; r < c.ranks; ++r) {
        Heartbeat h = read_heartbeat(c.run_dir + "/heartbeat-" + std::to_string(r));
        if (h.attempt == attempt && (h.pid == verified[r] || runs_in(h.pid, c.run_dir))) pids.push_back(h.pid);
      }
      for (int p : end_orphans(c.run_dir)) pids.push_back(p);
      for (int p : pids) ::kill(p, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      for (int p : pids)
        while (!gone(p) && std::chrono::steady_clock::now() < until) {
          reap_children();
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
      reap_children();
      drain(attempt, fired, seen);
      record({{"event", "planned_stop"}, {"attempt", attempt}, {"killed", true}});
      log("supervisor: attempt " + std::to_string(attempt) + ": stopped as planned (rollout)");
      ++planned;
      continue;
    }
    // --- end controlled rollouts ---
    double detect_t = wall_now();
    drain(attempt, fired, seen);
    if (exited && exit_code == 0) {
      // --- controlled rollouts: a clean exit may be a planned stop, not the end ---
      if (c.after_finish) {
        std::vector<nlohmann::json> add;
        bool more = c.after_finish(attempt, events, add);
        for (auto& e : add) record(std::move(e));
        if (more) {
          record({{"event", "planned_stop"}, {"attempt", attempt}});
          ++planned;
          continue;
        }
      }
      // --- end controlled rollouts ---
      record({{"event", "finished"}, {"attempt", attempt}});
      log("supervisor: attempt " + std::to_string(attempt) + ": finished");
      run.finished = true;
      run.exit_code = 0;
      break;
    }
    // What failed, and since when: an injected fault knows its own time; a hang is as old as the
    // silent rank's last heartbeat; anything else is dated by its detection (mpirun exits within
    // milliseconds of a rank's death).
    // The kind says who noticed: the heartbeat (hang), a survivor's collective watchdog, a rank's
    // own error, or the process going away.
    double fail_t = hung_rank >= 0 ? hung_since : detect_t;
    std::string kind = interrupted ? "interrupted" : hung_rank >= 0 ? "hang" : "process_exit", detail;
    bool injected_hang = false;
    for (const auto& e : seen) {
      std::string k = e.value("event", "");
      if (k == "injected" && e.value("kind", "") != "corrupt_shard") {
        fail_t = std::min(fail_t, e.at("t").get<double>());
        detail += (detail.empty() ? "" : "; ") + std::string("injected ") + e.value("spec", "");
        injected_hang = injected_hang || e.value("kind", "") == "hang";
      } else if (k == "rank_error") {
        std::string m = e.value("message", "");
        if (hung_rank < 0 && !interrupted) kind = m.find("collective timeout") != std::string::npos ? "collective_timeout" : "rank_error";
        detail += (detail.empty() ? "" : "; ") + m;
      }
    }
    // A hang a survivor's collective watchdog caught began when the stuck rank last beat: the
    // oldest last beat of the attempt (not when the watchdog gave up).
    if (kind == "collective_timeout" && !injected_hang)
      for (int r = 0; r < c.ranks; ++r)
        if (!last_line[r].empty()) fail_t = std::min(fail_t, changed_wall[r]);
    // A hang that ends in a dead process (the watchdog aborted, or another fault killed a rank
    // first) is named by what detected it; only an injected hang with nothing else is "hang".
    if (kind == "process_exit" && injected_hang && dead_rank < 0 && !interrupted) kind = "hang";
    fail_t = std::min(fail_t, detect_t);
    // Kill what is left: the group, then every rank of this attempt whose pid is this job's
    // (a heartbeat naming another process is not obeyed), and reap them.
    ::kill(-pid, SIGKILL);
    std::vector<int> rank_pids;
    for (int r = 0; r < c.ranks; ++r) {
      Heartbeat h = read_heartbeat(c.run_dir + "/heartbeat-" + std::to_string(r));
      if (h.attempt == attempt && (h.pid == verified[r] || runs_in(h.pid, c.run_dir))) rank_pids.push_back(h.pid);
    }
    for (int p : end_orphans(c.run_dir)) rank_pids.push_back(p);  // ranks that never beat
    for (int p : rank_pids) ::kill(p, SIGKILL);
    if (!exited) ::waitpid(pid, nullptr, 0);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (int p : rank_pids)
      while (!gone(p) && std::chrono::steady_clock::now() < deadline) {
        reap_children();
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    reap_children();
    drain(attempt, fired, seen);
    std::string what = hung_rank >= 0 ? "rank " + std::to_string(hung_rank) + " silent for " +
                                            fixed(detect_t - hung_since, 2) + " s (heartbeat timeout)"
                       : dead_rank >= 0 ? "rank " + std::to_string(dead_rank) + "'s process is gone"
                                        : "mpirun exited with status " + std::to_string(exit_code);
    record({{"event", "failure"}, {"attempt", attempt}, {"kind", kind}, {"detail", detail.empty() ? what : detail + "; " + what},
            {"t_fail", fail_t}, {"t_detect", detect_t}, {"exit_code", exit_code}, {"hung_rank", hung_rank}});
    log("supervisor: attempt " + std::to_string(attempt) + " failed (" + kind + ": " + what +
        (detail.empty() ? "" : ", " + detail) + "); detected " + fixed(detect_t - fail_t, 3) + " s after the failure");
    run.exit_code = exit_code;
    if (interrupted) {
      run.stopped_because = "interrupted (SIGINT/SIGTERM): the ranks were killed";
      break;
    }
    if (exited && exit_code == 2) {
      run.stopped_because = "a rank refused its input (exit status 2): restarting would fail the same way";
      break;
    }
    if (attempt - 1 - planned >= c.restart.max_restarts) {
      run.stopped_because = "gave up after " + std::to_string(attempt - 1 - planned) + " restart(s) (reliability.restart.max_restarts " +
                            std::to_string(c.restart.max_restarts) + ")";
      break;
    }
    double backoff = c.restart.backoff_before(attempt - planned);
    record({{"event", "restart"}, {"restart", attempt - planned}, {"backoff_s", backoff}});
    log("supervisor: restart " + std::to_string(attempt - planned) + "/" + std::to_string(c.restart.max_restarts) + " in " +
        fixed(backoff, 2) + " s, from the newest good checkpoint");
    if (backoff > 0) std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const nlohmann::json& a, const nlohmann::json& b) { return a.at("t").get<double>() < b.at("t").get<double>(); });
  run.events = nlohmann::json(events);
  return run;
}

namespace {

struct Attempt {
  double launch = NAN, mpi_ready = NAN, train_start = NAN, end = NAN;
  double fail = NAN, detect = NAN, raw_fail = NAN;
  long long start_step = 0;
  // kind (numerical faults): 0 a step, 1 a step whose update the guard skipped, 2 a step the guard
  // threw away, 3 the in-process rollback after it (step = the step it went back to).
  struct Step { long long step; double t, stall; int kind = 0; };
  std::vector<nlohmann::json> numerical;
  std::vector<Step> steps;
  double drain_t = NAN, drain_stall = 0;
  bool failed = false;
  std::string failure_kind, failure_detail;
};

}  // namespace

nlohmann::json measured_longrun_report(const std::string& plan, const nlohmann::json& events) {
  using nlohmann::json;
  std::map<int, Attempt> attempts;
  for (const auto& e : events) {
    std::string k = e.value("event", "");
    int a = e.value("attempt", 0);
    if (a < 1) continue;
    Attempt& at = attempts[a];
    double t = e.at("t").get<double>();
    bool root = e.value("rank", -1) == 0;
    if (k == "launch") at.launch = t;
    else if (k == "mpi_ready" && root) at.mpi_ready = t;
    else if (k == "train_start" && root) at.train_start = t, at.start_step = e.value("step", 0LL);
    else if (k == "step" && root)
      at.steps.push_back({e.at("step").get<long long>(), t, e.value("stall_s", 0.0),
                          e.value("rolled_back", false) ? 2 : e.value("skipped", false) ? 1 : 0});
    else if (k == "numerical_rollback" && root) at.steps.push_back({e.at("to_step").get<long long>(), t, 0.0, 3});
    else if (k == "numerical" && root) at.numerical.push_back(e);
    else if (k == "checkpoint_drain" && root) at.drain_t = t, at.drain_stall = e.value("stall_s", 0.0);
    else if (k == "failure") {
      at.failed = true;
      at.fail = at.raw_fail = e.at("t_fail").get<double>();
      at.detect = e.at("t_detect").get<double>();
      at.failure_kind = e.value("kind", "");
      at.failure_detail = e.value("detail", "");
    }
  }
  if (attempts.empty() || std::isnan(attempts.begin()->second.train_start))
    throw std::runtime_error("the supervised run has no training to report on (no train_start event in attempt 1)");
  double t0 = attempts.begin()->second.train_start;
  double startup_s = t0 - attempts.begin()->second.launch;
  std::map<std::string, double> lost = {{"rollback", 0}, {"detection", 0}, {"checkpoint_stall", 0},
                                        {"reschedule", 0}, {"process_start", 0}, {"checkpoint_load", 0},
                                        {"numerical", 0}};
  json numerical_faults = json::array();
  json timeline = json::array(), failures = json::array();
  // --- controlled rollouts: planned stops, and the attempts whose window was rolled back ---
  lost["rollout"] = 0;
  std::set<int> planned_stops, rolled_back_windows;
  json rollouts = json::array();
  for (const auto& e : events) {
    std::string k = e.value("event", "");
    if (k == "planned_stop") planned_stops.insert(e.value("attempt", 0));
    if (k == "rollout_rolled_back") rolled_back_windows.insert(e.value("window_attempt", 0));
    if (k.rfind("rollout_", 0) == 0) rollouts.push_back(e);
  }
  double planned_end = NAN;  // the end of the previous attempt, when it stopped as planned
  // --- end controlled rollouts ---
  auto mark = [&](const std::string& name, const std::string& lane, double start, double d) {
    timeline.push_back({name, lane, start - t0, std::max(0.0, d)});
  };
  // numerical: thrown away by a numerical rollback; skipped: its update was dropped.
  struct Work { int attempt; double seconds; bool numerical = false, skipped = false; };
  std::map<long long, std::vector<Work>> work;  // per step index, every time it was computed
  double partial_s = 0, end_t = t0, prev_detect = NAN;
  for (auto& [a, at] : attempts) {
    if (a > 1 && !std::isnan(planned_end) && !std::isnan(at.train_start)) {  // controlled rollouts: a planned restart
      double stop = std::max(planned_end, at.train_start);
      lost["rollout"] += stop - planned_end;
      mark(rolled_back_windows.count(a - 1) ? "rollout: roll back (restart, load)" : "rollout: restart on the next plan",
           "rollout", planned_end, stop - planned_end);
    } else if (a > 1 && !std::isnan(prev_detect)) {
      // Restart: kill + backoff until the launch, the processes and MPI up, then load + set-up.
      double launch = std::isnan(at.launch) ? prev_detect : at.launch;
      double stop = at.failed && std::isnan(at.train_start) ? at.fail : at.train_start;
      double ready = std::isnan(at.mpi_ready) ? stop : std::min(at.mpi_ready, stop);
      lost["reschedule"] += launch - prev_detect;
      mark("kill survivors + backoff", "recovery", prev_detect, launch - prev_detect);
      lost["process_start"] += ready - launch;
      mark("process start + MPI init", "recovery", launch, ready - launch);
      lost["checkpoint_load"] += stop - ready;
      mark("checkpoint load", "recovery", ready, stop - ready);
    }
    if (!std::isnan(at.train_start)) {
      double prev = at.train_start;
      for (const auto& s : at.steps) {
        double interval = s.t - prev;
        if (s.kind == 3) {  // numerical rollback: restore + load; the steps after s.step were for nothing
          lost["numerical"] += interval;
          mark("numerical rollback (restore)", "recovery", prev, interval);
          for (auto& [idx, list] : work)
            if (idx > s.step)
              for (auto& w : list)
                if (w.attempt == a) w.numerical = true;
          prev = s.t;
          continue;
        }
        work[s.step].push_back({a, interval - s.stall, false, s.kind == 1});
        if (s.kind == 2) mark("numerical fault (step thrown away)", "failure", prev, interval - s.stall);
        if (s.kind == 1) mark("numerical fault (update skipped)", "failure", prev, interval - s.stall);
        lost["checkpoint_stall"] += s.stall;
        if (s.stall > 0) mark("checkpoint", "checkpoint", s.t - s.stall, s.stall);
        prev = s.t;
      }
      double end = prev;
      if (at.failed) {
        // A rank may log its last step a moment after another rank's failure: the failure then
        // counts from that step's end, so no time is counted twice.
        at.fail = std::max(prev, at.fail);
        end = at.fail;
        partial_s += end - prev;  // the step in flight is lost
        if (end > prev) mark("work in flight (lost)", "rollback", prev, end - prev);
      } else if (!std::isnan(at.drain_t) && !planned_stops.count(a)) {
        end = std::max(prev, at.drain_t);
        lost["checkpoint_stall"] += end - prev;
        if (end > prev) mark("checkpoint drain", "checkpoint", prev, end - prev);
      }
      mark("train (attempt " + std::to_string(a) + ")", "train", at.train_start, end - at.train_start);
      end_t = end;
      // --- controlled rollouts: a planned stop's final save is the rollout's, not a checkpoint stall ---
      if (planned_stops.count(a) && !at.failed && !at.steps.empty()) {
        double save = at.steps.back().stall;
        lost["checkpoint_stall"] -= save;
        lost["rollout"] += save;
        if (save > 0) mark("rollout: checkpoint at the planned stop", "rollout", end - save, save);
      }
      planned_end = planned_stops.count(a) && !at.failed ? end : NAN;
      // --- end controlled rollouts ---
    } else {
      planned_end = NAN;
    }
    for (const auto& e : at.numerical)
      numerical_faults.push_back({{"attempt", a}, {"category", "numerical"}, {"at_s", e.at("t").get<double>() - t0},
                                  {"step", e.value("bad_step", -1LL)}, {"what", e.value("what", "")},
                                  {"policy", e.value("policy", "")}, {"loss", e.value("loss", json())},
                                  {"grad_norm", e.value("grad_norm", json())}});
    if (at.failed) {
      double detect = std::max(at.detect, at.fail);
      lost["detection"] += detect - at.fail;
      mark("failure: " + at.failure_kind, "failure", at.fail, 0);
      mark("detect (" + at.failure_kind + ")", "recovery", at.fail, detect - at.fail);
      failures.push_back({{"attempt", a}, {"kind", at.failure_kind}, {"detail", at.failure_detail},
                          // As the supervisor saw it (a hang: from the silent rank's last beat);
                          // the lost-time split counts from the failure or the last step logged.
                          {"at_s", at.raw_fail - t0}, {"detected_after_s", at.detect - at.raw_fail},
                          {"last_step_done", at.steps.empty() ? at.start_step : at.steps.back().step}});
      prev_detect = detect;
      end_t = detect;
    }
  }
  // Each step counts once, from the last attempt that computed it; earlier computations were rolled back.
  double productive = 0, rolled = partial_s;
  long long last_step = 0;
  for (const auto& [step, list] : work) {
    if (list.back().skipped || list.back().numerical) lost["numerical"] += list.back().seconds;
    else productive += list.back().seconds;
    for (std::size_t i = 0; i + 1 < list.size(); ++i)
      (list[i].numerical ? lost["numerical"] : rolled_back_windows.count(list[i].attempt) ? lost["rollout"] : rolled) +=
          list[i].seconds;
    last_step = std::max(last_step, step);
  }
  lost["rollback"] = rolled;
  // Resume steps, for the failures list.
  for (auto& f : failures) {
    auto next = attempts.find(f["attempt"].get<int>() + 1);
    if (next != attempts.end() && !std::isnan(next->second.train_start)) f["resumed_at_step"] = next->second.start_step;
  }
  double wall = end_t - t0;
  double restart = lost["reschedule"] + lost["process_start"] + lost["checkpoint_load"];
  double accounted = productive + lost["rollback"] + lost["detection"] + lost["checkpoint_stall"] + restart + lost["numerical"] +
                    lost["rollout"];
  double ettr = wall > 0 ? productive / wall : 0;
  json ettr_j = {{"mean", ettr}, {"p5", ettr}, {"p50", ettr}, {"p95", ettr}, {"stddev", 0.0}, {"ci95", {ettr, ettr}}};
  json by_cause_s = {{"rollback", lost["rollback"]}, {"restart", restart}, {"detection", lost["detection"]},
                     {"checkpoint_stall", lost["checkpoint_stall"]}, {"stragglers", 0.0}, {"planned_maintenance", 0.0},
                     {"numerical", lost["numerical"]}, {"rollout", lost["rollout"]}};
  json by_cause_h = json::object(), by_cause_frac = json::object();
  for (const auto& [k, v] : by_cause_s.items()) {
    by_cause_h[k] = v.get<double>() / 3600;
    by_cause_frac[k] = wall > 0 ? v.get<double>() / wall : 0;
  }
  return {{"schema", "ditwin.longrun_report/1"},
          {"source", "measured"},
          {"plan", plan},
          {"trials", 1},
          {"ettr", ettr_j},
          {"wall_s", wall},
          {"productive_s", productive},
          {"unaccounted_s", wall - accounted},
          {"startup_s", startup_s},
          {"steps", last_step},
          {"attempts", attempts.size()},
          {"interruptions", failures.size()},
          {"failures", failures},
          {"numerical_faults", numerical_faults},
          {"rollouts", rollouts},  // controlled rollouts: rollout_start, rollout_regressed, rollout_rolled_back / rollout_kept
          {"lost_seconds_by_cause", by_cause_s},
          {"lost_hours_by_cause", by_cause_h},
          {"lost_fraction_by_cause", by_cause_frac},
          {"restart_seconds_by_step", {{"reschedule", lost["reschedule"]}, {"process_start", lost["process_start"]},
                                       {"checkpoint_load", lost["checkpoint_load"]}}},
          {"timeline", timeline}};
}

nlohmann::json measured_longrun_trace(const nlohmann::json& report) {
  std::vector<RunEvent> events;
  for (const auto& e : report.at("timeline")) events.push_back({e[0], e[1], e[2], e[3]});
  const std::string plan = report.value("plan", std::string());
  return to_run_trace("job " + plan + " (measured)", events, {{"plan", plan}, {"kind", "longrun"}, {"source", "measured"}});
}

}  // namespace ditwin::exec
