// `ditwin execute PLAN --supervise`: the supervisor process. It never joins MPI; it launches one
// mpirun per attempt with the rank-side flags (checkpoint dir, run dir, attempt, fired
// injections), and turns the run's events into the measured long-run report.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
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
  config.command = [&](int attempt, const std::set<int>& fired) {
    std::string fired_list;
    for (int i : fired) fired_list += (fired_list.empty() ? "" : ",") + std::to_string(i);
    std::vector<std::string> args = {"execute", a.plan, "--steps", std::to_string(a.steps), "--warmup",
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
  report["supervisor"] = {{"attempts", run.attempts}, {"restarts", run.attempts - 1},
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
              << run.attempts - 1 << " restart(s)\n"
              << "  ETTR             " << fixed(100 * report["ettr"]["mean"].get<double>(), 2) << "% ("
              << fixed(report["productive_s"].get<double>(), 2) << " s productive of " << fixed(report["wall_s"].get<double>(), 2)
              << " s wall, start-up " << fixed(report["startup_s"].get<double>(), 2) << " s not counted)\n"
              << "  lost (s)         rollback " << fixed(l["rollback"].get<double>(), 3) << ", detection "
              << fixed(l["detection"].get<double>(), 3) << ", restart " << fixed(l["restart"].get<double>(), 3)
              << ", checkpoint stall " << fixed(l["checkpoint_stall"].get<double>(), 3)
              << ", numerical " << fixed(l.value("numerical", 0.0), 3) << "\n";
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
