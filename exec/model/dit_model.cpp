// The DiT the CPU executor trains, op by op under the Program's names: forward and hand-written
// backward over kernels/ functions (GEMMs included, via Eigen), activations kept per micro-batch.
#include "exec/model/dit_model.hpp"

#include <algorithm>
#include <cmath>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <new>
#include <stdexcept>

#include "exec/model/activations.hpp"
#include "exec/model/rng.hpp"
#include "model/accounting.hpp"  // defines: chunk_first_layers
#include "kernels/adamw.hpp"         // defines: adamw_update
#include "kernels/attention.hpp"     // defines: attention_forward, attention_backward
#include "kernels/embedding.hpp"     // defines: patchify, unpatchify, pos/timestep sinusoids, class table
#include "kernels/gelu.hpp"          // defines: gelu_forward, gelu_backward
#include "kernels/layernorm.hpp"     // defines: layernorm_modulate_forward, layernorm_modulate_backward
#include "kernels/loss.hpp"          // defines: rectified_flow_input, rectified_flow_loss_forward/backward
#include "kernels/matmul.hpp"        // defines: matmul_forward, matmul_backward
#include "exec/model/cp_sample_norms.hpp"  // defines: NormLinear, cp_norm_pack, cp_owned_sq_norms
#include "kernels/per_sample_norm.hpp"  // defines: linear_per_sample_sq_norms, scale_sample_rows
#include "kernels/residual.hpp"      // defines: gated_residual_forward, gated_residual_backward
#include "kernels/silu.hpp"          // defines: silu_forward, silu_backward
#include "model/errors.hpp"
#include "model/privacy.hpp"          // defines: ghost_norm_is_cheaper, clip_factors

namespace ditwin::exec {
namespace k = ditwin::kernels;

namespace {

constexpr float layernorm_eps = 1e-6f;  // DiT: nn.LayerNorm(elementwise_affine=False, eps=1e-6)
constexpr float max_period = 10000.0f;  // DiT's TimestepEmbedder
// Rectified flow samples t in (0, 1); DiT's timestep embedding was built for integer steps in
// [0, 1000), so t is scaled to that range before the sinusoid (as SD3 does).
constexpr float timestep_scale = 1000.0f;

using Buffer = Activations;

// Offsets (in floats) of each tensor inside its parameter group.
struct EmbedLayout {
  std::size_t patch_w, patch_b, t_w1, t_b1, t_w2, t_b2, y_table, size;
};
struct LayerLayout {
  std::size_t ada_w, ada_b, qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b, size;
};
struct HeadLayout {
  std::size_t ada_w, ada_b, out_w, out_b, size;
};

// Rows: R = micro_batch x this rank's residual-stream tokens (its sequence shard under sequence
// parallelism), G = micro_batch x the tokens the TP-split GEMMs see (all of this CP rank's).
// Widths: hl = hidden / tp (this rank's heads), Fl = ffn_hidden / tp.
struct LayerActs {
  Buffer mod, ln1, mean1, rstd1, qkv, att, probs, proj, x_mid, ln2, mean2, rstd2, fc1, act, fc2;
  // Sequence parallelism: the gathered norm outputs (G rows) and the reduce-scattered GEMM
  // outputs (R rows); context parallelism: every CP rank's K and V (B x all tokens x 2hl).
  Buffer ln1_full, ln2_full, proj_red, fc2_red, kv_full;
  // DP-SGD: this layer's output gradients of its linears, kept from backward until the clipped
  // weight gradients are formed (without DP-SGD they share one buffer per micro-batch).
  Buffer g_mod, g_qkv, g_proj, g_fc1, g_fc2;
};

struct MicroBatch {
  bool ready = false;
  Batch batch;
  // Forward.
  Buffer z, patches, t_scaled, t_freq, t_h1, t_a1, t_emb, c, silu_c;
  std::vector<Buffer> x;  // residual stream entering layer l (x[layers] enters the head)
  std::vector<LayerActs> layer;
  Buffer fmod, lnf, meanf, rstdf, out_tok, v_hat;
  double loss = std::numeric_limits<double>::quiet_NaN();
  bool loss_done = false;
  // Backward.
  Buffer dx, d_ln, dqkv, datt, dproj, dfc1, dact, dfc2, dmod, dfmod, dsilu_c, dc, dt_a1, dt_h1, dout_tok, dv_hat;
  Buffer d_ln_full, dproj_full, dfc2_full, dkv_full;  // the G-row (or all-token) forms, as forward
  Buffer patches_local;                                // this rank's token rows of patches
  bool dc_ready = false;
  // DP-SGD: per-sample squared gradient norms (in the buffers' 1/(B x micro-batches) scale), the
  // clip factors, and scratch for Gram matrices and scaled output gradients.
  std::vector<double> sq_norm;
  std::vector<float> clip;
  bool clipped = false;
  Buffer scratch, scaled;
  std::map<std::string, Buffer> cp_gathered;  // under CP: an op's gathered norm inputs, by gather_key
};

}  // namespace

struct DiT::Impl {
  ModelSpec m;
  int B, T, H, F, NH, C, Cout, S, P, grid, fe, L, classes, pin, pout, micro_batches;
  // The shard (ModelShard): local widths and token counts.
  ModelShard sh;
  int tp = 1, tpi = 0, cp = 1, cpi = 0;
  bool sp = false;
  int hl = 0, NHl = 0, Fl = 0;  // this rank's attention width, heads and MLP width
  int Tl = 0;                   // tokens of this CP rank (the GEMMs' rows per sample)
  int Ts = 0;                   // residual-stream tokens per sample on this rank
  int tok0 = 0;                 // global index of this rank's first residual-stream token
  bool token_shard = false;     // Ts < T: embedding and final layer see a slice of the tokens
  std::vector<int> chunk_first;  // first layer of each model chunk
  EmbedLayout el{};
  LayerLayout ll{};   // this rank's layout of a block (TP-split tensors narrower)
  LayerLayout gll{};  // the one-rank layout of a block
  HeadLayout hl_{};
  std::vector<ParamGroup> groups;  // this rank's
  std::map<std::string, int> group_index;
  std::vector<int> group_of_layer;  // -1 where this rank does not hold the layer
  int embed_gi = -1, head_gi = -1;
  std::vector<std::size_t> global;  // local flat index -> one-rank flat index
  std::vector<char> replicated;     // local flat index -> held whole by every TP rank
  std::size_t global_count = 0;
  std::vector<const float*> params;  // bound, per group
  std::vector<float*> grads;
  Buffer pos_embed;
  std::vector<MicroBatch> mbs;
  std::map<const Op*, Buffer> staging;  // communication in flight: packed sends, unpacked receives
  bool dp = false;         // DP-SGD: backward leaves weight gradients to the clipped ".wgrad" ops
  double clip_norm = 0;

