// Every CUDA kernel against its CPU version (kernels/*.cpp, itself checked against finite
// differences) on fresh random inputs, outputs poisoned with NaN first, bf16 storage with a bf16
// tolerance; and the backward kernels against finite differences of their own forward in fp32
// storage. Label `gpu`: each test skips with a message where no GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/adamw.hpp"
#include "kernels/attention.hpp"
#include "kernels/cuda/adamw.hpp"
#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/elementwise.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/matmul.hpp"
#include "kernels/cuda/privacy.hpp"
#include "kernels/gaussian_noise.hpp"
#include "kernels/per_sample_norm.hpp"
#include "kernels/embedding.hpp"
#include "kernels/gelu.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/loss.hpp"
#include "kernels/matmul.hpp"
#include "kernels/residual.hpp"
#include "kernels/silu.hpp"
#include "tests/cuda_test_util.hpp"
#include "tests/exec_test_util.hpp"

namespace ditwin::test {
namespace {

namespace k = ditwin::kernels;
using kc::bf16;

using CudaElementwise = CudaTest;
using CudaLayernorm = CudaTest;
using CudaMatmul = CudaTest;
using CudaAttention = CudaTest;
using CudaAdamW = CudaTest;
using CudaPrivacy = CudaTest;
using CudaFiniteDifferences = CudaTest;

// --- against the CPU kernels, bf16 storage -------------------------------------------------

TEST_F(CudaElementwise, GeluAndSiluMatchCpu) {
  for (std::size_t n : {std::size_t{1000003}, std::size_t{77}}) {  // vector path with a tail, and a short array
    auto x = rounded<bf16>(fresh(n, 2.0f)), d = rounded<bf16>(fresh(n)), acc = rounded<bf16>(fresh(n));
    DeviceArray<bf16> dx_in(x), dd(d), out(n), grad(acc);
    for (int act = 0; act < 2; ++act) {
      std::vector<float> ref(n), gref = acc;
      out.poison();
      grad.upload(acc);
      if (act == 0) {
        k::gelu_forward(ref.data(), x.data(), n);
        k::gelu_backward(gref.data(), x.data(), d.data(), n);
        kc::gelu_forward(out.get(), dx_in.get(), n, stream);
        kc::gelu_backward(grad.get(), dx_in.get(), dd.get(), n, stream);
      } else {
        k::silu_forward(ref.data(), x.data(), n);
        k::silu_backward(gref.data(), x.data(), d.data(), n);
        kc::silu_forward(out.get(), dx_in.get(), n, stream);
        kc::silu_backward(grad.get(), dx_in.get(), dd.get(), n, stream);
      }
      expect_close(out.download(), ref, tol_bf16, act ? "silu forward" : "gelu forward");
      expect_close(grad.download(), gref, tol_bf16, act ? "silu backward" : "gelu backward");
    }
  }
}

TEST_F(CudaElementwise, GatedResidualMatchesCpu) {
  // Odd token counts and both the 16-byte path (channels 72) and the scalar one (channels 36 is not
  // a multiple of 8 bf16).
  for (int ch : {72, 36}) {
    const int batch = 3, tokens = 37, stride = 6 * ch;
    const std::size_t n = static_cast<std::size_t>(batch) * tokens * ch;
    auto x = rounded<bf16>(fresh(n)), br = rounded<bf16>(fresh(n)), gate = rounded<bf16>(fresh(batch * stride));
    auto dout = rounded<bf16>(fresh(n)), dx0 = rounded<bf16>(fresh(n)), dbr0 = rounded<bf16>(fresh(n));
    auto dgate0 = fresh(batch * stride);
    std::vector<float> ref(n), dx = dx0, dbr = dbr0, dgate = dgate0;
    k::gated_residual_forward(ref.data(), x.data(), br.data(), gate.data(), batch, tokens, ch, stride);
    k::gated_residual_backward(dx.data(), dbr.data(), dgate.data(), dout.data(), br.data(), gate.data(), batch, tokens,
                               ch, stride);
    DeviceArray<bf16> gx(x), gbr(br), ggate(gate), gout(n), gdout(dout), gdx(dx0), gdbr(dbr0);
    DeviceArray<float> gdgate(dgate0);
    gout.poison();
    kc::gated_residual_forward(gout.get(), gx.get(), gbr.get(), ggate.get(), batch, tokens, ch, stride, stream);
    kc::gated_residual_backward(gdx.get(), gdbr.get(), gdgate.get(), gdout.get(), gbr.get(), ggate.get(), batch, tokens,
                                ch, stride, stream);
    expect_close(gout.download(), ref, tol_bf16, "gated residual forward");
    expect_close(gdx.download(), dx, tol_bf16, "gated residual dx");
    expect_close(gdbr.download(), dbr, tol_bf16, "gated residual dbranch");
    expect_close(gdgate.download(), dgate, tol_bf16, "gated residual dgate");
  }
}

TEST_F(CudaLayernorm, ModulatedForwardAndBackwardMatchCpu) {
  for (int ch : {768, 72, 36}) {
    const int batch = 3, tokens = 45, stride = 6 * ch;
    const std::size_t n = static_cast<std::size_t>(batch) * tokens * ch;
    auto x = rounded<bf16>(fresh(n, 3.0f)), mod = rounded<bf16>(fresh(batch * stride, 0.5f));
    auto dout = rounded<bf16>(fresh(n)), dx0 = rounded<bf16>(fresh(n)), dmod0 = fresh(batch * stride);
    std::vector<float> ref(n), mean(batch * tokens), rstd(batch * tokens), dx = dx0, dmod = dmod0;
    k::layernorm_modulate_forward(ref.data(), mean.data(), rstd.data(), x.data(), mod.data(), mod.data() + ch, batch,
                                  tokens, ch, stride, 1e-6f);
    k::layernorm_modulate_backward(dx.data(), dmod.data(), dmod.data() + ch, dout.data(), x.data(), mean.data(),
                                   rstd.data(), mod.data() + ch, batch, tokens, ch, stride);
    DeviceArray<bf16> gx(x), gmod(mod), gout(n), gdout(dout), gdx(dx0);
    DeviceArray<float> gmean(batch * tokens), grstd(batch * tokens), gdmod(dmod0);
    gout.poison();
    gmean.poison();
    grstd.poison();
    kc::layernorm_modulate_forward(gout.get(), gmean.get(), grstd.get(), gx.get(), gmod.get(), gmod.get() + ch, batch,
                                   tokens, ch, stride, 1e-6f, stream);
    kc::layernorm_modulate_backward(gdx.get(), gdmod.get(), gdmod.get() + ch, gdout.get(), gx.get(), gmean.get(),
                                    grstd.get(), gmod.get() + ch, batch, tokens, ch, stride, stream);
    expect_close(gout.download(), ref, tol_bf16, "layernorm forward");
    expect_close(gmean.download(), mean, 1e-5, "layernorm mean");
    expect_close(grstd.download(), rstd, 1e-5, "layernorm rstd");
    expect_close(gdx.download(), dx, tol_bf16, "layernorm dx");
    expect_close(gdmod.download(), dmod, tol_bf16, "layernorm dshift/dscale");
  }
}

TEST_F(CudaLayernorm, FusedResidualEqualsResidualThenNorm) {
  const int batch = 2, tokens = 33, ch = 72, stride = 6 * ch;
  const std::size_t n = static_cast<std::size_t>(batch) * tokens * ch;
  auto x = rounded<bf16>(fresh(n)), br = rounded<bf16>(fresh(n)), mod = rounded<bf16>(fresh(batch * stride, 0.5f));
  std::vector<float> mid(n), ref(n), mean(batch * tokens), rstd(batch * tokens);
  k::gated_residual_forward(mid.data(), x.data(), br.data(), mod.data() + 2 * ch, batch, tokens, ch, stride);
  mid = rounded<bf16>(mid);
  k::layernorm_modulate_forward(ref.data(), mean.data(), rstd.data(), mid.data(), mod.data() + 3 * ch,
                                mod.data() + 4 * ch, batch, tokens, ch, stride, 1e-6f);
  DeviceArray<bf16> gx(x), gbr(br), gmod(mod), gmid(n), gout(n);
  DeviceArray<float> gmean(batch * tokens), grstd(batch * tokens);
  gmid.poison();
  gout.poison();
  kc::residual_layernorm_modulate_forward(gmid.get(), gout.get(), gmean.get(), grstd.get(), gx.get(), gbr.get(),
                                          gmod.get() + 2 * ch, gmod.get() + 3 * ch, gmod.get() + 4 * ch, batch, tokens,
                                          ch, stride, 1e-6f, stream);
  expect_close(gmid.download(), mid, tol_bf16, "fused residual output");
  expect_close(gout.download(), ref, tol_bf16, "fused norm output");
  expect_close(grstd.download(), rstd, 1e-3, "fused rstd");
}

TEST_F(CudaElementwise, RectifiedFlowMatchesCpu) {
  const int batch = 5, out_ch = 8, ch = 4, plane = 17 * 17;
  const std::size_t n = static_cast<std::size_t>(batch) * ch * plane;
  auto x0 = fresh(n), noise = fresh(n), vhat = rounded<bf16>(fresh(static_cast<std::size_t>(batch) * out_ch * plane));
  std::vector<float> t(batch);
  for (int b = 0; b < batch; ++b) t[b] = 1.0f / (1.0f + std::exp(-fresh(1)[0]));
  auto dv0 = rounded<bf16>(fresh(vhat.size()));
  std::vector<float> z(n), dv = dv0;
  k::rectified_flow_input(z.data(), x0.data(), noise.data(), t.data(), batch, ch * plane);
  const double loss = k::rectified_flow_loss_forward(vhat.data(), x0.data(), noise.data(), batch, out_ch, ch, plane);
  k::rectified_flow_loss_backward(dv.data(), vhat.data(), x0.data(), noise.data(), 0.5f, batch, out_ch, ch, plane);
  DeviceArray<float> gx0(x0), gnoise(noise), gt(t);
  DeviceArray<bf16> gz(n), gv(vhat), gdv(dv0);
  DeviceArray<double> gloss(1);
  gz.poison();
  kc::rectified_flow_input(gz.get(), gx0.get(), gnoise.get(), gt.get(), batch, ch * plane, stream);
  kc::rectified_flow_loss_forward(gloss.get(), gv.get(), gx0.get(), gnoise.get(), batch, out_ch, ch, plane, stream);
  kc::rectified_flow_loss_backward(gdv.get(), gv.get(), gx0.get(), gnoise.get(), 0.5f, batch, out_ch, ch, plane, stream);
  expect_close(gz.download(), z, tol_bf16, "rectified-flow input");
  EXPECT_NEAR(gloss.download()[0], loss, 1e-5 * loss) << "rectified-flow loss";
  expect_close(gdv.download(), dv, tol_bf16, "rectified-flow loss backward");
}

TEST_F(CudaElementwise, PatchifyAndUnpatchifyMatchCpu) {
  const int batch = 3, ch = 4, size = 12, patch = 2, out_ch = 8;
  const std::size_t n = static_cast<std::size_t>(batch) * ch * size * size;
  const std::size_t m = static_cast<std::size_t>(batch) * out_ch * size * size;
  auto lat = rounded<bf16>(fresh(n)), tok = rounded<bf16>(fresh(m)), dl0 = rounded<bf16>(fresh(n));
  auto dt0 = rounded<bf16>(fresh(m));
  std::vector<float> ptok(n), img(m), dl = dl0, dt = dt0;
  k::patchify_forward(ptok.data(), lat.data(), batch, ch, size, patch);
  k::patchify_backward(dl.data(), ptok.data(), batch, ch, size, patch);
  k::unpatchify_forward(img.data(), tok.data(), batch, out_ch, size, patch);
  k::unpatchify_backward(dt.data(), img.data(), batch, out_ch, size, patch);
  DeviceArray<bf16> glat(lat), gtok(tok), gptok(n), gimg(m), gdl(dl0), gdt(dt0);
  gptok.poison();
  gimg.poison();
  kc::patchify_forward(gptok.get(), glat.get(), batch, ch, size, patch, stream);
  kc::patchify_backward(gdl.get(), gptok.get(), batch, ch, size, patch, stream);
  kc::unpatchify_forward(gimg.get(), gtok.get(), batch, out_ch, size, patch, stream);
  kc::unpatchify_backward(gdt.get(), gimg.get(), batch, out_ch, size, patch, stream);
  expect_close(gptok.download(), ptok, 1e-6, "patchify");  // permutations: exact
  expect_close(gimg.download(), img, 1e-6, "unpatchify");
  expect_close(gdl.download(), dl, tol_bf16, "patchify adjoint");
  expect_close(gdt.download(), dt, tol_bf16, "unpatchify adjoint");
}

TEST_F(CudaElementwise, EmbeddingsMatchCpu) {
  const int batch = 7, dim = 257, classes = 11, ch = 72;
  std::vector<float> t(batch);
  for (int b = 0; b < batch; ++b) t[b] = 1000.0f / (1.0f + std::exp(-fresh(1)[0]));
  std::vector<float> ref(static_cast<std::size_t>(batch) * dim);
  k::timestep_embedding_forward(ref.data(), t.data(), batch, dim, 10000.0f);
  DeviceArray<float> gt(t);
  DeviceArray<bf16> gemb(ref.size());
  gemb.poison();
  kc::timestep_embedding_forward(gemb.get(), gt.get(), batch, dim, 10000.0f, stream);
  expect_close(gemb.download(), ref, tol_bf16, "timestep embedding");

  std::vector<int> labels(batch);
  for (int b = 0; b < batch; ++b) labels[b] = static_cast<int>(std::abs(fresh(1)[0]) * 1000) % (classes + 1);
  auto table = rounded<bf16>(fresh(static_cast<std::size_t>(classes + 1) * ch));
  auto dout = rounded<bf16>(fresh(static_cast<std::size_t>(batch) * ch)), dtab0 = fresh(table.size());
  std::vector<float> out(static_cast<std::size_t>(batch) * ch), dtab = dtab0;
  k::class_embedding_forward(out.data(), table.data(), labels.data(), batch, ch);
  k::class_embedding_backward(dtab.data(), dout.data(), labels.data(), batch, ch);
  int* glabels = nullptr;
  DITWIN_CUDA_CHECK(cudaMalloc(&glabels, batch * sizeof(int)));
  DITWIN_CUDA_CHECK(cudaMemcpy(glabels, labels.data(), batch * sizeof(int), cudaMemcpyHostToDevice));
  DeviceArray<bf16> gtab(table), gout(out.size()), gdout(dout);
  DeviceArray<float> gdtab(dtab0);
  gout.poison();
  kc::class_embedding_forward(gout.get(), gtab.get(), glabels, batch, ch, stream);
  kc::class_embedding_backward(gdtab.get(), gdout.get(), glabels, batch, ch, stream);
  expect_close(gout.download(), out, 1e-6, "class embedding");
  expect_close(gdtab.download(), dtab, 1e-5, "class embedding backward");
  cudaFree(glabels);
}

TEST_F(CudaMatmul, ForwardAndBackwardMatchCpu) {
  kc::Blas blas;
  // Rows not a multiple of any tile; DiT-like widths.
  for (auto [n, ic, oc] : {std::tuple{300, 72, 216}, std::tuple{37, 768, 2304}, std::tuple{5, 256, 4608}}) {
    auto x = rounded<bf16>(fresh(static_cast<std::size_t>(n) * ic)), w = rounded<bf16>(fresh(static_cast<std::size_t>(oc) * ic, 0.05f));
    auto b = rounded<bf16>(fresh(oc)), d = rounded<bf16>(fresh(static_cast<std::size_t>(n) * oc));
    auto dx0 = rounded<bf16>(fresh(x.size())), dw0 = fresh(w.size()), db0 = fresh(oc);
    std::vector<float> out(static_cast<std::size_t>(n) * oc), dx = dx0, dw = dw0, db = db0;
    k::matmul_forward(out.data(), x.data(), w.data(), b.data(), n, ic, oc);
    k::matmul_backward(dx.data(), dw.data(), db.data(), d.data(), x.data(), w.data(), n, ic, oc);
    DeviceArray<bf16> gx(x), gw(w), gb(b), gd(d), gout(out.size()), gdx(dx0);
    DeviceArray<float> gdw(dw0), gdb(db0);
    gout.poison();
    kc::matmul_forward(blas, gout.get(), gx.get(), gw.get(), gb.get(), n, ic, oc, stream);
    kc::matmul_backward(blas, gdx.get(), gdw.get(), gdb.get(), gd.get(), gx.get(), gw.get(), n, ic, oc, stream);
    const std::string shape = std::to_string(n) + "x" + std::to_string(ic) + "x" + std::to_string(oc);
    expect_close(gout.download(), out, tol_bf16, "matmul forward " + shape);
    expect_close(gdx.download(), dx, tol_bf16, "matmul dinp " + shape);
    expect_close(gdw.download(), dw, 1e-3, "matmul dweight (fp32 out) " + shape);
    expect_close(gdb.download(), db, 1e-4, "matmul dbias " + shape);
    // Overwrite mode: a poisoned dinp comes back as dout · weight alone.
    std::vector<float> dx_only(x.size(), 0.f);
    k::matmul_backward(dx_only.data(), nullptr, nullptr, d.data(), x.data(), w.data(), n, ic, oc);
    gdx.poison();
    kc::matmul_backward(blas, gdx.get(), static_cast<float*>(nullptr), static_cast<float*>(nullptr), gd.get(), gx.get(),
                        gw.get(), n, ic, oc, stream, /*accumulate_dinp=*/false);
    expect_close(gdx.download(), dx_only, tol_bf16, "matmul dinp overwrite " + shape);
  }
}

// DP-SGD: per-sample squared norms by ghost norm and by materialized per-sample gradients (through
// strided-batched cuBLASLt GEMMs, in chunks of samples when the scratch is small, and the rank-one
// formula) against the CPU kernel on the same bf16-rounded operands; the per-sample row scaling;
// the Gaussian noise against the CPU's counter-based stream.
TEST_F(CudaPrivacy, PerSampleNormsMatchTheCpuKernel) {
  kc::Blas blas;
  for (auto [batch, rows, d_in, d_out] : {std::tuple{4, 64, 128, 384}, std::tuple{3, 256, 72, 216}, std::tuple{5, 16, 16, 128},
                                          std::tuple{6, 1, 128, 768}}) {
    auto a = rounded<bf16>(fresh(static_cast<std::size_t>(batch) * rows * d_in));
    auto g = rounded<bf16>(fresh(static_cast<std::size_t>(batch) * rows * d_out, 0.1f));
    DeviceArray<bf16> ga(a), gg(g);
    for (bool ghost : {true, false}) {
      for (bool small_scratch : {false, true}) {
        std::vector<double> want(batch, 0.0);
        std::vector<float> cpu_scratch(k::per_sample_norm_scratch(rows, d_in, d_out, ghost));
        k::linear_per_sample_sq_norms(want.data(), a.data(), g.data(), batch, rows, d_in, d_out, true, ghost, cpu_scratch.data());
        const int chunk = small_scratch ? 1 : batch;
        const std::size_t floats = std::max<std::size_t>(1, kc::per_sample_norm_scratch(chunk, rows, d_in, d_out, ghost));
        DeviceArray<float> scratch(floats);
        double* sq = nullptr;
        DITWIN_CUDA_CHECK(cudaMalloc(&sq, batch * sizeof(double)));
        DITWIN_CUDA_CHECK(cudaMemset(sq, 0, batch * sizeof(double)));
        kc::per_sample_sq_norms<bf16>(blas, sq, ga.get(), gg.get(), batch, rows, d_in, d_out, true, ghost, scratch.get(),
                                      floats, stream);
        std::vector<double> got(batch);
        DITWIN_CUDA_CHECK(cudaMemcpyAsync(got.data(), sq, batch * sizeof(double), cudaMemcpyDeviceToHost, stream));
        sync();
        cudaFree(sq);
        for (int b = 0; b < batch; ++b)
          EXPECT_NEAR(got[b], want[b], 1e-4 * want[b]) << "sample " << b << " of " << rows << "x" << d_in << "x" << d_out
                                                        << (ghost ? " ghost" : " materialized")
                                                        << (small_scratch ? ", one sample at a time" : "");
      }
    }
  }
}

TEST_F(CudaPrivacy, SampleRowScalingAndNoiseMatchTheCpu) {
  const int batch = 3, rows = 5, width = 40;
  auto g = rounded<bf16>(fresh(static_cast<std::size_t>(batch) * rows * width));
  std::vector<float> factor = {1.0f, 0.25f, 0.0f}, want(g.size());
  k::scale_sample_rows(want.data(), g.data(), factor.data(), batch, rows, width);
  DeviceArray<bf16> gg(g), out(g.size());
  DeviceArray<float> gf(factor);
  out.poison();
  kc::scale_sample_rows<bf16>(out.get(), gg.get(), gf.get(), batch, rows, width, stream);
  sync();
  auto got = out.download();
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-2 * std::abs(want[i]) + 1e-6) << i;
  // Noise: an odd start (a sine half first) and an odd length, against kernels/gaussian_noise.
  for (std::uint64_t begin : {0ull, 7ull, 1000001ull}) {
    const std::size_t n = 10001;
    auto base = fresh(n);
    std::vector<float> cpu = base;
    k::add_gaussian_noise(cpu.data(), n, begin, 0x1234abcdULL + begin, 0.5f);
    DeviceArray<float> dev(base);
    kc::add_gaussian_noise(dev.get(), n, begin, 0x1234abcdULL + begin, 0.5f, stream);
    sync();
    auto gpu = dev.download();
    double worst = 0;
    for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(static_cast<double>(gpu[i]) - cpu[i]));
    EXPECT_LT(worst, 1e-5) << "begin " << begin;  // the same draws up to float rounding of log, sin, cos
  }
}

