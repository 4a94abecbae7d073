// execute / calibrate / compare. `execute --ranks R` and `calibrate` start `mpirun` themselves
// and the processes it starts join its world; under an outer mpirun/srun they join that world.
#include "cli/exec_commands.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "cost_models/profile.hpp"
#include "exec/calibrate.hpp"
#include "exec/communicator.hpp"
#include "exec/checkpoint.hpp"
#include "exec/fault_tolerance.hpp"
#include "exec/runtime.hpp"
#include "kernels/threads.hpp"
#include "model/compare.hpp"
#include "model/errors.hpp"
#include "model/plan_summary.hpp"
#include "model/report.hpp"

namespace ditwin::cli {

namespace {

bool inside_mpi() { return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK"); }

int local_ranks() {
  const char* s = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return s ? std::max(1, std::atoi(s)) : 1;
}

}  // namespace

std::vector<std::string> mpirun_argv(int ranks, const std::vector<std::string>& args) {
  std::vector<std::string> cmd = {"mpirun", "-np", std::to_string(ranks), "--oversubscribe", "--bind-to", "none"};
  if (geteuid() == 0) cmd.push_back("--allow-run-as-root");
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) throw std::runtime_error("cannot find this program's path to relaunch it under mpirun");
  self[n] = 0;
  cmd.push_back(self);
  cmd.insert(cmd.end(), args.begin(), args.end());
  return cmd;
}

std::vector<std::pair<std::string, std::string>> rank_environment(int ranks) {
  // Each rank gets its share of the cores: BLAS and OpenMP pools sized at library load would
  // otherwise spin on cores the other ranks compute on.
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::string per_rank = std::to_string(std::max(1, static_cast<int>(cores) / ranks));
  return {{"OMPI_MCA_btl_vader_single_copy_mechanism", "none"},  // containers lack CMA
          {"OPENBLAS_NUM_THREADS", per_rank},
          {"OMP_NUM_THREADS", per_rank}};
}

namespace {

// Re-runs this program under `mpirun -np ranks` with `args` and returns its exit status.
int relaunch(int ranks, const std::vector<std::string>& args) {
  std::vector<std::string> cmd = mpirun_argv(ranks, args);
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("cannot fork to start mpirun");
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& s : cmd) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (const auto& [k, v] : rank_environment(ranks)) setenv(k.c_str(), v.c_str(), 0);
    execvp("mpirun", argv.data());
    std::perror("ditwin: cannot start mpirun (install openmpi-bin: bash tools/setup.sh)");
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) throw std::runtime_error("lost track of mpirun");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

int run_execute(const ExecuteArgs& a, const std::vector<std::string>& args) {
  if (a.supervise && !a.ft_run_dir.empty()) throw InputError("--supervise: not inside a supervised run");
  if (a.supervise) return run_supervised(a);
  if (a.fresh) throw InputError("--fresh: only with --supervise (without it, --no-resume starts over and overwrites)");
  Plan plan = load_plan(a.plan);
  exec::check_plan(plan);  // refuse once, here, not once per rank after mpirun started
  std::vector<InjectSpec> injections = all_injections(plan, a);
  long long world = plan.parallelism.world();
  if (!inside_mpi()) {
    int ranks = a.ranks > 0 ? a.ranks : static_cast<int>(world);
    if (ranks != world)
      throw InputError("--ranks " + std::to_string(ranks) + ": the plan runs on " + std::to_string(world) +
                       " ranks (dp x tp x pp x cp); change parallelism.dp or --ranks");
    if (ranks > 1) return relaunch(ranks, args);
  }
  auto comm = exec::mpi_world();
  comm->set_timeout(plan.reliability.nccl_timeout_s);
  // Fault tolerance: checkpoints, and under the supervisor heartbeats, events and injections.
  std::unique_ptr<exec::FaultTolerance> ft;
  if (!a.ft_run_dir.empty() || !injections.empty()) {
    exec::FtOptions fo;
    fo.run_dir = a.ft_run_dir;
    fo.attempt = a.ft_attempt;
    fo.inject = injections;
    fo.fired = parse_fired(a.ft_fired);
    ft = std::make_unique<exec::FaultTolerance>(fo, comm->rank());
    if (comm->rank() == 0) ft->event({{"event", "mpi_ready"}});
  }
  if (a.ranks > 0 && comm->size() != a.ranks)
    throw InputError("--ranks " + std::to_string(a.ranks) + " but this MPI world has " + std::to_string(comm->size()) + " processes");
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  kernels::set_num_threads(a.threads > 0 ? a.threads : std::max(1, static_cast<int>(cores) / local_ranks()));
  Program program = lower(plan);
  auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, plan.training.seed);
  exec::ExecOptions options;
  options.steps = a.steps;
  options.warmup_steps = a.warmup;
  if (!a.profile.empty()) options.peak_flops = cost::load_profile(a.profile).peak_flops(plan.training.precision);
  else options.peak_flops = plan.cluster.device.peak_flops(plan.training.precision);
  bool tty = isatty(1) && a.ft_run_dir.empty();  // supervised: lines, between the supervisor's
  options.on_step = [&](long long step, double loss, double seconds) {
    std::string line = "step " + std::to_string(step + 1) + "/" + std::to_string(a.steps) + "  loss " + fixed(loss, 5) +
                       "  " + fixed(seconds * 1e3, 2) + " ms  " +
                       human_count(plan.training.global_batch / seconds) + " samples/s";
    if (tty) std::cout << "\r" << line << "   " << std::flush;
    else std::cout << line << "\n";
  };
  std::string checkpoint_dir = a.checkpoint_dir.empty() ? plan.reliability.checkpoint.dir : a.checkpoint_dir;
  if (!checkpoint_dir.empty()) {
    auto& ck = options.checkpoint;
    ck.dir = checkpoint_dir;
    ck.mode = plan.reliability.checkpoint.mode;
    ck.interval_steps = plan.reliability.checkpoint.interval_steps;
    ck.interval_s = plan.reliability.checkpoint.interval_s;
    ck.keep = plan.reliability.checkpoint.keep;
    ck.resume = !a.no_resume;
    ck.plan_identity = exec::plan_identity(read_json_file(a.plan));
  }
  options.ft = ft.get();
  exec::ExecResult result;
  try {
    result = exec::execute_plan(plan, program, *comm, *data, options);
  } catch (const std::exception& e) {
    if (ft) ft->event({{"event", "rank_error"}, {"message", e.what()}});
    if (comm->size() == 1) throw;
    // The other ranks may be inside a collective: end the whole world, not just this rank.
    std::cerr << "ditwin: error on rank " << comm->rank() << ": " << e.what() << "\n";
    comm->abort(dynamic_cast<const InputError*>(&e) ? 2 : 3);
  }
  if (comm->rank() != 0) {
    if (ft) ft->exiting();
    return 0;
  }
  if (tty) std::cout << "\n";
  const auto& r = result.report;
  std::cout << "measured step of " << r.plan << " on " << comm->size() << " rank(s): median " << fixed(r.step_time_s * 1e3, 2)
            << " ms after " << std::min<long long>(a.warmup, a.steps - 1) << " warm-up step(s); loss "
            << fixed(result.losses.front(), 5) << " -> " << fixed(result.losses.back(), 5) << "\n";
  if (!a.report.empty()) write_json_file(to_json(r), a.report);
  if (!a.parameters.empty()) {
    std::FILE* f = std::fopen(a.parameters.c_str(), "wb");
    if (!f) throw InputError(a.parameters + ": cannot write");
    std::size_t n = result.parameters.size();
    bool ok = std::fwrite(result.parameters.data(), sizeof(float), n, f) == n;
    ok = std::fclose(f) == 0 && ok;
    if (!ok) throw InputError(a.parameters + ": write failed");
  }
  if (!a.trace.empty()) write_json_file(to_trace(r), a.trace, -1);
  if (ft) ft->exiting();
  return 0;
}

