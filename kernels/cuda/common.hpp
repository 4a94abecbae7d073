// Shared by every CUDA kernel family and its callers: the storage types (bf16 activations with
// fp32 accumulation, or fp32 throughout for finite-difference tests), one error-checking macro
// that throws with the place it failed, and device discovery. C++17: nvcc 13 with CMake 3.25
// compiles CUDA as C++17, and exec/ (C++20) includes these headers too.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace ditwin::kernels::cuda {

using bf16 = __nv_bfloat16;

// Throws std::runtime_error("CUDA <what> failed at file:line: <message>") unless `code` is success.
void check(cudaError_t code, const char* what, const char* file, int line);
// After a kernel launch: the launch's own error (bad configuration, too much shared memory).
void check_launch(const char* kernel, const char* file, int line);

// The number of usable CUDA devices; 0 (never an exception) when there is no driver or device.
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)" for the current device.
std::string device_description();

}  // namespace ditwin::kernels::cuda

#define DITWIN_CUDA_CHECK(expr) ::ditwin::kernels::cuda::check((expr), #expr, __FILE__, __LINE__)
#define DITWIN_CUDA_LAUNCH_CHECK(name) ::ditwin::kernels::cuda::check_launch((name), __FILE__, __LINE__)