// Attention on DiT's shapes: 256 tokens at head dim 72 (DiT-XL/2), 64 (DiT-B), 128, and token
// counts that leave partial tiles.
TEST_F(CudaAttention, ForwardAndBackwardMatchCpu) {
  struct Case { int batch, tokens, heads, head_dim; };
  for (Case c : {Case{2, 256, 2, 72}, Case{3, 100, 2, 64}, Case{1, 130, 2, 128}, Case{2, 77, 3, 32}, Case{1, 64, 1, 64}}) {
    const int ch = c.heads * c.head_dim;
    const std::size_t nqkv = static_cast<std::size_t>(c.batch) * c.tokens * 3 * ch;
    const std::size_t nout = static_cast<std::size_t>(c.batch) * c.tokens * ch;
    // dqkv starts small and random (the kernels add into it); compared after subtracting it.
    auto qkv = rounded<bf16>(fresh(nqkv)), dout = rounded<bf16>(fresh(nout)), dqkv0 = rounded<bf16>(fresh(nqkv, 1e-3f));
    std::vector<float> out(nout), probs(static_cast<std::size_t>(c.batch) * c.heads * c.tokens * c.tokens),
        dqkv = dqkv0;
    k::attention_forward(out.data(), probs.data(), qkv.data(), c.batch, c.tokens, ch, c.heads);
    k::attention_backward(dqkv.data(), dout.data(), qkv.data(), probs.data(), c.batch, c.tokens, ch, c.heads);
    DeviceArray<bf16> gqkv(qkv), gout(nout), gdout(dout), gdqkv(dqkv0);
    DeviceArray<float> glse(static_cast<std::size_t>(c.batch) * c.heads * c.tokens);
    DeviceArray<unsigned char> work(kc::attention_backward_workspace_bytes(c.batch, c.tokens, ch, c.heads));
    gout.poison();
    glse.poison();
    work.poison();
    kc::attention_forward(gout.get(), glse.get(), gqkv.get(), c.batch, c.tokens, ch, c.heads, stream);
    kc::attention_backward(gdqkv.get(), gdout.get(), gqkv.get(), gout.get(), glse.get(), work.get(), c.batch, c.tokens,
                           ch, c.heads, stream);
    const std::string shape = "b" + std::to_string(c.batch) + " s" + std::to_string(c.tokens) + " h" +
                              std::to_string(c.heads) + " d" + std::to_string(c.head_dim);
    expect_close(gout.download(), out, tol_bf16, "attention forward " + shape);
    // The row log-sum-exp, base 2, against the CPU probabilities: p_ij = 2^(s_ij·log2e/√d − lse_i).
    auto lse = glse.download();
    for (float v : lse) ASSERT_TRUE(std::isfinite(v)) << "attention lse " << shape;
    {  // row 0 of sample 0, head 0
      const float* q = qkv.data();
      double mx = -1e300, sum = 0;
      std::vector<double> s(c.tokens);
      for (int j = 0; j < c.tokens; ++j) {
        double dot = 0;
        for (int e = 0; e < c.head_dim; ++e) dot += static_cast<double>(q[e]) * qkv[static_cast<std::size_t>(j) * 3 * ch + ch + e];
        s[j] = dot / std::sqrt(static_cast<double>(c.head_dim)) * 1.4426950408889634;
        mx = std::max(mx, s[j]);
      }
      for (double v : s) sum += std::exp2(v - mx);
      EXPECT_NEAR(lse[0], mx + std::log2(sum), 2e-3) << "attention lse " << shape;
    }
    // Gradients: dQ, dK, dV each against the CPU (dqkv started from random values: += semantics).
    auto got = gdqkv.download();
    for (int part = 0; part < 3; ++part) {
      std::vector<float> g, r;
      for (std::size_t row = 0; row < static_cast<std::size_t>(c.batch) * c.tokens; ++row)
        for (int j = 0; j < ch; ++j) {
          const std::size_t i = row * 3 * ch + part * ch + j;
          g.push_back(got[i] - dqkv0[i]);
          r.push_back(dqkv[i] - dqkv0[i]);
        }
      expect_close(g, r, 3e-2, std::string("attention d") + "QKV"[part] + " " + shape);
    }
  }
}

