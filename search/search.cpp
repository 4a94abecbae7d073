// The search driver (search/search.hpp): the tiers, the tallies ranks merge, the report.
#include "search/search.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "cost_models/reliability.hpp"
#include "model/errors.hpp"
#include "model/plan_summary.hpp"
#include "model/report.hpp"
#include "sim/longrun.hpp"
#include "sim/step_sim.hpp"

namespace ditwin::search {

namespace {

using nlohmann::json;

// Best first: higher score, then lower index (so ties resolve the same way on any split).
bool better(const Scored& a, const Scored& b) {
  if (a.score != b.score) return a.score > b.score;
  return a.index < b.index;
}

void keep_best(std::vector<Scored>& best, const Scored& s, std::size_t keep) {
  if (keep == 0) return;
  if (best.size() < keep) {
    best.push_back(s);
    return;
  }
  auto worst = std::min_element(best.begin(), best.end(), [](const Scored& a, const Scored& b) { return better(b, a); });
  if (better(s, *worst)) *worst = s;
}

// Pareto fronts where both coordinates are maximised (memory enters negated). Equal points keep
// the lowest index.
template <class X, class Y>
void front_insert(std::vector<Scored>& front, const Scored& s, X x, Y y) {
  auto dominates = [&](const Scored& a, const Scored& b) {
    if (x(a) >= x(b) && y(a) >= y(b)) return x(a) > x(b) || y(a) > y(b) || a.index < b.index;
    return false;
  };
  for (const auto& f : front)
    if (dominates(f, s)) return;
  front.erase(std::remove_if(front.begin(), front.end(), [&](const Scored& f) { return dominates(s, f); }), front.end());
  front.push_back(s);
}
double tokens(const Scored& s) { return s.tokens_per_s; }
double less_memory(const Scored& s) { return -s.memory_bytes; }
double mfu_of(const Scored& s) { return s.mfu; }
double ettr_of(const Scored& s) { return s.ettr; }

json scored_json(const Scored& s) {
  return {{"index", s.index}, {"step_s", s.step_s}, {"tokens_per_s", s.tokens_per_s}, {"mfu", s.mfu},
          {"memory_bytes", s.memory_bytes}, {"ettr", s.ettr}, {"score", s.score}};
}
Scored scored_from(const json& j) {
  Scored s;
  s.index = j.at("index").get<std::uint64_t>();
  s.step_s = j.at("step_s");
  s.tokens_per_s = j.at("tokens_per_s");
  s.mfu = j.at("mfu");
  s.memory_bytes = j.at("memory_bytes");
  s.ettr = j.at("ettr");
  s.score = j.at("score");
  return s;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The rule a refusal broke: "training.global_batch: 2048 is not ..." -> "training.global_batch".
std::string reason_of(const std::string& message) {
  auto colon = message.find(": ");
  return colon == std::string::npos ? message : message.substr(0, colon);
}

}  // namespace

json to_json(const Tally& t) {
  json j;
  j["considered"] = t.considered;
  j["feasible"] = t.feasible;
  j["refused"] = t.refused;
  j["example"] = t.example;
  for (const char* k : {"best", "memory_front", "reliability_front"}) j[k] = json::array();
  for (const auto& s : t.best) j["best"].push_back(scored_json(s));
  for (const auto& s : t.memory_front) j["memory_front"].push_back(scored_json(s));
  for (const auto& s : t.reliability_front) j["reliability_front"].push_back(scored_json(s));
  return j;
}

Tally tally_from_json(const json& j) {
  Tally t;
  t.considered = j.at("considered");
  t.feasible = j.at("feasible");
  t.refused = j.at("refused").get<std::map<std::string, std::uint64_t>>();
  t.example = j.at("example").get<std::map<std::string, std::string>>();
  for (const auto& s : j.at("best")) t.best.push_back(scored_from(s));
  for (const auto& s : j.at("memory_front")) t.memory_front.push_back(scored_from(s));
  for (const auto& s : j.at("reliability_front")) t.reliability_front.push_back(scored_from(s));
  return t;
}

Tally merge(const std::vector<Tally>& parts, std::size_t keep) {
  Tally out;
  for (const auto& p : parts) {
    out.considered += p.considered;
    out.feasible += p.feasible;
    for (const auto& [k, n] : p.refused) out.refused[k] += n;
    for (const auto& [k, e] : p.example)
      if (!out.example.count(k)) out.example[k] = e;
    for (const auto& s : p.best) keep_best(out.best, s, keep);
    for (const auto& s : p.memory_front) front_insert(out.memory_front, s, tokens, less_memory);
    for (const auto& s : p.reliability_front) front_insert(out.reliability_front, s, mfu_of, ettr_of);
  }
  std::sort(out.best.begin(), out.best.end(), better);
  auto by_index = [](const Scored& a, const Scored& b) { return a.index < b.index; };
  std::sort(out.memory_front.begin(), out.memory_front.end(), by_index);
  std::sort(out.reliability_front.begin(), out.reliability_front.end(), by_index);
  return out;
}

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  std::size_t n = a.size();
  if (n < 2 || b.size() != n) return 1;
  auto ranks = [n](const std::vector<double>& v) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return v[x] < v[y]; });
    std::vector<double> r(n);
    for (std::size_t i = 0; i < n;) {
      std::size_t j = i;
      while (j + 1 < n && v[order[j + 1]] == v[order[i]]) ++j;
      for (std::size_t k = i; k <= j; ++k) r[order[k]] = (i + j) / 2.0 + 1;
      i = j + 1;
    }
    return r;
  };
  auto ra = ranks(a), rb = ranks(b);
  double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n, mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 1;
}

