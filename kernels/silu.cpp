// SiLU.
#include "kernels/silu.hpp"

#include <cmath>

#include <Eigen/Core>

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

// Eigen's exp is vectorized; std::exp in a loop is not, and made SwiGLU cost as much as a GEMM.
void swiglu_forward(float* out, const float* inp, int rows, int width) {
  using Array = Eigen::Array<float, Eigen::Dynamic, 1>;
  for (long r = 0; r < rows; ++r) {
    Eigen::Map<const Array> g(inp + r * 2 * width, width), u(inp + r * 2 * width + width, width);
    Eigen::Map<Array>(out + r * width, width) = g / (1.0f + (-g).exp()) * u;
  }
}

void swiglu_backward(float* dinp, const float* inp, const float* dout, int rows, int width) {
  using Array = Eigen::Array<float, Eigen::Dynamic, 1>;
  for (long r = 0; r < rows; ++r) {
    Eigen::Map<const Array> g(inp + r * 2 * width, width), u(inp + r * 2 * width + width, width), d(dout + r * width, width);
    const Array s = 1.0f / (1.0f + (-g).exp());
    Eigen::Map<Array>(dinp + r * 2 * width + width, width) += d * g * s;
    Eigen::Map<Array>(dinp + r * 2 * width, width) += d * u * s * (1.0f + g * (1.0f - s));
  }
}

}  // namespace ditwin::kernels
