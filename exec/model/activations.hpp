// Host activation buffers for the CPU models: 64-byte aligned (one AVX-512 vector), so the
// kernels' vectorized loops split every buffer the same way in every run and results do not
// depend on where the heap put it.
#pragma once
#include <algorithm>
#include <cstddef>
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

}  // namespace ditwin::exec