Search::Search(const std::string& plan_path, const Options& options) : options_(options), plan_path_(plan_path) {
  if (options.objective != "throughput" && options.objective != "goodput")
    throw InputError("--objective " + options.objective + ": must be \"throughput\" or \"goodput\"");
  if (options.top < 1 || options.top > 1000) throw InputError("--top " + std::to_string(options.top) + ": must be from 1 to 1000");
  base_ = load_plan(plan_path);
  document_ = read_json_file(plan_path);
  int dpn = base_.cluster.devices_per_node;
  written_gpus_ = base_.cluster.gpus();
  if (options.gpus != 0) {
    if (options.gpus < 0 || options.gpus % dpn != 0 || options.gpus / dpn > (1LL << 24))
      throw InputError("--gpus " + std::to_string(options.gpus) + ": must be a positive multiple of cluster.devices_per_node (" +
                       std::to_string(dpn) + ") up to " + std::to_string((1LL << 24) * dpn));
    base_.cluster.nodes = static_cast<int>(options.gpus / dpn);
  }
  profile_ = options.profile_path.empty() ? cost::profile_for(base_.cluster) : cost::load_profile(options.profile_path);
  peak_ = profile_.peak_flops(base_.training.precision);
  if (!(peak_ > 0) || !std::isfinite(peak_))
    throw InputError(std::string("training.precision: \"") + to_string(base_.training.precision) + "\" but the device profile (" +
                     (profile_.source.empty() ? profile_.device : profile_.source) + ") has no peak for it");
  failures_ = cost::failure_model(base_.reliability, dpn).unexpected_per_node_s() > 0;
  goodput_ = options.objective == "goodput";
  if (goodput_ && !failures_)
    throw InputError("--objective goodput: " + plan_path + " has no failures (reliability.failures): goodput would equal "
                     "throughput; give the plan a failure model or search for throughput");
  space_ = options.space_path.empty() ? default_space(base_, goodput_) : load_space(options.space_path, base_, goodput_);
  enumeration_ = std::make_unique<Enumeration>(space_, base_.cluster.gpus());
  model_flops_ = count_flops(base_).model_flops_per_step;
}

Search::~Search() = default;

Plan Search::candidate(std::uint64_t index, Choice& choice) const {
  if (!enumeration_->decode(index, choice)) throw std::logic_error("search: candidate " + std::to_string(index) + " repeats another");
  Plan c = base_;
  apply(choice, c);
  return c;
}

double Search::analytic_ettr(const Plan& plan, double step_s, double mfu) const {
  if (!failures_) return 1;
  auto in = sim::longrun_inputs(plan, step_s, mfu);
  double per_node = in.failures.unexpected_per_node_s();
  double lambda = per_node * in.nodes;
  // Detection: a missed heartbeat, or the collective timeout for hangs, weighted by their rates.
  double detect = 0;
  for (const auto& c : in.failures.categories)
    detect += (c.per_node_s / per_node) * (c.hang ? in.timeout_s : in.heartbeat_s);
  double replace = in.spare_nodes > 0 ? in.spare_swap_s : in.reschedule_s;
  double restart = detect + replace + in.process_start_s + in.comm_init_s + in.load_s;
  return cost::renewal_ettr(lambda, in.interval_s, in.stall_s, in.persist_s, restart);
}

