// Op matching between a predicted and a measured trace, by model/compare's rules.
#include "gui/compare_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ditwin::gui {

double OpDiff::error() const {
  if (measured_s > 0) return predicted_s / measured_s - 1;
  return predicted_s > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

namespace {

std::vector<std::vector<std::vector<float>>> uncompared(const Trace& t) {
  std::vector<std::vector<std::vector<float>>> e(t.processes.size());
  for (std::size_t p = 0; p < t.processes.size(); ++p) {
    e[p].resize(t.processes[p].tracks.size());
    for (std::size_t k = 0; k < t.processes[p].tracks.size(); ++k)
      e[p][k].assign(t.processes[p].tracks[k].slices.size(), std::numeric_limits<float>::quiet_NaN());
  }
  return e;
}

}  // namespace

void trace_ops(const Trace& t, std::vector<TraceOp>& ops, std::vector<TraceStep>& steps, std::vector<SliceRef>& where) {
  for (std::size_t p = 0; p < t.processes.size(); ++p) {
    const Process& pr = t.processes[p];
    for (std::size_t k = 0; k < pr.tracks.size(); ++k)
      for (std::size_t s = 0; s < pr.tracks[k].slices.size(); ++s) {
        const Slice& sl = pr.tracks[k].slices[s];
        if (sl.instant) continue;
        const std::string& name = t.name_of(sl);
        if (name.rfind("ProfilerStep#", 0) == 0) {
          char* end = nullptr;
          long long n = std::strtoll(name.c_str() + 13, &end, 10);
          if (end && *end == '\0') {
            steps.push_back({pr.rank, n, sl.start_s, sl.duration_s});
            continue;
          }
        }
        ops.push_back({pr.rank, name, sl.start_s, sl.duration_s, where.size()});
        where.push_back({p, k, s});
      }
  }
}

Trace shifted(const Trace& t, double by) {
  Trace out = t;
  if (by == 0) return out;
  for (auto& p : out.processes)
    for (auto& tr : p.tracks) {
      for (auto& s : tr.slices) s.start_s += by;
      for (auto& e : tr.max_end_s) e += by;
    }
  out.start_s += by;
  out.end_s += by;
  return out;
}

Comparison compare(const Trace& predicted, const Trace& measured, long long measured_step) {
  Comparison c;
  c.predicted_error = uncompared(predicted);
  c.measured_error = uncompared(measured);
  std::vector<TraceOp> pops, mops;
  std::vector<TraceStep> psteps, msteps;
  std::vector<SliceRef> pwhere, mwhere;
  trace_ops(predicted, pops, psteps, pwhere);
  trace_ops(measured, mops, msteps, mwhere);
  // A long run's trace has no steps: both are then compared whole.
  if (psteps.empty() != msteps.empty()) {
    if (psteps.empty()) msteps.clear();
    else psteps.clear();
  }
  if (!msteps.empty()) {
    long long lowest = msteps.front().rank;
    for (const auto& s : msteps) lowest = std::min(lowest, s.rank);
    for (const auto& s : msteps)
      if (s.rank == lowest) c.measured_steps.push_back(s);
    std::sort(c.measured_steps.begin(), c.measured_steps.end(), [](const TraceStep& a, const TraceStep& b) { return a.step < b.step; });
    c.default_measured_step = default_step(msteps);
  }
  StepMatch m = match_step(pops, psteps, -1, mops, msteps, measured_step);
  c.predicted_step = m.predicted_step;
  c.measured_step = m.measured_step;
  c.predicted_step_s = m.predicted_step_s;
  c.measured_step_s = m.measured_step_s;
  auto start_of = [](const std::vector<TraceStep>& steps, long long step) {
    const TraceStep* best = nullptr;
    for (const auto& s : steps)
      if (s.step == step && (!best || s.rank < best->rank)) best = &s;
    return best ? best->start_s : 0.0;
  };
  c.predicted_step_start_s = start_of(psteps, m.predicted_step);
  c.measured_step_start_s = start_of(msteps, m.measured_step);
  c.unmatched_predicted = m.only_predicted;
  c.unmatched_measured = m.only_measured;
  for (const OpPair& pair : m.pairs) {
    const SliceRef& a = pwhere[pair.predicted_tag];
    const SliceRef& b = mwhere[pair.measured_tag];
    const Process& pp = predicted.processes[a.process];
    OpDiff d{pair.name, pp.pid, pp.tracks[a.track].tid, pair.predicted_start_s, pair.predicted_s,
             pair.measured_start_s, pair.measured_s, pair.rank};
    const auto err = static_cast<float>(pair.error());
    c.predicted_error[a.process][a.track][a.slice] = err;
    c.measured_error[b.process][b.track][b.slice] = err;
    c.diffs.push_back(std::move(d));
  }
  return c;
}

}  // namespace ditwin::gui
