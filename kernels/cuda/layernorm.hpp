// CUDA versions of kernels/layernorm.hpp: LayerNorm (no affine) fused with adaLN's modulation,
// out = x̂ · (1 + scale) + shift, plus the gated residual add fused in front of it (what DiT runs
// between the attention and the MLP: x_mid = x + gate · branch; out = LN(x_mid)·(1+scale)+shift),
// which reads x and branch once and writes x_mid and out in the same pass. T is the storage type
// (bf16, or float for finite-difference tests); statistics and reductions are fp32.
#pragma once
#include "kernels/cuda/common.hpp"

namespace ditwin::kernels::cuda {

// x, out: (batch, tokens, channels); shift/scale rows `mod_stride` apart, per sample; mean, rstd
// (fp32, batch·tokens) kept for the backward.
template <typename T>
void layernorm_modulate_forward(T* out, float* mean, float* rstd, const T* x, const T* shift, const T* scale, int batch,
                                int tokens, int channels, int mod_stride, float eps, cudaStream_t stream);
// dx += ∂/∂x; dshift, dscale (fp32, rows mod_stride apart) += Σ_tokens dout, Σ_tokens dout·x̂.
template <typename T>
void layernorm_modulate_backward(T* dx, float* dshift, float* dscale, const T* dout, const T* x, const float* mean,
                                 const float* rstd, const T* scale, int batch, int tokens, int channels, int mod_stride,
                                 cudaStream_t stream);
// x_out = x + gate · branch (rounded to T), then out = LN(x_out)·(1+scale)+shift with its mean/rstd.
// gate, shift and scale rows are all `mod_stride` apart. x_out may alias x.
template <typename T>
void residual_layernorm_modulate_forward(T* x_out, T* out, float* mean, float* rstd, const T* x, const T* branch,
                                         const T* gate, const T* shift, const T* scale, int batch, int tokens,
                                         int channels, int mod_stride, float eps, cudaStream_t stream);

}  // namespace ditwin::kernels::cuda
