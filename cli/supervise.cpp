// `ditwin execute PLAN --supervise`: the supervisor process. It never joins MPI; it launches one
// mpirun per attempt with the rank-side flags (checkpoint dir, run dir, attempt, fired
// injections), and turns the run's events into the measured long-run report.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "cli/exec_commands.hpp"
#include "exec/data/data_source.hpp"
#include "exec/runtime.hpp"
#include "exec/ft/sealed_codec.hpp"
#include "exec/ft/supervisor.hpp"
#include "model/errors.hpp"
#include "model/report.hpp"

namespace ditwin::cli {

namespace fs = std::filesystem;

namespace {
std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}
}  // namespace

std::vector<InjectSpec> all_injections(const Plan& plan, const ExecuteArgs& a) {
  std::vector<InjectSpec> all = plan.reliability.inject;
  for (const auto& text : a.inject) all.push_back(parse_inject(text, "--inject"));
  check_injections(plan, all, a.steps, [&](std::size_t i) {
    return i < plan.reliability.inject.size() ? "reliability.inject[" + std::to_string(i) + "]"
                                              : "--inject " + all[i].describe();
  });
  return all;
}

std::set<int> parse_fired(const std::string& list) {
  std::set<int> out;
  std::stringstream s(list);
  std::string item;
  while (std::getline(s, item, ','))
    if (!item.empty()) out.insert(std::stoi(item));
  return out;
}

