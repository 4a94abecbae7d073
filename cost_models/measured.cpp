// Interpolation in measured tables.
#include "cost_models/measured.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "model/errors.hpp"

namespace ditwin::cost {

namespace {

// Position of x on a sorted axis: the lower index and the weight of the upper one, in log space,
// clamped to the axis.
std::pair<std::size_t, double> locate(const std::vector<double>& axis, double x) {
  if (axis.size() == 1 || x <= axis.front()) return {0, 0.0};
  if (x >= axis.back()) return {axis.size() - 2, 1.0};
  std::size_t i = static_cast<std::size_t>(std::upper_bound(axis.begin(), axis.end(), x) - axis.begin()) - 1;
  double w = (std::log(x) - std::log(axis[i])) / (std::log(axis[i + 1]) - std::log(axis[i]));
  return {i, w};
}

const char* collective_key(Collective c) {
  switch (c) {
    case Collective::all_reduce: return "all_reduce";
    case Collective::all_gather: return "all_gather";
    case Collective::reduce_scatter: return "reduce_scatter";
    default: return nullptr;
  }
}

}  // namespace

double measured_gemm_s(const MeasuredTables& t, double m, double k, double n, bool backward, double flops) {
  auto [im, wm] = locate(t.ms, std::max(m, 1.0));
  auto [ik, wk] = locate(t.ks, std::max(k, 1.0));
  auto [in, wn] = locate(t.ns, std::max(n, 1.0));
  std::size_t nk = t.ks.size(), nn = t.ns.size();
  double log_rate = 0;
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < 2; ++c) {
        double w = (a ? wm : 1 - wm) * (b ? wk : 1 - wk) * (c ? wn : 1 - wn);
        if (w == 0) continue;
        std::size_t i = std::min(im + a, t.ms.size() - 1), j = std::min(ik + b, nk - 1), l = std::min(in + c, nn - 1);
        const GemmSample& s = t.gemm[(i * nk + j) * nn + l];
        double sample_flops = (backward ? 4.0 : 2.0) * s.m * s.k * s.n;
        log_rate += w * std::log(sample_flops / (backward ? s.backward_s : s.forward_s));
      }
  return flops / std::exp(log_rate);
}

namespace {
// Log-log interpolation between sizes; below the smallest its time, beyond the largest its rate.
double interpolate_sizes(const std::vector<CollectiveSample>& v, double bytes) {
  if (bytes <= 0) return 0;
  if (bytes <= v.front().bytes) return v.front().seconds;  // latency-bound below the smallest
  if (bytes >= v.back().bytes) return v.back().seconds * bytes / v.back().bytes;
  std::size_t i = 0;
  while (v[i + 1].bytes < bytes) ++i;
  double w = (std::log(bytes) - std::log(v[i].bytes)) / (std::log(v[i + 1].bytes) - std::log(v[i].bytes));
  return std::exp((1 - w) * std::log(v[i].seconds) + w * std::log(v[i + 1].seconds));
}
}  // namespace

double measured_collective_s(const MeasuredTables& t, Collective c, int ranks, double bytes) {
  if (ranks != t.collective_ranks) return -1;
  auto it = t.collectives.find(c);
  if (it == t.collectives.end() || it->second.empty()) return -1;
  return interpolate_sizes(it->second, bytes);
}

double measured_p2p_s(const MeasuredTables& t, double bytes) {
  if (t.p2p.empty()) return -1;
  return interpolate_sizes(t.p2p, bytes);
}

