// RMSNorm with a learned gain (Zhang & Sennrich 2019; Llama's and Transfusion's norm):
// out = x · rstd · weight, rstd = 1 / sqrt(mean(x²) + eps), over the channels of each row.
#pragma once

namespace ditwin::kernels {

// x, out: (rows, channels); rstd: (rows), kept for the backward; weight: (channels).
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int rows, int channels, float eps);
// dx += ∂/∂x, dweight += Σ_rows dout · x · rstd (dweight may be null).
void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* rstd,
                      const float* weight, int rows, int channels);

}  // namespace ditwin::kernels
