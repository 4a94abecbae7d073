// Every CPU kernel's backward against central finite differences of its forward, on fresh random
// inputs; the layout kernels against their adjoints and DiT's formulas; AdamW against PyTorch's
// update rule written out.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/adamw.hpp"
#include "kernels/attention.hpp"
#include "kernels/embedding.hpp"
#include "kernels/gelu.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/loss.hpp"
#include "kernels/matmul.hpp"
#include "kernels/residual.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/silu.hpp"
#include "tests/exec_test_util.hpp"

namespace ditwin::kernels {
namespace {
using test::dot;
using test::expect_gradient;
using test::random_vector;

TEST(KernelsMatmul, BackwardMatchesFiniteDifferences) {
  const int n = 5, ic = 7, oc = 6;
  auto x = random_vector(n * ic, 1), w = random_vector(oc * ic, 2), b = random_vector(oc, 3);
  auto r = random_vector(n * oc, 4);
  std::vector<float> out(n * oc);
  auto loss = [&] {
    matmul_forward(out.data(), x.data(), w.data(), b.data(), n, ic, oc);
    return dot(out, r);
  };
  std::vector<float> dx(n * ic, 0.f), dw(oc * ic, 0.f), db(oc, 0.f);
  matmul_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), n, ic, oc);
  expect_gradient(x, dx, loss, "matmul dinp");
  expect_gradient(w, dw, loss, "matmul dweight");
  expect_gradient(b, db, loss, "matmul dbias");
}

TEST(KernelsMatmul, BackwardAddsIntoGradients) {
  const int n = 3, ic = 4, oc = 2;
  auto x = random_vector(n * ic, 5), w = random_vector(oc * ic, 6), d = random_vector(n * oc, 7);
  std::vector<float> once(oc * ic, 0.f), twice(oc * ic, 0.f);
  matmul_backward(nullptr, once.data(), nullptr, d.data(), x.data(), w.data(), n, ic, oc);
  matmul_backward(nullptr, twice.data(), nullptr, d.data(), x.data(), w.data(), n, ic, oc);
  matmul_backward(nullptr, twice.data(), nullptr, d.data(), x.data(), w.data(), n, ic, oc);
  for (int i = 0; i < oc * ic; ++i) EXPECT_NEAR(twice[i], 2 * once[i], 1e-5f);
}

TEST(KernelsLayernorm, ModulatedForwardNormalisesThenScalesAndShifts) {
  const int batch = 2, tokens = 3, ch = 8, stride = 20;
  auto x = random_vector(batch * tokens * ch, 8, 3.0f), mod = random_vector(batch * stride, 9);
  std::vector<float> out(x.size()), mean(batch * tokens), rstd(batch * tokens);
  layernorm_modulate_forward(out.data(), mean.data(), rstd.data(), x.data(), mod.data(), mod.data() + ch, batch,
                             tokens, ch, stride, 1e-6f);
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < tokens; ++t) {
      const float* row = x.data() + (b * tokens + t) * ch;
      double m = 0, v = 0;
      for (int c = 0; c < ch; ++c) m += row[c];
      m /= ch;
      for (int c = 0; c < ch; ++c) v += (row[c] - m) * (row[c] - m);
      v /= ch;
      for (int c = 0; c < ch; ++c) {
        const double expect = (row[c] - m) / std::sqrt(v + 1e-6) * (1 + mod[b * stride + ch + c]) + mod[b * stride + c];
        EXPECT_NEAR(out[(b * tokens + t) * ch + c], expect, 1e-5);
      }
    }
}

TEST(KernelsLayernorm, BackwardMatchesFiniteDifferences) {
  const int batch = 2, tokens = 3, ch = 8, stride = 3 * ch;  // shift, scale and one unused slot
  auto x = random_vector(batch * tokens * ch, 10, 2.0f), mod = random_vector(batch * stride, 11, 0.5f);
  auto r = random_vector(x.size(), 12);
  std::vector<float> out(x.size()), mean(batch * tokens), rstd(batch * tokens);
  auto loss = [&] {
    layernorm_modulate_forward(out.data(), mean.data(), rstd.data(), x.data(), mod.data(), mod.data() + ch, batch,
                               tokens, ch, stride, 1e-6f);
    return dot(out, r);
  };
  loss();
  std::vector<float> dx(x.size(), 0.f), dmod(mod.size(), 0.f);
  layernorm_modulate_backward(dx.data(), dmod.data(), dmod.data() + ch, r.data(), x.data(), mean.data(), rstd.data(),
                              mod.data() + ch, batch, tokens, ch, stride);
  expect_gradient(x, dx, loss, "layernorm dx");
  expect_gradient(mod, dmod, loss, "layernorm dshift/dscale");
  for (int b = 0; b < batch; ++b)
    for (int c = 2 * ch; c < 3 * ch; ++c) EXPECT_EQ(dmod[b * stride + c], 0.f) << "wrote outside shift/scale";
}

