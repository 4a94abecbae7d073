// The executor end to end through `ditwin execute`: data parallelism over MPI processes gives
// the same update as one process with the whole batch, for DDP and every ZeRO stage, with and
// without gradient accumulation; the same seed gives the same losses; the loss falls.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "model/plan.hpp"
#include "tests/test_util.hpp"

namespace {

const std::string ditwin_bin = DITWIN_BINARY;

// Equivalence is checked with SGD: Adam divides by the gradient's own magnitude, so fp32
// summation-order noise in near-zero gradients (adaLN-Zero makes many) becomes O(lr) steps.
std::string write_plan(const std::string& name, int dp, int micro_batch, int zero, int global_batch = 8,
                       const std::string& optimizer = "sgd") {
  return ditwin::test::write_tiny_plan(name, dp, micro_batch, zero, global_batch, optimizer);
}

struct Outcome {
  std::vector<float> parameters;
  std::vector<double> losses;
};

Outcome execute(const std::string& plan, int ranks, int steps = 3) {
  std::string base = plan.substr(0, plan.size() - 5);
  std::string cmd = ditwin_bin + " execute " + plan + " --steps " + std::to_string(steps) + " --ranks " +
                    std::to_string(ranks) + " --report " + base + ".report.json --save-parameters " + base +
                    ".params > " + base + ".log 2>&1";
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << cmd;
  Outcome run;
  std::ifstream in(base + ".params", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  run.parameters.resize(bytes.size() / sizeof(float));
  std::memcpy(run.parameters.data(), bytes.data(), run.parameters.size() * sizeof(float));
  auto report = ditwin::read_json_file(base + ".report.json");
  for (const auto& l : report["extra"]["losses"]) run.losses.push_back(l.get<double>());
  return run;
}

// Largest difference relative to the parameters' scale.
double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(a[i])));
  }
  return diff / scale;
}

TEST(ExecRuntime, DataParallelRanksMatchOneRankWithTheWholeBatch) {
  Outcome single = execute(write_plan("one", 1, 8, 0), 1);
  ASSERT_FALSE(single.parameters.empty());
  for (int zero : {0, 1, 2, 3}) {
    Outcome two = execute(write_plan("two_z" + std::to_string(zero), 2, 4, zero), 2);
    EXPECT_LT(relative_difference(single.parameters, two.parameters), 1e-5) << "ZeRO " << zero;
    ASSERT_EQ(single.losses.size(), two.losses.size());
    for (std::size_t s = 0; s < single.losses.size(); ++s)
      EXPECT_NEAR(two.losses[s], single.losses[s], 1e-5 * std::fabs(single.losses[s])) << "ZeRO " << zero << " step " << s;
  }
}

TEST(ExecRuntime, GradientAccumulationMatchesOneBigMicroBatch) {
  Outcome single = execute(write_plan("acc_one", 1, 8, 0), 1);
  for (int zero : {0, 2}) {
    Outcome accumulated = execute(write_plan("acc_two_z" + std::to_string(zero), 2, 2, zero), 2);
    EXPECT_LT(relative_difference(single.parameters, accumulated.parameters), 1e-5) << "ZeRO " << zero;
  }
}

TEST(ExecRuntime, SameSeedSameLossesAndTheLossFalls) {
  std::string plan = write_plan("seeded", 2, 4, 1, 16, "adamw");
  Outcome a = execute(plan, 2, 16), b = execute(plan, 2, 16);
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(a.parameters, b.parameters);
  ASSERT_EQ(a.losses.size(), 16u);
  double first = (a.losses[0] + a.losses[1]) / 2, last = (a.losses[14] + a.losses[15]) / 2;
  EXPECT_LT(last, first * 0.95);
}

TEST(ExecRuntime, WrongRankCountIsRefusedWithTheKeyToChange) {
  std::string plan = write_plan("refuse", 2, 4, 0);
  std::string log = ::testing::TempDir() + "/refuse.log";
  int rc = std::system((ditwin_bin + " execute " + plan + " --ranks 3 > " + log + " 2>&1").c_str());
  EXPECT_NE(rc, 0);
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("--ranks 3"), std::string::npos) << text;
}

// An output that could not be written is refused before any work, not after the run: the
// executor (every output), the supervised executor, the simulator and calibrate.
TEST(ExecRuntime, UnwritableOutputsAreRefusedBeforeTheRunStarts) {
  const std::string plan = write_plan("outputs", 2, 4, 0), dir = ::testing::TempDir();
  const std::string missing = dir + "/no-such-directory/out.json";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"execute " + plan + " --ranks 2 --steps 3 --report " + missing, "--report"},
      {"execute " + plan + " --ranks 2 --steps 3 --trace " + missing, "--trace"},
      {"execute " + plan + " --ranks 2 --steps 3 --save-parameters " + dir, "--save-parameters"},  // a directory
      {"execute " + plan + " --ranks 2 --steps 3 --supervise --checkpoint-dir " + dir + "/outputs-ck --report " + missing,
       "--report"},
      {"simulate " + plan + " --report " + missing, "--report"},
      {"calibrate --backend cpu --out " + missing, "--out"}};
  for (const auto& [args, option] : cases) {
    const std::string log = dir + "/outputs.log";
    const int rc = std::system((ditwin_bin + " " + args + " > " + log + " 2>&1 < /dev/null").c_str());
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(rc, 0) << args;
    EXPECT_NE(text.find("ditwin: error: " + option), std::string::npos) << args << "\n" << text;
    EXPECT_EQ(text.find("step 1/"), std::string::npos) << args << ": trained before refusing\n" << text;
  }
}

}  // namespace