  Impl(const ModelSpec& model, int micro_batch, int n_micro, const ModelShard& shard) : m(model), sh(shard) {
    if (m.family != ModelFamily::dit)
      throw InputError(std::string("model.family: the CPU executor trains dit models, not ") + to_string(m.family));
    auto need = [](bool ok, const std::string& msg) {
      if (!ok) throw InputError(msg);
    };
    need(m.layers > 0 && m.hidden > 0 && m.heads > 0 && m.ffn_hidden > 0, "model: layers, hidden, heads, ffn_hidden must be positive");
    need(m.hidden % m.heads == 0, "model.heads: must divide model.hidden");
    need(m.kv_heads == 0 || m.kv_heads == m.heads, "model.kv_heads: the DiT executor has no grouped-query attention");
    need(!m.gated_mlp, "model.gated_mlp: DiT's MLP is GELU, not gated");
    need(m.hidden % 4 == 0, "model.hidden: the 2-D sin-cos positional embedding needs a multiple of 4");
    need(m.vae_downsample > 0 && m.image_size % m.vae_downsample == 0,
         "model.image_size: must be a multiple of model.vae_downsample");
    need(m.patch > 0 && m.latent_size() % m.patch == 0, "model.patch: must divide the latent size");
    need(m.frequency_embedding > 0, "model.frequency_embedding: must be positive");
    need(micro_batch > 0 && n_micro > 0, "training: micro_batch and micro-batch count must be positive");
    B = micro_batch;
    micro_batches = n_micro;
    H = m.hidden;
    F = m.ffn_hidden;
    NH = m.heads;
    C = m.latent_channels;
    Cout = m.out_channels();
    S = m.latent_size();
    P = m.patch;
    grid = S / P;
    T = grid * grid;
    fe = m.frequency_embedding;
    L = m.layers;
    classes = m.num_classes;
    pin = P * P * C;
    pout = P * P * Cout;

    tp = std::max(1, sh.tp);
    tpi = sh.tp_index;
    cp = std::max(1, sh.cp);
    cpi = sh.cp_index;
    sp = sh.sequence_parallel && tp > 1;
    need(tpi >= 0 && tpi < tp && cpi >= 0 && cpi < cp && sh.stage >= 0 && sh.stage < std::max(1, sh.pp),
         "parallelism: this rank's place is outside the layout");
    need(NH % tp == 0, "parallelism.tp: " + std::to_string(tp) + " does not divide model.heads " + std::to_string(NH));
    need(F % tp == 0, "parallelism.tp: " + std::to_string(tp) + " does not divide model.ffn_hidden " + std::to_string(F));
    need(T % cp == 0, "parallelism.cp: " + std::to_string(cp) + " does not divide the " + std::to_string(T) + " image tokens");
    hl = H / tp;
    NHl = NH / tp;
    Fl = F / tp;
    Tl = T / cp;
    need(!sp || Tl % tp == 0, "parallelism.sequence_parallel: tp " + std::to_string(tp) + " does not divide the " +
                                  std::to_string(Tl) + " tokens of a context-parallel rank");
    Ts = sp ? Tl / tp : Tl;
    tok0 = cpi * Tl + (sp ? tpi * Ts : 0);
    token_shard = Ts != T;
    int chunks = std::max(1, sh.pp) * std::max(1, sh.virtual_stages);
    need(chunks <= L, "parallelism: " + std::to_string(chunks) + " pipeline chunks for " + std::to_string(L) + " layers");
    chunk_first = chunk_first_layers(L, chunks);

    std::size_t o = 0;
    auto take = [&](std::size_t n) { std::size_t at = o; o += n; return at; };
    const std::size_t h = H;
    el.patch_w = take(h * pin); el.patch_b = take(h);
    el.t_w1 = take(h * fe); el.t_b1 = take(h); el.t_w2 = take(h * h); el.t_b2 = take(h);
    el.y_table = take(classes > 0 ? (classes + 1) * h : 0);
    el.size = o;
    auto layer_layout = [&](std::size_t width, std::size_t ffn) {
      LayerLayout x{};
      o = 0;
      x.ada_w = take(6 * h * h); x.ada_b = take(6 * h);
      x.qkv_w = take(3 * width * h); x.qkv_b = take(3 * width);
      x.proj_w = take(h * width); x.proj_b = take(h);
      x.fc1_w = take(ffn * h); x.fc1_b = take(ffn);
      x.fc2_w = take(h * ffn); x.fc2_b = take(h);
      x.size = o;
      return x;
    };
    ll = layer_layout(hl, Fl);
    gll = layer_layout(H, F);
    o = 0;
    hl_.ada_w = take(2 * h * h); hl_.ada_b = take(2 * h);
    hl_.out_w = take(static_cast<std::size_t>(pout) * h); hl_.out_b = take(pout);
    hl_.size = o;
    global_count = el.size + static_cast<std::size_t>(L) * gll.size + hl_.size;

    // The groups this rank holds, in the Program's order (RankClass::param_groups): one rule for
    // which stage holds what, the lowering's. No list: the whole model.
    std::vector<std::string> names = sh.groups;
    if (names.empty()) {
      names.push_back("embed");
      for (int l = 0; l < L; ++l) names.push_back(std::string("L").append(std::to_string(l)));
      names.push_back("head");
    }
    group_of_layer.assign(L, -1);
    std::size_t offset = 0;
    auto add = [&](const std::string& name, std::size_t size) {
      group_index[name] = static_cast<int>(groups.size());
      groups.push_back({name, offset, size});
      offset += size;
      return static_cast<int>(groups.size()) - 1;
    };
    for (const auto& name : names) {
      if (name == "embed") {
        embed_gi = add(name, el.size);
      } else if (name == "head") {
        head_gi = add(name, hl_.size);
      } else {
        int l = name.size() > 1 && name[0] == 'L' ? std::atoi(name.c_str() + 1) : -1;
        if (l < 0 || l >= L || name != std::string("L").append(std::to_string(l)) || group_of_layer[l] >= 0)
          throw std::logic_error("DiT: parameter group '" + name + "' is not a layer of this model");
        group_of_layer[l] = add(name, ll.size);
      }
    }
    params.assign(groups.size(), nullptr);
    grads.assign(groups.size(), nullptr);
    build_global_index();

    pos_embed.resize(static_cast<std::size_t>(T) * H);
    k::pos_embed_2d_sincos(pos_embed.data(), grid, H);
    mbs.resize(n_micro);
  }

  // Local flat index -> one-rank flat index: whole groups map one to one; a TP-split tensor takes
  // this rank's rows (column-parallel: its heads of Q, K and V, its slice of fc1) or its columns
  // (row-parallel: attn.proj and fc2).
  void build_global_index() {
    global.clear();
    replicated.clear();
    auto whole = [&](std::size_t gbase, std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) {
        global.push_back(gbase + i);
        replicated.push_back(1);
      }
    };
    for (const auto& g : groups) {
      if (g.name == "embed") {
        whole(0, el.size);
      } else if (g.name == "head") {
        whole(el.size + static_cast<std::size_t>(L) * gll.size, hl_.size);
      } else {
        const std::size_t l = std::stoul(g.name.substr(1)), base = el.size + l * gll.size, h = H;
        auto push = [&](std::size_t gi, bool rep) {
          global.push_back(base + gi);
          replicated.push_back(rep ? 1 : 0);
        };
        for (std::size_t i = 0; i < 6 * h * h + 6 * h; ++i) push(gll.ada_w + i, true);  // ada_w, ada_b
        auto qkv_row = [&](std::size_t r) { return (r / hl) * h + static_cast<std::size_t>(tpi) * hl + r % hl; };
        for (std::size_t r = 0; r < 3 * static_cast<std::size_t>(hl); ++r)
          for (std::size_t c = 0; c < h; ++c) push(gll.qkv_w + qkv_row(r) * h + c, false);
        for (std::size_t r = 0; r < 3 * static_cast<std::size_t>(hl); ++r) push(gll.qkv_b + qkv_row(r), false);
        for (std::size_t r = 0; r < h; ++r)
          for (std::size_t c = 0; c < static_cast<std::size_t>(hl); ++c)
            push(gll.proj_w + r * h + static_cast<std::size_t>(tpi) * hl + c, false);
        for (std::size_t r = 0; r < h; ++r) push(gll.proj_b + r, true);
        const std::size_t f0 = static_cast<std::size_t>(tpi) * Fl;
        for (std::size_t r = 0; r < static_cast<std::size_t>(Fl); ++r)
          for (std::size_t c = 0; c < h; ++c) push(gll.fc1_w + (f0 + r) * h + c, false);
        for (std::size_t r = 0; r < static_cast<std::size_t>(Fl); ++r) push(gll.fc1_b + f0 + r, false);
        for (std::size_t r = 0; r < h; ++r)
          for (std::size_t c = 0; c < static_cast<std::size_t>(Fl); ++c)
            push(gll.fc2_w + r * static_cast<std::size_t>(F) + f0 + c, false);
        for (std::size_t r = 0; r < h; ++r) push(gll.fc2_b + r, true);
      }
    }
    if (tp == 1) std::fill(replicated.begin(), replicated.end(), 1);
  }

