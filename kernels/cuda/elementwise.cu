// Elementwise and small-reduction kernels: GELU, SiLU, gated residual, rectified-flow loss,
// patchify/unpatchify, timestep and class embeddings, bias gradients, conversions. Memory-bound:
// grid-stride loops, 16-byte accesses where sizes and alignment allow, fp32 arithmetic.
#include <cmath>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/elementwise.hpp"

namespace ditwin::kernels::cuda {

namespace {

constexpr int threads = 256;
constexpr float k_sqrt_2_over_pi = 0.7978845608028654f;
constexpr float k_cubic = 0.044715f;

struct GeluF {
  __device__ static float fwd(float x) { return 0.5f * x * (1.0f + tanhf(k_sqrt_2_over_pi * (x + k_cubic * x * x * x))); }
  __device__ static float grad(float x) {
    const float th = tanhf(k_sqrt_2_over_pi * (x + k_cubic * x * x * x));
    const float dth = (1.0f - th * th) * k_sqrt_2_over_pi * (1.0f + 3.0f * k_cubic * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * dth;
  }
};
struct SiluF {
  __device__ static float fwd(float x) { return x / (1.0f + expf(-x)); }
  __device__ static float grad(float x) {
    const float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
  }
};

// Activation forward/backward: vectors of 16 bytes when the pointers are aligned, the tail (and
// unaligned arrays) one element at a time.
template <typename F, typename T, bool kVec>
__global__ void activation_forward_kernel(T* out, const T* inp, std::size_t n) {
  constexpr int V = kVec ? vec_width<T>() : 1;
  const std::size_t nv = n / V;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < nv;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    if constexpr (kVec) {
      float x[V];
      load_vec(x, inp + i * V);
#pragma unroll
      for (int k = 0; k < V; ++k) x[k] = F::fwd(x[k]);
      store_vec(out + i * V, x);
    } else {
      out[i] = from_float<T>(F::fwd(to_float(inp[i])));
    }
  }
  // Tail of the vector path: at most V-1 elements, by the first threads of block 0.
  if (kVec && blockIdx.x == 0 && threadIdx.x < n - nv * V) {
    const std::size_t i = nv * V + threadIdx.x;
    out[i] = from_float<T>(F::fwd(to_float(inp[i])));
  }
}

template <typename F, typename T, bool kVec>
__global__ void activation_backward_kernel(T* dinp, const T* inp, const T* dout, std::size_t n) {
  constexpr int V = kVec ? vec_width<T>() : 1;
  const std::size_t nv = n / V;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < nv;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    if constexpr (kVec) {
      float x[V], d[V], g[V];
      load_vec(x, inp + i * V);
      load_vec(d, dout + i * V);
      load_vec(g, dinp + i * V);
#pragma unroll
      for (int k = 0; k < V; ++k) g[k] += F::grad(x[k]) * d[k];
      store_vec(dinp + i * V, g);
    } else {
      dinp[i] = from_float<T>(to_float(dinp[i]) + F::grad(to_float(inp[i])) * to_float(dout[i]));
    }
  }
  if (kVec && blockIdx.x == 0 && threadIdx.x < n - nv * V) {
    const std::size_t i = nv * V + threadIdx.x;
    dinp[i] = from_float<T>(to_float(dinp[i]) + F::grad(to_float(inp[i])) * to_float(dout[i]));
  }
}

template <typename F, typename T>
void activation_forward(T* out, const T* inp, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (aligned16(out) && aligned16(inp)) {
    activation_forward_kernel<F, T, true><<<grid_for(n / vec_width<T>() + 1, threads), threads, 0, stream>>>(out, inp, n);
  } else {
    activation_forward_kernel<F, T, false><<<grid_for(n, threads), threads, 0, stream>>>(out, inp, n);
  }
  DITWIN_CUDA_LAUNCH_CHECK("activation_forward");
}

template <typename F, typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (aligned16(dinp) && aligned16(inp) && aligned16(dout)) {
    activation_backward_kernel<F, T, true>
        <<<grid_for(n / vec_width<T>() + 1, threads), threads, 0, stream>>>(dinp, inp, dout, n);
  } else {
    activation_backward_kernel<F, T, false><<<grid_for(n, threads), threads, 0, stream>>>(dinp, inp, dout, n);
  }
  DITWIN_CUDA_LAUNCH_CHECK("activation_backward");
}

