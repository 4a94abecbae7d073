// Report metrics, breakdown, and their JSON / Chrome-trace forms.
#include "model/report.hpp"

#include <unistd.h>

#include <filesystem>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <cstdio>
#include <fstream>

#include "model/accounting.hpp"
#include "model/compare.hpp"  // defines: default_step, TraceStep
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

void measured_breakdown(StepReport& r) {
  if (r.timeline.empty() || r.steps.empty()) {
    r.breakdown = breakdown_of(r.ops, r.step_time_s);
    return;
  }
  std::vector<TraceStep> steps;
  for (std::size_t k = 0; k < r.steps.size(); ++k)
    steps.push_back({0, static_cast<long long>(k), r.steps[k].first, r.steps[k].second});
  const long long chosen = default_step(steps);
  const auto [start, span] = r.steps[static_cast<std::size_t>(chosen)];
  std::vector<OpRecord> in_step;
  std::map<long long, double> busy;
  for (const auto& op : r.timeline) {
    if (op.start_s < start || op.start_s >= start + span) continue;
    OpRecord o = op;
    o.start_s -= start;
    if (o.stream == Stream::compute) busy[o.rank] += o.duration_s;
    in_step.push_back(std::move(o));
  }
  r.breakdown = breakdown_of(in_step, span);
  StepVariability v;
  v.step = chosen;
  std::vector<double> steady;
  for (std::size_t k = r.steps.size() > 1 ? 1 : 0; k < r.steps.size(); ++k) steady.push_back(r.steps[k].second);
  v.steady_steps = static_cast<long long>(steady.size());
  std::sort(steady.begin(), steady.end());
  v.min_s = steady.front();
  v.max_s = steady.back();
  v.median_s = steady.size() % 2 ? steady[steady.size() / 2] : 0.5 * (steady[steady.size() / 2 - 1] + steady[steady.size() / 2]);
  for (double s : steady) v.mean_s += s / static_cast<double>(steady.size());
  for (double s : steady) v.stddev_s += (s - v.mean_s) * (s - v.mean_s) / static_cast<double>(steady.size());
  v.stddev_s = std::sqrt(v.stddev_s);
  if (!busy.empty()) {
    auto [lo, hi] = std::minmax_element(busy.begin(), busy.end(), [](auto& a, auto& b) { return a.second < b.second; });
    v.fastest_rank = lo->first;
    v.rank_busy_min_s = lo->second;
    v.slowest_rank = hi->first;
    v.rank_busy_max_s = hi->second;
  }
  r.variability = v;
}

namespace {
nlohmann::json variability_json(const StepReport& r) {
  if (!r.variability) return nullptr;
  const StepVariability& v = *r.variability;
  return {{"breakdown_step", v.step},
          {"steady_steps", v.steady_steps},
          {"step_time_s", {{"median", v.median_s}, {"mean", v.mean_s}, {"stddev", v.stddev_s}, {"min", v.min_s}, {"max", v.max_s}}},
          {"rank_compute_busy_s", {{"min", v.rank_busy_min_s}, {"max", v.rank_busy_max_s}, {"fastest_rank", v.fastest_rank},
                                   {"slowest_rank", v.slowest_rank}}},
          {"rank_skew_s", v.rank_busy_max_s - v.rank_busy_min_s}};
}
}  // namespace

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
  json out = {{"schema", "ditwin.step_report/1"},
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
  if (r.variability) out["variability"] = variability_json(r);  // measured runs
  return out;
}

namespace {

// Perfetto keeps nanoseconds: times are rounded there once, start and end alike, so slices that
// touch stay touching and none ends past the next one's start. Trace times are microseconds with
// at most three decimals.
long long to_ns(double seconds) { return std::llround(seconds * 1e9); }
double ns_to_us(long long ns) { return static_cast<double>(ns) / 1000.0; }

// A rank's lanes: one per stream, plus extra lanes where work on one stream truly overlaps (the
// CPU executor's concurrent gradient all-reduces), each lane holding slices that never overlap.
struct Lanes {
  std::vector<std::vector<long long>> last_end;  // per stream, per lane: the end of its last slice
  int place(int stream, long long start, long long end) {
    auto& lanes = last_end[static_cast<std::size_t>(stream)];
    for (std::size_t k = 0; k < lanes.size(); ++k)
      if (lanes[k] <= start) {
        lanes[k] = end;
        return static_cast<int>(k);
      }
    lanes.push_back(end);
    return static_cast<int>(lanes.size() - 1);
  }
};
// tid of stream s's lane k: s + 1 for the first (the stream's own), 1000 (s + 1) + k beyond.
int lane_tid(int stream, int lane) { return lane == 0 ? stream + 1 : 1000 * (stream + 1) + lane; }

}  // namespace

