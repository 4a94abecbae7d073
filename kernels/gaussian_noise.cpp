// Counter-based Gaussian noise: SplitMix64's output function on (key + position x golden ratio)
// for the uniforms (the SplitMix64 stream itself, seeked in O(1)), Box-Muller in float with our own
// vectorizable log, sin and cos (the library ones stop the loop from vectorizing).
#include "kernels/gaussian_noise.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace ditwin::kernels {
namespace {

constexpr std::uint64_t golden = 0x9e3779b97f4a7c15ULL;

inline std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// log(x) for x in (0, 1], in plain float arithmetic the compiler vectorizes: x = m 2^e with m in
// [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1)/(m + 1), |s| < 0.172, by its odd series to
// s^11 (relative error below 1e-7, float's own rounding).
inline float log_unit(float x) {
  std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  int e = static_cast<int>((bits >> 23) & 0xff) - 127;
  float m = std::bit_cast<float>((bits & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  if (m > 1.41421356f) {
    m *= 0.5f;
    e += 1;
  }
  float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  float series = 2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11))))));
  return series + static_cast<float>(e) * 0.69314718056f;
}

// cos and sin of 2 pi u for u in [0, 1): the quarter turn q = floor(4u) and the angle a within it
// in [0, pi/2), where Taylor series to a^12 and a^13 are exact to float precision.
inline void cos_sin_turn(float u, float& c, float& s) {
  float x = 4.0f * u;
  int q = static_cast<int>(x);
  float a = (x - static_cast<float>(q)) * 1.57079632679f, a2 = a * a;
  float ca = 1.0f + a2 * (-1.0f / 2 + a2 * (1.0f / 24 + a2 * (-1.0f / 720 + a2 * (1.0f / 40320 + a2 * (-1.0f / 3628800 + a2 * (1.0f / 479001600))))));
  float sa = a * (1.0f + a2 * (-1.0f / 6 + a2 * (1.0f / 120 + a2 * (-1.0f / 5040 + a2 * (1.0f / 362880 + a2 * (-1.0f / 39916800 + a2 * (1.0f / 6227020800.0f)))))));
  // Rotate by q quarter turns: (c, s) -> (-s, c) each.
  float c1 = (q & 1) ? -sa : ca, s1 = (q & 1) ? ca : sa;
  c = (q & 2) ? -c1 : c1;
  s = (q & 2) ? -s1 : s1;
}

// The Box-Muller pair p of the stream: both halves.
inline void normal_pair(std::uint64_t key, std::uint64_t p, float& c, float& s) {
  std::uint64_t bits = mix(key + (p + 1) * golden);
  // Two 24-bit uniforms from one 64-bit draw: u1 in (0, 1] (log stays finite), u2 in [0, 1).
  float u1 = static_cast<float>(static_cast<std::uint32_t>(bits >> 40) + 1u) * 0x1.0p-24f;
  float u2 = static_cast<float>(static_cast<std::uint32_t>((bits >> 16) & 0xffffff)) * 0x1.0p-24f;
  float r = std::sqrt(-2.0f * log_unit(u1));
  float cosine, sine;
  cos_sin_turn(u2, cosine, sine);
  c = r * cosine;
  s = r * sine;
}

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
