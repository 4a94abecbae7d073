// SiLU.
#include "kernels/silu.hpp"

#include <cmath>

namespace ditwin::kernels {

void silu_forward(float* out, const float* inp, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = inp[i] / (1.0f + std::exp(-inp[i]));
}

void silu_backward(float* dinp, const float* inp, const float* dout, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-inp[i]));
    dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
  }
}

}  // namespace ditwin::kernels