nlohmann::json to_trace(const StepReport& r) {
  using nlohmann::json;
  json events = json::array();
  const auto& ops = r.timeline.empty() ? r.ops : r.timeline;
  std::vector<std::pair<double, double>> steps = r.steps;
  if (steps.empty()) steps.push_back({0.0, r.step_time_s});
  std::map<long long, int> stage_of;
  for (const auto& op : ops) stage_of[op.rank] = op.stage;
  // Rank r is pid r + 1 (Perfetto treats pid 0 specially), named "rank r" with the rank in args.
  for (const auto& [rank, stage] : stage_of) {
    const long long pid = rank + 1;
    events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", pid}, {"tid", 0},
                      {"args", {{"name", "rank " + std::to_string(rank)}, {"rank", rank}, {"stage", stage}}}});
    events.push_back({{"ph", "M"}, {"name", "process_labels"}, {"pid", pid}, {"tid", 0},
                      {"args", {{"labels", "stage " + std::to_string(stage)}}}});
    events.push_back({{"ph", "M"}, {"name", "process_sort_index"}, {"pid", pid}, {"tid", 0}, {"args", {{"sort_index", rank}}}});
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", 0}, {"args", {{"name", "step"}}}});
    for (int s = 0; s < stream_count; ++s)
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", s + 1},
                        {"args", {{"name", to_string(static_cast<Stream>(s))}}}});
    long long prev_end = std::numeric_limits<long long>::min();
    for (std::size_t k = 0; k < steps.size(); ++k) {
      long long a = std::max(to_ns(steps[k].first), prev_end), b = std::max(a, to_ns(steps[k].first + steps[k].second));
      prev_end = b;
      events.push_back({{"ph", "X"}, {"name", "ProfilerStep#" + std::to_string(k)}, {"pid", pid}, {"tid", 0},
                        {"ts", ns_to_us(a)}, {"dur", ns_to_us(b - a)}, {"cat", "step"}, {"args", {{"step", k}}}});
    }
  }
  // Slices by start on each rank, each onto the first lane of its stream that is free by then.
  std::vector<std::size_t> order(ops.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    if (ops[x].rank != ops[y].rank) return ops[x].rank < ops[y].rank;
    return to_ns(ops[x].start_s) < to_ns(ops[y].start_s);
  });
  std::map<long long, Lanes> lanes;
  std::set<std::pair<long long, int>> named;  // (pid, tid) of extra lanes already named
  for (std::size_t i : order) {
    const OpRecord& op = ops[i];
    const long long pid = op.rank + 1, start = to_ns(op.start_s), end = std::max(start, to_ns(op.start_s + op.duration_s));
    Lanes& l = lanes[op.rank];
    if (l.last_end.empty()) l.last_end.resize(stream_count);
    const int stream = static_cast<int>(op.stream), lane = l.place(stream, start, end), tid = lane_tid(stream, lane);
    if (lane > 0 && named.insert({pid, tid}).second) {
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", tid},
                        {"args", {{"name", std::string(to_string(op.stream)) + " (" + std::to_string(lane + 1) + ")"}}}});
      events.push_back({{"ph", "M"}, {"name", "thread_sort_index"}, {"pid", pid}, {"tid", tid}, {"args", {{"sort_index", tid}}}});
    }
    json args = {{"flops", op.flops}, {"bytes", op.bytes}, {"rank", op.rank}};
    if (op.duration_s > 0 && op.flops > 0) args["tflops_per_s"] = op.flops / op.duration_s / 1e12;
    if (op.duration_s > 0 && op.bytes > 0) args["gbytes_per_s"] = op.bytes / op.duration_s / 1e9;
    if (!op.deps.empty()) args["deps"] = op.deps;  // names, same rank: the viewer's dependency arrows
    events.push_back({{"ph", "X"}, {"name", op.name}, {"pid", pid}, {"tid", tid}, {"ts", ns_to_us(start)},
                      {"dur", ns_to_us(end - start)}, {"cat", to_string(op.kind)}, {"args", args}});
  }
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"},
          {"otherData", {{"source", r.source}, {"plan", r.plan}, {"step_time_s", r.step_time_s}, {"mfu", r.mfu}}}};
}

