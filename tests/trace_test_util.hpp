// The rules real trace tools apply to a Chrome trace, as a test checks them: Perfetto rounds ts and
// dur to whole nanoseconds and drops a complete event that partly overlaps the open one on its
// (pid, tid); pid 0 is special there; every process and every lane with slices has a name.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace ditwin::test {

struct TraceRules {
  std::size_t slices = 0, dropped = 0, on_pid0 = 0, unnamed_processes = 0, unnamed_lanes = 0;
  bool ok() const { return slices > 0 && dropped == 0 && on_pid0 == 0 && unnamed_processes == 0 && unnamed_lanes == 0; }
  std::string describe() const {
    return std::to_string(slices) + " slices, " + std::to_string(dropped) + " partial overlaps, " + std::to_string(on_pid0) +
           " on pid 0, " + std::to_string(unnamed_processes) + " unnamed processes, " + std::to_string(unnamed_lanes) +
           " unnamed lanes";
  }
};

inline TraceRules trace_rules(const nlohmann::json& trace) {
  const auto& events = trace.is_object() ? trace.at("traceEvents") : trace;
  std::map<std::pair<long long, long long>, std::vector<std::pair<long long, long long>>> lanes;
  std::set<long long> process_names;
  std::set<std::pair<long long, long long>> lane_names;
  TraceRules r;
  for (const auto& e : events) {
    const std::string ph = e.value("ph", "");
    if (ph == "M" && e.value("name", "") == "process_name") process_names.insert(e.at("pid").get<long long>());
    if (ph == "M" && e.value("name", "") == "thread_name")
      lane_names.insert({e.at("pid").get<long long>(), e.at("tid").get<long long>()});
    if (ph != "X") continue;
    const long long pid = e.at("pid").get<long long>(), tid = e.at("tid").get<long long>();
    if (pid == 0) ++r.on_pid0;
    lanes[{pid, tid}].push_back({std::llround(e.at("ts").get<double>() * 1000), std::llround(e.value("dur", 0.0) * 1000)});
  }
  std::set<long long> pids;
  for (auto& [lane, v] : lanes) {
    pids.insert(lane.first);
    if (!lane_names.count(lane)) ++r.unnamed_lanes;
    std::sort(v.begin(), v.end(), [](auto a, auto b) { return a.first < b.first || (a.first == b.first && a.second > b.second); });
    std::vector<long long> open;  // ends of the enclosing slices
    for (auto [ts, dur] : v) {
      ++r.slices;
      while (!open.empty() && open.back() <= ts) open.pop_back();
      if (!open.empty() && ts + dur > open.back()) {
        ++r.dropped;
        continue;
      }
      open.push_back(ts + dur);
    }
  }
  for (long long p : pids)
    if (!process_names.count(p)) ++r.unnamed_processes;
  return r;
}

}  // namespace ditwin::test
