// The CUDA entry points in a build without CUDA (or without NCCL and MPI): each says so.
#include "exec/cuda_exec.hpp"
#include "model/errors.hpp"

namespace ditwin::exec {

namespace {
[[noreturn]] void no_cuda() {
#ifdef DITWIN_STUB_KEEPS_CUDA_CORE
  throw InputError("--backend cuda: this ditwin was built without NCCL or Open MPI, which execute --backend cuda needs; "
                   "for one GPU without them, use bench/cuda_dit_step");
#else
  throw InputError("--backend cuda: this ditwin was built without CUDA (-DDITWIN_WITH_CUDA=OFF, or nvcc was not found when it was configured); "
                   "rebuild on a machine with the CUDA toolkit, or use --backend cpu");
#endif
}
}  // namespace

#ifndef DITWIN_STUB_KEEPS_CUDA_CORE
bool cuda_built() { return false; }
int cuda_devices() { return 0; }
nlohmann::json calibrate_cuda_compute(const CalibrationOptions&) { no_cuda(); }
nlohmann::json make_cuda_profile(const nlohmann::json&, const nlohmann::json&) { no_cuda(); }
#endif
CudaRun make_cuda_run(const Plan&, std::unique_ptr<Communicator>, int) { no_cuda(); }
nlohmann::json calibrate_cuda_communication(std::unique_ptr<Communicator>, int) { no_cuda(); }

}  // namespace ditwin::exec
