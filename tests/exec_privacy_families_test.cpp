// DP-SGD through `ditwin execute` for every family (DiT, MMDiT, unified): the same clipped, noised,
// Poisson-sampled training on one rank and on two data-parallel ranks (ZeRO-0 and ZeRO-3) ends in
// the same parameters, so clipping is per example, the noise enters the summed gradient once, and
// the mean is over the expected batch on any rank count (one rank once skipped that scaling).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "model/plan.hpp"
#include "tests/test_util.hpp"

namespace {

std::vector<float> train(nlohmann::json j, int ranks, int zero, const std::string& tag) {
  j["parallelism"] = {{"dp", ranks}, {"zero", zero}, {"bucket_mb", 0.25}};
  // SGD: the update is linear in the gradient (AdamW's 1/sqrt(v) magnifies the rounding of sums
  // taken in another order on small gradients).
  j["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.5}};
  j["cluster"]["devices_per_node"] = ranks;
  j["training"]["privacy"] = {{"clip_norm", 0.05}, {"noise_multiplier", 0.5}, {"sampling", "poisson"},
                              {"dataset_size", 1000}, {"expected_batch", 8}};
  std::string base = ::testing::TempDir() + "/" + tag;
  std::ofstream(base + ".json") << j.dump();
  std::string cmd = std::string(DITWIN_BINARY) + " execute " + base + ".json --steps 3 --ranks " + std::to_string(ranks) +
                    " --save-parameters " + base + ".params > " + base + ".log 2>&1 </dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(base + ".params", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> p(bytes.size() / sizeof(float));
  std::memcpy(p.data(), bytes.data(), p.size() * sizeof(float));
  return p;
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    n += a[i] * a[i];
  }
  return std::sqrt(d / n);
}

TEST(ExecPrivacyFamilies, OneRankAndTwoDataParallelRanksTrainTheSameClippedNoisedModel) {
  for (const char* scenario : {"tiny-cpu.json", "tiny-mmdit-cpu.json", "tiny-unified-cpu.json"}) {
    auto j = ditwin::read_json_file(ditwin::test::scenario(scenario));
    auto one = train(j, 1, 0, std::string(scenario) + "-1");
    auto two = train(j, 2, 0, std::string(scenario) + "-2");
    auto z3 = train(j, 2, 3, std::string(scenario) + "-2z3");
    ASSERT_FALSE(one.empty());
    ASSERT_EQ(one.size(), two.size());
    ASSERT_EQ(one.size(), z3.size());
    EXPECT_LT(relative_l2(one, two), 1e-6) << scenario;
    EXPECT_LT(relative_l2(one, z3), 1e-6) << scenario;
  }
}

}  // namespace