nlohmann::json to_run_trace(const std::string& title, const std::vector<RunEvent>& timeline, const nlohmann::json& other_data) {
  using nlohmann::json;
  std::vector<std::string> lanes = {"train", "checkpoint", "failure", "recovery", "rollback"};
  for (const auto& e : timeline)
    if (std::find(lanes.begin(), lanes.end(), e.category) == lanes.end()) lanes.push_back(e.category);
  json events = json::array();
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 1}, {"tid", 0}, {"args", {{"name", title}}}});
  for (std::size_t i = 0; i < lanes.size(); ++i)
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", static_cast<int>(i)}, {"args", {{"name", lanes[i]}}}});
  for (const auto& e : timeline) {
    const int tid = static_cast<int>(std::find(lanes.begin(), lanes.end(), e.category) - lanes.begin());
    const long long a = to_ns(e.start_s), b = std::max(a, to_ns(e.start_s + e.duration_s));
    if (e.duration_s > 0)
      events.push_back({{"ph", "X"}, {"name", e.name}, {"pid", 1}, {"tid", tid}, {"ts", ns_to_us(a)}, {"dur", ns_to_us(b - a)},
                        {"cat", e.category}});
    else
      events.push_back({{"ph", "i"}, {"s", "t"}, {"name", e.name}, {"pid", 1}, {"tid", tid}, {"ts", ns_to_us(a)}, {"cat", e.category}});
  }
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"}, {"otherData", other_data}};
}

std::vector<std::string> dep_names(const RankClass& cls, const Op& op) {
  std::vector<std::string> out;
  out.reserve(op.deps.size());
  for (std::uint32_t d : op.deps) out.push_back(cls.ops.at(d).name);
  return out;
}

std::vector<long long> trace_ranks(const StepReport& r) {
  std::set<long long> ranks;
  for (const auto& op : r.timeline.empty() ? r.ops : r.timeline) ranks.insert(op.rank);
  return {ranks.begin(), ranks.end()};
}

nlohmann::json to_kineto_trace(const StepReport& r, long long rank, long long as_rank) {
  if (as_rank < 0) as_rank = rank;
  using nlohmann::json;
  json events = json::array();
  const auto& all = r.timeline.empty() ? r.ops : r.timeline;
  std::vector<std::pair<double, double>> steps = r.steps;
  if (steps.empty()) steps.push_back({0.0, r.step_time_s});
  // HTA rounds to whole microseconds (start up, end down): writing whole microseconds from one
  // nanosecond grid keeps every slice's length >= 0 there and nesting intact for Perfetto.
  auto us = [](double seconds) { return static_cast<double>(std::llround(seconds * 1e6)); };
  const long long host = 1000000 + as_rank, gpu = as_rank + 1;  // never pid 0
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", host}, {"tid", 0}, {"args", {{"name", "rank " + std::to_string(as_rank) + " host"}}}});
  events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", host}, {"tid", 1}, {"args", {{"name", "scheduler"}}}});
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", gpu}, {"tid", 0}, {"args", {{"name", "rank " + std::to_string(as_rank) + " device"}}}});
  double prev_end = -1;
  for (std::size_t k = 0; k < steps.size(); ++k) {
    double a = std::max(us(steps[k].first), prev_end), b = std::max(a, us(steps[k].first + steps[k].second));
    prev_end = b;
    events.push_back({{"ph", "X"}, {"cat", "user_annotation"}, {"name", "ProfilerStep#" + std::to_string(k)}, {"pid", host},
                      {"tid", 1}, {"ts", a}, {"dur", b - a}});
  }
  std::vector<const OpRecord*> ops;
  for (const auto& op : all)
    if (op.rank == rank) ops.push_back(&op);
  std::stable_sort(ops.begin(), ops.end(), [](const OpRecord* x, const OpRecord* y) { return x->start_s < y->start_s; });
  Lanes lanes;
  lanes.last_end.resize(stream_count);
  std::set<int> named;
  long long correlation = 0;
  for (const OpRecord* op : ops) {
    const double start = us(op->start_s), end = std::max(start, us(op->start_s + op->duration_s));
    const int stream = static_cast<int>(op->stream), lane = lanes.place(stream, std::llround(start), std::llround(end));
    const int tid = lane_tid(stream, lane);  // >= 1: HTA gives stream 0 no iteration
    if (named.insert(tid).second)
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", gpu}, {"tid", tid},
                        {"args", {{"name", std::string("stream ") + to_string(op->stream) + (lane ? " (" + std::to_string(lane + 1) + ")" : "")}}}});
    ++correlation;
    // Communication kernels carry NCCL's name prefix (what HTA classifies by), then the op's name.
    std::string name = op->name;
    if (op->kind != OpKind::compute && op->kind != OpKind::optimizer)
      name = std::string("ncclDevKernel_") + (op->kind == OpKind::p2p ? "SendRecv" : to_string(op->collective)) + " " + op->name;
    events.push_back({{"ph", "X"}, {"cat", "cuda_runtime"}, {"name", "cudaLaunchKernel"}, {"pid", host}, {"tid", 1},
                      {"ts", start}, {"dur", 0}, {"args", {{"correlation", correlation}, {"External id", correlation}}}});
    json args = {{"stream", tid}, {"correlation", correlation}, {"External id", correlation}, {"device", as_rank},
                 {"flops", op->flops}, {"bytes", op->bytes}};
    events.push_back({{"ph", "X"}, {"cat", "kernel"}, {"name", name}, {"pid", gpu}, {"tid", tid}, {"ts", start},
                      {"dur", end - start}, {"args", args}});
  }
  // Keys sort alphabetically, so distributedInfo comes first in the file (HTA reads the rank
  // with a text search for the first "rank": N).
  return {{"schemaVersion", 1},
          {"distributedInfo", {{"backend", r.source == "measured" ? "mpi" : "nccl"}, {"rank", as_rank}, {"world_size", r.gpus}}},
          {"traceEvents", events},
          {"displayTimeUnit", "ms"},
          {"otherData", {{"source", r.source}, {"plan", r.plan}}}};
}