// --- gated residual -------------------------------------------------------------------------

template <typename T, bool kVec>
__global__ void gated_residual_forward_kernel(T* out, const T* x, const T* branch, const T* gate, int tokens,
                                              int channels, int gate_stride, std::size_t n) {
  constexpr int V = kVec ? vec_width<T>() : 1;
  const std::size_t per_sample = static_cast<std::size_t>(tokens) * channels;
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    const std::size_t b = i / per_sample;
    const int c = static_cast<int>(i % channels);
    const T* g = gate + b * gate_stride + c;
    if constexpr (kVec) {
      float xv[V], bv[V], gv[V];
      load_vec(xv, x + i);
      load_vec(bv, branch + i);
      load_vec(gv, g);
#pragma unroll
      for (int k = 0; k < V; ++k) xv[k] += gv[k] * bv[k];
      store_vec(out + i, xv);
    } else {
      out[i] = from_float<T>(to_float(x[i]) + to_float(*g) * to_float(branch[i]));
    }
  }
}

// One block per (sample, chunk of tokens): thread c walks channels c, c+blockDim, … down the
// chunk's rows (coalesced across the block), so dgate needs one atomic per channel and chunk.
constexpr int residual_chunk = 32;

template <typename T>
__global__ void gated_residual_backward_kernel(T* dx, T* dbranch, float* dgate, const T* dout, const T* branch,
                                               const T* gate, int tokens, int channels, int gate_stride) {
  const int b = blockIdx.y;
  const int t0 = blockIdx.x * residual_chunk;
  const int t1 = min(tokens, t0 + residual_chunk);
  for (int c = threadIdx.x; c < channels; c += blockDim.x) {
    const float g = to_float(gate[static_cast<std::size_t>(b) * gate_stride + c]);
    float dg = 0.f;
    for (int t = t0; t < t1; ++t) {
      const std::size_t i = (static_cast<std::size_t>(b) * tokens + t) * channels + c;
      const float d = to_float(dout[i]);
      dbranch[i] = from_float<T>(to_float(dbranch[i]) + g * d);
      dg += to_float(branch[i]) * d;
      if (dx) dx[i] = from_float<T>(to_float(dx[i]) + d);
    }
    atomicAdd(dgate + static_cast<std::size_t>(b) * gate_stride + c, dg);
  }
}

// --- rectified flow ---------------------------------------------------------------------------

template <typename T>
__global__ void rectified_flow_input_kernel(T* z, const float* x0, const float* noise, const float* t, int n,
                                            std::size_t total) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float tb = t[i / n];
    z[i] = from_float<T>((1.0f - tb) * x0[i] + tb * noise[i]);
  }
}

template <typename T>
__global__ void rectified_flow_loss_kernel(double* loss, const T* v_hat, const float* x0, const float* noise,
                                           int out_channels, int channels, int plane, std::size_t total,
                                           double inv_count) {
  const std::size_t per_sample = static_cast<std::size_t>(channels) * plane;
  float sum = 0.f;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / per_sample, rest = i % per_sample;
    const float diff = to_float(v_hat[b * out_channels * plane + rest]) - (noise[i] - x0[i]);
    sum += diff * diff;
  }
  __shared__ float partial[32];
  sum = warp_sum(sum);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.f;
    v = warp_sum(v);
    if (threadIdx.x == 0) atomicAdd(loss, static_cast<double>(v) * inv_count);
  }
}

template <typename T>
__global__ void rectified_flow_loss_backward_kernel(T* dv_hat, const T* v_hat, const float* x0, const float* noise,
                                                    float k, int out_channels, int channels, int plane,
                                                    std::size_t total) {
  const std::size_t per_sample = static_cast<std::size_t>(channels) * plane;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / per_sample, rest = i % per_sample;
    const std::size_t vi = b * out_channels * plane + rest;
    dv_hat[vi] = from_float<T>(to_float(dv_hat[vi]) + k * (to_float(v_hat[vi]) - (noise[i] - x0[i])));
  }
}

// --- patchify ---------------------------------------------------------------------------------

