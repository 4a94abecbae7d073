// Patchify / unpatchify, positional and timestep sinusoids, class-label lookup.
#include "kernels/embedding.hpp"

#include <cmath>
#include <vector>

namespace ditwin::kernels {

void patchify_forward(float* tokens, const float* latents, int batch, int channels, int size, int patch) {
  const int grid = size / patch, dim = channels * patch * patch;
  for (int b = 0; b < batch; ++b)
    for (int gi = 0; gi < grid; ++gi)
      for (int gj = 0; gj < grid; ++gj) {
        float* tok = tokens + ((static_cast<long>(b) * grid + gi) * grid + gj) * dim;
        for (int c = 0; c < channels; ++c)
          for (int i = 0; i < patch; ++i)
            for (int j = 0; j < patch; ++j)
              tok[(c * patch + i) * patch + j] =
                  latents[((static_cast<long>(b) * channels + c) * size + gi * patch + i) * size + gj * patch + j];
      }
}

void patchify_backward(float* dlatents, const float* dtokens, int batch, int channels, int size, int patch) {
  const int grid = size / patch, dim = channels * patch * patch;
  for (int b = 0; b < batch; ++b)
    for (int gi = 0; gi < grid; ++gi)
      for (int gj = 0; gj < grid; ++gj) {
        const float* tok = dtokens + ((static_cast<long>(b) * grid + gi) * grid + gj) * dim;
        for (int c = 0; c < channels; ++c)
          for (int i = 0; i < patch; ++i)
            for (int j = 0; j < patch; ++j)
              dlatents[((static_cast<long>(b) * channels + c) * size + gi * patch + i) * size + gj * patch + j] +=
                  tok[(c * patch + i) * patch + j];
      }
}

void unpatchify_forward(float* images, const float* tokens, int batch, int channels, int size, int patch) {
  const int grid = size / patch, dim = channels * patch * patch;
  for (int b = 0; b < batch; ++b)
    for (int gi = 0; gi < grid; ++gi)
      for (int gj = 0; gj < grid; ++gj) {
        const float* tok = tokens + ((static_cast<long>(b) * grid + gi) * grid + gj) * dim;
        for (int i = 0; i < patch; ++i)
          for (int j = 0; j < patch; ++j)
            for (int c = 0; c < channels; ++c)
              images[((static_cast<long>(b) * channels + c) * size + gi * patch + i) * size + gj * patch + j] =
                  tok[(i * patch + j) * channels + c];
      }
}

void unpatchify_backward(float* dtokens, const float* dimages, int batch, int channels, int size, int patch) {
  const int grid = size / patch, dim = channels * patch * patch;
  for (int b = 0; b < batch; ++b)
    for (int gi = 0; gi < grid; ++gi)
      for (int gj = 0; gj < grid; ++gj) {
        float* tok = dtokens + ((static_cast<long>(b) * grid + gi) * grid + gj) * dim;
        for (int i = 0; i < patch; ++i)
          for (int j = 0; j < patch; ++j)
            for (int c = 0; c < channels; ++c)
              tok[(i * patch + j) * channels + c] +=
                  dimages[((static_cast<long>(b) * channels + c) * size + gi * patch + i) * size + gj * patch + j];
      }
}

void pos_embed_2d_sincos(float* out, int grid, int dim) {
  const int half = dim / 2, quarter = half / 2;
  std::vector<double> omega(quarter);
  for (int k = 0; k < quarter; ++k) omega[k] = 1.0 / std::pow(10000.0, static_cast<double>(k) / quarter);
  for (int gi = 0; gi < grid; ++gi)
    for (int gj = 0; gj < grid; ++gj) {
      float* row = out + (static_cast<long>(gi) * grid + gj) * dim;
      // DiT builds np.meshgrid(grid_w, grid_h): the first half encodes the column, the second the row.
      const double pos[2] = {static_cast<double>(gj), static_cast<double>(gi)};
      for (int part = 0; part < 2; ++part)
        for (int k = 0; k < quarter; ++k) {
          row[part * half + k] = static_cast<float>(std::sin(pos[part] * omega[k]));
          row[part * half + quarter + k] = static_cast<float>(std::cos(pos[part] * omega[k]));
        }
    }
}

void timestep_embedding_forward(float* out, const float* t, int batch, int dim, float max_period) {
  const int half = dim / 2;
  for (int b = 0; b < batch; ++b) {
    float* row = out + static_cast<long>(b) * dim;
    for (int i = 0; i < half; ++i) {
      const double arg = t[b] * std::exp(-std::log(static_cast<double>(max_period)) * i / half);
      row[i] = static_cast<float>(std::cos(arg));
      row[half + i] = static_cast<float>(std::sin(arg));
    }
    if (dim % 2) row[dim - 1] = 0.0f;
  }
}

void class_embedding_forward(float* out, const float* table, const int* labels, int batch, int channels) {
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < channels; ++c)
      out[static_cast<long>(b) * channels + c] = table[static_cast<long>(labels[b]) * channels + c];
}

void class_embedding_backward(float* dtable, const float* dout, const int* labels, int batch, int channels) {
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < channels; ++c)
      dtable[static_cast<long>(labels[b]) * channels + c] += dout[static_cast<long>(b) * channels + c];
}

}  // namespace ditwin::kernels
