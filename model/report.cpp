// Report metrics, breakdown, and their JSON / Chrome-trace forms.
#include "model/report.hpp"

#include <unistd.h>

#include <filesystem>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "model/accounting.hpp"
#include "model/errors.hpp"

namespace ditwin {

void fill_metrics(StepReport& r, const Plan& plan, double peak) {
  FlopCounts f = count_flops(plan);
  r.plan = plan.name;
  r.device = plan.cluster.device.name;
  r.gpus = plan.cluster.gpus();
  if (r.step_time_s > 0) {
    r.samples_per_s = plan.training.global_batch / r.step_time_s;
    r.tokens_per_s = plan.tokens_per_step() / r.step_time_s;
    r.tflops_per_gpu = f.model_flops_per_step / r.step_time_s / r.gpus / 1e12;
    r.hardware_tflops_per_gpu = f.hardware_flops_per_step / r.step_time_s / r.gpus / 1e12;
    if (peak > 0) {
      r.mfu = r.tflops_per_gpu * 1e12 / peak;
      r.hfu = r.hardware_tflops_per_gpu * 1e12 / peak;
      // Above 100% the peak is wrong, not the step: never let it pass silently.
      if (r.hfu > 1) {
        if (!r.extra.is_object()) r.extra = nlohmann::json::object();
        r.extra["warnings"].push_back(
            "MFU " + std::to_string(static_cast<int>(100 * r.mfu)) + "% / HFU " + std::to_string(static_cast<int>(100 * r.hfu)) +
            "% exceed 100%: the device peak (" + std::to_string(peak / 1e12) +
            " TFLOP/s) is below what this step achieves; recalibrate with the threads the run uses "
            "(ditwin calibrate --threads), or correct the device's peak");
      }
    }
  }
  MemoryReport m = account_memory(plan);
  const auto& s = m.stages[m.worst_stage];
  r.memory = {{"peak_bytes", m.peak_bytes()}, {"capacity_bytes", m.capacity_bytes}, {"fits", m.fits()},
              {"worst_stage", m.worst_stage}, {"weights_bytes", s.weights_bytes},
              {"gradients_bytes", s.gradients_bytes}, {"optimizer_bytes", s.optimizer_bytes},
              {"activations_bytes", s.activations_bytes}};
  if (s.privacy_bytes > 0) r.memory["privacy_bytes"] = s.privacy_bytes;  // DP-SGD plans only
}

StepBreakdown breakdown_of(const std::vector<OpRecord>& ops, double step_time_s) {
  StepBreakdown b;
  if (ops.empty()) return b;
  // The slowest rank: the one whose last op ends last.
  std::map<long long, double> end_of;
  for (const auto& op : ops) end_of[op.rank] = std::max(end_of[op.rank], op.start_s + op.duration_s);
  b.rank = std::max_element(end_of.begin(), end_of.end(), [](auto& a, auto& c) { return a.second < c.second; })->first;
  // Sweep the rank's timeline: at each instant, the highest-priority activity wins.
  enum Level { idle = 0, pp, dp, cp, tp, optimizer, compute };
  struct Edge { double t; int level; int delta; };
  std::vector<Edge> edges;
  for (const auto& op : ops) {
    if (op.rank != b.rank || op.duration_s <= 0) continue;
    int level = op.kind == OpKind::optimizer ? optimizer
                : op.stream == Stream::compute ? compute
                : op.stream == Stream::tp ? tp
                : op.stream == Stream::cp ? cp
                : op.stream == Stream::dp ? dp : pp;
    edges.push_back({op.start_s, level, +1});
    edges.push_back({op.start_s + op.duration_s, level, -1});
  }
  std::sort(edges.begin(), edges.end(), [](const Edge& a, const Edge& c) { return a.t < c.t || (a.t == c.t && a.delta < c.delta); });
  int active[7] = {0};
  double t = 0;
  auto account = [&](double until) {
    double span = until - t;
    if (span <= 0) return;
    int top = idle;
    for (int l = compute; l > idle; --l)
      if (active[l] > 0) { top = l; break; }
    switch (top) {
      case compute: b.compute_s += span; break;
      case optimizer: b.optimizer_s += span; break;
      case tp: b.exposed_comm_s["tp"] += span; break;
      case cp: b.exposed_comm_s["cp"] += span; break;
      case dp: b.exposed_comm_s["dp"] += span; break;
      case pp: b.exposed_comm_s["pp"] += span; break;
      default: b.bubble_s += span;
    }
    t = until;
  };
  for (const auto& e : edges) {
    account(std::min(e.t, step_time_s));
    active[e.level] += e.delta;
  }
  account(step_time_s);
  for (const char* k : {"tp", "cp", "dp", "pp"}) b.exposed_comm_s.emplace(k, 0.0);
  return b;
}

nlohmann::json to_json(const StepReport& r) {
  using nlohmann::json;
  json ops = json::array();
  json summary = json::object();
  bool full = r.ops.size() <= max_report_ops;
  if (full) {
    for (const auto& op : r.ops)
      ops.push_back({{"name", op.name}, {"rank", op.rank}, {"stage", op.stage}, {"stream", to_string(op.stream)},
                     {"start_s", op.start_s}, {"duration_s", op.duration_s}, {"flops", op.flops}, {"bytes", op.bytes}});
  } else {
    // Too many to list: per op family (name without its micro-batch), per stage, totals.
    std::map<std::string, std::pair<long long, double>> families;
    for (const auto& op : r.ops) {
      std::string family = op.name.substr(0, op.name.rfind(".mb"));
      std::string key = "s";
      key += std::to_string(op.stage);
      key += ':';
      key += family;
      auto& f = families[key];
      ++f.first;
      f.second += op.duration_s;
    }
    for (const auto& [k, v] : families) summary[k] = {{"count", v.first}, {"total_s", v.second}};
  }
  json exposed = r.breakdown.exposed_comm_s;
  double exposed_total = 0;
  for (const auto& [k, v] : r.breakdown.exposed_comm_s) exposed_total += v;
  return {{"schema", "ditwin.step_report/1"},
          {"source", r.source},
          {"plan", r.plan},
          {"device", r.device},
          {"gpus", r.gpus},
          {"step_time_s", r.step_time_s},
          {"samples_per_s", r.samples_per_s},
          {"tokens_per_s", r.tokens_per_s},
          {"tflops_per_gpu", r.tflops_per_gpu},
          {"hardware_tflops_per_gpu", r.hardware_tflops_per_gpu},
          {"mfu", r.mfu},
          {"hfu", r.hfu},
          {"breakdown", {{"rank", r.breakdown.rank}, {"compute_s", r.breakdown.compute_s},
                         {"optimizer_s", r.breakdown.optimizer_s}, {"exposed_comm_s", exposed},
                         {"exposed_comm_total_s", exposed_total}, {"bubble_s", r.breakdown.bubble_s}}},
          {"memory", r.memory},
          {"extra", r.extra},
          {"ops_listed", full},
          {"ops", ops},
          {"op_summary", summary}};
}

nlohmann::json to_trace(const StepReport& r) {
  using nlohmann::json;
  json events = json::array();
  const auto& ops = r.timeline.empty() ? r.ops : r.timeline;
  std::vector<std::pair<double, double>> steps = r.steps;
  if (steps.empty()) steps.push_back({0.0, r.step_time_s});
  std::map<long long, int> stage_of;
  for (const auto& op : ops) stage_of[op.rank] = op.stage;
  for (const auto& [rank, stage] : stage_of) {
    events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", rank}, {"tid", 0},
                      {"args", {{"name", "rank " + std::to_string(rank) + " (stage " + std::to_string(stage) + ")"}}}});
    events.push_back({{"ph", "M"}, {"name", "process_sort_index"}, {"pid", rank}, {"tid", 0}, {"args", {{"sort_index", rank}}}});
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", rank}, {"tid", 0}, {"args", {{"name", "step"}}}});
    for (int s = 0; s < stream_count; ++s)
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", rank}, {"tid", s + 1},
                        {"args", {{"name", to_string(static_cast<Stream>(s))}}}});
    for (std::size_t k = 0; k < steps.size(); ++k)
      events.push_back({{"ph", "X"}, {"name", "ProfilerStep#" + std::to_string(k)}, {"pid", rank}, {"tid", 0},
                        {"ts", steps[k].first * 1e6}, {"dur", steps[k].second * 1e6}, {"cat", "step"}});
  }
  for (const auto& op : ops) {
    json args = {{"flops", op.flops}, {"bytes", op.bytes}};
    if (op.duration_s > 0 && op.flops > 0) args["tflops_per_s"] = op.flops / op.duration_s / 1e12;
    if (op.duration_s > 0 && op.bytes > 0) args["gbytes_per_s"] = op.bytes / op.duration_s / 1e9;
    events.push_back({{"ph", "X"}, {"name", op.name}, {"pid", op.rank}, {"tid", static_cast<int>(op.stream) + 1},
                      {"ts", op.start_s * 1e6}, {"dur", op.duration_s * 1e6}, {"cat", to_string(op.kind)}, {"args", args}});
  }
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"},
          {"otherData", {{"source", r.source}, {"plan", r.plan}, {"step_time_s", r.step_time_s}, {"mfu", r.mfu}}}};
}

void require_writable_output(const std::string& path, const std::string& option) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec))
    throw InputError(option + " " + path + ": the directory " + dir.string() + " does not exist");
  if (fs::is_directory(p, ec)) throw InputError(option + " " + path + ": is a directory; give a file name");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw InputError(option + " " + path + ": cannot write in " + dir.string() + " (permission denied)");
  if (fs::exists(p, ec) && ::access(p.c_str(), W_OK) != 0)
    throw InputError(option + " " + path + ": exists and is not writable");
}

void write_json_file(const nlohmann::json& j, const std::string& path, int indent) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) throw InputError(path + ": cannot write (does the directory exist?)");
    out << j.dump(indent) << "\n";
    if (!out) throw InputError(path + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw InputError(path + ": cannot rename " + tmp + " into place");
}

}  // namespace ditwin
