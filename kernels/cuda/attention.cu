// Flash attention forward and backward with mma.sync (m16n8k16, bf16 in, fp32 accumulate), the
// FlashAttention-2 schedule written from the paper's algorithm:
//  - forward: a block owns 64 queries of one (sample, head), 4 warps × 16 query rows; it streams
//    64-key tiles of K and V through shared memory (cp.async, double-buffered), keeps S = Q·Kᵀ,
//    the running row max and sum, and O in registers (online softmax in base 2), and writes O and
//    the row log-sum-exp;
//  - backward: a block owns 64 keys, 4 warps × 16 keys; it streams 64-query tiles of Q and dO,
//    recomputes Pᵀ from the saved log-sum-exp, accumulates dK and dV in registers, and adds its
//    share of dQ = dS·K into an fp32 accumulator with atomics (converted into dqkv at the end).
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16): with g = lane/4, t = lane%4, A registers hold
// (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..); B registers hold (k = 2t..2t+1, n = g),
// (k = 2t+8.., n = g); C holds (g, 2t..2t+1) and (g+8, 2t..2t+1). Two C tiles side by side are
// therefore one A fragment of the next product, so P never leaves registers. Operands whose pairs
// run down a column (V, dO, Q, K as the B of P·V, Pᵀ·dO, dSᵀ·Q, dS·K) come through
// ldmatrix.trans. Shared-memory rows are padded by 16 bytes, so fragment loads hit 32 banks.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/device_util.cuh"

namespace ditwin::kernels::cuda {

namespace {

constexpr int kBlock = 64;   // queries per forward block, keys per backward block, and tile size
constexpr int kThreads = 128;  // 4 warps × 16 rows
constexpr int kDsStride = kBlock + 8;  // dS tile row stride (bf16)
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
struct Dims {
  static_assert(D % 8 == 0, "head dim must be a multiple of 8");
  static constexpr int DK = (D + 15) / 16 * 16;  // k extent of products over the head dim (zero-padded)
  static constexpr int S = DK + 8;               // shared-memory row stride, in bf16
  static constexpr int NT = D / 8;               // n-tiles of 8 over the head dim
  static constexpr int KS = DK / 16;             // k-steps of 16 over the head dim
  static constexpr int CHUNKS = D / 8;           // 16-byte pieces of a row in global memory
  static constexpr int tile_elems = kBlock * S;
};

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo: the lower column
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t ld32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// B fragment of a k16×n8 tile whose k runs down the rows of a row-major shared tile: lanes 0-7
// address rows k0..k0+7, lanes 8-15 rows k0+8..k0+15, all at column n0.
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t& b0, uint32_t& b1, const bf16* tile, int stride, int k0,
                                                  int n0, int lane) {
  const bf16* p = tile + (k0 + (lane & 15)) * stride + n0;
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(addr));
}

// A fragment of rows r0..r0+15, columns k0..k0+15 of a row-major shared tile.
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* tile, int stride, int r0, int k0, int g, int t) {
  const bf16* p = tile + (r0 + g) * stride + k0 + 2 * t;
  a[0] = ld32(p);
  a[1] = ld32(p + 8 * stride);
  a[2] = ld32(p + 8);
  a[3] = ld32(p + 8 * stride + 8);
}

// A fragment of a 16×16 product operand held as two C tiles (columns 0-7 and 8-15).
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0: fill the 16 bytes with zeros, read nothing
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Rows row0 … row0+63 of a (tokens × D) slice with `row_stride` elements between rows into a
// shared tile; rows at or past `tokens` are zero-filled.
template <int D>
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* base, std::size_t row_stride, int row0, int tokens) {
  using Dm = Dims<D>;
  for (int i = threadIdx.x; i < kBlock * Dm::CHUNKS; i += kThreads) {
    const int r = i / Dm::CHUNKS, ch = i % Dm::CHUNKS;
    const bool valid = row0 + r < tokens;
    const bf16* src = valid ? base + static_cast<std::size_t>(row0 + r) * row_stride + ch * 8 : base;
    cp_async16(tile + r * Dm::S + ch * 8, src, valid);
  }
}

