// `ditwin calibrate --backend cpu`: microbenchmarks of the kernels the executor runs (GEMMs over
// a grid of shapes, attention, a streaming kernel, per-op overhead) and of the communicator's
// collectives over message sizes, kept as tables and fitted into the device profile that
// `ditwin simulate --profile` reads.
// It never runs a plan.
#pragma once
#include <nlohmann/json.hpp>

#include "exec/comm/communicator.hpp"

namespace ditwin::exec {

struct CalibrationOptions {
  int threads = 1;          // kernel threads per rank while measuring
  double min_seconds = 0.05;  // per measurement point
};

// Compute-side measurements and fit on this process; returns the profile's compute keys plus
// the raw measurements under "measurements".
nlohmann::json calibrate_compute(const CalibrationOptions& options);
// Communication: all-reduce, reduce-scatter and all-gather times over message sizes on `comm`'s
// world (run under mpirun); returns {"ranks", "latency_s", "bus_bytes_per_s", "test_s",
// "tables": {"ranks", "all_reduce": [{"bytes", "seconds"}], ...}, "points"} on every rank.
nlohmann::json calibrate_communication(Communicator& comm, const CalibrationOptions& options);
// Seconds the executor spends between two ops (scheduling, timing, polling collectives): a DiT
// of microsecond ops run data parallel over `comm`'s world, (step - time in ops) / ops, the
// slowest rank's. Collective over `comm`.
double calibrate_dispatch(Communicator& comm, const CalibrationOptions& options);
// Every rank measured the same GEMM grid at once (as the executor's ranks compute at once): on
// rank 0, the grid's times become their geometric mean over ranks. Collective over `comm`.
nlohmann::json average_over_ranks(nlohmann::json compute, Communicator& comm);
// Completes a measured profile: `profile` holds the device's compute keys; this adds the link
// keys from the measured bus bandwidth and latency, the measured tables and the raw measurements.
// Shared by the CPU and CUDA calibrations.
// (Inline: the CUDA calibration library is linked by ditwin_exec, not the other way round.)
inline nlohmann::json finish_measured_profile(nlohmann::json profile, const nlohmann::json& c,
                                              const nlohmann::json& m) {
  int ranks = m.value("ranks", 1);
  // A 2-rank all-reduce is 2 algorithm steps (ring and tree alike): latency per step is half.
  double steps = ranks > 1 ? 2.0 * (ranks - 1) : 1;
  // The measured grids the simulator interpolates (cost_models/measured.hpp).
  nlohmann::json tables = {{"gemm", c["gemm_table"]}};
  if (m.contains("tables")) tables["collectives"] = m["tables"];
  if (m.contains("p2p") && !m["p2p"].empty()) tables["p2p"] = m["p2p"];
  nlohmann::json raw_compute = c, raw_comm = m;  // raw data without the tables' second copy
  raw_compute.erase("gemm_table");
  raw_comm.erase("tables");
  // Measured rates already are what a job sees on this device: no sustained-clock discount.
  profile["sustained_compute_ratio"] = 1.0;
  // The measured bus bandwidth stands for both link kinds ("NVLink" on one host is its MPI
  // transport); its latency is fitted per call, so the links themselves add none.
  profile["nvlink_bytes_per_s"] = m["bus_bytes_per_s"];
  profile["nvlink_latency_s"] = 0.0;
  profile["nvlink_efficiency"] = 1.0;
  profile["nic_bytes_per_s"] = m["bus_bytes_per_s"];
  profile["network_latency_s"] = 0.0;
  profile["network_efficiency"] = 1.0;
  profile["collective_step_latency_s"] = m["latency_s"].get<double>() / steps;
  profile["tables"] = tables;
  profile["measurements"] = {{"compute", raw_compute}, {"communication", raw_comm}};
  return profile;
}

// Assembles a profile (cost::DeviceProfile's JSON keys) from the two parts.
nlohmann::json make_cpu_profile(const nlohmann::json& compute, const nlohmann::json& communication);

}  // namespace ditwin::exec
