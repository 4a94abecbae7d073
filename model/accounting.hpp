// Closed-form accounting of a plan: parameters, FLOPs, and memory per GPU by component.
// Independent of the Program on purpose: the tests check that the two agree.
#pragma once
#include <string>
#include <vector>

#include "model/plan.hpp"

namespace ditwin {

struct ParameterCounts {
  double total = 0;          // every trained parameter
  double per_layer = 0;      // one transformer block (both streams for MMDiT)
  double embedding = 0;      // input side: token/patch/timestep/class/context embedders
  double head = 0;           // output side: final norm/adaLN, output projection, LM head
  // One block split by how tensor parallelism treats it.
  double per_layer_sharded = 0;     // split across TP ranks (attention, MLP matrices)
  double per_layer_replicated = 0;  // copied on every TP rank (norms, adaLN, row-parallel biases)
};

ParameterCounts count_parameters(const ModelSpec& m);
// Parameters one rank of a TP group holds of one transformer block (its slice of the sharded
// matrices, all of the replicated ones).
inline double layer_parameters_per_rank(const ParameterCounts& c, int tp) {
  return c.per_layer_sharded / tp + c.per_layer_replicated;
}

struct FlopCounts {
  double forward_per_sample = 0;   // 2 x multiply-accumulates of every matmul, attention included
  double forward_per_layer_per_sample = 0;
  double attention_core_per_layer_per_sample = 0;  // QK^T and AV only
  double model_flops_per_step = 0;     // 3 x forward x global batch (PaLM's model FLOPs)
  double hardware_flops_per_step = 0;  // + forward work repeated by recompute + DP-SGD's per-sample norms
  double privacy_norm_flops_per_sample = 0;  // DP-SGD: per-sample gradient norms of every weighted op
};

FlopCounts count_flops(const Plan& plan);

struct StageMemory {
  int stage = 0;
  double params_on_gpu = 0;   // parameters held by one GPU of this stage, before ZeRO sharding
  double weights_bytes = 0;
  double gradients_bytes = 0;
  double optimizer_bytes = 0;  // fp32 master weights + optimizer states
  double activations_bytes = 0;
  double privacy_bytes = 0;    // DP-SGD: output gradients kept until clipping, and Gram scratch
  double total_bytes() const { return weights_bytes + gradients_bytes + optimizer_bytes + activations_bytes + privacy_bytes; }
};

struct MemoryReport {
  std::vector<StageMemory> stages;  // one per pipeline stage
  int worst_stage = 0;
  double capacity_bytes = 0;
  double peak_bytes() const { return stages[worst_stage].total_bytes(); }
  bool fits() const { return capacity_bytes <= 0 || peak_bytes() <= capacity_bytes; }
};

// Activation bytes one transformer block keeps for backward, for one micro-batch on one GPU
// (Korthikanti et al. 2022, generalised to GQA, gated MLPs, adaLN and flash attention).
double activation_bytes_per_layer(const Plan& plan);
MemoryReport account_memory(const Plan& plan);

// Layers of each model chunk (pp x virtual_stages chunks, in pipeline order). Layers that do not
// divide evenly are taken from the first and last chunks, which also carry the embedding and
// the head (as Llama 3 trained its 126 layers on 16 stages).
std::vector<int> layers_per_chunk(int layers, int chunks);
// The first layer of each chunk, plus the total at the end.
std::vector<int> chunk_first_layers(int layers, int chunks);

// Pipeline bubble fraction of the schedule when communication is free.
double pipeline_bubble_fraction(const Plan& plan);

}  // namespace ditwin
