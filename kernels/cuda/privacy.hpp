// DP-SGD's per-sample pieces on the GPU (the CUDA versions of kernels/per_sample_norm and
// kernels/gaussian_noise): each sample's squared weight-gradient norm of a linear layer by the
// ghost norm (two per-sample Gram matrices from one strided-batched cuBLASLt GEMM each) or by the
// materialized per-sample gradient (one strided-batched GEMM), whichever the caller's rule picks;
// the per-sample scaling of output gradients; and the counter-based Gaussian noise, the same
// N_i(key) stream as the CPU's (up to float rounding of log, sin and cos).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/common.hpp"
#include "kernels/cuda/matmul.hpp"

namespace ditwin::kernels::cuda {

// Floats of scratch per_sample_sq_norms needs for `chunk` samples at a time.
std::size_t per_sample_norm_scratch(int chunk, int rows, int d_in, int d_out, bool ghost);
// The samples per_sample_sq_norms takes at a time within `scratch_floats` (at least 1).
int per_sample_norm_chunk(std::size_t scratch_floats, int batch, int rows, int d_in, int d_out, bool ghost);

// sq[b] += ||inp[b]^T dout[b]||_F^2 (+ ||sum_t dout[b][t]||^2 when bias) for the `batch` samples,
// each `rows` rows of inp (rows x d_in) and dout (rows x d_out), row-major and sample-major.
// Rank-one samples (rows 1) use ||a||^2 ||g||^2 directly. `scratch` holds
// per_sample_norm_scratch(chunk, ...) floats for chunk = per_sample_norm_chunk(scratch_floats, ...).
template <typename T>
void per_sample_sq_norms(Blas& blas, double* sq, const T* inp, const T* dout, int batch, int rows, int d_in, int d_out,
                         bool bias, bool ghost, float* scratch, std::size_t scratch_floats, cudaStream_t stream);

// sq[b] += ||x[b]||^2 for `batch` rows of n floats (the class table's per-sample row gradient).
void per_sample_sq_sum(double* sq, const float* x, int batch, std::size_t n, cudaStream_t stream);

// out[b][t][:] = factor[b] * g[b][t][:] for `batch` samples of `rows` rows of `width`.
template <typename T>
void scale_sample_rows(T* out, const T* g, const float* factor, int batch, int rows, int width, cudaStream_t stream);

// out[k] += stddev * N_{begin + k}(key) for k < n: kernels::add_gaussian_noise's stream.
void add_gaussian_noise(float* out, std::size_t n, std::uint64_t begin, std::uint64_t key, float stddev,
                        cudaStream_t stream);

}  // namespace ditwin::kernels::cuda
