// MMDiT and the unified AR+diffusion transformer on the CPU, op by op under the Program's names:
// forward and hand-written backward over kernels/ functions, activations kept per micro-batch.
#include "exec/model/joint_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <stdexcept>

#include "exec/model/activations.hpp"
#include "exec/model/rng.hpp"
#include "model/accounting.hpp"  // defines: chunk_first_layers
#include "kernels/attention.hpp"  // defines: attention_forward, attention_backward (with a mask)
#include "kernels/embedding.hpp"  // defines: patchify, unpatchify, sinusoids, table lookups
#include "kernels/gelu.hpp"       // defines: gelu_forward, gelu_backward
#include "kernels/layernorm.hpp"  // defines: layernorm_modulate_forward/backward
#include "kernels/loss.hpp"       // defines: rectified_flow_*, cross_entropy_forward/backward
#include "kernels/matmul.hpp"     // defines: matmul_forward, matmul_backward
#include "kernels/per_sample_norm.hpp"  // defines: linear_per_sample_sq_norms, scale_sample_rows
#include "kernels/residual.hpp"   // defines: gated_residual_forward, gated_residual_backward
#include "kernels/rmsnorm.hpp"    // defines: rmsnorm_forward, rmsnorm_backward
#include "kernels/silu.hpp"       // defines: silu_*, swiglu_*
#include "model/errors.hpp"
#include "exec/model/cp_sample_norms.hpp"  // defines: NormLinear, cp_norm_pack, cp_owned_sq_norms
#include "model/privacy.hpp"  // defines: ghost_norm_is_cheaper, clip_factors

namespace ditwin::exec {
namespace k = ditwin::kernels;

namespace {

using Buf = Activations;
constexpr float layernorm_eps = 1e-6f;  // SD3's LayerNorms: no affine, eps 1e-6 (as DiT)
constexpr float rmsnorm_eps = 1e-5f;    // Llama 2's RMSNorm
constexpr float max_period = 10000.0f;
constexpr float timestep_scale = 1000.0f;  // t in (0, 1) scaled to DiT's [0, 1000) before the sinusoid
constexpr std::size_t none = std::numeric_limits<std::size_t>::max();

// One stream's activations in one layer.
struct StreamActs {
  Buf mod, ln1, mean1, rstd1, qkv, att, proj, x_mid, ln2, mean2, rstd2, fc1, act, fc2;
  // Sequence parallelism: the gathered norm outputs (G rows) and the reduce-scattered GEMM
  // outputs (R rows).
  Buf ln1_full, ln2_full, proj_red, fc2_red;
};
struct LayerActs {
  StreamActs s[2];
  Buf qkv_joint, att_joint, probs;  // mmdit: the concatenated [image; text] tokens
  Buf kv_full;                      // context parallelism: every rank's K and V (B x T x 2w, rank order)
};

struct MicroBatch {
  bool ready = false;
  Batch batch;
  Buf patches_local, ctx_local;  // context parallelism: this rank's patches and context rows
  Buf z, patches, patch_emb, t_scaled, t_freq, t_h1, t_a1, t_emb, p_h1, p_a1, p_emb, c, silu_c;
  std::vector<Buf> x[2];  // x[s][l]: the residual stream of stream s entering layer l
  std::vector<LayerActs> layer;
  Buf fmod, lnf, meanf, rstdf, img_in, txt_in, out_tok, v_hat, logits;
  std::vector<int> targets;  // unified: the next token of each text row, -1 for the last
  // unified under TP: per text row, every rank's (max, sum of exp) slot and the target's logit
  // (from the rank holding it), summed by loss.tp_allreduce; then each row's log-sum-exp.
  Buf ce_stats;
  std::vector<double> lse;
  double loss = std::numeric_limits<double>::quiet_NaN(), text_loss = 0, image_loss = 0;
  bool loss_done = false;
  // Backward.
  Buf dx[2], d_ln[2], dqkv[2], datt[2], dmod[2], dproj[2], dfc1[2], dact[2], dfc2[2];
  Buf d_ln_full[2], dproj_full[2], dfc2_full[2];  // sequence parallelism: the G-row forms
  Buf dqkv_joint, datt_joint, dsilu_c, dc, dt_emb, dt_a1, dt_h1, dp_a1, dp_h1, dfmod, dlnf, d_img_in, d_txt_in,
      dout_tok, dv_hat, dlogits, d_patch_emb, dkv_full;
  bool dc_ready = false;
  // DP-SGD (book-keeping, as the DiT): each linear's output gradient kept from its backward until
  // its clipped ".wgrad" (by op and linear), the unified model's per-sample RMSNorm-gain gradients
  // (B x hidden, by op), per-sample squared norms, clip factors, scratch.
  std::map<std::string, Buf> kept, gains;
  std::vector<double> sq_norm;
  std::vector<float> clip;
  bool clipped = false;
  std::vector<char> gains_added;  // per layer, and the head at [L]
  Buf scratch, scaled;
  std::map<std::string, Buf> cp_gathered;  // under CP: an op's gathered norm inputs, by gather_key
};

}  // namespace

struct JointModel::Impl {
  ModelSpec m;
  bool mm = false;  // mmdit (two streams, adaLN); else unified (one stream, RMSNorm, causal text)
  int B = 0, H = 0, F = 0, F1 = 0, NH = 0, C = 0, Cout = 0, S = 0, P = 0, grid = 0, Ti = 0, Tt = 0, T = 0, fe = 0,
      Dc = 0, Dp = 0, V = 0, L = 0, pin = 0, pout = 0, micro_batches = 0, NS = 1;
  bool gated = false, bias = true;
  double image_weight = 1;
  int rows[2] = {0, 0};   // this rank's residual-stream tokens per sample of each stream
  int grows[2] = {0, 0};  // the tokens its TP-split GEMMs and attention see (all of the CP slice's)
  bool sp = false;        // sequence parallelism: rows = grows / tp outside the TP-split GEMMs
  // Context parallelism: cp ranks, this rank's index; Tq rows of the joint sequence per sample
  // here (queries), against all T keys. Image tokens img0 .. img0 + img_n here, at row img_at of
  // stream 0; text tokens txt0 .. txt0 + txt_n (unified: rows 0 .. txt_n; mmdit: stream 1).
  int cp = 1, cpi = 0, Tq = 0, q0 = 0, img_n = 0, img0 = 0, img_at = 0, txt_n = 0, txt0 = 0;
  bool shard_tokens = false;  // the final layer sees a slice of the image: the loss is this slice's part
  // Offsets (floats) inside each group; `none` where the family has no such tensor.
  struct Embed {
    std::size_t patch_w = none, patch_b = none, t_w1 = none, t_b1 = none, t_w2 = none, t_b2 = none, p_w1 = none,
                p_b1 = none, p_w2 = none, p_b2 = none, ctx_w = none, ctx_b = none, tok = none, size = 0;
  } el;
  struct Stream {
    std::size_t ada_w = none, ada_b = none, n1_w = none, qkv_w = none, qkv_b = none, proj_w = none, proj_b = none,
                n2_w = none, fc1_w = none, fc1_b = none, fc2_w = none, fc2_b = none, size = 0;
  } sl;  // one stream of a layer; a layer holds NS of them back to back
  struct Head {
    std::size_t ada_w = none, ada_b = none, norm_w = none, lm_w = none, out_w = none, out_b = none, size = 0;
  } hd;
  Stream gsl;  // the one-rank layout of a stream (sl is this rank's: TP-split tensors narrower)
  std::size_t layer_size = 0, glayer_size = 0, total = 0;
  // Tensor parallelism (mmdit): this rank's heads (attention width w) and slice of the MLP.
  int tp = 1, tpi = 0, w = 0, NHl = 0, Fl = 0, F1l = 0;
  // unified under TP: this rank's rows [v0, v0 + Vl) of the token table and of the LM head.
  int Vl = 0, v0 = 0;
  Embed gel;  // one-rank layouts of the embedding and head groups (the vocabulary rows differ)
  Head ghd;
  std::vector<ParamGroup> groups;
  std::map<std::string, int> group_index;
  std::vector<std::size_t> global;
  std::vector<char> replicated;
  std::vector<const float*> params;
  std::vector<float*> grads;
  Buf pos_img, pos_txt;
  std::vector<unsigned char> mask;  // unified: T x T, causal with the image block bidirectional
  std::vector<MicroBatch> mbs;
  // Pipeline parallelism: this rank's stage, the first layer of each model chunk, the layers it holds.
  int pp = 1, stage = 0;
  std::vector<int> chunk_first;
  std::vector<bool> held;
  std::map<const Op*, Buf> staging;  // pipeline transfers in flight
  bool dp = false;  // DP-SGD: backward leaves weight gradients to the clipped ".wgrad" ops
  double clip_norm = 0;

