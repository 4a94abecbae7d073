// Multi-head attention core on the CPU: one (sample, head) pair per task, each a few small GEMMs
// on strided views into qkv, so nothing is copied out of the fused projection. The GEMMs go to
// OpenBLAS when it is installed and the kernel runs on one thread (it has no nested parallelism
// to offer the (sample, head) loop), to Eigen otherwise.
#include "kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <Eigen/Core>
#ifdef DITWIN_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace ditwin::kernels {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
using ConstStrided = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;

// C (m x n, leading dimension ldc) = alpha · op(A) · op(B) + beta · C, all row-major; op(X) is X
// or its transpose, and A is stored m x k (k x m when transposed) with leading dimension lda.
void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
          float beta, float* c, int ldc, bool blas) {
#ifdef DITWIN_HAVE_OPENBLAS
  if (blas) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
                ldb, beta, c, ldc);
    return;
  }
#endif
  (void)blas;
  ConstStrided A(a, ta ? k : m, ta ? m : k, Eigen::OuterStride<>(lda));
  ConstStrided B(b, tb ? n : k, tb ? k : n, Eigen::OuterStride<>(ldb));
  Strided C(c, m, n, Eigen::OuterStride<>(ldc));
  if (beta == 0) C.setZero();
  else if (beta != 1) C *= beta;
  if (ta && tb) C.noalias() += alpha * (A.transpose() * B.transpose());
  else if (ta) C.noalias() += alpha * (A.transpose() * B);
  else if (tb) C.noalias() += alpha * (A * B.transpose());
  else C.noalias() += alpha * (A * B);
}

bool parallel_region(long work) {
#ifdef _OPENMP
  return work >= (1L << 18) && omp_get_max_threads() > 1;
#else
  (void)work;
  return false;
#endif
}
}  // namespace

void attention_forward(float* out, float* probs, const float* qkv, int batch, int tokens, int channels, int heads) {
  const int d = channels / heads, in_ld = 3 * channels;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool threaded = parallel_region(static_cast<long>(batch) * heads * tokens * tokens * d);
  const bool blas = !threaded;  // BLAS calls from several threads at once would queue on its pool
#pragma omp parallel for collapse(2) schedule(static) if (threaded)
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const float* q = qkv + static_cast<long>(b) * tokens * in_ld + h * d;
      float* p = probs + (static_cast<long>(b) * heads + h) * tokens * tokens;
      gemm(false, true, tokens, tokens, d, scale, q, in_ld, q + channels, in_ld, 0.f, p, tokens, blas);  // S = QKᵀ/√d
      // Softmax rows: sums as explicit simd loops (Eigen's reductions peel by alignment, so their
      // rounding would depend on heap addresses; these depend on the row length only).
      for (int i = 0; i < tokens; ++i) {
        float* row = p + static_cast<long>(i) * tokens;
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
      gemm(false, false, tokens, d, tokens, 1.f, p, tokens, q + 2 * channels, in_ld, 0.f,
           out + static_cast<long>(b) * tokens * channels + h * d, channels, blas);  // O = PV
    }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs, int batch, int tokens,
                        int channels, int heads) {
  const int d = channels / heads, in_ld = 3 * channels;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool threaded = parallel_region(static_cast<long>(batch) * heads * tokens * tokens * d);
  const bool blas = !threaded;
#pragma omp parallel for collapse(2) schedule(static) if (threaded)
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const long off = static_cast<long>(b) * tokens * in_ld + h * d;
      const float *q = qkv + off, *k = q + channels, *v = q + 2 * channels;
      float *dq = dqkv + off, *dk = dq + channels, *dv = dq + 2 * channels;
      const float* p = probs + (static_cast<long>(b) * heads + h) * tokens * tokens;
      const float* dout_bh = dout + static_cast<long>(b) * tokens * channels + h * d;
      gemm(true, false, tokens, d, tokens, 1.f, p, tokens, dout_bh, channels, 1.f, dv, in_ld, blas);  // dV += PᵀdO
      // dS = P ∘ (dP − rowsum(P ∘ dP)), dP = dO Vᵀ; the 1/sqrt(d) of the scores folds in here.
      std::vector<float> ds(static_cast<std::size_t>(tokens) * tokens);
      gemm(false, true, tokens, tokens, d, 1.f, dout_bh, channels, v, in_ld, 0.f, ds.data(), tokens, blas);
      for (int i = 0; i < tokens; ++i) {
        const float* pr = p + static_cast<long>(i) * tokens;
        float* dr = ds.data() + static_cast<long>(i) * tokens;
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < tokens; ++j) dot += pr[j] * dr[j];
        for (int j = 0; j < tokens; ++j) dr[j] = pr[j] * (dr[j] - dot) * scale;
      }
      gemm(false, false, tokens, d, tokens, 1.f, ds.data(), tokens, k, in_ld, 1.f, dq, in_ld, blas);  // dQ += dS K
      gemm(true, false, tokens, d, tokens, 1.f, ds.data(), tokens, q, in_ld, 1.f, dk, in_ld, blas);   // dK += dSᵀ Q
    }
  }
}

}  // namespace ditwin::kernels
