// Fused multi-tensor AdamW on the GPU: the CUDA version of kernels/adamw.hpp. One launch updates
// a list of tensors (fp32 master parameters, fp32 gradients scaled on the fly, fp32 moments) and
// refreshes each tensor's bf16 working copy that the forward reads, so an optimizer step is one
// pass over the states however many parameter groups or shards there are.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/common.hpp"

namespace ditwin::kernels::cuda {

struct AdamWTensor {
  float* params = nullptr;       // fp32 master copy
  const float* grads = nullptr;  // fp32, multiplied by grad_scale before use
  float* m = nullptr;
  float* v = nullptr;
  bf16* params_bf16 = nullptr;   // optional working copy, rewritten from the updated master
  std::size_t n = 0;
};

// `step` counts from 1 (bias correction), as on the CPU.
void adamw_update(const std::vector<AdamWTensor>& tensors, float lr, float beta1, float beta2, float eps,
                  float weight_decay, std::int64_t step, float grad_scale, cudaStream_t stream);

// SGD with momentum (m is the momentum buffer; unused when momentum is 0) and decoupled weight
// decay, as the CPU runtime's: d = g (+ momentum·m), p −= lr·(d + weight_decay·p).
void sgd_update(float* params, const float* grads, float* m, std::size_t n, float lr, float momentum,
                float weight_decay, cudaStream_t stream);

}  // namespace ditwin::kernels::cuda
