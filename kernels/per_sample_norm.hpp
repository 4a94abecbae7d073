// DP-SGD's per-sample pieces of a linear layer (out = inp . W^T + b) on the CPU: the squared norm
// of each sample's weight (and bias) gradient without forming the batch's per-sample gradients,
// and the per-sample scaling of output gradients that turns the batch's weight gradient into the
// sum of clipped per-sample gradients (book-keeping: Bu et al. 2023).
#pragma once
#include <cstddef>

namespace ditwin::kernels {

// Floats of scratch linear_per_sample_sq_norms needs.
std::size_t per_sample_norm_scratch(int rows, int d_in, int d_out, bool ghost);

// For each sample b of `batch`, whose `rows` rows are inp[b] (rows x d_in) and dout[b] (rows x
// d_out): sq_norms[b] += ||inp[b]^T dout[b]||_F^2 (+ ||sum_t dout[b][t]||^2 when bias).
// ghost: from the two rows x rows Gram matrices, ||A^T G||^2 = sum_{t,s} (a_t.a_s)(g_t.g_s);
// otherwise the d_out x d_in product is formed, one sample at a time, in `scratch`.
void linear_per_sample_sq_norms(double* sq_norms, const float* inp, const float* dout, int batch, int rows, int d_in,
                                int d_out, bool bias, bool ghost, float* scratch);

// out[b][t][:] = factor[b] * g[b][t][:] for `batch` samples of `rows` rows of `width`.
void scale_sample_rows(float* out, const float* g, const float* factor, int batch, int rows, int width);

}  // namespace ditwin::kernels
