// Linear layers on the GPU through cuBLASLt: the CUDA version of kernels/matmul.hpp, with the
// same row-major, PyTorch-weight-layout conventions (out = inp · Wᵀ + b, W is out × in). The
// bias is fused into the forward GEMM (cuBLASLt's BIAS epilogue); the weight gradient is
// accumulated in fp32 (the master gradients) straight from bf16 operands. A Blas object owns
// the cuBLASLt handle, its workspace and a cache of the algorithm chosen per shape.
#pragma once
#include <memory>

#include "kernels/cuda/common.hpp"

namespace ditwin::kernels::cuda {

class Blas {
 public:
  explicit Blas(std::size_t workspace_bytes = 32u << 20);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// out (n × oc) = inp (n × ic) · weightᵀ + bias (oc, may be null). T = bf16 or float (fp32 GEMM,
// no TF32: the finite-difference tests need full precision).
template <typename T>
void matmul_forward(Blas& blas, T* out, const T* inp, const T* weight, const T* bias, int n, int ic, int oc,
                    cudaStream_t stream);
// dinp (T) += dout · weight; dweight (fp32) += doutᵀ · inp; dbias (fp32) += column sums of dout.
// Any of the three may be null. With accumulate_dinp false, dinp = dout · weight (its old contents,
// NaN included, are not read): what a caller that would zero dinp first wants, without the memset.
template <typename T>
void matmul_backward(Blas& blas, T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                     int n, int ic, int oc, cudaStream_t stream, bool accumulate_dinp = true);

// Per-sample products for DP-SGD, strided-batched over `batch` samples, fp32 out (beta 0):
// out[i] (rows x rows) = x[i] · x[i]ᵀ for x[i] row-major rows x d (a Gram matrix);
template <typename T>
void gram_batched(Blas& blas, float* out, const T* x, int batch, int rows, int d, cudaStream_t stream);
// out[i] (row-major d_out x d_in) = g[i]ᵀ · a[i] for g[i] rows x d_out, a[i] rows x d_in.
template <typename T>
void outer_batched(Blas& blas, float* out, const T* g, const T* a, int batch, int rows, int d_out, int d_in,
                   cudaStream_t stream);

}  // namespace ditwin::kernels::cuda