// Zeroes columns D … DK−1 of `rows` shared rows (only head dims that are not a multiple of 16
// have any): the k-steps over the head dim read them.
template <int D>
__device__ __forceinline__ void zero_padding(bf16* tiles, int rows) {
  using Dm = Dims<D>;
  if constexpr (Dm::DK > D) {
    static_assert(Dm::DK - D == 8, "padding is one 16-byte piece");
    for (int r = threadIdx.x; r < rows; r += kThreads)
      *reinterpret_cast<uint4*>(tiles + r * Dm::S + D) = make_uint4(0, 0, 0, 0);
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(bf16* out, float* lse, const bf16* qkv, int tokens, int channels, int heads,
                             float scale_log2) {
  using Dm = Dims<D>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* ks = qs + Dm::tile_elems;      // two buffers
  bf16* vs = ks + 2 * Dm::tile_elems;  // two buffers
  const int bh = blockIdx.y, b = bh / heads, h = bh % heads;
  const int q0 = blockIdx.x * kBlock;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const std::size_t row_stride = 3 * static_cast<std::size_t>(channels);
  const bf16* qbase = qkv + static_cast<std::size_t>(b) * tokens * row_stride + h * D;
  const bf16* kbase = qbase + channels;
  const bf16* vbase = qbase + 2 * channels;

  zero_padding<D>(qs, 5 * kBlock);
  load_tile<D>(qs, qbase, row_stride, q0, tokens);
  load_tile<D>(ks, kbase, row_stride, 0, tokens);
  load_tile<D>(vs, vbase, row_stride, 0, tokens);
  cp_async_commit();

  const int tiles = (tokens + kBlock - 1) / kBlock;
  uint32_t qf[Dm::KS][4];
  float o[Dm::NT][4];
#pragma unroll
  for (int n = 0; n < Dm::NT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

  for (int j = 0; j < tiles; ++j) {
    const int buf = j & 1;
    if (j + 1 < tiles) {  // prefetch the next tile into the other buffer (freed by the last barrier)
      load_tile<D>(ks + (buf ^ 1) * Dm::tile_elems, kbase, row_stride, (j + 1) * kBlock, tokens);
      load_tile<D>(vs + (buf ^ 1) * Dm::tile_elems, vbase, row_stride, (j + 1) * kBlock, tokens);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < Dm::KS; ++kk) load_a(qf[kk], qs, Dm::S, warp * 16, kk * 16, g, t);
    }
    const bf16* kt = ks + buf * Dm::tile_elems;
    const bf16* vt = vs + buf * Dm::tile_elems;

    // S = Q·Kᵀ: 16 query rows × 64 keys per warp.
    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Dm::KS; ++kk)
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const bf16* p = kt + (n * 8 + g) * Dm::S + kk * 16 + 2 * t;
        mma_bf16(s[n], qf[kk], ld32(p), ld32(p + 8));
      }

    // Online softmax in base 2; keys past the end score −∞.
    const int key0 = j * kBlock;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + n * 8 + 2 * t + (e & 1);
        const float v = key < tokens ? s[n][e] * scale_log2 : -INFINITY;
        s[n][e] = v;
        mx[e >> 1] = fmaxf(mx[e >> 1], v);
      }
    float alpha[2], rs[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m_run[r], mx[r]);
      alpha[r] = m_run[r] == -INFINITY ? 0.f : exp2f(m_run[r] - m_new);
      m_run[r] = m_new;
    }
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[n][e] - m_run[e >> 1]);
        s[n][e] = p;
        rs[e >> 1] += p;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[r] = l_run[r] * alpha[r] + rs[r];  // per-thread partial; the quad sums at the end
#pragma unroll
    for (int n = 0; n < Dm::NT; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }

    // O += P·V, P straight from the S registers.
