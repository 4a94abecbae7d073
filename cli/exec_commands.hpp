// The `execute`, `calibrate` and `compare` subcommands: real runs and their comparison with
// predictions. Registered on the CLI app by main.cpp.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "model/plan.hpp"

namespace ditwin::cli {

struct ExecuteArgs {
  std::string plan, report, trace, trace_dir, profile, parameters, backend = "cpu";
  long long steps = 10;
  int ranks = 0, warmup = 2, threads = 0;
  // Fault tolerance (docs/reliability.md).
  bool supervise = false, no_resume = false, fresh = false;
  std::string checkpoint_dir, checkpoint_key, checkpoint_auth_key;
  std::vector<std::string> inject;  // CLI form, after the plan's reliability.inject
  std::string ft_run_dir, ft_fired;  // set by the supervisor for the ranks it launches
  int ft_attempt = 0;
  // Multi-stage plans: --stage N runs stage N (1-based) alone; without it every stage runs in turn.
  int stage = 0;
  bool steps_given = false;  // --steps was on the command line
  bool ft_save_final = false;  // controlled rollouts: the supervisor stops the attempt at a rollout's step, checkpointed
  std::string ft_identity_plan;  // controlled rollouts: checkpoints carry this plan's identity (the job's first plan)
};

// `execute` on a plan with stages: each stage under mpirun in turn, from the previous stage's final
// checkpoint, skipping stages already complete in the checkpoint directory (cli/exec_commands.cpp).
int run_execute_campaign(const ExecuteArgs& a, const Plan& campaign);

// `mpirun -np ranks … <this program> args` and the environment its ranks need.
std::vector<std::string> mpirun_argv(int ranks, const std::vector<std::string>& args);
std::vector<std::pair<std::string, std::string>> rank_environment(int ranks);

// The plan's injections, then --inject's, numbered in that order (ranks and supervisor agree).
std::vector<InjectSpec> all_injections(const Plan& plan, const ExecuteArgs& a);
std::set<int> parse_fired(const std::string& list);
// `execute --supervise` (cli/supervise.cpp).
int run_supervised(const ExecuteArgs& a);

// Adds the subcommands to `app`; returns a runner that executes whichever was parsed (or -1).
std::function<int()> add_exec_commands(CLI::App& app, int argc, char** argv);

}  // namespace ditwin::cli