// The latent index of token element i (patchify's layout: token vector ordered (c, row, col)).
__device__ __forceinline__ std::size_t patchify_source(std::size_t i, int channels, int size, int patch) {
  const int grid = size / patch, dim = channels * patch * patch;
  const std::size_t tok = i / dim;
  const int e = static_cast<int>(i % dim);
  const int c = e / (patch * patch), pi = (e / patch) % patch, pj = e % patch;
  const std::size_t b = tok / (static_cast<std::size_t>(grid) * grid);
  const int g = static_cast<int>(tok % (static_cast<std::size_t>(grid) * grid));
  const int gi = g / grid, gj = g % grid;
  return ((b * channels + c) * size + gi * patch + pi) * size + gj * patch + pj;
}

// The token index of image element i (unpatchify's layout: token vector ordered (row, col, c)).
__device__ __forceinline__ std::size_t unpatchify_source(std::size_t i, int channels, int size, int patch) {
  const int grid = size / patch, dim = channels * patch * patch;
  const int x = static_cast<int>(i % size), y = static_cast<int>((i / size) % size);
  const std::size_t bc = i / (static_cast<std::size_t>(size) * size);
  const int c = static_cast<int>(bc % channels);
  const std::size_t b = bc / channels;
  const int gi = y / patch, pi = y % patch, gj = x / patch, pj = x % patch;
  return ((b * grid + gi) * grid + gj) * dim + (pi * patch + pj) * channels + c;
}

template <typename T, bool kUnpatchify, bool kAdjoint>
__global__ void patch_kernel(T* dst, const T* src, int channels, int size, int patch, std::size_t total) {
  // Forward: dst[i] = src[map(i)], i over the output. Adjoint: dst[map(i)] += src[i], i over the
  // forward's output; the map is a bijection, so no two threads touch one element.
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t j =
        kUnpatchify ? unpatchify_source(i, channels, size, patch) : patchify_source(i, channels, size, patch);
    if constexpr (kAdjoint) {
      dst[j] = from_float<T>(to_float(dst[j]) + to_float(src[i]));
    } else {
      dst[i] = src[j];
    }
  }
}

// --- embeddings -------------------------------------------------------------------------------

template <typename T>
__global__ void timestep_embedding_kernel(T* out, const float* t, int batch, int dim, double log_max_period) {
  const int half = dim / 2;
  const int total = batch * half;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int b = i / half, k = i % half;
    const double arg = static_cast<double>(t[b]) * exp(-log_max_period * k / half);
    out[static_cast<std::size_t>(b) * dim + k] = from_float<T>(static_cast<float>(cos(arg)));
    out[static_cast<std::size_t>(b) * dim + half + k] = from_float<T>(static_cast<float>(sin(arg)));
    if ((dim & 1) && k == 0) out[static_cast<std::size_t>(b) * dim + dim - 1] = from_float<T>(0.f);
  }
}

template <typename T>
__global__ void class_embedding_forward_kernel(T* out, const T* table, const int* labels, int batch, int channels) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / channels;
    out[i] = table[static_cast<std::size_t>(labels[b]) * channels + i % channels];
  }
}

template <typename T>
__global__ void class_embedding_backward_kernel(float* dtable, const T* dout, const int* labels, int batch,
                                                int channels) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / channels;
    atomicAdd(dtable + static_cast<std::size_t>(labels[b]) * channels + i % channels, to_float(dout[i]));
  }
}

template <typename T>
__global__ void add_rows_periodic_kernel(T* x, const T* table, int period, int channels, std::size_t total) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t row = i / channels;
    x[i] = from_float<T>(to_float(x[i]) + to_float(table[(row % period) * channels + i % channels]));
  }
}

// Column sums: block (x) covers 256 columns, (y) a chunk of rows; one atomic per column and chunk.
constexpr int column_chunk = 256;

template <typename T>
__global__ void column_sum_kernel(float* dbias, const T* dout, int rows, int channels) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const int r0 = blockIdx.y * column_chunk, r1 = min(rows, r0 + column_chunk);
  float s = 0.f;
  for (int r = r0; r < r1; ++r) s += to_float(dout[static_cast<std::size_t>(r) * channels + c]);
  atomicAdd(dbias + c, s);
}

