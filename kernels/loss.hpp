// The rectified-flow objective: z_t = (1 − t)·x0 + t·ε, and the network's output v̂ regresses the
// velocity v = ε − x0 under a mean squared error over all elements of the micro-batch.
#pragma once

namespace ditwin::kernels {

// z (batch, n) = (1 − t[b])·x0 + t[b]·noise, n elements per sample.
void rectified_flow_input(float* z, const float* x0, const float* noise, const float* t, int batch, int n);

// v_hat: (batch, out_channels, plane) where the first `channels` channels are the prediction
// (DiT with learn_sigma outputs 2x channels; the rest is ignored here). x0, noise:
// (batch, channels, plane). Returns mean over batch·channels·plane of (v̂ − (ε − x0))².
double rectified_flow_loss_forward(const float* v_hat, const float* x0, const float* noise, int batch,
                                   int out_channels, int channels, int plane);
// dv_hat += dloss · 2(v̂ − v) / (batch·channels·plane) on the predicted channels.
void rectified_flow_loss_backward(float* dv_hat, const float* v_hat, const float* x0, const float* noise,
                                  float dloss, int batch, int out_channels, int channels, int plane);

// Next-token cross-entropy: logits (rows, vocab); row r predicts targets[r], and rows whose target
// is negative predict nothing (the last text token of a sample). Returns the sum over predicting
// rows of −log softmax(logits)[target] and sets *count to their number.
double cross_entropy_forward(const float* logits, const int* targets, int rows, int vocab, long* count);
// dlogits += dloss · (softmax(logits) − onehot(target)) on predicting rows.
void cross_entropy_backward(float* dlogits, const float* logits, const int* targets, float dloss, int rows, int vocab);

// The rectified-flow loss of a slice of patch tokens (first .. first + tokens of each sample, a
// token shard under sequence or context parallelism) before unpatchify: out_tok (batch, tokens,
// patch·patch·out_channels) in unpatchify's order (row in patch, column in patch, channel); x0,
// noise (batch, channels, size, size). Returns the slice's squared error over the whole
// micro-batch's element count (batch·channels·size²), so the shards' losses add up; with
// dout_tok, adds dloss x its gradient there.
double rectified_flow_token_loss(const float* out_tok, const float* x0, const float* noise, int batch, int first,
                                 int tokens, int patch, int channels, int out_channels, int size, float* dout_tok,
                                 float dloss);

}  // namespace ditwin::kernels