  Impl(const ModelSpec& model, const ObjectiveSpec& objective, int micro_batch, int n_micro, const ModelShard& shard)
      : m(model) {
    auto need = [](bool ok, const std::string& msg) {
      if (!ok) throw InputError(msg);
    };
    mm = m.family == ModelFamily::mmdit;
    need(mm || m.family == ModelFamily::unified,
         std::string("model.family: exec::JointModel trains mmdit and unified models, not ") + to_string(m.family));
    const std::string fam = to_string(m.family);
    need(!shard.sequence_parallel || std::max(1, shard.tp) == 1 || mm,
         "parallelism.sequence_parallel: the unified executor's vocabulary-parallel LM head reads every text row; "
         "set it to false");
    tp = std::max(1, shard.tp);
    tpi = shard.tp_index;
    sp = shard.sequence_parallel && tp > 1;
    need(shard.stage >= 0 && shard.stage < std::max(1, shard.pp), "parallelism: this rank's stage is outside the pipeline");
    need(m.layers > 0 && m.hidden > 0 && m.heads > 0 && m.ffn_hidden > 0, "model: layers, hidden, heads, ffn_hidden must be positive");
    need(m.hidden % m.heads == 0, "model.heads: must divide model.hidden");
    need(m.kv_heads == 0 || m.kv_heads == m.heads, "model.kv_heads: the " + fam + " executor has no grouped-query attention");
    need(m.hidden % 4 == 0, "model.hidden: the 2-D sin-cos positional embedding needs a multiple of 4");
    need(m.vae_downsample > 0 && m.image_size % m.vae_downsample == 0, "model.image_size: must be a multiple of model.vae_downsample");
    need(m.patch > 0 && m.latent_size() % m.patch == 0, "model.patch: must divide the latent size");
    need(m.frequency_embedding > 0, "model.frequency_embedding: must be positive");
    need(m.text_tokens > 0, "model.text_tokens: must be positive for a " + fam + " model");
    need(micro_batch > 0 && n_micro > 0, "training: micro_batch and micro-batch count must be positive");
    if (mm) {
      need(!m.gated_mlp, "model.gated_mlp: MMDiT's MLP is GELU, not gated");
      need(m.context_dim > 0 && m.pooled_dim > 0, "model.context_dim, model.pooled_dim: the mmdit executor needs both > 0");
    } else {
      need(m.vocab > 1, "model.vocab: a unified model needs a vocabulary of at least 2 tokens");
      need(m.hidden % 2 == 0, "model.hidden: the 1-D sin-cos text positions need an even width");
      need(!m.tied_embeddings, "model.tied_embeddings: the unified executor has its own LM head (untied, as Transfusion)");
    }
    B = micro_batch;
    micro_batches = n_micro;
    H = m.hidden;
    F = m.ffn_hidden;
    gated = m.gated_mlp;
    F1 = gated ? 2 * F : F;
    bias = m.linear_bias;
    NH = m.heads;
    C = m.latent_channels;
    Cout = m.out_channels();
    S = m.latent_size();
    P = m.patch;
    grid = S / P;
    Ti = grid * grid;
    Tt = m.text_tokens;
    T = Ti + Tt;
    fe = m.frequency_embedding;
    Dc = m.context_dim;
    Dp = m.pooled_dim;
    V = m.vocab;
    L = m.layers;
    pin = P * P * C;
    pout = P * P * Cout;
    image_weight = mm ? 1.0 : objective.image_weight;
    NS = mm ? 2 : 1;

    // Context parallelism: this rank's contiguous slice of each stream's tokens (mmdit) or of the
    // [text; image] sequence (unified); attention reads every rank's K and V (attn.cp_kv).
    cp = std::max(1, shard.cp);
    cpi = shard.cp_index;
    need(cpi >= 0 && cpi < cp, "parallelism: this rank's context-parallel index is outside the layout");
    if (mm) {
      need(Ti % cp == 0 && Tt % cp == 0, "parallelism.cp: " + std::to_string(cp) + " does not divide the " +
                                             std::to_string(Ti) + " image and " + std::to_string(Tt) + " text tokens");
      grows[0] = Ti / cp;
      grows[1] = Tt / cp;
      // Sequence parallelism: the residual stream, norms, embedders and final layer hold this TP
      // rank's shard of each stream's CP slice.
      need(!sp || (grows[0] % tp == 0 && grows[1] % tp == 0),
           "parallelism.sequence_parallel: tp " + std::to_string(tp) + " does not divide the " + std::to_string(grows[0]) +
               " image and " + std::to_string(grows[1]) + " text tokens of a context-parallel rank");
      rows[0] = sp ? grows[0] / tp : grows[0];
      rows[1] = sp ? grows[1] / tp : grows[1];
      img_n = rows[0], img0 = cpi * grows[0] + (sp ? tpi * rows[0] : 0), img_at = 0;
      txt_n = rows[1], txt0 = cpi * grows[1] + (sp ? tpi * rows[1] : 0);
    } else {
      need(T % cp == 0, "parallelism.cp: " + std::to_string(cp) + " does not divide the " + std::to_string(T) + " tokens");
      rows[0] = grows[0] = T / cp;
      rows[1] = grows[1] = 0;
      q0 = cpi * rows[0];
      txt_n = std::max(0, std::min(rows[0], Tt - q0));
      txt0 = q0;
      img_n = rows[0] - txt_n;
      img_at = txt_n;
      img0 = std::max(q0, Tt) - Tt;
    }
    Tq = grows[0] + grows[1];
    shard_tokens = cp > 1 || sp;

    need(tpi >= 0 && tpi < tp, "parallelism: this rank's tensor-parallel index is outside the layout");
    need(NH % tp == 0, "parallelism.tp: " + std::to_string(tp) + " does not divide model.heads " + std::to_string(NH));
    need(F % tp == 0, "parallelism.tp: " + std::to_string(tp) + " does not divide model.ffn_hidden " + std::to_string(F));
    w = H / tp;
    NHl = NH / tp;
    Fl = F / tp;
    F1l = F1 / tp;
    if (!mm) need(V % tp == 0, "parallelism.tp: " + std::to_string(tp) + " does not divide model.vocab " + std::to_string(V));
    Vl = mm ? 0 : V / tp;
    v0 = tpi * Vl;

    // The parameter layout, in the accounting's terms (model/accounting.cpp counts the same).
    std::size_t o = 0;
    auto take = [&](std::size_t n) { std::size_t at = o; o += n; return at; };
    auto take_bias = [&](std::size_t n) { return bias ? take(n) : none; };
    const std::size_t h = H;
    // The embedding group with `vocab_rows` rows of the token table (unified), first.
    auto embed_layout = [&](std::size_t vocab_rows) {
      Embed e;
      o = 0;
      if (!mm) e.tok = take(vocab_rows * h);
      e.patch_w = take(h * pin); e.patch_b = take(h);
      e.t_w1 = take(h * fe); e.t_b1 = take(h); e.t_w2 = take(h * h); e.t_b2 = take(h);
      if (mm) {
        e.p_w1 = take(h * Dp); e.p_b1 = take(h); e.p_w2 = take(h * h); e.p_b2 = take(h);
        e.ctx_w = take(h * Dc); e.ctx_b = take(h);
      }
      e.size = o;
      return e;
    };
    el = embed_layout(Vl);
    gel = embed_layout(V);
    // A stream of a layer with attention width `aw` and MLP widths f1 (fc1's outputs), f.
    auto stream_layout = [&](std::size_t aw, std::size_t f1, std::size_t f) {
      Stream x;
      o = 0;
      if (mm) { x.ada_w = take(6 * h * h); x.ada_b = take(6 * h); }
      else x.n1_w = take(h);
      x.qkv_w = take(3 * aw * h); x.qkv_b = take_bias(3 * aw);
      x.proj_w = take(h * aw); x.proj_b = take_bias(h);
      if (!mm) x.n2_w = take(h);
      x.fc1_w = take(f1 * h); x.fc1_b = take_bias(f1);
      x.fc2_w = take(h * f); x.fc2_b = take_bias(h);
      x.size = o;
      return x;
    };
    sl = stream_layout(w, F1l, Fl);
    gsl = stream_layout(H, F1, F);
    layer_size = sl.size * NS;
    glayer_size = gsl.size * NS;
    auto head_layout = [&](std::size_t vocab_rows) {
      Head x;
      o = 0;
      if (mm) { x.ada_w = take(2 * h * h); x.ada_b = take(2 * h); }
      else { x.norm_w = take(h); x.lm_w = take(vocab_rows * h); }
      x.out_w = take(static_cast<std::size_t>(pout) * h); x.out_b = take(pout);
      x.size = o;
      return x;
    };
    hd = head_layout(Vl);
    ghd = head_layout(V);
    total = gel.size + static_cast<std::size_t>(L) * glayer_size + ghd.size;

    // The groups this rank holds, in the Program's order (RankClass::param_groups; none: all).
    pp = std::max(1, shard.pp);
    stage = shard.stage;
    const int chunks = pp * std::max(1, shard.virtual_stages);
    need(chunks <= L, "parallelism: " + std::to_string(chunks) + " pipeline chunks for " + std::to_string(L) + " layers");
    chunk_first = chunk_first_layers(L, chunks);
    std::vector<std::string> names = shard.groups;
    if (names.empty()) {
      names.push_back("embed");
      for (int l = 0; l < L; ++l) names.push_back(std::string("L").append(std::to_string(l)));
      names.push_back("head");
    }
    held.assign(L, false);
    std::size_t offset = 0;
    for (const auto& name : names) {
      const bool embed = name == "embed", head = name == "head";
      int l = -1;
      if (!embed && !head) {
        l = name.size() > 1 && name[0] == 'L' ? std::atoi(name.c_str() + 1) : -1;
        if (l < 0 || l >= L || name != std::string("L").append(std::to_string(l)) || held[l])
          throw std::logic_error("JointModel: parameter group '" + name + "' is not a layer of this model");
        held[l] = true;
      }
      const std::size_t size = embed ? el.size : head ? hd.size : layer_size;
      group_index[name] = static_cast<int>(groups.size());
      groups.push_back({name, offset, size});
      offset += size;
      if (embed || head) {
        map_embed_or_head(embed);
      } else {
        for (int s = 0; s < NS; ++s) map_stream(gel.size + static_cast<std::size_t>(l) * glayer_size + s * gsl.size);
      }
    }
    if (global.size() != offset) throw std::logic_error("JointModel: the shard's index map misses its layout");
    params.assign(groups.size(), nullptr);
    grads.assign(groups.size(), nullptr);

    pos_img.resize(static_cast<std::size_t>(Ti) * H);
    k::pos_embed_2d_sincos(pos_img.data(), grid, H);
    if (!mm) {
      pos_txt.resize(static_cast<std::size_t>(Tt) * H);  // [sin, cos] per frequency 10000^(-2i/H)
      for (int j = 0; j < Tt; ++j)
        for (int i = 0; i < H / 2; ++i) {
          const double angle = j * std::pow(10000.0, -2.0 * i / H);
          pos_txt[static_cast<std::size_t>(j) * H + 2 * i] = static_cast<float>(std::sin(angle));
          pos_txt[static_cast<std::size_t>(j) * H + 2 * i + 1] = static_cast<float>(std::cos(angle));
        }
      // Text first, then the image: a text token sees the tokens before it; an image token sees the
      // whole text and the whole image (Transfusion's mask for one image after its caption).
      // This rank's queries are tokens q0 .. q0 + Tq; the keys, gathered in rank order, all T.
      mask.assign(static_cast<std::size_t>(Tq) * T, 0);
      for (int i = 0; i < Tq; ++i)
        for (int j = 0; j < T; ++j) mask[static_cast<std::size_t>(i) * T + j] = (j <= q0 + i || q0 + i >= Tt) ? 1 : 0;
    }
    mbs.resize(n_micro);
  }

  // One stream of a layer, local element -> one-rank element, in the local layout's order: a
  // TP-split tensor takes this rank's rows (column-parallel QKV: its heads of Q, K and V; fc1: its
  // slice, of the gate and of the up half for SwiGLU) or columns (row-parallel proj and fc2).
  void map_stream(std::size_t base) {
    const std::size_t h = H, start = global.size();
    auto whole = [&](std::size_t at, std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) {
        global.push_back(base + at + i);
        replicated.push_back(1);
      }
    };
    auto split = [&](std::size_t at) {
      global.push_back(base + at);
      replicated.push_back(tp > 1 ? 0 : 1);
    };
    auto check = [&](std::size_t local_offset) {
      if (global.size() - start != local_offset) throw std::logic_error("JointModel: stream index map out of order");
    };
    if (mm) whole(gsl.ada_w, 6 * h * h + 6 * h);
    else whole(gsl.n1_w, h);
    check(sl.qkv_w);
    auto qkv_row = [&](std::size_t r) { return (r / w) * h + static_cast<std::size_t>(tpi) * w + r % w; };
    for (std::size_t r = 0; r < 3 * static_cast<std::size_t>(w); ++r)
      for (std::size_t c = 0; c < h; ++c) split(gsl.qkv_w + qkv_row(r) * h + c);
    if (bias)
      for (std::size_t r = 0; r < 3 * static_cast<std::size_t>(w); ++r) split(gsl.qkv_b + qkv_row(r));
    check(sl.proj_w);
    for (std::size_t r = 0; r < h; ++r)
      for (std::size_t c = 0; c < static_cast<std::size_t>(w); ++c) split(gsl.proj_w + r * h + static_cast<std::size_t>(tpi) * w + c);
    if (bias) whole(gsl.proj_b, h);
    if (!mm) whole(gsl.n2_w, h);
    check(sl.fc1_w);
    auto fc1_row = [&](std::size_t r) {
      return gated ? (r / Fl) * F + static_cast<std::size_t>(tpi) * Fl + r % Fl : static_cast<std::size_t>(tpi) * Fl + r;
    };
    for (std::size_t r = 0; r < static_cast<std::size_t>(F1l); ++r)
      for (std::size_t c = 0; c < h; ++c) split(gsl.fc1_w + fc1_row(r) * h + c);
    if (bias)
      for (std::size_t r = 0; r < static_cast<std::size_t>(F1l); ++r) split(gsl.fc1_b + fc1_row(r));
    check(sl.fc2_w);
    for (std::size_t r = 0; r < h; ++r)
      for (std::size_t c = 0; c < static_cast<std::size_t>(Fl); ++c)
        split(gsl.fc2_w + r * static_cast<std::size_t>(F) + static_cast<std::size_t>(tpi) * Fl + c);
    if (bias) whole(gsl.fc2_b, h);
    check(sl.size);
  }

