// execute / calibrate / compare. `execute --ranks R` and `calibrate` start `mpirun` themselves
// and the processes it starts join its world; under an outer mpirun/srun they join that world.
#include "cli/exec_commands.hpp"

#include <sys/prctl.h>
#include <sys/wait.h>

#include <csignal>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <thread>

#include "cost_models/profile.hpp"
#include "exec/calibrate/calibrate.hpp"
#include "exec/comm/communicator.hpp"
#include "exec/data/data_source.hpp"
#include "exec/cuda_exec.hpp"
#include "exec/ft/checkpoint.hpp"
#include "exec/ft/sealed_codec.hpp"
#include "exec/ft/fault_tolerance.hpp"
#include "exec/runtime.hpp"
#include "kernels/threads.hpp"
#include "model/compare.hpp"
#include "model/errors.hpp"
#include "model/plan_summary.hpp"
#include "model/privacy.hpp"
#include "model/report.hpp"

namespace ditwin::cli {

namespace {

bool inside_mpi() { return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK"); }

int local_ranks() {
  const char* s = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return s ? std::max(1, std::atoi(s)) : 1;
}

int local_rank() {
  const char* s = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  return s ? std::max(0, std::atoi(s)) : 0;
}

// Refuses --backend cuda early (before mpirun starts ranks) when it cannot run here.
void require_cuda() {
  if (!exec::cuda_built())
    throw InputError("--backend cuda: this ditwin was built without CUDA (-DDITWIN_WITH_CUDA=OFF, or nvcc was not found when it was configured); "
                     "rebuild on a machine with the CUDA toolkit, or use --backend cpu");
  if (exec::cuda_devices() == 0)
    throw InputError("--backend cuda: no CUDA device is visible on this machine (no driver, no GPU, or "
                     "CUDA_VISIBLE_DEVICES hides them); use --backend cpu");
}

}  // namespace

std::vector<std::string> mpirun_argv(int ranks, const std::vector<std::string>& args) {
  // --stdin none: the ranks read nothing from the terminal, and mpirun must not swallow the
  // caller's input (`while read ...; do ditwin execute ...; done` saw one iteration).
  std::vector<std::string> cmd = {"mpirun", "-np", std::to_string(ranks), "--oversubscribe", "--bind-to", "none",
                                  "--stdin", "none"};
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
          {"OMP_NUM_THREADS", per_rank},
          // With a core per rank, a rank waiting in MPI spins rather than yields: a yielded core
          // goes to whatever else runs on the machine and the collective waits for the
          // scheduler's next slice (measured: exposed communication 8 -> 31 ms per step of
          // tiny-cpu beside a compiler). --oversubscribe would otherwise turn yielding on.
          {"OMPI_MCA_mpi_yield_when_idle", static_cast<int>(cores) >= ranks ? "0" : "1"}};
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

// ---- Multi-stage plans (plan key `stages`): one stage per process world ----

// The checkpoint directory of stage `index` (0-based) under the campaign's directory.
std::string stage_checkpoint_dir(const std::string& base, std::size_t index) {
  return base + "/stage-" + std::to_string(index + 1);
}

long long stage_first_step(const Plan& campaign, std::size_t index) {
  long long first = 0;
  for (std::size_t i = 0; i < index; ++i) first += campaign.stages[i].run.steps;
  return first;
}

const Plan& selected_stage(const Plan& campaign, int stage) {
  if (campaign.stages.empty()) throw InputError("--stage: the plan has no stages");
  if (stage < 1 || stage > static_cast<int>(campaign.stages.size()))
    throw InputError("--stage " + std::to_string(stage) + ": the plan has stages 1 to " + std::to_string(campaign.stages.size()));
  return campaign.stages[stage - 1];
}

// --- end of multi-stage helpers ---

int run_execute(const ExecuteArgs& a, const std::vector<std::string>& args) {
  if (a.supervise && !a.ft_run_dir.empty()) throw InputError("--supervise: not inside a supervised run");
  if (a.stage == 0) {  // a plan with stages runs stage after stage (run_execute_campaign)
    Plan campaign = load_plan(a.plan);
    if (!campaign.stages.empty()) {
      if (inside_mpi())
        throw InputError(a.plan + ": a plan with stages starts its own mpirun for each stage; run it without an outer "
                         "mpirun, or pick one stage with --stage N");
      return run_execute_campaign(a, campaign);
    }
  }
  if (a.supervise) return run_supervised(a);
  if (a.fresh) throw InputError("--fresh: only with --supervise (without it, --no-resume starts over and overwrites)");
  if (!a.ft_run_dir.empty() && inside_mpi()) {
    // A rank of a supervised run dies with the mpirun that started it (which dies with the
    // supervisor): killing the supervisor must not leave ranks training on, or writing
    // checkpoints another job then reads.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) return 3;  // the parent is already gone
  }
  Plan plan = load_plan(a.plan);
  const Plan campaign = a.stage > 0 ? plan : Plan{};  // --stage N: this process runs stage N alone
  if (a.stage > 0) plan = selected_stage(campaign, a.stage);
  exec::check_plan(plan, a.backend);  // refuse once, here, not once per rank after mpirun started
  // Outputs that could not be written would lose the run's result at its end.
  require_writable_output(a.report, "--report");
  require_writable_output(a.trace, "--trace");
  require_writable_dir(a.trace_dir, "--trace-dir");
  require_writable_output(a.parameters, "--save-parameters");
  // The training data (a dataset is opened and checked here, before mpirun starts the ranks).
  std::unique_ptr<exec::DataSource> data = exec::make_data_source(plan);
  // The checkpoint key (a file or the environment), read and checked before mpirun starts ranks.
  if (!inside_mpi()) exec::checkpoint_codec(a.checkpoint_key, a.checkpoint_auth_key);
  if (a.backend == "cuda" && !inside_mpi()) require_cuda();
  std::vector<InjectSpec> injections = all_injections(plan, a);
  long long world = plan.parallelism.world();
  if (!inside_mpi()) {
    int ranks = a.ranks > 0 ? a.ranks : static_cast<int>(world);
    if (ranks != world)
      throw InputError("--ranks " + std::to_string(ranks) + ": the plan runs on " + std::to_string(world) +
                       " ranks (dp x tp x pp x cp); change parallelism.dp or --ranks");
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    if (ranks > static_cast<int>(cores))
      std::cerr << "warning: " << ranks << " ranks on " << cores << " cores: the ranks share cores, so the run checks "
                << "correctness but its timings mean nothing\n";
    if (ranks > 1) return relaunch(ranks, args);
  }
  std::unique_ptr<exec::Communicator> comm = exec::mpi_world();
  comm->set_timeout(plan.reliability.nccl_timeout_s);
  std::unique_ptr<exec::Backend> backend;
  std::string device = "cpu";
  exec::CudaRun cuda;  // streams, backend and NCCL communicator of --backend cuda
  if (a.backend == "cuda") {
    cuda = exec::make_cuda_run(plan, std::move(comm), local_rank());
    device = cuda.device;
  } else {
    backend = exec::make_cpu_backend(plan, exec::shard_of(lower(plan), comm->rank()));
  }
  exec::Communicator& world_comm = a.backend == "cuda" ? *cuda.comm : *comm;
  exec::Backend& run_backend = a.backend == "cuda" ? *cuda.backend : *backend;
  // Fault tolerance: checkpoints, and under the supervisor heartbeats, events and injections.
  std::unique_ptr<exec::FaultTolerance> ft;
  if (!a.ft_run_dir.empty() || !injections.empty()) {
    exec::FtOptions fo;
    fo.run_dir = a.ft_run_dir;
    fo.attempt = a.ft_attempt;
    fo.inject = injections;
    fo.fired = parse_fired(a.ft_fired);
    ft = std::make_unique<exec::FaultTolerance>(fo, world_comm.rank());
    if (world_comm.rank() == 0) ft->event({{"event", "mpi_ready"}});
  }
  if (a.ranks > 0 && world_comm.size() != a.ranks)
    throw InputError("--ranks " + std::to_string(a.ranks) + " but this MPI world has " + std::to_string(world_comm.size()) + " processes");
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  kernels::set_num_threads(a.threads > 0 ? a.threads : std::max(1, static_cast<int>(cores) / local_ranks()));
  Program program = lower(plan);
  exec::ExecOptions options;
  options.steps = a.stage > 0 && !a.steps_given ? stage_first_step(campaign, a.stage - 1) + plan.run.steps : a.steps;
  options.warmup_steps = a.warmup;
  options.collective_timeout_s = plan.reliability.nccl_timeout_s;
  if (!a.profile.empty()) options.peak_flops = cost::load_profile(a.profile).peak_flops(plan.training.precision);
  else options.peak_flops = plan.cluster.device.peak_flops(plan.training.precision);
  bool tty = isatty(1) && a.ft_run_dir.empty();  // supervised: lines, between the supervisor's
  // DP-SGD: the privacy spent so far goes on every step's line.
  const auto& privacy = plan.training.privacy;
  const bool accountant = privacy.enabled;
  if (privacy.enabled && world_comm.rank() == 0 && !std::getenv("DITWIN_PRIVACY_NOISE_KEY"))
    std::cout << "note: DP-SGD noise and Poisson draws come from the plan's seed, which anyone with the plan can "
                 "replay; set DITWIN_PRIVACY_NOISE_KEY (64 hex digits, kept secret) for the formal guarantee\n";
  const double sampling_rate = privacy.enabled ? privacy_sampling_rate(plan) : 0;
  const double noise_multiplier = privacy.enabled ? resolved_noise_multiplier(plan) : 0;
  auto epsilon_after = [&](long long steps) {  // by the plan's accountant
    double eps = privacy_spent(accountant_of(privacy), conversion_of(privacy), sampling_rate, noise_multiplier,
                               static_cast<double>(steps), privacy.delta)
                     .epsilon;
    return std::isinf(eps) ? std::string("inf") : fixed(eps, 4);
  };
  options.on_step = [&](long long step, double loss, double seconds) {
    std::string line = "step " + std::to_string(step + 1) + "/" + std::to_string(options.steps) + "  loss " + fixed(loss, 5) +
                       "  " + fixed(seconds * 1e3, 2) + " ms  " +
                       human_count(plan.training.global_batch / seconds) + " samples/s";
    if (accountant) line += "  epsilon " + epsilon_after(step + 1);
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
    const nlohmann::json source = data->describe();
    ck.plan_identity = exec::plan_identity(read_json_file(a.plan), source.value("index_sha256", ""));
    ck.save_final = a.ft_save_final;  // controlled rollouts: the supervisor's planned stop
    if (!a.ft_identity_plan.empty())  // controlled rollouts: one identity for the job, whichever plan runs it
      ck.plan_identity = exec::plan_identity(read_json_file(a.ft_identity_plan), source.value("index_sha256", ""));
    if (a.stage > 0) {  // a stage: its own directory and identity; it hands over its last step
      const std::size_t k = static_cast<std::size_t>(a.stage - 1);
      ck.dir = stage_checkpoint_dir(checkpoint_dir, k);
      ck.plan_identity = exec::plan_identity(plan.stage_document, source.value("index_sha256", ""));
      ck.save_final = true;
      if (k > 0) {
        const Plan& previous = campaign.stages[k - 1];
        ck.previous_stage.dir = stage_checkpoint_dir(checkpoint_dir, k - 1);
        ck.previous_stage.plan_identity = exec::plan_identity(previous.stage_document, source.value("index_sha256", ""));
        ck.previous_stage.optimizer = previous.training.optimizer.kind;
        ck.previous_stage.step = stage_first_step(campaign, k);
      }
    }
  }
  if (a.stage > 1 && checkpoint_dir.empty())
    throw InputError("--stage " + std::to_string(a.stage) + ": starts from the previous stage's checkpoint; give "
                     "--checkpoint-dir or reliability.checkpoint.dir");
  // Encrypted or authenticated checkpoints: the key from --checkpoint-key / --checkpoint-auth-key or
  // the environment, never the plan.
  std::unique_ptr<exec::ShardCodec> codec = exec::checkpoint_codec(a.checkpoint_key, a.checkpoint_auth_key);
  if (!a.checkpoint_key.empty() && checkpoint_dir.empty())
    throw InputError("--checkpoint-key: no checkpoints to encrypt (give --checkpoint-dir or reliability.checkpoint.dir)");
  if (!a.checkpoint_auth_key.empty() && checkpoint_dir.empty())
    throw InputError("--checkpoint-auth-key: no checkpoints to authenticate (give --checkpoint-dir or reliability.checkpoint.dir)");
  options.checkpoint.codec = codec.get();
  options.ft = ft.get();
  exec::ExecResult result;
  try {
    result = exec::execute_plan(plan, program, world_comm, *data, options, run_backend);
  } catch (const std::exception& e) {
    if (ft) ft->event({{"event", "rank_error"}, {"message", e.what()}});
    if (world_comm.size() == 1) throw;
    // The other ranks may be inside a collective: end the whole world, not just this rank.
    std::cerr << "ditwin: error on rank " << world_comm.rank() << ": " << e.what() << "\n";
    world_comm.abort(dynamic_cast<const InputError*>(&e) ? 2 : 3);
  }
  if (world_comm.rank() != 0) {
    if (ft) ft->exiting();
    return 0;
  }
  if (tty) std::cout << "\n";
  const auto& r = result.report;
  std::cout << "measured step of " << r.plan << " on " << world_comm.size() << " rank(s) (" << device << "): median "
            << fixed(r.step_time_s * 1e3, 2)
            << " ms after " << std::min<long long>(a.warmup, a.steps - 1) << " warm-up step(s); loss "
            << fixed(result.losses.front(), 5) << " -> " << fixed(result.losses.back(), 5) << "\n";
  if (accountant)
    std::cout << "DP-SGD: epsilon " << epsilon_after(a.steps) << " at delta " << privacy.delta << " spent by " << a.steps
              << " steps (noise multiplier " << fixed(noise_multiplier, 4) << ", clip norm " << privacy.clip_norm
              << ", " << privacy.sampling << " sampling, "
              << (accountant_of(privacy) == Accountant::prv ? std::string("PRV accountant")
                                                           : "RDP accountant, " + std::string(to_string(conversion_of(privacy))) + " conversion")
              << ")\n";
  if (accountant && r.extra.contains("privacy") && r.extra["privacy"]["poisson_examples_dropped"].get<long long>() > 0)
    std::cout << "note: " << r.extra["privacy"]["poisson_examples_dropped"].get<long long>()
              << " Poisson-drawn examples did not fit their step's " << plan.training.global_batch
              << " slots and were dropped: `ditwin privacy` gives the delta that accounts for it (docs/privacy.md)\n";
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
  if (!a.trace_dir.empty()) write_kineto_traces(r, a.trace_dir);
  if (ft) ft->exiting();
  return 0;
}

struct CalibrateArgs {
  std::string backend = "cpu", out;
  int threads = 0, ranks = 2;
  bool as_rank = false;
  double min_seconds = 0.05;
};

// `calibrate --backend cuda`: kernels on this GPU, NCCL all-reduce over min(--ranks, GPUs) ranks.
int run_calibrate_cuda(const CalibrateArgs& a) {
  exec::CalibrationOptions o;
  o.min_seconds = a.min_seconds;
  if (a.as_rank) {  // one of the ranks mpirun started: the NCCL part (the kernels ran on GPU 0 before)
    auto m = exec::calibrate_cuda_communication(exec::mpi_world(), local_rank());
    if (m.value("rank", 0) == 0) write_json_file(m, a.out);
    return 0;
  }
  require_cuda();
  std::cout << "calibrating the cuda backend: cuBLASLt GEMMs, flash attention, memory-bound kernels, AdamW\n";
  auto compute = exec::calibrate_cuda_compute(o);
  const int ranks = std::min(a.ranks, exec::cuda_devices());
  nlohmann::json communication;
  if (ranks > 1) {
    std::cout << "calibrating NCCL all-reduce on " << ranks << " GPUs\n";
    std::string tmp = a.out + ".comm.json";
    int status = relaunch(ranks, {"calibrate", "--backend", "cuda", "--as-rank", "--out", tmp, "--ranks", std::to_string(ranks)});
    if (status != 0) throw std::runtime_error("the NCCL calibration (mpirun) failed with status " + std::to_string(status));
    communication = read_json_file(tmp);
    std::remove(tmp.c_str());
  } else {
    // One GPU: no collective to measure; the device copy stands in (as one CPU rank's stream does).
    communication = {{"ranks", 1}, {"latency_s", 0.0}, {"bus_bytes_per_s", compute["hbm_bytes_per_s"]},
                     {"points", nlohmann::json::array()}, {"note", "one GPU: NCCL all-reduce not measured"}};
  }
  auto profile = exec::make_cuda_profile(compute, communication);
  cost::profile_from_json(profile, a.out);  // the simulator must accept what we write
  write_json_file(profile, a.out, 2);
  std::cout << compute["device"].get<std::string>() << ": GEMM bf16 peak " << fixed(compute["peak_flops_bf16"].get<double>() / 1e12, 1)
            << " TFLOP/s (half-efficiency dim " << compute["gemm_half_dim"] << ", k " << compute["gemm_half_k"]
            << "), attention efficiency " << fixed(compute["attention_efficiency"].get<double>(), 3) << ", HBM copy "
            << fixed(compute["hbm_bytes_per_s"].get<double>() / 1e9, 0) << " GB/s, memory-bound kernels "
            << fixed(compute["memory_bytes_per_s"].get<double>() / 1e9, 0) << " GB/s, all-reduce "
            << fixed(communication["bus_bytes_per_s"].get<double>() / 1e9, 1) << " GB/s bus\nwrote " << a.out << "\n";
  return 0;
}

int run_calibrate(const CalibrateArgs& a) {
  if (!a.as_rank) require_writable_output(a.out, "--out");
  if (a.backend == "cuda") return run_calibrate_cuda(a);
  if (a.backend != "cpu") throw InputError("--backend " + a.backend + ": choose cpu or cuda");
  exec::CalibrationOptions o;
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  o.threads = a.threads > 0 ? a.threads : std::max(1, static_cast<int>(cores) / std::max(1, a.ranks));
  o.min_seconds = a.min_seconds;
  if (a.as_rank) {  // one of the ranks mpirun started: everyone measures at once, rank 0 writes
    auto comm = exec::mpi_world();
    auto compute = exec::average_over_ranks(exec::calibrate_compute(o), *comm);
    auto communication = exec::calibrate_communication(*comm, o);
    communication["dispatch_s"] = exec::calibrate_dispatch(*comm, o);
    if (comm->rank() == 0) write_json_file(exec::make_cpu_profile(compute, communication), a.out, 2);
    return 0;
  }
  nlohmann::json profile;
  if (a.ranks > 1) {
    // The executor's ranks compute side by side and share caches, memory bandwidth and clocks,
    // so the kernels are measured the same way: on every rank at once, under mpirun.
    std::cout << "calibrating the cpu backend on " << a.ranks << " ranks at once (" << o.threads
              << " thread(s) each): GEMM grid, attention, streaming, overhead, then MPI collectives\n"
              << std::flush;
    std::string tmp = a.out + ".partial";
    int status = relaunch(a.ranks, {"calibrate", "--backend", "cpu", "--as-rank", "--out", tmp, "--threads",
                                    std::to_string(o.threads), "--ranks", std::to_string(a.ranks), "--min-seconds",
                                    std::to_string(o.min_seconds)});
    if (status != 0) throw std::runtime_error("the calibration ranks (mpirun) failed with status " + std::to_string(status));
    profile = read_json_file(tmp);
    std::remove(tmp.c_str());
  } else {
    std::cout << "calibrating the cpu backend: GEMM grid, attention, streaming, overhead (" << o.threads << " thread(s))\n";
    auto compute = exec::calibrate_compute(o);
    auto world = exec::mpi_world();
    nlohmann::json communication = {{"ranks", 1}, {"latency_s", 0.0}, {"bus_bytes_per_s", compute["hbm_bytes_per_s"]},
                                     {"dispatch_s", exec::calibrate_dispatch(*world, o)}, {"points", nlohmann::json::array()}};
    profile = exec::make_cpu_profile(compute, communication);
  }
  cost::profile_from_json(profile, a.out);  // the simulator must accept what we write
  write_json_file(profile, a.out, 2);
  const auto& compute = profile["measurements"]["compute"];
  const auto& communication = profile["measurements"]["communication"];
  std::cout << "GEMM peak " << fixed(compute["peak_flops_fp32"].get<double>() / 1e9, 1) << " GFLOP/s over "
            << profile["tables"]["gemm"].size() << " shapes, stream " << fixed(compute["hbm_bytes_per_s"].get<double>() / 1e9, 1)
            << " GB/s, all-reduce " << fixed(communication["bus_bytes_per_s"].get<double>() / 1e9, 2) << " GB/s bus + "
            << fixed(communication["latency_s"].get<double>() * 1e6, 1) << " us\nwrote " << a.out << "\n";
  return 0;
}

}  // namespace

// ---- Multi-stage plans: the campaign driver ----
int run_execute_campaign(const ExecuteArgs& a, const Plan& campaign) {
  if (a.supervise) throw InputError("--supervise: not yet for a plan with stages; run it without, and rerun to resume");
  if (!a.inject.empty()) throw InputError("--inject: put a stage's faults in stages[i].reliability.inject");
  if (a.steps_given) throw InputError("--steps: a plan with stages runs each stage's run.steps (or pick one with --stage N)");
  if (!a.trace.empty() || !a.trace_dir.empty())
    throw InputError("--trace: one stage at a time (--stage N); a campaign has no single timeline");
  const std::string base = a.checkpoint_dir.empty() ? campaign.reliability.checkpoint.dir : a.checkpoint_dir;
  if (base.empty())
    throw InputError(a.plan + ": a plan with stages hands its weights from stage to stage through checkpoints; give "
                     "--checkpoint-dir or reliability.checkpoint.dir");
  require_writable_output(a.report, "--report");
  require_writable_output(a.parameters, "--save-parameters");
  const long long world = campaign.parallelism.world();
  if (a.ranks > 0 && a.ranks != world)
    throw InputError("--ranks " + std::to_string(a.ranks) + ": the plan runs on " + std::to_string(world) + " ranks");
  const std::size_t n = campaign.stages.size();
  nlohmann::json reports = nlohmann::json::array();
  for (std::size_t k = 0; k < n; ++k) {
    const Plan& s = campaign.stages[k];
    const long long first = stage_first_step(campaign, k), last = first + s.run.steps;
    const std::string dir = stage_checkpoint_dir(base, k);
    std::string head = "stage " + std::to_string(k + 1) + "/" + std::to_string(n) + " \"" + s.stage_name + "\"";
    auto done = exec::CheckpointStore(dir).committed();
    if (!a.no_resume && std::find(done.begin(), done.end(), last) != done.end()) {
      std::cout << head << ": complete (checkpoint of step " << last << " in " << dir << "), skipped\n" << std::flush;
      continue;
    }
    std::cout << head << ": steps " << first << " -> " << last << ", " << describe_layout(s)
              << (k > 0 && layout_changes(campaign.stages[k - 1], s) ? " (resharded from the previous stage)" : "")
              << "\n" << std::flush;
    std::vector<std::string> args = {"execute", a.plan, "--stage", std::to_string(k + 1), "--backend", a.backend,
                                     "--warmup", std::to_string(a.warmup), "--checkpoint-dir", base};
    if (a.threads > 0) args.insert(args.end(), {"--threads", std::to_string(a.threads)});
    if (!a.profile.empty()) args.insert(args.end(), {"--profile", a.profile});
    if (!a.checkpoint_key.empty()) args.insert(args.end(), {"--checkpoint-key", a.checkpoint_key});
    if (!a.checkpoint_auth_key.empty()) args.insert(args.end(), {"--checkpoint-auth-key", a.checkpoint_auth_key});
    if (a.no_resume) args.push_back("--no-resume");
    const std::string report = a.report.empty() ? "" : a.report + ".stage-" + std::to_string(k + 1);
    if (!report.empty()) args.insert(args.end(), {"--report", report});
    if (!a.parameters.empty() && k + 1 == n) args.insert(args.end(), {"--save-parameters", a.parameters});
    int rc = relaunch(static_cast<int>(world), args);
    if (rc != 0) {
      std::cerr << "ditwin: " << head << " failed (status " << rc << "); run the same command again to resume it from "
                << dir << "\n";
      return rc;
    }
    if (!report.empty()) {
      nlohmann::json r = read_json_file(report);
      r["stage"] = {{"index", k}, {"name", s.stage_name}, {"first_step", first}, {"last_step", last}};
      reports.push_back(std::move(r));
      std::remove(report.c_str());
    }
  }
  std::cout << "campaign " << campaign.name << ": " << n << " stages done; checkpoints in " << base << "\n";
  if (!a.report.empty())
    write_json_file({{"schema", "ditwin.campaign_execution/1"}, {"plan", campaign.name}, {"stages", reports}}, a.report);
  return 0;
}

std::function<int()> add_exec_commands(CLI::App& app, int argc, char** argv) {
  auto ex = std::make_shared<ExecuteArgs>();
  auto* execute = app.add_subcommand("execute", "Train the plan for real on this machine (CPU or GPU, data parallel), timed op by op");
  execute->add_option("plan", ex->plan, "Training plan (JSON)")->required();
  execute->add_option("--backend", ex->backend, "cpu (MPI, fp32) or cuda (NCCL, bf16; one GPU per rank)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  execute->add_option("--steps", ex->steps, "Training steps (default 10)")->check(CLI::PositiveNumber);
  execute->add_option("--ranks", ex->ranks, "Processes; > 1 starts mpirun (default: the plan's dp x tp x pp x cp)")
      ->check(CLI::PositiveNumber);
  execute->add_option("--warmup", ex->warmup, "Steps left out of the medians (default 2)")->check(CLI::NonNegativeNumber);
  execute->add_option("--threads", ex->threads, "Kernel threads per rank (default: cores / ranks on the node); match calibrate's")
      ->check(CLI::PositiveNumber);
  execute->add_option("--report", ex->report, "Write the measured report (JSON, same schema as simulate)");
  execute->add_option("--trace", ex->trace, "Write the measured timeline (Chrome trace JSON, every rank and step)");
  execute->add_option("--trace-dir", ex->trace_dir,
                      "Write one PyTorch-profiler-style trace per rank (rank-N.json) into this folder, for Holistic Trace Analysis");
  execute->add_option("--profile", ex->profile, "Device profile, for MFU against its measured peak");
  execute->add_option("--save-parameters", ex->parameters, "Write the final parameters (raw float32, the flat layout)");
  execute->add_flag("--supervise", ex->supervise,
                    "Run under a supervisor: detect dead or hung ranks, restart everyone from the newest good "
                    "checkpoint (reliability.restart), report measured ETTR (--report, --trace)");
  execute->add_option("--checkpoint-dir", ex->checkpoint_dir,
                      "Write checkpoints here and resume from the newest good one (default reliability.checkpoint.dir; "
                      "--supervise: checkpoints/<plan name>)");
  execute->add_option("--checkpoint-key", ex->checkpoint_key,
                      "Encrypt checkpoints (AES-256-GCM) with the key in this file: 32 bytes or 64 hex digits, mode 600 "
                      "(or DITWIN_CHECKPOINT_KEY_FILE / DITWIN_CHECKPOINT_KEY); docs/privacy.md");
  execute->add_option("--checkpoint-auth-key", ex->checkpoint_auth_key,
                      "Authenticate plain checkpoints (HMAC-SHA-256: readable, but an edit is refused) with the key in "
                      "this file: 32 bytes or 64 hex digits, mode 600 (or DITWIN_CHECKPOINT_AUTH_KEY_FILE / "
                      "DITWIN_CHECKPOINT_AUTH_KEY); docs/privacy.md");
  execute->add_flag("--no-resume", ex->no_resume, "Write checkpoints but start from step 0 even if some exist");
  execute->add_flag("--fresh", ex->fresh, "--supervise: delete the checkpoints in the directory first");
  execute->add_option("--inject", ex->inject,
                      "Inject a fault, once per run: kill|hang:rank=R,step=S (or at_s=T, or seed=N,within_s=T), "
                      "kill_during_checkpoint:rank=R,step=S[,fraction=F], corrupt_shard:rank=R,step=S; repeatable")
      ->allow_extra_args(false);
  execute->add_option("--stage", ex->stage,
                      "A plan with stages: run only stage N (1-based), from stage N-1's final checkpoint; without it "
                      "every stage runs in turn, resuming where the checkpoint directory left off")
      ->check(CLI::PositiveNumber);
  execute->add_option("--ft-run-dir", ex->ft_run_dir, "Internal: the supervisor's run directory")->group("");
  execute->add_option("--ft-attempt", ex->ft_attempt, "Internal: the supervisor's attempt number")->group("");
  execute->add_option("--ft-fired", ex->ft_fired, "Internal: injections that already fired")->group("");
  execute->add_flag("--ft-save-final", ex->ft_save_final, "Internal: checkpoint the last step (a rollout's planned stop)")->group("");
  execute->add_option("--ft-identity-plan", ex->ft_identity_plan, "Internal: the plan whose identity the checkpoints carry (a rollout's first plan)")->group("");

  auto ca = std::make_shared<CalibrateArgs>();
  auto* calibrate = app.add_subcommand("calibrate", "Measure this machine's kernels and communication into a device profile");
  calibrate->add_option("--backend", ca->backend, "cpu (default) or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  calibrate->add_option("--out", ca->out, "Profile to write (JSON)")->required();
  calibrate->add_option("--threads", ca->threads, "Kernel threads per rank (default: cores / ranks)");
  calibrate->add_option("--ranks", ca->ranks, "Ranks for the communication benchmark (default 2)")->check(CLI::PositiveNumber);
  calibrate->add_option("--min-seconds", ca->min_seconds, "Time spent per measurement point (default 0.05)");
  calibrate->add_flag("--as-rank", ca->as_rank, "Internal: one of the ranks mpirun started")->group("");

  auto cmp = std::make_shared<std::array<std::string, 3>>();
  auto* compare = app.add_subcommand("compare", "Predicted vs measured: step time and op by op, or long-run ETTR and lost time by cause");
  compare->add_option("predicted", (*cmp)[0], "Report or trace of the prediction")->required();
  compare->add_option("measured", (*cmp)[1], "Report or trace of the measurement")->required();
  compare->add_option("--report", (*cmp)[2], "Write the comparison (JSON)");
  auto cmp_step = std::make_shared<long long>(-1);
  compare->add_option("--step", *cmp_step,
                      "A measured trace's step to compare (ProfilerStep#N; default: the median steady-state step)")
      ->check(CLI::NonNegativeNumber);

  std::vector<std::string> args(argv + 1, argv + argc);
  return [=]() -> int {
    if (execute->parsed()) {
      ex->steps_given = execute->get_option("--steps")->count() > 0;
      return run_execute(*ex, args);
    }
    if (calibrate->parsed()) return run_calibrate(*ca);
    if (compare->parsed()) {
      require_writable_output((*cmp)[2], "--report");
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
      auto c = compare_runs(read_run_times((*cmp)[0]), read_run_times((*cmp)[1], *cmp_step));
      if (*cmp_step >= 0 && c["measured"].contains("step")) c["measured"]["step_chosen"] = true;
      std::cout << format_comparison(c);
      if (!(*cmp)[2].empty()) write_json_file(c, (*cmp)[2], 2);
      return 0;
    }
    return -1;
  };
}

}  // namespace ditwin::cli