void write_kineto_traces(const StepReport& r, const std::string& dir, const Program* every_rank) {
  namespace fs = std::filesystem;
  require_writable_dir(dir, "--trace-dir");
  auto write = [&](long long rank, long long as_rank) {
    // Indented (one space): HTA's rank search needs the space a compact dump leaves out.
    write_json_file(to_kineto_trace(r, rank, as_rank), (fs::path(dir) / ("rank-" + std::to_string(as_rank) + ".json")).string(), 1);
  };
  if (!every_rank) {
    for (long long rank : trace_ranks(r)) write(rank, rank);
    return;
  }
  const auto rep = representative_of_stage(r);
  for (long long rank = 0; rank < every_rank->world(); ++rank) write(rep.at(every_rank->stage_of(rank)), rank);
}

std::map<int, long long> representative_of_stage(const StepReport& r) {
  std::map<int, long long> rep;
  for (const auto& op : r.timeline.empty() ? r.ops : r.timeline) {
    auto it = rep.find(op.stage);
    if (it == rep.end() || op.rank < it->second) rep[op.stage] = op.rank;
  }
  return rep;
}

StepReport with_every_rank(const StepReport& r, const Program& program, std::size_t max_ops) {
  if (!r.timeline.empty()) return r;  // measured: every rank is there already
  const auto rep = representative_of_stage(r);
  std::map<long long, std::vector<const OpRecord*>> by_rank;
  for (const auto& op : r.ops) by_rank[op.rank].push_back(&op);
  double total = 0;
  for (long long rank = 0; rank < program.world(); ++rank)
    total += static_cast<double>(by_rank[rep.at(program.stage_of(rank))].size());
  if (total > static_cast<double>(max_ops))
    throw InputError("--trace-ranks all: " + std::to_string(program.world()) + " ranks would make " +
                     std::to_string(static_cast<long long>(total)) + " slices in one trace (limit " + std::to_string(max_ops) +
                     "); write them one file per rank with --trace-dir, or leave --trace-ranks at representative");
  StepReport out = r;
  out.ops.clear();
  out.ops.reserve(static_cast<std::size_t>(total));
  for (long long rank = 0; rank < program.world(); ++rank)
    for (const OpRecord* op : by_rank[rep.at(program.stage_of(rank))]) {
      out.ops.push_back(*op);
      out.ops.back().rank = rank;
    }
  return out;
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

void require_writable_dir(const std::string& path, const std::string& option) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec || !fs::is_directory(path, ec))
    throw InputError(option + " " + path + ": cannot create the directory" + (ec ? " (" + ec.message() + ")" : ""));
  if (::access(path.c_str(), W_OK | X_OK) != 0) throw InputError(option + " " + path + ": cannot write in it (permission denied)");
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
