// CUDA versions of kernels/gelu, silu, residual, loss and embedding (same argument order as the
// CPU functions, plus the stream). T is the storage type of activations and their gradients:
// bf16 in training, float for finite-difference tests; arithmetic is fp32 either way. Per-sample
// or per-parameter reductions (dgate, dtable, dbias) accumulate in fp32 (float*), with atomics.
// As on the CPU, every backward ADDS into its gradient outputs.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/common.hpp"

namespace ditwin::kernels::cuda {

// tanh-GELU and SiLU over n elements.
template <typename T>
void gelu_forward(T* out, const T* inp, std::size_t n, cudaStream_t stream);
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, std::size_t n, cudaStream_t stream);
template <typename T>
void silu_forward(T* out, const T* inp, std::size_t n, cudaStream_t stream);
template <typename T>
void silu_backward(T* dinp, const T* inp, const T* dout, std::size_t n, cudaStream_t stream);

// out = x + gate · branch; gate rows `gate_stride` elements apart (per sample), out may alias x.
template <typename T>
void gated_residual_forward(T* out, const T* x, const T* branch, const T* gate, int batch, int tokens, int channels,
                            int gate_stride, cudaStream_t stream);
// dx += dout (dx may be null or dout itself: then nothing), dbranch += gate · dout,
// dgate (fp32, rows gate_stride apart) += Σ_tokens branch · dout.
template <typename T>
void gated_residual_backward(T* dx, T* dbranch, float* dgate, const T* dout, const T* branch, const T* gate, int batch,
                             int tokens, int channels, int gate_stride, cudaStream_t stream);

// Rectified flow: z (batch, n) = (1 − t[b])·x0 + t[b]·noise; data in fp32.
template <typename T>
void rectified_flow_input(T* z, const float* x0, const float* noise, const float* t, int batch, int n,
                          cudaStream_t stream);
// *loss (device, overwritten) = mean over batch·channels·plane of (v̂ − (noise − x0))².
template <typename T>
void rectified_flow_loss_forward(double* loss, const T* v_hat, const float* x0, const float* noise, int batch,
                                 int out_channels, int channels, int plane, cudaStream_t stream);
template <typename T>
void rectified_flow_loss_backward(T* dv_hat, const T* v_hat, const float* x0, const float* noise, float dloss,
                                  int batch, int out_channels, int channels, int plane, cudaStream_t stream);

// Patchify / unpatchify and their adjoints (layouts as kernels/embedding.hpp).
template <typename T>
void patchify_forward(T* tokens, const T* latents, int batch, int channels, int size, int patch, cudaStream_t stream);
template <typename T>
void patchify_backward(T* dlatents, const T* dtokens, int batch, int channels, int size, int patch,
                       cudaStream_t stream);
template <typename T>
void unpatchify_forward(T* images, const T* tokens, int batch, int channels, int size, int patch, cudaStream_t stream);
template <typename T>
void unpatchify_backward(T* dtokens, const T* dimages, int batch, int channels, int size, int patch,
                         cudaStream_t stream);

// out (batch, dim) = [cos(t·f), sin(t·f)] (kernels/embedding.hpp's timestep_embedding_forward).
template <typename T>
void timestep_embedding_forward(T* out, const float* t, int batch, int dim, float max_period, cudaStream_t stream);
// out (batch, channels) = table[labels[b]]; labels on the device.
template <typename T>
void class_embedding_forward(T* out, const T* table, const int* labels, int batch, int channels, cudaStream_t stream);
// dtable (fp32) [labels[b]] += dout[b].
template <typename T>
void class_embedding_backward(float* dtable, const T* dout, const int* labels, int batch, int channels,
                              cudaStream_t stream);

// x (rows, channels) += table[row % period] (the positional embedding over each sample's tokens).
template <typename T>
void add_rows_periodic(T* x, const T* table, int rows, int period, int channels, cudaStream_t stream);
// dbias (fp32, channels) += Σ_rows dout (the bias gradient of a linear layer).
template <typename T>
void column_sum_accumulate(float* dbias, const T* dout, int rows, int channels, cudaStream_t stream);

// Pseudo-random values for benchmarks and calibration, generated on the device (a hash of the
// element index and the seed): magnitudes uniform in [lo, hi), random signs, never zero for lo > 0.
template <typename T>
void fill_random(T* out, std::size_t n, std::uint64_t seed, float lo, float hi, cudaStream_t stream);

// Conversions and small vector ops on device arrays of n elements.
template <typename From, typename To>
void convert(To* out, const From* in, std::size_t n, cudaStream_t stream);
void scale(float* x, float factor, std::size_t n, cudaStream_t stream);
void accumulate(float* y, const float* x, std::size_t n, cudaStream_t stream);  // y += x
// y += x in T storage (fp32 arithmetic).
template <typename T>
void add_inplace(T* y, const T* x, std::size_t n, cudaStream_t stream);

}  // namespace ditwin::kernels::cuda