// splitmix64's finaliser: a well-mixed 64-bit hash of the index and the seed.
__device__ __forceinline__ std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <typename T>
__global__ void fill_random_kernel(T* out, std::size_t n, std::uint64_t seed, float lo, float hi) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t h = mix64(i * 0x9e3779b97f4a7c15ull + seed);
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
    const float v = lo + (hi - lo) * u;
    out[i] = from_float<T>((h & 1) ? v : -v);
  }
}

template <typename From, typename To>
__global__ void convert_kernel(To* out, const From* in, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[i] = from_float<To>(to_float(in[i]));
}

__global__ void scale_kernel(float* x, float factor, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    x[i] *= factor;
}

template <typename T>
__global__ void add_kernel(T* y, const T* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    y[i] = from_float<T>(to_float(y[i]) + to_float(x[i]));
}

}  // namespace

template <typename T>
void gelu_forward(T* out, const T* inp, std::size_t n, cudaStream_t stream) {
  activation_forward<GeluF>(out, inp, n, stream);
}
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, std::size_t n, cudaStream_t stream) {
  activation_backward<GeluF>(dinp, inp, dout, n, stream);
}
template <typename T>
void silu_forward(T* out, const T* inp, std::size_t n, cudaStream_t stream) {
  activation_forward<SiluF>(out, inp, n, stream);
}
template <typename T>
void silu_backward(T* dinp, const T* inp, const T* dout, std::size_t n, cudaStream_t stream) {
  activation_backward<SiluF>(dinp, inp, dout, n, stream);
}

template <typename T>
void gated_residual_forward(T* out, const T* x, const T* branch, const T* gate, int batch, int tokens, int channels,
                            int gate_stride, cudaStream_t stream) {
  const std::size_t n = static_cast<std::size_t>(batch) * tokens * channels;
  if (n == 0) return;
  constexpr int V = vec_width<T>();
  if (channels % V == 0 && gate_stride % V == 0 && aligned16(out) && aligned16(x) && aligned16(branch) &&
      aligned16(gate)) {
    gated_residual_forward_kernel<T, true>
        <<<grid_for(n / V, threads), threads, 0, stream>>>(out, x, branch, gate, tokens, channels, gate_stride, n);
  } else {
    gated_residual_forward_kernel<T, false>
        <<<grid_for(n, threads), threads, 0, stream>>>(out, x, branch, gate, tokens, channels, gate_stride, n);
  }
  DITWIN_CUDA_LAUNCH_CHECK("gated_residual_forward");
}

template <typename T>
void gated_residual_backward(T* dx, T* dbranch, float* dgate, const T* dout, const T* branch, const T* gate, int batch,
                             int tokens, int channels, int gate_stride, cudaStream_t stream) {
  if (batch == 0 || tokens == 0 || channels == 0) return;
  dim3 grid((tokens + residual_chunk - 1) / residual_chunk, batch);
  gated_residual_backward_kernel<T><<<grid, threads, 0, stream>>>(dx == dout ? nullptr : dx, dbranch, dgate, dout,
                                                                  branch, gate, tokens, channels, gate_stride);
  DITWIN_CUDA_LAUNCH_CHECK("gated_residual_backward");
}

template <typename T>
void rectified_flow_input(T* z, const float* x0, const float* noise, const float* t, int batch, int n,
                          cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(batch) * n;
  if (total == 0) return;
  rectified_flow_input_kernel<T><<<grid_for(total, threads), threads, 0, stream>>>(z, x0, noise, t, n, total);
  DITWIN_CUDA_LAUNCH_CHECK("rectified_flow_input");
}

template <typename T>
void rectified_flow_loss_forward(double* loss, const T* v_hat, const float* x0, const float* noise, int batch,
                                 int out_channels, int channels, int plane, cudaStream_t stream) {
  DITWIN_CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(double), stream));
  const std::size_t total = static_cast<std::size_t>(batch) * channels * plane;
  if (total == 0) return;
  rectified_flow_loss_kernel<T><<<std::min(grid_for(total, threads), 1024), threads, 0, stream>>>(
      loss, v_hat, x0, noise, out_channels, channels, plane, total, 1.0 / static_cast<double>(total));
  DITWIN_CUDA_LAUNCH_CHECK("rectified_flow_loss_forward");
}

