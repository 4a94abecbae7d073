// Multi-head attention core on the CPU: one (sample, head) pair per task, each a few small
// Eigen GEMMs on strided maps into qkv, so nothing is copied out of the fused projection.
#include "kernels/attention.hpp"

#include <algorithm>
#include <cmath>

#include <Eigen/Core>

namespace ditwin::kernels {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
using ConstStrided = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
}  // namespace

void attention_forward(float* out, float* probs, const float* qkv, int batch, int tokens, int channels, int heads) {
  const int d = channels / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const Eigen::OuterStride<> in_stride(3 * channels), out_stride(channels);
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<long>(batch) * heads * tokens * tokens * d >= (1L << 18))
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const float* base = qkv + static_cast<long>(b) * tokens * 3 * channels + h * d;
      ConstStrided q(base, tokens, d, in_stride);
      ConstStrided k(base + channels, tokens, d, in_stride);
      ConstStrided v(base + 2 * channels, tokens, d, in_stride);
      Eigen::Map<RowMat> p(probs + (static_cast<long>(b) * heads + h) * tokens * tokens, tokens, tokens);
      p.noalias() = (q * k.transpose()) * scale;
      // Softmax rows: sums as explicit simd loops (Eigen's reductions peel by alignment, so their
      // rounding would depend on heap addresses; these depend on the row length only).
      for (int i = 0; i < tokens; ++i) {
        float* row = p.data() + static_cast<long>(i) * tokens;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j < tokens; ++j) mx = std::max(mx, row[j]);
        Eigen::Map<Eigen::ArrayXf> r(row, tokens);
        r = (r - mx).exp();  // vectorized; std::exp in a loop is not
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < tokens; ++j) sum += row[j];
        const float inv = 1.0f / sum;
        for (int j = 0; j < tokens; ++j) row[j] *= inv;
      }
      Strided o(out + static_cast<long>(b) * tokens * channels + h * d, tokens, d, out_stride);
      o.noalias() = p * v;
    }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs, int batch, int tokens,
                        int channels, int heads) {
  const int d = channels / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const Eigen::OuterStride<> in_stride(3 * channels), out_stride(channels);
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<long>(batch) * heads * tokens * tokens * d >= (1L << 18))
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const long off = static_cast<long>(b) * tokens * 3 * channels + h * d;
      ConstStrided q(qkv + off, tokens, d, in_stride);
      ConstStrided k(qkv + off + channels, tokens, d, in_stride);
      ConstStrided v(qkv + off + 2 * channels, tokens, d, in_stride);
      Strided dq(dqkv + off, tokens, d, in_stride);
      Strided dk(dqkv + off + channels, tokens, d, in_stride);
      Strided dv(dqkv + off + 2 * channels, tokens, d, in_stride);
      Eigen::Map<const RowMat> p(probs + (static_cast<long>(b) * heads + h) * tokens * tokens, tokens, tokens);
      ConstStrided dout_bh(dout + static_cast<long>(b) * tokens * channels + h * d, tokens, d, out_stride);
      dv.noalias() += p.transpose() * dout_bh;
      // dS = P ∘ (dP − rowsum(P ∘ dP)), dP = dO Vᵀ; the 1/sqrt(d) of the scores folds in here.
      RowMat ds = dout_bh * v.transpose();
      for (int i = 0; i < tokens; ++i) {
        const float* pr = p.data() + static_cast<long>(i) * tokens;
        float* dr = ds.data() + static_cast<long>(i) * tokens;
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < tokens; ++j) dot += pr[j] * dr[j];
        for (int j = 0; j < tokens; ++j) dr[j] = pr[j] * (dr[j] - dot) * scale;
      }
      dq.noalias() += ds * k;
      dk.noalias() += ds.transpose() * q;
    }
  }
}

}  // namespace ditwin::kernels
