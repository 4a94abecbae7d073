// Measured tables in a profile: interpolation, edges, the cost models using them, bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "cost_models/comm.hpp"
#include "cost_models/compute.hpp"
#include "cost_models/measured.hpp"
#include "model/errors.hpp"

namespace {

using ditwin::Collective;
using ditwin::cost::MeasuredTables;

// A 2x2x2 grid where the forward rate is 1e9 * m (so it varies along m only) and backward runs
// at half the forward rate.
nlohmann::json grid() {
  nlohmann::json g = nlohmann::json::array();
  for (double m : {16.0, 256.0})
    for (double k : {32.0, 128.0})
      for (double n : {64.0, 512.0}) {
        double rate = 1e9 * m;
        g.push_back({{"m", m}, {"k", k}, {"n", n}, {"forward_s", 2 * m * k * n / rate}, {"backward_s", 4 * m * k * n / (rate / 2)}});
      }
  return {{"gemm", g},
          {"collectives",
           {{"ranks", 2}, {"all_reduce", {{{"bytes", 1e3}, {"seconds", 1e-5}}, {{"bytes", 1e5}, {"seconds", 1e-3}}}}}}};
}

TEST(MeasuredTables, GemmRatesInterpolateInLogSpaceAndClampAtTheEdges) {
  MeasuredTables t = ditwin::cost::measured_tables_from_json(grid(), "p.json");
  double flops = 2.0 * 64 * 64 * 128;
  // m = 64 is the geometric midpoint of 16 and 256: the rate is the geometric mean, 1e9 * 64.
  EXPECT_NEAR(ditwin::cost::measured_gemm_s(t, 64, 64, 128, false, flops), flops / (1e9 * 64), 1e-12);
  EXPECT_NEAR(ditwin::cost::measured_gemm_s(t, 64, 64, 128, true, 2 * flops), 2 * flops / (0.5e9 * 64), 1e-12);
  // Beyond the grid: the edge's rate (m = 4096 runs at the m = 256 rate, m = 2 at the m = 16 one).
  EXPECT_NEAR(ditwin::cost::measured_gemm_s(t, 4096, 64, 128, false, flops), flops / (1e9 * 256), 1e-12);
  EXPECT_NEAR(ditwin::cost::measured_gemm_s(t, 2, 1e6, 1, false, flops), flops / (1e9 * 16), 1e-12);
}

TEST(MeasuredTables, CollectivesInterpolateAndRefuseOtherRankCounts) {
  MeasuredTables t = ditwin::cost::measured_tables_from_json(grid(), "p.json");
  EXPECT_NEAR(ditwin::cost::measured_collective_s(t, Collective::all_reduce, 2, 1e4), 1e-4, 1e-12);
  EXPECT_NEAR(ditwin::cost::measured_collective_s(t, Collective::all_reduce, 2, 1e6), 1e-2, 1e-12);  // edge rate
  EXPECT_EQ(ditwin::cost::measured_collective_s(t, Collective::all_reduce, 2, 10), 1e-5);            // latency floor
  EXPECT_LT(ditwin::cost::measured_collective_s(t, Collective::all_reduce, 4, 1e4), 0);              // not measured
  EXPECT_LT(ditwin::cost::measured_collective_s(t, Collective::all_gather, 2, 1e4), 0);
}

// Pipeline transfers: one table over sizes, round-tripped through JSON; absent means "not measured".
TEST(MeasuredTables, PointToPointInterpolatesAndRoundTrips) {
  nlohmann::json j = grid();
  EXPECT_LT(ditwin::cost::measured_p2p_s(ditwin::cost::measured_tables_from_json(j, "p.json"), 1e4), 0);
  j["p2p"] = {{{"bytes", 4096.0}, {"seconds", 5e-6}}, {{"bytes", 409600.0}, {"seconds", 5e-4}}};
  MeasuredTables t = ditwin::cost::measured_tables_from_json(j, "p.json");
  EXPECT_NEAR(ditwin::cost::measured_p2p_s(t, 40960), 5e-5, 1e-12);
  EXPECT_EQ(ditwin::cost::measured_p2p_s(t, 10), 5e-6);
  MeasuredTables back = ditwin::cost::measured_tables_from_json(ditwin::cost::to_json(t), "again");
  ASSERT_EQ(back.p2p.size(), 2u);
  EXPECT_EQ(back.p2p[1].seconds, 5e-4);
  j["p2p"] = {{{"bytes", 4096.0}, {"seconds", 5e-6}}, {{"bytes", 1024.0}, {"seconds", 5e-4}}};
  try {
    ditwin::cost::measured_tables_from_json(j, "p.json");
    FAIL() << "descending sizes accepted";
  } catch (const ditwin::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("p2p[1].bytes"), std::string::npos) << e.what();
  }
}

TEST(MeasuredTables, CostModelsUseThemWhereTheyCoverAnOp) {
  ditwin::cost::DeviceProfile p;
  p.peak_flops_fp32 = 1e15;  // the curves would say "instant"
  p.hbm_bytes_per_s = 1e15;
  p.gemm_efficiency = 1;
  p.memory_efficiency = 1;
  p.nvlink_bytes_per_s = p.nic_bytes_per_s = 1e15;
  p.nvlink_efficiency = p.network_efficiency = 1;
  p.tables = ditwin::cost::measured_tables_from_json(grid(), "p.json");
  ditwin::Op op;
  op.kind = ditwin::OpKind::compute;
  op.compute = ditwin::ComputeClass::gemm;
  op.phase = ditwin::Phase::forward;
  op.m = 64, op.k = 64, op.n = 128;
  op.flops = 2.0 * 64 * 64 * 128;
  EXPECT_NEAR(ditwin::cost::compute_time_s(op, p, ditwin::Precision::fp32, true), op.flops / (1e9 * 64), 1e-12);
  ditwin::cost::GroupShape two{2, 2};
  EXPECT_NEAR(ditwin::cost::collective_time_s(Collective::all_reduce, 1e4, two, p), 1e-4, 1e-12);
  ditwin::cost::GroupShape four{4, 4};  // not in the table: the bandwidth model
  EXPECT_LT(ditwin::cost::collective_time_s(Collective::all_reduce, 1e4, four, p), 1e-9);
}

TEST(MeasuredTables, BadTablesAreRefusedWithTheirPlace) {
  auto error = [](nlohmann::json j) {
    try {
      ditwin::cost::measured_tables_from_json(j, "p.json");
    } catch (const ditwin::InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  auto j = grid();
  j["gemm"].erase(3);
  EXPECT_NE(error(j).find("full grid"), std::string::npos) << error(j);
  j = grid();
  j["gemm"][2]["forward_s"] = -1;
  EXPECT_NE(error(j).find("gemm[2].forward_s"), std::string::npos) << error(j);
  j = grid();
  j["collectives"]["all_reduce"][1]["bytes"] = 10;
  EXPECT_NE(error(j).find("collectives.all_reduce[1].bytes: sizes must ascend"), std::string::npos) << error(j);
  j = grid();
  j["collectives"]["broadcast"] = nlohmann::json::array();
  EXPECT_NE(error(j).find("unknown collective"), std::string::npos) << error(j);
  j = grid();
  j["collectives"].erase("ranks");
  EXPECT_NE(error(j).find("collectives.ranks"), std::string::npos) << error(j);
  j = grid();
  j["gemms"] = 1;
  EXPECT_NE(error(j).find("gemms: unknown key"), std::string::npos) << error(j);
}

}  // namespace
