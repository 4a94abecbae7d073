// Per-sample gradient norms of linear layers: symmetric rank-k updates (OpenBLAS ssyrk) for the
// ghost norm, one GEMM per sample for the materialized one; Eigen where OpenBLAS is absent.
#include "kernels/per_sample_norm.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <vector>
#ifdef DITWIN_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace ditwin::kernels {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<RowMat>;
using ConstMap = Eigen::Map<const RowMat>;

// Upper triangle (at least) of x x^T for x (n x k), into c (n x n).
void gram_upper(float* c, const float* x, int n, int k) {
#ifdef DITWIN_HAVE_OPENBLAS
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1.f, x, k, 0.f, c, n);
#else
  ConstMap m(x, n, k);
  Map(c, n, n).noalias() = m * m.transpose();
#endif
}

// c (m x n) = a^T b for a (k x m), b (k x n).
void product_at_b(float* c, const float* a, const float* b, int k, int m, int n) {
#ifdef DITWIN_HAVE_OPENBLAS
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.f, a, m, b, n, 0.f, c, n);
#else
  Map(c, m, n).noalias() = ConstMap(a, k, m).transpose() * ConstMap(b, k, n);
#endif
}

// A per-thread buffer for the bias row sums (at most d_out floats).
float* bias_sum(int n) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < static_cast<std::size_t>(n)) buffer.resize(n);
  return buffer.data();
}

double dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}
}  // namespace

std::size_t per_sample_norm_scratch(int rows, int d_in, int d_out, bool ghost) {
  if (rows <= 1) return 0;
  return ghost ? 2 * static_cast<std::size_t>(rows) * rows : static_cast<std::size_t>(d_in) * d_out;
}

void linear_per_sample_sq_norms(double* sq_norms, const float* inp, const float* dout, int batch, int rows, int d_in,
                                int d_out, bool bias, bool ghost, float* scratch) {
  for (int b = 0; b < batch; ++b) {
    const float* a = inp + static_cast<std::size_t>(b) * rows * d_in;
    const float* g = dout + static_cast<std::size_t>(b) * rows * d_out;
    double sq = 0;
    if (rows == 1) {
      sq = dot(a, a, d_in) * dot(g, g, d_out);  // a rank-one gradient
    } else if (ghost) {
      float* ga = scratch;
      float* gg = scratch + static_cast<std::size_t>(rows) * rows;
      gram_upper(ga, a, rows, d_in);
      gram_upper(gg, g, rows, d_out);
      double diag = 0, off = 0;
      for (int t = 0; t < rows; ++t) {
        const float* ra = ga + static_cast<std::size_t>(t) * rows;
        const float* rg = gg + static_cast<std::size_t>(t) * rows;
        diag += static_cast<double>(ra[t]) * rg[t];
        off += dot(ra + t + 1, rg + t + 1, rows - t - 1);
      }
      sq = diag + 2 * off;
    } else {
      product_at_b(scratch, g, a, rows, d_out, d_in);
      sq = dot(scratch, scratch, d_out * d_in);
    }
    if (bias) {  // the bias gradient is the sum of the sample's rows: summed row by row (contiguous)
      float* sum = bias_sum(d_out);
      std::copy(g, g + d_out, sum);
      for (int t = 1; t < rows; ++t) {
        const float* row = g + static_cast<std::size_t>(t) * d_out;
        for (int c = 0; c < d_out; ++c) sum[c] += row[c];
      }
      sq += dot(sum, sum, d_out);
    }
    sq_norms[b] += sq;
  }
}

void scale_sample_rows(float* out, const float* g, const float* factor, int batch, int rows, int width) {
  const std::size_t per = static_cast<std::size_t>(rows) * width;
  for (int b = 0; b < batch; ++b) {
    const float f = factor[b];
    const float* src = g + b * per;
    float* dst = out + b * per;
    for (std::size_t i = 0; i < per; ++i) dst[i] = f * src[i];
  }
}

}  // namespace ditwin::kernels
