// A multi-stage plan executed for real (scenarios/tiny-cpu-stages.json: 64 px on dp 2 with ZeRO-1,
// then 128 px on tp 2): the second stage starts from the first stage's final weights, resharded;
// a campaign killed in its second stage resumes there, at its last checkpoint, and ends where an
// uninterrupted one does.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "model/plan.hpp"
#include "tests/test_util.hpp"

namespace {

const std::string ditwin_bin = DITWIN_BINARY;

std::string temp(const std::string& name) { return ::testing::TempDir() + "/campaign-" + name; }

std::string write_json(const nlohmann::json& j, const std::string& name) {
  std::string path = temp(name) + ".json";
  std::ofstream(path) << j.dump(1);
  return path;
}

std::vector<float> read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs `ditwin execute` with `args`; returns its status and leaves its output in `log`.
int execute(const std::string& args, const std::string& log) {
  std::string cmd = ditwin_bin + " execute " + args + " </dev/null > " + log + " 2>&1";
  return std::system(cmd.c_str());
}

double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  EXPECT_FALSE(a.empty());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  return diff / scale;
}

TEST(ExecCampaign, TheSecondStageStartsFromTheFirstStagesFinalWeightsResharded) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu-stages.json"));
  // Stage 2 (tp 2, 128 px) with a vanishing learning rate: its updates are ~1e-29, so its final
  // weights are the weights it started from, which must be stage 1's (dp 2, ZeRO-1) final ones.
  j["stages"][1]["training"]["optimizer"]["lr"] = 1e-30;
  std::string plan = write_json(j, "carry");
  std::string dir = temp("carry-ck");
  std::filesystem::remove_all(dir);
  ASSERT_EQ(execute(plan + " --checkpoint-dir " + dir + " --report " + temp("carry-report.json") +
                        " --save-parameters " + temp("carry.params"),
                    temp("carry.log")),
            0)
      << read_text(temp("carry.log"));
  std::string log = read_text(temp("carry.log"));
  EXPECT_NE(log.find("stage 1/2 \"64px\": steps 0 -> 6"), std::string::npos) << log;
  EXPECT_NE(log.find("stage 2/2 \"128px\": steps 6 -> 12, dp 1 x tp 2"), std::string::npos) << log;
  EXPECT_NE(log.find("starting from the previous stage's checkpoint of step 6"), std::string::npos) << log;
  auto report = ditwin::read_json_file(temp("carry-report.json"));
  ASSERT_EQ(report["stages"].size(), 2u);
  EXPECT_EQ(report["stages"][1]["extra"]["losses"].size(), 6u);

  // Stage 1 alone: the base plan without stages is exactly stage 1.
  auto alone = j;
  alone.erase("stages");
  ASSERT_EQ(execute(write_json(alone, "alone") + " --steps 6 --save-parameters " + temp("alone.params"), temp("alone.log")), 0)
      << read_text(temp("alone.log"));
  auto stage1 = read_floats(temp("alone.params"));
  auto final_weights = read_floats(temp("carry.params"));
  EXPECT_LT(relative_difference(final_weights, stage1), 1e-6);
  // And stage 1 moved the weights: after its first step they differ from after its sixth.
  ASSERT_EQ(execute(write_json(alone, "alone") + " --steps 1 --save-parameters " + temp("init.params"), temp("init.log")), 0);
  EXPECT_GT(relative_difference(read_floats(temp("init.params")), stage1), 1e-3);
}

TEST(ExecCampaign, AKilledCampaignResumesInItsStageAtItsLastCheckpoint) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu-stages.json"));
  std::string plan = write_json(j, "resume");
  // Uninterrupted.
  std::string whole = temp("whole-ck");
  std::filesystem::remove_all(whole);
  ASSERT_EQ(execute(plan + " --checkpoint-dir " + whole + " --save-parameters " + temp("whole.params"), temp("whole.log")), 0)
      << read_text(temp("whole.log"));
  // Killed at the start of step 9 (stage 2 runs steps 6 to 12, checkpoints after 8 and 10)...
  auto killed = j;
  killed["stages"][1]["reliability"] = {{"inject", {{{"kind", "kill"}, {"rank", 0}, {"step", 9}}}}};
  std::string dir = temp("resume-ck");
  std::filesystem::remove_all(dir);
  EXPECT_NE(execute(write_json(killed, "killed") + " --checkpoint-dir " + dir, temp("killed.log")), 0);
  EXPECT_NE(read_text(temp("killed.log")).find("run the same command again to resume"), std::string::npos)
      << read_text(temp("killed.log"));
  // ...and run again: stage 1 is skipped, stage 2 resumes from its checkpoint of step 8.
  ASSERT_EQ(execute(plan + " --checkpoint-dir " + dir + " --save-parameters " + temp("resumed.params"), temp("resumed.log")), 0)
      << read_text(temp("resumed.log"));
  std::string log = read_text(temp("resumed.log"));
  EXPECT_NE(log.find("stage 1/2 \"64px\": complete (checkpoint of step 6"), std::string::npos) << log;
  EXPECT_NE(log.find("resumed from the checkpoint of step 8"), std::string::npos) << log;
  EXPECT_EQ(log.find("step 7/12"), std::string::npos) << "stage 2 started over: " << log;
  EXPECT_NE(log.find("step 12/12"), std::string::npos) << log;
  EXPECT_LT(relative_difference(read_floats(temp("resumed.params")), read_floats(temp("whole.params"))), 1e-6);
}

}  // namespace