Tally Search::analytic(int rank, int ranks, const std::function<void(std::uint64_t, std::uint64_t)>& progress) const {
  AnalyticModel model(profile_);
  Tally t;
  Choice choice;
  const std::uint64_t n = enumeration_->size();
  const int dpn = base_.cluster.devices_per_node;
  const double usable = 1 - space_.memory_headroom;
  auto refuse = [&](const std::string& reason, const std::string& message) {
    if (t.refused[reason]++ == 0) t.example[reason] = message;
  };
  std::uint64_t step = 0;
  for (std::uint64_t i = static_cast<std::uint64_t>(rank); i < n; i += static_cast<std::uint64_t>(ranks)) {
    if (progress && (++step & 4095) == 0) progress(i, n);
    if (!enumeration_->decode(i, choice)) continue;
    ++t.considered;
    Plan c = base_;
    apply(choice, c);
    if (space_.tp_within_node && choice.tp > dpn) {
      refuse("tensor parallelism across nodes",
             "tp " + std::to_string(choice.tp) + " exceeds cluster.devices_per_node " + std::to_string(dpn) +
                 " (set \"tp_within_node\": false in the space to allow it)");
      continue;
    }
    try {
      validate_plan(c);
      if (estimated_program_ops(c) > max_program_ops(options_.max_memory_bytes))
        throw InputError("program size: the step's Program would exceed --max-memory (" +
                         std::to_string(options_.max_memory_bytes / 1e9) + " GB)");
    } catch (const InputError& e) {
      refuse(reason_of(e.what()), e.what());
      continue;
    }
    MemoryReport memory = account_memory(c);
    if (memory.capacity_bytes > 0 && memory.peak_bytes() > usable * memory.capacity_bytes) {
      refuse("memory", "needs " + human_bytes(memory.peak_bytes()) + " per GPU of " + human_bytes(memory.capacity_bytes) +
                           " (" + fixed(100 * space_.memory_headroom, 0) + "% kept as headroom)");
      continue;
    }
    Estimate est;
    try {
      est = model.estimate(c, memory);
    } catch (const InputError& e) {
      refuse(reason_of(e.what()), e.what());
      continue;
    }
    if (!(est.step_s > 0) || !std::isfinite(est.step_s)) {
      refuse("no finite step time", "the cost models give no finite step time for this layout");
      continue;
    }
    Scored s;
    s.index = i;
    s.step_s = est.step_s;
    s.tokens_per_s = static_cast<double>(c.tokens_per_step()) / est.step_s;
    s.mfu = model_flops_ / est.step_s / static_cast<double>(c.cluster.gpus()) / peak_;
    s.memory_bytes = memory.peak_bytes();
    if (failures_) s.ettr = analytic_ettr(c, s.step_s, s.mfu);
    s.score = goodput_ ? s.tokens_per_s * s.ettr : s.tokens_per_s;
    ++t.feasible;
    keep_best(t.best, s, static_cast<std::size_t>(options_.top));
    front_insert(t.memory_front, s, tokens, less_memory);
    if (failures_) front_insert(t.reliability_front, s, mfu_of, ettr_of);
  }
  if (progress) progress(n, n);
  std::sort(t.best.begin(), t.best.end(), better);
  return t;
}

json Search::simulate_one(std::uint64_t index) const {
  Choice choice;
  Plan c = candidate(index, choice);
  validate_plan(c);
  Program program = lower(c, options_.max_memory_bytes);
  StepReport r = sim::simulate_step(c, program, profile_);
  return {{"step_time_s", r.step_time_s}, {"tokens_per_s", r.tokens_per_s}, {"mfu", r.mfu},
          {"memory_per_gpu_bytes", r.memory["peak_bytes"]}, {"fits", r.memory["fits"]},
          {"breakdown", to_json(r)["breakdown"]}};
}

