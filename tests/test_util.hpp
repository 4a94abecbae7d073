// Shared helpers for tests: a small valid plan to mutate, and the repository's scenarios.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "model/plan.hpp"

namespace ditwin::test {

inline nlohmann::json base_plan() {
  return nlohmann::json::parse(R"({
    "name": "t",
    "model": {"preset": "DiT-B/2"},
    "training": {"global_batch": 64, "micro_batch": 4},
    "parallelism": {"dp": 8},
    "cluster": {"device": "H100-SXM", "nodes": 1, "devices_per_node": 8}
  })");
}

inline std::string scenario(const std::string& name) { return std::string(DITWIN_SOURCE_DIR) + "/scenarios/" + name; }

// The message of the InputError a plan raises, or "" when it parses.
inline std::string plan_error(const nlohmann::json& j) {
  try {
    parse_plan(j);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace ditwin::test