// --- controlled rollouts (issue 18 part 3): the supervisor's side ---
namespace {

// One window of steps as rank 0 logged them: step times (interval between step events, less the
// checkpoint stall) and losses, from the newest attempt that computed each step.
struct Window {
  std::vector<double> step_s, loss;
  double median_step_s() const {
    if (step_s.empty()) return 0;
    std::vector<double> v = step_s;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  }
  double mean_loss() const { return loss.empty() ? 0 : std::accumulate(loss.begin(), loss.end(), 0.0) / loss.size(); }
  double stddev_loss() const {
    if (loss.size() < 2) return 0;
    double m = mean_loss(), q = 0;
    for (double l : loss) q += (l - m) * (l - m);
    return std::sqrt(q / (loss.size() - 1));
  }
};

// Steps first+1 .. last, from attempts >= min_attempt, skipping the attempts in `skip`.
Window window_of(const std::vector<nlohmann::json>& events, long long first, long long last, int min_attempt,
                 const std::set<int>& skip) {
  std::map<long long, std::pair<double, double>> by_step;  // step -> (seconds, loss)
  std::map<int, double> prev_t;  // attempt -> time of its previous step (or train_start)
  for (const auto& e : events) {
    if (e.value("rank", -1) != 0) continue;
    int at = e.value("attempt", 0);
    std::string k = e.value("event", "");
    if (k == "train_start") prev_t[at] = e.at("t").get<double>();
    if (k != "step") continue;
    double t = e.at("t").get<double>();
    double d = prev_t.count(at) ? t - prev_t[at] - e.value("stall_s", 0.0) : NAN;
    prev_t[at] = t;
    long long step = e.value("step", 0LL);
    if (at < min_attempt || skip.count(at) || step <= first || step > last || std::isnan(d)) continue;
    by_step[step] = {d, e.value("loss", 0.0)};
  }
  Window w;
  for (const auto& [step, v] : by_step) w.step_s.push_back(v.first), w.loss.push_back(v.second);
  return w;
}

// Plays the plan's rollouts through the supervisor's planned stops: run the plan in effect up to a
// rollout's step (checkpointed), restart on its second plan for the watched window, compare, and
// keep it or roll back (restart from the checkpoint before it, on the plan in effect before).
class RolloutDriver {
 public:
  RolloutDriver(const Plan& plan, const ExecuteArgs& a, std::string run_dir, std::string checkpoint_dir)
      : plan_(plan), steps_(a.steps), run_dir_(std::move(run_dir)), checkpoint_dir_(std::move(checkpoint_dir)),
        in_effect_(a.plan) {
    const auto& list = plan.reliability.rollouts;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const auto& r = list[i];
      std::string at = "reliability.rollouts[" + std::to_string(i) + "]";
      if (r.at_step < 0) throw InputError(at + ".at_hours: the supervisor switches plans at a step; give at_step");
      if (r.plan_document.is_null()) throw InputError(at + ": no second plan to run (give plan: a file or an override)");
      if (r.at_step >= steps_)
        throw InputError(at + ".at_step " + std::to_string(r.at_step) + ": not reached in a run of " + std::to_string(steps_) +
                         " steps (--steps)");
      Plan second = parse_plan(r.plan_document);
      if (second.parallelism.world() != plan.parallelism.world())
        throw InputError(at + ".plan: runs on " + std::to_string(second.parallelism.world()) + " ranks, the job on " +
                         std::to_string(plan.parallelism.world()) + ": the supervisor keeps the ranks");
      // The checkpoints of the job carry its first plan's identity whichever plan writes them
      // (--ft-identity-plan); the optimizer's state must still fit the second plan's optimizer.
      if (second.training.optimizer.kind != plan.training.optimizer.kind)
        throw InputError(at + ".plan.training.optimizer.kind: a rollout keeps the optimizer (its state is in the checkpoint "
                         "before the rollout); change its settings (lr, ...), not its kind");
      // The second plan's file, in the run directory: it keeps enough checkpoints that the one
      // before the rollout survives the watched window.
      nlohmann::json doc = r.plan_document;
      long long every = std::max(1LL, second.reliability.checkpoint.interval_steps);
      long long window = r.watch_steps > 0 ? r.watch_steps : 1000000;
      doc["reliability"]["checkpoint"]["keep"] = second.reliability.checkpoint.keep + std::min(window / every, 1000LL) + 2;
      std::string file = run_dir_ + "/rollout-" + std::to_string(i + 1) + ".plan.json";
      fs::create_directories(run_dir_);
      write_json_file(doc, file, 2);
      files_.push_back(file);
    }
  }
  bool active() const { return !plan_.reliability.rollouts.empty(); }
  const std::string& plan_file() const { return watching_ ? files_[k_] : in_effect_; }
  // Where the next attempt stops: the next rollout's step, else the end. A watched attempt runs on
  // past its window (kept: no restart); a regression stops it (watch).
  long long stop_step() const {
    const auto& rollouts = plan_.reliability.rollouts;
    std::size_t next = watching_ ? k_ + 1 : k_;
    return next < rollouts.size() ? rollouts[next].at_step : steps_;
  }
  bool save_final() const { return stop_step() < steps_; }
  // Before an attempt starts: a roll-back deletes the checkpoints after the rollout's step (the
  // ranks that wrote them are gone), so the attempt resumes from the one before the change.
  void before_attempt() {
    if (rollback_to_ < 0) return;
    for (const auto& d : fs::directory_iterator(checkpoint_dir_)) {
      std::string n = d.path().filename().string();
      if (n.rfind("step-", 0) == 0 && n.size() == 13 && std::stoll(n.substr(5)) > rollback_to_) fs::remove_all(d.path());
    }
    rollback_to_ = -1;
  }

  // While an attempt runs: once the window's last step is logged, judge it; true stops the attempt.
  bool watch(int attempt, const std::vector<nlohmann::json>& events, std::vector<nlohmann::json>& add) {
    if (!watching_) return false;
    const long long end = plan_.reliability.rollouts[k_].at_step + window_steps_;
    bool done = false;
    for (auto it = events.rbegin(); it != events.rend() && !done; ++it)
      done = it->value("event", "") == "step" && it->value("rank", -1) == 0 && it->value("attempt", 0) >= first_window_attempt_ &&
             it->value("step", 0LL) >= end;
    if (!done) return false;
    return !decide(attempt, events, add);  // regressed: stop now
  }