TEST(KernelsResidual, GatedResidualBackwardMatchesFiniteDifferences) {
  const int batch = 2, tokens = 4, ch = 5, stride = 2 * ch;
  auto x = random_vector(batch * tokens * ch, 13), br = random_vector(x.size(), 14);
  auto gate = random_vector(batch * stride, 15), r = random_vector(x.size(), 16);
  std::vector<float> out(x.size());
  auto loss = [&] {
    gated_residual_forward(out.data(), x.data(), br.data(), gate.data() + ch, batch, tokens, ch, stride);
    return dot(out, r);
  };
  std::vector<float> dx(x.size(), 0.f), dbr(x.size(), 0.f), dgate(gate.size(), 0.f);
  gated_residual_backward(dx.data(), dbr.data(), dgate.data() + ch, r.data(), br.data(), gate.data() + ch, batch,
                          tokens, ch, stride);
  expect_gradient(x, dx, loss, "residual dx");
  expect_gradient(br, dbr, loss, "residual dbranch");
  expect_gradient(gate, dgate, loss, "residual dgate");
}

TEST(KernelsActivation, GeluAndSiluBackwardMatchFiniteDifferences) {
  auto x = random_vector(64, 17, 2.0f), r = random_vector(64, 18);
  std::vector<float> out(64);
  auto gelu_loss = [&] {
    gelu_forward(out.data(), x.data(), x.size());
    return dot(out, r);
  };
  std::vector<float> dx(64, 0.f);
  gelu_backward(dx.data(), x.data(), r.data(), x.size());
  expect_gradient(x, dx, gelu_loss, "gelu");
  auto silu_loss = [&] {
    silu_forward(out.data(), x.data(), x.size());
    return dot(out, r);
  };
  std::fill(dx.begin(), dx.end(), 0.f);
  silu_backward(dx.data(), x.data(), r.data(), x.size());
  expect_gradient(x, dx, silu_loss, "silu");
  // The tanh approximation, at a point worked by hand: gelu(1) = 0.5·(1 + tanh(0.79788·1.044715)).
  float one = 1.0f, g = 0;
  gelu_forward(&g, &one, 1);
  EXPECT_NEAR(g, 0.8411920f, 1e-6f);
}

TEST(KernelsAttention, ForwardMatchesSoftmaxFormula) {
  const int batch = 1, tokens = 3, ch = 4, heads = 2, d = ch / heads;
  auto qkv = random_vector(batch * tokens * 3 * ch, 19);
  std::vector<float> out(tokens * ch), probs(heads * tokens * tokens);
  attention_forward(out.data(), probs.data(), qkv.data(), batch, tokens, ch, heads);
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < tokens; ++i) {
      std::vector<double> s(tokens);
      double mx = -1e30, sum = 0;
      for (int j = 0; j < tokens; ++j) {
        double v = 0;
        for (int e = 0; e < d; ++e) v += qkv[i * 3 * ch + h * d + e] * qkv[j * 3 * ch + ch + h * d + e];
        s[j] = v / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, s[j]);
      }
      for (auto& v : s) sum += (v = std::exp(v - mx));
      for (int e = 0; e < d; ++e) {
        double o = 0;
        for (int j = 0; j < tokens; ++j) o += s[j] / sum * qkv[j * 3 * ch + 2 * ch + h * d + e];
        EXPECT_NEAR(out[i * ch + h * d + e], o, 1e-5);
      }
    }
}

TEST(KernelsAttention, BackwardMatchesFiniteDifferences) {
  const int batch = 2, tokens = 5, ch = 8, heads = 2;
  auto qkv = random_vector(batch * tokens * 3 * ch, 20), r = random_vector(batch * tokens * ch, 21);
  std::vector<float> out(r.size()), probs(batch * heads * tokens * tokens);
  auto loss = [&] {
    attention_forward(out.data(), probs.data(), qkv.data(), batch, tokens, ch, heads);
    return dot(out, r);
  };
  loss();
  std::vector<float> dqkv(qkv.size(), 0.f);
  attention_backward(dqkv.data(), r.data(), qkv.data(), probs.data(), batch, tokens, ch, heads);
  expect_gradient(qkv, dqkv, loss, "attention dqkv");
}

