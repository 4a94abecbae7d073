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

#include "model/plan.hpp"
#include "model/program.hpp"

namespace ditwin::exec {

// Parameters live in one flat fp32 array, one contiguous range per parameter group, in the
// order "embed", "L0" … "L{layers-1}", "head" (the Program's group names).
struct ParamGroup {
  std::string name;
  std::size_t offset = 0;  // in floats, into the flat parameter array
  std::size_t size = 0;
};

// One micro-batch of training data: clean latents, the noise, the timestep, the class.
struct Batch {
  int size = 0;              // samples
  std::vector<float> x0;     // size x C x H x W (latent_channels, latent_size, latent_size)
  std::vector<float> noise;  // same shape: epsilon
  std::vector<float> t;      // size, in (0, 1)
  std::vector<int> y;        // size, class labels in [0, num_classes)
  std::vector<float> weight; // DP-SGD: per-sample weight (0 masks an empty Poisson slot); empty = all 1
};

// Where batches come from. Synthetic class-conditional latents need no download; a real
// dataset plugs in by implementing this.
class DataSource {
 public:
  virtual ~DataSource() = default;
  // The micro-batch `micro_batch` of data-parallel rank `rank` at `step`, deterministic.
  virtual Batch batch(std::int64_t step, int rank, int micro_batch, int size) = 0;
};

// Class-conditional synthetic latents: each class has a fixed random mean pattern; a sample is
// that pattern plus noise; t ~ sigmoid(N(m, s)) (logit-normal), epsilon ~ N(0, 1). All from `seed`.
std::unique_ptr<DataSource> make_synthetic_latents(const ModelSpec& model, const ObjectiveSpec& objective,
                                                   std::uint64_t seed);

// Which part of the model this rank holds and computes (Megatron's layout; the Program's place).
//  - tp: each block's QKV and fc1 are column-parallel (this rank's heads of Q, K and V, its slice of
//    fc1's outputs), attn.proj and fc2 row-parallel (its slice of their inputs, the bias added once
//    after the reduction); adaLN, embedders and the final layer are held whole;
//  - sequence_parallel: outside the TP-split GEMMs the residual stream, norms, embedders' token
//    rows and the final layer hold only this rank's shard of the sequence;
//  - cp: this rank's contiguous slice of the tokens, attention against every rank's K and V;
//  - pp / virtual_stages: the model chunks on this stage (embedding on the first, head on the last).
struct ModelShard {
  int tp = 1, tp_index = 0;
  bool sequence_parallel = false;
  int cp = 1, cp_index = 0;
  int pp = 1, stage = 0, virtual_stages = 1;
  // The parameter groups this rank holds, in flat order (the Program's RankClass::param_groups);
  // empty: the whole model ("embed", "L0" ... "head").
  std::vector<std::string> groups;
};

// The buffers of one of the model's tensor collectives or pipeline transfers: what to send and
// where the result lands (an all-reduce: the same buffer; all-gather: send is this rank's part,
// recv the whole; reduce-scatter: send the whole, recv this rank's part).
struct TensorComm {
  const float* send = nullptr;
  std::size_t send_count = 0;
  float* recv = nullptr;
  std::size_t recv_count = 0;
};

class DiT {
 public:
  // Throws InputError unless the model is a dit family model (or the shard does not divide it).
  DiT(const ModelSpec& model, int micro_batch, int micro_batches, const ModelShard& shard = {});
  ~DiT();
  DiT(const DiT&) = delete;
  DiT& operator=(const DiT&) = delete;

  // This rank's parameter groups and the length of its flat array.
  const std::vector<ParamGroup>& groups() const;
  std::size_t parameter_count() const;
  // For each element of this rank's flat array, its index in the one-rank model's flat array.
  const std::vector<std::size_t>& global_index() const;
  // For each element of this rank's flat array: 1 when every TP rank holds it whole.
  const std::vector<char>& tp_replicated() const;
  // Elements of the one-rank model's flat array.
  std::size_t global_parameter_count() const;
  // The DiT paper's initialisation (Xavier-uniform linears, N(0, 0.02) embeddings, zeroed adaLN
  // modulation and final layer), deterministic from `seed`, into this rank's flat array (the
  // one-rank model's values at global_index(), so every layout starts from the same weights).
  void init_parameters(float* params, std::uint64_t seed) const;

  // Points a parameter group at its (full, gathered) parameters and its gradient accumulator.
  // Backward ops add into the gradients; the caller zeroes them at the start of a step.
  void bind(const std::string& group, const float* params, float* grads);

  // Installs the batch micro-batch `mb` trains on (before its first forward op).
  void set_batch(int mb, Batch batch);
  // Runs one op of the Program. `part` is the op name without its "L<layer>." prefix and its
  // ".<phase>.mb<i>" suffix ("attn.qkv", "embed.patch", "head.image", "loss", …); `layer` is -1
  // for embedding, head and loss. Recompute re-runs the forward of that op.
  void run(const std::string& part, int layer, Phase phase, int mb);
  // The loss of micro-batch `mb` (mean over its samples), after its "loss" forward op. When the
  // final layer holds a shard of the tokens (sequence or context parallelism), this rank's share:
  // the shards' losses sum to the micro-batch's.
  double loss(int mb) const;
  // Tensor-parallel and context-parallel collectives and pipeline transfers of the Program
  // ("attn.tp_allreduce", "mlp.sp_allgather", "attn.cp_kv", "pp.fwd.send", ...): comm_begin packs
  // and names the buffers, comm_end (after the communication completed) unpacks them.
  TensorComm comm_begin(const Op& op);
  void comm_end(const Op& op);

  // DP-SGD (call before the first set_batch). Backward ops then compute input gradients only and
  // keep each linear's output gradient; the Program's DP ops do the rest:
  //   "<op>.sample_norm"  adds each sample's squared weight-gradient norm (ghost or materialized),
  //   "privacy.clip"      sets clip factors min(1, C / ||g_b||) x the sample's weight,
  //   "<op>.wgrad"        adds the clipped weight gradients sum_b c_b g_b into the bound gradients.
  void enable_privacy(double clip_norm);
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
