// Linear layers on the CPU: out = inp · Wᵀ + b with PyTorch's weight layout (out_features x
// in_features, row-major). GEMMs go through Eigen; the CUDA version will use cuBLASLt.
// Conventions for every kernels/ header: row-major float arrays, sizes as ints, and every
// backward ADDS into its gradient outputs (the caller zeroes them), so gradients accumulate.
#pragma once

namespace ditwin::kernels {

// out (n x oc) = inp (n x ic) · weightᵀ (ic x oc) + bias (oc, may be null).
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int n, int ic, int oc);
// dinp += dout · weight; dweight += doutᵀ · inp; dbias += column sums of dout. Any of the three
// outputs may be null when that gradient is not needed.
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int n, int ic, int oc);

}  // namespace ditwin::kernels
