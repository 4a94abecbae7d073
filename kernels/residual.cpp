// adaLN-Zero's gated residual, forward and backward.
#include "kernels/residual.hpp"

namespace ditwin::kernels {

void gated_residual_forward(float* out, const float* x, const float* branch, const float* gate, int batch, int tokens,
                            int channels, int gate_stride) {
  for (int b = 0; b < batch; ++b) {
    const float* g = gate + static_cast<long>(b) * gate_stride;
    for (int t = 0; t < tokens; ++t) {
      const long row = (static_cast<long>(b) * tokens + t) * channels;
      for (int c = 0; c < channels; ++c) out[row + c] = x[row + c] + g[c] * branch[row + c];
    }
  }
}

void gated_residual_backward(float* dx, float* dbranch, float* dgate, const float* dout, const float* branch,
                             const float* gate, int batch, int tokens, int channels, int gate_stride) {
  for (int b = 0; b < batch; ++b) {
    const float* g = gate + static_cast<long>(b) * gate_stride;
    float* dg = dgate + static_cast<long>(b) * gate_stride;
    for (int t = 0; t < tokens; ++t) {
      const long row = (static_cast<long>(b) * tokens + t) * channels;
      for (int c = 0; c < channels; ++c) {
        const float d = dout[row + c];
        dbranch[row + c] += g[c] * d;
        dg[c] += branch[row + c] * d;
      }
      if (dx && dx != dout)
        for (int c = 0; c < channels; ++c) dx[row + c] += dout[row + c];
    }
  }
}

}  // namespace ditwin::kernels
