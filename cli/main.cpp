// The `ditwin` program: one binary, one subcommand per stage of the pipeline. Errors from
// bad input are caught here once, printed, and turned into a non-zero exit.
#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>

#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/plan_summary.hpp"
#include "model/program.hpp"
#include "kernels/threads.hpp"
#include "model/report.hpp"
#include "cost_models/profile.hpp"
#include "sim/longrun.hpp"
#include "sim/step_sim.hpp"
#include "cli/campaign.hpp"
#include "cli/dataset_command.hpp"
#include "cli/exec_commands.hpp"
#include "cli/privacy_command.hpp"
#include "cli/search_command.hpp"

namespace {


// --max-memory GB: the budget a Program may take (model/program.hpp), in bytes.
double memory_budget(double gigabytes) {
  if (!(gigabytes > 0) || gigabytes > 1e6) throw ditwin::InputError("--max-memory: must be a number of GB in (0, 1e6]");
  return gigabytes * 1e9;
}

int run_plan(const std::string& plan_path, const std::string& report_path, double max_memory_gb) {
  ditwin::Plan plan = ditwin::load_plan(plan_path);
  ditwin::Program program = ditwin::lower(plan, memory_budget(max_memory_gb));
  nlohmann::json summary = ditwin::plan_summary(plan, program);
  std::cout << ditwin::format_plan_summary(summary);
  if (!plan.stages.empty()) summary["stages"] = ditwin::cli::print_stage_summaries(plan, memory_budget(max_memory_gb));
  if (!report_path.empty()) ditwin::write_json_file(summary, report_path, 2);
  return 0;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

void print_step_report(const ditwin::StepReport& r) {
  using ditwin::human_count;
  std::cout << r.source << " step of " << r.plan << " on " << r.gpus << " x " << r.device << "\n"
            << "  step time        " << fixed(r.step_time_s * 1e3, 2) << " ms\n"
            << "  throughput       " << human_count(r.samples_per_s) << " samples/s, " << human_count(r.tokens_per_s) << " tokens/s\n"
            << "  per GPU          " << fixed(r.tflops_per_gpu, 1) << " TFLOP/s model, " << fixed(r.hardware_tflops_per_gpu, 1)
            << " TFLOP/s hardware\n"
            << "  MFU / HFU        " << fixed(100 * r.mfu, 1) << "% / " << fixed(100 * r.hfu, 1) << "%\n";
  if (r.extra.is_object() && r.extra.contains("warnings"))
    for (const auto& w : r.extra["warnings"]) std::cout << "  warning: " << w.get<std::string>() << "\n";
  const auto& b = r.breakdown;
  auto pct = [&](double s) { return fixed(r.step_time_s > 0 ? 100 * s / r.step_time_s : 0, 1) + "%"; };
  std::cout << "  breakdown (rank " << b.rank << ")  compute " << pct(b.compute_s) << ", optimizer " << pct(b.optimizer_s);
  for (const auto& [k, v] : b.exposed_comm_s)
    if (v > 0) std::cout << ", exposed " << k << " " << pct(v);
  std::cout << ", bubble " << pct(b.bubble_s) << "\n";
  std::cout << "  memory per GPU   " << ditwin::human_bytes(r.memory["peak_bytes"].get<double>()) << " of "
            << ditwin::human_bytes(r.memory["capacity_bytes"].get<double>())
            << (r.memory["fits"].get<bool>() ? " (fits)" : " (DOES NOT FIT)") << "\n";
}

struct RunModeOptions {
  int trials = 100;
  std::uint64_t seed = 1;
  std::string optimize;
  std::vector<std::string> inject;  // --inject: deterministic failures (with the plan's reliability.inject)
  long long steps = 0;              // --steps: run length for injected failures (default run.steps)
};

// --mode run: weeks of training through failures, from the step time the step simulator predicts.
int run_longrun(const ditwin::Plan& plan, const ditwin::StepReport& step, const std::string& report_path,
                const std::string& trace_path, const RunModeOptions& o) {
  ditwin::sim::LongRunOptions options;
  options.trials = o.trials;
  options.seed = o.seed;
  options.timeline = !trace_path.empty();
  auto inputs = ditwin::sim::longrun_inputs(plan, step.step_time_s, step.mfu);
  // Injected faults (the executor's, docs/reliability.md) replace the sampled failures: every trial
  // is the same, so one is played.
  std::vector<ditwin::InjectSpec> inject = plan.reliability.inject;
  for (const auto& text : o.inject) inject.push_back(ditwin::parse_inject(text, "--inject"));
  if (!inject.empty()) {
    if (!o.optimize.empty()) throw ditwin::InputError("--optimize: not with injected faults (they fix the failures)");
    long long steps = o.steps > 0 ? o.steps : plan.run.steps;
    ditwin::check_injections(plan, inject, steps, [&](std::size_t i) {
      return i < plan.reliability.inject.size() ? "reliability.inject[" + std::to_string(i) + "]"
                                                : "--inject " + inject[i].describe();
    });
    auto schedule = ditwin::sim::schedule_injections(inputs, inject, steps, plan.reliability.exit_detection_s);
    options.trials = 1;
    std::cout << "deterministic failures: " << schedule.size() << " of " << inject.size() << " injected fault(s) fire in "
              << steps << " steps\n";
    for (const auto& f : schedule)
      std::cout << "  at " << fixed(f.t_s, 3) << " s: " << f.name << " (detected after " << fixed(f.detect_s, 3) << " s)\n";
  } else if (o.steps > 0) {
    throw ditwin::InputError("--steps: only with injected faults (--inject or reliability.inject); set run.steps");
  }
  auto result = ditwin::sim::simulate_longrun(inputs, options);
  nlohmann::json report = ditwin::sim::to_json(result);
  report["step_report"] = ditwin::to_json(step);
  report["step_report"].erase("ops");
  if (!o.optimize.empty())
    report["optimize"] = ditwin::sim::optimize_checkpoint(plan, step.step_time_s, step.mfu, options,
                                                          o.optimize == "checkpoint");
  const auto& e = report["ettr"];
  std::cout << "long run of " << plan.name << ": " << options.trials << " trials, seed " << o.seed << ", "
            << fixed(report["wall_days"]["mean"].get<double>(), 1) << " days each\n"
            << "  ETTR             " << fixed(100 * e["mean"].get<double>(), 2) << "% (p5 "
            << fixed(100 * e["p5"].get<double>(), 2) << "%, p95 " << fixed(100 * e["p95"].get<double>(), 2)
            << "%, 95% CI of the mean " << fixed(100 * e["ci95"][0].get<double>(), 2) << "-"
            << fixed(100 * e["ci95"][1].get<double>(), 2) << "%)\n"
            << "  interruptions   " << fixed(report["interruptions_per_day"].get<double>(), 2) << " per day, "
            << fixed(report["planned_per_day"].get<double>(), 2) << " planned per day\n"
            << "  effective MFU    " << fixed(100 * report["effective_mfu"].get<double>(), 1) << "% (step MFU "
            << fixed(100 * step.mfu, 1) << "%)\n"
            << "  checkpoint       " << inputs.checkpoint_mode << " every " << fixed(inputs.interval_s / 60, 1)
            << " min, stall " << fixed(inputs.stall_s, 2) << " s\n";
  // A deterministic run of injected faults is seconds long: say it in seconds.
  bool short_run = !inputs.scheduled.empty();
  std::cout << (short_run ? "  lost (s)        " : "  lost (h/trial)  ");
  for (const auto& [k, v] : report["lost_hours_by_cause"].items())
    std::cout << " " << k << " " << (short_run ? fixed(v.get<double>() * 3600, 3) : fixed(v.get<double>(), 1));
  std::cout << "\n";
  if (report.contains("optimize")) {
    const auto& b = report["optimize"]["best"];
    std::cout << "  best checkpoint  " << b["mode"].get<std::string>() << " every "
              << fixed(b["interval_min"].get<double>(), 1) << " min: ETTR "
              << fixed(100 * b["ettr"]["mean"].get<double>(), 2) << "%\n";
    for (const auto& [mode, m] : report["optimize"]["by_mode"].items())
      std::cout << "  " << mode << ": Young " << fixed(m["young_interval_min"].get<double>(), 1) << " min (ETTR "
                << fixed(100 * m["young_ettr"]["mean"].get<double>(), 2) << "%), Daly "
                << fixed(m["daly_interval_min"].get<double>(), 1) << " min (ETTR "
                << fixed(100 * m["daly_ettr"]["mean"].get<double>(), 2) << "%)\n";
  }
  if (!report_path.empty()) ditwin::write_json_file(report, report_path);
  if (!trace_path.empty()) ditwin::write_json_file(ditwin::sim::to_trace(result), trace_path, -1);
  return 0;
}

struct TraceOptions {
  std::string dir;                        // --trace-dir: one Kineto-style file per rank
  std::string ranks = "representative";  // --trace-ranks: representative | all
};

int run_simulate(const std::string& plan_path, const std::string& report_path, const std::string& trace_path,
                 const std::string& profile_path, const std::string& mode, const RunModeOptions& run_options,
                 double max_memory_gb, const TraceOptions& traces) {
  ditwin::Plan plan = ditwin::load_plan(plan_path);
  ditwin::require_writable_output(report_path, "--report");
  ditwin::require_writable_output(trace_path, "--trace");
  if (traces.ranks != "representative" && traces.ranks != "all")
    throw ditwin::InputError("--trace-ranks " + traces.ranks + ": must be \"representative\" or \"all\"");
  if (mode == "run" && !traces.dir.empty())
    throw ditwin::InputError("--trace-dir: per-rank step traces come from --mode step (a long run's trace is --trace)");
  ditwin::require_writable_dir(traces.dir, "--trace-dir");
  if (mode != "step" && mode != "run")
    throw ditwin::InputError("--mode " + mode + ": must be \"step\" (one step) or \"run\" (a long run through failures)");
  if (mode == "step" && !run_options.optimize.empty()) throw ditwin::InputError("--optimize: needs --mode run");
  if (mode == "step" && (!run_options.inject.empty() || run_options.steps > 0))
    throw ditwin::InputError(run_options.inject.empty() ? "--steps: needs --mode run" : "--inject: needs --mode run");
  if (!plan.stages.empty()) {  // a multi-stage campaign (cli/campaign.cpp)
    if (!trace_path.empty() || !traces.dir.empty())
      throw ditwin::InputError("--trace: a plan with stages has no single timeline; simulate one stage's plan for it");
    if (!run_options.optimize.empty() || !run_options.inject.empty() || run_options.steps > 0)
      throw ditwin::InputError("--optimize, --inject and --steps: for one-stage plans; a campaign plays each stage's run.steps");
    if (mode == "run")
      return ditwin::cli::run_campaign_simulation(plan, profile_path, report_path, run_options.trials, run_options.seed,
                                                  memory_budget(max_memory_gb));
    nlohmann::json stages = nlohmann::json::array();
    for (std::size_t i = 0; i < plan.stages.size(); ++i) {
      const auto& s = plan.stages[i];
      std::cout << "stage " << i + 1 << "/" << plan.stages.size() << " \"" << s.stage_name << "\": ";
      auto p = profile_path.empty() ? ditwin::cost::profile_for(s.cluster) : ditwin::cost::load_profile(profile_path);
      ditwin::Program prog = ditwin::lower(s, memory_budget(max_memory_gb));
      ditwin::StepReport r = ditwin::sim::simulate_step(s, prog, p);
      print_step_report(r);
      stages.push_back(ditwin::to_json(r));
    }
    if (!report_path.empty()) ditwin::write_json_file({{"plan", plan.name}, {"stages", stages}}, report_path);
    return 0;
  }
  ditwin::cost::DeviceProfile profile =
      profile_path.empty() ? ditwin::cost::profile_for(plan.cluster) : ditwin::cost::load_profile(profile_path);
  ditwin::Program program = ditwin::lower(plan, memory_budget(max_memory_gb));
  ditwin::StepReport report = ditwin::sim::simulate_step(plan, program, profile);
  if (mode == "run") return run_longrun(plan, report, report_path, trace_path, run_options);
  print_step_report(report);
  if (!report_path.empty()) ditwin::write_json_file(ditwin::to_json(report), report_path);
  const bool all = traces.ranks == "all";
  if (!trace_path.empty())
    ditwin::write_json_file(ditwin::to_trace(all ? ditwin::with_every_rank(report, program) : report), trace_path, -1);
  if (!traces.dir.empty()) {
    ditwin::write_kineto_traces(report, traces.dir, all ? &program : nullptr);
    std::cout << "per-rank traces (Kineto form, for Holistic Trace Analysis): "
              << (all ? program.world() : static_cast<long long>(ditwin::trace_ranks(report).size())) << " files in "
              << traces.dir << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ditwin::kernels::restart_with_passive_openmp(argv);
  CLI::App app{"ditwin: a digital twin for training diffusion and unified generation models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ditwin 0.1.0");

  std::string plan_path, report_path;
  auto* plan_cmd = app.add_subcommand("plan", "Show what a plan lowers to: parameters, FLOPs, memory per GPU, ops");
  plan_cmd->add_option("plan", plan_path, "Training plan (JSON)")->required();
  plan_cmd->add_option("--report", report_path, "Also write the summary as JSON");
  double max_memory_gb = ditwin::default_program_memory_bytes / 1e9;
  plan_cmd->add_option("--max-memory", max_memory_gb, "GB the lowered Program may take (default 3); larger plans are refused");

  std::string sim_plan, sim_report, sim_trace, sim_profile, sim_mode = "step";
  auto* sim_cmd = app.add_subcommand("simulate", "Predict a training step on a simulated cluster (SimGrid)");
  sim_cmd->add_option("plan", sim_plan, "Training plan (JSON)")->required();
  sim_cmd->add_option("--report", sim_report, "Write the predicted report (JSON)");
  sim_cmd->add_option("--trace", sim_trace, "Write the predicted timeline (Chrome trace JSON, opens in Perfetto)");
  TraceOptions sim_traces;
  sim_cmd->add_option("--trace-dir", sim_traces.dir,
                      "Write one PyTorch-profiler-style trace per rank (rank-N.json) into this folder, for Holistic Trace Analysis");
  sim_cmd->add_option("--trace-ranks", sim_traces.ranks,
                      "representative (default: one simulated rank per pipeline stage) or all (every rank, a copy of its stage's)");
  sim_cmd->add_option("--profile", sim_profile, "Device profile from `ditwin calibrate` instead of the preset");
  sim_cmd->add_option("--max-memory", max_memory_gb, "GB the lowered Program may take (default 3); larger plans are refused");
  sim_cmd->add_option("--mode", sim_mode, "step: one training step; run: weeks of training through failures (ETTR)");
  RunModeOptions run_options;
  sim_cmd->add_option("--trials", run_options.trials, "--mode run: independent trials (default 100)")->check(CLI::PositiveNumber);
  sim_cmd->add_option("--seed", run_options.seed, "--mode run: random seed (default 1)");
  sim_cmd->add_option("--optimize", run_options.optimize,
                      "--mode run: checkpoint-interval (sweep the interval) or checkpoint (interval and mode)")
      ->check(CLI::IsMember({"checkpoint-interval", "checkpoint"}));
  sim_cmd->add_option("--inject", run_options.inject,
                      "--mode run: play these faults deterministically (the executor's --inject forms) instead of "
                      "sampled failures; repeatable")
      ->allow_extra_args(false);
  sim_cmd->add_option("--steps", run_options.steps, "--mode run with injected faults: training steps (default run.steps)")
      ->check(CLI::PositiveNumber);

  auto run_exec_command = ditwin::cli::add_exec_commands(app, argc, argv);
  auto run_privacy_command = ditwin::cli::add_privacy_command(app);
  auto run_dataset_command = ditwin::cli::add_dataset_command(app);
  auto run_search_command = ditwin::cli::add_search_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (plan_cmd->parsed()) return run_plan(plan_path, report_path, max_memory_gb);
    if (int rc = run_exec_command(); rc >= 0) return rc;
    if (int rc = run_privacy_command(); rc >= 0) return rc;
    if (int rc = run_dataset_command(); rc >= 0) return rc;
    if (int rc = run_search_command(); rc >= 0) return rc;
    if (sim_cmd->parsed())
      return run_simulate(sim_plan, sim_report, sim_trace, sim_profile, sim_mode, run_options, max_memory_gb, sim_traces);
  } catch (const ditwin::InputError& e) {
    std::cerr << "ditwin: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ditwin: internal error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