std::vector<json> Search::simulate(const Tally& merged, int rank, int ranks, const std::function<void(int, int)>& progress) const {
  std::vector<json> out;
  int total = static_cast<int>(merged.best.size());
  // Candidates that differ only in their checkpoint policy have the same step: simulate it once.
  std::map<std::string, json> done;
  for (int i = rank; i < total; i += ranks) {
    Choice choice;
    candidate(merged.best[i].index, choice);
    json layout = describe(choice);
    layout.erase("checkpoint");
    auto [it, fresh] = done.try_emplace(layout.dump());
    if (fresh) it->second = simulate_one(merged.best[i].index);
    json j = it->second;
    j["i"] = i;
    out.push_back(std::move(j));
    if (progress) progress(i + 1, total);
  }
  return out;
}

void require_feasible(const Tally& merged, const std::string& plan_path) {
  if (merged.feasible > 0) return;
  std::string reason;
  std::uint64_t most = 0;
  for (const auto& [k, n] : merged.refused)
    if (n > most) most = n, reason = k;
  if (most == 0) throw InputError(plan_path + ": the search space is empty (no layout divides the GPUs): widen it (--space, --gpus)");
  throw InputError(plan_path + ": none of the " + std::to_string(merged.considered) + " candidates fits; " + std::to_string(most) +
                   " were refused by " + reason + " (e.g. " + merged.example.at(reason) +
                   "); widen the space (--space, --gpus) or change the model or batch");
}

json Search::as_written() const {
  if (options_.gpus != 0 && options_.gpus != written_gpus_) return nullptr;  // another cluster size: nothing to compare with
  Plan p = base_;
  Program program = lower(p, options_.max_memory_bytes);
  StepReport r = sim::simulate_step(p, program, profile_);
  json j = {{"step_time_s", r.step_time_s}, {"tokens_per_s", r.tokens_per_s}, {"mfu", r.mfu},
            {"memory_per_gpu_bytes", r.memory["peak_bytes"]}, {"fits", r.memory["fits"]}};
  MemoryReport memory = account_memory(p);
  AnalyticModel model(profile_);
  j["analytic_step_time_s"] = model.estimate(p, memory).step_s;
  return j;
}

