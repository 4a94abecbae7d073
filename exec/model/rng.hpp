// Deterministic random numbers for initialisation and synthetic data: a SplitMix64 stream keyed
// by a hash of (seed, indices…), with our own uniform and Box-Muller normal so results do not
// depend on the standard library's distributions.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace ditwin::exec {

inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Rng {
 public:
  // One independent stream per key: Rng({seed, step, rank, micro_batch, sample}).
  Rng(std::initializer_list<std::uint64_t> key) {
    std::uint64_t h = 0x6a09e667f3bcc908ULL;
    for (std::uint64_t k : key) {
      std::uint64_t s = h ^ k;
      h = splitmix64(s);
    }
    state_ = h;
  }
  std::uint64_t next() { return splitmix64(state_); }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();  // u1 in (0, 1]
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t state_ = 0;
};

// The models' initialisers, each tensor from its own stream keyed by (seed, group, tensor), so a
// tensor initialises the same however the flat array is sharded: Xavier-uniform for an
// out x in linear weight, N(0, std) for n values.
inline void init_xavier_uniform(float* w, std::size_t out, std::size_t in, std::uint64_t seed, int group, int tensor) {
  Rng rng({seed, static_cast<std::uint64_t>(group), static_cast<std::uint64_t>(tensor)});
  const double bound = std::sqrt(6.0 / static_cast<double>(in + out));
  for (std::size_t i = 0; i < out * in; ++i) w[i] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
}
inline void init_normal(float* w, std::size_t n, double std, std::uint64_t seed, int group, int tensor) {
  Rng rng({seed, static_cast<std::uint64_t>(group), static_cast<std::uint64_t>(tensor)});
  for (std::size_t i = 0; i < n; ++i) w[i] = static_cast<float>(std * rng.normal());
}

}  // namespace ditwin::exec
