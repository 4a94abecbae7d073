// What `ditwin plan` reports: the plan's accounting and its Program's shape, as JSON
// (keys documented in docs/plan.md) and as readable text.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "model/plan.hpp"
#include "model/program.hpp"

namespace ditwin {

nlohmann::json plan_summary(const Plan& plan, const Program& program);
std::string format_plan_summary(const nlohmann::json& summary);

// Human-readable quantities: 405.9e9 -> "405.9 B", bytes -> "12.3 GiB".
std::string human_count(double v);
std::string human_bytes(double bytes);

}  // namespace ditwin
