// Multi-stage plans (plan key `stages`) at the command line: `ditwin plan` summarises every stage,
// `ditwin simulate --mode run` plays the whole campaign (cli/campaign.cpp); `ditwin execute` runs
// the stages one after another (cli/exec_commands.cpp, run_execute_campaign).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "model/plan.hpp"

namespace ditwin::cli {

// Prints one block per stage after the base plan's summary and returns their summaries (the
// `stages` of `ditwin plan --report`).
nlohmann::json print_stage_summaries(const Plan& plan, double memory_budget_bytes);

// `simulate PLAN --mode run` on a plan with stages: each stage's step is simulated, then the
// campaign is played through failures; prints per stage and in total, writes the campaign report.
int run_campaign_simulation(const Plan& plan, const std::string& profile_path, const std::string& report_path,
                            int trials, std::uint64_t seed, double memory_budget_bytes);

}  // namespace ditwin::cli
