// The CUDA backend (exec/backend.hpp) on the given compute and communication streams of the
// current device. Internal to exec/cuda: cli/ reaches it through exec/cuda_exec.hpp.
#pragma once
#include <cuda_runtime.h>

#include <memory>

#include "exec/backend.hpp"
#include "model/plan.hpp"

namespace ditwin::exec {

std::unique_ptr<Backend> make_cuda_backend(const Plan& plan, cudaStream_t compute, cudaStream_t comm);

}  // namespace ditwin::exec