  bool after_finish(int attempt, const std::vector<nlohmann::json>& events, std::vector<nlohmann::json>& add) {
    const auto& rollouts = plan_.reliability.rollouts;
    if (watching_ && !decide(attempt, events, add)) return true;  // the window ended with the attempt
    if (k_ >= rollouts.size()) return false;  // the end of the run
    // The attempt stopped at rollout k_'s step: start it.
    const auto& r = rollouts[k_];
    before_ = window_of(events, 0, r.at_step, 1, rolled_back_);
    long long w = r.watch_steps;
    if (w < 1) {  // watch_minutes: as many steps as the window holds at the step time before the change
      double m = before_.median_step_s();
      w = m > 0 ? static_cast<long long>(std::ceil(r.watch_s / m)) : 1;
    }
    w = std::max(1LL, std::min(w, steps_ - r.at_step));
    auto tail = [&](std::vector<double> v) { return std::vector<double>(v.end() - std::min<long long>(w, v.size()), v.end()); };
    before_.step_s = tail(before_.step_s);
    before_.loss = tail(before_.loss);
    window_steps_ = w;
    watching_ = true;
    first_window_attempt_ = attempt + 1;
    add.push_back({{"event", "rollout_start"}, {"attempt", attempt}, {"rollout", k_}, {"at_step", r.at_step},
                   {"change", r.change}, {"plan", files_[k_]}, {"watch_steps", w},
                   {"before_median_step_s", before_.median_step_s()}, {"before_mean_loss", before_.mean_loss()}});
    return true;
  }

 private:
  // The window against the same number of steps before the change: true when kept.
  bool decide(int attempt, const std::vector<nlohmann::json>& events, std::vector<nlohmann::json>& add) {
    const auto& r = plan_.reliability.rollouts[k_];
    Window after = window_of(events, r.at_step, r.at_step + window_steps_, first_window_attempt_, {});
    std::string why;
    double b = before_.median_step_s(), m = after.median_step_s();
    if (r.step_time_regression > 0 && b > 0 && m > (1 + r.step_time_regression) * b)
      why = "step time " + fixed(1e3 * m, 1) + " ms > " + fixed(1e3 * b, 1) + " ms x " + fixed(1 + r.step_time_regression, 2);
    double bl = before_.mean_loss(), al = after.mean_loss();
    if (why.empty() && r.loss_regression > 0 && al > (1 + r.loss_regression) * bl)
      why = "loss " + fixed(al, 4) + " > " + fixed(bl, 4) + " x " + fixed(1 + r.loss_regression, 2);
    if (why.empty() && r.loss_sigma > 0 && al > bl + r.loss_sigma * before_.stddev_loss())
      why = "loss " + fixed(al, 4) + " > " + fixed(bl, 4) + " + " + fixed(r.loss_sigma, 1) + " sigma";
    nlohmann::json figures = {{"rollout", k_}, {"attempt", attempt}, {"before_median_step_s", b}, {"after_median_step_s", m},
                              {"before_mean_loss", bl}, {"after_mean_loss", al}, {"window_steps", window_steps_}};
    watching_ = false;
    ++k_;
    if (why.empty()) {
      figures["event"] = "rollout_kept";
      add.push_back(figures);
      in_effect_ = files_[k_ - 1];
      return true;
    }
    figures["event"] = "rollout_regressed";
    figures["why"] = why;
    add.push_back(figures);
    rolled_back_.insert(attempt);
    rollback_to_ = r.at_step;
    add.push_back({{"event", "rollout_rolled_back"}, {"attempt", attempt}, {"rollout", k_ - 1}, {"to_step", r.at_step},
                   {"window_attempt", attempt}, {"plan", in_effect_}});
    return false;
  }

  long long rollback_to_ = -1;  // a roll-back's checkpoint step, until the next attempt starts
  const Plan& plan_;
  long long steps_;
  std::string run_dir_, checkpoint_dir_, in_effect_;
  std::vector<std::string> files_;
  std::size_t k_ = 0;  // the next rollout, or the one being watched
  bool watching_ = false;
  long long window_steps_ = 0;
  int first_window_attempt_ = 0;
  Window before_;
  std::set<int> rolled_back_;  // attempts whose window was rolled back: not a "before" any more
};

}  // namespace
// --- end controlled rollouts ---

