// Multi-tensor AdamW: tensors are passed by value in the kernel's parameter block, up to
// kMaxTensors per launch; a grid-stride loop runs over the concatenation and each thread advances
// its tensor index as its element index grows, so there is no per-element search.
#include <cmath>
#include <stdexcept>

#include "kernels/cuda/adamw.hpp"
#include "kernels/cuda/device_util.cuh"

namespace ditwin::kernels::cuda {

namespace {

constexpr int kMaxTensors = 32;

struct TensorList {
  AdamWTensor t[kMaxTensors];
  std::size_t end[kMaxTensors];  // exclusive prefix ends over the concatenation
  int count;
};

__global__ void adamw_kernel(TensorList list, std::size_t total, float lr, float beta1, float beta2, float eps,
                             float weight_decay, float c1, float c2, float grad_scale) {
  int k = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    while (i >= list.end[k]) ++k;
    const AdamWTensor& t = list.t[k];
    const std::size_t j = i - (k ? list.end[k - 1] : 0);
    const float g = t.grads[j] * grad_scale;
    const float m = beta1 * t.m[j] + (1.0f - beta1) * g;
    const float v = beta2 * t.v[j] + (1.0f - beta2) * g * g;
    t.m[j] = m;
    t.v[j] = v;
    float p = t.params[j];
    p -= lr * ((m / c1) / (sqrtf(v / c2) + eps) + weight_decay * p);
    t.params[j] = p;
    if (t.params_bf16) t.params_bf16[j] = __float2bfloat16(p);
  }
}

__global__ void sgd_kernel(float* params, const float* grads, float* m, std::size_t n, float lr, float momentum,
                           float weight_decay) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float d = grads[i];
    if (momentum > 0.f) d = m[i] = momentum * m[i] + d;
    params[i] -= lr * (d + weight_decay * params[i]);
  }
}

}  // namespace

void sgd_update(float* params, const float* grads, float* m, std::size_t n, float lr, float momentum,
                float weight_decay, cudaStream_t stream) {
  if (n == 0) return;
  sgd_kernel<<<grid_for(n, 256), 256, 0, stream>>>(params, grads, m, n, lr, momentum, weight_decay);
  DITWIN_CUDA_LAUNCH_CHECK("sgd_update");
}

void adamw_update(const std::vector<AdamWTensor>& tensors, float lr, float beta1, float beta2, float eps,
                  float weight_decay, std::int64_t step, float grad_scale, cudaStream_t stream) {
  if (step < 1) throw std::invalid_argument("adamw_update: step counts from 1");
  const float c1 = 1.0f - static_cast<float>(std::pow(static_cast<double>(beta1), static_cast<double>(step)));
  const float c2 = 1.0f - static_cast<float>(std::pow(static_cast<double>(beta2), static_cast<double>(step)));
  std::size_t next = 0;
  while (next < tensors.size()) {
    TensorList list{};
    std::size_t total = 0;
    for (; next < tensors.size() && list.count < kMaxTensors; ++next) {
      const std::size_t i = next;
      if (tensors[i].n == 0) continue;
      list.t[list.count] = tensors[i];
      total += tensors[i].n;
      list.end[list.count] = total;
      ++list.count;
    }
    if (total == 0) continue;
    adamw_kernel<<<grid_for(total, 256), 256, 0, stream>>>(list, total, lr, beta1, beta2, eps, weight_decay, c1, c2,
                                                            grad_scale);
    DITWIN_CUDA_LAUNCH_CHECK("adamw_update");
  }
}

}  // namespace ditwin::kernels::cuda
