// Multi-head attention core on the CPU: one (sample, head) pair per task, each a few small GEMMs
// on strided views into qkv, so nothing is copied out of the fused projection. The GEMMs go to
// OpenBLAS when it is installed and the kernel runs on one thread (it has no nested parallelism
// to offer the (sample, head) loop), to Eigen otherwise.
#include "kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
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
  attention_forward(out, probs, qkv, 3 * channels, qkv + channels, qkv + 2 * channels, 3 * channels, batch, tokens,
                    tokens, channels, heads);
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs, int batch, int tokens,
                        int channels, int heads) {
  attention_backward(dqkv, dqkv + channels, dqkv + 2 * channels, dout, qkv, 3 * channels, qkv + channels,
                     qkv + 2 * channels, 3 * channels, probs, batch, tokens, tokens, channels, heads);
}

void attention_forward(float* out, float* probs, const float* q_all, int q_ld, const float* k_all, const float* v_all,
                       int kv_ld, int batch, int tq, int tk, int channels, int heads, const unsigned char* mask) {
  const int d = channels / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool threaded = parallel_region(static_cast<long>(batch) * heads * tq * tk * d);
  const bool blas = !threaded;  // BLAS calls from several threads at once would queue on its pool
#pragma omp parallel for collapse(2) schedule(static) if (threaded)
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const float* q = q_all + static_cast<long>(b) * tq * q_ld + h * d;
      const float* k = k_all + static_cast<long>(b) * tk * kv_ld + h * d;
      const float* v = v_all + static_cast<long>(b) * tk * kv_ld + h * d;
      float* p = probs + (static_cast<long>(b) * heads + h) * tq * tk;
      gemm(false, true, tq, tk, d, scale, q, q_ld, k, kv_ld, 0.f, p, tk, blas);  // S = QKᵀ/√d
      // Softmax rows: sums as explicit simd loops (Eigen's reductions peel by alignment, so their
      // rounding would depend on heap addresses; these depend on the row length only).
      for (int i = 0; i < tq; ++i) {
        float* row = p + static_cast<long>(i) * tk;
        if (mask) {
          const unsigned char* allowed = mask + static_cast<long>(i) * tk;
          for (int j = 0; j < tk; ++j)
            if (!allowed[j]) row[j] = -std::numeric_limits<float>::infinity();
        }
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j < tk; ++j) mx = std::max(mx, row[j]);
        Eigen::Map<Eigen::ArrayXf> r(row, tk);
        r = (r - mx).exp();  // vectorized; std::exp in a loop is not
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < tk; ++j) sum += row[j];
        const float inv = 1.0f / sum;
        for (int j = 0; j < tk; ++j) row[j] *= inv;
      }
      gemm(false, false, tq, d, tk, 1.f, p, tk, v, kv_ld, 0.f, out + static_cast<long>(b) * tq * channels + h * d,
           channels, blas);  // O = PV
    }
  }
}

void attention_backward(float* dq_all, float* dk_all, float* dv_all, const float* dout, const float* q_all, int q_ld,
                        const float* k_all, const float* v_all, int kv_ld, const float* probs, int batch, int tq, int tk,
                        int channels, int heads) {
  const int d = channels / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool threaded = parallel_region(static_cast<long>(batch) * heads * tq * tk * d);
  const bool blas = !threaded;
#pragma omp parallel for collapse(2) schedule(static) if (threaded)
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const long qo = static_cast<long>(b) * tq * q_ld + h * d, ko = static_cast<long>(b) * tk * kv_ld + h * d;
      const float *q = q_all + qo, *k = k_all + ko, *v = v_all + ko;
      float *dq = dq_all + qo, *dk = dk_all + ko, *dv = dv_all + ko;
      const float* p = probs + (static_cast<long>(b) * heads + h) * tq * tk;
      const float* dout_bh = dout + static_cast<long>(b) * tq * channels + h * d;
      gemm(true, false, tk, d, tq, 1.f, p, tk, dout_bh, channels, 1.f, dv, kv_ld, blas);  // dV += PᵀdO
      // dS = P ∘ (dP − rowsum(P ∘ dP)), dP = dO Vᵀ; the 1/sqrt(d) of the scores folds in here.
      std::vector<float> ds(static_cast<std::size_t>(tq) * tk);
      gemm(false, true, tq, tk, d, 1.f, dout_bh, channels, v, kv_ld, 0.f, ds.data(), tk, blas);
      for (int i = 0; i < tq; ++i) {
        const float* pr = p + static_cast<long>(i) * tk;
        float* dr = ds.data() + static_cast<long>(i) * tk;
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < tk; ++j) dot += pr[j] * dr[j];
        for (int j = 0; j < tk; ++j) dr[j] = pr[j] * (dr[j] - dot) * scale;
      }
      gemm(false, false, tq, d, tk, 1.f, ds.data(), tk, k, kv_ld, 1.f, dq, q_ld, blas);  // dQ += dS K
      gemm(true, false, tk, d, tq, 1.f, ds.data(), tk, q, q_ld, 1.f, dk, kv_ld, blas);   // dK += dSᵀ Q
    }
  }
}

}  // namespace ditwin::kernels
