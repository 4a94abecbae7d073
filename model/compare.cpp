// ditwin compare: lines a prediction up against a measurement.
#include "model/compare.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <vector>

#include "model/errors.hpp"
#include "model/plan.hpp"

namespace ditwin {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string family_of(const std::string& name) {
  std::string f = name.substr(0, name.rfind(".mb"));
  std::size_t dot = f.find('.');
  if (f.size() > 1 && f[0] == 'L' && std::isdigit(static_cast<unsigned char>(f[1])) && dot != std::string::npos)
    f = "L*" + f.substr(dot);
  return f;
}

}  // namespace

RunTimes read_run_times(const std::string& path, long long step) {
  nlohmann::json j = read_json_file(path);
  RunTimes t;
  t.path = path;
  try {
    if (j.is_object() && j.value("schema", "") == "ditwin.step_report/1") {
      t.source = j.at("source").get<std::string>();
      t.plan = j.at("plan").get<std::string>();
      t.step_time_s = j.at("step_time_s").get<double>();
      long long lowest = -1;
      for (const auto& op : j.at("ops")) lowest = lowest < 0 ? op.at("rank").get<long long>() : std::min(lowest, op.at("rank").get<long long>());
      for (const auto& op : j.at("ops")) {
        long long rank = op.at("rank").get<long long>();
        std::string name = op.at("name").get<std::string>();
        double seconds = op.at("duration_s").get<double>();
        if (!std::isfinite(seconds) || seconds < 0)
          throw InputError(path + ": op " + name + " has duration_s " + std::to_string(seconds) + " (must be a non-negative number)");
        t.op_seconds[rank == lowest ? name : name + " @rank " + std::to_string(rank)] = seconds;
        auto& b = t.busy[rank];
        b.stage = op.value("stage", 0);
        if (op.value("stream", "compute") == "compute") b.compute_s += seconds;
      }
      return t;
    }
    if (j.is_object() && j.contains("traceEvents")) {
      const auto& other = j.value("otherData", nlohmann::json::object());
      t.source = other.value("source", "unknown");
      t.plan = other.value("plan", "");
      std::vector<TraceOp> ops;
      std::vector<TraceStep> steps;
      read_trace_ops(j, path, ops, steps);
      if (steps.empty()) throw InputError(path + ": the trace has no ProfilerStep# slices");
      // One step of the lowest rank, matched against itself: the same selection as the GUI's.
      StepMatch self = match_step(ops, steps, step, ops, steps, step);
      t.step_time_s = self.measured_step_s;
      t.step = self.measured_step;
      long long lowest = steps.front().rank;
      for (const auto& s : steps) lowest = std::min(lowest, s.rank);
      std::map<std::string, int> seen;
      std::vector<OpPair> pairs = self.pairs;
      std::sort(pairs.begin(), pairs.end(), [](const OpPair& a, const OpPair& b) { return a.measured_start_s < b.measured_start_s; });
      for (const auto& p : pairs) {
        if (p.rank != lowest) continue;
        int n = seen[p.name]++;
        t.op_seconds[n == 0 ? p.name : p.name + " #" + std::to_string(n + 1)] = p.measured_s;
      }
      return t;
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": not a ditwin report or trace (" + e.what() + ")");
  }
  throw InputError(path + ": neither a ditwin report (\"schema\": \"ditwin.step_report/1\") nor a trace (\"traceEvents\")");
}

