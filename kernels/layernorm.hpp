// LayerNorm without affine parameters fused with DiT's adaLN modulation:
// out = x̂ · (1 + scale) + shift, x̂ = (x − mean) / sqrt(var + eps), with shift and scale per
// sample (broadcast over its tokens). shift/scale rows sit `mod_stride` floats apart, so they
// can point straight into the adaLN GEMM's output (B x 6h).
#pragma once

namespace ditwin::kernels {

// x, out: (batch, tokens, channels). mean, rstd: (batch, tokens), kept for the backward.
void layernorm_modulate_forward(float* out, float* mean, float* rstd, const float* x, const float* shift,
                                const float* scale, int batch, int tokens, int channels, int mod_stride, float eps);
// dx += ∂/∂x, dshift += Σ_tokens dout, dscale += Σ_tokens dout · x̂ (dshift/dscale rows also
// `mod_stride` apart).
void layernorm_modulate_backward(float* dx, float* dshift, float* dscale, const float* dout, const float* x,
                                 const float* mean, const float* rstd, const float* scale, int batch, int tokens,
                                 int channels, int mod_stride);

}  // namespace ditwin::kernels