  // --- parameters -------------------------------------------------------------------------
  const float* p(int g, std::size_t off, const char* part) const {
    if (g < 0) throw std::logic_error(std::string("DiT: op ") + part + " needs a parameter group this stage does not hold");
    if (!params[g]) throw std::logic_error(std::string("DiT: op ") + part + " needs group " + groups[g].name + " bound");
    return params[g] + off;
  }
  float* gr(int g, std::size_t off, const char* part) const {
    if (g < 0) throw std::logic_error(std::string("DiT: op ") + part + " needs a parameter group this stage does not hold");
    if (!grads[g])
      throw std::logic_error(std::string("DiT: op ") + part + " needs the gradients of group " + groups[g].name);
    return grads[g] + off;
  }
  // A weight gradient for backward: none under DP-SGD, whose ".wgrad" ops add the clipped ones.
  float* wg(int g, std::size_t off, const char* part) const { return dp ? nullptr : gr(g, off, part); }
  int embed_g() const { return embed_gi; }
  int layer_g(int l) const { return group_of_layer.at(l); }
  int head_g() const { return head_gi; }

  // --- activations -------------------------------------------------------------------------
  void allocate(MicroBatch& mb) {
    const std::size_t b = B, R = static_cast<std::size_t>(B) * Ts, G = static_cast<std::size_t>(B) * Tl, h = H,
                      w = hl, f = Fl;
    auto sz = [](Buffer& v, std::size_t n) { v.assign(n, 0.0f); };
    if (embed_gi >= 0) {
      sz(mb.z, b * C * S * S); sz(mb.patches, static_cast<std::size_t>(B) * T * pin);
      if (token_shard) sz(mb.patches_local, R * pin);
      sz(mb.t_scaled, b); sz(mb.t_freq, b * fe); sz(mb.t_h1, b * h); sz(mb.t_a1, b * h);
      sz(mb.t_emb, b * h); sz(mb.dt_a1, b * h); sz(mb.dt_h1, b * h);
    }
    sz(mb.c, b * h); sz(mb.silu_c, b * h);
    mb.x.resize(L + 1);
    mb.layer.resize(L);
    for (int l = 0; l < L; ++l) {
      if (group_of_layer[l] < 0) continue;
      sz(mb.x[l], R * h);
      sz(mb.x[l + 1], R * h);
      LayerActs& a = mb.layer[l];
      sz(a.mod, b * 6 * h); sz(a.ln1, R * h); sz(a.mean1, R); sz(a.rstd1, R); sz(a.qkv, G * 3 * w);
      sz(a.att, G * w); sz(a.probs, b * NHl * Tl * static_cast<std::size_t>(T)); sz(a.proj, G * h); sz(a.x_mid, R * h);
      sz(a.ln2, R * h); sz(a.mean2, R); sz(a.rstd2, R); sz(a.fc1, G * f); sz(a.act, G * f); sz(a.fc2, G * h);
      if (sp) {
        sz(a.ln1_full, G * h); sz(a.ln2_full, G * h); sz(a.proj_red, R * h); sz(a.fc2_red, R * h);
      }
      if (cp > 1) sz(a.kv_full, b * T * 2 * w);
    }
    if (embed_gi >= 0) sz(mb.x[0], R * h);
    if (head_gi >= 0) {
      sz(mb.x[L], R * h);
      sz(mb.fmod, b * 2 * h); sz(mb.lnf, R * h); sz(mb.meanf, R); sz(mb.rstdf, R);
      sz(mb.out_tok, R * pout); sz(mb.v_hat, b * Cout * S * S);
      sz(mb.dout_tok, R * pout); sz(mb.dv_hat, b * Cout * S * S); sz(mb.dfmod, b * 2 * h);
    }
    sz(mb.dx, R * h); sz(mb.d_ln, R * h); sz(mb.dqkv, G * 3 * w); sz(mb.datt, G * w); sz(mb.dproj, R * h);
    sz(mb.dfc1, G * f); sz(mb.dact, G * f); sz(mb.dfc2, R * h); sz(mb.dmod, b * 6 * h);
    sz(mb.dsilu_c, b * h); sz(mb.dc, b * h);
    if (sp) {
      sz(mb.d_ln_full, G * h); sz(mb.dproj_full, G * h); sz(mb.dfc2_full, G * h);
    }
    if (cp > 1) sz(mb.dkv_full, b * T * 2 * w);
    if (dp) {
      for (int l = 0; l < L; ++l) {
        if (group_of_layer[l] < 0) continue;
        LayerActs& a = mb.layer[l];
        sz(a.g_mod, b * 6 * h); sz(a.g_qkv, G * 3 * w); sz(a.g_proj, G * h); sz(a.g_fc1, G * f); sz(a.g_fc2, G * h);
      }
      mb.sq_norm.assign(b, 0.0);
      mb.clip.assign(b, 1.0f);
      sz(mb.scaled, G * std::max<std::size_t>({6 * h, 3 * h, static_cast<std::size_t>(F), static_cast<std::size_t>(pout)}));
    }
    mb.ready = true;
  }

  MicroBatch& micro(int mb, const std::string& part) {
    if (mb < 0 || mb >= micro_batches)
      throw std::logic_error("DiT: op " + part + " on micro-batch " + std::to_string(mb) + " of " +
                             std::to_string(micro_batches));
    if (!mbs[mb].ready) throw std::logic_error("DiT: op " + part + " before set_batch for micro-batch " + std::to_string(mb));
    return mbs[mb];
  }

  // The gradient of silu(c), summed over every adaLN GEMM, turned into the gradient of c once.
  void ensure_dc(MicroBatch& a) {
    if (a.dc_ready) return;
    zero(a.dc);
    k::silu_backward(a.dc.data(), a.c.data(), a.dsilu_c.data(), a.dc.size());
    a.dc_ready = true;
  }


  // --- embedding -----------------------------------------------------------------------------
  void embed_forward(const std::string& part, MicroBatch& a) {
    const int g = embed_g();
    const char* name = part.c_str();
    const int rows = B * Ts;
    if (part == "embed.patch") {
      k::rectified_flow_input(a.z.data(), a.batch.x0.data(), a.batch.noise.data(), a.batch.t.data(), B, C * S * S);
      k::patchify_forward(a.patches.data(), a.z.data(), B, C, S, P);
      const float* in = a.patches.data();
      if (token_shard) {
        gather_rows(a.patches_local.data(), a.patches.data(), B, T, tok0, Ts, pin);
        in = a.patches_local.data();
      }
      float* x = a.x[0].data();
      k::matmul_forward(x, in, p(g, el.patch_w, name), p(g, el.patch_b, name), rows, pin, H);
      for (int r = 0; r < rows; ++r) {
        const float* pe = pos_embed.data() + static_cast<std::size_t>(tok0 + r % Ts) * H;
        for (int c = 0; c < H; ++c) x[static_cast<std::size_t>(r) * H + c] += pe[c];
      }
    } else if (part == "embed.timestep") {
      for (int b = 0; b < B; ++b) a.t_scaled[b] = a.batch.t[b] * timestep_scale;
      k::timestep_embedding_forward(a.t_freq.data(), a.t_scaled.data(), B, fe, max_period);
      k::matmul_forward(a.t_h1.data(), a.t_freq.data(), p(g, el.t_w1, name), p(g, el.t_b1, name), B, fe, H);
      k::silu_forward(a.t_a1.data(), a.t_h1.data(), a.t_a1.size());
      k::matmul_forward(a.t_emb.data(), a.t_a1.data(), p(g, el.t_w2, name), p(g, el.t_b2, name), B, H, H);
      if (classes == 0) {  // unconditional: c is the timestep embedding alone
        a.c = a.t_emb;
        k::silu_forward(a.silu_c.data(), a.c.data(), a.c.size());
      }
    } else if (part == "embed.class" && classes > 0) {
      k::class_embedding_forward(a.c.data(), p(g, el.y_table, name), a.batch.y.data(), B, H);
      for (std::size_t i = 0; i < a.c.size(); ++i) a.c[i] += a.t_emb[i];
      k::silu_forward(a.silu_c.data(), a.c.data(), a.c.size());
    } else {
      unknown(part);
    }
  }

