// A multi-stage campaign (plan key `stages`) played through failures: each stage is a long run of
// its own (sim/longrun), and moving to a stage whose layout differs costs a resharding checkpoint
// save and load plus a restart of the job. Totals are the sums of the stages (docs/reliability.md).
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "model/plan.hpp"
#include "sim/longrun.hpp"

namespace ditwin::sim {

// Moving into a stage: zero unless the layout changes (the job then stops, writes a synchronous
// checkpoint under the old layout, restarts and reads it back under the new one).
struct StageTransition {
  bool layout_changed = false;
  double save_s = 0;     // the outgoing stage's checkpoint, one node's share, to the store
  double load_s = 0;     // the incoming stage's read of one node's share from the store
  double restart_s = 0;  // process start and communicator init under the new layout
  double bytes = 0;      // the checkpoint resharded
  double total_s() const { return save_s + load_s + restart_s; }
};
StageTransition stage_transition(const Plan& from, const Plan& to);

struct CampaignStage {
  std::string plan;        // the campaign's plan name
  std::string name;
  std::string layout;      // describe_layout()
  long long steps = 0;
  double gpus_held = 0;    // (nodes + spare nodes) x devices per node
  LongRunInputs inputs;    // the stage's long run
  StageTransition transition;  // into this stage (none for the first)
};

// One stage per plan.stages (the plan itself when it has none), from each stage's step time and MFU.
std::vector<CampaignStage> campaign_stages(const Plan& plan, const std::vector<double>& step_time_s,
                                           const std::vector<double>& mfu);

struct CampaignResult {
  std::vector<CampaignStage> stages;
  std::vector<LongRunResult> runs;  // one per stage, same trials
};

// Stage i plays its trials with seed (options.seed, i); `progress(i)` is called before each stage.
CampaignResult simulate_campaign(const std::vector<CampaignStage>& stages, const LongRunOptions& options,
                                 const std::function<void(std::size_t)>& progress = {});

// "ditwin.campaign_report/1": stages[] (each: name, layout, steps, ettr, wall_days, gpu_hours,
// goodput, lost_hours_by_cause with resharding, transition, and the stage's whole long-run report
// under longrun) and, at the top level, the campaign's totals: the sums of the stages' wall_days,
// gpu_hours, productive hours, tokens and lost hours by cause, and ettr = productive / wall.
nlohmann::json to_json(const CampaignResult& result);

}  // namespace ditwin::sim