  // The embedding or head group, local -> one-rank: the unified model's token table and LM head
  // hold this rank's vocabulary rows; everything else is whole.
  void map_embed_or_head(bool embed) {
    const std::size_t h = H, base = embed ? 0 : gel.size + static_cast<std::size_t>(L) * glayer_size;
    auto whole = [&](std::size_t at, std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) {
        global.push_back(base + at + i);
        replicated.push_back(1);
      }
    };
    auto vocab_rows = [&](std::size_t at) {
      for (std::size_t i = 0; i < static_cast<std::size_t>(Vl) * h; ++i) {
        global.push_back(base + at + static_cast<std::size_t>(v0) * h + i);
        replicated.push_back(tp > 1 ? 0 : 1);
      }
    };
    if (embed) {
      if (!mm) vocab_rows(gel.tok);
      whole(gel.patch_w, gel.size - gel.patch_w);  // everything after the table, in the same order
    } else if (mm) {
      whole(0, ghd.size);
    } else {
      whole(ghd.norm_w, h);
      vocab_rows(ghd.lm_w);
      whole(ghd.out_w, ghd.size - ghd.out_w);
    }
  }

  // --- parameters ------------------------------------------------------------------------------
  int gi(const std::string& name) const {
    auto it = group_index.find(name);
    if (it == group_index.end())
      throw std::logic_error("JointModel: parameter group " + name + " is not held by this pipeline stage");
    return it->second;
  }
  const float* p(int g, std::size_t off, const std::string& part) const {
    if (off == none) return nullptr;
    if (!params[g]) throw std::logic_error("JointModel: op " + part + " needs group " + groups[g].name + " bound");
    return params[g] + off;
  }
  float* gr(int g, std::size_t off, const std::string& part) const {
    if (off == none) return nullptr;
    if (!grads[g]) throw std::logic_error("JointModel: op " + part + " needs the gradients of group " + groups[g].name);
    return grads[g] + off;
  }
  // A weight gradient for backward: none under DP-SGD, whose ".wgrad" ops add the clipped ones.
  float* wg(int g, std::size_t off, const std::string& part) const { return dp ? nullptr : gr(g, off, part); }
  // Offset of stream s's tensor inside a layer group.
  std::size_t so(int s, std::size_t off) const { return off == none ? none : s * sl.size + off; }

  // --- activations -------------------------------------------------------------------------------
  void allocate(MicroBatch& a) {
    auto sz = [](Buf& v, std::size_t n) { v.assign(n, 0.0f); };
    const std::size_t b = B, h = H;
    sz(a.z, b * C * S * S); sz(a.patches, b * Ti * pin); sz(a.patch_emb, b * img_n * h); sz(a.d_patch_emb, b * img_n * h);
    if (shard_tokens) sz(a.patches_local, b * img_n * pin);
    if (shard_tokens && mm) sz(a.ctx_local, b * txt_n * Dc);
    sz(a.t_scaled, b); sz(a.t_freq, b * fe); sz(a.t_h1, b * h); sz(a.t_a1, b * h); sz(a.t_emb, b * h);
    sz(a.dt_emb, b * h); sz(a.dt_a1, b * h); sz(a.dt_h1, b * h);
    if (mm) {
      sz(a.p_h1, b * h); sz(a.p_a1, b * h); sz(a.p_emb, b * h); sz(a.c, b * h); sz(a.silu_c, b * h);
      sz(a.dp_a1, b * h); sz(a.dp_h1, b * h); sz(a.dsilu_c, b * h); sz(a.dc, b * h);
      sz(a.fmod, b * 2 * h); sz(a.dfmod, b * 2 * h);
    }
    a.layer.resize(L);
    for (int s = 0; s < NS; ++s) {
      const std::size_t R = b * rows[s], G = b * grows[s];
      a.x[s].resize(L + 1);
      for (auto& x : a.x[s]) sz(x, R * h);
      for (int l = 0; l < L; ++l) {
        StreamActs& t = a.layer[l].s[s];
        if (mm) sz(t.mod, b * 6 * h);
        sz(t.ln1, R * h); sz(t.mean1, R); sz(t.rstd1, R); sz(t.qkv, G * 3 * w); sz(t.att, G * w);
        sz(t.proj, G * h); sz(t.x_mid, R * h); sz(t.ln2, R * h); sz(t.mean2, R); sz(t.rstd2, R);
        sz(t.fc1, G * F1l); sz(t.act, G * Fl); sz(t.fc2, G * h);
        if (sp) { sz(t.ln1_full, G * h); sz(t.ln2_full, G * h); sz(t.proj_red, R * h); sz(t.fc2_red, R * h); }
      }
      sz(a.dx[s], R * h); sz(a.d_ln[s], R * h); sz(a.dqkv[s], G * 3 * w); sz(a.datt[s], G * w);
      sz(a.dproj[s], R * h); sz(a.dfc1[s], G * F1l); sz(a.dact[s], G * Fl); sz(a.dfc2[s], R * h);
      if (sp) { sz(a.d_ln_full[s], G * h); sz(a.dproj_full[s], G * h); sz(a.dfc2_full[s], G * h); }
      if (mm) sz(a.dmod[s], b * 6 * h);
    }
    for (int l = 0; l < L; ++l) {
      LayerActs& la = a.layer[l];
      sz(la.probs, b * NHl * static_cast<std::size_t>(Tq) * T);
      if (mm) { sz(la.qkv_joint, b * Tq * 3 * w); sz(la.att_joint, b * Tq * w); }
      if (cp > 1) sz(la.kv_full, b * T * 2 * w);
    }
    if (mm) { sz(a.dqkv_joint, b * Tq * 3 * w); sz(a.datt_joint, b * Tq * w); }
    if (cp > 1) sz(a.dkv_full, b * T * 2 * w);
    const std::size_t Rf = b * rows[0];  // the rows the final norm sees
    sz(a.lnf, Rf * h); sz(a.meanf, Rf); sz(a.rstdf, Rf); sz(a.dlnf, Rf * h);
    sz(a.out_tok, b * img_n * pout); sz(a.dout_tok, b * img_n * pout); sz(a.d_img_in, b * img_n * h);
    if (!shard_tokens) { sz(a.v_hat, b * Cout * S * S); sz(a.dv_hat, b * Cout * S * S); }
    if (!mm) {
      sz(a.img_in, b * img_n * h); sz(a.txt_in, b * txt_n * h); sz(a.d_txt_in, b * txt_n * h);
      sz(a.logits, b * txt_n * static_cast<std::size_t>(Vl)); sz(a.dlogits, b * txt_n * static_cast<std::size_t>(Vl));
      if (tp > 1) { sz(a.ce_stats, b * txt_n * (2 * static_cast<std::size_t>(tp) + 1)); a.lse.assign(b * txt_n, 0.0); }
      a.targets.assign(b * txt_n, -1);
    }
    a.ready = true;
  }

  MicroBatch& micro(int mb, const std::string& op) {
    if (mb < 0 || mb >= micro_batches)
      throw std::logic_error("JointModel: op " + op + " on micro-batch " + std::to_string(mb) + " of " +
                             std::to_string(micro_batches));
    if (!mbs[mb].ready) throw std::logic_error("JointModel: op " + op + " before set_batch for micro-batch " + std::to_string(mb));
    return mbs[mb];
  }

  void ensure_dc(MicroBatch& a) {  // mmdit: d silu(c) summed over every adaLN GEMM -> dc, once
    if (a.dc_ready) return;
    zero(a.dc);
    k::silu_backward(a.dc.data(), a.c.data(), a.dsilu_c.data(), a.dc.size());
    a.dc_ready = true;
  }

  // The timestep MLP (and mmdit's pooled-text MLP): Linear, SiLU, Linear.
  void mlp_embedder_forward(Buf& h1, Buf& a1, Buf& out, const float* in, int d_in, std::size_t w1, std::size_t b1,
                            std::size_t w2, std::size_t b2, int g, const std::string& part) {
    k::matmul_forward(h1.data(), in, p(g, w1, part), p(g, b1, part), B, d_in, H);
    k::silu_forward(a1.data(), h1.data(), a1.size());
    k::matmul_forward(out.data(), a1.data(), p(g, w2, part), p(g, b2, part), B, H, H);
  }
  void mlp_embedder_backward(Buf& dh1, Buf& da1, const Buf& dout, const Buf& h1, const Buf& a1, const float* in, int d_in,
                             std::size_t w1, std::size_t b1, std::size_t w2, std::size_t b2, int g, const std::string& part) {
    zero(da1);
    k::matmul_backward(da1.data(), wg(g, w2, part), wg(g, b2, part), dout.data(), a1.data(), p(g, w2, part), B, H, H);
    zero(dh1);
    k::silu_backward(dh1.data(), h1.data(), da1.data(), dh1.size());
    if (!dp) k::matmul_backward(nullptr, gr(g, w1, part), gr(g, b1, part), dh1.data(), in, p(g, w1, part), B, d_in, H);
  }

  // This rank's image patches (B x img_n x pin) and mmdit context rows (B x txt_n x Dc), taken
  // out of the whole sample under context parallelism.
  const float* patch_rows(MicroBatch& a) const {
    if (!shard_tokens) return a.patches.data();
    gather_rows(a.patches_local.data(), a.patches.data(), B, Ti, img0, img_n, pin);
    return a.patches_local.data();
  }
  const float* context_rows(MicroBatch& a) const {
    if (!shard_tokens) return a.batch.context.data();
    gather_rows(a.ctx_local.data(), a.batch.context.data(), B, Tt, txt0, txt_n, Dc);
    return a.ctx_local.data();
  }

  // --- embedding ---------------------------------------------------------------------------------
  void embed_forward(const std::string& part, MicroBatch& a) {
    const int g = gi("embed");
    const std::size_t h = H;
    if (part == "embed.patch") {
      k::rectified_flow_input(a.z.data(), a.batch.x0.data(), a.batch.noise.data(), a.batch.t.data(), B, C * S * S);
      k::patchify_forward(a.patches.data(), a.z.data(), B, C, S, P);
      if (img_n > 0) {
        k::matmul_forward(a.patch_emb.data(), patch_rows(a), p(g, el.patch_w, part), p(g, el.patch_b, part), B * img_n, pin, H);
        for (int r = 0; r < B * img_n; ++r) {
          const float* pe = pos_img.data() + static_cast<std::size_t>(img0 + r % img_n) * h;
          float* x = a.patch_emb.data() + static_cast<std::size_t>(r) * h;
          for (int c = 0; c < H; ++c) x[c] += pe[c];
        }
      }
      if (mm) std::copy(a.patch_emb.begin(), a.patch_emb.end(), a.x[0][0].begin());
      else scatter_rows(a.x[0][0].data(), a.patch_emb.data(), B, Tq, img_at, img_n, H);
    } else if (part == "embed.timestep") {
      for (int b = 0; b < B; ++b) a.t_scaled[b] = a.batch.t[b] * timestep_scale;
      k::timestep_embedding_forward(a.t_freq.data(), a.t_scaled.data(), B, fe, max_period);
      mlp_embedder_forward(a.t_h1, a.t_a1, a.t_emb, a.t_freq.data(), fe, el.t_w1, el.t_b1, el.t_w2, el.t_b2, g, part);
      if (!mm)  // Transfusion: the timestep embedding is added to every patch of the image
        for (int b = 0; b < B; ++b)
          for (int i = 0; i < img_n; ++i) {
            float* x = a.x[0][0].data() + (static_cast<std::size_t>(b) * Tq + img_at + i) * h;
            const float* te = a.t_emb.data() + static_cast<std::size_t>(b) * h;
            for (int c = 0; c < H; ++c) x[c] += te[c];
          }
    } else if (part == "embed.context" && mm) {
      k::matmul_forward(a.x[1][0].data(), context_rows(a), p(g, el.ctx_w, part), p(g, el.ctx_b, part), B * txt_n, Dc, H);
    } else if (part == "embed.pooled" && mm) {
      mlp_embedder_forward(a.p_h1, a.p_a1, a.p_emb, a.batch.pooled.data(), Dp, el.p_w1, el.p_b1, el.p_w2, el.p_b2, g, part);
      for (std::size_t i = 0; i < a.c.size(); ++i) a.c[i] = a.t_emb[i] + a.p_emb[i];
      k::silu_forward(a.silu_c.data(), a.c.data(), a.c.size());
    } else if (part == "embed.tokens" && !mm) {
      // Under TP each rank looks up the tokens in its vocabulary rows (zero rows elsewhere) and
      // embed.tp_allreduce sums the text rows; rank 0's share carries the positions.
      const float* table = p(g, el.tok, part);
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < txt_n; ++j) {
          float* x = a.x[0][0].data() + (static_cast<std::size_t>(b) * Tq + j) * h;
          const int tok = a.batch.tokens[static_cast<std::size_t>(b) * Tt + txt0 + j] - v0;
          for (int c = 0; c < H; ++c) x[c] = tok >= 0 && tok < Vl ? table[static_cast<std::size_t>(tok) * h + c] : 0.0f;
          if (tpi == 0)
            for (int c = 0; c < H; ++c) x[c] += pos_txt[static_cast<std::size_t>(txt0 + j) * h + c];
        }
    } else {
      unknown(part);
    }
  }

  void embed_backward(const std::string& part, MicroBatch& a) {
    const int g = gi("embed");
    const std::size_t h = H;
    if (part == "embed.patch") {
      const float* d = a.dx[0].data();
      if (!mm) {
        gather_rows(a.d_patch_emb.data(), a.dx[0].data(), B, Tq, img_at, img_n, H);
        d = a.d_patch_emb.data();
      }
      if (dp) keep(a, part, d, static_cast<std::size_t>(B) * img_n * H);
      else if (img_n > 0)
        k::matmul_backward(nullptr, gr(g, el.patch_w, part), gr(g, el.patch_b, part), d, patch_rows(a),
                           p(g, el.patch_w, part), B * img_n, pin, H);
    } else if (part == "embed.timestep") {
      if (mm) {
        ensure_dc(a);
        a.dt_emb = a.dc;
      } else {
        zero(a.dt_emb);
        for (int b = 0; b < B; ++b)
          for (int i = 0; i < img_n; ++i) {
            const float* d = a.dx[0].data() + (static_cast<std::size_t>(b) * Tq + img_at + i) * h;
            float* dt = a.dt_emb.data() + static_cast<std::size_t>(b) * h;
            for (int c = 0; c < H; ++c) dt[c] += d[c];
          }
      }
      mlp_embedder_backward(a.dt_h1, a.dt_a1, a.dt_emb, a.t_h1, a.t_a1, a.t_freq.data(), fe, el.t_w1, el.t_b1, el.t_w2,
                            el.t_b2, g, part);
      if (dp) {
        keep(a, part + "#2", a.dt_emb.data(), a.dt_emb.size());
        keep(a, part + "#1", a.dt_h1.data(), a.dt_h1.size());
      }
    } else if (part == "embed.context" && mm) {
      if (dp) keep(a, part, a.dx[1].data(), a.dx[1].size());
      else
        k::matmul_backward(nullptr, gr(g, el.ctx_w, part), gr(g, el.ctx_b, part), a.dx[1].data(), context_rows(a),
                           p(g, el.ctx_w, part), B * txt_n, Dc, H);
    } else if (part == "embed.pooled" && mm) {
      ensure_dc(a);
      mlp_embedder_backward(a.dp_h1, a.dp_a1, a.dc, a.p_h1, a.p_a1, a.batch.pooled.data(), Dp, el.p_w1, el.p_b1, el.p_w2,
                            el.p_b2, g, part);
      if (dp) {
        keep(a, part + "#2", a.dc.data(), a.dc.size());
        keep(a, part + "#1", a.dp_h1.data(), a.dp_h1.size());
      }
    } else if (part == "embed.tokens" && !mm) {
      if (dp) {  // the rows of the table each sample touched: the clipped ".wgrad" adds them
        keep(a, part, a.dx[0].data(), a.dx[0].size());
        return;
      }
      float* dtable = gr(g, el.tok, part);
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < txt_n; ++j) {
          const int tok = a.batch.tokens[static_cast<std::size_t>(b) * Tt + txt0 + j] - v0;
          if (tok < 0 || tok >= Vl) continue;
          const float* d = a.dx[0].data() + (static_cast<std::size_t>(b) * Tq + j) * h;
          for (int c = 0; c < H; ++c) dtable[static_cast<std::size_t>(tok) * h + c] += d[c];
        }
    } else {
      unknown(part);
    }
  }

  // --- transformer block --------------------------------------------------------------------------
  // Row-parallel biases under TP: added to the reduced rows, their gradient the rows' column sums
  // (null pointers when the model has no biases).
  void add_bias(Buf& rows, const float* bias) const {
    if (!bias) return;
    for (std::size_t r = 0; r < rows.size() / H; ++r)
      for (int c = 0; c < H; ++c) rows[r * H + c] += bias[c];
  }
  void bias_grad(float* db, const Buf& drows) const {
    if (!db) return;
    for (std::size_t r = 0; r < drows.size() / H; ++r)
      for (int c = 0; c < H; ++c) db[c] += drows[r * H + c];
  }
  // "img.attn.qkv" -> stream 0 and "attn.qkv" (mmdit); the unified model's one stream has no prefix.
  int stream_of(std::string& part) const {
    if (!mm) return 0;
    if (part.rfind("img.", 0) == 0) { part.erase(0, 4); return 0; }
    if (part.rfind("txt.", 0) == 0) { part.erase(0, 4); return 1; }
    return -1;  // the joint attention
  }

  void layer_forward(std::string part, int l, MicroBatch& a) {
    const std::string op = part;
    const int s = stream_of(part), g = gi(std::string("L").append(std::to_string(l)));
    LayerActs& la = a.layer[l];
    const int h = H;
    if (part == "attn.core") {
      if (s > 0) unknown(op);
      // Queries: this rank's Tq tokens; keys and values: all T (gathered by attn.cp_kv under CP,
      // in rank order — any order for MMDiT's unmasked attention, the sequence's for the unified
      // model's mask).
      const float* q = joint_qkv(a, l);
      const float* kv = cp > 1 ? la.kv_full.data() : q + w;
      const int kv_ld = cp > 1 ? 2 * w : 3 * w;
      float* out = mm ? la.att_joint.data() : la.s[0].att.data();
      k::attention_forward(out, la.probs.data(), q, 3 * w, kv, kv + w, kv_ld, B, Tq, T, w, NHl, mm ? nullptr : mask.data());
      if (mm) {
        gather_rows(la.s[0].att.data(), la.att_joint.data(), B, Tq, 0, grows[0], w);
        gather_rows(la.s[1].att.data(), la.att_joint.data(), B, Tq, grows[0], grows[1], w);
      }
      return;
    }
    if (s < 0) unknown(op);
    StreamActs& t = la.s[s];
    const int R = B * rows[s], G = B * grows[s];
    const float* x = a.x[s][l].data();
    float* mod = t.mod.data();
    // Under sequence parallelism the TP-split GEMMs read the gathered norm outputs and their
    // row-parallel outputs are reduce-scattered back to this rank's shard.
    Buf& ln1 = sp ? t.ln1_full : t.ln1;
    Buf& ln2 = sp ? t.ln2_full : t.ln2;
    Buf& proj = sp ? t.proj_red : t.proj;
    Buf& fc2 = sp ? t.fc2_red : t.fc2;
    if (part == "adaln" && mm) {
      k::matmul_forward(mod, a.silu_c.data(), p(g, so(s, sl.ada_w), op), p(g, so(s, sl.ada_b), op), B, h, 6 * h);
    } else if (part == "norm1") {
      if (mm) k::layernorm_modulate_forward(t.ln1.data(), t.mean1.data(), t.rstd1.data(), x, mod, mod + h, B, rows[s], h, 6 * h, layernorm_eps);
      else k::rmsnorm_forward(t.ln1.data(), t.rstd1.data(), x, p(g, so(s, sl.n1_w), op), R, h, rmsnorm_eps);
    } else if (part == "attn.qkv") {
      k::matmul_forward(t.qkv.data(), ln1.data(), p(g, so(s, sl.qkv_w), op), p(g, so(s, sl.qkv_b), op), G, h, 3 * w);
    } else if (part == "attn.proj") {
      // Under TP a row-parallel GEMM leaves partial sums without bias; the residual op adds the bias
      // to the all-reduced rows, so it is added once.
      k::matmul_forward(t.proj.data(), t.att.data(), p(g, so(s, sl.proj_w), op), tp > 1 ? nullptr : p(g, so(s, sl.proj_b), op),
                        G, w, h);
    } else if (part == "attn.residual") {
      if (tp > 1) add_bias(proj, p(g, so(s, sl.proj_b), op));
      if (mm) k::gated_residual_forward(t.x_mid.data(), x, proj.data(), mod + 2 * h, B, rows[s], h, 6 * h);
      else for (std::size_t i = 0; i < t.x_mid.size(); ++i) t.x_mid[i] = x[i] + proj[i];
    } else if (part == "norm2") {
      if (mm) k::layernorm_modulate_forward(t.ln2.data(), t.mean2.data(), t.rstd2.data(), t.x_mid.data(), mod + 3 * h, mod + 4 * h, B, rows[s], h, 6 * h, layernorm_eps);
      else k::rmsnorm_forward(t.ln2.data(), t.rstd2.data(), t.x_mid.data(), p(g, so(s, sl.n2_w), op), R, h, rmsnorm_eps);
    } else if (part == "mlp.fc1") {
      k::matmul_forward(t.fc1.data(), ln2.data(), p(g, so(s, sl.fc1_w), op), p(g, so(s, sl.fc1_b), op), G, h, F1l);
    } else if (part == "mlp.act") {
      if (gated) k::swiglu_forward(t.act.data(), t.fc1.data(), G, Fl);
      else k::gelu_forward(t.act.data(), t.fc1.data(), t.act.size());
    } else if (part == "mlp.fc2") {
      k::matmul_forward(t.fc2.data(), t.act.data(), p(g, so(s, sl.fc2_w), op), tp > 1 ? nullptr : p(g, so(s, sl.fc2_b), op),
                        G, Fl, h);
    } else if (part == "mlp.residual") {
      if (tp > 1) add_bias(fc2, p(g, so(s, sl.fc2_b), op));
      float* out = a.x[s][l + 1].data();
      if (mm) k::gated_residual_forward(out, t.x_mid.data(), fc2.data(), mod + 5 * h, B, rows[s], h, 6 * h);
      else for (std::size_t i = 0; i < t.x_mid.size(); ++i) out[i] = t.x_mid[i] + fc2[i];
    } else {
      unknown(op);
    }
  }

  // The layer's local queries, keys and values (B x Tq x 3w): MMDiT's [image; text] streams
  // concatenated per sample, the unified model's one stream as it is.
  const float* joint_qkv(MicroBatch& a, int l) {
    LayerActs& la = a.layer[l];
    if (!mm) return la.s[0].qkv.data();
    scatter_rows(la.qkv_joint.data(), la.s[0].qkv.data(), B, Tq, 0, grows[0], 3 * w);
    scatter_rows(la.qkv_joint.data(), la.s[1].qkv.data(), B, Tq, grows[0], grows[1], 3 * w);
    return la.qkv_joint.data();
  }
  // MMDiT: the joint QKV gradient back into the streams (the unified model's is its stream's).
  void split_dqkv(MicroBatch& a) const {
    if (!mm) return;
    gather_rows(a.dqkv[0].data(), a.dqkv_joint.data(), B, Tq, 0, grows[0], 3 * w);
    gather_rows(a.dqkv[1].data(), a.dqkv_joint.data(), B, Tq, grows[0], grows[1], 3 * w);
  }

  // a.dx[s] holds the gradient of stream s's residual stream; residual ops pass it through and the
  // norms add their input gradient to it.
  void layer_backward(std::string part, int l, MicroBatch& a) {
    const std::string op = part;
    const int s = stream_of(part), g = gi(std::string("L").append(std::to_string(l)));
    LayerActs& la = a.layer[l];
    const int h = H;
    if (part == "attn.core") {
      if (s > 0) unknown(op);
      if (mm) {
        scatter_rows(a.datt_joint.data(), a.datt[0].data(), B, Tq, 0, grows[0], w);
        scatter_rows(a.datt_joint.data(), a.datt[1].data(), B, Tq, grows[0], grows[1], w);
      }
      Buf& dqkv = mm ? a.dqkv_joint : a.dqkv[0];
      zero(dqkv);
      const float* q = mm ? la.qkv_joint.data() : la.s[0].qkv.data();
      float* dq = dqkv.data();
      // Under CP the K and V gradients of every rank's keys go to dkv_full; attn.cp_kv
      // reduce-scatters them back to their owners, then splits the streams.
      if (cp > 1) zero(a.dkv_full);
      float* dkv = cp > 1 ? a.dkv_full.data() : dq + w;
      const float* kv = cp > 1 ? la.kv_full.data() : q + w;
      const int kv_ld = cp > 1 ? 2 * w : 3 * w;
      k::attention_backward(dq, dkv, dkv + w, mm ? a.datt_joint.data() : a.datt[0].data(), q, 3 * w, kv, kv + w, kv_ld,
                            la.probs.data(), B, Tq, T, w, NHl);
      if (cp == 1) split_dqkv(a);
      return;
    }
    if (s < 0) unknown(op);
    StreamActs& t = la.s[s];
    const int R = B * rows[s];
    float* dx = a.dx[s].data();
    const float* mod = t.mod.data();
    float* dmod = mm ? a.dmod[s].data() : nullptr;
    const int G = B * grows[s];
    // Sequence parallelism: the TP-split GEMMs' G-row forms (gathered output gradients, the
    // partial input gradients reduce-scattered by the sp ops).
    Buf& ln1 = sp ? t.ln1_full : t.ln1;
    Buf& ln2 = sp ? t.ln2_full : t.ln2;
    Buf& d_ln_gemm = sp ? a.d_ln_full[s] : a.d_ln[s];
    Buf& dfc2_gemm = sp ? a.dfc2_full[s] : a.dfc2[s];
    Buf& dproj_gemm = sp ? a.dproj_full[s] : a.dproj[s];
    const Buf& proj = sp ? t.proj_red : t.proj;
    const Buf& fc2 = sp ? t.fc2_red : t.fc2;
    // A residual's backward: its branch's output gradient (through MMDiT's adaLN gate at
    // `gate`, the residual stream's own for the unified model) and, under TP, the row-parallel
    // bias's gradient.
    auto residual_backward = [&](Buf& dbranch, const Buf& branch, int gate, std::size_t bias) {
      if (mm) {
        zero(dbranch);
        k::gated_residual_backward(nullptr, dbranch.data(), dmod + gate * h, dx, branch.data(), mod + gate * h, B, rows[s], h,
                                   6 * h);
      } else {
        std::copy(a.dx[s].begin(), a.dx[s].end(), dbranch.begin());
      }
      if (tp > 1 && !dp) bias_grad(gr(g, so(s, bias), op), dbranch);  // DP-SGD: the clipped ".wgrad" adds it
    };
    if (part == "mlp.residual") {
      if (mm) zero(a.dmod[s]);  // the layer's backward starts here
      residual_backward(a.dfc2[s], fc2, 5, sl.fc2_b);
    } else if (part == "mlp.fc2") {
      zero(a.dact[s]);
      k::matmul_backward(a.dact[s].data(), wg(g, so(s, sl.fc2_w), op), tp > 1 ? nullptr : wg(g, so(s, sl.fc2_b), op),
                         dfc2_gemm.data(), t.act.data(), p(g, so(s, sl.fc2_w), op), G, Fl, h);
      if (dp) keep(a, layer_key(l, op), dfc2_gemm.data(), dfc2_gemm.size());
    } else if (part == "mlp.act") {
      zero(a.dfc1[s]);
      if (gated) k::swiglu_backward(a.dfc1[s].data(), t.fc1.data(), a.dact[s].data(), G, Fl);
      else k::gelu_backward(a.dfc1[s].data(), t.fc1.data(), a.dact[s].data(), a.dfc1[s].size());
    } else if (part == "mlp.fc1") {
      zero(d_ln_gemm);
      k::matmul_backward(d_ln_gemm.data(), wg(g, so(s, sl.fc1_w), op), wg(g, so(s, sl.fc1_b), op), a.dfc1[s].data(),
                         ln2.data(), p(g, so(s, sl.fc1_w), op), G, h, F1l);
      if (dp) keep(a, layer_key(l, op), a.dfc1[s].data(), a.dfc1[s].size());
    } else if (part == "norm2") {
      if (mm) k::layernorm_modulate_backward(dx, dmod + 3 * h, dmod + 4 * h, a.d_ln[s].data(), t.x_mid.data(), t.mean2.data(), t.rstd2.data(), mod + 4 * h, B, rows[s], h, 6 * h);
      else {
        k::rmsnorm_backward(dx, wg(g, so(s, sl.n2_w), op), a.d_ln[s].data(), t.x_mid.data(), t.rstd2.data(), p(g, so(s, sl.n2_w), op), R, h);
        if (dp) gain_norms(a, layer_key(l, op), a.d_ln[s].data(), t.x_mid.data(), t.rstd2.data(), rows[s]);
      }
    } else if (part == "attn.residual") {
      residual_backward(a.dproj[s], proj, 2, sl.proj_b);
    } else if (part == "attn.proj") {
      zero(a.datt[s]);
      k::matmul_backward(a.datt[s].data(), wg(g, so(s, sl.proj_w), op), tp > 1 ? nullptr : wg(g, so(s, sl.proj_b), op),
                         dproj_gemm.data(), t.att.data(), p(g, so(s, sl.proj_w), op), G, w, h);
      if (dp) keep(a, layer_key(l, op), dproj_gemm.data(), dproj_gemm.size());
    } else if (part == "attn.qkv") {
      zero(d_ln_gemm);
      k::matmul_backward(d_ln_gemm.data(), wg(g, so(s, sl.qkv_w), op), wg(g, so(s, sl.qkv_b), op), a.dqkv[s].data(),
                         ln1.data(), p(g, so(s, sl.qkv_w), op), G, h, 3 * w);
      if (dp) keep(a, layer_key(l, op), a.dqkv[s].data(), a.dqkv[s].size());
    } else if (part == "norm1") {
      const float* x = a.x[s][l].data();
      if (mm) k::layernorm_modulate_backward(dx, dmod, dmod + h, a.d_ln[s].data(), x, t.mean1.data(), t.rstd1.data(), mod + h, B, rows[s], h, 6 * h);
      else {
        k::rmsnorm_backward(dx, wg(g, so(s, sl.n1_w), op), a.d_ln[s].data(), x, t.rstd1.data(), p(g, so(s, sl.n1_w), op), R, h);
        if (dp) gain_norms(a, layer_key(l, op), a.d_ln[s].data(), x, t.rstd1.data(), rows[s]);
      }
    } else if (part == "adaln" && mm) {
      k::matmul_backward(a.dsilu_c.data(), wg(g, so(s, sl.ada_w), op), wg(g, so(s, sl.ada_b), op), dmod,
                         a.silu_c.data(), p(g, so(s, sl.ada_w), op), B, h, 6 * h);
      if (dp) keep(a, layer_key(l, op), dmod, static_cast<std::size_t>(B) * 6 * h);
    } else {
      unknown(op);
    }
  }

  // --- final layer and loss -------------------------------------------------------------------------
  void head_forward(const std::string& part, MicroBatch& a) {
    const int g = gi("head");
    const int h = H;
    const float* x = a.x[0][L].data();
    if (part == "head.adaln" && mm) {
      k::matmul_forward(a.fmod.data(), a.silu_c.data(), p(g, hd.ada_w, part), p(g, hd.ada_b, part), B, h, 2 * h);
    } else if (part == "head.norm") {
      if (mm) k::layernorm_modulate_forward(a.lnf.data(), a.meanf.data(), a.rstdf.data(), x, a.fmod.data(), a.fmod.data() + h, B, rows[0], h, 2 * h, layernorm_eps);
      else k::rmsnorm_forward(a.lnf.data(), a.rstdf.data(), x, p(g, hd.norm_w, part), B * Tq, h, rmsnorm_eps);
    } else if (part == "head.image") {
      const float* in = a.lnf.data();
      if (!mm) {
        gather_rows(a.img_in.data(), a.lnf.data(), B, Tq, img_at, img_n, h);
        in = a.img_in.data();
      }
      if (img_n > 0) k::matmul_forward(a.out_tok.data(), in, p(g, hd.out_w, part), p(g, hd.out_b, part), B * img_n, h, pout);
      if (!shard_tokens) k::unpatchify_forward(a.v_hat.data(), a.out_tok.data(), B, Cout, S, P);
    } else if (part == "head.lm" && !mm) {
      gather_rows(a.txt_in.data(), a.lnf.data(), B, Tq, 0, txt_n, h);
      if (txt_n > 0) k::matmul_forward(a.logits.data(), a.txt_in.data(), p(g, hd.lm_w, part), nullptr, B * txt_n, h, Vl);
    } else if (part == "loss") {
      a.image_loss = shard_tokens ? image_shard_loss(a, nullptr, 0)
                                  : k::rectified_flow_loss_forward(a.v_hat.data(), a.batch.x0.data(), a.batch.noise.data(),
                                                                   B, Cout, C, S * S);
      a.text_loss = 0;
      if (!mm && tp > 1) {  // this shard's softmax statistics; loss.tp_allreduce completes the loss
        vocab_shard_statistics(a);
        return;
      }
      if (!mm && txt_n > 0) {  // over the whole micro-batch's predictions, so CP shards add up
        long count = 0;
        double sum = k::cross_entropy_forward(a.logits.data(), a.targets.data(), B * txt_n, V, &count);
        a.text_loss = sum / text_predictions();
      }
      a.loss = a.text_loss + image_weight * a.image_loss;
      a.loss_done = true;
    } else {
      unknown(part);
    }
  }

  void head_backward(const std::string& part, MicroBatch& a) {
    const int g = gi("head");
    const int h = H;
    if (part == "loss") {
      if (dp) {  // the micro-batch's backward starts: fresh norms, and nothing clipped yet
        a.sq_norm.assign(B, 0.0);
        a.clip.assign(B, 1.0f);
        a.clipped = false;
        a.gains_added.assign(L + 1, 0);
      }
      // Seeds the micro-batch's backward, scaled by 1/micro_batches so that a step's gradients are
      // those of the mean loss over its micro-batches.
      if (shard_tokens) {
        zero(a.dout_tok);
        image_shard_loss(a, a.dout_tok.data(), static_cast<float>(image_weight / micro_batches));
      } else {
        zero(a.dv_hat);
        k::rectified_flow_loss_backward(a.dv_hat.data(), a.v_hat.data(), a.batch.x0.data(), a.batch.noise.data(),
                                        static_cast<float>(image_weight / micro_batches), B, Cout, C, S * S);
      }
      if (mm) {
        zero(a.dsilu_c);
        a.dc_ready = false;
        zero(a.dx[1]);  // the text stream's last output feeds nothing
      } else {
        zero(a.dlogits);
        const float scale = static_cast<float>(1.0 / (text_predictions() * micro_batches));
        if (tp > 1) {  // softmax over the whole vocabulary from the reduced log-sum-exp, on this rank's rows
          for (int r = 0; r < B * txt_n; ++r) {
            if (a.targets[r] < 0) continue;
            const float* l = a.logits.data() + static_cast<std::size_t>(r) * Vl;
            float* d = a.dlogits.data() + static_cast<std::size_t>(r) * Vl;
            for (int j = 0; j < Vl; ++j) d[j] = scale * static_cast<float>(std::exp(static_cast<double>(l[j]) - a.lse[r]));
            const int t = a.targets[r] - v0;
            if (t >= 0 && t < Vl) d[t] -= scale;
          }
        } else if (txt_n > 0) {
          k::cross_entropy_backward(a.dlogits.data(), a.logits.data(), a.targets.data(), scale, B * txt_n, V);
        }
      }
    } else if (part == "head.lm" && !mm) {
      zero(a.d_txt_in);
      // Under TP a partial sum over the vocabulary shards: head.lm.tp_allreduce completes it.
      if (txt_n > 0)
        k::matmul_backward(a.d_txt_in.data(), wg(g, hd.lm_w, part), nullptr, a.dlogits.data(), a.txt_in.data(),
                           p(g, hd.lm_w, part), B * txt_n, h, Vl);
      if (dp) keep(a, part, a.dlogits.data(), a.dlogits.size());
    } else if (part == "head.image") {
      if (!shard_tokens) {  // under CP the loss wrote dout_tok directly
        zero(a.dout_tok);
        k::unpatchify_backward(a.dout_tok.data(), a.dv_hat.data(), B, Cout, S, P);
      }
      zero(a.d_img_in);
      if (img_n > 0)
        k::matmul_backward(a.d_img_in.data(), wg(g, hd.out_w, part), wg(g, hd.out_b, part), a.dout_tok.data(),
                           mm ? a.lnf.data() : a.img_in.data(), p(g, hd.out_w, part), B * img_n, h, pout);
      if (dp) keep(a, part, a.dout_tok.data(), a.dout_tok.size());
    } else if (part == "head.norm") {
      zero(a.dx[0]);
      const float* x = a.x[0][L].data();
      if (mm) {
        zero(a.dfmod);
        k::layernorm_modulate_backward(a.dx[0].data(), a.dfmod.data(), a.dfmod.data() + h, a.d_img_in.data(), x,
                                       a.meanf.data(), a.rstdf.data(), a.fmod.data() + h, B, rows[0], h, 2 * h);
      } else {
        scatter_rows(a.dlnf.data(), a.d_txt_in.data(), B, Tq, 0, txt_n, h);
        scatter_rows(a.dlnf.data(), a.d_img_in.data(), B, Tq, img_at, img_n, h);
        k::rmsnorm_backward(a.dx[0].data(), wg(g, hd.norm_w, part), a.dlnf.data(), x, a.rstdf.data(),
                            p(g, hd.norm_w, part), B * Tq, h);
        if (dp) gain_norms(a, part, a.dlnf.data(), x, a.rstdf.data(), Tq);
      }
    } else if (part == "head.adaln" && mm) {
      k::matmul_backward(a.dsilu_c.data(), wg(g, hd.ada_w, part), wg(g, hd.ada_b, part), a.dfmod.data(),
                         a.silu_c.data(), p(g, hd.ada_w, part), B, h, 2 * h);
      if (dp) keep(a, part, a.dfmod.data(), a.dfmod.size());
    } else {
      unknown(part);
    }
  }

  // Next-token predictions in a micro-batch (each sample's text but its last token): the
  // cross-entropy's denominator, the same on every CP shard so that the shards' parts add up.
  double text_predictions() const { return static_cast<double>(B) * std::max(Tt - 1, 1); }

  // The rectified-flow loss of this rank's image tokens (img0 .. img0 + img_n): its part of the
  // micro-batch's, so CP and SP shards add up; with dout, adds dloss x its gradient.
  double image_shard_loss(MicroBatch& a, float* dout, float dloss) const {
    return k::rectified_flow_token_loss(a.out_tok.data(), a.batch.x0.data(), a.batch.noise.data(), B, img0, img_n, P, C,
                                        Cout, S, dout, dloss);
  }

  // --- vocabulary-parallel cross-entropy (unified under TP) -----------------------------------
  // One all-reduce (sum) completes the loss: rank i fills its slots of each row with its shard's
  // max and sum of exp(logit - max), the rank holding the target adds the target's logit, and
  // every rank then has the row's log-sum-exp over the whole vocabulary.
  void vocab_shard_statistics(MicroBatch& a) {
    const std::size_t stride = 2 * static_cast<std::size_t>(tp) + 1;
    zero(a.ce_stats);
    for (int r = 0; r < B * txt_n; ++r) {
      if (a.targets[r] < 0) continue;
      const float* l = a.logits.data() + static_cast<std::size_t>(r) * Vl;
      float mx = l[0];
      for (int j = 1; j < Vl; ++j) mx = std::max(mx, l[j]);
      double sum = 0;
      for (int j = 0; j < Vl; ++j) sum += std::exp(static_cast<double>(l[j]) - mx);
      float* st = a.ce_stats.data() + r * stride;
      st[2 * tpi] = mx;
      st[2 * tpi + 1] = static_cast<float>(sum);
      const int t = a.targets[r] - v0;
      if (t >= 0 && t < Vl) st[2 * tp] = l[t];
    }
  }
  void finish_vocab_parallel_loss(MicroBatch& a) {
    const std::size_t stride = 2 * static_cast<std::size_t>(tp) + 1;
    double total = 0;
    for (int r = 0; r < B * txt_n; ++r) {
      if (a.targets[r] < 0) continue;
      const float* st = a.ce_stats.data() + r * stride;
      double mx = st[0];
      for (int i = 1; i < tp; ++i) mx = std::max(mx, static_cast<double>(st[2 * i]));
      double sum = 0;
      for (int i = 0; i < tp; ++i) sum += static_cast<double>(st[2 * i + 1]) * std::exp(st[2 * i] - mx);
      a.lse[r] = mx + std::log(sum);
      total += a.lse[r] - st[2 * tp];
    }
    a.text_loss = total / text_predictions();
    a.loss = a.text_loss + image_weight * a.image_loss;
    a.loss_done = true;
  }

  // --- pipeline transfers ------------------------------------------------------------------------
  // Forward: every stream's residual stream leaving this model chunk (and mmdit's conditioning c);
  // backward: their gradients (and the gradient of silu(c) summed over the later stages).
  int model_chunk(const Op& op) const { return std::max(0, op.chunk) * pp + stage; }
  std::size_t transfer_size() const {
    std::size_t n = 0;
    for (int s = 0; s < NS; ++s) n += static_cast<std::size_t>(B) * rows[s] * H;
    return n + (mm ? static_cast<std::size_t>(B) * H : 0);
  }
  TensorComm comm_begin(const Op& op) {
    const std::string& part = op.part;
    const bool fwd = op.phase != Phase::backward;
    TensorComm io;
    if (part == "pp.fwd.send" || part == "pp.bwd.send") {
      MicroBatch& a = micro(op.microbatch, op.name);
      Buf& buf = staging[&op];
      buf.clear();
      const int next = chunk_first[model_chunk(op) + 1];
      for (int s = 0; s < NS; ++s) {
        const Buf& x = fwd ? a.x[s][next] : a.dx[s];
        buf.insert(buf.end(), x.begin(), x.end());
      }
      if (mm) buf.insert(buf.end(), (fwd ? a.c : a.dsilu_c).begin(), (fwd ? a.c : a.dsilu_c).end());
      io.send = buf.data();
      io.send_count = buf.size();
      return io;
    }
    if (part == "pp.fwd.recv" || part == "pp.bwd.recv") {
      Buf& buf = staging[&op];
      buf.assign(transfer_size(), 0.0f);
      io.recv = buf.data();
      io.recv_count = buf.size();
      return io;
    }
    if (part == "embed.tp_allreduce" && !mm) {  // the text rows of the embedding, summed over the shards
      MicroBatch& a = micro(op.microbatch, op.name);
      Buf& buf = staging[&op];
      buf.assign(static_cast<std::size_t>(B) * txt_n * H, 0.0f);
      gather_rows(buf.data(), a.x[0][0].data(), B, Tq, 0, txt_n, H);
      io.send = io.recv = buf.data();
      io.send_count = io.recv_count = buf.size();
      return io;
    }
    if (part.size() > 12 && part.compare(part.size() - 12, 12, ".norm_gather") == 0) {
      // DP-SGD under CP: this rank's rows of the op's A and G (or its partial G), gathered.
      require_dp(op.name);
      MicroBatch& a = micro(op.microbatch, op.name);
      const std::string base = part.substr(0, part.size() - 12);
      // The token table's rows: each sample's embedding gradient rows (B x Tq x H), gathered whole.
      const std::vector<NormLinear> lin = base == "embed.tokens"
                                              ? std::vector<NormLinear>{{nullptr, kept(a, base), 1, 0, Tq * H, false, false}}
                                              : norm_linears(base, op.layer, a);
      return stage_cp_norm_gather(staging[&op], lin, B, cp);
    }
    if (part == "privacy.norms.tp_allreduce" || part == "privacy.norms.cp_allreduce" ||
        part == "privacy.norms.pp_allreduce") {
      // DP-SGD: the per-sample squared norms' partial sums over the TP ranks, the CP ranks or the
      // stages; over CP also the RMSNorm gains' per-sample gradients (unified), whose norms follow.
      require_dp(op.name);
      MicroBatch& a = micro(op.microbatch, op.name);
      Buf& buf = staging[&op];
      buf.assign(a.sq_norm.begin(), a.sq_norm.end());  // the communicator sums floats
      if (part == "privacy.norms.cp_allreduce")
        for (const auto& [key, g] : a.gains) buf.insert(buf.end(), g.begin(), g.end());
      io.send = io.recv = buf.data();
      io.send_count = io.recv_count = buf.size();
      return io;
    }
    if ((part == "loss.tp_allreduce" || part == "head.lm.tp_allreduce") && !mm) {
      MicroBatch& a = micro(op.microbatch, op.name);
      Buf& buf = part[0] == 'l' ? a.ce_stats : a.d_txt_in;
      io.send = io.recv = buf.data();
      io.send_count = io.recv_count = buf.size();
      return io;
    }
    if (part == "attn.cp_kv" && op.layer >= 0 && op.layer < L && held[op.layer]) {
      MicroBatch& a = micro(op.microbatch, op.name);
      const std::size_t local = static_cast<std::size_t>(B) * Tq * 2 * w;
      Buf& buf = staging[&op];
      if (fwd) {  // this rank's K and V, gathered from every CP rank
        const float* q = joint_qkv(a, op.layer);
        buf.assign(local + local * cp, 0.0f);
        for (std::size_t r = 0; r < static_cast<std::size_t>(B) * Tq; ++r)
          std::copy(q + r * 3 * w + w, q + r * 3 * w + 3 * w, buf.data() + r * 2 * w);
        io.send = buf.data();
        io.send_count = local;
        io.recv = buf.data() + local;
        io.recv_count = local * cp;
      } else {  // the K and V gradients of every rank's keys, reduce-scattered to their owners
        buf.assign(local * cp + local, 0.0f);
        to_rank_major(buf.data(), a.dkv_full.data(), B, cp, Tq, 2 * w);
        io.send = buf.data();
        io.send_count = local * cp;
        io.recv = buf.data() + local * cp;
        io.recv_count = local;
      }
      return io;
    }
    if (op.layer >= 0 && op.layer < L && held[op.layer]) {
      // Tensor parallelism, in place: forward the row-parallel GEMM's partial sums, backward the
      // column-parallel GEMM's partial input gradient.
      std::string rest = part;
      const int s = stream_of(rest);
      const std::size_t R = static_cast<std::size_t>(B) * (s >= 0 ? rows[s] : 0) * H, G = R * tp;
      if (s >= 0 && sp && (rest == "attn.sp_allgather" || rest == "mlp.sp_allgather")) {
        MicroBatch& a = micro(op.microbatch, op.name);
        StreamActs& t = a.layer[op.layer].s[s];
        Buf& buf = staging[&op];
        if (fwd) {  // the norm's shard, gathered for the column-parallel GEMM
          buf.assign(G, 0.0f);
          io.send = (rest[0] == 'a' ? t.ln1 : t.ln2).data();
          io.send_count = R;
          io.recv = buf.data();
          io.recv_count = G;
        } else {  // its gradient: the GEMM's partial input gradient reduce-scattered to the shards
          buf.assign(G, 0.0f);
          to_rank_major(buf.data(), a.d_ln_full[s].data(), B, tp, rows[s], H);
          io.send = buf.data();
          io.send_count = G;
          io.recv = a.d_ln[s].data();
          io.recv_count = R;
        }
        return io;
      }
      if (s >= 0 && sp && (rest == "attn.sp_reducescatter" || rest == "mlp.sp_reducescatter")) {
        MicroBatch& a = micro(op.microbatch, op.name);
        StreamActs& t = a.layer[op.layer].s[s];
        Buf& buf = staging[&op];
        buf.assign(G, 0.0f);
        if (fwd) {  // the row-parallel GEMM's partial sums, reduced onto each rank's shard
          to_rank_major(buf.data(), (rest[0] == 'a' ? t.proj : t.fc2).data(), B, tp, rows[s], H);
          io.send = buf.data();
          io.send_count = G;
          io.recv = (rest[0] == 'a' ? t.proj_red : t.fc2_red).data();
          io.recv_count = R;
        } else {  // its gradient: the shards' output gradients gathered
          io.send = (rest[0] == 'a' ? a.dproj[s] : a.dfc2[s]).data();
          io.send_count = R;
          io.recv = buf.data();
          io.recv_count = G;
        }
        return io;
      }
      if (s >= 0 && (rest == "attn.tp_allreduce" || rest == "mlp.tp_allreduce")) {
        MicroBatch& a = micro(op.microbatch, op.name);
        StreamActs& t = a.layer[op.layer].s[s];
        Buf& buf = fwd ? (rest[0] == 'a' ? t.proj : t.fc2) : a.d_ln[s];
        io.send = io.recv = buf.data();
        io.send_count = io.recv_count = buf.size();
        return io;
      }
    }
    throw std::logic_error("JointModel: op " + op.name + " is communication this family does not run (sequence parallelism)");
  }
  void comm_end(const Op& op) {
    const std::string& part = op.part;
    if (part == "loss.tp_allreduce" && !mm) {
      finish_vocab_parallel_loss(micro(op.microbatch, op.name));
      return;
    }
    auto it = staging.find(&op);
    if (it == staging.end()) return;  // in place (tensor-parallel all-reduces)
    if (part == "attn.cp_kv") {
      MicroBatch& a = micro(op.microbatch, op.name);
      const std::size_t local = static_cast<std::size_t>(B) * Tq * 2 * w;
      if (op.phase != Phase::backward) {
        from_rank_major(a.layer[op.layer].kv_full.data(), it->second.data() + local, B, cp, Tq, 2 * w);
      } else {  // the reduced K and V gradients into the joint QKV gradient, then the streams
        Buf& dqkv = mm ? a.dqkv_joint : a.dqkv[0];
        const float* red = it->second.data() + local * cp;
        for (std::size_t r = 0; r < static_cast<std::size_t>(B) * Tq; ++r)
          for (int c = 0; c < 2 * w; ++c) dqkv[r * 3 * w + w + c] += red[r * 2 * w + c];
        split_dqkv(a);
      }
      staging.erase(it);
      return;
    }
    if (part.find(".sp_") != std::string::npos) {  // sequence parallelism: unpack the gathered rows
      std::string rest = part;
      const int s = stream_of(rest);
      const bool fwd = op.phase != Phase::backward;
      MicroBatch& a = micro(op.microbatch, op.name);
      if (s >= 0 && fwd && (rest == "attn.sp_allgather" || rest == "mlp.sp_allgather")) {
        StreamActs& t = a.layer[op.layer].s[s];
        from_rank_major((rest[0] == 'a' ? t.ln1_full : t.ln2_full).data(), it->second.data(), B, tp, rows[s], H);
      } else if (s >= 0 && !fwd && (rest == "attn.sp_reducescatter" || rest == "mlp.sp_reducescatter")) {
        from_rank_major((rest[0] == 'a' ? a.dproj_full[s] : a.dfc2_full[s]).data(), it->second.data(), B, tp, rows[s], H);
      }
      staging.erase(it);
      return;
    }
    if (part.size() > 12 && part.compare(part.size() - 12, 12, ".norm_gather") == 0) {
      MicroBatch& a = micro(op.microbatch, op.name);
      take_cp_norm_gather(it->second, cp, a.cp_gathered[gather_key(op.layer, part.substr(0, part.size() - 12))]);
      staging.erase(it);
      return;
    }
    if (part == "privacy.norms.tp_allreduce" || part == "privacy.norms.cp_allreduce" ||
        part == "privacy.norms.pp_allreduce") {
      MicroBatch& a = micro(op.microbatch, op.name);
      std::copy(it->second.begin(), it->second.begin() + B, a.sq_norm.begin());
      if (part == "privacy.norms.cp_allreduce") {  // the summed gains: every rank adds their norms alike
        const float* g = it->second.data() + B;
        for (std::size_t k = 0; k < a.gains.size(); ++k)
          for (int b = 0; b < B; ++b) {
            double sq = 0;
            for (int c = 0; c < H; ++c, ++g) sq += static_cast<double>(*g) * *g;
            a.sq_norm[b] += sq;
          }
      }
      staging.erase(it);
      return;
    }
    if (part == "embed.tp_allreduce") {
      scatter_rows(micro(op.microbatch, op.name).x[0][0].data(), it->second.data(), B, Tq, 0, txt_n, H);
      staging.erase(it);
      return;
    }
    if (part == "pp.fwd.recv" || part == "pp.bwd.recv") {
      MicroBatch& a = micro(op.microbatch, op.name);
      const bool fwd = op.phase != Phase::backward;
      const float* src = it->second.data();
      const int first = chunk_first[model_chunk(op)];
      for (int s = 0; s < NS; ++s) {
        Buf& x = fwd ? a.x[s][first] : a.dx[s];
        std::copy(src, src + x.size(), x.begin());
        src += x.size();
      }
      if (mm && fwd) {
        std::copy(src, src + a.c.size(), a.c.begin());
        k::silu_forward(a.silu_c.data(), a.c.data(), a.c.size());
      } else if (mm) {
        std::copy(src, src + a.dsilu_c.size(), a.dsilu_c.begin());
        a.dc_ready = false;
      }
    }
    staging.erase(it);
  }

  // --- DP-SGD (book-keeping, as exec/model/dit_model.cpp) --------------------------------------
  // Backward keeps every linear's output gradient G (by op) and leaves weight gradients alone;
  // ".sample_norm" adds each sample's squared weight-gradient norm from (A, G); "privacy.clip" turns
  // the norms into clip factors; ".wgrad" adds sum_b c_b A_b^T G_b, the sum of clipped per-sample
  // gradients. A sample is one example: all its image and text tokens. The unified model's
  // RMSNorm gains have no ops of their own in the Program: their norm backward adds the per-sample
  // squared norms (so before the clip) and keeps each sample's gain gradient; the layer's (or the
  // head's) first ".wgrad" adds their clipped sum.
  // Under TP (without sequence parallelism) each rank's squared norms are partial sums, which
  // privacy.norms.tp_allreduce completes before the clip: the split parts (column-parallel weights
  // and biases, row-parallel weights, the unified model's vocabulary rows of the token table and
  // LM head) on every rank; the parameters every TP rank holds whole (embedders, adaLN, RMSNorm
  // gains, row-parallel biases, the image head), whose per-sample gradients every TP rank forms
  // alike, on TP rank 0 only. Every rank still adds the clipped gradients of all it holds.
  static std::string layer_key(int l, const std::string& part) { return std::string("L").append(std::to_string(l)).append(".").append(part); }
  void keep(MicroBatch& a, const std::string& key, const float* g, std::size_t n) {
    Buf& k = a.kept[key];
    k.assign(g, g + n);
  }
  const float* kept(MicroBatch& a, const std::string& key) {
    auto it = a.kept.find(key);
    if (it == a.kept.end()) throw std::logic_error("JointModel: no output gradient kept for " + key + " (its backward has not run)");
    return it->second.data();
  }
  void gain_norms(MicroBatch& a, const std::string& key, const float* dy, const float* x, const float* rstd, int rows_per_sample) {
    Buf& gb = a.gains[key];
    gb.assign(static_cast<std::size_t>(B) * H, 0.0f);
    for (int b = 0; b < B; ++b) {
      float* g = gb.data() + static_cast<std::size_t>(b) * H;
      for (int t = 0; t < rows_per_sample; ++t) {
        const std::size_t r = static_cast<std::size_t>(b) * rows_per_sample + t;
        const float sr = rstd[r];
        for (int c = 0; c < H; ++c) g[c] += dy[r * H + c] * x[r * H + c] * sr;
      }
      // Replicated: counted on TP rank 0 only. Under CP a sample's gain gradient is a sum over the
      // CP ranks' tokens: its norm waits for privacy.norms.cp_allreduce, which sums the gains.
      if (tpi != 0 || cp > 1) continue;
      double sq = 0;
      for (int c = 0; c < H; ++c) sq += static_cast<double>(g[c]) * g[c];
      a.sq_norm[b] += sq;
    }
  }
  // The clipped per-sample gain gradients into `dgain` (once per micro-batch and group).
  void add_gains(MicroBatch& a, const std::string& key, float* dgain) {
    auto it = a.gains.find(key);
    if (it == a.gains.end()) throw std::logic_error("JointModel: no per-sample gain gradients kept for " + key);
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < H; ++c) dgain[c] += a.clip[b] * it->second[static_cast<std::size_t>(b) * H + c];
  }
  void require_dp(const std::string& part) const {
    if (!dp) throw std::logic_error("JointModel: op " + part + " is a DP-SGD op, but privacy is not enabled on this model");
  }
  // How TP holds a linear: whole on every rank; column-parallel (weight rows and bias split: the
  // LM head's vocabulary rows too); row-parallel (weight columns split, bias whole).
  enum class TpSplit { none, column, row };
  struct Linear {
    const float* inp;
    std::string key;        // of the kept output gradient
    int rows, d_in, d_out;  // rows per sample, this rank's widths
    std::size_t w, b;       // offsets in the group (b: none without a bias)
    int group;
    TpSplit split = TpSplit::none;
  };
  // The linears an op holds (an MLP embedder holds two), `part` as the op names it ("img.attn.qkv").
  std::vector<Linear> linears(const std::string& part, int l, MicroBatch& a) {
    const int h = H;
    if (l >= 0) {
      std::string local = part;
      const int s = stream_of(local), g = gi(std::string("L").append(std::to_string(l)));
      if (s < 0) unknown(part);
      StreamActs& t = a.layer[l].s[s];
      const std::string key = layer_key(l, part);
      const int r = grows[s];
      const auto column = TpSplit::column, row = TpSplit::row;
      if (local == "adaln" && mm) return {{a.silu_c.data(), key, 1, h, 6 * h, so(s, sl.ada_w), so(s, sl.ada_b), g}};
      if (local == "attn.qkv") return {{t.ln1.data(), key, r, h, 3 * w, so(s, sl.qkv_w), so(s, sl.qkv_b), g, column}};
      if (local == "attn.proj") return {{t.att.data(), key, r, w, h, so(s, sl.proj_w), so(s, sl.proj_b), g, row}};
      if (local == "mlp.fc1") return {{t.ln2.data(), key, r, h, F1l, so(s, sl.fc1_w), so(s, sl.fc1_b), g, column}};
      if (local == "mlp.fc2") return {{t.act.data(), key, r, Fl, h, so(s, sl.fc2_w), so(s, sl.fc2_b), g, row}};
      unknown(part + " (no weights)");
    }
    if (part == "embed.patch") return {{patch_rows(a), part, img_n, pin, h, el.patch_w, el.patch_b, gi("embed")}};
    if (part == "embed.timestep")
      return {{a.t_a1.data(), part + "#2", 1, h, h, el.t_w2, el.t_b2, gi("embed")},
              {a.t_freq.data(), part + "#1", 1, fe, h, el.t_w1, el.t_b1, gi("embed")}};
    if (part == "embed.pooled" && mm)
      return {{a.p_a1.data(), part + "#2", 1, h, h, el.p_w2, el.p_b2, gi("embed")},
              {a.batch.pooled.data(), part + "#1", 1, Dp, h, el.p_w1, el.p_b1, gi("embed")}};
    if (part == "embed.context" && mm) return {{context_rows(a), part, txt_n, Dc, h, el.ctx_w, el.ctx_b, gi("embed")}};
    if (part == "head.adaln" && mm) return {{a.silu_c.data(), part, 1, h, 2 * h, hd.ada_w, hd.ada_b, gi("head")}};
    if (part == "head.image") return {{mm ? a.lnf.data() : a.img_in.data(), part, img_n, h, pout, hd.out_w, hd.out_b, gi("head")}};
    if (part == "head.lm" && !mm) return {{a.txt_in.data(), part, txt_n, h, Vl, hd.lm_w, none, gi("head"), TpSplit::column}};
    unknown(part + " (no weights)");
  }
  // unified: the token table rows sample b touched, each the sum of its positions' gradients.
  template <typename F>
  void token_rows(MicroBatch& a, int b, F&& row) {
    const float* d = kept(a, "embed.tokens");
    std::map<int, std::vector<double>> rows;
    for (int j = 0; j < txt_n; ++j) {
      const int tok = a.batch.tokens[static_cast<std::size_t>(b) * Tt + txt0 + j] - v0;
      if (tok < 0 || tok >= Vl) continue;
      auto& acc = rows[tok];
      acc.resize(H, 0.0);
      const float* dj = d + (static_cast<std::size_t>(b) * Tq + j) * H;
      for (int c = 0; c < H; ++c) acc[c] += dj[c];
    }
    for (auto& [tok, acc] : rows) row(tok, acc);
  }
  // DP-SGD under CP (exec/model/cp_sample_norms.hpp): the linears of an op as its ".norm_gather"
  // packs them, by sample_norm's TP rule; the unified model's patch, image-head and LM-head rows
  // differ between the CP ranks (a slice of [text; image]) and are padded with zeros to Tq.
  std::vector<NormLinear> norm_linears(const std::string& part, int l, MicroBatch& a) {
    const bool first = tpi == 0;
    auto ends = [&](const char* tail) {
      const std::size_t n = std::char_traits<char>::length(tail);
      return part.size() >= n && part.compare(part.size() - n, n, tail) == 0;
    };
    const bool per_sample = ends("adaln") || part == "embed.timestep" || part == "embed.pooled";
    const bool uneven = !mm && (part == "embed.patch" || part == "head.image" || part == "head.lm");
    std::vector<NormLinear> out;
    for (const Linear& x : linears(part, l, a)) {
      if (x.split == TpSplit::none && !first) continue;
      NormLinear n{x.inp, kept(a, x.key), x.rows, x.d_in, x.d_out, x.b != none && (x.split == TpSplit::column || first),
                   !per_sample};
      if (uneven) n.pad_rows = Tq;
      out.push_back(n);
    }
    return out;
  }
  static std::string gather_key(int l, const std::string& base) { return std::to_string(l).append("/").append(base); }
  // unified under CP: the token-table rows the samples this rank owns touched, from every CP
  // rank's embedding gradient rows (B x Tq each, text rows first: rank c holds tokens c Tq ..).
  void cp_owned_token_norms(MicroBatch& a, const float* gathered) {
    const std::size_t part = static_cast<std::size_t>(B) * Tq * H;
    for (int b = cpi; b < B; b += cp) {
      std::map<int, std::vector<double>> rows;
      for (int c = 0; c < cp; ++c) {
        const int q = c * Tq, n = std::max(0, std::min(Tq, Tt - q));
        for (int j = 0; j < n; ++j) {
          const int tok = a.batch.tokens[static_cast<std::size_t>(b) * Tt + q + j] - v0;
          if (tok < 0 || tok >= Vl) continue;
          auto& acc = rows[tok];
          acc.resize(H, 0.0);
          const float* dj = gathered + c * part + (static_cast<std::size_t>(b) * Tq + j) * H;
          for (int k = 0; k < H; ++k) acc[k] += dj[k];
        }
      }
      for (const auto& [tok, acc] : rows)
        for (double v : acc) a.sq_norm[b] += v * v;
    }
  }
  void sample_norm(const std::string& part, int l, MicroBatch& a) {
    require_dp(part);
    if (cp > 1) {  // the whole samples this CP rank owns, from the op's gathered rows
      auto it = a.cp_gathered.find(gather_key(l, part));
      if (it == a.cp_gathered.end())
        throw std::logic_error("JointModel: " + part + ".sample_norm under context parallelism before its .norm_gather");
      if (part == "embed.tokens") cp_owned_token_norms(a, it->second.data());
      else cp_owned_sq_norms(a.sq_norm.data(), it->second.data(), norm_linears(part, l, a), B, cp, cpi);
      a.cp_gathered.erase(it);
      return;
    }
    if (part == "embed.tokens" && !mm) {  // this rank's vocabulary rows: split, on every rank
      for (int b = 0; b < B; ++b)
        token_rows(a, b, [&](int, const std::vector<double>& acc) {
          for (double v : acc) a.sq_norm[b] += v * v;
        });
      return;
    }
    local_sq_norms(a.sq_norm.data(), norm_linears(part, l, a), B, a.scratch);
  }
  void clip(MicroBatch& a, const std::string& part) {
    require_dp(part);
    // The buffers hold g_b / (B x micro_batches); model/privacy.hpp has the rule.
    a.clip = ditwin::clip_factors(a.sq_norm, static_cast<double>(B) * micro_batches, clip_norm, a.batch.weight);
    a.clipped = true;
  }
  const float* clipped(MicroBatch& a, const float* g, int rows, int width) {
    bool all_one = std::all_of(a.clip.begin(), a.clip.end(), [](float c) { return c == 1.0f; });
    if (all_one) return g;
    const std::size_t n = static_cast<std::size_t>(B) * rows * width;
    if (a.scaled.size() < n) a.scaled.resize(n);
    k::scale_sample_rows(a.scaled.data(), g, a.clip.data(), B, rows, width);
    return a.scaled.data();
  }
  void wgrad(const std::string& part, int l, MicroBatch& a) {
    require_dp(part);
    if (!a.clipped) throw std::logic_error("JointModel: op " + part + ".wgrad runs before privacy.clip of its micro-batch");
    if (!mm) {  // the RMSNorm gains of this layer (or the head), with its first .wgrad
      const std::size_t slot = l >= 0 ? static_cast<std::size_t>(l) : static_cast<std::size_t>(L);
      if ((l >= 0 || part.rfind("head.", 0) == 0) && !a.gains_added[slot]) {
        a.gains_added[slot] = 1;
        if (l >= 0) {
          const int g = gi(std::string("L").append(std::to_string(l)));
          add_gains(a, layer_key(l, "norm1"), gr(g, so(0, sl.n1_w), part));
          add_gains(a, layer_key(l, "norm2"), gr(g, so(0, sl.n2_w), part));
        } else {
          add_gains(a, "head.norm", gr(gi("head"), hd.norm_w, part));
        }
      }
    }
    if (part == "embed.tokens" && !mm) {
      float* dtable = gr(gi("embed"), el.tok, part);
      for (int b = 0; b < B; ++b)
        token_rows(a, b, [&](int tok, const std::vector<double>& acc) {
          float* row = dtable + static_cast<std::size_t>(tok) * H;
          for (int c = 0; c < H; ++c) row[c] += static_cast<float>(a.clip[b] * acc[c]);
        });
      return;
    }
    for (const Linear& x : linears(part, l, a)) {
      if (x.rows == 0) continue;
      k::matmul_backward(nullptr, gr(x.group, x.w, part), x.b == none ? nullptr : gr(x.group, x.b, part),
                         clipped(a, kept(a, x.key), x.rows, x.d_out), x.inp, p(x.group, x.w, part), B * x.rows, x.d_in,
                         x.d_out);
    }
  }

  [[noreturn]] void unknown(const std::string& part) const {
    throw std::logic_error(std::string("JointModel: unknown op part '") + part + "' for a " + to_string(m.family) + " model");
  }
};

