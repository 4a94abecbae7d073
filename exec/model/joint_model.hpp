// The two text-and-image families the executor trains besides the DiT, forward and hand-written
// backward in fp32 under the Program's op names (model/lowering.cpp):
//  - mmdit (SD3, Esser et al. 2024): an image stream and a text stream, each with its own
//    adaLN modulation, QKV, output projection and MLP; joint attention over the concatenated
//    tokens [image; text]; conditioning c = timestep MLP + pooled-text MLP through adaLN; the text
//    encoders' context projected from context_dim; the rectified-flow loss on the image.
//  - unified (Transfusion, Zhou et al. 2024): one Llama-style trunk (RMSNorm, SwiGLU or GELU) over
//    [caption tokens; image patches], attention causal over the sequence and bidirectional inside
//    the image; the timestep embedding added to every patch; next-token cross-entropy on the text
//    plus training.objective.image_weight x the rectified-flow loss on the image.
// Positions are fixed sin-cos (2-D for patches as DiT, 1-D for text tokens). A rank holds the
// shard of the Program's place (exec::ModelShard): TP splits every stream Megatron's way (the
// unified model's token table and LM head by vocabulary), CP slices the tokens, PP holds the
// stage's chunks, SP (MMDiT) shards each stream's residual stream over TP; the unified model's
// sequence parallelism is refused. DP-SGD runs under DP and TP (without SP), not PP or CP.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "exec/model/model.hpp"

namespace ditwin::exec {

class JointModel final : public Model {
 public:
  // Throws InputError unless the model is mmdit or unified and the shard divides it.
  JointModel(const ModelSpec& model, const ObjectiveSpec& objective, int micro_batch, int micro_batches,
             const ModelShard& shard = {});
  ~JointModel() override;
  JointModel(const JointModel&) = delete;
  JointModel& operator=(const JointModel&) = delete;

  const std::vector<ParamGroup>& groups() const override;
  std::size_t parameter_count() const override;
  const std::vector<std::size_t>& global_index() const override;
  const std::vector<char>& tp_replicated() const override;
  std::size_t global_parameter_count() const override;
  // Xavier-uniform linears, N(0, 0.02) embedding tables and timestep/pooled MLPs, unit RMSNorm
  // gains, zeroed biases; mmdit zeroes its adaLN modulation and final layer (adaLN-Zero, as DiT).
  void init_parameters(float* params, std::uint64_t seed) const override;
  void bind(const std::string& group, const float* params, float* grads) override;
  // Needs the family's text: mmdit context and pooled vectors, unified token ids.
  void set_batch(int mb, Batch batch) override;
  void run(const std::string& part, int layer, Phase phase, int mb) override;
  // mmdit: the image loss; unified: text cross-entropy + image_weight x image loss.
  double loss(int mb) const override;
  // The two parts of loss(mb): mean next-token cross-entropy (0 for mmdit) and image MSE.
  double text_loss(int mb) const;
  double image_loss(int mb) const;
  TensorComm comm_begin(const Op& op) override;
  void comm_end(const Op& op) override;
  // DP-SGD (under data and tensor parallelism; throws InputError under PP, CP or sequence
  // parallelism): backward keeps output gradients; ".sample_norm", "privacy.clip" and ".wgrad" ops
  // clip each example's gradient (all its tokens) to clip_norm. Under TP each rank's squared norms
  // are partial sums that "privacy.norms.tp_allreduce" completes before the clip.
  void enable_privacy(double clip_norm) override;
  // The last clip factors of micro-batch mb (for tests).
  std::vector<float> clip_factors(int mb) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditwin::exec
