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

// The general form, for context parallelism (each rank's queries against every rank's keys) and
// tensor parallelism (this rank's heads): q is (batch, q_tokens) rows with leading dimension
// q_ld, k and v are (batch, kv_tokens) rows with leading dimension kv_ld; heads are contiguous
// inside each (head h = columns h·d … h·d+d−1, d = channels / heads). out: (batch, q_tokens,
// channels); probs: (batch, heads, q_tokens, kv_tokens).
// `mask` (q_tokens x kv_tokens, the same for every sample and head; null: none) lets query i
// attend key j only where mask[i·kv_tokens + j] is non-zero; every row must allow at least one key.
// Masked probabilities are exactly 0, so the backward needs no mask.
void attention_forward(float* out, float* probs, const float* q, int q_ld, const float* k, const float* v, int kv_ld,
                       int batch, int q_tokens, int kv_tokens, int channels, int heads,
                       const unsigned char* mask = nullptr);
// dq, dk, dv += the gradients (each in its input's layout and leading dimension).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, int q_ld, const float* k,
                        const float* v, int kv_ld, const float* probs, int batch, int q_tokens, int kv_tokens,
                        int channels, int heads);

}  // namespace ditwin::kernels