TEST_F(CudaAttention, RefusesUncompiledHeadDims) {
  DeviceArray<bf16> buf(3 * 48 * 4);
  DeviceArray<float> lse(4);
  EXPECT_THROW(kc::attention_forward(buf.get(), lse.get(), buf.get(), 1, 4, 48, 1, stream), std::invalid_argument);
}

TEST_F(CudaAdamW, MultiTensorUpdateMatchesCpu) {
  const std::vector<std::size_t> sizes = {1, 1000, 333331, 4097};
  std::vector<std::vector<float>> p, g, m, v;
  std::vector<std::unique_ptr<DeviceArray<float>>> gp, gg, gm, gv;
  std::vector<std::unique_ptr<DeviceArray<bf16>>> gh;
  std::vector<kc::AdamWTensor> list;
  const float scale = 0.5f;
  for (std::size_t n : sizes) {
    p.push_back(fresh(n));
    g.push_back(fresh(n));
    m.push_back(fresh(n, 0.1f));
    std::vector<float> vv = fresh(n, 0.1f);
    for (auto& x : vv) x = x * x;
    v.push_back(vv);
    gp.push_back(std::make_unique<DeviceArray<float>>(p.back()));
    gg.push_back(std::make_unique<DeviceArray<float>>(g.back()));
    gm.push_back(std::make_unique<DeviceArray<float>>(m.back()));
    gv.push_back(std::make_unique<DeviceArray<float>>(v.back()));
    gh.push_back(std::make_unique<DeviceArray<bf16>>(n));
    gh.back()->poison();
    list.push_back({gp.back()->get(), gg.back()->get(), gm.back()->get(), gv.back()->get(), gh.back()->get(), n});
  }
  list.insert(list.begin() + 2, kc::AdamWTensor{});  // an empty tensor is skipped
  kc::adamw_update(list, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 3, scale, stream);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    for (auto& x : g[i]) x *= scale;
    k::adamw_update(p[i].data(), g[i].data(), m[i].data(), v[i].data(), sizes[i], 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 3);
    expect_close(gp[i]->download(), p[i], 1e-6, "adamw params");
    expect_close(gm[i]->download(), m[i], 1e-6, "adamw m");
    expect_close(gv[i]->download(), v[i], 1e-6, "adamw v");
    expect_close(gh[i]->download(), p[i], 1e-2, "adamw bf16 copy");
  }
}