JointModel::JointModel(const ModelSpec& model, const ObjectiveSpec& objective, int micro_batch, int micro_batches,
                       const ModelShard& shard)
    : impl_(std::make_unique<Impl>(model, objective, micro_batch, micro_batches, shard)) {}
JointModel::~JointModel() = default;

const std::vector<ParamGroup>& JointModel::groups() const { return impl_->groups; }
std::size_t JointModel::parameter_count() const { return impl_->global.size(); }
const std::vector<std::size_t>& JointModel::global_index() const { return impl_->global; }
const std::vector<char>& JointModel::tp_replicated() const { return impl_->replicated; }
std::size_t JointModel::global_parameter_count() const { return impl_->total; }

void JointModel::init_parameters(float* local, std::uint64_t seed) const {
  const Impl& d = *impl_;
  // The one-rank model's array, then this rank's groups of it.
  std::vector<float> whole(d.total, 0.0f);
  float* params = whole.data();
  const std::size_t h = d.H;
  auto xavier = [&](float* w, std::size_t out, std::size_t in, int group, int tensor) {
    init_xavier_uniform(w, out, in, seed, group, tensor);
  };
  auto normal = [&](float* w, std::size_t n, double std, int group, int tensor) { init_normal(w, n, std, seed, group, tensor); };
  float* e = params;
  xavier(e + d.gel.patch_w, h, d.pin, 0, 0);
  normal(e + d.gel.t_w1, h * d.fe, 0.02, 0, 1);
  normal(e + d.gel.t_w2, h * h, 0.02, 0, 2);
  if (d.mm) {
    normal(e + d.gel.p_w1, h * d.Dp, 0.02, 0, 3);
    normal(e + d.gel.p_w2, h * h, 0.02, 0, 4);
    xavier(e + d.gel.ctx_w, h, d.Dc, 0, 5);
  } else {
    normal(e + d.gel.tok, static_cast<std::size_t>(d.V) * h, 0.02, 0, 6);
  }
  for (int l = 0; l < d.L; ++l) {
    float* layer = params + d.gel.size + static_cast<std::size_t>(l) * d.glayer_size;
    for (int s = 0; s < d.NS; ++s) {
      float* w = layer + s * d.gsl.size;
      const int g = 1 + l, t0 = 8 * s;
      xavier(w + d.gsl.qkv_w, 3 * h, h, g, t0 + 0);
      xavier(w + d.gsl.proj_w, h, h, g, t0 + 1);
      xavier(w + d.gsl.fc1_w, d.F1, h, g, t0 + 2);
      xavier(w + d.gsl.fc2_w, h, d.F, g, t0 + 3);
      if (!d.mm) {
        std::fill(w + d.gsl.n1_w, w + d.gsl.n1_w + h, 1.0f);
        std::fill(w + d.gsl.n2_w, w + d.gsl.n2_w + h, 1.0f);
      }
    }
  }
  float* head = params + d.gel.size + static_cast<std::size_t>(d.L) * d.glayer_size;
  if (!d.mm) {
    std::fill(head + d.ghd.norm_w, head + d.ghd.norm_w + h, 1.0f);
    normal(head + d.ghd.lm_w, static_cast<std::size_t>(d.V) * h, 0.02, d.L + 1, 0);
  }
  for (std::size_t i = 0; i < d.global.size(); ++i) local[i] = whole[d.global[i]];
}