  void embed_backward(const std::string& part, MicroBatch& a) {
    const int g = embed_g();
    const char* name = part.c_str();
    if (part == "embed.patch") {
      if (!dp)
        k::matmul_backward(nullptr, wg(g, el.patch_w, name), wg(g, el.patch_b, name), a.dx.data(),
                           token_shard ? a.patches_local.data() : a.patches.data(), p(g, el.patch_w, name), B * Ts, pin, H);
    } else if (part == "embed.timestep") {
      ensure_dc(a);
      zero(a.dt_a1);
      k::matmul_backward(a.dt_a1.data(), wg(g, el.t_w2, name), wg(g, el.t_b2, name), a.dc.data(), a.t_a1.data(),
                         p(g, el.t_w2, name), B, H, H);
      zero(a.dt_h1);
      k::silu_backward(a.dt_h1.data(), a.t_h1.data(), a.dt_a1.data(), a.dt_h1.size());
      k::matmul_backward(nullptr, wg(g, el.t_w1, name), wg(g, el.t_b1, name), a.dt_h1.data(), a.t_freq.data(),
                         p(g, el.t_w1, name), B, fe, H);
    } else if (part == "embed.class" && classes > 0) {
      ensure_dc(a);
      if (!dp) k::class_embedding_backward(gr(g, el.y_table, name), a.dc.data(), a.batch.y.data(), B, H);
    } else {
      unknown(part);
    }
  }