// --- backward against finite differences of the forward, fp32 storage -------------------------

TEST_F(CudaFiniteDifferences, LayernormModulate) {
  const int batch = 2, tokens = 5, ch = 24, stride = 3 * ch;
  const std::size_t n = static_cast<std::size_t>(batch) * tokens * ch;
  auto x = fresh(n, 2.0f), mod = fresh(batch * stride, 0.5f), r = fresh(n);
  DeviceArray<float> gx(n), gmod(mod.size()), gout(n), gmean(batch * tokens), grstd(batch * tokens), gr(r);
  auto forward = [&] {
    gx.upload(x);
    gmod.upload(mod);
    kc::layernorm_modulate_forward(gout.get(), gmean.get(), grstd.get(), gx.get(), gmod.get(), gmod.get() + ch, batch,
                                   tokens, ch, stride, 1e-6f, stream);
  };
  auto loss = [&] {
    forward();
    return dot(gout.download(), r);
  };
  forward();
  DeviceArray<float> gdx(std::vector<float>(n, 0.f)), gdmod(std::vector<float>(mod.size(), 0.f));
  kc::layernorm_modulate_backward(gdx.get(), gdmod.get(), gdmod.get() + ch, gr.get(), gx.get(), gmean.get(),
                                  grstd.get(), gmod.get() + ch, batch, tokens, ch, stride, stream);
  expect_gradient(x, gdx.download(), loss, "cuda layernorm dx", 1e-2, 1e-2f);
  auto dmod = gdmod.download();
  std::vector<std::size_t> coords;
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < 2 * ch; ++c) coords.push_back(static_cast<std::size_t>(b) * stride + c);
  expect_gradient(mod, dmod, loss, "cuda layernorm dshift/dscale", 1e-2, 1e-2f, coords);
}

