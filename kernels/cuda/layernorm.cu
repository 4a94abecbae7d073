// LayerNorm + adaLN modulate, forward (one warp per row) and backward (one block per sample and
// chunk of tokens: the row gradients warp by warp, then the per-sample shift/scale gradients as
// column sums down the chunk, one atomic per channel and chunk).
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/layernorm.hpp"

namespace ditwin::kernels::cuda {

namespace {

constexpr int warps_per_block = 8;
constexpr int ln_chunk = 32;  // tokens per backward block

// Forward. With kResidual, the row is first x + gate·branch, stored (rounded) to x_out and
// normalised from the rounded values, so the backward (which reads x_out) sees the same x̂.
template <typename T, bool kVec, bool kResidual>
__global__ void __launch_bounds__(warps_per_block * 32)
    layernorm_forward_kernel(T* x_out, T* out, float* mean, float* rstd, const T* x, const T* branch, const T* gate,
                             const T* shift, const T* scale, int rows, int tokens, int channels, int mod_stride,
                             float eps) {
  constexpr int V = kVec ? vec_width<T>() : 1;
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * warps_per_block + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int b = row / tokens;
  const std::size_t off = static_cast<std::size_t>(row) * channels;
  const T* xr = x + off;
  const T* sh = shift + static_cast<std::size_t>(b) * mod_stride;
  const T* sc = scale + static_cast<std::size_t>(b) * mod_stride;
  // Pass 1: the row (with the residual add) and its sum.
  float sum = 0.f;
  for (int c = lane * V; c < channels; c += 32 * V) {
    float v[V];
    if constexpr (kVec) load_vec(v, xr + c);
    else v[0] = to_float(xr[c]);
    if constexpr (kResidual) {
      const T* g = gate + static_cast<std::size_t>(b) * mod_stride;
      float bv[V], gv[V];
      if constexpr (kVec) {
        load_vec(bv, branch + off + c);
        load_vec(gv, g + c);
      } else {
        bv[0] = to_float(branch[off + c]);
        gv[0] = to_float(g[c]);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = to_float(from_float<T>(v[k] + gv[k] * bv[k]));
      if constexpr (kVec) store_vec(x_out + off + c, v);
      else x_out[off + c] = from_float<T>(v[0]);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) sum += v[k];
  }
  const T* src = kResidual ? x_out + off : xr;  // this lane reads back only what it wrote
  const float m = warp_sum(sum) / channels;
  // Pass 2: the variance around the mean (two passes: no cancellation for large means).
  float sq = 0.f;
  for (int c = lane * V; c < channels; c += 32 * V) {
    float v[V];
    if constexpr (kVec) load_vec(v, src + c);
    else v[0] = to_float(src[c]);
#pragma unroll
    for (int k = 0; k < V; ++k) sq += (v[k] - m) * (v[k] - m);
  }
  const float r = rsqrtf(warp_sum(sq) / channels + eps);
  // Pass 3: normalise and modulate.
  for (int c = lane * V; c < channels; c += 32 * V) {
    float v[V], s[V], h[V];
    if constexpr (kVec) {
      load_vec(v, src + c);
      load_vec(s, sc + c);
      load_vec(h, sh + c);
    } else {
      v[0] = to_float(src[c]);
      s[0] = to_float(sc[c]);
      h[0] = to_float(sh[c]);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = (v[k] - m) * r * (1.0f + s[k]) + h[k];
    if constexpr (kVec) store_vec(out + off + c, v);
    else out[off + c] = from_float<T>(v[0]);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

template <typename T>
__global__ void __launch_bounds__(warps_per_block * 32)
    layernorm_backward_kernel(T* dx, float* dshift, float* dscale, const T* dout, const T* x, const float* mean,
                              const float* rstd, const T* scale, int tokens, int channels, int mod_stride) {
  const int b = blockIdx.y;
  const int t0 = blockIdx.x * ln_chunk, t1 = min(tokens, t0 + ln_chunk);
  const T* sc = scale + static_cast<std::size_t>(b) * mod_stride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // Rows: dx = r · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)), dx̂ = dout · (1 + scale).
  for (int t = t0 + warp; t < t1; t += warps_per_block) {
    const std::size_t row = static_cast<std::size_t>(b) * tokens + t;
    const T* xr = x + row * channels;
    const T* d = dout + row * channels;
    const float m = mean[row], r = rstd[row];
    float s1 = 0.f, s2 = 0.f;
    for (int c = lane; c < channels; c += 32) {
      const float xhat = (to_float(xr[c]) - m) * r;
      const float dxhat = to_float(d[c]) * (1.0f + to_float(sc[c]));
      s1 += dxhat;
      s2 += dxhat * xhat;
    }
    s1 = warp_sum(s1) / channels;
    s2 = warp_sum(s2) / channels;
    T* dxr = dx + row * channels;
    for (int c = lane; c < channels; c += 32) {
      const float xhat = (to_float(xr[c]) - m) * r;
      const float dxhat = to_float(d[c]) * (1.0f + to_float(sc[c]));
      dxr[c] = from_float<T>(to_float(dxr[c]) + r * (dxhat - s1 - xhat * s2));
    }
  }
  // Columns: the chunk's contribution to this sample's shift and scale gradients.
  for (int c = threadIdx.x; c < channels; c += blockDim.x) {
    float dsh = 0.f, dsc = 0.f;
    for (int t = t0; t < t1; ++t) {
      const std::size_t row = static_cast<std::size_t>(b) * tokens + t;
      const float g = to_float(dout[row * channels + c]);
      dsh += g;
      dsc += g * (to_float(x[row * channels + c]) - mean[row]) * rstd[row];
    }
    atomicAdd(dshift + static_cast<std::size_t>(b) * mod_stride + c, dsh);
    atomicAdd(dscale + static_cast<std::size_t>(b) * mod_stride + c, dsc);
  }
}

template <typename T, bool kResidual>
void launch_forward(T* x_out, T* out, float* mean, float* rstd, const T* x, const T* branch, const T* gate,
                    const T* shift, const T* scale, int batch, int tokens, int channels, int mod_stride, float eps,
                    cudaStream_t stream) {
  const int rows = batch * tokens;
  if (rows == 0 || channels == 0) return;
  constexpr int V = vec_width<T>();
  bool vec = channels % V == 0 && mod_stride % V == 0 && aligned16(out) && aligned16(x) && aligned16(shift) &&
             aligned16(scale);
  if (kResidual) vec = vec && aligned16(x_out) && aligned16(branch) && aligned16(gate);
  const int blocks = (rows + warps_per_block - 1) / warps_per_block;
  if (vec)
    layernorm_forward_kernel<T, true, kResidual><<<blocks, warps_per_block * 32, 0, stream>>>(
        x_out, out, mean, rstd, x, branch, gate, shift, scale, rows, tokens, channels, mod_stride, eps);
  else
    layernorm_forward_kernel<T, false, kResidual><<<blocks, warps_per_block * 32, 0, stream>>>(
        x_out, out, mean, rstd, x, branch, gate, shift, scale, rows, tokens, channels, mod_stride, eps);
  DITWIN_CUDA_LAUNCH_CHECK("layernorm_modulate_forward");
}

}  // namespace

template <typename T>
void layernorm_modulate_forward(T* out, float* mean, float* rstd, const T* x, const T* shift, const T* scale, int batch,
                                int tokens, int channels, int mod_stride, float eps, cudaStream_t stream) {
  launch_forward<T, false>(nullptr, out, mean, rstd, x, nullptr, nullptr, shift, scale, batch, tokens, channels,
                           mod_stride, eps, stream);
}

template <typename T>
void residual_layernorm_modulate_forward(T* x_out, T* out, float* mean, float* rstd, const T* x, const T* branch,
                                         const T* gate, const T* shift, const T* scale, int batch, int tokens,
                                         int channels, int mod_stride, float eps, cudaStream_t stream) {
  launch_forward<T, true>(x_out, out, mean, rstd, x, branch, gate, shift, scale, batch, tokens, channels, mod_stride,
                          eps, stream);
}

template <typename T>
void layernorm_modulate_backward(T* dx, float* dshift, float* dscale, const T* dout, const T* x, const float* mean,
                                 const float* rstd, const T* scale, int batch, int tokens, int channels, int mod_stride,
                                 cudaStream_t stream) {
  if (batch == 0 || tokens == 0 || channels == 0) return;
  dim3 grid((tokens + ln_chunk - 1) / ln_chunk, batch);
  layernorm_backward_kernel<T><<<grid, warps_per_block * 32, 0, stream>>>(dx, dshift, dscale, dout, x, mean, rstd,
                                                                          scale, tokens, channels, mod_stride);
  DITWIN_CUDA_LAUNCH_CHECK("layernorm_modulate_backward");
}

#define DITWIN_INSTANTIATE(T)                                                                                        \
  template void layernorm_modulate_forward<T>(T*, float*, float*, const T*, const T*, const T*, int, int, int, int, \
                                              float, cudaStream_t);                                                  \
  template void layernorm_modulate_backward<T>(T*, float*, float*, const T*, const T*, const float*, const float*,  \
                                               const T*, int, int, int, int, cudaStream_t);                          \
  template void residual_layernorm_modulate_forward<T>(T*, T*, float*, float*, const T*, const T*, const T*,        \
                                                       const T*, const T*, int, int, int, int, float, cudaStream_t);
DITWIN_INSTANTIATE(float)
DITWIN_INSTANTIATE(bf16)
#undef DITWIN_INSTANTIATE

}  // namespace ditwin::kernels::cuda