#pragma unroll
    for (int kk = 0; kk < kBlock / 16; ++kk) {
      uint32_t a[4];
      c_to_a(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < Dm::NT; ++n) {
        uint32_t b0, b1;
        ldmatrix_x2_trans(b0, b1, vt, Dm::S, kk * 16, n * 8, lane);
        mma_bf16(o[n], a, b0, b1);
      }
    }
    __syncthreads();  // this buffer is refilled two iterations on
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = 1.0f / l;
    l_run[r] = l;
  }
  const int qa = q0 + warp * 16 + g, qb = qa + 8;
#pragma unroll
  for (int n = 0; n < Dm::NT; ++n) {
    const int col = h * D + n * 8 + 2 * t;
    if (qa < tokens)
      *reinterpret_cast<__nv_bfloat162*>(out + (static_cast<std::size_t>(b) * tokens + qa) * channels + col) =
          __floats2bfloat162_rn(o[n][0] * inv[0], o[n][1] * inv[0]);
    if (qb < tokens)
      *reinterpret_cast<__nv_bfloat162*>(out + (static_cast<std::size_t>(b) * tokens + qb) * channels + col) =
          __floats2bfloat162_rn(o[n][2] * inv[1], o[n][3] * inv[1]);
  }
  if (t == 0) {
    if (qa < tokens) lse[static_cast<std::size_t>(bh) * tokens + qa] = m_run[0] + log2f(l_run[0]);
    if (qb < tokens) lse[static_cast<std::size_t>(bh) * tokens + qb] = m_run[1] + log2f(l_run[1]);
  }
}

// delta[b, h, q] = Σ_d dO·O over the head's columns: the row term of the softmax backward.
template <int D>
__global__ void attention_delta_kernel(float* delta, const bf16* dout, const bf16* out, int batch, int tokens,
                                       int channels, int heads) {
  const std::size_t total = static_cast<std::size_t>(batch) * heads * tokens;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const int q = static_cast<int>(i % tokens);
    const std::size_t bh = i / tokens;
    const int h = static_cast<int>(bh % heads);
    const std::size_t b = bh / heads;
    const std::size_t off = (b * tokens + q) * channels + static_cast<std::size_t>(h) * D;
    float sum = 0.f;
#pragma unroll 4
    for (int d = 0; d < D; d += 2) {
      const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + off + d));
      const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out + off + d));
      sum += x.x * y.x + x.y * y.y;
    }
    delta[i] = sum;
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_backward_kernel(bf16* dqkv, float* dq_acc, const bf16* dout, const bf16* qkv, const float* lse,
                              const float* delta, int tokens, int channels, int heads, float scale_log2, float scale) {
  using Dm = Dims<D>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* vs = ks + Dm::tile_elems;
  bf16* qs = vs + Dm::tile_elems;
  bf16* dos = qs + Dm::tile_elems;
  bf16* dss = dos + Dm::tile_elems;  // dS as [query][key]
  float* lse_s = reinterpret_cast<float*>(dss + kBlock * kDsStride);
  float* delta_s = lse_s + kBlock;
  const int bh = blockIdx.y, b = bh / heads, h = bh % heads;
  const int k0 = blockIdx.x * kBlock;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int kr = warp * 16;  // this warp's first key row in the tile
  const std::size_t row_stride = 3 * static_cast<std::size_t>(channels);
  const bf16* qbase = qkv + static_cast<std::size_t>(b) * tokens * row_stride + h * D;
  const bf16* dobase = dout + static_cast<std::size_t>(b) * tokens * channels + h * D;

  zero_padding<D>(ks, 4 * kBlock);
  load_tile<D>(ks, qbase + channels, row_stride, k0, tokens);
  load_tile<D>(vs, qbase + 2 * channels, row_stride, k0, tokens);
  cp_async_commit();

  float dk[Dm::NT][4], dv[Dm::NT][4];
#pragma unroll
  for (int n = 0; n < Dm::NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  const bool key_ok[2] = {k0 + kr + g < tokens, k0 + kr + g + 8 < tokens};

  const int tiles = (tokens + kBlock - 1) / kBlock;
  for (int i = 0; i < tiles; ++i) {
    const int q0 = i * kBlock;
    load_tile<D>(qs, qbase, row_stride, q0, tokens);
    load_tile<D>(dos, dobase, channels, q0, tokens);
    cp_async_commit();
    for (int r = threadIdx.x; r < kBlock; r += kThreads) {
      const int q = q0 + r;
      // A query past the end gets lse = +∞, so its probabilities (and dS) are exactly 0.
      lse_s[r] = q < tokens ? lse[static_cast<std::size_t>(bh) * tokens + q] : INFINITY;
      delta_s[r] = q < tokens ? delta[static_cast<std::size_t>(bh) * tokens + q] : 0.f;
    }
    cp_async_wait<0>();
    __syncthreads();

    // Sᵀ = K·Qᵀ: 16 keys × 64 queries per warp.
    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Dm::KS; ++kk) {
      uint32_t a[4];
      load_a(a, ks, Dm::S, kr, kk * 16, g, t);
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const bf16* p = qs + (n * 8 + g) * Dm::S + kk * 16 + 2 * t;
        mma_bf16(s[n], a, ld32(p), ld32(p + 8));
      }
    }
    // Pᵀ = exp2(S·scale·log2e − lse); keys past the end give 0.
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ql = n * 8 + 2 * t + (e & 1);
        s[n][e] = key_ok[e >> 1] ? exp2f(s[n][e] * scale_log2 - lse_s[ql]) : 0.f;
      }
    // dV += Pᵀ·dO.
