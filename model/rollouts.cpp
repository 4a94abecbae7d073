// Controlled rollouts: the plan key `reliability.rollouts` (docs/plan.md, docs/reliability.md). A
// rollout's second plan is an override under the stage rule (merge_override, model/stages.cpp) or a
// plan file; either is parsed and validated as a whole plan, and must keep the weights' shape.
#include <cmath>
#include <filesystem>
#include <string>

#include "model/accounting.hpp"
#include "model/errors.hpp"
#include "model/json_reader.hpp"
#include "model/plan.hpp"

namespace ditwin {

namespace {

// The document a rollout's change is merged over: the plan without its stages and rollouts.
nlohmann::json rollout_base(const nlohmann::json& document) {
  nlohmann::json base = document;
  base.erase("stages");
  if (base.contains("reliability") && base["reliability"].is_object()) base["reliability"].erase("rollouts");
  return base;
}

// The second plan must train the same weights: the checkpoint taken before the change is loaded into it.
void check_second_plan(const Plan& second, const Plan& base, const std::string& at) {
  double a = count_parameters(base.model).total, b = count_parameters(second.model).total;
  if (a != b)
    throw InputError(at + ": changes the parameter count from " + std::to_string(static_cast<long long>(a)) + " to " +
                     std::to_string(static_cast<long long>(b)) + ", so the checkpoint before the rollout cannot carry over");
  if (!second.stages.empty()) throw InputError(at + ": a rollout's plan has no stages (it changes one running job)");
}

double positive(JsonReader& r, const std::string& key, double max) {
  double v = r.number(key);
  if (!(std::isfinite(v) && v > 0 && v <= max)) r.fail(key, "must be a number in (0, " + std::to_string(max) + "]");
  return v;
}

}  // namespace

void resolve_rollouts(const nlohmann::json& document, Plan& base) {
  const auto& list = document.at("reliability").at("rollouts");
  if (!list.is_array()) throw InputError("reliability.rollouts: must be an array of rollout objects");
  constexpr std::size_t max_rollouts = 256;
  if (document.contains("stages"))
    throw InputError("reliability.rollouts: not in a plan with stages yet (put the rollouts in a one-stage plan)");
  if (list.size() > max_rollouts) throw InputError("reliability.rollouts: at most " + std::to_string(max_rollouts) + " rollouts");
  const nlohmann::json base_document = rollout_base(document);
  std::vector<RolloutSpec> out;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string at = "reliability.rollouts[" + std::to_string(i) + "]";
    if (!list[i].is_object()) throw InputError(at + ": must be an object");
    JsonReader r(list[i], at);
    RolloutSpec s;
    if (r.has("at_step") == r.has("at_hours")) r.fail("at_step", "give exactly one of at_step and at_hours");
    if (r.has("at_step")) {
      s.at_step = r.integer("at_step");
      if (s.at_step < 1 || s.at_step >= base.run.steps)
        r.fail("at_step", "must be in [1, " + std::to_string(base.run.steps - 1) + "] (a step inside run.steps " +
                              std::to_string(base.run.steps) + ")");
    } else {
      s.at_s = positive(r, "at_hours", 1e6) * 3600;
    }
    s.change = r.string("change", "");
    if (r.has("plan")) {
      const auto& p = r.raw("plan");
      if (p.is_string()) {
        s.plan_path = p.get<std::string>();
        if (s.plan_path.empty()) r.fail("plan", "must not be empty (a plan file's path, or an override object)");
      } else {
        nlohmann::json merged = merge_override(base_document, p, at + ".plan");
        Plan second;
        try {
          second = parse_plan(merged);
        } catch (const InputError& e) {
          throw InputError(at + ".plan." + e.what());
        }
        check_second_plan(second, base, at + ".plan");
        s.plan_document = std::move(merged);
      }
    }
    if (s.change.empty() && !r.has("plan"))
      r.fail("change", "give a description (change), a second plan (plan: a file or an override), or both");
    if (r.has("watch_minutes") == r.has("watch_steps"))
      r.fail("watch_minutes", "give exactly one of watch_minutes and watch_steps (the window watched after the change)");
    if (r.has("watch_minutes")) s.watch_s = positive(r, "watch_minutes", 1e6) * 60;
    else {
      s.watch_steps = r.integer("watch_steps");
      if (s.watch_steps < 1) r.fail("watch_steps", "must be >= 1");
      if (s.at_step >= 0 && s.at_step + s.watch_steps > base.run.steps)
        r.fail("watch_steps", "the window (steps " + std::to_string(s.at_step + 1) + " to " +
                                  std::to_string(s.at_step + s.watch_steps) + ") runs past run.steps " +
                                  std::to_string(base.run.steps));
    }
    if (r.has("regression")) {
      JsonReader g = r.object("regression");
      s.step_time_regression = g.has("step_time") ? positive(g, "step_time", 1000) : 0;
      s.loss_regression = g.has("loss") ? positive(g, "loss", 1000) : 0;
      s.loss_sigma = g.has("loss_sigma") ? positive(g, "loss_sigma", 1000) : 0;
      g.finish();
      if (s.step_time_regression == 0 && s.loss_regression == 0 && s.loss_sigma == 0)
        g.fail("step_time", "give at least one threshold: step_time, loss (fractions) or loss_sigma (standard deviations)");
    }
    s.regress_probability = r.number("regress_probability", 0);
    if (!(s.regress_probability >= 0 && s.regress_probability <= 1)) r.fail("regress_probability", "must be in [0, 1]");
    s.restart = r.boolean("restart", true);
    r.finish();
    if (!out.empty() && s.at_step >= 0 && out.back().at_step >= 0) {
      const auto& prev = out.back();
      long long prev_end = prev.at_step + std::max(0LL, prev.watch_steps);
      if (s.at_step <= prev_end)
        throw InputError(at + ".at_step: must come after the previous rollout's " +
                         (prev.watch_steps > 0 ? "window (it ends at step " + std::to_string(prev_end) + ")"
                                               : "step " + std::to_string(prev.at_step)));
    }
    if (!out.empty() && s.at_s >= 0 && out.back().at_s >= 0 && s.at_s <= out.back().at_s)
      throw InputError(at + ".at_hours: must come after the previous rollout's");
    out.push_back(std::move(s));
  }
  base.reliability.rollouts = std::move(out);
}

void resolve_rollout_files(Plan& plan, const std::string& plan_path) {
  for (std::size_t i = 0; i < plan.reliability.rollouts.size(); ++i) {
    auto& s = plan.reliability.rollouts[i];
    if (s.plan_path.empty() || !s.plan_document.is_null()) continue;
    const std::string at = "reliability.rollouts[" + std::to_string(i) + "].plan";
    std::filesystem::path file(s.plan_path);
    if (file.is_relative()) file = std::filesystem::path(plan_path).parent_path() / file;
    nlohmann::json document;
    Plan second;
    try {
      document = rollout_base(read_json_file(file.string()));
      second = parse_plan(document);
    } catch (const InputError& e) {
      throw InputError(at + " (" + file.string() + "): " + e.what());
    }
    check_second_plan(second, plan, at + " (" + file.string() + ")");
    s.plan_path = file.string();
    s.plan_document = std::move(document);
  }
}

}  // namespace ditwin