TEST(KernelsAttention, MaskedRowsGiveZeroProbabilityAndTheBackwardStillMatches) {
  // Transfusion's mask on 2 text + 3 image tokens: text causal, image rows see everything.
  const int batch = 2, tokens = 5, text = 2, ch = 8, heads = 2;
  std::vector<unsigned char> mask(tokens * tokens);
  for (int i = 0; i < tokens; ++i)
    for (int j = 0; j < tokens; ++j) mask[i * tokens + j] = (j <= i || i >= text) ? 1 : 0;
  auto qkv = random_vector(batch * tokens * 3 * ch, 60), r = random_vector(batch * tokens * ch, 61);
  std::vector<float> out(r.size()), probs(batch * heads * tokens * tokens);
  auto loss = [&] {
    attention_forward(out.data(), probs.data(), qkv.data(), 3 * ch, qkv.data() + ch, qkv.data() + 2 * ch, 3 * ch, batch,
                      tokens, tokens, ch, heads, mask.data());
    return dot(out, r);
  };
  loss();
  for (int bh = 0; bh < batch * heads; ++bh)
    for (int i = 0; i < tokens; ++i)
      for (int j = 0; j < tokens; ++j)
        if (!mask[i * tokens + j]) {
          EXPECT_EQ(probs[(bh * tokens + i) * tokens + j], 0.0f) << i << "," << j;
        }
  // The first token attends only to itself: its output is its own V.
  for (int e = 0; e < ch; ++e) EXPECT_NEAR(out[e], qkv[2 * ch + e], 1e-6f);
  std::vector<float> dqkv(qkv.size(), 0.f);
  attention_backward(dqkv.data(), r.data(), qkv.data(), probs.data(), batch, tokens, ch, heads);
  expect_gradient(qkv, dqkv, loss, "masked attention dqkv");
  // A later token's K and V cannot reach an earlier text token's output.
  const auto before = out;
  for (int e = ch; e < 3 * ch; ++e) qkv[1 * 3 * ch + e] += 1.0f;  // token 1's K and V
  loss();
  for (int e = 0; e < ch; ++e) EXPECT_EQ(out[e], before[e]);
}

TEST(KernelsRmsnorm, ForwardIsUnitRmsTimesGainAndBackwardMatches) {
  const int rows = 4, ch = 16;
  auto x = random_vector(rows * ch, 62, 3.0f), w = random_vector(ch, 63), r = random_vector(rows * ch, 64);
  std::vector<float> out(x.size()), rstd(rows);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), rows, ch, 1e-5f);
    return dot(out, r);
  };
  loss();
  for (int i = 0; i < rows; ++i) {
    double sq = 0;
    for (int c = 0; c < ch; ++c) sq += std::pow(out[i * ch + c] / w[c], 2);
    EXPECT_NEAR(sq / ch, 1.0, 1e-4);
  }
  std::vector<float> dx(x.size(), 0.f), dw(ch, 0.f);
  rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), rstd.data(), w.data(), rows, ch);
  expect_gradient(x, dx, loss, "rmsnorm dx");
  expect_gradient(w, dw, loss, "rmsnorm dweight");
}

TEST(KernelsActivation, SwigluBackwardMatchesFiniteDifferences) {
  const int rows = 3, width = 8;
  auto x = random_vector(rows * 2 * width, 65, 2.0f), r = random_vector(rows * width, 66);
  std::vector<float> out(rows * width);
  auto loss = [&] {
    swiglu_forward(out.data(), x.data(), rows, width);
    return dot(out, r);
  };
  loss();
  EXPECT_NEAR(out[0], x[0] / (1 + std::exp(-x[0])) * x[width], 1e-6f);
  std::vector<float> dx(x.size(), 0.f);
  swiglu_backward(dx.data(), x.data(), r.data(), rows, width);
  expect_gradient(x, dx, loss, "swiglu");
}