  // --- transformer block ---------------------------------------------------------------------
  // Under TP the row-parallel GEMMs (attn.proj, mlp.fc2) leave partial sums without bias; the
  // reduction (all-reduce, or reduce-scatter under sequence parallelism) completes them and the
  // residual op adds the bias to the reduced rows, so the bias is added once.
  float* reduced_proj(LayerActs& s) { return sp ? s.proj_red.data() : s.proj.data(); }
  float* reduced_fc2(LayerActs& s) { return sp ? s.fc2_red.data() : s.fc2.data(); }
  void add_bias(float* rows, const float* bias, int n) const {
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < H; ++c) rows[static_cast<std::size_t>(r) * H + c] += bias[c];
  }
  void bias_grad(float* db, const float* drows, int n) const {
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < H; ++c) db[c] += drows[static_cast<std::size_t>(r) * H + c];
  }

  void layer_forward(const std::string& part, int l, MicroBatch& a) {
    const int g = layer_g(l);
    const char* name = part.c_str();
    LayerActs& s = a.layer[l];
    const int R = B * Ts, G = B * Tl, h = H, w = hl;
    float* mod = s.mod.data();
    if (part == "adaln") {
      k::matmul_forward(mod, a.silu_c.data(), p(g, ll.ada_w, name), p(g, ll.ada_b, name), B, h, 6 * h);
    } else if (part == "norm1") {
      k::layernorm_modulate_forward(s.ln1.data(), s.mean1.data(), s.rstd1.data(), a.x[l].data(), mod, mod + h, B, Ts,
                                    h, 6 * h, layernorm_eps);
    } else if (part == "attn.qkv") {
      k::matmul_forward(s.qkv.data(), sp ? s.ln1_full.data() : s.ln1.data(), p(g, ll.qkv_w, name),
                        p(g, ll.qkv_b, name), G, h, 3 * w);
    } else if (part == "attn.core") {
      const float* kv = cp > 1 ? s.kv_full.data() : s.qkv.data() + w;
      const int kv_ld = cp > 1 ? 2 * w : 3 * w;
      k::attention_forward(s.att.data(), s.probs.data(), s.qkv.data(), 3 * w, kv, kv + w, kv_ld, B, Tl, Tl * cp, w, NHl);
    } else if (part == "attn.proj") {
      k::matmul_forward(s.proj.data(), s.att.data(), p(g, ll.proj_w, name), tp > 1 ? nullptr : p(g, ll.proj_b, name), G,
                        w, h);
    } else if (part == "attn.residual") {
      if (tp > 1) add_bias(reduced_proj(s), p(g, ll.proj_b, name), R);
      k::gated_residual_forward(s.x_mid.data(), a.x[l].data(), reduced_proj(s), mod + 2 * h, B, Ts, h, 6 * h);
    } else if (part == "norm2") {
      k::layernorm_modulate_forward(s.ln2.data(), s.mean2.data(), s.rstd2.data(), s.x_mid.data(), mod + 3 * h,
                                    mod + 4 * h, B, Ts, h, 6 * h, layernorm_eps);
    } else if (part == "mlp.fc1") {
      k::matmul_forward(s.fc1.data(), sp ? s.ln2_full.data() : s.ln2.data(), p(g, ll.fc1_w, name),
                        p(g, ll.fc1_b, name), G, h, Fl);
    } else if (part == "mlp.act") {
      k::gelu_forward(s.act.data(), s.fc1.data(), s.act.size());
    } else if (part == "mlp.fc2") {
      k::matmul_forward(s.fc2.data(), s.act.data(), p(g, ll.fc2_w, name), tp > 1 ? nullptr : p(g, ll.fc2_b, name), G,
                        Fl, h);
    } else if (part == "mlp.residual") {
      if (tp > 1) add_bias(reduced_fc2(s), p(g, ll.fc2_b, name), R);
      k::gated_residual_forward(a.x[l + 1].data(), s.x_mid.data(), reduced_fc2(s), mod + 5 * h, B, Ts, h, 6 * h);
    } else {
      unknown(part);
    }
  }

  // a.dx holds the gradient of the residual stream; the residual ops pass it through unchanged
  // and the norms add their input gradient to it.
  void layer_backward(const std::string& part, int l, MicroBatch& a) {
    const int g = layer_g(l);
    const char* name = part.c_str();
    LayerActs& s = a.layer[l];
    const int R = B * Ts, G = B * Tl, h = H, w = hl;
    const float* mod = s.mod.data();
    Buffer& dmod_buf = dp ? s.g_mod : a.dmod;
    float* dmod = dmod_buf.data();
    Buffer& dfc2 = dp ? s.g_fc2 : a.dfc2;       // R rows (the residual's view)
    Buffer& dfc1 = dp ? s.g_fc1 : a.dfc1;
    Buffer& dproj = dp ? s.g_proj : a.dproj;    // R rows
    Buffer& dqkv = dp ? s.g_qkv : a.dqkv;
    float* d_ln_gemm = sp ? a.d_ln_full.data() : a.d_ln.data();  // the column-parallel GEMMs' input gradient
    if (part == "mlp.residual") {
      zero(dmod_buf);
      zero(dfc2);
      k::gated_residual_backward(nullptr, dfc2.data(), dmod + 5 * h, a.dx.data(), reduced_fc2(s), mod + 5 * h, B, Ts,
                                 h, 6 * h);
      if (tp > 1 && !dp) bias_grad(gr(g, ll.fc2_b, name), dfc2.data(), R);
    } else if (part == "mlp.fc2") {
      zero(a.dact);
      k::matmul_backward(a.dact.data(), wg(g, ll.fc2_w, name), tp > 1 ? nullptr : wg(g, ll.fc2_b, name),
                         sp ? a.dfc2_full.data() : dfc2.data(), s.act.data(), p(g, ll.fc2_w, name), G, Fl, h);
    } else if (part == "mlp.act") {
      zero(dfc1);
      k::gelu_backward(dfc1.data(), s.fc1.data(), a.dact.data(), dfc1.size());
    } else if (part == "mlp.fc1") {
      std::fill(d_ln_gemm, d_ln_gemm + static_cast<std::size_t>(G) * h, 0.0f);
      k::matmul_backward(d_ln_gemm, wg(g, ll.fc1_w, name), wg(g, ll.fc1_b, name), dfc1.data(),
                         sp ? s.ln2_full.data() : s.ln2.data(), p(g, ll.fc1_w, name), G, h, Fl);
    } else if (part == "norm2") {
      k::layernorm_modulate_backward(a.dx.data(), dmod + 3 * h, dmod + 4 * h, a.d_ln.data(), s.x_mid.data(),
                                     s.mean2.data(), s.rstd2.data(), mod + 4 * h, B, Ts, h, 6 * h);
    } else if (part == "attn.residual") {
      zero(dproj);
      k::gated_residual_backward(nullptr, dproj.data(), dmod + 2 * h, a.dx.data(), reduced_proj(s), mod + 2 * h, B,
                                 Ts, h, 6 * h);
      if (tp > 1 && !dp) bias_grad(gr(g, ll.proj_b, name), dproj.data(), R);
    } else if (part == "attn.proj") {
      zero(a.datt);
      k::matmul_backward(a.datt.data(), wg(g, ll.proj_w, name), tp > 1 ? nullptr : wg(g, ll.proj_b, name),
                         sp ? a.dproj_full.data() : dproj.data(), s.att.data(), p(g, ll.proj_w, name), G, w, h);
    } else if (part == "attn.core") {
      zero(dqkv);
      float* dkv = cp > 1 ? a.dkv_full.data() : dqkv.data() + w;
      if (cp > 1) zero(a.dkv_full);
      const float* kv = cp > 1 ? s.kv_full.data() : s.qkv.data() + w;
      const int kv_ld = cp > 1 ? 2 * w : 3 * w;
      k::attention_backward(dqkv.data(), dkv, dkv + w, a.datt.data(), s.qkv.data(), 3 * w, kv, kv + w, kv_ld,
                            s.probs.data(), B, Tl, Tl * cp, w, NHl);
    } else if (part == "attn.qkv") {
      std::fill(d_ln_gemm, d_ln_gemm + static_cast<std::size_t>(G) * h, 0.0f);
      k::matmul_backward(d_ln_gemm, wg(g, ll.qkv_w, name), wg(g, ll.qkv_b, name), dqkv.data(),
                         sp ? s.ln1_full.data() : s.ln1.data(), p(g, ll.qkv_w, name), G, h, 3 * w);
    } else if (part == "norm1") {
      k::layernorm_modulate_backward(a.dx.data(), dmod, dmod + h, a.d_ln.data(), a.x[l].data(), s.mean1.data(),
                                     s.rstd1.data(), mod + h, B, Ts, h, 6 * h);
    } else if (part == "adaln") {
      k::matmul_backward(a.dsilu_c.data(), wg(g, ll.ada_w, name), wg(g, ll.ada_b, name), dmod, a.silu_c.data(),
                         p(g, ll.ada_w, name), B, h, 6 * h);
    } else {
      unknown(part);
    }
  }

  // --- final layer and loss -----------------------------------------------------------------
  // With a shard of the tokens (sequence or context parallelism) the loss is this rank's tokens'
  // part of the micro-batch's (kernels::rectified_flow_token_loss), so shards add up.
  double shard_loss(MicroBatch& a, float* dout_tok, float dloss) const {
    return k::rectified_flow_token_loss(a.out_tok.data(), a.batch.x0.data(), a.batch.noise.data(), B, tok0, Ts, P, C, Cout,
                                        S, dout_tok, dloss);
  }

  void head_forward(const std::string& part, MicroBatch& a) {
    const int g = head_g();
    const char* name = part.c_str();
    const int h = H;
    if (part == "head.adaln") {
      k::matmul_forward(a.fmod.data(), a.silu_c.data(), p(g, hl_.ada_w, name), p(g, hl_.ada_b, name), B, h, 2 * h);
    } else if (part == "head.norm") {
      k::layernorm_modulate_forward(a.lnf.data(), a.meanf.data(), a.rstdf.data(), a.x[L].data(), a.fmod.data(),
                                    a.fmod.data() + h, B, Ts, h, 2 * h, layernorm_eps);
    } else if (part == "head.image") {
      k::matmul_forward(a.out_tok.data(), a.lnf.data(), p(g, hl_.out_w, name), p(g, hl_.out_b, name), B * Ts, h, pout);
      if (!token_shard) k::unpatchify_forward(a.v_hat.data(), a.out_tok.data(), B, Cout, S, P);
    } else if (part == "loss") {
      a.loss = token_shard ? shard_loss(a, nullptr, 0)
                           : k::rectified_flow_loss_forward(a.v_hat.data(), a.batch.x0.data(), a.batch.noise.data(), B,
                                                            Cout, C, S * S);
      a.loss_done = true;
    } else {
      unknown(part);
    }
  }

  void head_backward(const std::string& part, MicroBatch& a) {
    const int g = head_g();
    const char* name = part.c_str();
    const int h = H;
    if (part == "loss") {
      // Seeds the micro-batch's backward. Scaled by 1/micro_batches so that the gradients summed
      // over a step's micro-batches are those of the mean loss over them.
      zero(a.dv_hat);
      zero(a.dsilu_c);
      a.dc_ready = false;
      if (dp) {  // a new backward: its per-sample norms start from zero
        std::fill(a.sq_norm.begin(), a.sq_norm.end(), 0.0);
        a.clipped = false;
      }
      if (token_shard) {
        zero(a.dout_tok);
        shard_loss(a, a.dout_tok.data(), 1.0f / micro_batches);
      } else {
        k::rectified_flow_loss_backward(a.dv_hat.data(), a.v_hat.data(), a.batch.x0.data(), a.batch.noise.data(),
                                        1.0f / micro_batches, B, Cout, C, S * S);
      }
    } else if (part == "head.image") {
      if (!token_shard) {
        zero(a.dout_tok);
        k::unpatchify_backward(a.dout_tok.data(), a.dv_hat.data(), B, Cout, S, P);
      }
      zero(a.d_ln);
      k::matmul_backward(a.d_ln.data(), wg(g, hl_.out_w, name), wg(g, hl_.out_b, name), a.dout_tok.data(),
                         a.lnf.data(), p(g, hl_.out_w, name), B * Ts, h, pout);
    } else if (part == "head.norm") {
      zero(a.dx);
      zero(a.dfmod);
      k::layernorm_modulate_backward(a.dx.data(), a.dfmod.data(), a.dfmod.data() + h, a.d_ln.data(), a.x[L].data(),
                                     a.meanf.data(), a.rstdf.data(), a.fmod.data() + h, B, Ts, h, 2 * h);
    } else if (part == "head.adaln") {
      k::matmul_backward(a.dsilu_c.data(), wg(g, hl_.ada_w, name), wg(g, hl_.ada_b, name), a.dfmod.data(),
                         a.silu_c.data(), p(g, hl_.ada_w, name), B, h, 2 * h);
    } else {
      unknown(part);
    }
  }

  // --- communication ---------------------------------------------------------------------------
  Buffer& stage_buffer(const Op& op, std::size_t n) {
    Buffer& b = staging[&op];
    b.assign(n, 0.0f);
    return b;
  }
  int model_chunk(const Op& op) const { return std::max(0, op.chunk) * std::max(1, sh.pp) + sh.stage; }

  TensorComm comm_begin(const Op& op) {
    const std::string& part = op.part;
    MicroBatch& a = micro(op.microbatch, op.name);
    const bool fwd = op.phase != Phase::backward;
    const std::size_t R = static_cast<std::size_t>(B) * Ts, G = static_cast<std::size_t>(B) * Tl, h = H;
    TensorComm io;
    auto in_place = [&](float* p, std::size_t n) {
      io.send = p;
      io.recv = p;
      io.send_count = io.recv_count = n;
    };
    if (part == "pp.fwd.send" || part == "pp.bwd.send") {
      int mc = model_chunk(op);
      const float* x = fwd ? a.x[chunk_first[mc + 1]].data() : a.dx.data();
      const float* c = fwd ? a.c.data() : a.dsilu_c.data();
      Buffer& buf = stage_buffer(op, R * h + static_cast<std::size_t>(B) * h);
      std::memcpy(buf.data(), x, sizeof(float) * R * h);
      std::memcpy(buf.data() + R * h, c, sizeof(float) * B * h);
      io.send = buf.data();
      io.send_count = buf.size();
      return io;
    }
    if (part == "pp.fwd.recv" || part == "pp.bwd.recv") {
      Buffer& buf = stage_buffer(op, R * h + static_cast<std::size_t>(B) * h);
      io.recv = buf.data();
      io.recv_count = buf.size();
      return io;
    }
    if (part.size() > 12 && part.compare(part.size() - 12, 12, ".norm_gather") == 0) {
      // DP-SGD under CP: this rank's rows of the op's A and G (or its partial G), gathered.
      require_dp(op.name);
      return stage_cp_norm_gather(staging[&op], norm_linears(part.substr(0, part.size() - 12), op.layer, a), B, cp);
    }
    if (part == "privacy.norms.tp_allreduce" || part == "privacy.norms.cp_allreduce" ||
        part == "privacy.norms.pp_allreduce") {
      // DP-SGD: the per-sample squared norms' partial sums over the TP ranks or the stages
      require_dp(op.name);
      Buffer& buf = stage_buffer(op, a.sq_norm.size());  // the communicator sums floats
      std::copy(a.sq_norm.begin(), a.sq_norm.end(), buf.begin());
      in_place(buf.data(), buf.size());
      return io;
    }
    const int l = op.layer;
    if (l < 0 || l >= L || group_of_layer[l] < 0) throw std::logic_error("DiT: communication op " + op.name + " has no layer here");
    LayerActs& s = a.layer[l];
    const bool attn = part.rfind("attn.", 0) == 0;
    if (part == "attn.tp_allreduce" || part == "mlp.tp_allreduce") {
      // Forward: the row-parallel GEMM's partial sums; backward: the column-parallel GEMM's
      // partial input gradient.
      if (fwd) in_place(attn ? s.proj.data() : s.fc2.data(), G * h);
      else in_place(a.d_ln.data(), R * h);
      return io;
    }
    if (part == "attn.sp_allgather" || part == "mlp.sp_allgather") {
      if (fwd) {  // the norm's shard, gathered for the column-parallel GEMM
        io.send = attn ? s.ln1.data() : s.ln2.data();
        io.send_count = R * h;
        io.recv = stage_buffer(op, G * h).data();
        io.recv_count = G * h;
      } else {  // its gradient: reduce-scatter of the GEMM's partial input gradient
        Buffer& buf = stage_buffer(op, G * h);
        to_rank_major(buf.data(), a.d_ln_full.data(), B, tp, Ts, H);
        io.send = buf.data();
        io.send_count = G * h;
        io.recv = a.d_ln.data();
        io.recv_count = R * h;
      }
      return io;
    }
    if (part == "attn.sp_reducescatter" || part == "mlp.sp_reducescatter") {
      if (fwd) {  // the row-parallel GEMM's partial sums, reduced onto each rank's shard
        Buffer& buf = stage_buffer(op, G * h);
        to_rank_major(buf.data(), attn ? s.proj.data() : s.fc2.data(), B, tp, Ts, H);
        io.send = buf.data();
        io.send_count = G * h;
        io.recv = attn ? s.proj_red.data() : s.fc2_red.data();
        io.recv_count = R * h;
      } else {  // its gradient: the shards' output gradients gathered
        io.send = attn ? a.dproj.data() : a.dfc2.data();
        io.send_count = R * h;
        io.recv = stage_buffer(op, G * h).data();
        io.recv_count = G * h;
      }
      return io;
    }
    if (part == "attn.cp_kv") {
      const std::size_t w = hl, kv_local = static_cast<std::size_t>(B) * Tl * 2 * w;
      if (fwd) {  // this rank's K and V, gathered from every CP rank
        Buffer& send = staging[&op];
        send.assign(kv_local + kv_local * cp, 0.0f);
        for (std::size_t r = 0; r < G; ++r)
          std::memcpy(send.data() + r * 2 * w, s.qkv.data() + r * 3 * w + w, sizeof(float) * 2 * w);
        io.send = send.data();
        io.send_count = kv_local;
        io.recv = send.data() + kv_local;
        io.recv_count = kv_local * cp;
      } else {  // the K and V gradients of every rank's keys, reduce-scattered to their owners
        Buffer& send = staging[&op];
        send.assign(kv_local * cp + kv_local, 0.0f);
        to_rank_major(send.data(), a.dkv_full.data(), B, cp, Tl, static_cast<int>(2 * w));
        io.send = send.data();
        io.send_count = kv_local * cp;
        io.recv = send.data() + kv_local * cp;
        io.recv_count = kv_local;
      }
      return io;
    }
    throw std::logic_error("DiT: no tensor communication for op " + op.name);
  }

  void comm_end(const Op& op) {
    const std::string& part = op.part;
    MicroBatch& a = micro(op.microbatch, op.name);
    const bool fwd = op.phase != Phase::backward;
    const std::size_t R = static_cast<std::size_t>(B) * Ts, h = H;
    auto it = staging.find(&op);
    if (part == "pp.fwd.recv" || part == "pp.bwd.recv") {
      const float* buf = it->second.data();
      int mc = model_chunk(op);
      if (fwd) {
        std::memcpy(a.x[chunk_first[mc]].data(), buf, sizeof(float) * R * h);
        std::memcpy(a.c.data(), buf + R * h, sizeof(float) * B * h);
        k::silu_forward(a.silu_c.data(), a.c.data(), a.c.size());
      } else {
        std::memcpy(a.dx.data(), buf, sizeof(float) * R * h);
        std::memcpy(a.dsilu_c.data(), buf + R * h, sizeof(float) * B * h);
        a.dc_ready = false;
      }
    } else if (part == "attn.sp_allgather" || part == "mlp.sp_allgather") {
      if (fwd) {
        LayerActs& s = a.layer[op.layer];
        from_rank_major(part[0] == 'a' ? s.ln1_full.data() : s.ln2_full.data(), it->second.data(), B, tp, Ts, H);
      }
    } else if (part == "attn.sp_reducescatter" || part == "mlp.sp_reducescatter") {
      if (!fwd) from_rank_major(part[0] == 'a' ? a.dproj_full.data() : a.dfc2_full.data(), it->second.data(), B, tp, Ts, H);
    } else if (part.size() > 12 && part.compare(part.size() - 12, 12, ".norm_gather") == 0) {
      take_cp_norm_gather(it->second, cp, a.cp_gathered[gather_key(op.layer, part.substr(0, part.size() - 12))]);
    } else if (part == "privacy.norms.tp_allreduce" || part == "privacy.norms.cp_allreduce" ||
               part == "privacy.norms.pp_allreduce") {
      std::copy(it->second.begin(), it->second.end(), a.sq_norm.begin());
    } else if (part == "attn.cp_kv") {
      LayerActs& s = a.layer[op.layer];
      const std::size_t w = hl, kv_local = static_cast<std::size_t>(B) * Tl * 2 * w;
      if (fwd) {
        from_rank_major(s.kv_full.data(), it->second.data() + kv_local, B, cp, Tl, static_cast<int>(2 * w));
      } else {  // add the reduced K and V gradients into dqkv's K and V columns
        Buffer& dqkv = dp ? s.g_qkv : a.dqkv;
        const float* red = it->second.data() + kv_local * cp;
        for (std::size_t r = 0; r < static_cast<std::size_t>(B) * Tl; ++r)
          for (std::size_t c = 0; c < 2 * w; ++c) dqkv[r * 3 * w + w + c] += red[r * 2 * w + c];
      }
    }
    if (it != staging.end()) staging.erase(it);
  }

  // --- DP-SGD (book-keeping) -----------------------------------------------------------------
  // Backward propagates unclipped input gradients and keeps every linear's output gradient G;
  // ".sample_norm" ops add each sample's squared weight-gradient norm from (A, G); "privacy.clip"
  // turns the norms into clip factors; ".wgrad" ops then add sum_b c_b A_b^T G_b, which is the sum
  // of clipped per-sample gradients because G is linear in each sample's loss.
  // How TP holds a linear: whole on every rank; column-parallel (weight rows and bias split);
  // row-parallel (weight columns split, bias whole). Split parts' per-sample squared norms are
  // partial sums over the TP ranks; whole parts enter the sum from TP rank 0 only.
  enum class TpSplit { none, column, row };
  struct Linear {
    const float* inp;
    float* dout;
    int rows, d_in, d_out;  // rows per sample, this rank's widths
    std::size_t w, b;       // offsets of weight and bias in the group
    int group;
    TpSplit split = TpSplit::none;
  };
  // The linears an op holds (embed.timestep holds two: its second layer first, as backward runs).
  std::vector<Linear> linears(const std::string& part, int l, MicroBatch& a) {
    const int h = H;
    if (l >= 0) {
      LayerActs& s = a.layer[l];
      const int g = layer_g(l);
      const auto column = TpSplit::column, row = TpSplit::row;
      if (part == "adaln") return {{a.silu_c.data(), s.g_mod.data(), 1, h, 6 * h, ll.ada_w, ll.ada_b, g}};
      if (part == "attn.qkv") return {{s.ln1.data(), s.g_qkv.data(), Tl, h, 3 * hl, ll.qkv_w, ll.qkv_b, g, column}};
      if (part == "attn.proj") return {{s.att.data(), s.g_proj.data(), Tl, hl, h, ll.proj_w, ll.proj_b, g, row}};
      if (part == "mlp.fc1") return {{s.ln2.data(), s.g_fc1.data(), Tl, h, Fl, ll.fc1_w, ll.fc1_b, g, column}};
      if (part == "mlp.fc2") return {{s.act.data(), s.g_fc2.data(), Tl, Fl, h, ll.fc2_w, ll.fc2_b, g, row}};
      unknown(part + " (no weights)");
    }
    // The embedder's and the final layer's token rows: this rank's shard under CP (Ts of them).
    if (part == "embed.patch")
      return {{token_shard ? a.patches_local.data() : a.patches.data(), a.dx.data(), Ts, pin, h, el.patch_w, el.patch_b,
               embed_g()}};
    if (part == "embed.timestep")
      return {{a.t_a1.data(), a.dc.data(), 1, h, h, el.t_w2, el.t_b2, embed_g()},
              {a.t_freq.data(), a.dt_h1.data(), 1, fe, h, el.t_w1, el.t_b1, embed_g()}};
    if (part == "head.adaln") return {{a.silu_c.data(), a.dfmod.data(), 1, h, 2 * h, hl_.ada_w, hl_.ada_b, head_g()}};
    if (part == "head.image") return {{a.lnf.data(), a.dout_tok.data(), Ts, h, pout, hl_.out_w, hl_.out_b, head_g()}};
    unknown(part + " (no weights)");
  }

  // The linears (or the class table) whose per-sample norms this rank adds for an op, in the form
  // exec/model/cp_sample_norms.hpp gathers and reduces under CP: the TP rule as sample_norm's.
  std::vector<NormLinear> norm_linears(const std::string& part, int l, MicroBatch& a) {
    const bool first = tpi == 0;
    std::vector<NormLinear> out;
    if (part == "embed.class") {
      if (first && classes > 0) {
        ensure_dc(a);
        out.push_back({nullptr, a.dc.data(), 1, 0, H, false, false});
      }
      return out;
    }
    const bool per_sample = part == "adaln" || part == "embed.timestep" || part == "head.adaln";
    for (const Linear& x : linears(part, l, a)) {
      if (x.split == TpSplit::none && !first) continue;
      out.push_back({x.inp, x.dout, x.rows, x.d_in, x.d_out, x.split == TpSplit::column || first, !per_sample});
    }
    return out;
  }
  static std::string gather_key(int l, const std::string& base) { return std::to_string(l).append("/").append(base); }

  void require_dp(const std::string& part) const {
    if (!dp) throw std::logic_error("DiT: op " + part + " is a DP-SGD op, but privacy is not enabled on this model");
  }

  void sample_norm(const std::string& part, int l, MicroBatch& a) {
    require_dp(part);
    if (cp > 1) {  // the whole samples this CP rank owns, from the op's gathered rows
      auto it = a.cp_gathered.find(gather_key(l, part));
      if (it == a.cp_gathered.end())
        throw std::logic_error("DiT: " + part + ".sample_norm under context parallelism before its .norm_gather");
      cp_owned_sq_norms(a.sq_norm.data(), it->second.data(), norm_linears(part, l, a), B, cp, cpi);
      a.cp_gathered.erase(it);
      return;
    }
    local_sq_norms(a.sq_norm.data(), norm_linears(part, l, a), B, a.scratch);
  }

  // Clip factor per sample: its weight (0 for a Poisson-sampling slot left empty) times
  // min(1, C / ||g_b||), exactly 1 when the norm is within C so that an unbounded C changes nothing.
  void clip(MicroBatch& a, const std::string& part) {
    require_dp(part);
    // The buffers hold g_b / (B x micro_batches); model/privacy.hpp has the rule.
    a.clip = ditwin::clip_factors(a.sq_norm, static_cast<double>(B) * micro_batches, clip_norm, a.batch.weight);
    a.clipped = true;
  }

  // G with each sample's rows scaled by its clip factor (G itself when every factor is 1).
  const float* clipped(MicroBatch& a, const float* g, int rows, int width) {
    bool all_one = std::all_of(a.clip.begin(), a.clip.end(), [](float c) { return c == 1.0f; });
    if (all_one) return g;
    k::scale_sample_rows(a.scaled.data(), g, a.clip.data(), B, rows, width);
    return a.scaled.data();
  }

  void wgrad(const std::string& part, int l, MicroBatch& a) {
    require_dp(part);
    if (!a.clipped) throw std::logic_error("DiT: op " + part + ".wgrad runs before privacy.clip of its micro-batch");
    const char* name = part.c_str();
    if (part == "embed.class") {
      if (classes == 0) return;
      k::class_embedding_backward(gr(embed_g(), el.y_table, name), clipped(a, a.dc.data(), 1, H), a.batch.y.data(), B, H);
      return;
    }
    for (const Linear& x : linears(part, l, a))
      k::matmul_backward(nullptr, gr(x.group, x.w, name), gr(x.group, x.b, name), clipped(a, x.dout, x.rows, x.d_out),
                         x.inp, p(x.group, x.w, name), B * x.rows, x.d_in, x.d_out);
  }

  [[noreturn]] static void unknown(const std::string& part) {
    throw std::logic_error("DiT: unknown op part '" + part + "' for this model");
  }
};