#pragma unroll
    for (int kq = 0; kq < kBlock / 16; ++kq) {
      uint32_t a[4];
      c_to_a(a, s[2 * kq], s[2 * kq + 1]);
#pragma unroll
      for (int n = 0; n < Dm::NT; ++n) {
        uint32_t b0, b1;
        ldmatrix_x2_trans(b0, b1, dos, Dm::S, kq * 16, n * 8, lane);
        mma_bf16(dv[n], a, b0, b1);
      }
    }
    // dPᵀ = V·dOᵀ.
    float dp[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Dm::KS; ++kk) {
      uint32_t a[4];
      load_a(a, vs, Dm::S, kr, kk * 16, g, t);
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const bf16* p = dos + (n * 8 + g) * Dm::S + kk * 16 + 2 * t;
        mma_bf16(dp[n], a, ld32(p), ld32(p + 8));
      }
    }
    // dSᵀ = Pᵀ ∘ (dPᵀ − delta), into s; and into shared memory as [query][key] for dQ.
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ql = n * 8 + 2 * t + (e & 1);
        const float ds = s[n][e] * (dp[n][e] - delta_s[ql]);
        s[n][e] = ds;
        dss[ql * kDsStride + kr + g + (e >> 1) * 8] = __float2bfloat16(ds);
      }
    // dK += dSᵀ·Q.
#pragma unroll
    for (int kq = 0; kq < kBlock / 16; ++kq) {
      uint32_t a[4];
      c_to_a(a, s[2 * kq], s[2 * kq + 1]);
#pragma unroll
      for (int n = 0; n < Dm::NT; ++n) {
        uint32_t b0, b1;
        ldmatrix_x2_trans(b0, b1, qs, Dm::S, kq * 16, n * 8, lane);
        mma_bf16(dk[n], a, b0, b1);
      }
    }
    __syncthreads();  // dS complete
    // dQ (this tile's 64 queries) += dS·K: warp w takes queries 16w … 16w+15, 4 n-tiles at a time.
    const int qa = q0 + warp * 16 + g, qb = qa + 8;