void read_trace_ops(const nlohmann::json& j, const std::string& path, std::vector<TraceOp>& ops, std::vector<TraceStep>& steps) {
  try {
    const auto& events = j.at("traceEvents");
    std::map<long long, long long> rank_of;  // pid -> process_name's args.rank
    for (const auto& e : events)
      if (e.value("ph", "") == "M" && e.value("name", "") == "process_name" && e.contains("args") && e["args"].contains("rank"))
        rank_of[e.at("pid").get<long long>()] = e["args"]["rank"].get<long long>();
    for (std::size_t i = 0; i < events.size(); ++i) {
      const auto& e = events[i];
      if (e.value("ph", "") != "X") continue;
      const long long pid = e.at("pid").get<long long>();
      auto r = rank_of.find(pid);
      const long long rank = r == rank_of.end() ? pid : r->second;
      std::string name = e.at("name").get<std::string>();
      double ts = e.at("ts").get<double>() * 1e-6, dur = e.at("dur").get<double>() * 1e-6;
      if (!std::isfinite(dur) || dur < 0 || !std::isfinite(ts))
        throw InputError(path + ": traceEvents[" + std::to_string(i) + "] (" + name + ") has ts " + e["ts"].dump() + ", dur " +
                         e["dur"].dump() + " (must be finite, dur non-negative)");
      if (name.rfind("ProfilerStep#", 0) == 0) {
        long long n = 0;
        try {
          n = std::stoll(name.substr(13));
        } catch (const std::exception&) {
          throw InputError(path + ": traceEvents[" + std::to_string(i) + "]: step slice \"" + name + "\" has no step number");
        }
        steps.push_back({rank, n, ts, dur});
      } else {
        ops.push_back({rank, std::move(name), ts, dur, static_cast<std::uint64_t>(i)});
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": not a trace (" + e.what() + ")");
  }
}

long long default_step(const std::vector<TraceStep>& steps) {
  if (steps.empty()) return -1;
  long long lowest = steps.front().rank;
  for (const auto& s : steps) lowest = std::min(lowest, s.rank);
  std::vector<const TraceStep*> mine;
  for (const auto& s : steps)
    if (s.rank == lowest) mine.push_back(&s);
  std::sort(mine.begin(), mine.end(), [](const TraceStep* a, const TraceStep* b) { return a->step < b->step; });
  if (mine.size() > 1) mine.erase(mine.begin());  // the warm-up
  std::stable_sort(mine.begin(), mine.end(), [](const TraceStep* a, const TraceStep* b) { return a->duration_s < b->duration_s; });
  return mine[(mine.size() - 1) / 2]->step;  // the lower median: a step that ran
}

std::string matching_name(const std::string& name) {
  for (const char* tail : {" (attempt ", " (straggler)"}) {
    auto at = name.rfind(tail);
    if (at != std::string::npos && !name.empty() && name.back() == ')') return name.substr(0, at);
  }
  return name;
}

double OpPair::error() const {
  if (measured_s > 0) return predicted_s / measured_s - 1;
  return predicted_s > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

namespace {

// The ops of `step` per rank (indices into ops, start order) and the lowest rank's step length.
struct Selected {
  std::map<long long, std::vector<std::size_t>> by_rank;
  std::map<long long, double> step_start;
  double step_s = 0;
  long long step = -1;
};
Selected select_step(const std::vector<TraceOp>& ops, const std::vector<TraceStep>& steps, long long step, const char* which) {
  Selected out;
  if (steps.empty()) {  // a long run: the whole trace
    for (std::size_t i = 0; i < ops.size(); ++i) out.by_rank[ops[i].rank].push_back(i);
    double end = 0;
    for (const auto& o : ops) end = std::max(end, o.start_s + o.duration_s);
    out.step_s = end;
  } else {
    out.step = step < 0 ? default_step(steps) : step;
    std::map<long long, std::pair<double, double>> window;
    long long lowest = -1, first = -1, last = -1;
    for (const auto& s : steps) {
      first = first < 0 ? s.step : std::min(first, s.step);
      last = std::max(last, s.step);
      if (s.step != out.step) continue;
      window[s.rank] = {s.start_s, s.start_s + s.duration_s};
      if (lowest < 0 || s.rank < lowest) {
        lowest = s.rank;
        out.step_s = s.duration_s;
      }
    }
    if (window.empty())
      throw InputError(std::string("the ") + which + " trace has no step " + std::to_string(out.step) + " (its steps are " +
                       std::to_string(first) + ".." + std::to_string(last) + ")");
    for (std::size_t i = 0; i < ops.size(); ++i) {
      auto w = window.find(ops[i].rank);
      if (w == window.end() || ops[i].start_s < w->second.first || ops[i].start_s >= w->second.second) continue;
      out.by_rank[ops[i].rank].push_back(i);
    }
    for (const auto& [rank, w] : window) out.step_start[rank] = w.first;
  }
  for (auto& [rank, list] : out.by_rank)
    std::stable_sort(list.begin(), list.end(), [&](std::size_t a, std::size_t b) { return ops[a].start_s < ops[b].start_s; });
  return out;
}

}  // namespace

StepMatch match_step(const std::vector<TraceOp>& pops, const std::vector<TraceStep>& psteps, long long pstep,
                     const std::vector<TraceOp>& mops, const std::vector<TraceStep>& msteps, long long mstep) {
  StepMatch m;
  Selected p = select_step(pops, psteps, pstep, "predicted"), q = select_step(mops, msteps, mstep, "measured");
  m.predicted_step = p.step;
  m.measured_step = q.step;
  m.predicted_step_s = p.step_s;
  m.measured_step_s = q.step_s;
  std::size_t measured_total = 0;
  for (const auto& [rank, list] : q.by_rank) measured_total += list.size();
  for (const auto& [rank, plist] : p.by_rank) {
    auto qit = q.by_rank.find(rank);
    std::map<std::pair<std::string, int>, std::size_t> theirs;
    if (qit != q.by_rank.end()) {
      std::map<std::string, int> seen;
      for (std::size_t i : qit->second) {
        std::string n = matching_name(mops[i].name);
        int k = seen[n]++;
        theirs.emplace(std::make_pair(std::move(n), k), i);
      }
    }
    const double p0 = p.step_start.count(rank) ? p.step_start.at(rank) : 0;
    const double q0 = q.step_start.count(rank) ? q.step_start.at(rank) : 0;
    std::map<std::string, int> seen;
    for (std::size_t i : plist) {
      std::string n = matching_name(pops[i].name);
      int k = seen[n]++;
      auto it = theirs.find({n, k});
      if (it == theirs.end()) {
        ++m.only_predicted;
        continue;
      }
      const TraceOp& a = pops[i];
      const TraceOp& b = mops[it->second];
      m.pairs.push_back({rank, n, a.start_s - p0, a.duration_s, b.start_s - q0, b.duration_s, a.tag, b.tag});
    }
  }
  m.only_measured = measured_total - m.pairs.size();
  std::stable_sort(m.pairs.begin(), m.pairs.end(), [](const OpPair& a, const OpPair& b) {
    return std::fabs(a.predicted_s - a.measured_s) > std::fabs(b.predicted_s - b.measured_s);
  });
  return m;
}

nlohmann::json compare_runs(const RunTimes& p, const RunTimes& m, int top) {
  using nlohmann::json;
  if (!(m.step_time_s > 0)) throw InputError(m.path + ": measured step time is not positive");
  json out;
  out["predicted"] = {{"path", p.path}, {"source", p.source}, {"plan", p.plan}, {"step_time_s", p.step_time_s}};
  out["measured"] = {{"path", m.path}, {"source", m.source}, {"plan", m.plan}, {"step_time_s", m.step_time_s}};
  if (p.step >= 0) out["predicted"]["step"] = p.step;
  if (m.step >= 0) out["measured"]["step"] = m.step;
  out["step_time_error"] = p.step_time_s / m.step_time_s - 1;
  if (!p.plan.empty() && !m.plan.empty() && p.plan != m.plan)
    out["warning"] = "the two runs are of different plans (" + p.plan + " vs " + m.plan + ")";
  struct Row { std::string name; double predicted, measured; };
  std::vector<Row> rows;
  std::map<std::string, std::pair<double, double>> families;
  int only_predicted = 0, only_measured = 0;
  for (const auto& [name, pred] : p.op_seconds) {
    auto it = m.op_seconds.find(name);
    if (it == m.op_seconds.end()) {
      ++only_predicted;
      continue;
    }
    rows.push_back({name, pred, it->second});
    auto& f = families[family_of(name)];
    f.first += pred;
    f.second += it->second;
  }
  for (const auto& [name, meas] : m.op_seconds)
    if (!p.op_seconds.count(name)) ++only_measured;
  auto by_gap = [](const Row& a, const Row& b) {
    return std::fabs(a.predicted - a.measured) > std::fabs(b.predicted - b.measured);
  };
  std::sort(rows.begin(), rows.end(), by_gap);
  json ops = json::array();
  for (int i = 0; i < static_cast<int>(rows.size()) && i < top; ++i) {
    const auto& r = rows[i];
    ops.push_back({{"name", r.name}, {"predicted_s", r.predicted}, {"measured_s", r.measured},
                   {"difference_s", r.predicted - r.measured},
                   {"error", r.measured > 0 ? r.predicted / r.measured - 1 : 0.0}});
  }
  std::vector<Row> fam;
  for (const auto& [name, v] : families) fam.push_back({name, v.first, v.second});
  std::sort(fam.begin(), fam.end(), by_gap);
  json families_json = json::array();
  for (const auto& r : fam)
    families_json.push_back({{"family", r.name}, {"predicted_s", r.predicted}, {"measured_s", r.measured},
                             {"difference_s", r.predicted - r.measured},
                             {"error", r.measured > 0 ? r.predicted / r.measured - 1 : 0.0}});
  out["ops"] = ops;
  out["families"] = families_json;
  // Pipeline stages: the share of the step each stage's compute stream stands idle.
  if (p.busy.size() > 1 || m.busy.size() > 1) {
    json stages = json::array();
    for (const auto& [rank, pb] : p.busy) {
      auto it = m.busy.find(rank);
      if (it == m.busy.end() || !(p.step_time_s > 0)) continue;
      double pi = std::max(0.0, 1 - pb.compute_s / p.step_time_s), mi = std::max(0.0, 1 - it->second.compute_s / m.step_time_s);
      stages.push_back({{"stage", pb.stage}, {"rank", rank}, {"predicted_idle_share", pi}, {"measured_idle_share", mi},
                        {"difference_points", 100 * (pi - mi)}});
    }
    out["stages"] = stages;
  }
  out["matched_ops"] = rows.size();
  out["only_predicted_ops"] = only_predicted;
  out["only_measured_ops"] = only_measured;
  return out;
}

bool is_longrun_report(const nlohmann::json& j) {
  return j.is_object() && j.value("schema", "") == "ditwin.longrun_report/1";
}

nlohmann::json compare_longruns(const nlohmann::json& p, const nlohmann::json& m, const std::string& p_path,
                                const std::string& m_path) {
  using nlohmann::json;
  auto pick = [](const json& r, const std::string& path) {
    try {
      json out;
      out["path"] = path;
      out["source"] = r.value("source", "predicted");
      out["plan"] = r.value("plan", "");
      out["ettr"] = r.at("ettr").at("mean").get<double>();
      double wall = r.contains("wall_s") ? r["wall_s"].get<double>() : r.at("wall_days").at("mean").get<double>() * 86400;
      out["wall_s"] = wall;
      out["interruptions"] = r.contains("interruptions") ? r["interruptions"].get<double>()
                                                         : r.value("interruptions_per_day", 0.0) * wall / 86400;
      json lost = json::object();
      for (const auto& [k, v] : r.at("lost_hours_by_cause").items()) lost[k] = v.get<double>() * 3600;
      out["lost_s"] = lost;
      out["productive_s"] = r.contains("productive_s") ? r["productive_s"].get<double>() : out["ettr"].get<double>() * wall;
      return out;
    } catch (const json::exception& e) {
      throw InputError(path + ": not a complete long-run report (" + e.what() + ")");
    }
  };
  json a = pick(p, p_path), b = pick(m, m_path);
  json out = {{"kind", "longrun"}, {"predicted", a}, {"measured", b}};
  out["ettr_difference"] = a["ettr"].get<double>() - b["ettr"].get<double>();
  if (!a["plan"].get<std::string>().empty() && !b["plan"].get<std::string>().empty() && a["plan"] != b["plan"])
    out["warning"] = "the two runs are of different plans (" + a["plan"].get<std::string>() + " vs " + b["plan"].get<std::string>() + ")";
  json rows = json::array();
  auto row = [&](const std::string& name, double pv, double mv) {
    rows.push_back({{"what", name}, {"predicted_s", pv}, {"measured_s", mv}, {"difference_s", pv - mv}});
  };
  row("wall", a["wall_s"], b["wall_s"]);
  row("productive", a["productive_s"], b["productive_s"]);
  for (const auto& [k, v] : a["lost_s"].items()) row("lost: " + k, v, b["lost_s"].value(k, 0.0));
  out["rows"] = rows;
  return out;
}

std::string format_longrun_comparison(const nlohmann::json& c) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "ETTR        predicted %.2f%%   measured %.2f%%   difference %+.2f points\n",
                100 * c["predicted"]["ettr"].get<double>(), 100 * c["measured"]["ettr"].get<double>(),
                100 * c["ettr_difference"].get<double>());
  os << line;
  std::snprintf(line, sizeof line, "interruptions predicted %.0f   measured %.0f\n", c["predicted"]["interruptions"].get<double>(),
                c["measured"]["interruptions"].get<double>());
  os << line;
  if (c.contains("warning")) os << "warning: " << c["warning"].get<std::string>() << "\n";
  std::snprintf(line, sizeof line, "  %-28s %12s %12s %12s\n", "time", "predicted s", "measured s", "difference");
  os << line;
  for (const auto& r : c["rows"]) {
    std::snprintf(line, sizeof line, "  %-28s %12.3f %12.3f %+12.3f\n", r["what"].get<std::string>().c_str(),
                  r["predicted_s"].get<double>(), r["measured_s"].get<double>(), r["difference_s"].get<double>());
    os << line;
  }
  return os.str();
}

