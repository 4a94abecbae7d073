// `ditwin calibrate --backend cpu`: microbenchmarks of the kernels the executor runs (GEMMs over
// a grid of shapes, attention, a streaming kernel, per-op overhead) and of the communicator's
// collectives over message sizes, kept as tables and fitted into the device profile that
// `ditwin simulate --profile` reads.
// It never runs a plan.
#pragma once
#include <nlohmann/json.hpp>

#include "exec/communicator.hpp"

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
// Assembles a profile (cost::DeviceProfile's JSON keys) from the two parts.
nlohmann::json make_cpu_profile(const nlohmann::json& compute, const nlohmann::json& communication);

}  // namespace ditwin::exec