TEST(KernelsLoss, CrossEntropyIsMinusLogSoftmaxAndBackwardMatches) {
  const int rows = 4, vocab = 7;
  auto logits = random_vector(rows * vocab, 67, 2.0f);
  const std::vector<int> targets = {3, 0, -1, 6};  // row 2 predicts nothing
  long count = 0;
  auto loss = [&] { return cross_entropy_forward(logits.data(), targets.data(), rows, vocab, &count); };
  const double l = loss();
  EXPECT_EQ(count, 3);
  double expect = 0;
  for (int r : {0, 1, 3}) {
    double z = 0;
    for (int j = 0; j < vocab; ++j) z += std::exp(static_cast<double>(logits[r * vocab + j]));
    expect += std::log(z) - logits[r * vocab + targets[r]];
  }
  EXPECT_NEAR(l, expect, 1e-6);
  std::vector<float> d(logits.size(), 0.f);
  cross_entropy_backward(d.data(), logits.data(), targets.data(), 1.0f, rows, vocab);
  for (int j = 0; j < vocab; ++j) EXPECT_EQ(d[2 * vocab + j], 0.0f);
  expect_gradient(logits, d, loss, "cross-entropy dlogits");
}

TEST(KernelsEmbedding, PatchifyAndUnpatchifyBackwardsAreTheirAdjoints) {
  const int batch = 2, ch = 3, size = 4, patch = 2, tokens = (size / patch) * (size / patch);
  auto img = random_vector(batch * ch * size * size, 22), tok = random_vector(batch * tokens * ch * patch * patch, 23);
  std::vector<float> out_tok(tok.size()), out_img(img.size(), 0.f);
  patchify_forward(out_tok.data(), img.data(), batch, ch, size, patch);
  patchify_backward(out_img.data(), tok.data(), batch, ch, size, patch);
  EXPECT_NEAR(dot(out_tok, tok), dot(img, out_img), 1e-4);
  std::vector<float> u_img(img.size()), u_tok(tok.size(), 0.f);
  unpatchify_forward(u_img.data(), tok.data(), batch, ch, size, patch);
  unpatchify_backward(u_tok.data(), img.data(), batch, ch, size, patch);
  EXPECT_NEAR(dot(u_img, img), dot(tok, u_tok), 1e-4);
  // Layouts: patchify orders a token (channel, row, column) like Conv2d's weight; unpatchify
  // reads (row, column, channel) like DiT's einsum "nhwpqc->nchpwq". Sample 1, channel 2, pixel (3, 2):
  // patch (1, 1) = token 3, in-patch position (1, 0).
  const int token = 3, c = 2, i = 1, j = 0;
  const float pixel = img[((1 * ch + c) * size + 3) * size + 2];
  EXPECT_EQ(out_tok[(1 * tokens + token) * ch * patch * patch + (c * patch + i) * patch + j], pixel);
  EXPECT_EQ(u_img[((1 * ch + c) * size + 3) * size + 2],
            tok[(1 * tokens + token) * ch * patch * patch + (i * patch + j) * ch + c]);
}

TEST(KernelsEmbedding, SinusoidsFollowDiT) {
  // Timestep: [cos(t·f_i), sin(t·f_i)], f_i = 10000^(−i/half).
  const int dim = 8, half = 4;
  float t[2] = {0.0f, 37.0f};
  std::vector<float> e(2 * dim);
  timestep_embedding_forward(e.data(), t, 2, dim, 10000.0f);
  for (int i = 0; i < half; ++i) {
    EXPECT_FLOAT_EQ(e[i], 1.0f);
    EXPECT_FLOAT_EQ(e[half + i], 0.0f);
    const double f = std::pow(10000.0, -static_cast<double>(i) / half);
    EXPECT_NEAR(e[dim + i], std::cos(37.0 * f), 1e-6);
    EXPECT_NEAR(e[dim + half + i], std::sin(37.0 * f), 1e-6);
  }
  // Position: token (row 1, column 2) of a 3x3 grid, dim 8: [sin, cos](col·ω), [sin, cos](row·ω), ω_k = 10000^(−k/2).
  std::vector<float> pe(9 * 8);
  pos_embed_2d_sincos(pe.data(), 3, 8);
  const float* row = pe.data() + (1 * 3 + 2) * 8;
  for (int k2 = 0; k2 < 2; ++k2) {
    const double w = std::pow(10000.0, -k2 / 2.0);
    EXPECT_NEAR(row[k2], std::sin(2 * w), 1e-6);
    EXPECT_NEAR(row[2 + k2], std::cos(2 * w), 1e-6);
    EXPECT_NEAR(row[4 + k2], std::sin(1 * w), 1e-6);
    EXPECT_NEAR(row[6 + k2], std::cos(1 * w), 1e-6);
  }
}