void JointModel::bind(const std::string& group, const float* params, float* grads) {
  auto it = impl_->group_index.find(group);
  if (it == impl_->group_index.end()) throw std::logic_error("JointModel::bind: no parameter group '" + group + "'");
  impl_->params[it->second] = params;
  impl_->grads[it->second] = grads;
}

void JointModel::set_batch(int mb, Batch batch) {
  Impl& d = *impl_;
  if (mb < 0 || mb >= d.micro_batches)
    throw std::invalid_argument("JointModel::set_batch: micro-batch " + std::to_string(mb) + " of " + std::to_string(d.micro_batches));
  const std::size_t b = d.B, n = b * d.C * d.S * d.S;
  if (batch.size != d.B || batch.x0.size() != n || batch.noise.size() != n || batch.t.size() != b)
    throw std::invalid_argument("JointModel::set_batch: expected " + std::to_string(d.B) + " samples of " +
                                std::to_string(d.C) + "x" + std::to_string(d.S) + "x" + std::to_string(d.S));
  if (!batch.weight.empty() && (!d.dp || batch.weight.size() != b))
    throw std::invalid_argument("JointModel::set_batch: " + std::to_string(batch.weight.size()) + " per-sample weights for " +
                                std::to_string(b) + " samples" + (d.dp ? "" : " (weights are DP-SGD's, which is not enabled)"));
  if (d.mm) {
    if (batch.context.size() != b * d.Tt * d.Dc || batch.pooled.size() != b * d.Dp)
      throw std::invalid_argument("JointModel::set_batch: an mmdit batch needs " + std::to_string(d.Tt) + "x" +
                                  std::to_string(d.Dc) + " context and " + std::to_string(d.Dp) + " pooled values per sample");
  } else {
    if (batch.tokens.size() != b * d.Tt)
      throw std::invalid_argument("JointModel::set_batch: a unified batch needs " + std::to_string(d.Tt) + " tokens per sample");
    for (int tok : batch.tokens)
      if (tok < 0 || tok >= d.V)
        throw std::invalid_argument("JointModel::set_batch: token id " + std::to_string(tok) + " outside the vocabulary of " +
                                    std::to_string(d.V));
  }
  MicroBatch& a = d.mbs[mb];
  if (!a.ready) d.allocate(a);
  a.batch = std::move(batch);
  if (!d.mm)
    for (int s = 0; s < d.B; ++s)
      for (int j = 0; j < d.txt_n; ++j) {  // this rank's text rows: tokens txt0 .. txt0 + txt_n
        const int g = d.txt0 + j;
        a.targets[static_cast<std::size_t>(s) * d.txt_n + j] =
            g + 1 < d.Tt ? a.batch.tokens[static_cast<std::size_t>(s) * d.Tt + g + 1] : -1;
      }
  a.loss_done = false;
  if (d.dp) {  // a new step's norms (under PP only the last stage runs the "loss" backward)
    a.sq_norm.assign(d.B, 0.0);
    a.clip.assign(d.B, 1.0f);
    a.clipped = false;
    a.gains_added.assign(d.L + 1, 0);
  }
}

