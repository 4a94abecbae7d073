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

void swiglu_forward(float* out, const float* inp, int rows, int width) {
  for (long r = 0; r < rows; ++r) {
    const float* g = inp + r * 2 * width;
    const float* u = g + width;
    float* o = out + r * width;
    for (int c = 0; c < width; ++c) o[c] = g[c] / (1.0f + std::exp(-g[c])) * u[c];
  }
}

void swiglu_backward(float* dinp, const float* inp, const float* dout, int rows, int width) {
  for (long r = 0; r < rows; ++r) {
    const float* g = inp + r * 2 * width;
    const float* u = g + width;
    const float* d = dout + r * width;
    float* dg = dinp + r * 2 * width;
    float* du = dg + width;
    for (int c = 0; c < width; ++c) {
      const float s = 1.0f / (1.0f + std::exp(-g[c]));
      du[c] += d[c] * g[c] * s;
      dg[c] += d[c] * u[c] * s * (1.0f + g[c] * (1.0f - s));
    }
  }
}

}  // namespace ditwin::kernels
