// SiLU (x · sigmoid(x)): the timestep MLP's activation and the input of every adaLN GEMM.
#pragma once
#include <cstddef>

namespace ditwin::kernels {

void silu_forward(float* out, const float* inp, std::size_t n);
// dinp += silu'(inp) · dout
void silu_backward(float* dinp, const float* inp, const float* dout, std::size_t n);

}  // namespace ditwin::kernels
