// Runs a plan's Program for real on this process's rank: the compute ops through the DiT, the
// data-parallel collectives through a Communicator, each op timed under the Program's name.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "exec/backend.hpp"
#include "exec/ft/checkpoint.hpp"
#include "exec/comm/communicator.hpp"
#include "exec/model/dit_model.hpp"
#include "exec/ft/fault_tolerance.hpp"
#include "model/plan.hpp"
#include "model/program.hpp"
#include "model/report.hpp"

namespace ditwin::exec {

// A one-run privacy audit's canaries (exec/privacy_audit.hpp): Dirac gradients, each of norm
// clip_norm on one parameter, added to the clipped sum before the noise. An included canary is
// Poisson-sampled at the plan's rate each step, like any example; an excluded one never enters.
struct Canaries {
  std::vector<char> included;  // one entry per canary
  std::uint64_t key = 0;       // picks the distinct coordinates and the per-step draws
};

struct ExecOptions {
  long long steps = 10;
  int warmup_steps = 2;        // excluded from the step-time median and per-op medians
  double peak_flops = 0;       // for MFU; 0 = unknown (cpu without a profile)
  // Called on rank 0 after each step: step index, mean loss, step seconds.
  std::function<void(long long, double, double)> on_step;
  // Checkpoints (exec/checkpoint.hpp): written every interval_steps (or interval_s of training
  // when 0) to `dir`; with `resume`, training starts from the newest one that verifies.
  struct Checkpointing {
    std::string dir;  // "" = none
    std::string mode = "sync";
    long long interval_steps = 0;
    double interval_s = 1800;
    int keep = 2;
    bool resume = true;
    std::string plan_identity;
    const ShardCodec* codec = nullptr;  // identity when null
    // Multi-stage campaigns (plan key `stages`): a stage that finds no checkpoint of its own starts
    // from the previous stage's final one (step `step` in `dir`, written under that stage's plan
    // identity and optimizer), resharded to this layout, and writes one after its last step.
    struct PreviousStage {
      std::string dir, plan_identity, optimizer;
      long long step = 0;
    } previous_stage;
    bool save_final = false;
  } checkpoint;
  FaultTolerance* ft = nullptr;  // supervised runs: heartbeats, events, injected faults
  double collective_timeout_s = 0;  // a communication not done after this throws (0 = never)
  const Canaries* canaries = nullptr;  // DP-SGD plans under data parallelism only
};

struct ExecResult {
  StepReport report;                // measured; ops = rank 0's per-op medians after warm-up
  std::vector<double> losses;       // mean over the global batch, per step
  std::vector<double> step_times_s;  // slowest rank, per step
  std::vector<float> parameters;    // final parameters in the one-rank flat layout (rank 0 only)
  // With canaries (rank 0): per canary, its coordinate's released (noisy, summed) gradient summed
  // over the steps; and how many times included canaries were drawn into a step.
  std::vector<double> canary_scores;
  long long canary_draws = 0;
};

// The part of the model world rank `rank` holds under the Program's layout.
ModelShard shard_of(const Program& program, long long rank);

// Throws InputError naming the key to change for plans the executor cannot run on `backend`
// ("cpu" or "cuda").
void check_plan(const Plan& plan, const std::string& backend = "cpu");
// Runs the plan on this rank on the CPU backend (check_plan first).
ExecResult execute_plan(const Plan& plan, const Program& program, Communicator& comm, DataSource& data,
                        const ExecOptions& options);
// Runs the plan on this rank on `backend` (check_plan(plan, backend.name()) first).
ExecResult execute_plan(const Plan& plan, const Program& program, Communicator& comm, DataSource& data,
                        const ExecOptions& options, Backend& backend);

}  // namespace ditwin::exec
