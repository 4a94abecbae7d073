// The search space: defaults, the JSON file that narrows or widens it, and its enumeration.
#include "search/space.hpp"

#include <algorithm>
#include <cmath>

#include "model/errors.hpp"
#include "model/json_reader.hpp"

namespace ditwin::search {

namespace {

template <class T>
void add_unique(std::vector<T>& v, const T& x) {
  if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}

std::vector<int> powers_of_two_up_to(long long limit) {
  std::vector<int> out;
  for (long long v = 1; v <= limit; v *= 2) out.push_back(static_cast<int>(v));
  return out;
}

Recompute recompute_of(const std::string& s) {
  return s == "full" ? Recompute::full : s == "selective" ? Recompute::selective : Recompute::none;
}

std::string schedule_name(const ScheduleChoice& s) {
  if (s.kind != PipelineSchedule::interleaved) return to_string(s.kind);
  return "interleaved:" + std::to_string(s.virtual_stages);
}

}  // namespace

Space default_space(const Plan& plan, bool goodput) {
  Space s;
  const auto& par = plan.parallelism;
  const auto& m = plan.model;
  long long gpus = plan.cluster.gpus();
  s.tp = powers_of_two_up_to(std::min<long long>(plan.cluster.devices_per_node, m.heads));
  add_unique(s.tp, par.tp);
  s.cp = powers_of_two_up_to(std::min<long long>(16, m.tokens_per_sample()));
  add_unique(s.cp, par.cp);
  // Every pipeline depth that divides the GPUs and leaves at least one layer a stage.
  for (long long d = 1; d <= std::min<long long>(gpus, m.layers); ++d)
    if (gpus % d == 0) s.pp.push_back(static_cast<int>(d));
  add_unique(s.pp, par.pp);
  s.zero = {0, 1, 2, 3};
  s.micro_batch = {1, 2, 4, 8};
  add_unique(s.micro_batch, plan.training.micro_batch);
  s.recompute = {Recompute::none, Recompute::selective, Recompute::full};
  s.sequence_parallel = {0, 1};
  s.schedules = {{PipelineSchedule::one_f_one_b, 1}, {PipelineSchedule::gpipe, 1},
                 {PipelineSchedule::interleaved, 2}, {PipelineSchedule::interleaved, 4},
                 {PipelineSchedule::interleaved, 8}};
  add_unique(s.schedules, ScheduleChoice{par.schedule, par.virtual_stages});
  s.bucket_mb = {par.bucket_bytes / 1e6};
  add_unique(s.bucket_mb, 25.0);
  add_unique(s.bucket_mb, 100.0);
  if (goodput) {
    s.checkpoint_mode = {plan.reliability.checkpoint.mode};
    for (const char* mode : {"sync", "async", "in_memory"}) add_unique(s.checkpoint_mode, std::string(mode));
    double written = plan.reliability.checkpoint.interval_s;
    s.checkpoint_interval_min = {-1};
    if (written > 0) add_unique(s.checkpoint_interval_min, written / 60);
  }
  return s;
}

Space load_space(const std::string& path, const Plan& plan, bool goodput) {
  Space s = default_space(plan, goodput);
  nlohmann::json doc = read_json_file(path);
  if (!doc.is_object()) throw InputError(path + ": the search space must be a JSON object (docs/search.md)");
  JsonReader r(doc, "");
  auto list = [&](const std::string& key) -> const nlohmann::json* {
    if (!r.has(key)) return nullptr;
    const auto& v = r.raw(key);
    if (!v.is_array() || v.empty()) r.fail(key, "must be a non-empty list");
    if (v.size() > 4096) r.fail(key, "lists at most 4096 values");
    return &v;
  };
  auto ints = [&](const std::string& key, long long lo, long long hi, auto& out) {
    const auto* v = list(key);
    if (!v) return;
    out.clear();
    for (const auto& x : *v) {
      if (!x.is_number_integer() || x.get<long long>() < lo || x.get<long long>() > hi)
        r.fail(key, "values must be integers from " + std::to_string(lo) + " to " + std::to_string(hi) + " (got " + x.dump() + ")");
      add_unique(out, static_cast<typename std::decay_t<decltype(out)>::value_type>(x.get<long long>()));
    }
  };
  ints("tp", 1, 1 << 20, s.tp);
  ints("cp", 1, 1 << 20, s.cp);
  ints("pp", 1, 1 << 20, s.pp);
  ints("zero", 0, 3, s.zero);
  ints("micro_batch", 1, 1LL << 40, s.micro_batch);
  if (const auto* v = list("recompute")) {
    s.recompute.clear();
    for (const auto& x : *v) {
      if (!x.is_string() || (x != "none" && x != "selective" && x != "full"))
        r.fail("recompute", "values must be \"none\", \"selective\" or \"full\" (got " + x.dump() + ")");
      add_unique(s.recompute, recompute_of(x.get<std::string>()));
    }
  }
  if (const auto* v = list("sequence_parallel")) {
    s.sequence_parallel.clear();
    for (const auto& x : *v) {
      if (!x.is_boolean()) r.fail("sequence_parallel", "values must be true or false (got " + x.dump() + ")");
      add_unique(s.sequence_parallel, x.get<bool>() ? 1 : 0);
    }
  }
  // Schedules: "1f1b", "gpipe", "interleaved" (with each of virtual_stages).
  std::vector<int> virtual_stages;
  for (const auto& c : s.schedules)
    if (c.kind == PipelineSchedule::interleaved) add_unique(virtual_stages, c.virtual_stages);
  ints("virtual_stages", 2, 1 << 10, virtual_stages);
  std::vector<std::string> kinds;
  for (const auto& c : s.schedules) add_unique(kinds, std::string(to_string(c.kind)));
  if (const auto* v = list("schedule")) {
    kinds.clear();
    for (const auto& x : *v) {
      if (!x.is_string() || (x != "1f1b" && x != "gpipe" && x != "interleaved"))
        r.fail("schedule", "values must be \"1f1b\", \"gpipe\" or \"interleaved\" (got " + x.dump() + ")");
      add_unique(kinds, x.get<std::string>());
    }
  }
  s.schedules.clear();
  for (const auto& k : kinds) {
    if (k == "1f1b") s.schedules.push_back({PipelineSchedule::one_f_one_b, 1});
    if (k == "gpipe") s.schedules.push_back({PipelineSchedule::gpipe, 1});
    if (k == "interleaved")
      for (int vs : virtual_stages) s.schedules.push_back({PipelineSchedule::interleaved, vs});
  }
  if (const auto* v = list("bucket_mb")) {
    s.bucket_mb.clear();
    for (const auto& x : *v) {
      if (!x.is_number() || !(x.get<double>() >= 0.01) || !(x.get<double>() <= 1e6))
        r.fail("bucket_mb", "values must be numbers from 0.01 to 1e6 (got " + x.dump() + ")");
      add_unique(s.bucket_mb, x.get<double>());
    }
  }
  if (const auto* v = list("checkpoint_mode")) {
    if (!goodput) r.fail("checkpoint_mode", "is searched only with --objective goodput and a plan with failures");
    s.checkpoint_mode.clear();
    for (const auto& x : *v) {
      if (!x.is_string() || (x != "sync" && x != "async" && x != "in_memory"))
        r.fail("checkpoint_mode", "values must be \"sync\", \"async\" or \"in_memory\" (got " + x.dump() + ")");
      add_unique(s.checkpoint_mode, x.get<std::string>());
    }
  }
  if (const auto* v = list("checkpoint_interval_min")) {
    if (!goodput) r.fail("checkpoint_interval_min", "is searched only with --objective goodput and a plan with failures");
    s.checkpoint_interval_min.clear();
    for (const auto& x : *v) {
      bool optimal = x.is_string() && x == "optimal";
      if (!optimal && (!x.is_number() || !(x.get<double>() >= 1) || !(x.get<double>() <= 1e6)))
        r.fail("checkpoint_interval_min", "values must be minutes from 1 to 1e6 or \"optimal\" (got " + x.dump() + ")");
      add_unique(s.checkpoint_interval_min, optimal ? -1.0 : x.get<double>());
    }
  }
  double headroom = r.number("memory_headroom", s.memory_headroom);
  if (!(headroom >= 0 && headroom < 1)) r.fail("memory_headroom", "must be in [0, 1)");
  s.memory_headroom = headroom;
  s.tp_within_node = r.boolean("tp_within_node", s.tp_within_node);
  r.finish();
  if (s.schedules.empty()) throw InputError(path + ": schedule: no schedule left to search");
  return s;
}

nlohmann::json to_json(const Space& s) {
  nlohmann::json j;
  j["tp"] = s.tp;
  j["cp"] = s.cp;
  j["pp"] = s.pp;
  j["zero"] = s.zero;
  j["micro_batch"] = s.micro_batch;
  j["recompute"] = nlohmann::json::array();
  for (auto r : s.recompute) j["recompute"].push_back(to_string(r));
  j["sequence_parallel"] = nlohmann::json::array();
  for (int v : s.sequence_parallel) j["sequence_parallel"].push_back(v != 0);
  j["schedules"] = nlohmann::json::array();
  for (const auto& c : s.schedules) j["schedules"].push_back(schedule_name(c));
  j["bucket_mb"] = s.bucket_mb;
  if (!s.checkpoint_mode.empty()) {
    j["checkpoint_mode"] = s.checkpoint_mode;
    j["checkpoint_interval_min"] = nlohmann::json::array();
    for (double v : s.checkpoint_interval_min) j["checkpoint_interval_min"].push_back(v < 0 ? nlohmann::json("optimal") : nlohmann::json(v));
  }
  j["memory_headroom"] = s.memory_headroom;
  j["tp_within_node"] = s.tp_within_node;
  return j;
}

Enumeration::Enumeration(const Space& space, long long gpus) : space_(space) {
  // A space file may list thousands of values per knob: refuse before looping over their product.
  double layouts = 1.0 * space.tp.size() * space.cp.size() * space.pp.size();
  if (layouts > 1e7)
    throw InputError("the search space has " + std::to_string(static_cast<long long>(layouts)) +
                     " tp x cp x pp combinations (at most 10 million): narrow tp, cp or pp (--space)");
  for (int tp : space.tp)
    for (int cp : space.cp)
      for (int pp : space.pp) {
        long long cell = 1LL * tp * cp * pp;
        if (cell <= 0 || gpus % cell != 0) continue;
        layouts_.push_back({tp, cp, pp, gpus / cell});
      }
  radix_ = {space.zero.size(), space.micro_batch.size(), space.recompute.size(), space.sequence_parallel.size(),
            space.schedules.size(), space.bucket_mb.size(),
            std::max<std::size_t>(1, space.checkpoint_mode.size()),
            std::max<std::size_t>(1, space.checkpoint_interval_min.size())};
  size_ = layouts_.size();
  for (auto r : radix_) {
    if (r == 0 || size_ > (std::uint64_t(1) << 62) / r) {
      size_ = r == 0 ? 0 : size_;
      if (r != 0) throw InputError("the search space has more than 2^62 candidates: narrow it (--space)");
    }
    size_ *= r;
  }
}

bool Enumeration::decode(std::uint64_t i, Choice& c) const {
  std::uint64_t digit[8];
  for (int d = 7; d >= 0; --d) {
    digit[d] = i % radix_[d];
    i /= radix_[d];
  }
  const Layout& l = layouts_[i];
  c.tp = l.tp;
  c.cp = l.cp;
  c.pp = l.pp;
  c.dp = l.dp;
  c.zero = space_.zero[digit[0]];
  c.micro_batch = space_.micro_batch[digit[1]];
  c.recompute = space_.recompute[digit[2]];
  c.sequence_parallel = space_.sequence_parallel[digit[3]] != 0;
  c.schedule = space_.schedules[digit[4]];
  c.bucket_mb = space_.bucket_mb[digit[5]];
  c.checkpoint_mode = space_.checkpoint_mode.empty() ? std::string() : space_.checkpoint_mode[digit[6]];
  c.checkpoint_interval_min = space_.checkpoint_interval_min.empty() ? 0 : space_.checkpoint_interval_min[digit[7]];
  // Settings that change nothing repeat another candidate: sequence parallelism without TP, a
  // pipeline schedule without a pipeline.
  if (c.sequence_parallel && c.tp == 1) return false;
  if (c.pp == 1 && !(c.schedule == ScheduleChoice{PipelineSchedule::one_f_one_b, 1})) return false;
  return true;
}

nlohmann::json describe(const Choice& c) {
  nlohmann::json j;
  j["parallelism"] = {{"dp", c.dp}, {"tp", c.tp}, {"pp", c.pp}, {"cp", c.cp},
                      {"sequence_parallel", c.sequence_parallel}, {"zero", c.zero},
                      {"schedule", to_string(c.schedule.kind)}, {"virtual_stages", c.schedule.virtual_stages},
                      {"bucket_mb", c.bucket_mb}};
  j["training"] = {{"micro_batch", c.micro_batch}, {"recompute", to_string(c.recompute)}};
  if (!c.checkpoint_mode.empty())
    j["checkpoint"] = {{"mode", c.checkpoint_mode},
                       {"interval_min", c.checkpoint_interval_min < 0 ? nlohmann::json("optimal") : nlohmann::json(c.checkpoint_interval_min)}};
  return j;
}

void apply(const Choice& c, Plan& plan) {
  auto& par = plan.parallelism;
  par.dp = static_cast<int>(c.dp);
  par.tp = c.tp;
  par.pp = c.pp;
  par.cp = c.cp;
  par.sequence_parallel = c.sequence_parallel;
  par.zero = c.zero;
  par.schedule = c.schedule.kind;
  par.virtual_stages = c.schedule.virtual_stages;
  par.bucket_bytes = c.bucket_mb * 1e6;
  plan.training.micro_batch = c.micro_batch;
  plan.training.recompute = c.recompute;
  if (!c.checkpoint_mode.empty()) {
    plan.reliability.checkpoint.mode = c.checkpoint_mode;
    plan.reliability.checkpoint.interval_s = c.checkpoint_interval_min < 0 ? -1 : c.checkpoint_interval_min * 60;
  }
}

void apply(const Choice& c, nlohmann::json& doc, long long nodes) {
  nlohmann::json d = describe(c);
  auto& par = doc["parallelism"];
  if (!par.is_object()) par = nlohmann::json::object();
  par.erase("fsdp");  // zero says it
  for (const auto& [k, v] : d["parallelism"].items()) par[k] = v;
  if (c.schedule.kind != PipelineSchedule::interleaved) par.erase("virtual_stages");
  auto& tr = doc["training"];
  for (const auto& [k, v] : d["training"].items()) tr[k] = v;
  doc["cluster"]["nodes"] = nodes;
  if (!c.checkpoint_mode.empty()) {
    auto& ck = doc["reliability"]["checkpoint"];
    ck["mode"] = c.checkpoint_mode;
    ck.erase("interval_min");
    ck.erase("interval_s");
    ck.erase("interval");
    if (c.checkpoint_interval_min < 0) ck["interval_min"] = "optimal";
    else ck["interval_min"] = c.checkpoint_interval_min;
  }
}

}  // namespace ditwin::search
