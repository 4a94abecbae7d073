// DP-SGD end to end through `ditwin execute` under mpirun: with no noise and an unbounded clip norm
// it is plain data-parallel training bit for bit; the noise enters the reduced gradient exactly
// once whatever the rank count; tensor and pipeline parallelism clip and noise as one rank does,
// context parallelism too, and the layout DP-SGD cannot run is refused; the tiny DP scenario learns and reports the epsilon it
// spent.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <tuple>
#include <utility>

#include <sys/wait.h>  // WEXITSTATUS

#include "model/plan.hpp"
#include "model/privacy.hpp"
#include "tests/test_util.hpp"

namespace {

const std::string ditwin_bin = DITWIN_BINARY;

struct Outcome {
  std::vector<float> parameters;
  std::vector<double> losses;
  nlohmann::json report;
};

std::string write(const nlohmann::json& j, const std::string& name) {
  std::string path = ::testing::TempDir() + "/" + name + ".json";
  std::ofstream(path) << j.dump();
  return path;
}

Outcome execute(const std::string& plan, int ranks, int steps) {
  std::string base = plan.substr(0, plan.size() - 5);
  std::string cmd = ditwin_bin + " execute " + plan + " --steps " + std::to_string(steps) + " --ranks " +
                    std::to_string(ranks) + " --report " + base + ".report.json --save-parameters " + base +
                    ".params > " + base + ".log 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Outcome run;
  std::ifstream in(base + ".params", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  run.parameters.resize(bytes.size() / sizeof(float));
  std::memcpy(run.parameters.data(), bytes.data(), run.parameters.size() * sizeof(float));
  run.report = ditwin::read_json_file(base + ".report.json");
  for (const auto& l : run.report["extra"]["losses"]) run.losses.push_back(l.get<double>());
  return run;
}

// tiny-cpu with SGD (its update is linear in the gradient, so noise shows in the parameters as is).
nlohmann::json tiny_sgd(int dp) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu.json"));
  j["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.5}};
  j["parallelism"] = {{"dp", dp}, {"zero", 0}, {"bucket_mb", 0.25}};
  j["cluster"]["devices_per_node"] = dp;
  return j;
}

TEST(ExecPrivacyRuntime, UnboundedClipAndNoNoiseEqualsPlainTrainingBitForBit) {
  auto plain = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu.json"));
  auto dp = plain;
  dp["training"]["privacy"] = {{"clip_norm", 1e30}, {"noise_multiplier", 0.0}, {"sampling", "shuffle"}, {"dataset_size", 1000}};
  Outcome a = execute(write(plain, "plain"), 2, 3), b = execute(write(dp, "dp_unbounded"), 2, 3);
  ASSERT_FALSE(a.parameters.empty());
  EXPECT_EQ(a.losses, b.losses);
  ASSERT_EQ(a.parameters.size(), b.parameters.size());
  EXPECT_EQ(std::memcmp(a.parameters.data(), b.parameters.data(), a.parameters.size() * sizeof(float)), 0);
}

TEST(ExecPrivacyRuntime, NoiseEntersTheSummedGradientExactlyOnceOnAnyRankCountAndZeroStage) {
  // One SGD step: the parameters of a noisy run minus those of the same run without noise are
  // -lr x noise / global_batch, whose spread must be noise_multiplier x clip_norm (a noise added
  // on both ranks would show sqrt(2) times that; none, zero).
  const double sigma = 2.0, clip = 0.5, lr = 0.5;
  // Last case: Poisson sampling of 8 expected examples into the 16 slots, averaged over 8.
  // ZeRO-3 adds it per parameter group, into the gathered gradients before their reduce-scatter;
  // on one rank ZeRO-3 shards nothing and the noise goes per bucket.
  for (auto [ranks, zero, expected] : {std::tuple{1, 0, 0}, std::tuple{2, 0, 0}, std::tuple{2, 2, 0}, std::tuple{2, 3, 0},
                                       std::tuple{1, 3, 0}, std::tuple{2, 0, 8}}) {
    auto quiet = tiny_sgd(ranks);
    quiet["parallelism"]["zero"] = zero;  // ZeRO-2: the noise goes in before the last reduce-scatter
    quiet["training"]["privacy"] = {{"clip_norm", clip}, {"noise_multiplier", 0.0}, {"sampling", "shuffle"}, {"dataset_size", 1000}};
    if (expected > 0) {
      quiet["training"]["privacy"]["sampling"] = "poisson";
      quiet["training"]["privacy"]["expected_batch"] = expected;
    }
    auto noisy = quiet;
    noisy["training"]["privacy"]["noise_multiplier"] = sigma;
    std::string tag = std::to_string(ranks) + "z" + std::to_string(zero) + "e" + std::to_string(expected);
    Outcome q = execute(write(quiet, "quiet" + tag), ranks, 1), n = execute(write(noisy, "noisy" + tag), ranks, 1);
    ASSERT_EQ(q.parameters.size(), n.parameters.size());
    ASSERT_FALSE(q.parameters.empty());
    double sum = 0, sq = 0;
    const double gb = expected > 0 ? expected : quiet["training"]["global_batch"].get<double>();
    for (std::size_t i = 0; i < q.parameters.size(); ++i) {
      double z = (q.parameters[i] - n.parameters[i]) * gb / lr;  // the noise on the summed gradient
      sum += z;
      sq += z * z;
    }
    double count = static_cast<double>(q.parameters.size()), mean = sum / count;
    EXPECT_NEAR(mean, 0.0, 5 * sigma * clip / std::sqrt(count)) << ranks << " rank(s), ZeRO " << zero << ", expected batch " << expected;
    EXPECT_NEAR(std::sqrt(sq / count - mean * mean), sigma * clip, 0.01 * sigma * clip) << ranks << " rank(s), ZeRO " << zero << ", expected batch " << expected;
  }
}

TEST(ExecPrivacyRuntime, ZeroThreeClipsAndNoisesAsZeroZeroDoes) {
  // The same DP-SGD (clipping bites at 0.05, noise on) on two ranks with ZeRO-0 and with ZeRO-3:
  // the clipped sums are the same, and the noise is counter-based per flat element (whichever rank
  // adds it, once), so the two runs' parameters agree to float rounding after three AdamW steps.
  auto z0 = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu-dp.json"));
  z0["training"]["privacy"]["clip_norm"] = 0.05;
  auto z3 = z0;
  z3["parallelism"]["zero"] = 3;
  Outcome a = execute(write(z0, "dp_zero0"), 2, 3), b = execute(write(z3, "dp_zero3"), 2, 3);
  ASSERT_EQ(a.parameters.size(), b.parameters.size());
  ASSERT_FALSE(a.parameters.empty());
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.parameters.size(); ++i) {
    diff += (a.parameters[i] - b.parameters[i]) * (a.parameters[i] - b.parameters[i]);
    norm += a.parameters[i] * a.parameters[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-6);
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (std::size_t s = 0; s < a.losses.size(); ++s) EXPECT_NEAR(a.losses[s], b.losses[s], 1e-6 * std::abs(a.losses[s]));
}

// tiny-cpu-dp (Poisson sampling, noise on) with clipping that bites, laid out as dp x tp x pp.
nlohmann::json tiny_dp_layout(int dp, int tp, int pp = 1) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu-dp.json"));
  j["training"]["privacy"]["clip_norm"] = 0.05;
  j["parallelism"] = {{"dp", dp}, {"tp", tp}, {"pp", pp}, {"zero", 0}, {"bucket_mb", 0.25}};
  j["cluster"]["devices_per_node"] = dp * tp * pp;
  return j;
}

// Parameters and losses of `b` against the one-rank run `one`.
void expect_same_training(const Outcome& one, const Outcome& b, const std::string& tag) {
  ASSERT_EQ(one.parameters.size(), b.parameters.size()) << tag;
  EXPECT_LT(ditwin::test::relative_l2(b.parameters, one.parameters), 1e-5) << tag;
  ASSERT_EQ(one.losses.size(), b.losses.size()) << tag;
  for (std::size_t s = 0; s < one.losses.size(); ++s)
    EXPECT_NEAR(one.losses[s], b.losses[s], 1e-6 * std::abs(one.losses[s])) << tag << " step " << s;
}

TEST(ExecPrivacyRuntime, TensorParallelClipsAndNoisesAsOneRankDoes) {
  // TP ranks' per-sample squared norms are partial sums (split weights; whole ones counted on TP
  // rank 0 only) all-reduced before the clip, and each element's noise is keyed by its one-rank
  // index: so tp 2, alone and with dp 2, reaches the one-rank parameters after three AdamW steps.
  Outcome one = execute(write(tiny_dp_layout(1, 1), "dp1_tp1"), 1, 3);
  ASSERT_FALSE(one.parameters.empty());
  ASSERT_EQ(one.losses.size(), 3u);
  for (int dp : {1, 2}) {
    std::string tag = "dp" + std::to_string(dp) + "_tp2";
    expect_same_training(one, execute(write(tiny_dp_layout(dp, 2), tag), 2 * dp, 3), tag);
  }
}

TEST(ExecPrivacyRuntime, PipelineParallelClipsAndNoisesAsOneRankDoes) {
  // Each stage's per-sample squared norms are partial sums over its layers, all-reduced over the
  // stages (after the TP sum) before the clip, which stage s runs s micro-batches later: every
  // schedule, with DP and with TP, reaches the one-rank parameters after three AdamW steps.
  Outcome one = execute(write(tiny_dp_layout(1, 1), "dp1_pp1"), 1, 3);
  ASSERT_FALSE(one.parameters.empty());
  auto gpipe = tiny_dp_layout(1, 1, 2), interleaved = gpipe;
  gpipe["parallelism"]["schedule"] = "gpipe";
  interleaved["parallelism"]["schedule"] = "interleaved";
  interleaved["parallelism"]["virtual_stages"] = 2;
  for (const auto& [plan, tag, ranks] : {std::tuple{tiny_dp_layout(1, 1, 2), "pp2", 2}, std::tuple{gpipe, "pp2_gpipe", 2},
                                         std::tuple{interleaved, "pp2_interleaved", 2},
                                         std::tuple{tiny_dp_layout(2, 1, 2), "dp2_pp2", 4},
                                         std::tuple{tiny_dp_layout(1, 2, 2), "tp2_pp2", 4}})
    expect_same_training(one, execute(write(plan, tag), ranks, 3), tag);
}

TEST(ExecPrivacyRuntime, ContextParallelClipsAndNoisesAsOneRankDoes) {
  // A sample's tokens are split over the CP ranks: each weighted op's rows are all-gathered, each
  // CP rank computes the whole norms of the samples it owns, and those are all-reduced before the
  // clip; so cp 2, alone and with TP, DP or PP, reaches the one-rank parameters.
  Outcome one = execute(write(tiny_dp_layout(1, 1), "dp1_cp1"), 1, 3);
  ASSERT_FALSE(one.parameters.empty());
  auto with_cp = [](nlohmann::json j, int ranks) {
    j["parallelism"]["cp"] = 2;
    j["cluster"]["devices_per_node"] = ranks;
    return j;
  };
  for (const auto& [plan, tag, ranks] : {std::tuple{with_cp(tiny_dp_layout(1, 1), 2), "cp2", 2},
                                         std::tuple{with_cp(tiny_dp_layout(1, 2), 4), "tp2_cp2", 4},
                                         std::tuple{with_cp(tiny_dp_layout(2, 1), 4), "dp2_cp2", 4},
                                         std::tuple{with_cp(tiny_dp_layout(1, 1, 2), 4), "cp2_pp2", 4}})
    expect_same_training(one, execute(write(plan, tag), ranks, 3), tag);
}

TEST(ExecPrivacyRuntime, RefusesSequenceParallelLayouts) {
  // Sequence parallelism is refused by the executor before mpirun starts, exit 2, naming the key.
  auto sp = tiny_dp_layout(1, 2);
  sp["parallelism"]["sequence_parallel"] = true;
  for (const auto& [plan, name, key] : {std::tuple{sp, "dp_tp2_sp", "parallelism.sequence_parallel: "}}) {
    std::string path = write(plan, name), log = ::testing::TempDir() + "/" + name + ".log";
    int rc = std::system((ditwin_bin + " execute " + path + " --steps 1 --ranks 2 > " + log + " 2>&1 < /dev/null").c_str());
    ASSERT_TRUE(WIFEXITED(rc)) << name;
    EXPECT_EQ(WEXITSTATUS(rc), 2) << name;
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find(key), std::string::npos) << name << ": " << text;
    EXPECT_EQ(text.find("step 1/"), std::string::npos) << name << ": trained before refusing";
  }
}

