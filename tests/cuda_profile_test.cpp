// The GPU profile that `calibrate --backend cuda` assembles is one the simulator reads: its keys,
// its measured GEMM grid and its NCCL table, checked on made-up measurements (no GPU needed).
#include <gtest/gtest.h>

#include "cost_models/profile.hpp"
#include "exec/cuda_exec.hpp"

namespace {

nlohmann::json compute_measurements() {
  nlohmann::json table = nlohmann::json::array();
  for (double m : {256.0, 4096.0})
    for (double k : {256.0, 1152.0})
      for (double n : {256.0, 4608.0}) {
        const double f = 2 * m * k * n / 5e14;
        table.push_back({{"m", m}, {"k", k}, {"n", n}, {"forward_s", f}, {"backward_s", 2.2 * f}});
      }
  return {{"device", "test GPU"}, {"peak_flops_bf16", 7.0e14}, {"gemm_half_dim", 128.0}, {"gemm_half_k", 64.0},
          {"attention_efficiency", 0.45}, {"attention_half_tokens", 256.0}, {"attention_half_head_dim", 16.0},
          {"attention_backward_ratio", 0.8}, {"hbm_bytes_per_s", 3.0e12}, {"memory_bytes_per_s", 2.4e12},
          {"optimizer_bytes_per_s", 2.0e12}, {"kernel_overhead_s", 3e-6}, {"gemm_table", table},
          {"points", nlohmann::json::array()}, {"memory", nlohmann::json::array()}};
}

TEST(CudaProfile, OneGpuProfileIsReadByTheSimulator) {
  nlohmann::json comm = {{"ranks", 1}, {"latency_s", 0.0}, {"bus_bytes_per_s", 3.0e12}, {"points", nlohmann::json::array()}};
  auto j = ditwin::exec::make_cuda_profile(compute_measurements(), comm);
  auto p = ditwin::cost::profile_from_json(j, "test");
  EXPECT_DOUBLE_EQ(p.peak_flops_bf16, 7.0e14);
  EXPECT_NEAR(p.memory_efficiency, 0.8, 1e-12);
  EXPECT_TRUE(p.tables.has_gemm());
  EXPECT_EQ(p.tables.gemm.size(), 8u);
  EXPECT_FALSE(j["measurements"]["compute"].contains("gemm_table")) << "the grid is kept once, under tables";
}

TEST(CudaProfile, NcclTableIsCarried) {
  nlohmann::json all_reduce = nlohmann::json::array();
  for (double b : {4096.0, 1048576.0, 268435456.0}) all_reduce.push_back({{"bytes", b}, {"seconds", 1e-5 + b / 2e11}});
  nlohmann::json comm = {{"ranks", 8}, {"rank", 0}, {"latency_s", 1e-5}, {"bus_bytes_per_s", 3.5e11},
                         {"tables", {{"ranks", 8}, {"all_reduce", all_reduce}}}, {"points", nlohmann::json::array()}};
  auto p = ditwin::cost::profile_from_json(ditwin::exec::make_cuda_profile(compute_measurements(), comm), "test");
  EXPECT_EQ(p.tables.collective_ranks, 8);
  EXPECT_EQ(p.tables.collectives.at(ditwin::Collective::all_reduce).size(), 3u);
  EXPECT_NEAR(p.collective_step_latency_s, 1e-5 / 14, 1e-15);
}

}  // namespace
