// Helpers shared by the CUDA executor's sources: device choice, a pair of streams, event timing,
// random device arrays (never zeros) for microbenchmarks.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/cuda/common.hpp"
#include "kernels/cuda/elementwise.hpp"
#include "model/errors.hpp"

namespace ditwin::exec::cuda_util {

namespace kc = ditwin::kernels::cuda;

inline void select_device(int local_rank) {
  const int n = kc::device_count();
  if (n == 0)
    throw InputError("--backend cuda: no CUDA device is visible on this machine (no driver, no GPU, or "
                     "CUDA_VISIBLE_DEVICES hides them); use --backend cpu");
  DITWIN_CUDA_CHECK(cudaSetDevice(local_rank % n));
}

struct Streams {
  cudaStream_t compute = nullptr, comm = nullptr;
  Streams() {
    DITWIN_CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
    DITWIN_CUDA_CHECK(cudaStreamCreateWithFlags(&comm, cudaStreamNonBlocking));
  }
  ~Streams() {
    cudaStreamDestroy(comm);
    cudaStreamDestroy(compute);
  }
};

// Device timing: median seconds of `fn` over `reps` runs after a warm-up, with events.
template <typename F>
inline double time_device(F&& fn, cudaStream_t s, int reps = 10) {
  fn();
  cudaEvent_t a, b;
  DITWIN_CUDA_CHECK(cudaEventCreate(&a));
  DITWIN_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    DITWIN_CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    DITWIN_CUDA_CHECK(cudaEventRecord(b, s));
    DITWIN_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    DITWIN_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// A device array of n random values in ±[0.1, 1) (never zero), generated on the device.
template <typename T>
inline T* random_device_array(std::size_t n, unsigned seed, cudaStream_t s) {
  T* out = nullptr;
  DITWIN_CUDA_CHECK(cudaMalloc(&out, std::max<std::size_t>(n, 1) * sizeof(T)));
  kc::fill_random<T>(out, n, seed, 0.1f, 1.0f, s);
  DITWIN_CUDA_CHECK(cudaStreamSynchronize(s));
  return out;
}

inline double shape_factor(double d, double half) { return d / (d + half); }

}  // namespace ditwin::exec::cuda_util
