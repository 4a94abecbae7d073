// AdamW (Loshchilov & Hutter): Adam with bias correction and decoupled weight decay.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ditwin::kernels {

// One update of n parameters; `step` counts from 1. m and v are the first and second moments.
void adamw_update(float* params, const float* grads, float* m, float* v, std::size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, std::int64_t step);

}  // namespace ditwin::kernels
