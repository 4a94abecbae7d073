// DP-SGD's per-sample norms under context parallelism: exec/model/cp_sample_norms.hpp.
#include "exec/model/cp_sample_norms.hpp"

#include <algorithm>
#include <cstring>

#include "kernels/per_sample_norm.hpp"  // defines: linear_per_sample_sq_norms, per_sample_norm_scratch
#include "model/privacy.hpp"            // defines: ghost_norm_is_cheaper

namespace ditwin::exec {
namespace {

int packed_rows(const NormLinear& x) { return x.pad_rows > 0 ? x.pad_rows : x.rows; }

std::size_t part_size(const NormLinear& x, int batch) {
  const std::size_t per_sample = x.tokens ? static_cast<std::size_t>(packed_rows(x)) * (x.d_in + x.d_out) : x.d_out;
  return per_sample * batch;
}

// `batch` samples of `rows` rows of `width` into blocks of `packed` rows, zero-filled.
float* pack_rows(float* out, const float* in, int batch, int rows, int packed, int width) {
  const std::size_t w = width;
  for (int b = 0; b < batch; ++b) {
    if (rows > 0) std::memcpy(out, in + static_cast<std::size_t>(b) * rows * w, sizeof(float) * rows * w);
    std::fill(out + static_cast<std::size_t>(rows) * w, out + static_cast<std::size_t>(packed) * w, 0.0f);
    out += static_cast<std::size_t>(packed) * w;
  }
  return out;
}

}  // namespace

std::size_t cp_norm_pack_size(const std::vector<NormLinear>& linears, int batch) {
  std::size_t n = 0;
  for (const auto& x : linears) n += part_size(x, batch);
  return n;
}

void cp_norm_pack(float* out, const std::vector<NormLinear>& linears, int batch) {
  for (const auto& x : linears) {
    if (x.tokens) {
      out = pack_rows(out, x.inp, batch, x.rows, packed_rows(x), x.d_in);
      out = pack_rows(out, x.dout, batch, x.rows, packed_rows(x), x.d_out);
    } else {
      const std::size_t n = static_cast<std::size_t>(batch) * x.d_out;
      std::memcpy(out, x.dout, sizeof(float) * n);
      out += n;
    }
  }
}

void local_sq_norms(double* sq, const std::vector<NormLinear>& linears, int batch, Activations& scratch) {
  for (const auto& x : linears) {
    if (x.inp == nullptr) {  // a table row per sample: its gradient is the sample's G
      for (int b = 0; b < batch; ++b) {
        const float* g = x.dout + static_cast<std::size_t>(b) * x.d_out;
        double s = 0;
        for (int c = 0; c < x.d_out; ++c) s += static_cast<double>(g[c]) * g[c];
        sq[b] += s;
      }
      continue;
    }
    if (x.rows == 0) continue;
    const bool ghost = ghost_norm_is_cheaper(x.rows, x.d_in, x.d_out);
    const std::size_t need = kernels::per_sample_norm_scratch(x.rows, x.d_in, x.d_out, ghost);
    if (scratch.size() < need) scratch.resize(need);
    kernels::linear_per_sample_sq_norms(sq, x.inp, x.dout, batch, x.rows, x.d_in, x.d_out, x.bias, ghost, scratch.data());
  }
}

TensorComm stage_cp_norm_gather(Activations& buf, const std::vector<NormLinear>& linears, int batch, int cp) {
  const std::size_t n = cp_norm_pack_size(linears, batch);
  buf.assign(n * (cp + 1), 0.0f);
  cp_norm_pack(buf.data(), linears, batch);
  TensorComm io;
  io.send = buf.data();
  io.send_count = n;
  io.recv = buf.data() + n;
  io.recv_count = n * cp;
  return io;
}

void take_cp_norm_gather(const Activations& buf, int cp, Activations& gathered) {
  const std::size_t n = buf.size() / (cp + 1);
  gathered.assign(buf.begin() + static_cast<std::ptrdiff_t>(n), buf.end());
}

void cp_owned_sq_norms(double* sq, const float* gathered, const std::vector<NormLinear>& linears, int batch, int cp,
                       int cp_index) {
  std::vector<float> scratch;
  const std::size_t part = cp_norm_pack_size(linears, batch);
  std::vector<float> a, g;  // one sample's whole rows (token-sharded) or summed G (per-sample)
  std::size_t offset = 0;   // of this linear within a rank's part
  for (const auto& x : linears) {
    const std::size_t rows = packed_rows(x), din = x.d_in, dout = x.d_out;
    for (int b = cp_index; b < batch; b += cp) {
      if (x.tokens) {
        const int whole = packed_rows(x) * cp;
        a.resize(static_cast<std::size_t>(whole) * din);
        g.resize(static_cast<std::size_t>(whole) * dout);
        for (int c = 0; c < cp; ++c) {  // rank c's rows of sample b (row order does not change the norm)
          const float* at = gathered + c * part + offset;
          std::memcpy(a.data() + c * rows * din, at + b * rows * din, sizeof(float) * rows * din);
          at += static_cast<std::size_t>(batch) * rows * din;
          std::memcpy(g.data() + c * rows * dout, at + b * rows * dout, sizeof(float) * rows * dout);
        }
        const bool ghost = ghost_norm_is_cheaper(whole, x.d_in, x.d_out);
        const std::size_t need = kernels::per_sample_norm_scratch(whole, x.d_in, x.d_out, ghost);
        if (scratch.size() < need) scratch.resize(need);
        kernels::linear_per_sample_sq_norms(sq + b, a.data(), g.data(), 1, whole, x.d_in, x.d_out, x.bias, ghost,
                                            scratch.data());
      } else {
        g.assign(dout, 0.0f);
        for (int c = 0; c < cp; ++c) {
          const float* at = gathered + c * part + offset + b * dout;
          for (std::size_t k = 0; k < dout; ++k) g[k] += at[k];
        }
        if (x.inp == nullptr) {  // a table row: its gradient is G
          double s = 0;
          for (float v : g) s += static_cast<double>(v) * v;
          sq[b] += s;
        } else {
          const bool ghost = ghost_norm_is_cheaper(1, x.d_in, x.d_out);
          const std::size_t need = kernels::per_sample_norm_scratch(1, x.d_in, x.d_out, ghost);
          if (scratch.size() < need) scratch.resize(need);
          kernels::linear_per_sample_sq_norms(sq + b, x.inp + b * din, g.data(), 1, 1, x.d_in, x.d_out, x.bias, ghost,
                                              scratch.data());
        }
      }
    }
    offset += part_size(x, batch);
  }
}

}  // namespace ditwin::exec
