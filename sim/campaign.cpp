// Campaigns: the stages of a plan played one after another through failures (sim/campaign.hpp).
#include "sim/campaign.hpp"

#include <numeric>

#include "cost_models/reliability.hpp"

namespace ditwin::sim {

StageTransition stage_transition(const Plan& from, const Plan& to) {
  StageTransition t;
  t.layout_changed = layout_changes(from, to);
  if (!t.layout_changed) return t;  // same shards: the job goes on, the next batches take the new shapes
  // The checkpoint is the same set of bytes under either layout (master weights and optimizer
  // states of every parameter once); what differs is how many nodes share the write and the read.
  cost::CheckpointCosts out = cost::checkpoint_costs(from), in = cost::checkpoint_costs(to);
  const auto& ck_in = to.reliability.checkpoint;
  t.bytes = out.bytes;
  t.save_s = out.write_s;  // synchronous: nothing trains while it is written
  // Through the store whatever the mode: an in-memory copy is laid out for the old shards.
  t.load_s = ck_in.load_s >= 0 ? ck_in.load_s : in.bytes_per_node / ck_in.read_bytes_per_s;
  t.restart_s = to.reliability.process_start_s + to.reliability.comm_init_s;
  return t;
}

std::vector<CampaignStage> campaign_stages(const Plan& plan, const std::vector<double>& step_time_s,
                                           const std::vector<double>& mfu) {
  std::vector<const Plan*> plans;
  if (plan.stages.empty()) plans.push_back(&plan);
  for (const auto& s : plan.stages) plans.push_back(&s);
  if (step_time_s.size() != plans.size() || mfu.size() != plans.size())
    throw std::invalid_argument("campaign_stages: one step time and MFU per stage");
  std::vector<CampaignStage> out;
  for (std::size_t i = 0; i < plans.size(); ++i) {
    const Plan& p = *plans[i];
    CampaignStage s;
    s.plan = p.name;
    s.name = p.stage_name.empty() ? p.name : p.stage_name;
    s.layout = describe_layout(p);
    s.steps = p.run.steps;
    s.gpus_held = static_cast<double>(p.cluster.nodes + p.reliability.spare_nodes) * p.cluster.devices_per_node;
    s.inputs = longrun_inputs(p, step_time_s[i], mfu[i]);
    s.inputs.plan = p.name + (p.stage_name.empty() ? "" : " / " + p.stage_name);
    if (i > 0) s.transition = stage_transition(*plans[i - 1], p);
    out.push_back(std::move(s));
  }
  return out;
}

CampaignResult simulate_campaign(const std::vector<CampaignStage>& stages, const LongRunOptions& options,
                                 const std::function<void(std::size_t)>& progress) {
  CampaignResult r;
  r.stages = stages;
  for (std::size_t i = 0; i < stages.size(); ++i) {
    if (progress) progress(i);
    LongRunOptions o = options;
    // Independent stages, reproducible from the campaign's seed; stage 0 draws as a one-stage run.
    o.seed = options.seed + 0x9E3779B97F4A7C15ULL * i;
    o.timeline = false;
    r.runs.push_back(simulate_longrun(stages[i].inputs, o));
  }
  return r;
}

nlohmann::json to_json(const CampaignResult& r) {
  using nlohmann::json;
  json stages = json::array();
  double wall_s = 0, productive_s = 0, gpu_hours = 0, tokens = 0, transition_s = 0;
  json lost_total = json::object();
  std::size_t trials = r.runs.empty() ? 0 : r.runs.front().trials.size();
  std::vector<double> trial_wall_s(trials, 0.0);
  for (std::size_t i = 0; i < r.stages.size(); ++i) {
    const auto& s = r.stages[i];
    const auto& run = r.runs[i];
    json lr = to_json(run);
    const double t_s = s.transition.total_s();
    const double stage_wall_s = lr["wall_s"].get<double>() + t_s;
    const double stage_productive_s = lr["productive_s"].get<double>();
    const double stage_tokens = stage_productive_s / s.inputs.step_time_s * s.inputs.tokens_per_step;
    const double stage_gpu_hours = stage_wall_s / 3600 * s.gpus_held;
    json lost = lr["lost_hours_by_cause"];
    lost["resharding"] = t_s / 3600;
    std::vector<double> ettr_trials;
    for (std::size_t t = 0; t < run.trials.size() && t < trials; ++t) {
      double w = run.trials[t].wall_s + t_s;
      trial_wall_s[t] += w;
      ettr_trials.push_back(w > 0 ? run.trials[t].productive_s / w : 0);
    }
    Summary e = summarize(ettr_trials);
    const auto& tr = s.transition;
    stages.push_back({{"name", s.name},
                      {"layout", s.layout},
                      {"steps", s.steps},
                      {"step_time_s", s.inputs.step_time_s},
                      {"gpus", s.gpus_held},
                      {"ettr", stage_wall_s > 0 ? stage_productive_s / stage_wall_s : 0},
                      {"ettr_trials", {{"mean", e.mean}, {"p5", e.p5}, {"p50", e.p50}, {"p95", e.p95}}},
                      {"wall_days", stage_wall_s / 86400},
                      {"wall_s", stage_wall_s},
                      {"productive_s", stage_productive_s},
                      {"gpu_hours", stage_gpu_hours},
                      {"tokens", stage_tokens},
                      {"goodput", {{"tokens_per_s", stage_wall_s > 0 ? stage_tokens / stage_wall_s : 0},
                                   {"fraction_of_ideal", stage_wall_s > 0 ? stage_productive_s / stage_wall_s : 0}}},
                      {"effective_mfu", lr["effective_mfu"]},
                      {"interruptions_per_day", lr["interruptions_per_day"]},
                      {"lost_hours_by_cause", lost},
                      {"transition", {{"layout_changed", tr.layout_changed}, {"checkpoint_bytes", tr.bytes},
                                      {"save_s", tr.save_s}, {"load_s", tr.load_s}, {"restart_s", tr.restart_s},
                                      {"total_s", t_s}}},
                      {"longrun", lr}});
    wall_s += stage_wall_s;
    productive_s += stage_productive_s;
    gpu_hours += stage_gpu_hours;
    tokens += stage_tokens;
    transition_s += t_s;
    for (const auto& [k, v] : lost.items()) lost_total[k] = lost_total.value(k, 0.0) + v.get<double>();
  }
  std::vector<double> days;
  for (double w : trial_wall_s) days.push_back(w / 86400);
  Summary d = summarize(days);
  return {{"schema", "ditwin.campaign_report/1"},
          {"plan", r.stages.empty() ? "" : r.stages.front().plan},
          {"trials", trials},
          {"stages", stages},
          {"wall_days", wall_s / 86400},
          {"wall_days_trials", {{"mean", d.mean}, {"p5", d.p5}, {"p50", d.p50}, {"p95", d.p95}}},
          {"wall_s", wall_s},
          {"productive_s", productive_s},
          {"gpu_hours", gpu_hours},
          {"ettr", wall_s > 0 ? productive_s / wall_s : 0},
          {"tokens", tokens},
          {"goodput", {{"tokens_per_s", wall_s > 0 ? tokens / wall_s : 0},
                       {"fraction_of_ideal", wall_s > 0 ? productive_s / wall_s : 0}}},
          {"transition_s", transition_s},
          {"lost_hours_by_cause", lost_total}};
}

}  // namespace ditwin::sim
