// RMSNorm, row by row; sums in double so the result does not depend on how a row is split.
#include "kernels/rmsnorm.hpp"

#include <cmath>

namespace ditwin::kernels {

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int rows, int channels, float eps) {
#pragma omp parallel for schedule(static) if (static_cast<long>(rows) * channels >= (1L << 18))
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<long>(r) * channels;
    double sq = 0;
    for (int c = 0; c < channels; ++c) sq += static_cast<double>(xr[c]) * xr[c];
    const float s = static_cast<float>(1.0 / std::sqrt(sq / channels + eps));
    rstd[r] = s;
    float* o = out + static_cast<long>(r) * channels;
    for (int c = 0; c < channels; ++c) o[c] = xr[c] * s * weight[c];
  }
}

void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* rstd,
                      const float* weight, int rows, int channels) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<long>(r) * channels;
    const float* d = dout + static_cast<long>(r) * channels;
    const float s = rstd[r];
    // y = w · x̂, x̂ = x · s: dx = s · (w·dy − x̂ · mean(x̂ · w·dy)).
    double dot = 0;
    for (int c = 0; c < channels; ++c) dot += static_cast<double>(weight[c]) * d[c] * xr[c] * s;
    const float mean = static_cast<float>(dot / channels);
    float* g = dx + static_cast<long>(r) * channels;
    for (int c = 0; c < channels; ++c) g[c] += s * (weight[c] * d[c] - xr[c] * s * mean);
    if (dweight)
      for (int c = 0; c < channels; ++c) dweight[c] += d[c] * xr[c] * s;
  }
}

}  // namespace ditwin::kernels
