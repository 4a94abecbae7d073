// Linear layers: OpenBLAS's sgemm where it is installed, Eigen's GEMM on row-major maps otherwise.
#include "kernels/matmul.hpp"

#include <Eigen/Core>
#include <cstring>
#ifdef DITWIN_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace ditwin::kernels {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<RowMat>;
using ConstMap = Eigen::Map<const RowMat>;
}  // namespace

#ifdef DITWIN_HAVE_OPENBLAS
// OpenBLAS's sgemm: the same BLAS PyTorch uses on these machines.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int n, int ic, int oc) {
  float beta = 0.f;
  if (bias) {
    for (int r = 0; r < n; ++r) std::memcpy(out + static_cast<long>(r) * oc, bias, sizeof(float) * oc);
    beta = 1.f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, oc, ic, 1.f, inp, ic, weight, ic, beta, out, oc);
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int n, int ic, int oc) {
  if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, ic, oc, 1.f, dout, oc, weight, ic, 1.f, dinp, ic);
  if (dweight) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, oc, ic, n, 1.f, dout, oc, inp, ic, 1.f, dweight, ic);
  if (dbias)
    for (int r = 0; r < n; ++r) {
      const float* row = dout + static_cast<long>(r) * oc;
      for (int c = 0; c < oc; ++c) dbias[c] += row[c];
    }
}
#else
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int n, int ic, int oc) {
  Map o(out, n, oc);
  ConstMap x(inp, n, ic);
  ConstMap w(weight, oc, ic);
  o.noalias() = x * w.transpose();
  if (bias) o.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias, oc);
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int n, int ic, int oc) {
  ConstMap d(dout, n, oc);
  if (dinp) Map(dinp, n, ic).noalias() += d * ConstMap(weight, oc, ic);
  if (dweight) Map(dweight, oc, ic).noalias() += d.transpose() * ConstMap(inp, n, ic);
  // Column sums as a plain loop: Eigen's reductions peel by the data's alignment, so their
  // rounding (and the run-to-run bits of the whole step) would depend on heap addresses.
  if (dbias)
    for (int r = 0; r < n; ++r) {
      const float* row = dout + static_cast<long>(r) * oc;
      for (int c = 0; c < oc; ++c) dbias[c] += row[c];
    }
}
#endif

}  // namespace ditwin::kernels