template <typename T>
void rectified_flow_loss_backward(T* dv_hat, const T* v_hat, const float* x0, const float* noise, float dloss,
                                  int batch, int out_channels, int channels, int plane, cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels * plane;
  if (total == 0) return;
  const float k = 2.0f * dloss / static_cast<float>(total);
  rectified_flow_loss_backward_kernel<T><<<grid_for(total, threads), threads, 0, stream>>>(
      dv_hat, v_hat, x0, noise, k, out_channels, channels, plane, total);
  DITWIN_CUDA_LAUNCH_CHECK("rectified_flow_loss_backward");
}

template <typename T>
void patchify_forward(T* tokens, const T* latents, int batch, int channels, int size, int patch, cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels * size * size;
  if (total == 0) return;
  patch_kernel<T, false, false><<<grid_for(total, threads), threads, 0, stream>>>(tokens, latents, channels, size, patch, total);
  DITWIN_CUDA_LAUNCH_CHECK("patchify_forward");
}
template <typename T>
void patchify_backward(T* dlatents, const T* dtokens, int batch, int channels, int size, int patch,
                       cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels * size * size;
  if (total == 0) return;
  patch_kernel<T, false, true><<<grid_for(total, threads), threads, 0, stream>>>(dlatents, dtokens, channels, size, patch, total);
  DITWIN_CUDA_LAUNCH_CHECK("patchify_backward");
}
template <typename T>
void unpatchify_forward(T* images, const T* tokens, int batch, int channels, int size, int patch, cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels * size * size;
  if (total == 0) return;
  patch_kernel<T, true, false><<<grid_for(total, threads), threads, 0, stream>>>(images, tokens, channels, size, patch, total);
  DITWIN_CUDA_LAUNCH_CHECK("unpatchify_forward");
}
template <typename T>
void unpatchify_backward(T* dtokens, const T* dimages, int batch, int channels, int size, int patch,
                         cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels * size * size;
  if (total == 0) return;
  patch_kernel<T, true, true><<<grid_for(total, threads), threads, 0, stream>>>(dtokens, dimages, channels, size, patch, total);
  DITWIN_CUDA_LAUNCH_CHECK("unpatchify_backward");
}

template <typename T>
void timestep_embedding_forward(T* out, const float* t, int batch, int dim, float max_period, cudaStream_t stream) {
  if (batch == 0 || dim < 2) return;
  timestep_embedding_kernel<T><<<grid_for(static_cast<std::size_t>(batch) * (dim / 2), threads), threads, 0, stream>>>(
      out, t, batch, dim, std::log(static_cast<double>(max_period)));
  DITWIN_CUDA_LAUNCH_CHECK("timestep_embedding_forward");
}

template <typename T>
void class_embedding_forward(T* out, const T* table, const int* labels, int batch, int channels, cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels;
  if (total == 0) return;
  class_embedding_forward_kernel<T><<<grid_for(total, threads), threads, 0, stream>>>(out, table, labels, batch, channels);
  DITWIN_CUDA_LAUNCH_CHECK("class_embedding_forward");
}
template <typename T>
void class_embedding_backward(float* dtable, const T* dout, const int* labels, int batch, int channels,
                              cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(batch) * channels;
  if (total == 0) return;
  class_embedding_backward_kernel<T><<<grid_for(total, threads), threads, 0, stream>>>(dtable, dout, labels, batch, channels);
  DITWIN_CUDA_LAUNCH_CHECK("class_embedding_backward");
}

template <typename T>
void add_rows_periodic(T* x, const T* table, int rows, int period, int channels, cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(rows) * channels;
  if (total == 0) return;
  add_rows_periodic_kernel<T><<<grid_for(total, threads), threads, 0, stream>>>(x, table, period, channels, total);
  DITWIN_CUDA_LAUNCH_CHECK("add_rows_periodic");
}

template <typename T>
void column_sum_accumulate(float* dbias, const T* dout, int rows, int channels, cudaStream_t stream) {
  if (rows == 0 || channels == 0) return;
  dim3 grid((channels + threads - 1) / threads, (rows + column_chunk - 1) / column_chunk);
  column_sum_kernel<T><<<grid, threads, 0, stream>>>(dbias, dout, rows, channels);
  DITWIN_CUDA_LAUNCH_CHECK("column_sum_accumulate");
}