DiT::DiT(const ModelSpec& model, int micro_batch, int micro_batches, const ModelShard& shard)
    : impl_(std::make_unique<Impl>(model, micro_batch, micro_batches, shard)) {}
DiT::~DiT() = default;

const std::vector<ParamGroup>& DiT::groups() const { return impl_->groups; }

std::size_t DiT::parameter_count() const { return impl_->global.size(); }
const std::vector<std::size_t>& DiT::global_index() const { return impl_->global; }
const std::vector<char>& DiT::tp_replicated() const { return impl_->replicated; }
std::size_t DiT::global_parameter_count() const { return impl_->global_count; }
TensorComm DiT::comm_begin(const Op& op) { return impl_->comm_begin(op); }
void DiT::comm_end(const Op& op) { impl_->comm_end(op); }

void DiT::init_parameters(float* local, std::uint64_t seed) const {
  const Impl& d = *impl_;
  const std::size_t h = d.H;
  // The one-rank model's array, then this rank's elements of it.
  std::vector<float> whole(d.global_count, 0.0f);  // biases, adaLN modulation, final layer
  float* params = whole.data();
  auto xavier = [&](float* w, std::size_t out, std::size_t in, int group, int tensor) {
    init_xavier_uniform(w, out, in, seed, group, tensor);
  };
  auto normal = [&](float* w, std::size_t n, double std, int group, int tensor) { init_normal(w, n, std, seed, group, tensor); };
  // Streams are keyed by the one-rank group index (embed 0, layer l at 1 + l, head L + 1).
  float* e = params;
  xavier(e + d.el.patch_w, h, d.pin, 0, 0);
  normal(e + d.el.t_w1, h * d.fe, 0.02, 0, 1);
  normal(e + d.el.t_w2, h * h, 0.02, 0, 2);
  if (d.classes > 0) normal(e + d.el.y_table, (d.classes + 1) * h, 0.02, 0, 3);
  for (int l = 0; l < d.L; ++l) {
    const int g = 1 + l;
    float* w = params + d.el.size + static_cast<std::size_t>(l) * d.gll.size;
    xavier(w + d.gll.qkv_w, 3 * h, h, g, 0);
    xavier(w + d.gll.proj_w, h, h, g, 1);
    xavier(w + d.gll.fc1_w, d.F, h, g, 2);
    xavier(w + d.gll.fc2_w, h, d.F, g, 3);
  }
  for (std::size_t i = 0; i < d.global.size(); ++i) local[i] = whole[d.global[i]];
}

