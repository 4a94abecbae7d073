// `--backend cuda` where it cannot run (no CUDA in the build, or no GPU on the machine) is refused
// with a message that says why and exit status 2, before any rank starts; on a GPU machine the
// same command trains. Runs everywhere (no gpu label): CI checks the refusal.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>

#include "model/plan.hpp"
#include "tests/test_util.hpp"

namespace {

const std::string ditwin_bin = DITWIN_BINARY;

std::string run(const std::string& args, int& rc) {
  // One log per test: ctest runs these tests in parallel processes.
  const std::string log = ::testing::TempDir() + "/backend_choice." +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".log";
  rc = std::system((ditwin_bin + " " + args + " > " + log + " 2>&1").c_str());
  std::ifstream in(log);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(BackendChoice, CudaWithoutAGpuIsRefusedWithTheReason) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu.json"));
  j["training"]["precision"] = "bf16";
  j["parallelism"]["dp"] = 1;
  j["cluster"]["devices_per_node"] = 1;
  const std::string plan = ::testing::TempDir() + "/backend_choice_gpu_plan.json";
  std::ofstream(plan) << j.dump();
  int rc = 0;
  std::string out = run("execute " + plan + " --backend cuda --steps 1", rc);
  if (rc == 0) GTEST_SKIP() << "this machine has a GPU: the CUDA run trained (" << out.substr(0, 200) << ")";
  EXPECT_EQ(WEXITSTATUS(rc), 2) << out;
  EXPECT_TRUE(out.find("--backend cuda: no CUDA device") != std::string::npos ||
              out.find("--backend cuda: this ditwin was built without") != std::string::npos)
      << out;
}

TEST(BackendChoice, PrecisionMustMatchTheBackend) {
  int rc = 0;
  // tiny-cpu.json is fp32: refused on cuda whatever the machine, naming the key.
  std::string out = run("execute " + ditwin::test::scenario("tiny-cpu.json") + " --backend cuda --steps 1", rc);
  EXPECT_EQ(WEXITSTATUS(rc), 2) << out;
  EXPECT_NE(out.find("training.precision"), std::string::npos) << out;
}

TEST(BackendChoice, CalibrateCudaWithoutAGpuIsRefused) {
  int rc = 0;
  std::string out = run("calibrate --backend cuda --out " + ::testing::TempDir() + "/backend_choice_profile.json --min-seconds 0.001", rc);
  if (rc == 0) GTEST_SKIP() << "this machine has a GPU: the CUDA calibration ran";
  EXPECT_EQ(WEXITSTATUS(rc), 2) << out;
  EXPECT_NE(out.find("--backend cuda"), std::string::npos) << out;
}

}  // namespace
