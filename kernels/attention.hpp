// Multi-head self-attention core, bidirectional: per sample and head,
// out = softmax(Q Kᵀ / sqrt(d)) V. qkv is the fused projection's output, (batch, tokens, 3·channels)
// with Q, K, V in that order and heads contiguous inside each (head h = columns h·d … h·d+d−1).
// The forward keeps the softmax probabilities for the backward (batch x heads x tokens x tokens).
#pragma once

namespace ditwin::kernels {

// out: (batch, tokens, channels); probs: (batch, heads, tokens, tokens).
void attention_forward(float* out, float* probs, const float* qkv, int batch, int tokens, int channels, int heads);
// dqkv += ∂/∂qkv (dQ, dK, dV in qkv's layout).
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs, int batch, int tokens,
                        int channels, int heads);

}  // namespace ditwin::kernels
