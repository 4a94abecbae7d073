// Shared helpers for tests: a small valid plan to mutate, and the repository's scenarios.
#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

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

// scenarios/tiny-cpu.json with dp ranks, a batch layout, a ZeRO stage and an optimizer (SGD with
// momentum by default: Adam turns fp32 summation-order noise into O(lr) steps), written to the
// test's temporary folder; returns its path.
inline std::string write_tiny_plan(const std::string& name, int dp, int micro_batch, int zero, int global_batch = 8,
                                   const std::string& optimizer = "sgd", const std::string& precision = "fp32") {
  auto j = read_json_file(scenario("tiny-cpu.json"));
  j["training"]["precision"] = precision;
  j["training"]["optimizer"] = {{"kind", optimizer}, {"lr", optimizer == "sgd" ? 0.1 : 3e-3}, {"momentum", optimizer == "sgd" ? 0.9 : 0.0}};
  j["training"]["global_batch"] = global_batch;
  j["training"]["micro_batch"] = micro_batch;
  j["parallelism"] = {{"dp", dp}, {"zero", zero}, {"bucket_mb", 0.25}};
  j["cluster"]["devices_per_node"] = dp;
  std::string path = ::testing::TempDir() + "/" + name + ".json";
  std::ofstream(path) << j.dump();
  return path;
}

// The message of the InputError a plan raises, or "" when it parses.
inline std::string plan_error(const nlohmann::json& j) {
  try {
    parse_plan(j);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// ||a − b|| / ||b|| over two parameter arrays (e.g. what --save-parameters wrote).
inline double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

}  // namespace ditwin::test
