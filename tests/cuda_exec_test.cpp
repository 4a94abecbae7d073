// The CUDA executor end to end through `ditwin execute --backend cuda` (label gpu; skips with a
// message without a GPU): from the same initial parameters and data, the bf16 GPU step agrees
// with the fp32 CPU step within bf16 precision; the loss falls; with two or more GPUs, data
// parallelism over NCCL matches one GPU with the whole batch for every ZeRO stage.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "kernels/cuda/common.hpp"
#include "model/plan.hpp"
#include "tests/test_util.hpp"

namespace {

const std::string ditwin_bin = DITWIN_BINARY;

std::string write_plan(const std::string& name, const std::string& precision, int dp, int micro_batch, int zero,
                       const std::string& optimizer = "sgd", int global_batch = 8) {
  return ditwin::test::write_tiny_plan(name, dp, micro_batch, zero, global_batch, optimizer, precision);
}

struct Outcome {
  std::vector<float> parameters;
  std::vector<double> losses;
  std::string log;
};

Outcome execute(const std::string& plan, const std::string& backend, int ranks, int steps) {
  std::string base = plan.substr(0, plan.size() - 5);
  std::string cmd = ditwin_bin + " execute " + plan + " --backend " + backend + " --steps " + std::to_string(steps) +
                    " --ranks " + std::to_string(ranks) + " --report " + base + ".report.json --save-parameters " +
                    base + ".params > " + base + ".log 2>&1";
  Outcome run;
  int rc = std::system(cmd.c_str());
  std::ifstream log(base + ".log");
  run.log.assign(std::istreambuf_iterator<char>(log), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << cmd << "\n" << run.log;
  std::ifstream in(base + ".params", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  run.parameters.resize(bytes.size() / sizeof(float));
  std::memcpy(run.parameters.data(), bytes.data(), run.parameters.size() * sizeof(float));
  if (rc == 0) {
    auto report = ditwin::read_json_file(base + ".report.json");
    for (const auto& l : report["extra"]["losses"]) run.losses.push_back(l.get<double>());
  }
  return run;
}


class CudaExec : public ::testing::Test {
 protected:
  void SetUp() override {
    if (ditwin::kernels::cuda::device_count() == 0)
      GTEST_SKIP() << "no CUDA device here: GPU test skipped (run tools/device/check.sh on a GPU machine)";
  }
};

TEST_F(CudaExec, OneStepAgreesWithTheCpuWithinBf16) {
  Outcome cpu = execute(write_plan("cpu_ref", "fp32", 1, 8, 0), "cpu", 1, 2);
  Outcome gpu = execute(write_plan("gpu_run", "bf16", 1, 8, 0), "cuda", 1, 2);
  ASSERT_EQ(gpu.losses.size(), 2u) << gpu.log;
  ASSERT_EQ(cpu.losses.size(), 2u) << cpu.log;
  // Step 0: same parameters, same data; the forward differs only by bf16 rounding.
  EXPECT_NEAR(gpu.losses[0], cpu.losses[0], 2e-2 * cpu.losses[0]);
  EXPECT_NEAR(gpu.losses[1], cpu.losses[1], 3e-2 * cpu.losses[1]);
  // Two SGD steps on bf16 gradients move the parameters as the fp32 ones do, to bf16 precision.
  EXPECT_LT(ditwin::test::relative_l2(gpu.parameters, cpu.parameters), 1e-2);
}

TEST_F(CudaExec, DpSgdAgreesWithTheCpuWithinBf16) {
  // Clipping that bites, Poisson sampling and noise: the same clip factors (per-sample norms by
  // strided-batched GEMMs on the GPU, by the CPU kernels on the CPU) and the same counter-based
  // noise, so two SGD steps land within bf16 precision of the CPU's.
  auto with_privacy = [](const std::string& path) {
    auto j = ditwin::read_json_file(path);
    j["training"]["privacy"] = {{"clip_norm", 0.05}, {"noise_multiplier", 0.5}, {"sampling", "poisson"},
                                {"dataset_size", 1000}, {"expected_batch", 4}};
    std::ofstream(path) << j.dump();
    return path;
  };
  Outcome cpu = execute(with_privacy(write_plan("dp_cpu_ref", "fp32", 1, 8, 0)), "cpu", 1, 2);
  Outcome gpu = execute(with_privacy(write_plan("dp_gpu_run", "bf16", 1, 8, 0)), "cuda", 1, 2);
  ASSERT_EQ(gpu.losses.size(), 2u) << gpu.log;
  ASSERT_EQ(cpu.losses.size(), 2u) << cpu.log;
  EXPECT_NEAR(gpu.losses[0], cpu.losses[0], 2e-2 * cpu.losses[0]);
  EXPECT_NEAR(gpu.losses[1], cpu.losses[1], 3e-2 * cpu.losses[1]);
  EXPECT_LT(ditwin::test::relative_l2(gpu.parameters, cpu.parameters), 1e-2);
  EXPECT_NE(gpu.log.find("epsilon"), std::string::npos) << gpu.log;
}

TEST_F(CudaExec, TheLossFalls) {
  Outcome run = execute(write_plan("gpu_falls", "bf16", 1, 8, 0, "adamw", 8), "cuda", 1, 24);
  ASSERT_EQ(run.losses.size(), 24u) << run.log;
  for (double l : run.losses) ASSERT_TRUE(std::isfinite(l)) << run.log;
  const double first = (run.losses[0] + run.losses[1]) / 2, last = (run.losses[22] + run.losses[23]) / 2;
  EXPECT_LT(last, first * 0.95) << run.log;
}

TEST_F(CudaExec, DataParallelOverNcclMatchesOneGpuForEveryZeroStage) {
  if (ditwin::kernels::cuda::device_count() < 2) GTEST_SKIP() << "one GPU: NCCL data parallelism needs two";
  Outcome single = execute(write_plan("nccl_one", "bf16", 1, 8, 0), "cuda", 1, 3);
  for (int zero : {0, 1, 2, 3}) {
    Outcome two = execute(write_plan("nccl_two_z" + std::to_string(zero), "bf16", 2, 4, zero), "cuda", 2, 3);
    // Different batch splits round differently in bf16: agreement to bf16 precision, not bits.
    EXPECT_LT(ditwin::test::relative_l2(two.parameters, single.parameters), 1e-2) << "ZeRO " << zero << "\n" << two.log;
  }
}

TEST_F(CudaExec, Fp32PlansAreRefusedWithTheKeyToChange) {
  Outcome run;
  std::string plan = write_plan("gpu_fp32", "fp32", 1, 8, 0);
  std::string log = ::testing::TempDir() + "/gpu_fp32.log";
  int rc = std::system((ditwin_bin + " execute " + plan + " --backend cuda > " + log + " 2>&1").c_str());
  EXPECT_NE(rc, 0);
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("training.precision"), std::string::npos) << text;
}

}  // namespace