template <typename T>
void fill_random(T* out, std::size_t n, std::uint64_t seed, float lo, float hi, cudaStream_t stream) {
  if (n == 0) return;
  fill_random_kernel<T><<<grid_for(n, threads), threads, 0, stream>>>(out, n, seed, lo, hi);
  DITWIN_CUDA_LAUNCH_CHECK("fill_random");
}

template <typename From, typename To>
void convert(To* out, const From* in, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  convert_kernel<From, To><<<grid_for(n, threads), threads, 0, stream>>>(out, in, n);
  DITWIN_CUDA_LAUNCH_CHECK("convert");
}

void scale(float* x, float factor, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n, threads), threads, 0, stream>>>(x, factor, n);
  DITWIN_CUDA_LAUNCH_CHECK("scale");
}

void accumulate(float* y, const float* x, std::size_t n, cudaStream_t stream) { add_inplace<float>(y, x, n, stream); }

template <typename T>
void add_inplace(T* y, const T* x, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<T><<<grid_for(n, threads), threads, 0, stream>>>(y, x, n);
  DITWIN_CUDA_LAUNCH_CHECK("add_inplace");
}

// The two storage types: bf16 for training, float for finite-difference tests.
#define DITWIN_INSTANTIATE(T)                                                                                     \
  template void gelu_forward<T>(T*, const T*, std::size_t, cudaStream_t);                                         \
  template void gelu_backward<T>(T*, const T*, const T*, std::size_t, cudaStream_t);                              \
  template void silu_forward<T>(T*, const T*, std::size_t, cudaStream_t);                                         \
  template void silu_backward<T>(T*, const T*, const T*, std::size_t, cudaStream_t);                              \
  template void gated_residual_forward<T>(T*, const T*, const T*, const T*, int, int, int, int, cudaStream_t);    \
  template void gated_residual_backward<T>(T*, T*, float*, const T*, const T*, const T*, int, int, int, int,      \
                                           cudaStream_t);                                                         \
  template void rectified_flow_input<T>(T*, const float*, const float*, const float*, int, int, cudaStream_t);    \
  template void rectified_flow_loss_forward<T>(double*, const T*, const float*, const float*, int, int, int, int, \
                                               cudaStream_t);                                                     \
  template void rectified_flow_loss_backward<T>(T*, const T*, const float*, const float*, float, int, int, int,   \
                                                int, cudaStream_t);                                               \
  template void patchify_forward<T>(T*, const T*, int, int, int, int, cudaStream_t);                              \
  template void patchify_backward<T>(T*, const T*, int, int, int, int, cudaStream_t);                             \
  template void unpatchify_forward<T>(T*, const T*, int, int, int, int, cudaStream_t);                            \
  template void unpatchify_backward<T>(T*, const T*, int, int, int, int, cudaStream_t);                           \
  template void timestep_embedding_forward<T>(T*, const float*, int, int, float, cudaStream_t);                   \
  template void class_embedding_forward<T>(T*, const T*, const int*, int, int, cudaStream_t);                     \
  template void class_embedding_backward<T>(float*, const T*, const int*, int, int, cudaStream_t);                \
  template void add_rows_periodic<T>(T*, const T*, int, int, int, cudaStream_t);                                 \
  template void column_sum_accumulate<T>(float*, const T*, int, int, cudaStream_t);                               \
  template void add_inplace<T>(T*, const T*, std::size_t, cudaStream_t);                                        \
  template void fill_random<T>(T*, std::size_t, std::uint64_t, float, float, cudaStream_t);
DITWIN_INSTANTIATE(float)
DITWIN_INSTANTIATE(bf16)
#undef DITWIN_INSTANTIATE
template void convert<float, bf16>(bf16*, const float*, std::size_t, cudaStream_t);
template void convert<bf16, float>(float*, const bf16*, std::size_t, cudaStream_t);
template void convert<float, float>(float*, const float*, std::size_t, cudaStream_t);

}  // namespace ditwin::kernels::cuda
