// Error checking and device discovery for the CUDA kernels.
#include "kernels/cuda/common.hpp"

#include <cstdio>
#include <stdexcept>

namespace ditwin::kernels::cuda {

void check(cudaError_t code, const char* what, const char* file, int line) {
  if (code == cudaSuccess) return;
  throw std::runtime_error(std::string("CUDA ") + what + " failed at " + file + ":" + std::to_string(line) + ": " +
                           cudaGetErrorName(code) + " (" + cudaGetErrorString(code) + ")");
}

void check_launch(const char* kernel, const char* file, int line) {
  cudaError_t code = cudaGetLastError();
  if (code == cudaSuccess) return;
  throw std::runtime_error(std::string("CUDA kernel ") + kernel + " failed to launch at " + file + ":" +
                           std::to_string(line) + ": " + cudaGetErrorName(code) + " (" + cudaGetErrorString(code) + ")");
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls start clean
    return 0;
  }
  return n;
}

std::string device_description() {
  int dev = 0;
  DITWIN_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  DITWIN_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  char buf[768];  // the name is up to 256 characters
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor, p.multiProcessorCount,
                static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace ditwin::kernels::cuda