std::string format_comparison(const nlohmann::json& c) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "step time   predicted %.3f ms   measured %.3f ms   error %+.1f%%\n",
                1e3 * c["predicted"]["step_time_s"].get<double>(), 1e3 * c["measured"]["step_time_s"].get<double>(),
                100 * c["step_time_error"].get<double>());
  os << line;
  if (c["measured"].contains("step"))
    os << "            (the measured trace's step " << c["measured"]["step"].get<long long>()
       << (c["measured"].contains("step_chosen") ? "" : ": the median steady-state step; --step N picks another") << ")\n";
  if (c.contains("warning")) os << "warning: " << c["warning"].get<std::string>() << "\n";
  if (c.contains("stages")) {
    os << "pipeline stages: idle share of the step (bubble + exposed communication)\n";
    for (const auto& st : c["stages"]) {
      std::snprintf(line, sizeof line, "  stage %-3d (rank %-4lld) predicted %5.1f%%   measured %5.1f%%   %+5.1f points\n",
                    st["stage"].get<int>(), st["rank"].get<long long>(), 100 * st["predicted_idle_share"].get<double>(),
                    100 * st["measured_idle_share"].get<double>(), st["difference_points"].get<double>());
      os << line;
    }
  }
  os << c["matched_ops"] << " ops matched by name (" << c["only_predicted_ops"] << " only predicted, "
     << c["only_measured_ops"] << " only measured)\n\nop families, largest gap first (summed over micro-batches and layers)\n";
  std::snprintf(line, sizeof line, "  %-34s %12s %12s %8s\n", "family", "predicted ms", "measured ms", "error");
  os << line;
  int shown = 0;
  for (const auto& f : c["families"]) {
    if (++shown > 12) break;
    std::snprintf(line, sizeof line, "  %-34s %12.3f %12.3f %+7.1f%%\n", f["family"].get<std::string>().c_str(),
                  1e3 * f["predicted_s"].get<double>(), 1e3 * f["measured_s"].get<double>(), 100 * f["error"].get<double>());
    os << line;
  }
  return os.str();
}

}  // namespace ditwin
