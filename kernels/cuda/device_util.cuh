// Device-side helpers shared by the .cu files: float <-> storage conversion, 16-byte vector
// loads, warp reductions, and the grid size for grid-stride loops.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/common.hpp"

namespace ditwin::kernels::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16(x); }

// Elements of T in one 16-byte access.
template <typename T>
__host__ __device__ constexpr int vec_width() { return static_cast<int>(16 / sizeof(T)); }

// Loads / stores vec_width<T>() elements at p (16-byte aligned) as floats.
template <typename T>
__device__ __forceinline__ void load_vec(float* out, const T* p) {
  constexpr int V = vec_width<T>();
  uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = to_float(e[i]);
}
template <typename T>
__device__ __forceinline__ void store_vec(T* p, const float* in) {
  constexpr int V = vec_width<T>();
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < V; ++i) e[i] = from_float<T>(in[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// Blocks for a grid-stride loop over n items with `threads` per block: enough to fill the GPU,
// never more than the items need.
inline int grid_for(std::size_t n, int threads) {
  std::size_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(blocks, 65536)));
}

}  // namespace ditwin::kernels::cuda