void DiT::bind(const std::string& group, const float* params, float* grads) {
  auto it = impl_->group_index.find(group);
  if (it == impl_->group_index.end()) throw std::logic_error("DiT::bind: no parameter group '" + group + "'");
  impl_->params[it->second] = params;
  impl_->grads[it->second] = grads;
}

void DiT::set_batch(int mb, Batch batch) {
  Impl& d = *impl_;
  if (mb < 0 || mb >= d.micro_batches)
    throw std::invalid_argument("DiT::set_batch: micro-batch " + std::to_string(mb) + " of " +
                                std::to_string(d.micro_batches));
  const std::size_t n = static_cast<std::size_t>(d.B) * d.C * d.S * d.S;
  if (batch.size != d.B || batch.x0.size() != n || batch.noise.size() != n ||
      batch.t.size() != static_cast<std::size_t>(d.B) || batch.y.size() != static_cast<std::size_t>(d.B))
    throw std::invalid_argument("DiT::set_batch: expected " + std::to_string(d.B) + " samples of " +
                                std::to_string(d.C) + "x" + std::to_string(d.S) + "x" + std::to_string(d.S));
  if (!batch.weight.empty() && batch.weight.size() != static_cast<std::size_t>(d.B))
    throw std::invalid_argument("DiT::set_batch: " + std::to_string(batch.weight.size()) + " sample weights for " +
                                std::to_string(d.B) + " samples");
  for (int y : batch.y)
    if (d.classes > 0 && (y < 0 || y > d.classes))  // index num_classes is the null class
      throw std::invalid_argument("DiT::set_batch: class label " + std::to_string(y) + " out of range");
  MicroBatch& a = d.mbs[mb];
  if (!a.ready) d.allocate(a);
  a.batch = std::move(batch);
  a.loss_done = false;
  if (d.dp) {  // a new step's per-sample norms (under PP only the last stage runs "loss" backward)
    std::fill(a.sq_norm.begin(), a.sq_norm.end(), 0.0);
    a.clipped = false;
  }
}

