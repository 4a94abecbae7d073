// The arithmetic of DP-SGD's counter-based Gaussian noise, shared by the CPU kernel
// (kernels/gaussian_noise.cpp) and the GPU one (kernels/cuda/privacy.cu) so both draw the same
// N_i(key): SplitMix64's output function on (key + (pair + 1) x golden ratio) gives two 24-bit
// uniforms, and Box-Muller turns them into the pair's cosine and sine halves, in plain float
// arithmetic (our own log, sin and cos, which the CPU compiler vectorizes). C++17 (nvcc).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DITWIN_HOST_DEVICE __host__ __device__
#else
#define DITWIN_HOST_DEVICE
#endif

namespace ditwin::kernels::noise {

constexpr std::uint64_t golden = 0x9e3779b97f4a7c15ULL;

DITWIN_HOST_DEVICE inline std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

DITWIN_HOST_DEVICE inline std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
DITWIN_HOST_DEVICE inline float float_of(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// log(x) for x in (0, 1]: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s),
// s = (m - 1)/(m + 1), |s| < 0.172, by its odd series to s^11 (relative error below 1e-7).
DITWIN_HOST_DEVICE inline float log_unit(float x) {
  const std::uint32_t bits = bits_of(x);
  int e = static_cast<int>((bits >> 23) & 0xff) - 127;
  float m = float_of((bits & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  if (m > 1.41421356f) {
    m *= 0.5f;
    e += 1;
  }
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  const float series =
      2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11))))));
  return series + static_cast<float>(e) * 0.69314718056f;
}

// cos and sin of 2 pi u for u in [0, 1): the quarter turn q = floor(4u) and the angle a within it
// in [0, pi/2), where Taylor series to a^12 and a^13 are exact to float precision.
DITWIN_HOST_DEVICE inline void cos_sin_turn(float u, float& c, float& s) {
  const float x = 4.0f * u;
  const int q = static_cast<int>(x);
  const float a = (x - static_cast<float>(q)) * 1.57079632679f, a2 = a * a;
  const float ca = 1.0f + a2 * (-1.0f / 2 + a2 * (1.0f / 24 + a2 * (-1.0f / 720 + a2 * (1.0f / 40320 + a2 * (-1.0f / 3628800 + a2 * (1.0f / 479001600))))));
  const float sa = a * (1.0f + a2 * (-1.0f / 6 + a2 * (1.0f / 120 + a2 * (-1.0f / 5040 + a2 * (1.0f / 362880 + a2 * (-1.0f / 39916800 + a2 * (1.0f / 6227020800.0f)))))));
  // Rotate by q quarter turns: (c, s) -> (-s, c) each.
  const float c1 = (q & 1) ? -sa : ca, s1 = (q & 1) ? ca : sa;
  c = (q & 2) ? -c1 : c1;
  s = (q & 2) ? -s1 : s1;
}

// The Box-Muller pair p of the stream `key`: element 2p is c, element 2p + 1 is s.
DITWIN_HOST_DEVICE inline void normal_pair(std::uint64_t key, std::uint64_t p, float& c, float& s) {
  const std::uint64_t bits = mix(key + (p + 1) * golden);
  // Two 24-bit uniforms from one 64-bit draw: u1 in (0, 1] (log stays finite), u2 in [0, 1).
  const float u1 = static_cast<float>(static_cast<std::uint32_t>(bits >> 40) + 1u) * 5.9604644775390625e-8f;  // 2^-24
  const float u2 = static_cast<float>(static_cast<std::uint32_t>((bits >> 16) & 0xffffff)) * 5.9604644775390625e-8f;
  const float r = sqrtf(-2.0f * log_unit(u1));
  float cosine, sine;
  cos_sin_turn(u2, cosine, sine);
  c = r * cosine;
  s = r * sine;
}

}  // namespace ditwin::kernels::noise