struct CalibrateArgs {
  std::string backend = "cpu", out;
  int threads = 0, ranks = 2;
  bool comm_only = false;
  double min_seconds = 0.05;
};

int run_calibrate(const CalibrateArgs& a) {
  if (a.backend != "cpu")
    throw InputError("--backend " + a.backend + ": this build calibrates the cpu backend only");
  exec::CalibrationOptions o;
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  o.threads = a.threads > 0 ? a.threads : std::max(1, static_cast<int>(cores) / std::max(1, a.ranks));
  o.min_seconds = a.min_seconds;
  if (a.comm_only) {  // the MPI part, run by the ranks mpirun started
    auto comm = exec::mpi_world();
    auto m = exec::calibrate_communication(*comm, o);
    if (comm->rank() == 0) write_json_file(m, a.out);
    return 0;
  }
  std::cout << "calibrating the cpu backend: GEMMs, attention, streaming, overhead (" << o.threads << " thread(s) per rank)\n";
  auto compute = exec::calibrate_compute(o);
  nlohmann::json communication;
  if (a.ranks > 1) {
    std::cout << "calibrating MPI all-reduce on " << a.ranks << " ranks\n";
    std::string tmp = a.out + ".comm.json";
    int status = relaunch(a.ranks, {"calibrate", "--backend", "cpu", "--comm-only", "--out", tmp, "--threads",
                                    std::to_string(o.threads), "--ranks", std::to_string(a.ranks)});
    if (status != 0) throw std::runtime_error("the MPI calibration (mpirun) failed with status " + std::to_string(status));
    communication = read_json_file(tmp);
    std::remove(tmp.c_str());
  } else {
    communication = {{"ranks", 1}, {"latency_s", 0.0}, {"bus_bytes_per_s", compute["hbm_bytes_per_s"]}, {"points", nlohmann::json::array()}};
  }
  auto profile = exec::make_cpu_profile(compute, communication);
  cost::profile_from_json(profile, a.out);  // the simulator must accept what we write
  write_json_file(profile, a.out, 2);
  std::cout << "GEMM peak " << fixed(compute["peak_flops_fp32"].get<double>() / 1e9, 1) << " GFLOP/s (half-efficiency dim "
            << compute["gemm_half_dim"] << "), stream " << fixed(compute["hbm_bytes_per_s"].get<double>() / 1e9, 1)
            << " GB/s, all-reduce " << fixed(communication["bus_bytes_per_s"].get<double>() / 1e9, 2) << " GB/s bus + "
            << fixed(communication["latency_s"].get<double>() * 1e6, 1) << " us\nwrote " << a.out << "\n";
  return 0;
}

}  // namespace