TEST_F(CudaFiniteDifferences, ActivationsResidualAndLoss) {
  const int batch = 2, tokens = 6, ch = 16, stride = 2 * ch;
  const std::size_t n = static_cast<std::size_t>(batch) * tokens * ch;
  auto x = fresh(n, 1.5f), r = fresh(n);
  DeviceArray<float> gx(n), gout(n), gr(r);
  for (int act = 0; act < 2; ++act) {
    auto loss = [&] {
      gx.upload(x);
      act ? kc::silu_forward(gout.get(), gx.get(), n, stream) : kc::gelu_forward(gout.get(), gx.get(), n, stream);
      return dot(gout.download(), r);
    };
    gx.upload(x);
    DeviceArray<float> gd(std::vector<float>(n, 0.f));
    act ? kc::silu_backward(gd.get(), gx.get(), gr.get(), n, stream) : kc::gelu_backward(gd.get(), gx.get(), gr.get(), n, stream);
    expect_gradient(x, gd.download(), loss, act ? "cuda silu" : "cuda gelu", 1e-2, 1e-2f);
  }
  // Gated residual: gradients of x, branch and gate.
  auto br = fresh(n), gate = fresh(batch * stride);
  DeviceArray<float> gbr(n), ggate(gate.size());
  auto res_loss = [&] {
    gx.upload(x);
    gbr.upload(br);
    ggate.upload(gate);
    kc::gated_residual_forward(gout.get(), gx.get(), gbr.get(), ggate.get(), batch, tokens, ch, stride, stream);
    return dot(gout.download(), r);
  };
  res_loss();
  DeviceArray<float> gdx(std::vector<float>(n, 0.f)), gdbr(std::vector<float>(n, 0.f)),
      gdgate(std::vector<float>(gate.size(), 0.f));
  kc::gated_residual_backward(gdx.get(), gdbr.get(), gdgate.get(), gr.get(), gbr.get(), ggate.get(), batch, tokens, ch,
                              stride, stream);
  expect_gradient(x, gdx.download(), res_loss, "cuda residual dx", 1e-2, 1e-2f);
  expect_gradient(br, gdbr.download(), res_loss, "cuda residual dbranch", 1e-2, 1e-2f);
  std::vector<std::size_t> coords;
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < ch; ++c) coords.push_back(static_cast<std::size_t>(b) * stride + c);
  expect_gradient(gate, gdgate.download(), res_loss, "cuda residual dgate", 1e-2, 1e-2f, coords);
  // Rectified-flow loss with respect to v̂.
  const int out_ch = 4, lch = 2, plane = 9;
  auto vhat = fresh(static_cast<std::size_t>(batch) * out_ch * plane), x0 = fresh(static_cast<std::size_t>(batch) * lch * plane);
  auto noise = fresh(x0.size());
  DeviceArray<float> gv(vhat.size()), gx0(x0), gnoise(noise);
  DeviceArray<double> gloss(1);
  auto rf_loss = [&] {
    gv.upload(vhat);
    kc::rectified_flow_loss_forward(gloss.get(), gv.get(), gx0.get(), gnoise.get(), batch, out_ch, lch, plane, stream);
    return gloss.download()[0];
  };
  rf_loss();
  DeviceArray<float> gdv(std::vector<float>(vhat.size(), 0.f));
  kc::rectified_flow_loss_backward(gdv.get(), gv.get(), gx0.get(), gnoise.get(), 1.0f, batch, out_ch, lch, plane, stream);
  std::vector<std::size_t> vc;  // the predicted channels only (the rest have zero gradient)
  for (int b = 0; b < batch; ++b)
    for (int i = 0; i < lch * plane; ++i) vc.push_back(static_cast<std::size_t>(b) * out_ch * plane + i);
  expect_gradient(vhat, gdv.download(), rf_loss, "cuda rectified-flow loss", 1e-2, 1e-2f, vc);
}