TEST(ExecPrivacyRuntime, TinyDpScenarioLearnsOnTwoRanksAndReportsEpsilon) {
  std::string plan = ditwin::test::scenario("tiny-cpu-dp.json");
  auto j = ditwin::read_json_file(plan);
  Outcome r = execute(write(j, "tiny_dp"), 2, 16);
  ASSERT_EQ(r.losses.size(), 16u);
  double first = (r.losses[0] + r.losses[1]) / 2, last = (r.losses[14] + r.losses[15]) / 2;
  EXPECT_LT(last, first * 0.95);
  const auto& p = r.report["extra"]["privacy"];
  auto parsed = ditwin::load_plan(plan);
  double expected = ditwin::RdpAccountant(28.0 / 50000, 0.8).spent(16, 1e-5, ditwin::EpsilonConversion::improved).epsilon;
  EXPECT_NEAR(p["epsilon"].get<double>(), expected, 1e-12);
  EXPECT_EQ(p["steps"].get<long long>(), 16);
  EXPECT_EQ(p["expected_batch"].get<long long>(), 28);
  EXPECT_EQ(p["poisson_examples_dropped"].get<long long>(), 0);  // 64 slots for 28 expected
  EXPECT_EQ(parsed.training.privacy.sampling, p["sampling"].get<std::string>());
  // The per-step line and the summary carry the epsilon too, and never a key or data.
  std::ifstream log(::testing::TempDir() + "/tiny_dp.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("epsilon"), std::string::npos);
  EXPECT_NE(text.find("DP-SGD: epsilon"), std::string::npos);
}

}  // namespace