std::function<int()> add_exec_commands(CLI::App& app, int argc, char** argv) {
  auto ex = std::make_shared<ExecuteArgs>();
  auto* execute = app.add_subcommand("execute", "Train the plan for real on this machine (CPU, MPI data parallel), timed op by op");
  execute->add_option("plan", ex->plan, "Training plan (JSON)")->required();
  execute->add_option("--steps", ex->steps, "Training steps (default 10)")->check(CLI::PositiveNumber);
  execute->add_option("--ranks", ex->ranks, "Processes; > 1 starts mpirun (default: the plan's dp x tp x pp x cp)")
      ->check(CLI::PositiveNumber);
  execute->add_option("--warmup", ex->warmup, "Steps left out of the medians (default 2)")->check(CLI::NonNegativeNumber);
  execute->add_option("--threads", ex->threads, "Kernel threads per rank (default: cores / ranks on the node); match calibrate's")
      ->check(CLI::PositiveNumber);
  execute->add_option("--report", ex->report, "Write the measured report (JSON, same schema as simulate)");
  execute->add_option("--trace", ex->trace, "Write the measured timeline (Chrome trace JSON, every rank and step)");
  execute->add_option("--profile", ex->profile, "Device profile, for MFU against its measured peak");
  execute->add_option("--save-parameters", ex->parameters, "Write the final parameters (raw float32, the flat layout)");
  execute->add_flag("--supervise", ex->supervise,
                    "Run under a supervisor: detect dead or hung ranks, restart everyone from the newest good "
                    "checkpoint (reliability.restart), report measured ETTR (--report, --trace)");
  execute->add_option("--checkpoint-dir", ex->checkpoint_dir,
                      "Write checkpoints here and resume from the newest good one (default reliability.checkpoint.dir; "
                      "--supervise: checkpoints/<plan name>)");
  execute->add_flag("--no-resume", ex->no_resume, "Write checkpoints but start from step 0 even if some exist");
  execute->add_flag("--fresh", ex->fresh, "--supervise: delete the checkpoints in the directory first");
  execute->add_option("--inject", ex->inject,
                      "Inject a fault, once per run: kill|hang:rank=R,step=S (or at_s=T, or seed=N,within_s=T), "
                      "kill_during_checkpoint:rank=R,step=S[,fraction=F], corrupt_shard:rank=R,step=S; repeatable")
      ->allow_extra_args(false);
  execute->add_option("--ft-run-dir", ex->ft_run_dir, "Internal: the supervisor's run directory")->group("");
  execute->add_option("--ft-attempt", ex->ft_attempt, "Internal: the supervisor's attempt number")->group("");
  execute->add_option("--ft-fired", ex->ft_fired, "Internal: injections that already fired")->group("");

  auto ca = std::make_shared<CalibrateArgs>();
  auto* calibrate = app.add_subcommand("calibrate", "Measure this machine's kernels and communication into a device profile");
  calibrate->add_option("--backend", ca->backend, "cpu")->check(CLI::IsMember({"cpu", "cuda"}));
  calibrate->add_option("--out", ca->out, "Profile to write (JSON)")->required();
  calibrate->add_option("--threads", ca->threads, "Kernel threads per rank (default: cores / ranks)");
  calibrate->add_option("--ranks", ca->ranks, "Ranks for the communication benchmark (default 2)")->check(CLI::PositiveNumber);
  calibrate->add_option("--min-seconds", ca->min_seconds, "Time spent per measurement point (default 0.05)");
  calibrate->add_flag("--comm-only", ca->comm_only, "Internal: the MPI part, run under mpirun")->group("");

  auto cmp = std::make_shared<std::array<std::string, 3>>();
  auto* compare = app.add_subcommand("compare", "Predicted vs measured: step time and op by op, or long-run ETTR and lost time by cause");
  compare->add_option("predicted", (*cmp)[0], "Report or trace of the prediction")->required();
  compare->add_option("measured", (*cmp)[1], "Report or trace of the measurement")->required();
  compare->add_option("--report", (*cmp)[2], "Write the comparison (JSON)");

  std::vector<std::string> args(argv + 1, argv + argc);
  return [=]() -> int {
    if (execute->parsed()) return run_execute(*ex, args);
    if (calibrate->parsed()) return run_calibrate(*ca);
    if (compare->parsed()) {
      auto first = read_json_file((*cmp)[0]), second = read_json_file((*cmp)[1]);
      if (is_longrun_report(first) != is_longrun_report(second))
        throw InputError("compare: " + (*cmp)[is_longrun_report(first) ? 0 : 1] +
                         " is a long-run report and the other is not; compare like with like");
      if (is_longrun_report(first)) {
        auto c = compare_longruns(first, second, (*cmp)[0], (*cmp)[1]);
        std::cout << format_longrun_comparison(c);
        if (!(*cmp)[2].empty()) write_json_file(c, (*cmp)[2], 2);
        return 0;
      }
      auto c = compare_runs(read_run_times((*cmp)[0]), read_run_times((*cmp)[1]));
      std::cout << format_comparison(c);
      if (!(*cmp)[2].empty()) write_json_file(c, (*cmp)[2], 2);
      return 0;
    }
    return -1;
  };
}

}  // namespace ditwin::cli
