// DP-SGD kernels on the GPU: per-sample norms through strided-batched GEMMs and per-sample
// reductions, per-sample row scaling, and the counter-based Gaussian noise.
#include <algorithm>
#include <stdexcept>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/privacy.hpp"
#include "kernels/gaussian_noise_math.hpp"  // defines: normal_pair (shared with the CPU kernel)

namespace ditwin::kernels::cuda {

namespace {

constexpr int threads = 256;

// Block b: out[b] += sum_i x[b][i] * y[b][i] (y null: x[b][i]^2; ones: x[b][i]), in double.
template <typename X>
__global__ void per_sample_dot_kernel(double* out, const X* x, const float* y, std::size_t n, bool sum_only) {
  const int b = blockIdx.x;
  const X* xb = x + static_cast<std::size_t>(b) * n;
  const float* yb = y ? y + static_cast<std::size_t>(b) * n : nullptr;
  double acc = 0;
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double v = to_float(xb[i]);
    acc += sum_only ? v : v * (yb ? static_cast<double>(yb[i]) : v);
  }
  __shared__ double part[threads];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[b] += part[0];
}

// Block b: out[b] += ||sum_t g[b][t]||^2 over `rows` rows of `width` (the bias's per-sample norm).
template <typename T>
__global__ void column_sum_sq_kernel(double* out, const T* g, int rows, int width) {
  const int b = blockIdx.x;
  const T* gb = g + static_cast<std::size_t>(b) * rows * width;
  double acc = 0;
  for (int c = threadIdx.x; c < width; c += blockDim.x) {
    double s = 0;
    for (int t = 0; t < rows; ++t) s += to_float(gb[static_cast<std::size_t>(t) * width + c]);
    acc += s * s;
  }
  __shared__ double part[threads];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[b] += part[0];
}

// Rank-one samples: out[b] += ||a_b||^2 ||g_b||^2 (+ ||g_b||^2 with the bias).
template <typename T>
__global__ void rank_one_kernel(double* out, const T* a, const T* g, int d_in, int d_out, bool bias) {
  const int b = blockIdx.x;
  double sa = 0, sg = 0;
  for (int i = threadIdx.x; i < d_in; i += blockDim.x) {
    const double v = to_float(a[static_cast<std::size_t>(b) * d_in + i]);
    sa += v * v;
  }
  for (int i = threadIdx.x; i < d_out; i += blockDim.x) {
    const double v = to_float(g[static_cast<std::size_t>(b) * d_out + i]);
    sg += v * v;
  }
  __shared__ double pa[threads], pg[threads];
  pa[threadIdx.x] = sa;
  pg[threadIdx.x] = sg;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      pa[threadIdx.x] += pa[threadIdx.x + s];
      pg[threadIdx.x] += pg[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[b] += pa[0] * pg[0] + (bias ? pg[0] : 0.0);
}

template <typename T>
__global__ void scale_rows_kernel(T* out, const T* g, const float* factor, std::size_t per, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[i] = from_float<T>(factor[i / per] * to_float(g[i]));
}

// --- the noise: kernels/gaussian_noise_math.hpp's pairs, one element per thread -----------------
__global__ void noise_kernel(float* out, std::size_t n, unsigned long long begin, unsigned long long key, float stddev) {
  for (std::size_t k = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const unsigned long long i = begin + k;
    float c, s;
    noise::normal_pair(key, i / 2, c, s);
    out[k] += stddev * ((i & 1) ? s : c);
  }
}

}  // namespace

std::size_t per_sample_norm_scratch(int chunk, int rows, int d_in, int d_out, bool ghost) {
  if (rows <= 1) return 0;
  const std::size_t c = static_cast<std::size_t>(chunk);
  return ghost ? 2 * c * rows * rows : c * d_in * d_out;
}

int per_sample_norm_chunk(std::size_t scratch_floats, int batch, int rows, int d_in, int d_out, bool ghost) {
  const std::size_t one = per_sample_norm_scratch(1, rows, d_in, d_out, ghost);
  if (one == 0) return batch;
  return static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(batch, scratch_floats / one)));
}