void JointModel::run(const std::string& part, int layer, Phase phase, int mb) {
  Impl& d = *impl_;
  std::string op;
  if (layer >= 0) op.append("L").append(std::to_string(layer)).append(".");
  op.append(part);
  if (phase != Phase::forward && phase != Phase::backward && phase != Phase::recompute)
    throw std::logic_error("JointModel: op " + op + " has phase " + to_string(phase) + ", not a compute phase");
  MicroBatch& a = d.micro(mb, op);
  const bool fwd = phase != Phase::backward;
  try {
    if (layer >= d.L) throw std::logic_error("JointModel: op " + op + ": layer out of range");
    if (layer >= 0 && !d.held[layer])
      throw std::logic_error("JointModel: op " + op + " runs on a layer this pipeline stage does not hold");
    auto ends_with = [&](const char* tag) {
      std::size_t n = std::strlen(tag);
      return part.size() > n && part.compare(part.size() - n, n, tag) == 0;
    };
    if (ends_with(".sample_norm")) {
      d.sample_norm(part.substr(0, part.size() - 12), layer, a);
    } else if (ends_with(".wgrad")) {
      d.wgrad(part.substr(0, part.size() - 6), layer, a);
    } else if (part == "privacy.clip") {
      d.clip(a, op);
    } else if (layer >= 0) {
      fwd ? d.layer_forward(part, layer, a) : d.layer_backward(part, layer, a);
    } else if (part.rfind("embed.", 0) == 0) {
      fwd ? d.embed_forward(part, a) : d.embed_backward(part, a);
    } else if (part.rfind("head.", 0) == 0 || part == "loss") {
      fwd ? d.head_forward(part, a) : d.head_backward(part, a);
    } else {
      d.unknown(part);
    }
  } catch (const std::logic_error& e) {
    if (std::string(e.what()).find(op) != std::string::npos) throw;
    throw std::logic_error(std::string(e.what()) + " (op " + op + ")");
  }
}

