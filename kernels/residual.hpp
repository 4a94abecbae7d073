// adaLN-Zero's gated residual: out = x + gate · branch, with gate per sample and channel
// (broadcast over tokens; rows `gate_stride` floats apart inside the adaLN output).
#pragma once

namespace ditwin::kernels {

// x, branch, out: (batch, tokens, channels); out may alias x.
void gated_residual_forward(float* out, const float* x, const float* branch, const float* gate, int batch, int tokens,
                            int channels, int gate_stride);
// dx += dout (when dx is not null and not dout itself), dbranch += gate · dout,
// dgate += Σ_tokens branch · dout.
void gated_residual_backward(float* dx, float* dbranch, float* dgate, const float* dout, const float* branch,
                             const float* gate, int batch, int tokens, int channels, int gate_stride);

}  // namespace ditwin::kernels
