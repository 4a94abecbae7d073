// Op matching between a predicted and a measured trace.
#include "gui/compare_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

namespace ditwin::gui {

double OpDiff::relative_error() const {
  if (predicted_s > 0) return diff_s() / predicted_s;
  return measured_s > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

namespace {

struct Where {
  std::size_t process, track, slice;
};

// "pid \x1f name \x1f occurrence": the n-th op of that name on that rank, whatever its stream.
std::string key_of(long long pid, const std::string& name, int occurrence) {
  std::string k = std::to_string(pid);
  k += '\x1f';
  k += name;
  k += '\x1f';
  k += std::to_string(occurrence);
  return k;
}

std::vector<std::vector<std::vector<float>>> unmatched_errors(const Trace& t) {
  std::vector<std::vector<std::vector<float>>> e(t.processes.size());
  for (std::size_t p = 0; p < t.processes.size(); ++p) {
    e[p].resize(t.processes[p].tracks.size());
    for (std::size_t k = 0; k < t.processes[p].tracks.size(); ++k)
      e[p][k].assign(t.processes[p].tracks[k].slices.size(), std::numeric_limits<float>::quiet_NaN());
  }
  return e;
}

}  // namespace

Comparison compare(const Trace& predicted, const Trace& measured) {
  Comparison c;
  c.predicted_error = unmatched_errors(predicted);
  c.measured_error = unmatched_errors(measured);

  // Occurrences are counted in start order across a rank's streams.
  auto index = [](const Trace& t) {
    std::unordered_map<std::string, Where> out;
    for (std::size_t p = 0; p < t.processes.size(); ++p) {
      std::vector<Where> all;
      for (std::size_t k = 0; k < t.processes[p].tracks.size(); ++k)
        for (std::size_t s = 0; s < t.processes[p].tracks[k].slices.size(); ++s) all.push_back({p, k, s});
      auto start = [&](const Where& w) { return t.processes[w.process].tracks[w.track].slices[w.slice].start_s; };
      std::stable_sort(all.begin(), all.end(), [&](const Where& a, const Where& b) { return start(a) < start(b); });
      std::unordered_map<std::int32_t, int> seen;
      for (const auto& w : all) {
        const Slice& s = t.processes[p].tracks[w.track].slices[w.slice];
        out.emplace(key_of(t.processes[p].pid, t.name_of(s), seen[s.name]++), w);
      }
    }
    return out;
  };
  auto pred = index(predicted);
  auto meas = index(measured);

  for (const auto& [key, w] : pred) {
    auto it = meas.find(key);
    if (it == meas.end()) {
      ++c.unmatched_predicted;
      continue;
    }
    const Where& m = it->second;
    const Process& pp = predicted.processes[w.process];
    const Slice& ps = pp.tracks[w.track].slices[w.slice];
    const Slice& ms = measured.processes[m.process].tracks[m.track].slices[m.slice];
    OpDiff d{predicted.name_of(ps), pp.pid, pp.tracks[w.track].tid, ps.start_s, ps.duration_s, ms.start_s, ms.duration_s, pp.rank};
    auto err = static_cast<float>(d.relative_error());
    c.predicted_error[w.process][w.track][w.slice] = err;
    c.measured_error[m.process][m.track][m.slice] = err;
    c.diffs.push_back(std::move(d));
  }
  c.unmatched_measured = meas.size() - c.diffs.size();
  std::sort(c.diffs.begin(), c.diffs.end(), [](const OpDiff& a, const OpDiff& b) {
    double x = std::fabs(a.diff_s()), y = std::fabs(b.diff_s());
    return x > y || (x == y && (a.pid < b.pid || (a.pid == b.pid && a.name < b.name)));
  });
  return c;
}

}  // namespace ditwin::gui