json Search::report(const Tally& merged, std::vector<json> simulated, const json& written, double analytic_s,
                    double simgrid_s, int ranks) const {
  std::sort(simulated.begin(), simulated.end(), [](const json& a, const json& b) { return a["i"] < b["i"]; });
  std::vector<json> items;
  std::vector<double> analytic_steps, simulated_steps;
  AnalyticModel model(profile_);
  double sum_error = 0, max_error = 0;
  for (const auto& s : simulated) {
    const Scored& a = merged.best[s["i"].get<int>()];
    Choice choice;
    Plan c = candidate(a.index, choice);
    json item = describe(choice);
    item["index"] = a.index;
    validate_plan(c);
    Estimate est = model.estimate(c, account_memory(c));
    item["analytic"] = {{"step_time_s", a.step_s}, {"tokens_per_s", a.tokens_per_s}, {"mfu", a.mfu},
                        {"pipeline_s", est.pipeline_s}, {"bubble_s", est.bubble_s},
                        {"exposed_dp_s", est.exposed_dp_s}, {"optimizer_s", est.optimizer_s}};
    for (const char* k : {"step_time_s", "tokens_per_s", "mfu", "memory_per_gpu_bytes", "fits", "breakdown"}) item[k] = s[k];
    double step = s["step_time_s"], mfu = s["mfu"];
    double ettr = analytic_ettr(c, step, mfu);
    item["ettr"] = ettr;
    item["ettr_source"] = failures_ ? "analytic" : "none";
    item["goodput_tokens_per_s"] = s["tokens_per_s"].get<double>() * ettr;
    items.push_back(item);
    analytic_steps.push_back(a.step_s);
    simulated_steps.push_back(step);
    double error = std::abs(a.step_s - step) / step;
    sum_error += error;
    max_error = std::max(max_error, error);
  }
  auto score = [&](const json& item) {
    return goodput_ ? item["goodput_tokens_per_s"].get<double>() : item["tokens_per_s"].get<double>();
  };
  std::stable_sort(items.begin(), items.end(), [&](const json& a, const json& b) {
    double sa = score(a), sb = score(b);
    return sa != sb ? sa > sb : a["index"].get<std::uint64_t>() < b["index"].get<std::uint64_t>();
  });
  // The best few through weeks of failures (the long-run simulator's ETTR replaces the analytic one).
  double longrun_s = 0;
  if (failures_) {
    auto t0 = std::chrono::steady_clock::now();
    int n = std::min<int>(options_.longrun_best, static_cast<int>(items.size()));
    for (int k = 0; k < n; ++k) {
      Choice choice;
      Plan c = candidate(items[k]["index"].get<std::uint64_t>(), choice);
      validate_plan(c);
      sim::LongRunOptions lo;
      lo.trials = options_.longrun_trials;
      lo.seed = 1;
      auto result = sim::simulate_longrun(sim::longrun_inputs(c, items[k]["step_time_s"], items[k]["mfu"]), lo);
      json lr = sim::to_json(result);
      items[k]["ettr_analytic"] = items[k]["ettr"];
      items[k]["ettr"] = lr["ettr"]["mean"];
      items[k]["ettr_source"] = "long-run simulation (" + std::to_string(lo.trials) + " trials)";
      items[k]["goodput_tokens_per_s"] = items[k]["tokens_per_s"].get<double>() * lr["ettr"]["mean"].get<double>();
    }
    if (goodput_)
      std::stable_sort(items.begin(), items.begin() + n, [&](const json& a, const json& b) { return score(a) > score(b); });
    longrun_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  for (std::size_t k = 0; k < items.size(); ++k) items[k]["rank"] = k + 1;

  json r;
  r["plan"] = base_.name;
  r["gpus"] = base_.cluster.gpus();
  r["device"] = base_.cluster.device.name;
  r["objective"] = options_.objective;
  r["candidates"] = merged.considered;
  r["feasible"] = merged.feasible;
  r["refused"] = json::object();
  for (const auto& [reason, count] : merged.refused) r["refused"][reason] = {{"count", count}, {"example", merged.example.at(reason)}};
  r["space"] = to_json(space_);
  r["ranks"] = ranks;
  r["analytic"] = {{"seconds", analytic_s},
                   {"us_per_candidate", merged.considered ? 1e6 * analytic_s * ranks / merged.considered : 0}};
  r["simgrid"] = {{"simulated", items.size()},
                  {"seconds", simgrid_s},
                  {"spearman", spearman(analytic_steps, simulated_steps)},
                  {"mean_abs_error", items.empty() ? 0 : sum_error / items.size()},
                  {"max_abs_error", max_error}};
  if (failures_) r["longrun"] = {{"played", std::min<int>(options_.longrun_best, static_cast<int>(items.size()))},
                                 {"trials", options_.longrun_trials}, {"seconds", longrun_s}};
  r["as_written"] = written;
  if (!written.is_null() && !items.empty())
    r["gain_over_as_written"] = items[0]["tokens_per_s"].get<double>() / written["tokens_per_s"].get<double>();
  r["top"] = items;
  // The fronts: each point's settings and its analytic figures.
  auto front_json = [&](const std::vector<Scored>& front) {
    json out = json::array();
    for (const auto& s : front) {
      Choice choice;
      candidate(s.index, choice);
      json p = describe(choice);
      p["index"] = s.index;
      p["tokens_per_s"] = s.tokens_per_s;
      p["memory_per_gpu_bytes"] = s.memory_bytes;
      p["mfu"] = s.mfu;
      p["ettr"] = s.ettr;
      out.push_back(p);
    }
    return out;
  };
  r["pareto"] = {{"throughput_vs_memory", front_json(merged.memory_front)}};
  if (failures_) r["pareto"]["mfu_vs_ettr"] = front_json(merged.reliability_front);
  return r;
}

json Search::best_plan(const json& report) const {
  if (report["top"].empty()) throw std::logic_error("search: no best plan in an empty report");
  Choice choice;
  candidate(report["top"][0]["index"].get<std::uint64_t>(), choice);
  json doc = document_;
  apply(choice, doc, base_.cluster.nodes);
  doc["name"] = base_.name + "-searched";
  std::string was = doc.value("description", std::string());
  doc["description"] = "The layout `ditwin search` found best for " + base_.name + " (" + options_.objective + ")" +
                       (was.empty() ? "" : "; the plan searched: " + was);
  Plan check = parse_plan(doc);  // the file must load as it is written
  (void)check;
  return doc;
}

std::string format_report(const json& r) {
  std::ostringstream o;
  o << "search of " << r["plan"].get<std::string>() << " on " << r["gpus"] << " x " << r["device"].get<std::string>()
    << " (" << r["objective"].get<std::string>() << ")\n";
  o << "  candidates       " << r["candidates"] << " considered, " << r["feasible"] << " feasible; analytic tier "
    << fixed(r["analytic"]["seconds"].get<double>(), 2) << " s (" << fixed(r["analytic"]["us_per_candidate"].get<double>(), 1)
    << " us a candidate" << (r["ranks"].get<int>() > 1 ? " on each of " + std::to_string(r["ranks"].get<int>()) + " ranks" : "")
    << ")\n";
  std::vector<std::pair<std::uint64_t, std::string>> refused;
  for (const auto& [k, v] : r["refused"].items()) refused.push_back({v["count"].get<std::uint64_t>(), k});
  std::sort(refused.rbegin(), refused.rend());
  if (!refused.empty()) {
    o << "  refused          ";
    for (std::size_t i = 0; i < refused.size() && i < 5; ++i) o << (i ? ", " : "") << refused[i].second << " " << refused[i].first;
    o << "\n";
  }
  const auto& sg = r["simgrid"];
  o << "  SimGrid tier     " << sg["simulated"] << " simulated in " << fixed(sg["seconds"].get<double>(), 1)
    << " s; analytic vs simulated step: Spearman " << fixed(sg["spearman"].get<double>(), 2) << ", mean error "
    << fixed(100 * sg["mean_abs_error"].get<double>(), 1) << "%, max " << fixed(100 * sg["max_abs_error"].get<double>(), 1) << "%\n";
  if (!r["as_written"].is_null()) {
    const auto& w = r["as_written"];
    o << "  as written       " << fixed(w["step_time_s"].get<double>() * 1e3, 1) << " ms a step, " << human_count(w["tokens_per_s"])
      << " tokens/s, MFU " << fixed(100 * w["mfu"].get<double>(), 1) << "%";
    if (r.contains("gain_over_as_written")) o << "; the best is " << fixed(r["gain_over_as_written"].get<double>(), 2) << "x";
    o << "\n";
  }
  bool checkpoints = !r["top"].empty() && r["top"][0].contains("checkpoint");
  o << "\n  #  dp x tp x pp x cp      sp zero schedule        mb recompute  bucket  mem/GPU   step ms   MFU    ETTR  goodput tok/s"
    << (checkpoints ? "  checkpoint" : "") << "\n";
  for (const auto& t : r["top"]) {
    const auto& p = t["parallelism"];
    std::string layout = std::to_string(p["dp"].get<long long>()) + "x" + std::to_string(p["tp"].get<int>()) + "x" +
                         std::to_string(p["pp"].get<int>()) + "x" + std::to_string(p["cp"].get<int>());
    std::string sched = p["pp"].get<int>() == 1 ? "-" : p["schedule"].get<std::string>();
    if (p["schedule"] == "interleaved") sched += " v" + std::to_string(p["virtual_stages"].get<int>());
    char line[256];
    std::snprintf(line, sizeof line, "%3d  %-20s %-3s %4d %-14s %4lld %-10s %6.4g %8s %9.1f %5.1f%% %6.1f%%  %s\n",
                  t["rank"].get<int>(), layout.c_str(), p["sequence_parallel"].get<bool>() ? "yes" : "no", p["zero"].get<int>(),
                  sched.c_str(), t["training"]["micro_batch"].get<long long>(),
                  t["training"]["recompute"].get<std::string>().c_str(), p["bucket_mb"].get<double>(),
                  human_bytes(t["memory_per_gpu_bytes"].get<double>()).c_str(), 1e3 * t["step_time_s"].get<double>(),
                  100 * t["mfu"].get<double>(), 100 * t["ettr"].get<double>(),
                  human_count(t["goodput_tokens_per_s"].get<double>()).c_str());
    std::string text = line;
    if (checkpoints) {
      const auto& c = t["checkpoint"];
      text.pop_back();
      text += "  " + c["mode"].get<std::string>() +
              (c["interval_min"].is_string() ? std::string(", optimal interval") : " every " + fixed(c["interval_min"].get<double>(), 0) + " min") + "\n";
    }
    o << text;
  }
  return o.str();
}

}  // namespace ditwin::search
