// Flash attention on tensor cores (bf16 operands, fp32 accumulation): the CUDA version of
// kernels/attention.hpp. Same qkv layout — (batch, tokens, 3·channels), Q, K, V in that order,
// heads contiguous inside each — and bidirectional (DiT). Where the CPU forward keeps the
// probabilities (batch·heads·tokens²), this one keeps only the row log-sum-exp (batch·heads·tokens,
// base 2, of the scaled scores) and the backward recomputes the probabilities tile by tile: no
// tokens×tokens matrix is ever in memory.
//
// Head dims 32, 64, 72 and 128. Scores (k = head dim) need k-steps of 16: a head dim of 72 is
// zero-padded to 80 in shared memory (the padding adds nothing to Q·Kᵀ); products whose
// n dimension is the head dim (P·V, dK, dV, dQ) use n-tiles of 8 and need no padding.
#pragma once
#include <cstddef>

#include "kernels/cuda/common.hpp"

namespace ditwin::kernels::cuda {

// True for the head dims the kernels are compiled for.
bool attention_supports_head_dim(int head_dim);

// out: (batch, tokens, channels); lse: (batch, heads, tokens) fp32. Throws std::invalid_argument
// for an unsupported head dim (channels / heads).
void attention_forward(bf16* out, float* lse, const bf16* qkv, int batch, int tokens, int channels, int heads,
                       cudaStream_t stream);
// dqkv += ∂/∂qkv. `out` and `lse` are the forward's. `workspace` holds
// attention_backward_workspace_bytes(...) bytes (fp32 dQ accumulator and the row dot products).
std::size_t attention_backward_workspace_bytes(int batch, int tokens, int channels, int heads);
void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse,
                        void* workspace, int batch, int tokens, int channels, int heads, cudaStream_t stream);

}  // namespace ditwin::kernels::cuda
