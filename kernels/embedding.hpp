// DiT's input side: patchify / unpatchify, the fixed 2-D sin-cos positional embedding, the
// sinusoidal timestep embedding, and the class-label table lookup.
#pragma once

namespace ditwin::kernels {

// Latents (batch, channels, size, size) -> tokens (batch, (size/p)², channels·p·p); a token's
// vector is ordered (channel, row-in-patch, column-in-patch), the flattening of DiT's Conv2d
// patch-embedding weight, so a Linear on it equals that convolution.
void patchify_forward(float* tokens, const float* latents, int batch, int channels, int size, int patch);
// dlatents += the adjoint of patchify.
void patchify_backward(float* dlatents, const float* dtokens, int batch, int channels, int size, int patch);

// Tokens (batch, (size/p)², p·p·channels) ordered (row-in-patch, column-in-patch, channel), as
// DiT's unpatchify reads them -> images (batch, channels, size, size).
void unpatchify_forward(float* images, const float* tokens, int batch, int channels, int size, int patch);
// dtokens += the adjoint of unpatchify.
void unpatchify_backward(float* dtokens, const float* dimages, int batch, int channels, int size, int patch);

// DiT's get_2d_sincos_pos_embed: (grid², dim); the first dim/2 columns encode the column index,
// the last dim/2 the row index, each as [sin, cos] over frequencies 10000^(−k/(dim/4)).
void pos_embed_2d_sincos(float* out, int grid, int dim);

// DiT's TimestepEmbedder.timestep_embedding: out (batch, dim) = [cos(t·f), sin(t·f)],
// f_i = exp(−ln(max_period)·i/half), half = dim/2; an odd dim gets a zero last column.
void timestep_embedding_forward(float* out, const float* t, int batch, int dim, float max_period);

// Label table lookup: out (batch, channels) = table[labels[b]].
void class_embedding_forward(float* out, const float* table, const int* labels, int batch, int channels);
// dtable[labels[b]] += dout[b]
void class_embedding_backward(float* dtable, const float* dout, const int* labels, int batch, int channels);

}  // namespace ditwin::kernels
