// The `ditwin` program: one binary, one subcommand per stage of the pipeline. Errors from
// bad input are caught here once, printed, and turned into a non-zero exit.
#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>

#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/plan_summary.hpp"
#include "model/program.hpp"

namespace {

void write_json(const nlohmann::json& j, const std::string& path) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) throw ditwin::InputError(path + ": cannot write");
    out << j.dump(2) << "\n";
    if (!out) throw ditwin::InputError(path + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw ditwin::InputError(path + ": cannot rename " + tmp);
}

int run_plan(const std::string& plan_path, const std::string& report_path) {
  ditwin::Plan plan = ditwin::load_plan(plan_path);
  ditwin::Program program = ditwin::lower(plan);
  nlohmann::json summary = ditwin::plan_summary(plan, program);
  std::cout << ditwin::format_plan_summary(summary);
  if (!report_path.empty()) write_json(summary, report_path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ditwin: a digital twin for training diffusion and unified generation models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ditwin 0.1.0");

  std::string plan_path, report_path;
  auto* plan_cmd = app.add_subcommand("plan", "Show what a plan lowers to: parameters, FLOPs, memory per GPU, ops");
  plan_cmd->add_option("plan", plan_path, "Training plan (JSON)")->required();
  plan_cmd->add_option("--report", report_path, "Also write the summary as JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (plan_cmd->parsed()) return run_plan(plan_path, report_path);
  } catch (const ditwin::InputError& e) {
    std::cerr << "ditwin: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ditwin: internal error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
