// Gaussian noise for DP-SGD, counter-based: the draw for element i of a stream depends only on
// (key, i), so any rank can produce any slice of a step's noise and a resumed run redraws exactly
// the same values. SplitMix64 seeked to position i gives the uniforms, Box-Muller the normals.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ditwin::kernels {

// out[k] += stddev * N_{begin + k}(key) for k < n, where N_i(key) is the i-th standard normal of
// the stream `key` (elements 2p and 2p + 1 are the cosine and sine halves of one Box-Muller pair).
void add_gaussian_noise(float* out, std::size_t n, std::uint64_t begin, std::uint64_t key, float stddev);

}  // namespace ditwin::kernels