int run_supervised(const ExecuteArgs& a) {
  Plan plan = load_plan(a.plan);
  exec::check_plan(plan);
  require_writable_output(a.report, "--report");
  require_writable_output(a.trace, "--trace");
  require_writable_output(a.parameters, "--save-parameters");
  exec::make_data_source(plan);  // a bad dataset is refused once, here, not restarted over
  exec::checkpoint_codec(a.checkpoint_key, a.checkpoint_auth_key);  // the key too, before any attempt
  std::vector<InjectSpec> injections = all_injections(plan, a);
  long long world = plan.parallelism.world();
  int ranks = a.ranks > 0 ? a.ranks : static_cast<int>(world);
  if (ranks != world)
    throw InputError("--ranks " + std::to_string(ranks) + ": the plan runs on " + std::to_string(world) +
                     " ranks (dp x tp x pp x cp); change parallelism.dp or --ranks");
  if (plan.reliability.checkpoint.mode != "sync" && plan.reliability.checkpoint.mode != "async")
    throw InputError("reliability.checkpoint.mode: the executor writes \"sync\" or \"async\" checkpoints, not \"" +
                     plan.reliability.checkpoint.mode + "\"");
  std::string dir = !a.checkpoint_dir.empty() ? a.checkpoint_dir
                    : !plan.reliability.checkpoint.dir.empty() ? plan.reliability.checkpoint.dir
                                                               : "checkpoints/" + plan.name;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError("--checkpoint-dir " + dir + ": " + ec.message());
  // One supervised job per checkpoint directory, for the job's whole life: two jobs resuming and
  // pruning the same checkpoints would corrupt each other's runs. The lock is the kernel's
  // (flock), so it goes with the holder however it ends.
  std::string lock_path = (fs::path(dir) / ".ditwin-supervisor.lock").string();
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) throw InputError("--checkpoint-dir " + dir + ": cannot open " + lock_path);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    char holder[256] = {0};
    ssize_t n = ::pread(lock_fd, holder, sizeof holder - 1, 0);
    ::close(lock_fd);
    std::string who = n > 0 ? std::string(holder, static_cast<std::size_t>(n)) : std::string("another process");
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    throw InputError("--checkpoint-dir " + dir + ": another supervised job runs on it (" + who +
                     "); wait for it to end or give another --checkpoint-dir");
  }
  {
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    std::string me = "pid " + std::to_string(::getpid()) + " on " + host + "\n";
    // The holder's name is a courtesy for the refusal message; the lock itself is what counts.
    [[maybe_unused]] bool named = ::ftruncate(lock_fd, 0) == 0 && ::pwrite(lock_fd, me.data(), me.size(), 0) > 0;
  }
  struct LockGuard {
    int fd;
    ~LockGuard() { ::close(fd); }
  } lock_guard{lock_fd};
  if (a.fresh)
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().rfind("step-", 0) == 0) fs::remove_all(e.path());
  if (a.fresh) fs::remove(fs::path(dir) / "numerical.json");  // numerical faults: the detours of the run deleted
  std::string run_dir = (fs::path(dir) / "supervisor").string();

  exec::SupervisorConfig config;
  config.run_dir = run_dir;
  config.ranks = ranks;
  config.heartbeat_timeout_s = plan.reliability.heartbeat_s;
  config.restart = plan.reliability.restart;
  config.inject = injections;
  config.environment = rank_environment(ranks);
  RolloutDriver rollouts(plan, a, run_dir, dir);  // controlled rollouts (issue 18 part 3)
  auto print_rollout_events = [](const std::vector<nlohmann::json>& add) {
      for (const auto& e : add) {
        std::string k = e.value("event", "");
        std::string line = "supervisor: rollout " + std::to_string(e.value("rollout", 0) + 1) + ": " + k;
        if (k == "rollout_start")
          line += " at step " + e["at_step"].dump() + " on " + e.value("plan", "") + ", watching " + e["watch_steps"].dump() + " step(s)";
        else if (k == "rollout_regressed") line += ": " + e.value("why", "");
        else if (k == "rollout_rolled_back") line += " to the checkpoint of step " + e["to_step"].dump() + " on " + e.value("plan", "");
        else if (k == "rollout_kept")
          line += ": median step " + fixed(1e3 * e.value("after_median_step_s", 0.0), 1) + " ms vs " +
                  fixed(1e3 * e.value("before_median_step_s", 0.0), 1) + " ms before";
        std::cout << line << "\n" << std::flush;
      }
  };
  if (rollouts.active()) {
    config.after_finish = [&](int attempt, const std::vector<nlohmann::json>& events, std::vector<nlohmann::json>& add) {
      bool more = rollouts.after_finish(attempt, events, add);
      print_rollout_events(add);
      return more;
    };
    config.watch = [&](int attempt, const std::vector<nlohmann::json>& events, std::vector<nlohmann::json>& add) {
      bool stop = rollouts.watch(attempt, events, add);
      print_rollout_events(add);
      return stop;
    };
  }
  config.command = [&](int attempt, const std::set<int>& fired) {
    std::string fired_list;
    for (int i : fired) fired_list += (fired_list.empty() ? "" : ",") + std::to_string(i);
    if (rollouts.active()) rollouts.before_attempt();  // controlled rollouts
    const std::string& plan_file = rollouts.active() ? rollouts.plan_file() : a.plan;
    const long long stop = rollouts.active() ? rollouts.stop_step() : a.steps;
    std::vector<std::string> args = {"execute", plan_file, "--steps", std::to_string(stop), "--warmup",
                                     std::to_string(a.warmup), "--ranks", std::to_string(ranks), "--checkpoint-dir", dir,
                                     "--ft-run-dir", run_dir, "--ft-attempt", std::to_string(attempt), "--ft-fired",
                                     fired_list, "--report", run_dir + "/attempt-" + std::to_string(attempt) + ".report.json"};
    if (a.threads > 0) args.insert(args.end(), {"--threads", std::to_string(a.threads)});
    if (a.backend != "cpu") args.insert(args.end(), {"--backend", a.backend});
    if (!a.checkpoint_key.empty()) args.insert(args.end(), {"--checkpoint-key", a.checkpoint_key});
    if (!a.checkpoint_auth_key.empty()) args.insert(args.end(), {"--checkpoint-auth-key", a.checkpoint_auth_key});
    if (!a.profile.empty()) args.insert(args.end(), {"--profile", a.profile});
    if (!a.parameters.empty()) args.insert(args.end(), {"--save-parameters", a.parameters});
    if (a.no_resume && attempt == 1) args.push_back("--no-resume");
    if (rollouts.active() && rollouts.save_final()) args.push_back("--ft-save-final");  // controlled rollouts
    if (rollouts.active()) args.insert(args.end(), {"--ft-identity-plan", a.plan});
    for (const auto& text : a.inject) args.insert(args.end(), {"--inject", text});
    return mpirun_argv(ranks, args);
  };
  config.log = [](const std::string& line) { std::cout << line << "\n" << std::flush; };
  std::cout << "supervising " << plan.name << " on " << ranks << " rank(s): checkpoints in " << dir << " ("
            << plan.reliability.checkpoint.mode << ", every "
            << (plan.reliability.checkpoint.interval_steps > 0
                    ? std::to_string(plan.reliability.checkpoint.interval_steps) + " steps"
                    : fixed(plan.reliability.checkpoint.interval_s / 60, 1) + " min")
            << ", keep " << plan.reliability.checkpoint.keep << "), heartbeat timeout "
            << fixed(plan.reliability.heartbeat_s, 1) << " s, at most " << plan.reliability.restart.max_restarts
            << " restart(s), " << injections.size() << " injected fault(s)\n"
            << std::flush;

  exec::SupervisedRun run = exec::supervise(config);
  nlohmann::json report;
  try {
    report = exec::measured_longrun_report(plan.name, run.events);
  } catch (const std::exception& e) {
    report = {{"schema", "ditwin.longrun_report/1"}, {"source", "measured"}, {"plan", plan.name}, {"error", e.what()}};
  }
  report["finished"] = run.finished;
  // Controlled rollouts: their planned restarts are not failures' restarts.
  long long planned_restarts = 0;
  for (const auto& e : run.events) planned_restarts += e.value("event", "") == "planned_stop" ? 1 : 0;
  report["supervisor"] = {{"attempts", run.attempts}, {"restarts", run.attempts - 1 - planned_restarts},
                          {"planned_restarts", planned_restarts},
                          {"stopped_because", run.stopped_because}, {"checkpoint_dir", dir},
                          {"restart_policy", {{"max_restarts", plan.reliability.restart.max_restarts},
                                              {"backoff_s", plan.reliability.restart.backoff_s},
                                              {"backoff_factor", plan.reliability.restart.backoff_factor},
                                              {"backoff_max_s", plan.reliability.restart.backoff_max_s}}},
                          {"heartbeat_s", plan.reliability.heartbeat_s},
                          {"nccl_timeout_s", plan.reliability.nccl_timeout_s}};
  nlohmann::json inj = nlohmann::json::array();
  for (std::size_t i = 0; i < injections.size(); ++i) {
    bool fired = false;
    for (const auto& e : run.events)
      if (e.value("event", "") == "injected" && e.value("index", -1) == static_cast<int>(i)) fired = true;
    inj.push_back({{"spec", injections[i].describe()}, {"fired", fired}});
  }
  report["injections"] = inj;
  report["checkpoint"] = {{"mode", plan.reliability.checkpoint.mode},
                          {"interval_steps", plan.reliability.checkpoint.interval_steps},
                          {"keep", plan.reliability.checkpoint.keep}};
  report["events"] = run.events;
  std::string last = run_dir + "/attempt-" + std::to_string(run.attempts) + ".report.json";
  if (run.finished && fs::exists(last)) {
    report["step_report"] = read_json_file(last);
    report["step_report"].erase("ops");
    report["step_report"].erase("timeline");
    report["step_time_s"] = report["step_report"]["step_time_s"];
  }
  if (report.contains("ettr")) {
    const auto& l = report["lost_seconds_by_cause"];
    std::cout << "supervised run of " << plan.name << ": " << (run.finished ? "finished" : "NOT finished") << " after "
              << run.attempts - 1 - planned_restarts << " restart(s)"
              << (planned_restarts > 0 ? " and " + std::to_string(planned_restarts) + " planned by rollouts" : std::string()) << "\n"
              << "  ETTR             " << fixed(100 * report["ettr"]["mean"].get<double>(), 2) << "% ("
              << fixed(report["productive_s"].get<double>(), 2) << " s productive of " << fixed(report["wall_s"].get<double>(), 2)
              << " s wall, start-up " << fixed(report["startup_s"].get<double>(), 2) << " s not counted)\n"
              << "  lost (s)         rollback " << fixed(l["rollback"].get<double>(), 3) << ", detection "
              << fixed(l["detection"].get<double>(), 3) << ", restart " << fixed(l["restart"].get<double>(), 3)
              << ", checkpoint stall " << fixed(l["checkpoint_stall"].get<double>(), 3)
              << ", numerical " << fixed(l.value("numerical", 0.0), 3) << ", rollout " << fixed(l.value("rollout", 0.0), 3)
              << "\n";
  }
  if (!a.report.empty()) write_json_file(report, a.report, 2);
  if (!a.trace.empty() && report.contains("timeline")) write_json_file(exec::measured_longrun_trace(report), a.trace, -1);
  if (!run.finished) {
    std::cerr << "ditwin: error: the supervised run did not finish: " << run.stopped_because << "\n";
    return 1;
  }
  return 0;
}

}  // namespace ditwin::cli