void DiT::run(const std::string& part, int layer, Phase phase, int mb) {
  Impl& d = *impl_;
  // std::string::append, not "L" + …: GCC 12 at -O3 warns falsely (-Wrestrict) on the latter.
  std::string op;
  if (layer >= 0) op.append("L").append(std::to_string(layer)).append(".");
  op.append(part);
  if (phase != Phase::forward && phase != Phase::backward && phase != Phase::recompute)
    throw std::logic_error("DiT: op " + op + " has phase " + to_string(phase) + ", not a compute phase");
  MicroBatch& a = d.micro(mb, op);
  const bool fwd = phase != Phase::backward;
  auto ends_with = [&](const char* tag) {
    std::size_t n = std::strlen(tag);
    return part.size() > n && part.compare(part.size() - n, n, tag) == 0;
  };
  try {
    if (layer >= d.L) throw std::logic_error("DiT: op " + op + ": layer out of range");
    if (layer >= 0 && d.group_of_layer[layer] < 0)
      throw std::logic_error("DiT: op " + op + " runs on a layer this pipeline stage does not hold");
    if (ends_with(".sample_norm")) {
      d.sample_norm(part.substr(0, part.size() - 12), layer, a);
    } else if (ends_with(".wgrad")) {
      d.wgrad(part.substr(0, part.size() - 6), layer, a);
    } else if (part == "privacy.clip") {
      d.clip(a, op);
    } else if (layer >= 0) {
      if (layer >= d.L) throw std::logic_error("DiT: op " + op + ": layer out of range");
      fwd ? d.layer_forward(part, layer, a) : d.layer_backward(part, layer, a);
    } else if (part.rfind("embed.", 0) == 0) {
      fwd ? d.embed_forward(part, a) : d.embed_backward(part, a);
    } else if (part.rfind("head.", 0) == 0 || part == "loss") {
      fwd ? d.head_forward(part, a) : d.head_backward(part, a);
    } else {
      Impl::unknown(part);
    }
  } catch (const std::logic_error& e) {
    if (std::string(e.what()).find(op) != std::string::npos) throw;
    throw std::logic_error(std::string(e.what()) + " (op " + op + ")");
  }
}

void DiT::enable_privacy(double clip_norm) {
  Impl& d = *impl_;
  if (!(clip_norm > 0)) throw std::invalid_argument("DiT::enable_privacy: the clip norm must be > 0");
  for (const auto& mb : d.mbs)
    if (mb.ready) throw std::logic_error("DiT::enable_privacy: call it before the first set_batch");
  d.dp = true;
  d.clip_norm = clip_norm;
}

std::vector<double> DiT::sample_gradient_norms(int mb) const {
  const Impl& d = *impl_;
  if (!d.dp || mb < 0 || mb >= d.micro_batches || !d.mbs[mb].ready)
    throw std::logic_error("DiT::sample_gradient_norms: no DP-SGD backward for micro-batch " + std::to_string(mb));
  std::vector<double> out;
  for (double sq : d.mbs[mb].sq_norm) out.push_back(std::sqrt(sq) * d.B * d.micro_batches);
  return out;
}

std::vector<float> DiT::clip_factors(int mb) const {
  const Impl& d = *impl_;
  if (!d.dp || mb < 0 || mb >= d.micro_batches || !d.mbs[mb].clipped)
    throw std::logic_error("DiT::clip_factors: micro-batch " + std::to_string(mb) + " has not been clipped");
  return d.mbs[mb].clip;
}

double DiT::loss(int mb) const {
  const Impl& d = *impl_;
  if (mb < 0 || mb >= d.micro_batches || !d.mbs[mb].ready || !d.mbs[mb].loss_done)
    throw std::logic_error("DiT::loss: micro-batch " + std::to_string(mb) + " has no loss forward yet");
  return d.mbs[mb].loss;
}

void adamw_update(float* params, const float* grads, float* m, float* v, std::size_t n, const OptimizerSpec& opt,
                  std::int64_t step) {
  if (step < 1) throw std::logic_error("adamw_update: step counts from 1");
  k::adamw_update(params, grads, m, v, n, static_cast<float>(opt.lr), static_cast<float>(opt.beta1),
                  static_cast<float>(opt.beta2), static_cast<float>(opt.eps), static_cast<float>(opt.weight_decay),
                  step);
}

}  // namespace ditwin::exec
