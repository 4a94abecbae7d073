// LayerNorm (no affine) + adaLN modulate, forward and backward, one row (token) at a time.
#include "kernels/layernorm.hpp"

#include <cmath>

namespace ditwin::kernels {

void layernorm_modulate_forward(float* out, float* mean, float* rstd, const float* x, const float* shift,
                                const float* scale, int batch, int tokens, int channels, int mod_stride, float eps) {
  // Threads only pay off on large slices: each parallel region costs microseconds, and far more
  // when the other core is busy and a thread waits to be scheduled.
#pragma omp parallel for schedule(static) if (static_cast<long>(batch) * tokens * channels >= (1L << 17))
  for (int row = 0; row < batch * tokens; ++row) {
    const int b = row / tokens;
    const float* xr = x + static_cast<long>(row) * channels;
    float* o = out + static_cast<long>(row) * channels;
    const float* sh = shift + static_cast<long>(b) * mod_stride;
    const float* sc = scale + static_cast<long>(b) * mod_stride;
    float m = 0;
    // Several partial sums at once (the order differs from a plain loop): a single running sum
    // is bound by the adder's latency, 4x slower at DiT widths.
#pragma omp simd reduction(+ : m)
    for (int c = 0; c < channels; ++c) m += xr[c];
    m /= channels;
    float var = 0;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < channels; ++c) var += (xr[c] - m) * (xr[c] - m);
    var /= channels;
    const float r = 1.0f / std::sqrt(var + eps);
    for (int c = 0; c < channels; ++c) o[c] = (xr[c] - m) * r * (1.0f + sc[c]) + sh[c];
    mean[row] = m;
    rstd[row] = r;
  }
}

void layernorm_modulate_backward(float* dx, float* dshift, float* dscale, const float* dout, const float* x,
                                 const float* mean, const float* rstd, const float* scale, int batch, int tokens,
                                 int channels, int mod_stride) {
  // Parallel over samples: the shift/scale gradients of one sample are summed over its tokens.
#pragma omp parallel for schedule(static) if (static_cast<long>(batch) * tokens * channels >= (1L << 17))
  for (int b = 0; b < batch; ++b) {
    const float* sc = scale + static_cast<long>(b) * mod_stride;
    float* dsh = dshift + static_cast<long>(b) * mod_stride;
    float* dsc = dscale + static_cast<long>(b) * mod_stride;
    for (int t = 0; t < tokens; ++t) {
      const long row = static_cast<long>(b) * tokens + t;
      const float* xr = x + row * channels;
      const float* d = dout + row * channels;
      float* dxr = dx + row * channels;
      const float m = mean[row], r = rstd[row];
      // dx = r · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)), dx̂ = dout · (1 + scale)
      float sum_dxhat = 0, sum_dxhat_xhat = 0;
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
      for (int c = 0; c < channels; ++c) {
        const float xhat = (xr[c] - m) * r;
        const float dxhat = d[c] * (1.0f + sc[c]);
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
        dsh[c] += d[c];
        dsc[c] += d[c] * xhat;
      }
      sum_dxhat /= channels;
      sum_dxhat_xhat /= channels;
      for (int c = 0; c < channels; ++c) {
        const float xhat = (xr[c] - m) * r;
        const float dxhat = d[c] * (1.0f + sc[c]);
        dxr[c] += r * (dxhat - sum_dxhat - xhat * sum_dxhat_xhat);
      }
    }
  }
}

}  // namespace ditwin::kernels