TEST_F(CudaFiniteDifferences, MatmulFp32) {
  kc::Blas blas;
  const int n = 7, ic = 9, oc = 6;
  auto x = fresh(static_cast<std::size_t>(n) * ic), w = fresh(static_cast<std::size_t>(oc) * ic), b = fresh(oc);
  auto r = fresh(static_cast<std::size_t>(n) * oc);
  DeviceArray<float> gx(x.size()), gw(w.size()), gb(b.size()), gout(r.size()), gr(r);
  auto loss = [&] {
    gx.upload(x);
    gw.upload(w);
    gb.upload(b);
    kc::matmul_forward(blas, gout.get(), gx.get(), gw.get(), gb.get(), n, ic, oc, stream);
    return dot(gout.download(), r);
  };
  loss();
  DeviceArray<float> gdx(std::vector<float>(x.size(), 0.f)), gdw(std::vector<float>(w.size(), 0.f)),
      gdb(std::vector<float>(b.size(), 0.f));
  kc::matmul_backward(blas, gdx.get(), gdw.get(), gdb.get(), gr.get(), gx.get(), gw.get(), n, ic, oc, stream);
  expect_gradient(x, gdx.download(), loss, "cuda matmul dinp", 1e-2, 1e-2f);
  expect_gradient(w, gdw.download(), loss, "cuda matmul dweight", 1e-2, 1e-2f);
  expect_gradient(b, gdb.download(), loss, "cuda matmul dbias", 1e-2, 1e-2f);
}

}  // namespace
}  // namespace ditwin::test
