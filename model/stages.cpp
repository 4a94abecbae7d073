// Multi-stage campaigns: the plan key `stages` (docs/plan.md). A stage is an RFC 7386 merge patch
// over the base plan, limited to what may change while the weights carry over; each merged
// document is parsed and validated as a whole plan, so a stage obeys every rule a plan does.
#include <cmath>
#include <map>
#include <string>

#include "model/accounting.hpp"
#include "model/errors.hpp"
#include "model/plan.hpp"

namespace ditwin {

namespace {

// What a stage may override. A leaf (no children) admits any value, objects included; a node
// with children admits only those keys. The architecture, precision, objective kind, data and
// cluster are fixed for the whole campaign: the weights and the machine carry over.
struct Allowed {
  std::map<std::string, Allowed> keys;
  bool any() const { return keys.empty(); }
};

const Allowed& stage_schema() {
  static const Allowed schema = [] {
    Allowed leaf;
    Allowed s;
    s.keys["name"] = leaf;
    s.keys["model"].keys = {{"image_size", leaf}, {"seq_len", leaf}, {"text_tokens", leaf}};
    Allowed objective;
    objective.keys = {{"timesteps", leaf}};
    s.keys["training"].keys = {{"global_batch", leaf}, {"micro_batch", leaf}, {"optimizer", leaf},
                               {"recompute", leaf},    {"objective", objective}};
    s.keys["parallelism"] = leaf;
    s.keys["reliability"].keys = {{"checkpoint", leaf}, {"inject", leaf}};
    s.keys["run"].keys = {{"steps", leaf}, {"tokens", leaf}, {"duration_days", leaf}};
    return s;
  }();
  return schema;
}

constexpr const char* allowed_list =
    "a stage may override model.image_size, model.seq_len, model.text_tokens, training.global_batch, "
    "training.micro_batch, training.optimizer, training.recompute, training.objective.timesteps, parallelism, "
    "reliability.checkpoint, reliability.inject, run.steps, run.tokens, run.duration_days and its name; "
    "the architecture, precision, data and cluster carry over from the base plan";

void check_keys(const nlohmann::json& value, const Allowed& allowed, const std::string& path) {
  if (allowed.any()) return;
  if (!value.is_object()) throw InputError(path + ": must be an object");
  for (const auto& [key, child] : value.items()) {
    auto it = allowed.keys.find(key);
    std::string at = path + "." + key;
    if (it == allowed.keys.end()) throw InputError(at + ": not a stage override (" + allowed_list + ")");
    if (!child.is_null()) check_keys(child, it->second, at);
  }
}

}  // namespace

std::vector<Plan> resolve_stages(const nlohmann::json& document, const Plan& base) {
  const auto& list = document.at("stages");
  if (!list.is_array()) throw InputError("stages: must be an array of stage objects");
  if (list.empty()) throw InputError("stages: must hold at least one stage (leave the key out for a one-stage plan)");
  constexpr std::size_t max_stages = 64;
  if (list.size() > max_stages) throw InputError("stages: at most " + std::to_string(max_stages) + " stages");
  nlohmann::json base_document = document;
  base_document.erase("stages");
  const double base_parameters = count_parameters(base.model).total;
  std::vector<Plan> out;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string at = "stages[" + std::to_string(i) + "]";
    const auto& stage = list[i];
    if (!stage.is_object()) throw InputError(at + ": must be an object");
    check_keys(stage, stage_schema(), at);
    nlohmann::json patch = stage;
    std::string name = "stage " + std::to_string(i + 1);
    if (patch.contains("name") && !patch["name"].is_null()) {
      if (!patch["name"].is_string() || patch["name"].get<std::string>().empty())
        throw InputError(at + ".name: must be a non-empty string");
      name = patch["name"].get<std::string>();
    }
    patch.erase("name");
    // run.tokens is a stage's length in tokens: turned into steps once the stage's batch is known.
    double tokens = 0;
    if (patch.contains("run") && patch["run"].is_object() && patch["run"].contains("tokens") &&
        !patch["run"]["tokens"].is_null()) {
      const auto& t = patch["run"]["tokens"];
      if (!t.is_number() || !std::isfinite(t.get<double>()) || t.get<double>() < 1)
        throw InputError(at + ".run.tokens: must be a number >= 1");
      if (patch["run"].contains("steps") && !patch["run"]["steps"].is_null())
        throw InputError(at + ".run.tokens: give run.steps or run.tokens, not both");
      tokens = t.get<double>();
      patch["run"].erase("tokens");
    }
    nlohmann::json merged = base_document;
    merged.merge_patch(patch);
    Plan p;
    try {
      p = parse_plan(merged);
    } catch (const InputError& e) {
      throw InputError(at + "." + e.what());
    }
    if (tokens > 0) {
      double steps = std::ceil(tokens / static_cast<double>(p.tokens_per_step()) - 1e-9);
      if (steps > 1e12) throw InputError(at + ".run.tokens: implausibly many steps (" + std::to_string(steps) + ")");
      p.run.steps = static_cast<long long>(std::max(1.0, steps));
      merged["run"]["steps"] = p.run.steps;
    }
    // The weights carry over: a resolution or sequence-length change must not change the parameter
    // count (learned positions, as GPT's, would).
    double parameters = count_parameters(p.model).total;
    if (parameters != base_parameters)
      throw InputError(at + ".model: changes the parameter count from " + std::to_string(static_cast<long long>(base_parameters)) +
                       " to " + std::to_string(static_cast<long long>(parameters)) +
                       " (learned positions grow with the sequence), so the weights cannot carry over");
    p.stage_name = name;
    p.stage_document = std::move(merged);
    out.push_back(std::move(p));
  }
  return out;
}

// --- controlled rollouts (issue 18 part 3): a rollout's inline change obeys the stage rule ---
nlohmann::json merge_override(const nlohmann::json& base_document, const nlohmann::json& patch, const std::string& at) {
  if (!patch.is_object()) throw InputError(at + ": must be an object (an override, as a stage) or a plan file's path");
  check_keys(patch, stage_schema(), at);
  nlohmann::json p = patch;
  p.erase("name");
  if (p.contains("run") && p["run"].is_object() && p["run"].contains("tokens"))
    throw InputError(at + ".run.tokens: a rollout changes the running job: its length stays the base plan's");
  nlohmann::json merged = base_document;
  merged.merge_patch(p);
  return merged;
}
// --- end controlled rollouts ---

bool layout_changes(const Plan& from, const Plan& to) {
  const auto& a = from.parallelism;
  const auto& b = to.parallelism;
  int za = a.dp * a.cp > 1 ? a.zero : 0, zb = b.dp * b.cp > 1 ? b.zero : 0;  // ZeRO over one rank shards nothing
  return a.dp != b.dp || a.tp != b.tp || a.pp != b.pp || a.cp != b.cp || za != zb ||
         a.virtual_stages != b.virtual_stages;
}

std::string describe_layout(const Plan& plan) {
  const auto& p = plan.parallelism;
  return "dp " + std::to_string(p.dp) + " x tp " + std::to_string(p.tp) + " x pp " + std::to_string(p.pp) + " x cp " +
         std::to_string(p.cp) + ", zero " + std::to_string(p.zero);
}

}  // namespace ditwin
