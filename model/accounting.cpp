// Parameters, FLOPs and memory in closed form. Sources: DiT (Peebles & Xie 2023) for the DiT
// layout; Narayanan et al. 2021 for FLOPs; Rajbhandari et al. 2020 (ZeRO) for model states;
// Korthikanti et al. 2022 for activations.
#include "model/accounting.hpp"

#include <algorithm>
#include <cmath>

#include "model/privacy.hpp"

namespace ditwin {

namespace {

// Trainable parameters of one block's stream, split by TP treatment.
struct BlockParams {
  double sharded = 0, replicated = 0;
};

BlockParams block_stream_params(const ModelSpec& m) {
  double h = m.hidden, kv = m.kv_dim(), f = m.ffn_hidden;
  BlockParams p;
  p.sharded += 2 * h * h + 2 * h * kv;             // Q, O and K, V
  p.sharded += (m.gated_mlp ? 3 : 2) * h * f;      // MLP
  if (m.linear_bias) {
    p.sharded += h + 2 * kv + (m.gated_mlp ? 2 : 1) * f;  // column-parallel biases split
    p.replicated += 2 * h;                                 // row-parallel biases (O, fc2)
  }
  switch (m.family) {
    case ModelFamily::gpt: p.replicated += 4 * h; break;  // two LayerNorms, weight and bias
    case ModelFamily::llama:
    case ModelFamily::unified: p.replicated += 2 * h; break;  // two RMSNorms
    case ModelFamily::dit:
    case ModelFamily::mmdit: p.replicated += 6 * h * h + 6 * h; break;  // adaLN; LNs have no affine
  }
  return p;
}

double mlp_embedder(double in, double h) { return in * h + h + h * h + h; }  // Linear-SiLU-Linear

}  // namespace

ParameterCounts count_parameters(const ModelSpec& m) {
  ParameterCounts c;
  BlockParams b = block_stream_params(m);
  c.per_layer_sharded = b.sharded * m.streams();
  c.per_layer_replicated = b.replicated * m.streams();
  c.per_layer = c.per_layer_sharded + c.per_layer_replicated;
  double h = m.hidden;
  double patch_in = 1.0 * m.patch * m.patch * m.latent_channels;
  double patch_out = 1.0 * m.patch * m.patch * m.out_channels();
  switch (m.family) {
    case ModelFamily::dit:
      c.embedding = patch_in * h + h + mlp_embedder(m.frequency_embedding, h);
      if (m.num_classes > 0) c.embedding += (m.num_classes + 1.0) * h;  // +1: the null class for CFG
      c.head = 2 * h * h + 2 * h + h * patch_out + patch_out;           // final adaLN + linear
      break;
    case ModelFamily::mmdit:
      c.embedding = patch_in * h + h + mlp_embedder(m.frequency_embedding, h) +
                    mlp_embedder(m.pooled_dim, h) + m.context_dim * h + h;
      c.head = 2 * h * h + 2 * h + h * patch_out + patch_out;
      break;
    case ModelFamily::unified:
      c.embedding = 1.0 * m.vocab * h + patch_in * h + h + mlp_embedder(m.frequency_embedding, h);
      c.head = h + 1.0 * m.vocab * h + h * patch_out + patch_out;  // final norm, LM head, image out
      break;
    case ModelFamily::gpt:
      c.embedding = 1.0 * m.vocab * h + 1.0 * m.seq_len * h;
      c.head = 2 * h + (m.tied_embeddings ? 0 : 1.0 * m.vocab * h);
      break;
    case ModelFamily::llama:
      c.embedding = 1.0 * m.vocab * h;
      c.head = h + (m.tied_embeddings ? 0 : 1.0 * m.vocab * h);
      break;
  }
  c.total = c.per_layer * m.layers + c.embedding + c.head;
  return c;
}

FlopCounts count_flops(const Plan& plan) {
  const ModelSpec& m = plan.model;
  FlopCounts f;
  double h = m.hidden, kv = m.kv_dim(), ff = m.ffn_hidden;
  double tokens = m.tokens_per_sample();
  // Token-wise matmul weights of one stream (every token of the stream passes through them).
  double tokenwise = 2 * h * h + 2 * h * kv + (m.gated_mlp ? 3 : 2) * h * ff;
  double block = 2 * tokens * tokenwise;                       // both streams see their own tokens
  double attention = 2 * 2 * tokens * tokens * h;              // QK^T and AV over the joint sequence
  if (m.adaln()) block += 2 * m.streams() * (6 * h * h);       // per-sample modulation
  f.attention_core_per_layer_per_sample = attention;
  f.forward_per_layer_per_sample = block + attention;
  double io = 0;
  double img = m.image_tokens(), txt = m.text_tokens;
  double patch_in = 1.0 * m.patch * m.patch * m.latent_channels;
  double patch_out = 1.0 * m.patch * m.patch * m.out_channels();
  switch (m.family) {
    case ModelFamily::dit:
      io = 2 * img * patch_in * h + 2 * (m.frequency_embedding * h + h * h) + 2 * (2 * h * h) +
           2 * img * h * patch_out;
      break;
    case ModelFamily::mmdit:
      io = 2 * img * patch_in * h + 2 * txt * m.context_dim * h +
           2 * (m.frequency_embedding * h + h * h) + 2 * (m.pooled_dim * h + h * h) +
           2 * (2 * h * h) + 2 * img * h * patch_out;
      break;
    case ModelFamily::unified:
      io = 2 * img * patch_in * h + 2 * (m.frequency_embedding * h + h * h) +
           2 * txt * h * m.vocab + 2 * img * h * patch_out;
      break;
    case ModelFamily::gpt:
    case ModelFamily::llama: io = 2 * tokens * h * m.vocab; break;
  }
  f.forward_per_sample = m.layers * f.forward_per_layer_per_sample + io;
  double batch = plan.training.global_batch;
  f.model_flops_per_step = 3 * f.forward_per_sample * batch;
  double repeated = 0;
  if (plan.training.recompute == Recompute::full) repeated = m.layers * f.forward_per_layer_per_sample;
  if (plan.training.recompute == Recompute::selective) repeated = m.layers * attention;
  f.hardware_flops_per_step = f.model_flops_per_step + repeated * batch;
  if (plan.training.privacy.enabled) {
    // Every weighted op the lowering gives a ".sample_norm" (model/lowering.cpp), by the cheaper
    // of ghost and materialized norms; embedding tables' norms are memory-bound (no FLOPs).
    // Under TP each rank computes its norms over its own widths (Megatron's split: QKV, fc1 and the
    // LM head by output columns, attn.proj and fc2 by input rows), so the ghost norm's Gram matrix
    // of a split linear's whole side is formed on every TP rank; replicated linears count once.
    double norms = 0;
    const double tp = plan.parallelism.tp;
    auto linear = [&](double rows, double d_in, double d_out) { norms += per_sample_norm_flops(rows, d_in, d_out, m.linear_bias); };
    auto column = [&](double rows, double d_in, double d_out) {
      norms += tp * per_sample_norm_flops(rows, d_in, d_out / tp, m.linear_bias);
    };
    auto row = [&](double rows, double d_in, double d_out) {
      norms += tp * per_sample_norm_flops(rows, d_in / tp, d_out, m.linear_bias);
    };
    double fc1_out = (m.gated_mlp ? 2 : 1) * ff;
    std::vector<double> streams = m.family == ModelFamily::mmdit ? std::vector<double>{img, txt} : std::vector<double>{tokens};
    for (double t : streams) {
      if (m.adaln()) linear(1, h, 6 * h);
      column(t, h, h + 2 * kv);
      row(t, h, h);
      column(t, h, fc1_out);
      row(t, ff, h);
    }
    norms *= m.layers;
    if (m.has_image()) {
      linear(img, patch_in, h);
      linear(1, m.frequency_embedding + h, h);
      linear(img, h, patch_out);
    }
    if (m.family == ModelFamily::mmdit) {
      linear(txt, m.context_dim, h);
      linear(1, m.pooled_dim + h, h);
    }
    if (m.adaln()) linear(1, h, 2 * h);
    if (m.has_text_vocab()) {
      double text = m.family == ModelFamily::unified ? txt : m.has_image() ? 0 : m.seq_len;
      column(text, h, m.vocab);
    }
    f.privacy_norm_flops_per_sample = norms;
    f.hardware_flops_per_step += norms * batch;
  }
  return f;
}

double activation_bytes_per_layer(const Plan& plan) {
  const ModelSpec& m = plan.model;
  const auto& par = plan.parallelism;
  double e = element_bytes(plan.training.precision == Precision::fp8 ? Precision::bf16
                                                                     : plan.training.precision);
  double h = m.hidden, kv = m.kv_dim(), f = m.ffn_hidden, a = m.heads;
  double t = par.tp;
  double tokens = static_cast<double>(m.tokens_per_sample()) / par.cp;  // queries on this rank
  double keys = m.tokens_per_sample();                                  // keys each query sees
  bool dropout = m.family == ModelFamily::gpt;  // Megatron's GPT trains with dropout; the rest without
  double sp = par.sequence_parallel ? t : 1;
  // Per token, one stream. Replicated across TP unless sequence parallel:
  double replicated = e * h * 4;  // inputs of both norms, of QKV and of fc1
  if (dropout) replicated += 2 * h;                   // two 1-byte dropout masks
  if (m.adaln()) replicated += e * h * 4;             // normed (pre-modulation) inputs, gated branches
  // Split across TP ranks:
  double sharded = e * (h + 2 * kv) + e * h;          // Q, K, V; input of the output projection
  sharded += e * f * (m.gated_mlp ? 3 : 2);           // fc1 output(s) and fc2 input
  double core = 0;                                    // attention internals kept for backward
  if (plan.training.flash_attention) core = 4 * a;    // fp32 log-sum-exp per head
  else core = (dropout ? 2 * e + 1 : e) * a * keys;   // softmax output (+ dropout mask and output)
  switch (plan.training.recompute) {
    case Recompute::none: break;
    case Recompute::selective: core = 0; break;       // attention core recomputed in backward
    case Recompute::full: return e * h * tokens * plan.training.micro_batch / sp;
  }
  // `tokens` already spans both MMDiT streams: each token passes through one stream's weights.
  double per_token = replicated / sp + (sharded + core) / t;
  return per_token * tokens * plan.training.micro_batch;
}

std::vector<int> layers_per_chunk(int layers, int chunks) {
  int base = (layers + chunks - 1) / chunks;
  std::vector<int> out(chunks, base);
  int deficit = base * chunks - layers;
  for (int i = 0; deficit > 0; ++i, --deficit) {
    int c = (i % 2 == 0) ? (i / 2) % chunks : chunks - 1 - (i / 2) % chunks;
    --out[c];
  }
  return out;
}

std::vector<int> chunk_first_layers(int layers, int chunks) {
  std::vector<int> sizes = layers_per_chunk(layers, chunks), first(chunks + 1, 0);
  for (int c = 0; c < chunks; ++c) first[c + 1] = first[c] + sizes[c];
  return first;
}

double pipeline_bubble_fraction(const Plan& plan) {
  double p = plan.parallelism.pp, mb = static_cast<double>(plan.micro_batches());
  if (p <= 1) return 0;
  double v = plan.parallelism.schedule == PipelineSchedule::interleaved ? plan.parallelism.virtual_stages : 1;
  double bubble = (p - 1) / v;  // in units of one micro-batch's forward+backward on one stage
  return bubble / (mb + bubble);
}

MemoryReport account_memory(const Plan& plan) {
  const ModelSpec& m = plan.model;
  const auto& par = plan.parallelism;
  const auto& tr = plan.training;
  ParameterCounts params = count_parameters(m);
  MemoryReport report;
  report.capacity_bytes = plan.cluster.device.memory_bytes;
  double w = element_bytes(tr.precision == Precision::fp8 ? Precision::bf16 : tr.precision);
  double g = w;
  double master = tr.precision == Precision::fp32 ? 0 : 4;
  double states = tr.optimizer.state_bytes_per_param();
  double shards = 1.0 * par.dp * par.cp;  // ZeRO shards over every rank holding the same parameters
  std::vector<int> chunk_layers = layers_per_chunk(m.layers, par.pp * par.virtual_stages);
  double per_layer = activation_bytes_per_layer(plan);
  double e = w;
  double tokens = static_cast<double>(m.tokens_per_sample()) / par.cp;
  double mb = static_cast<double>(plan.micro_batches());
  for (int s = 0; s < par.pp; ++s) {
    StageMemory st;
    st.stage = s;
    int layers_per_stage = 0;
    for (int c = 0; c < par.virtual_stages; ++c) layers_per_stage += chunk_layers[c * par.pp + s];
    double psi = layers_per_stage * layer_parameters_per_rank(params, par.tp);
    if (s == 0) psi += params.embedding / par.tp;
    if (s == par.pp - 1) psi += params.head / par.tp;
    // Tied embeddings split over stages: the last stage keeps its own copy for the LM head.
    if (s == par.pp - 1 && par.pp > 1 && m.tied_embeddings) psi += 1.0 * m.vocab * m.hidden / par.tp;
    st.params_on_gpu = psi;
    switch (par.zero) {
      case 0: st.weights_bytes = psi * w; st.gradients_bytes = psi * g; st.optimizer_bytes = psi * (master + states); break;
      case 1: st.weights_bytes = psi * w; st.gradients_bytes = psi * g; st.optimizer_bytes = psi * (master + states) / shards; break;
      case 2: st.weights_bytes = psi * w; st.gradients_bytes = psi * g / shards; st.optimizer_bytes = psi * (master + states) / shards; break;
      default: {
        st.weights_bytes = psi * w / shards;
        if (shards == 1) {
          st.gradients_bytes = psi * g;
          st.optimizer_bytes = psi * (master + states);
          break;
        }
        st.gradients_bytes = psi * g / shards;
        st.optimizer_bytes = psi * (master + states) / shards;
        // Gathered copies in flight: the layer in use and the one prefetched, weights and grads.
        double layer = layer_parameters_per_rank(params, par.tp);
        st.weights_bytes += 2 * layer * w;
        st.gradients_bytes += layer * g;
      }
    }
    // Micro-batches whose activations stage s holds at its peak.
    double in_flight;
    switch (par.schedule) {
      case PipelineSchedule::gpipe: in_flight = mb; break;
      case PipelineSchedule::one_f_one_b: in_flight = std::min<double>(par.pp - s, mb); break;
      case PipelineSchedule::interleaved:
      default:
        in_flight = std::min<double>(par.pp - s, mb) * (1 + (par.pp - 1.0) / (par.pp * par.virtual_stages));
    }
    if (par.pp == 1) in_flight = 1;
    // DP-SGD under PP: a micro-batch's activations stay until its clipped weight gradients, lag
    // micro-batches after its backward (model/privacy.hpp).
    const int lag = tr.privacy.enabled ? privacy_clip_lag(plan, s) : 0;
    if (lag > 0 && par.schedule != PipelineSchedule::gpipe) in_flight = std::min<double>(in_flight + lag, mb);
    double acts = per_layer * layers_per_stage * in_flight;
    if (tr.recompute == Recompute::full) {  // plus one block's full working set while recomputing
      Plan none = plan;
      none.training.recompute = Recompute::none;
      acts += activation_bytes_per_layer(none);
    }
    double sp = par.sequence_parallel ? par.tp : 1;
    if (s == 0) acts += e * m.hidden * tokens * tr.micro_batch * in_flight / sp;  // embedding output
    if (s == par.pp - 1 && m.vocab > 0) {  // fp32 logits for the loss, vocabulary split across TP
      double text = m.family == ModelFamily::unified ? m.text_tokens / par.cp : tokens;
      acts += 4.0 * text * tr.micro_batch * m.vocab / par.tp;
    }
    st.activations_bytes = acts;
    if (tr.privacy.enabled) {
      // DP-SGD keeps every weighted op's output gradient of the micro-batch in backward until its
      // clip factors are known (book-keeping), plus two Gram matrices per sample at a time.
      double t = tokens, h = m.hidden;
      double fc1_out = (m.gated_mlp ? 2 : 1) * m.ffn_hidden;
      double per_layer = t * ((h + 2 * m.kv_dim() + fc1_out) / par.tp + 2 * h) + (m.adaln() ? 6 * h : 0);
      double kept = per_layer * m.streams() * layers_per_stage;
      if (s == 0 && m.has_image()) kept += m.image_tokens() * h + 2 * h;
      if (s == par.pp - 1) kept += (m.has_image() ? m.image_tokens() * m.patch * m.patch * m.out_channels() : 0) + 2 * h +
                                   (m.has_text_vocab() ? t * m.vocab / par.tp : 0);
      // The output gradients of the micro-batch in backward and of those awaiting their clip.
      st.privacy_bytes = e * kept * tr.micro_batch * std::min<double>(lag + 1, mb) + 2 * 4.0 * (t * par.cp) * (t * par.cp);
      // Under CP an op's rows gathered from every CP rank (the widest: fc1's input and output).
      if (par.cp > 1) st.privacy_bytes += e * tr.micro_batch * t * par.cp * (h + fc1_out / par.tp);
    }
    report.stages.push_back(st);
  }
  report.worst_stage = 0;
  for (int s = 1; s < par.pp; ++s)
    if (report.stages[s].total_bytes() > report.stages[report.worst_stage].total_bytes()) report.worst_stage = s;
  return report;
}

}  // namespace ditwin
