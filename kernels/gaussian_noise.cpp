// Counter-based Gaussian noise: SplitMix64's output function on (key + position x golden ratio)
// for the uniforms (the SplitMix64 stream itself, seeked in O(1)), Box-Muller in float.
#include "kernels/gaussian_noise.hpp"

#include <cmath>

namespace ditwin::kernels {
namespace {

constexpr std::uint64_t golden = 0x9e3779b97f4a7c15ULL;

inline std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The Box-Muller pair p of the stream: both halves.
inline void normal_pair(std::uint64_t key, std::uint64_t p, float& c, float& s) {
  std::uint64_t bits = mix(key + (p + 1) * golden);
  // Two 24-bit uniforms from one 64-bit draw: u1 in (0, 1] (log stays finite), u2 in [0, 1).
  float u1 = (static_cast<float>(bits >> 40) + 1.0f) * 0x1.0p-24f;
  float u2 = static_cast<float>((bits >> 16) & 0xffffff) * 0x1.0p-24f;
  float r = std::sqrt(-2.0f * std::log(u1));
  float theta = 6.28318530717958647692f * u2;
  c = r * std::cos(theta);
  s = r * std::sin(theta);
}

}  // namespace

void add_gaussian_noise(float* out, std::size_t n, std::uint64_t begin, std::uint64_t key, float stddev) {
  std::size_t k = 0;
  if (n == 0) return;
  float c, s;
  if (begin % 2 == 1) {  // the slice starts on a sine half
    normal_pair(key, begin / 2, c, s);
    out[k++] += stddev * s;
  }
  for (; k + 1 < n; k += 2) {
    normal_pair(key, (begin + k) / 2, c, s);
    out[k] += stddev * c;
    out[k + 1] += stddev * s;
  }
  if (k < n) {
    normal_pair(key, (begin + k) / 2, c, s);
    out[k] += stddev * c;
  }
}

}  // namespace ditwin::kernels