TEST(KernelsEmbedding, ClassTableBackwardMatchesFiniteDifferences) {
  const int classes = 4, ch = 3, batch = 5;
  const int labels[batch] = {1, 3, 1, 0, 3};
  auto table = random_vector(classes * ch, 24), r = random_vector(batch * ch, 25);
  std::vector<float> out(batch * ch);
  auto loss = [&] {
    class_embedding_forward(out.data(), table.data(), labels, batch, ch);
    return dot(out, r);
  };
  std::vector<float> dtable(table.size(), 0.f);
  class_embedding_backward(dtable.data(), r.data(), labels, batch, ch);
  expect_gradient(table, dtable, loss, "class table");
  for (int c = 0; c < ch; ++c) EXPECT_EQ(dtable[2 * ch + c], 0.f) << "class 2 is in no sample";
}

TEST(KernelsLoss, RectifiedFlowLossAndGradientIgnoreTheSigmaChannels) {
  const int batch = 2, ch = 2, out_ch = 4, plane = 6;
  auto v_hat = random_vector(batch * out_ch * plane, 26), x0 = random_vector(batch * ch * plane, 27);
  auto noise = random_vector(x0.size(), 28);
  double expect = 0;
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < ch; ++c)
      for (int p = 0; p < plane; ++p) {
        const double d = v_hat[(b * out_ch + c) * plane + p] - (noise[(b * ch + c) * plane + p] - x0[(b * ch + c) * plane + p]);
        expect += d * d;
      }
  expect /= batch * ch * plane;
  EXPECT_NEAR(rectified_flow_loss_forward(v_hat.data(), x0.data(), noise.data(), batch, out_ch, ch, plane), expect, 1e-6);
  std::vector<float> dv(v_hat.size(), 0.f);
  rectified_flow_loss_backward(dv.data(), v_hat.data(), x0.data(), noise.data(), 1.0f, batch, out_ch, ch, plane);
  auto loss = [&] { return rectified_flow_loss_forward(v_hat.data(), x0.data(), noise.data(), batch, out_ch, ch, plane); };
  expect_gradient(v_hat, dv, loss, "rectified-flow loss");
  for (int b = 0; b < batch; ++b)
    for (int i = ch * plane; i < out_ch * plane; ++i) EXPECT_EQ(dv[b * out_ch * plane + i], 0.f);
  // The interpolant: z = (1 − t)·x0 + t·ε.
  const float t[batch] = {0.25f, 0.9f};
  std::vector<float> z(x0.size());
  rectified_flow_input(z.data(), x0.data(), noise.data(), t, batch, ch * plane);
  EXPECT_FLOAT_EQ(z[5], 0.75f * x0[5] + 0.25f * noise[5]);
  EXPECT_FLOAT_EQ(z[ch * plane + 1], 0.1f * x0[ch * plane + 1] + 0.9f * noise[ch * plane + 1]);
}

TEST(KernelsAdamw, TwoStepsMatchTheUpdateRule) {
  // torch.optim.AdamW: p ← p − lr·wd·p; m̂ = m/(1−β1^t), v̂ = v/(1−β2^t); p ← p − lr·m̂/(sqrt(v̂)+eps).
  const float lr = 0.1f, b1 = 0.9f, b2 = 0.99f, eps = 1e-8f, wd = 0.01f;
  float p[2] = {1.0f, -2.0f}, m[2] = {0, 0}, v[2] = {0, 0};
  const float g1[2] = {0.5f, -1.0f}, g2[2] = {-0.25f, 3.0f};
  double ep[2] = {1.0, -2.0}, em[2] = {0, 0}, ev[2] = {0, 0};
  const float* gs[2] = {g1, g2};
  for (int step = 1; step <= 2; ++step) {
    adamw_update(p, gs[step - 1], m, v, 2, lr, b1, b2, eps, wd, step);
    for (int i = 0; i < 2; ++i) {
      const double g = gs[step - 1][i];
      em[i] = b1 * em[i] + (1 - b1) * g;
      ev[i] = b2 * ev[i] + (1 - b2) * g * g;
      const double mh = em[i] / (1 - std::pow(b1, step)), vh = ev[i] / (1 - std::pow(b2, step));
      ep[i] = ep[i] * (1 - lr * wd) - lr * mh / (std::sqrt(vh) + eps);
      EXPECT_NEAR(p[i], ep[i], 1e-6) << "step " << step << " param " << i;
    }
  }
}

}  // namespace
}  // namespace ditwin::kernels
