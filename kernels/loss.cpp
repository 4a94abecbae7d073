// Rectified-flow interpolation and velocity MSE.
#include "kernels/loss.hpp"

#include <algorithm>
#include <cmath>

#include <Eigen/Core>

namespace ditwin::kernels {

void rectified_flow_input(float* z, const float* x0, const float* noise, const float* t, int batch, int n) {
  for (int b = 0; b < batch; ++b) {
    const long o = static_cast<long>(b) * n;
    for (int i = 0; i < n; ++i) z[o + i] = (1.0f - t[b]) * x0[o + i] + t[b] * noise[o + i];
  }
}

double rectified_flow_loss_forward(const float* v_hat, const float* x0, const float* noise, int batch,
                                   int out_channels, int channels, int plane) {
  double sum = 0;
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < channels; ++c) {
      const float* vh = v_hat + (static_cast<long>(b) * out_channels + c) * plane;
      const long o = (static_cast<long>(b) * channels + c) * plane;
      for (int p = 0; p < plane; ++p) {
        const double diff = static_cast<double>(vh[p]) - (static_cast<double>(noise[o + p]) - x0[o + p]);
        sum += diff * diff;
      }
    }
  return sum / (static_cast<double>(batch) * channels * plane);
}

void rectified_flow_loss_backward(float* dv_hat, const float* v_hat, const float* x0, const float* noise,
                                  float dloss, int batch, int out_channels, int channels, int plane) {
  const float k = 2.0f * dloss / (static_cast<float>(batch) * channels * plane);
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < channels; ++c) {
      const long vo = (static_cast<long>(b) * out_channels + c) * plane;
      const long o = (static_cast<long>(b) * channels + c) * plane;
      for (int p = 0; p < plane; ++p) dv_hat[vo + p] += k * (v_hat[vo + p] - (noise[o + p] - x0[o + p]));
    }
}

double rectified_flow_token_loss(const float* out_tok, const float* x0, const float* noise, int batch, int first,
                                 int tokens, int patch, int channels, int out_channels, int size, float* dout_tok,
                                 float dloss) {
  const int grid = size / patch, P = patch, pout = P * P * out_channels;
  const std::size_t plane = static_cast<std::size_t>(channels) * size * size;
  const double count = static_cast<double>(batch) * plane;
  const float k2 = static_cast<float>(2.0 * dloss / count);
  double sum = 0;
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < tokens; ++t) {
      const int tok = first + t, gi = tok / grid, gj = tok % grid;
      const float* v = out_tok + (static_cast<std::size_t>(b) * tokens + t) * pout;
      float* d = dout_tok ? dout_tok + (static_cast<std::size_t>(b) * tokens + t) * pout : nullptr;
      for (int i = 0; i < P; ++i)
        for (int j = 0; j < P; ++j)
          for (int c = 0; c < channels; ++c) {
            const std::size_t px = b * plane + (static_cast<std::size_t>(c) * size + gi * P + i) * size + gj * P + j;
            const float diff = v[(i * P + j) * out_channels + c] - (noise[px] - x0[px]);
            sum += static_cast<double>(diff) * diff;
            if (d) d[(i * P + j) * out_channels + c] += k2 * diff;
          }
    }
  return sum / count;
}

namespace {
using Array = Eigen::Array<float, Eigen::Dynamic, 1>;
// Softmax of one row into `p` (vectorized exp in float, the max subtracted first) and
// log Σ exp(row) in double.
double softmax_row(const float* row, int n, Array& p) {
  Eigen::Map<const Array> x(row, n);
  const float mx = x.maxCoeff();
  p = (x - mx).exp();
  double sum = 0;
  for (int j = 0; j < n; ++j) sum += p[j];
  p /= static_cast<float>(sum);
  return mx + std::log(sum);
}
}  // namespace

double cross_entropy_forward(const float* logits, const int* targets, int rows, int vocab, long* count) {
  double sum = 0;
  long n = 0;
  Array p(vocab);
  for (int r = 0; r < rows; ++r) {
    if (targets[r] < 0) continue;
    const float* row = logits + static_cast<long>(r) * vocab;
    sum += softmax_row(row, vocab, p) - row[targets[r]];
    ++n;
  }
  *count = n;
  return sum;
}

void cross_entropy_backward(float* dlogits, const float* logits, const int* targets, float dloss, int rows, int vocab) {
  Array p(vocab);
  for (int r = 0; r < rows; ++r) {
    if (targets[r] < 0) continue;
    softmax_row(logits + static_cast<long>(r) * vocab, vocab, p);
    Eigen::Map<Array>(dlogits + static_cast<long>(r) * vocab, vocab) += dloss * p;
    dlogits[static_cast<long>(r) * vocab + targets[r]] -= dloss;
  }
}

}  // namespace ditwin::kernels