double JointModel::loss(int mb) const {
  const Impl& d = *impl_;
  if (mb < 0 || mb >= d.micro_batches || !d.mbs[mb].ready || !d.mbs[mb].loss_done)
    throw std::logic_error("JointModel::loss: micro-batch " + std::to_string(mb) + " has no loss forward yet");
  return d.mbs[mb].loss;
}
double JointModel::text_loss(int mb) const {
  loss(mb);
  return impl_->mbs[mb].text_loss;
}
double JointModel::image_loss(int mb) const {
  loss(mb);
  return impl_->mbs[mb].image_loss;
}

TensorComm JointModel::comm_begin(const Op& op) { return impl_->comm_begin(op); }
void JointModel::comm_end(const Op& op) { impl_->comm_end(op); }

void JointModel::enable_privacy(double clip_norm) {
  Impl& d = *impl_;
  if (!(clip_norm > 0)) throw std::invalid_argument("JointModel::enable_privacy: the clip norm must be > 0");
  if (d.sp)
    throw InputError("training.privacy: the " + std::string(to_string(d.m.family)) +
                     " executor runs DP-SGD without sequence parallelism (set parallelism.sequence_parallel false)");
  for (const auto& mb : d.mbs)
    if (mb.ready) throw std::logic_error("JointModel::enable_privacy: call it before the first set_batch");
  d.dp = true;
  d.clip_norm = clip_norm;
}

std::vector<float> JointModel::clip_factors(int mb) const {
  const Impl& d = *impl_;
  if (!d.dp || mb < 0 || mb >= d.micro_batches || !d.mbs[mb].clipped)
    throw std::logic_error("JointModel::clip_factors: micro-batch " + std::to_string(mb) + " has not been clipped");
  return d.mbs[mb].clip;
}

}  // namespace ditwin::exec
