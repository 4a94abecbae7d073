// Linear layers through Eigen's GEMM on row-major maps of the caller's arrays.
#include "kernels/matmul.hpp"

#include <Eigen/Core>

namespace ditwin::kernels {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<RowMat>;
using ConstMap = Eigen::Map<const RowMat>;
}  // namespace

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

}  // namespace ditwin::kernels
