// Counter-based Gaussian noise: the pairs of kernels/gaussian_noise_math.hpp (SplitMix64 seeked in
// O(1), Box-Muller in float with our own vectorizable log, sin and cos), in blocks the compiler
// vectorizes.
#include "kernels/gaussian_noise.hpp"

#include <algorithm>

#include "kernels/gaussian_noise_math.hpp"  // defines: normal_pair (shared with the GPU kernel)

namespace ditwin::kernels {
namespace {
using noise::normal_pair;
}  // namespace

void add_gaussian_noise(float* out, std::size_t n, std::uint64_t begin, std::uint64_t key, float stddev) {
  if (n == 0) return;
  std::size_t k = 0;
  float c, s;
  if (begin % 2 == 1) {  // the slice starts on a sine half
    normal_pair(key, begin / 2, c, s);
    out[k++] += stddev * s;
  }
  // Whole pairs, in blocks the compiler vectorizes (log, sin and cos are our own arithmetic).
  constexpr std::size_t block = 256;
  float cs[block], sn[block];
  while (k + 1 < n) {
    const std::size_t pairs = std::min(block, (n - k) / 2);
    const std::uint64_t first = (begin + k) / 2;
#pragma omp simd
    for (std::size_t i = 0; i < pairs; ++i) normal_pair(key, first + i, cs[i], sn[i]);
    for (std::size_t i = 0; i < pairs; ++i) {
      out[k + 2 * i] += stddev * cs[i];
      out[k + 2 * i + 1] += stddev * sn[i];
    }
    k += 2 * pairs;
  }
  if (k < n) {
    normal_pair(key, (begin + k) / 2, c, s);
    out[k] += stddev * c;
  }
}

}  // namespace ditwin::kernels