template <typename T>
void per_sample_sq_norms(Blas& blas, double* sq, const T* inp, const T* dout, int batch, int rows, int d_in, int d_out,
                         bool bias, bool ghost, float* scratch, std::size_t scratch_floats, cudaStream_t stream) {
  if (batch <= 0 || rows <= 0) return;
  if (rows == 1) {
    rank_one_kernel<T><<<batch, threads, 0, stream>>>(sq, inp, dout, d_in, d_out, bias);
    DITWIN_CUDA_LAUNCH_CHECK("per_sample_sq_norms (rank one)");
    return;
  }
  const int chunk = per_sample_norm_chunk(scratch_floats, batch, rows, d_in, d_out, ghost);
  if (per_sample_norm_scratch(chunk, rows, d_in, d_out, ghost) > scratch_floats)
    throw std::logic_error("per_sample_sq_norms: scratch too small for one sample");
  for (int b0 = 0; b0 < batch; b0 += chunk) {
    const int n = std::min(chunk, batch - b0);
    const T* a = inp + static_cast<std::size_t>(b0) * rows * d_in;
    const T* g = dout + static_cast<std::size_t>(b0) * rows * d_out;
    if (ghost) {  // ||A^T G||^2 = sum_{t,s} (A A^T)_{ts} (G G^T)_{ts}; the bias adds sum_{t,s} (G G^T)_{ts}
      float* ga = scratch;
      float* gg = scratch + static_cast<std::size_t>(n) * rows * rows;
      gram_batched<T>(blas, ga, a, n, rows, d_in, stream);
      gram_batched<T>(blas, gg, g, n, rows, d_out, stream);
      per_sample_dot_kernel<float><<<n, threads, 0, stream>>>(sq + b0, ga, gg, static_cast<std::size_t>(rows) * rows, false);
      if (bias)
        per_sample_dot_kernel<float><<<n, threads, 0, stream>>>(sq + b0, gg, nullptr, static_cast<std::size_t>(rows) * rows, true);
    } else {  // each sample's d_out x d_in gradient, then its squared sum
      outer_batched<T>(blas, scratch, g, a, n, rows, d_out, d_in, stream);
      per_sample_dot_kernel<float><<<n, threads, 0, stream>>>(sq + b0, scratch, nullptr,
                                                              static_cast<std::size_t>(d_in) * d_out, false);
      if (bias) column_sum_sq_kernel<T><<<n, threads, 0, stream>>>(sq + b0, g, rows, d_out);
    }
    DITWIN_CUDA_LAUNCH_CHECK("per_sample_sq_norms");
  }
}

void per_sample_sq_sum(double* sq, const float* x, int batch, std::size_t n, cudaStream_t stream) {
  if (batch <= 0 || n == 0) return;
  per_sample_dot_kernel<float><<<batch, threads, 0, stream>>>(sq, x, nullptr, n, false);
  DITWIN_CUDA_LAUNCH_CHECK("per_sample_sq_sum");
}

template <typename T>
void scale_sample_rows(T* out, const T* g, const float* factor, int batch, int rows, int width, cudaStream_t stream) {
  const std::size_t per = static_cast<std::size_t>(rows) * width, n = per * batch;
  if (n == 0) return;
  scale_rows_kernel<T><<<grid_for(n, threads), threads, 0, stream>>>(out, g, factor, per, n);
  DITWIN_CUDA_LAUNCH_CHECK("scale_sample_rows");
}

void add_gaussian_noise(float* out, std::size_t n, std::uint64_t begin, std::uint64_t key, float stddev,
                        cudaStream_t stream) {
  if (n == 0) return;
  noise_kernel<<<grid_for(n, threads), threads, 0, stream>>>(out, n, begin, key, stddev);
  DITWIN_CUDA_LAUNCH_CHECK("add_gaussian_noise");
}

template void per_sample_sq_norms<float>(Blas&, double*, const float*, const float*, int, int, int, int, bool, bool,
                                         float*, std::size_t, cudaStream_t);
template void per_sample_sq_norms<bf16>(Blas&, double*, const bf16*, const bf16*, int, int, int, int, bool, bool, float*,
                                        std::size_t, cudaStream_t);
template void scale_sample_rows<float>(float*, const float*, const float*, int, int, int, cudaStream_t);
template void scale_sample_rows<bf16>(bf16*, const bf16*, const float*, int, int, int, cudaStream_t);

}  // namespace ditwin::kernels::cuda
