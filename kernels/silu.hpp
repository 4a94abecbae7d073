// SiLU (x · sigmoid(x)): the timestep MLP's activation and the input of every adaLN GEMM.
#pragma once
#include <cstddef>

namespace ditwin::kernels {

void silu_forward(float* out, const float* inp, std::size_t n);
// dinp += silu'(inp) · dout
void silu_backward(float* dinp, const float* inp, const float* dout, std::size_t n);

// SwiGLU (Shazeer 2020; Llama's MLP): the fused fc1 output holds, per row, `width` gate columns
// then `width` up columns; out (rows, width) = silu(gate) · up.
void swiglu_forward(float* out, const float* inp, int rows, int width);
// dinp (rows, 2·width) += ∂/∂[gate, up].
void swiglu_backward(float* dinp, const float* inp, const float* dout, int rows, int width);

}  // namespace ditwin::kernels