#pragma unroll
    for (int ng = 0; ng < Dm::NT; ng += 4) {
      float acc[4][4];
#pragma unroll
      for (int nn = 0; nn < 4; ++nn) acc[nn][0] = acc[nn][1] = acc[nn][2] = acc[nn][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kBlock / 16; ++kk) {
        uint32_t a[4];
        load_a(a, dss, kDsStride, warp * 16, kk * 16, g, t);
#pragma unroll
        for (int nn = 0; nn < 4; ++nn) {
          if (ng + nn < Dm::NT) {
            uint32_t b0, b1;
            ldmatrix_x2_trans(b0, b1, ks, Dm::S, kk * 16, (ng + nn) * 8, lane);
            mma_bf16(acc[nn], a, b0, b1);
          }
        }
      }
#pragma unroll
      for (int nn = 0; nn < 4; ++nn) {
        if (ng + nn < Dm::NT) {
          const int col = h * D + (ng + nn) * 8 + 2 * t;
          if (qa < tokens) {
            float* p = dq_acc + (static_cast<std::size_t>(b) * tokens + qa) * channels + col;
            atomicAdd(p, acc[nn][0]);
            atomicAdd(p + 1, acc[nn][1]);
          }
          if (qb < tokens) {
            float* p = dq_acc + (static_cast<std::size_t>(b) * tokens + qb) * channels + col;
            atomicAdd(p, acc[nn][2]);
            atomicAdd(p + 1, acc[nn][3]);
          }
        }
      }
    }
    __syncthreads();  // the next tile overwrites Q, dO, dS, lse and delta
  }

  // dK (× the softmax scale) and dV, added into dqkv; each key row has one owner.
#pragma unroll
  for (int n = 0; n < Dm::NT; ++n) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (!key_ok[r]) continue;
      const int key = k0 + kr + g + 8 * r;
      bf16* pk = dqkv + (static_cast<std::size_t>(b) * tokens + key) * row_stride + channels + h * D + n * 8 + 2 * t;
      bf16* pv = pk + channels;
      const float2 ok = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(pk));
      const float2 ov = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(pv));
      *reinterpret_cast<__nv_bfloat162*>(pk) =
          __floats2bfloat162_rn(ok.x + dk[n][2 * r] * scale, ok.y + dk[n][2 * r + 1] * scale);
      *reinterpret_cast<__nv_bfloat162*>(pv) = __floats2bfloat162_rn(ov.x + dv[n][2 * r], ov.y + dv[n][2 * r + 1]);
    }
  }
}

// dqkv's Q columns += scale · the fp32 dQ accumulator.
__global__ void attention_dq_kernel(bf16* dqkv, const float* dq_acc, float scale, int channels, std::size_t total) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t row = i / channels;
    bf16* p = dqkv + row * 3 * channels + i % channels;
    *p = __float2bfloat16(__bfloat162float(*p) + scale * dq_acc[i]);
  }
}

template <int D>
std::size_t forward_smem() {
  return 5 * Dims<D>::tile_elems * sizeof(bf16);
}
template <int D>
std::size_t backward_smem() {
  return 4 * Dims<D>::tile_elems * sizeof(bf16) + kBlock * kDsStride * sizeof(bf16) + 2 * kBlock * sizeof(float);
}

