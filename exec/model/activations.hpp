// Host activation buffers for the CPU models and the row copies their shards need: 64-byte aligned (one AVX-512 vector), so the
// kernels' vectorized loops split every buffer the same way in every run and results do not
// depend on where the heap put it.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <vector>

namespace ditwin::exec {

template <typename T>
struct AlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t alignment{64};
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), alignment)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, alignment); }
  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>&) const { return false; }
};

using Activations = std::vector<float, AlignedAllocator<float>>;
inline void zero(Activations& b) { std::fill(b.begin(), b.end(), 0.0f); }

// Rows [first, first + count) of each sample of a (batch, n, width) tensor, copied out to a
// (batch, count, width) one, and back.
inline void gather_rows(float* dst, const float* src, int batch, int n, int first, int count, int width) {
  for (int b = 0; b < batch; ++b)
    std::memcpy(dst + static_cast<std::size_t>(b) * count * width, src + (static_cast<std::size_t>(b) * n + first) * width,
                sizeof(float) * static_cast<std::size_t>(count) * width);
}
inline void scatter_rows(float* dst, const float* src, int batch, int n, int first, int count, int width) {
  for (int b = 0; b < batch; ++b)
    std::memcpy(dst + (static_cast<std::size_t>(b) * n + first) * width, src + static_cast<std::size_t>(b) * count * width,
                sizeof(float) * static_cast<std::size_t>(count) * width);
}

// Gathers and reduce-scatters over a group concatenate the ranks' parts ([rank][batch][n][width]);
// the models' tensors are [batch][rank x n][width]: these permute between the two.
inline void to_rank_major(float* dst, const float* src, int batch, int ranks, int n, int width) {
  for (int r = 0; r < ranks; ++r)
    gather_rows(dst + static_cast<std::size_t>(r) * batch * n * width, src, batch, ranks * n, r * n, n, width);
}
inline void from_rank_major(float* dst, const float* src, int batch, int ranks, int n, int width) {
  for (int r = 0; r < ranks; ++r)
    scatter_rows(dst, src + static_cast<std::size_t>(r) * batch * n * width, batch, ranks * n, r * n, n, width);
}

}  // namespace ditwin::exec
