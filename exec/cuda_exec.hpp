// The CUDA executor's entry points, for the command line (no CUDA headers here, so cli/ compiles
// the same with or without CUDA). In a build without CUDA every function throws InputError
// saying so; cuda_devices() returns 0.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "exec/backend.hpp"
#include "exec/calibrate/calibrate.hpp"
#include "exec/comm/communicator.hpp"
#include "model/plan.hpp"

namespace ditwin::exec {

bool cuda_built();
// Usable CUDA devices (0 without a driver, a device, or CUDA in this build).
int cuda_devices();

// A rank's GPU (local rank modulo the node's devices), its backend (the DiT in bf16 on cuBLASLt
// and kernels/cuda) and its NCCL communicator, bootstrapped over the MPI world `mpi` (which keeps
// serving host-side scalars). Throws InputError when there is no GPU.
struct CudaRun {
  std::shared_ptr<void> streams;  // outlives the two below (destroyed last)
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> comm;
  std::string device;
};
CudaRun make_cuda_run(const Plan& plan, std::unique_ptr<Communicator> mpi, int local_rank);

// `ditwin calibrate --backend cuda`, on device 0: cuBLASLt bf16 GEMMs over a grid of shapes,
// flash attention over sequence lengths and head dims, the memory-bound kernels and a device
// copy, the smallest kernel's time; the cost model's constants fitted to them.
nlohmann::json calibrate_cuda_compute(const CalibrationOptions& options);
// NCCL all-reduce over message sizes on the MPI world `mpi` (one GPU per rank, by local rank):
// {"ranks", "latency_s", "bus_bytes_per_s", "points"} on every rank.
nlohmann::json calibrate_cuda_communication(std::unique_ptr<Communicator> mpi, int local_rank);
// The device profile (cost::DeviceProfile's JSON keys) from the two parts.
nlohmann::json make_cuda_profile(const nlohmann::json& compute, const nlohmann::json& communication);

}  // namespace ditwin::exec