// Raises a kernel's dynamic shared-memory limit once (above 48 KiB needs an opt-in).
template <typename Kernel>
void allow_smem(Kernel kernel, std::size_t bytes) {
  DITWIN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int D>
void forward_impl(bf16* out, float* lse, const bf16* qkv, int batch, int tokens, int channels, int heads,
                  cudaStream_t stream) {
  static const bool ready = (allow_smem(attention_forward_kernel<D>, forward_smem<D>()), true);
  (void)ready;
  const float scale_log2 = kLog2e / std::sqrt(static_cast<float>(D));
  dim3 grid((tokens + kBlock - 1) / kBlock, batch * heads);
  attention_forward_kernel<D><<<grid, kThreads, forward_smem<D>(), stream>>>(out, lse, qkv, tokens, channels, heads,
                                                                            scale_log2);
  DITWIN_CUDA_LAUNCH_CHECK("attention_forward");
}

template <int D>
void backward_impl(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, void* workspace,
                   int batch, int tokens, int channels, int heads, cudaStream_t stream) {
  static const bool ready = (allow_smem(attention_backward_kernel<D>, backward_smem<D>()), true);
  (void)ready;
  const std::size_t q_elems = static_cast<std::size_t>(batch) * tokens * channels;
  const std::size_t rows = static_cast<std::size_t>(batch) * heads * tokens;
  float* dq_acc = static_cast<float*>(workspace);
  float* delta = dq_acc + q_elems;
  DITWIN_CUDA_CHECK(cudaMemsetAsync(dq_acc, 0, q_elems * sizeof(float), stream));
  attention_delta_kernel<D><<<grid_for(rows, 256), 256, 0, stream>>>(delta, dout, out, batch, tokens, channels, heads);
  DITWIN_CUDA_LAUNCH_CHECK("attention_delta");
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  dim3 grid((tokens + kBlock - 1) / kBlock, batch * heads);
  attention_backward_kernel<D><<<grid, kThreads, backward_smem<D>(), stream>>>(
      dqkv, dq_acc, dout, qkv, lse, delta, tokens, channels, heads, scale * kLog2e, scale);
  DITWIN_CUDA_LAUNCH_CHECK("attention_backward");
  attention_dq_kernel<<<grid_for(q_elems, 256), 256, 0, stream>>>(dqkv, dq_acc, scale, channels, q_elems);
  DITWIN_CUDA_LAUNCH_CHECK("attention_dq");
}

void check_shape(int batch, int tokens, int channels, int heads) {
  if (batch < 0 || tokens < 0 || heads <= 0 || channels <= 0 || channels % heads != 0)
    throw std::invalid_argument("attention: channels " + std::to_string(channels) + " must be a positive multiple of heads " +
                                std::to_string(heads));
  if (!attention_supports_head_dim(channels / heads))
    throw std::invalid_argument("attention: head dim " + std::to_string(channels / heads) +
                                " is not compiled for the CUDA backend (32, 64, 72, 128)");
  if (static_cast<long long>(batch) * heads > 65535)
    throw std::invalid_argument("attention: batch x heads " + std::to_string(static_cast<long long>(batch) * heads) +
                                " exceeds the grid limit 65535");
}

}  // namespace

bool attention_supports_head_dim(int d) { return d == 32 || d == 64 || d == 72 || d == 128; }

std::size_t attention_backward_workspace_bytes(int batch, int tokens, int channels, int heads) {
  return (static_cast<std::size_t>(batch) * tokens * channels + static_cast<std::size_t>(batch) * heads * tokens) *
         sizeof(float);
}

void attention_forward(bf16* out, float* lse, const bf16* qkv, int batch, int tokens, int channels, int heads,
                       cudaStream_t stream) {
  check_shape(batch, tokens, channels, heads);
  if (batch == 0 || tokens == 0) return;
  switch (channels / heads) {
    case 32: forward_impl<32>(out, lse, qkv, batch, tokens, channels, heads, stream); break;
    case 64: forward_impl<64>(out, lse, qkv, batch, tokens, channels, heads, stream); break;
    case 72: forward_impl<72>(out, lse, qkv, batch, tokens, channels, heads, stream); break;
    default: forward_impl<128>(out, lse, qkv, batch, tokens, channels, heads, stream); break;
  }
}

void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse,
                        void* workspace, int batch, int tokens, int channels, int heads, cudaStream_t stream) {
  check_shape(batch, tokens, channels, heads);
  if (batch == 0 || tokens == 0) return;
  switch (channels / heads) {
    case 32: backward_impl<32>(dqkv, dout, qkv, out, lse, workspace, batch, tokens, channels, heads, stream); break;
    case 64: backward_impl<64>(dqkv, dout, qkv, out, lse, workspace, batch, tokens, channels, heads, stream); break;
    case 72: backward_impl<72>(dqkv, dout, qkv, out, lse, workspace, batch, tokens, channels, heads, stream); break;
    default: backward_impl<128>(dqkv, dout, qkv, out, lse, workspace, batch, tokens, channels, heads, stream); break;
  }
}

}  // namespace ditwin::kernels::cuda
