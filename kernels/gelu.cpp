// tanh-approximate GELU.
#include "kernels/gelu.hpp"

#include <cmath>

namespace ditwin::kernels {
namespace {
constexpr float k_sqrt_2_over_pi = 0.7978845608028654f;
constexpr float k_cubic = 0.044715f;
}  // namespace

void gelu_forward(float* out, const float* inp, std::size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::size_t i = 0; i < n; ++i) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + std::tanh(k_sqrt_2_over_pi * (x + k_cubic * x * x * x)));
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, std::size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::size_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float th = std::tanh(k_sqrt_2_over_pi * (x + k_cubic * x * x * x));
    const float dth = (1.0f - th * th) * k_sqrt_2_over_pi * (1.0f + 3.0f * k_cubic * x * x);
    dinp[i] += (0.5f * (1.0f + th) + 0.5f * x * dth) * dout[i];
  }
}

}  // namespace ditwin::kernels
