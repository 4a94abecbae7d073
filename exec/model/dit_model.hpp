// The DiT that the CPU executor trains: Peebles & Xie's architecture (patchify, sinusoidal
// timestep embedding + MLP, class embedding, adaLN-Zero blocks, final adaLN layer, unpatchify)
// with a rectified-flow objective, forward and hand-written backward in fp32. The executor drives
// it op by op under the Program's names: `run("attn.qkv", 3, Phase::forward, 1)` is the op
// "L3.attn.qkv.fwd.mb1". GEMMs use Eigen; every other op is a kernels/ CPU function.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "exec/model/model.hpp"

namespace ditwin::exec {

class DiT final : public Model {
 public:
  // Throws InputError unless the model is a dit family model (or the shard does not divide it).
  DiT(const ModelSpec& model, int micro_batch, int micro_batches, const ModelShard& shard = {});
  ~DiT() override;
  DiT(const DiT&) = delete;
  DiT& operator=(const DiT&) = delete;

  // This rank's parameter groups and the length of its flat array.
  const std::vector<ParamGroup>& groups() const override;
  std::size_t parameter_count() const override;
  // For each element of this rank's flat array, its index in the one-rank model's flat array.
  const std::vector<std::size_t>& global_index() const override;
  // For each element of this rank's flat array: 1 when every TP rank holds it whole.
  const std::vector<char>& tp_replicated() const override;
  // Elements of the one-rank model's flat array.
  std::size_t global_parameter_count() const override;
  // The DiT paper's initialisation (Xavier-uniform linears, N(0, 0.02) embeddings, zeroed adaLN
  // modulation and final layer), deterministic from `seed`, into this rank's flat array (the
  // one-rank model's values at global_index(), so every layout starts from the same weights).
  void init_parameters(float* params, std::uint64_t seed) const override;

  // Points a parameter group at its (full, gathered) parameters and its gradient accumulator.
  // Backward ops add into the gradients; the caller zeroes them at the start of a step.
  void bind(const std::string& group, const float* params, float* grads) override;

  // Installs the batch micro-batch `mb` trains on (before its first forward op).
  void set_batch(int mb, Batch batch) override;
  // Runs one op of the Program. `part` is the op name without its "L<layer>." prefix and its
  // ".<phase>.mb<i>" suffix ("attn.qkv", "embed.patch", "head.image", "loss", …); `layer` is -1
  // for embedding, head and loss. Recompute re-runs the forward of that op.
  void run(const std::string& part, int layer, Phase phase, int mb) override;
  // The loss of micro-batch `mb` (mean over its samples), after its "loss" forward op. When the
  // final layer holds a shard of the tokens (sequence or context parallelism), this rank's share:
  // the shards' losses sum to the micro-batch's.
  double loss(int mb) const override;
  // Tensor-parallel and context-parallel collectives and pipeline transfers of the Program
  // ("attn.tp_allreduce", "mlp.sp_allgather", "attn.cp_kv", "pp.fwd.send", ...): comm_begin packs
  // and names the buffers, comm_end (after the communication completed) unpacks them.
  TensorComm comm_begin(const Op& op) override;
  void comm_end(const Op& op) override;

  // DP-SGD (call before the first set_batch). Backward ops then compute input gradients only and
  // keep each linear's output gradient; the Program's DP ops do the rest:
  //   "<op>.sample_norm"  adds each sample's squared weight-gradient norm (ghost or materialized),
  //   "privacy.clip"      sets clip factors min(1, C / ||g_b||) x the sample's weight,
  //   "<op>.wgrad"        adds the clipped weight gradients sum_b c_b g_b into the bound gradients.
  void enable_privacy(double clip_norm) override;
  // Per-sample gradient norms of micro-batch `mb` (of each sample's own loss), after its norms.
  std::vector<double> sample_gradient_norms(int mb) const;
  // The clip factors of micro-batch `mb`, after its "privacy.clip".
  std::vector<float> clip_factors(int mb) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decoupled-weight-decay Adam (Loshchilov & Hutter) on n parameters; `step` counts from 1.
void adamw_update(float* params, const float* grads, float* m, float* v, std::size_t n, const OptimizerSpec& opt,
                  std::int64_t step);


}  // namespace ditwin::exec