MeasuredTables measured_tables_from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) { throw InputError(where + ": " + what); };
  auto positive = [&](const nlohmann::json& e, const char* key, const std::string& at) {
    if (!e.is_object() || !e.contains(key) || !e[key].is_number() || !(e[key].get<double>() > 0))
      fail(at + "." + key + ": must be a number > 0");
    return e[key].get<double>();
  };
  MeasuredTables t;
  if (!j.is_object()) fail("must be an object with \"gemm\" and \"collectives\"");
  for (const auto& [key, value] : j.items())
    if (key != "gemm" && key != "collectives" && key != "p2p") fail(key + ": unknown key (expected gemm, collectives, p2p)");
  if (j.contains("gemm")) {
    if (!j["gemm"].is_array()) fail("gemm: must be an array");
    std::set<double> ms, ks, ns;
    for (std::size_t i = 0; i < j["gemm"].size(); ++i) {
      const auto& e = j["gemm"][i];
      std::string at = "gemm[" + std::to_string(i) + "]";
      GemmSample s{positive(e, "m", at), positive(e, "k", at), positive(e, "n", at), positive(e, "forward_s", at),
                   positive(e, "backward_s", at)};
      ms.insert(s.m);
      ks.insert(s.k);
      ns.insert(s.n);
      t.gemm.push_back(s);
    }
    t.ms.assign(ms.begin(), ms.end());
    t.ks.assign(ks.begin(), ks.end());
    t.ns.assign(ns.begin(), ns.end());
    if (t.gemm.size() != t.ms.size() * t.ks.size() * t.ns.size())
      fail("gemm: " + std::to_string(t.gemm.size()) + " entries do not form a full grid over " +
           std::to_string(t.ms.size()) + " m x " + std::to_string(t.ks.size()) + " k x " + std::to_string(t.ns.size()) +
           " n values");
    auto index = [&](const std::vector<double>& axis, double x) {
      return static_cast<std::size_t>(std::lower_bound(axis.begin(), axis.end(), x) - axis.begin());
    };
    std::vector<GemmSample> grid(t.gemm.size());
    std::vector<bool> seen(t.gemm.size(), false);
    for (const auto& s : t.gemm) {
      std::size_t at = (index(t.ms, s.m) * t.ks.size() + index(t.ks, s.k)) * t.ns.size() + index(t.ns, s.n);
      if (seen[at]) fail("gemm: shape m=" + std::to_string(s.m) + " k=" + std::to_string(s.k) + " n=" + std::to_string(s.n) + " appears twice");
      seen[at] = true;
      grid[at] = s;
    }
    t.gemm = std::move(grid);
  }
  if (j.contains("collectives")) {
    const auto& c = j["collectives"];
    if (!c.is_object()) fail("collectives: must be an object");
    for (const auto& [key, value] : c.items()) {
      if (key == "ranks") {
        if (!value.is_number_integer() || value.get<int>() < 2) fail("collectives.ranks: must be an integer >= 2");
        t.collective_ranks = value.get<int>();
        continue;
      }
      Collective kind = key == "all_reduce"       ? Collective::all_reduce
                        : key == "all_gather"     ? Collective::all_gather
                        : key == "reduce_scatter" ? Collective::reduce_scatter
                                                  : Collective::none;
      if (kind == Collective::none) fail("collectives." + key + ": unknown collective (all_reduce, all_gather, reduce_scatter)");
      if (!value.is_array() || value.empty()) fail("collectives." + key + ": must be a non-empty array");
      std::vector<CollectiveSample> v;
      for (std::size_t i = 0; i < value.size(); ++i) {
        std::string at = "collectives." + key + "[" + std::to_string(i) + "]";
        v.push_back({positive(value[i], "bytes", at), positive(value[i], "seconds", at)});
        if (i > 0 && !(v[i].bytes > v[i - 1].bytes)) fail(at + ".bytes: sizes must ascend");
      }
      t.collectives[kind] = std::move(v);
    }
    if (!t.collectives.empty() && t.collective_ranks == 0) fail("collectives.ranks: missing");
  }
  if (j.contains("p2p")) {
    const auto& value = j["p2p"];
    if (!value.is_array() || value.empty()) fail("p2p: must be a non-empty array");
    for (std::size_t i = 0; i < value.size(); ++i) {
      std::string at = "p2p[" + std::to_string(i) + "]";
      t.p2p.push_back({positive(value[i], "bytes", at), positive(value[i], "seconds", at)});
      if (i > 0 && !(t.p2p[i].bytes > t.p2p[i - 1].bytes)) fail(at + ".bytes: sizes must ascend");
    }
  }
  return t;
}

nlohmann::json to_json(const MeasuredTables& t) {
  nlohmann::json j = nlohmann::json::object();
  if (t.has_gemm()) {
    auto& g = j["gemm"] = nlohmann::json::array();
    for (const auto& s : t.gemm)
      g.push_back({{"m", s.m}, {"k", s.k}, {"n", s.n}, {"forward_s", s.forward_s}, {"backward_s", s.backward_s}});
  }
  if (!t.collectives.empty()) {
    auto& c = j["collectives"];
    c["ranks"] = t.collective_ranks;
    for (const auto& [kind, v] : t.collectives) {
      auto& a = c[collective_key(kind)] = nlohmann::json::array();
      for (const auto& s : v) a.push_back({{"bytes", s.bytes}, {"seconds", s.seconds}});
    }
  }
  if (!t.p2p.empty()) {
    auto& a = j["p2p"] = nlohmann::json::array();
    for (const auto& s : t.p2p) a.push_back({{"bytes", s.bytes}, {"seconds", s.seconds}});
  }
  return j;
}

}  // namespace ditwin::cost
