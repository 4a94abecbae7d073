// Every layout the lowering accepts runs for real and trains like one rank: tiny-cpu re-laid out
// as TP, TP with sequence parallelism, PP (1F1B, interleaved), CP and their mixes with DP and
// ZeRO, 3 SGD steps in fp32, reaches the one-rank parameters (the one-rank flat layout that
// --save-parameters writes whatever the layout) within 1e-5 relative L2; and a checkpoint
// written under one layout resumes under another. mpirun with up to 4 ranks (oversubscribed on
// small machines: correctness only).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <tuple>

#include "model/plan.hpp"
#include "model/program.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace ditwin;
const std::string ditwin_bin = DITWIN_BINARY;

std::string write_layout(const std::string& name, const nlohmann::json& parallelism, int steps_between_checkpoints = 0,
                         const std::string& recompute = "none", const std::string& scenario = "tiny-cpu.json") {
  nlohmann::json plan = ditwin::read_json_file(ditwin::test::scenario(scenario));
  plan["name"] = "tiny-cpu-" + name;
  plan["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.05}};
  plan["training"]["recompute"] = recompute;
  plan["parallelism"] = {{"dp", 1}, {"zero", 0}, {"bucket_mb", 0.25}};
  for (const auto& [k, v] : parallelism.items()) plan["parallelism"][k] = v;
  if (steps_between_checkpoints > 0) plan["reliability"]["checkpoint"]["interval_steps"] = steps_between_checkpoints;
  long long world = 1;
  for (const char* k : {"dp", "tp", "pp", "cp"}) world *= plan["parallelism"].value(k, 1);
  plan["cluster"]["devices_per_node"] = world;
  std::string path = ::testing::TempDir() + "/layout-" + name + ".json";
  std::ofstream(path) << plan.dump(2);
  return path;
}

int ranks_of(const nlohmann::json& parallelism) {
  int world = 1;
  for (const char* k : {"dp", "tp", "pp", "cp"}) world *= parallelism.value(k, 1);
  return world;
}

std::vector<float> read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

// Runs `plan` and returns its saved parameters.
std::vector<float> run(const std::string& plan, int ranks, int steps, const std::string& extra = "") {
  std::string base = plan.substr(0, plan.size() - 5);
  std::string cmd = ditwin_bin + " execute " + plan + " --steps " + std::to_string(steps) + " --ranks " +
                    std::to_string(ranks) + " --save-parameters " + base + ".params " + extra + " > " + base +
                    ".log 2>&1 < /dev/null";
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << cmd << "\n" << [&] {
    std::ifstream log(base + ".log");
    return std::string((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  }();
  return read_floats(base + ".params");
}


const std::vector<float>& one_rank() {
  static const std::vector<float> params = run(write_layout("one", {{"dp", 1}}), 1, 3);
  return params;
}

struct Layout {
  const char* name;
  const char* parallelism;  // JSON
  const char* recompute = "none";
};

class ExecLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(ExecLayouts, TrainLikeOneRank) {
  const Layout& l = GetParam();
  nlohmann::json par = nlohmann::json::parse(l.parallelism);
  std::vector<float> p = run(write_layout(l.name, par, 0, l.recompute), ranks_of(par), 3);
  ASSERT_FALSE(one_rank().empty());
  ASSERT_EQ(p.size(), one_rank().size()) << l.name;
  for (float x : p) ASSERT_TRUE(std::isfinite(x)) << l.name << ": a parameter no rank wrote";
  EXPECT_LT(ditwin::test::relative_l2(p, one_rank()), 1e-5) << l.name;
  // ... and the run really differs from doing nothing.
  std::vector<float> init = run(write_layout(std::string(l.name) + "-init", par), ranks_of(par), 1);
  EXPECT_GT(ditwin::test::relative_l2(init, one_rank()), 1e-4) << l.name;
}

INSTANTIATE_TEST_SUITE_P(
    All, ExecLayouts,
    ::testing::Values(Layout{"tp2", R"({"tp": 2})"}, Layout{"tp2_sp", R"({"tp": 2, "sequence_parallel": true})"},
                      Layout{"pp2_1f1b", R"({"pp": 2, "schedule": "1f1b"})"},
                      Layout{"pp2_gpipe", R"({"pp": 2, "schedule": "gpipe"})"},
                      Layout{"pp2_interleaved", R"({"pp": 2, "schedule": "interleaved", "virtual_stages": 2})"},
                      Layout{"cp2", R"({"cp": 2})"}, Layout{"tp2_dp2", R"({"tp": 2, "dp": 2})"},
                      Layout{"pp2_dp2_zero1", R"({"pp": 2, "dp": 2, "zero": 1})"},
                      Layout{"tp2_pp2", R"({"tp": 2, "pp": 2})"},
                      Layout{"cp2_dp2_zero2", R"({"cp": 2, "dp": 2, "zero": 2})"},
                      Layout{"tp2_dp2_zero3", R"({"tp": 2, "dp": 2, "zero": 3})"},
                      Layout{"pp2_dp2_zero3", R"({"pp": 2, "dp": 2, "zero": 3})"},
                      // Recompute re-runs the forward ops the Program lists, TP collectives included.
                      Layout{"tp2_sp_full_recompute", R"({"tp": 2, "sequence_parallel": true})", "full"},
                      Layout{"pp2_interleaved_selective_recompute",
                             R"({"pp": 2, "schedule": "interleaved", "virtual_stages": 2})", "selective"}),
    [](const ::testing::TestParamInfo<Layout>& info) { return std::string(info.param.name); });

// `ditwin execute --ranks 2` starts mpirun, which by default forwards its stdin to rank 0: in a
// `while read` loop over layouts that swallowed the rest of the list after the first run.
TEST(ExecLayouts, MultiRankRunLeavesTheCallersInputAlone) {
  std::string plan = write_layout("stdin", {{"tp", 2}});
  std::string out = ::testing::TempDir() + "/layout-stdin.txt";
  std::string cmd = "printf 'first\\nsecond\\n' | (read a; " + ditwin_bin + " execute " + plan +
                    " --steps 1 --ranks 2 > /dev/null 2>&1; read b; echo \"$a $b\" > " + out + ")";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "first second");
}

// A checkpoint is in the one-rank flat layout: written under tp2 x pp2, it resumes under cp2 and
// the run ends where an uninterrupted cp2 run of the same steps ends.
TEST(ExecLayoutCheckpoints, ResumeUnderAnotherLayout) {
  std::string ck = ::testing::TempDir() + "/layout-ck";
  std::filesystem::remove_all(ck);
  nlohmann::json first = {{"tp", 2}, {"pp", 2}}, second = {{"cp", 2}};
  run(write_layout("ck-first", first, 2), 4, 3, "--checkpoint-dir " + ck);  // checkpoint at step 2
  std::string plan = write_layout("ck-second", second, 2);
  std::vector<float> resumed = run(plan, 2, 4, "--checkpoint-dir " + ck);
  std::ifstream log(plan.substr(0, plan.size() - 5) + ".log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("resumed from the checkpoint of step 2"), std::string::npos) << text;
  std::vector<float> straight = run(write_layout("ck-straight", second), 2, 4);
  EXPECT_LT(ditwin::test::relative_l2(resumed, straight), 1e-5);
}

// The executor plays the Program by the player's rules: on every rank, each stream's ops start in
// program order (read back from the measured trace of an interleaved tp2 x pp2 run).
TEST(ExecLayouts, MeasuredStreamsFollowProgramOrder) {
  nlohmann::json par = {{"tp", 2}, {"pp", 2}, {"schedule", "interleaved"}, {"virtual_stages", 2}};
  std::string plan = write_layout("order", par);
  std::string trace = plan.substr(0, plan.size() - 5) + ".trace.json";
  run(plan, 4, 3, "--trace " + trace);
  Program program = lower(ditwin::load_plan(plan));
  nlohmann::json t = ditwin::read_json_file(trace);
  // (rank, name) -> start of each occurrence (one per step), in time order.
  std::map<std::pair<long long, std::string>, std::vector<double>> seen;
  for (const auto& e : t["traceEvents"])
    if (e.value("ph", "") == "X" && e.value("cat", "") != "step")
      seen[{e["pid"].get<long long>() - 1, e["name"].get<std::string>()}].push_back(e["ts"].get<double>());  // pid = rank + 1
  int checked = 0;
  for (long long rank = 0; rank < program.world(); ++rank) {
    const auto& ops = program.class_of(rank).ops;
    for (int stream = 0; stream < stream_count; ++stream) {
      if (stream == static_cast<int>(Stream::pp)) continue;  // posted as soon as ready, side by side
      double last = -1;
      std::string last_name;
      for (const Op& op : ops) {
        if (static_cast<int>(op.stream) != stream) continue;
        auto it = seen.find({rank, op.name});
        ASSERT_NE(it, seen.end()) << "rank " << rank << " never ran " << op.name;
        ASSERT_EQ(it->second.size(), 3u) << op.name;
        std::vector<double> starts = it->second;
        std::sort(starts.begin(), starts.end());
        double t1 = starts[1];  // the second step
        EXPECT_GE(t1, last) << "rank " << rank << ": " << op.name << " started before " << last_name;
        last = t1;
        last_name = op.name;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 500);
}

}  // namespace

// The text-and-image families under every layout: two ranks (ZeRO 0, 1
// and 3), pipelines (1F1B, interleaved, GPipe x DP) and TP (alone, x DP with ZeRO-2, x PP) reach
// the parameters of one rank, and so do CP, CP x DP with ZeRO-3, TP x CP and (MMDiT) TP with
// sequence parallelism, alone and x PP; the unified model's sequence parallelism is refused.
TEST(ExecFamilies, MmditAndUnifiedTrainLikeOneRankUnderEveryLayoutTheyRun) {
  for (const char* family : {"mmdit", "unified"}) {
    const std::string scenario = std::string("tiny-") + family + "-cpu.json", tag = std::string(family) + "-";
    const auto one = run(write_layout(tag + "one", {{"dp", 1}}, 0, "none", scenario), 1, 3);
    for (int zero : {0, 1, 3}) {
      const auto p = run(write_layout(tag + "dp2-z" + std::to_string(zero), {{"dp", 2}, {"zero", zero}}, 0, "selective",
                                      scenario), 2, 3);
      EXPECT_LT(ditwin::test::relative_l2(p, one), 1e-5) << family << " zero " << zero;
    }
    // Pipelines: 1F1B over 2 stages, interleaved (2 chunks per stage), GPipe with DP and ZeRO-1.
    const std::vector<std::pair<std::string, nlohmann::json>> pipelines = {
        {"pp2", {{"pp", 2}}},
        {"pp2-interleaved", {{"pp", 2}, {"virtual_stages", 2}, {"schedule", "interleaved"}}},
        {"pp2-gpipe-dp2-z1", {{"pp", 2}, {"schedule", "gpipe"}, {"dp", 2}, {"zero", 1}}}};
    for (const auto& [name, par] : pipelines) {
      const auto p = run(write_layout(tag + name, par, 0, "none", scenario), ranks_of(par), 3);
      EXPECT_LT(ditwin::test::relative_l2(p, one), 1e-5) << family << " " << name;
    }
    const auto init = run(write_layout(tag + "init", {{"dp", 1}}, 0, "none", scenario), 1, 1);
    EXPECT_GT(ditwin::test::relative_l2(init, one), 1e-4) << family << ": three steps changed nothing";
    // Tensor parallelism (Megatron's split of every stream; the unified model's token table and LM
    // head vocabulary-parallel), MMDiT's sequence parallelism, and context parallelism (K/V
    // all-gathered; the unified model's slices straddle text and image), alone and mixed; the
    // unified model's sequence parallelism is refused.
    for (const auto& [name, par] : std::vector<std::pair<std::string, nlohmann::json>>{
             {"tp2", {{"tp", 2}}}, {"tp2-dp2-z2", {{"tp", 2}, {"dp", 2}, {"zero", 2}}}, {"tp2-pp2", {{"tp", 2}, {"pp", 2}}},
             {"cp2", {{"cp", 2}}}, {"cp2-dp2-z3", {{"cp", 2}, {"dp", 2}, {"zero", 3}}}, {"tp2-cp2", {{"tp", 2}, {"cp", 2}}},
             {"tp2-sp", {{"tp", 2}, {"sequence_parallel", true}}},
             {"tp2-sp-pp2", {{"tp", 2}, {"sequence_parallel", true}, {"pp", 2}}}}) {
      if (std::string(family) == "unified" && name.find("sp") != std::string::npos) continue;  // refused below
      const auto p = run(write_layout(tag + name, par, 0, "full", scenario), ranks_of(par), 3);
      EXPECT_LT(ditwin::test::relative_l2(p, one), 1e-5) << family << " " << name;
    }
    for (const auto& [name, par, key] : std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
             {"tp2-sp", {{"tp", 2}, {"sequence_parallel", true}}, "parallelism.sequence_parallel: the CPU executor runs"}}) {
      if (std::string(family) == "mmdit") continue;  // MMDiT runs sequence parallelism
      const std::string path = write_layout(tag + name + "-refused", par, 0, "none", scenario);
      const std::string cmd = ditwin_bin + " execute " + path + " --steps 1 --ranks 2 > " + path + ".log 2>&1 < /dev/null";
      EXPECT_NE(std::system(cmd.c_str()), 0) << family << ": " << name << " should be refused";
      std::ifstream log(path + ".log");
      const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      EXPECT_NE(text.find(key), std::string::npos) << text;
    }
  }
}
