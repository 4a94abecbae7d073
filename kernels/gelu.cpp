// tanh-approximate GELU.
#include "kernels/gelu.hpp"

#include <algorithm>

#include <Eigen/Core>

namespace ditwin::kernels {
namespace {
constexpr float k_sqrt_2_over_pi = 0.7978845608028654f;
constexpr float k_cubic = 0.044715f;
using Array = Eigen::Array<float, Eigen::Dynamic, 1>;
using ConstMap = Eigen::Map<const Array>;
// Eigen's tanh is vectorized (a rational approximation accurate to a few ulp); std::tanh in a loop
// is not, and made the MLP activation cost as much as the MLP's GEMMs.
constexpr std::size_t chunk = 4096;
}  // namespace

void gelu_forward(float* out, const float* inp, std::size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::size_t start = 0; start < n; start += chunk) {
    const Eigen::Index len = static_cast<Eigen::Index>(std::min(chunk, n - start));
    ConstMap x(inp + start, len);
    Eigen::Map<Array>(out + start, len) = 0.5f * x * (1.0f + (k_sqrt_2_over_pi * (x + k_cubic * x.cube())).tanh());
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, std::size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::size_t start = 0; start < n; start += chunk) {
    const Eigen::Index len = static_cast<Eigen::Index>(std::min(chunk, n - start));
    ConstMap x(inp + start, len), d(dout + start, len);
    const Array th = (k_sqrt_2_over_pi * (x + k_cubic * x.cube())).tanh();
    const Array dth = (1.0f - th.square()) * k_sqrt_2_over_pi * (1.0f + 3.0f * k_cubic * x.square());
    Eigen::Map<Array>(dinp + start, len) += (0.5f * (1.0f + th) + 0.5f * x * dth) * d;
  }
}

}  // namespace ditwin::kernels
