// GELU, tanh approximation (DiT's MLP: nn.GELU(approximate="tanh")).
#pragma once
#include <cstddef>

namespace ditwin::kernels {

void gelu_forward(float* out, const float* inp, std::size_t n);
// dinp += gelu'(inp) · dout
void gelu_backward(float* dinp, const float* inp, const float* dout, std::size_t n);

}  // namespace ditwin::kernels
