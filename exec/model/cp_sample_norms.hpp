// DP-SGD under context parallelism, for every family the executor trains: a sample's tokens are
// split over the CP ranks, and the squared norm of its weight gradient sum_c A_c^T G_c is not the
// sum of the shards' squared norms (the cross-shard terms <A_c A_c'^T, G_c G_c'^T> are missing).
// So before a weighted op's ".sample_norm" the lowering all-gathers over the CP group what the
// norm needs ("<op>.norm_gather", model/lowering.cpp):
//  - a token-sharded linear (QKV, MLP, patch embedding, image head): this rank's rows of A and G;
//  - a per-sample linear (adaLN, timestep and pooled MLPs; A the same on every CP rank): G, which
//    is a partial sum over the CP ranks (each saw its own tokens);
//  - an embedding table row per sample (the class table): its gradient G, partial likewise.
// Each CP rank then computes the whole-sample norms of the samples it owns (b % cp == its index)
// by the shared ghost-or-materialized rule, and the lowering's "privacy.norms.cp_allreduce" sums
// the owned norms, so every sample's norm is computed once, with 1/cp of the work on each rank.
#pragma once
#include <cstddef>
#include <vector>

#include "exec/model/activations.hpp"  // defines: Activations
#include "exec/model/model.hpp"        // defines: TensorComm

namespace ditwin::exec {

struct NormLinear {
  const float* inp = nullptr;   // rows x d_in per sample; nullptr: a table row (the norm is ||G||^2)
  const float* dout = nullptr;  // rows x d_out per sample
  int rows = 1;                 // this rank's rows per sample
  int d_in = 0, d_out = 0;
  bool bias = false;
  bool tokens = false;  // token-sharded (rows gathered) or per-sample (G summed over the CP ranks)
  // Token-sharded rows per sample as packed, when a linear's rows differ between the CP ranks (the
  // unified model's text and image rows of a slice of [text; image]): rows beyond `rows` are zero,
  // which adds nothing to a norm. 0: `rows`.
  int pad_rows = 0;
};

// Without CP: adds to sq[b] each sample's squared norm of every linear's weight (and bias)
// gradient from this rank's rows (a table row: ||G_b||^2), by the shared ghost-or-materialized
// rule (model/privacy.hpp); `scratch` grows as needed.
void local_sq_norms(double* sq, const std::vector<NormLinear>& linears, int batch, Activations& scratch);

// Floats this rank sends for `linears` (the all-gather's part; the gathered buffer is cp times it).
std::size_t cp_norm_pack_size(const std::vector<NormLinear>& linears, int batch);
// This rank's part: per linear, A then G of its token rows (token-sharded) or G (per-sample).
void cp_norm_pack(float* out, const std::vector<NormLinear>& linears, int batch);
// An op's ".norm_gather" as a model stages it: `buf` gets this rank's packed part, then room for
// every rank's (cp parts), which the all-gather fills.
TensorComm stage_cp_norm_gather(Activations& buf, const std::vector<NormLinear>& linears, int batch, int cp);
// After the all-gather: the cp gathered parts of a staged buffer.
void take_cp_norm_gather(const Activations& buf, int cp, Activations& gathered);

// From the gathered parts (cp of them, in CP rank order) adds to sq[b], for each sample b this
// rank owns, the squared norm of its whole weight (and bias) gradient of every linear.
void cp_owned_sq_norms(double* sq, const float* gathered, const std::vector<NormLinear>& linears, int batch, int cp,
                       int cp_index);

}  // namespace ditwin::exec
