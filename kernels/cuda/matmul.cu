// cuBLASLt GEMMs for the linear layers. cuBLASLt is column-major: a row-major (r × c) array is a
// column-major (c × r) one, so out = inp·Wᵀ is computed as outᵀ (oc × n) = W(col-major ic × oc)ᵀ ·
// inpᵀ (ic × n), and likewise for the two backward products.
#include <cublasLt.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kernels/cuda/elementwise.hpp"
#include "kernels/cuda/matmul.hpp"

namespace ditwin::kernels::cuda {

namespace {

// cublasGetStatusString lives in libcublas, which nothing else here needs.
const char* status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
  }
}

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt ") + what + " failed: " + status_name(s) + " (" +
                             std::to_string(static_cast<int>(s)) + ")");
}

template <typename T>
constexpr cudaDataType_t data_type();
template <>
constexpr cudaDataType_t data_type<float>() { return CUDA_R_32F; }
template <>
constexpr cudaDataType_t data_type<bf16>() { return CUDA_R_16BF; }

// Everything that decides the algorithm, the operands' address alignment included.
using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int>;
// Strided-batched products (per-sample Gram matrices and gradients): shape, types and batch.
using BatchedKey = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, long long, long long, long long>;

// The largest power of two (up to 256) that divides the address: cuBLASLt's heuristic assumes
// 256-byte operands unless told otherwise, and an algorithm picked for them may refuse (or
// misread) a pointer into the middle of a parameter array.
int alignment_of(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  int align = 256;
  while (align > 1 && (a % align) != 0) align /= 2;
  return align;
}

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

}  // namespace

struct Blas::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  std::map<Key, Plan> plans;
  std::map<BatchedKey, Plan> batched_plans;
  std::mutex mutex;

  ~Impl() {
    for (auto& [k, p] : batched_plans) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
    }
    for (auto& [k, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
    }
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }

  // D (m × n, ldc) = alpha · op(A) · op(B) + beta · D, with an optional bias epilogue (length m).
  void gemm(bool ta, bool tb, int m, int n, int k, const void* A, cudaDataType_t at, int lda, const void* B,
            cudaDataType_t bt, int ldb, void* D, cudaDataType_t dt, int ldc, float beta, const void* bias,
            cudaStream_t stream) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const int align[4] = {alignment_of(A), alignment_of(B), alignment_of(D), bias ? alignment_of(bias) : 256};
    const Key key{ta, tb, m, n, k, lda, ldb, ldc, static_cast<int>(at), static_cast<int>(bt), static_cast<int>(dt),
                  bias != nullptr, beta != 0.f, align[0], align[1], align[2], align[3]};
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(key);
    if (it == plans.end())
      it = plans.emplace(key, make_plan(ta, tb, m, n, k, at, lda, bt, ldb, dt, ldc, bias != nullptr, align)).first;
    Plan& p = it->second;
    if (bias)
      check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
               "set bias pointer");
    const float alpha = 1.f;
    check_lt(cublasLtMatmul(handle, p.op, &alpha, A, p.a, B, p.b, &beta, D, p.c, D, p.c, &p.algo, workspace,
                            workspace_bytes, stream),
             "matmul");
  }

  // batch products D_i (m x n, ldc) = op(A_i) op(B_i), A_i = A + i sa, B_i = B + i sb, D_i = D + i sd
  // (element strides), fp32 output, beta 0.
  void gemm_batched(bool ta, bool tb, int m, int n, int k, const void* A, cudaDataType_t at, int lda, long long sa,
                    const void* B, cudaDataType_t bt, int ldb, long long sb, float* D, int ldc, long long sd, int batch,
                    cudaStream_t stream) {
    if (m <= 0 || n <= 0 || k <= 0 || batch <= 0) return;
    const BatchedKey key{ta, tb, m, n, k, lda, ldb, ldc, static_cast<int>(at), static_cast<int>(bt), batch,
                         std::min(alignment_of(A), std::min(alignment_of(B), alignment_of(D))), sa, sb, sd};
    std::lock_guard<std::mutex> lock(mutex);
    auto it = batched_plans.find(key);
    if (it == batched_plans.end()) {
      const int a = std::get<11>(key);
      const int align[4] = {a, a, a, 256};
      Plan p = make_plan(ta, tb, m, n, k, at, lda, bt, ldb, CUDA_R_32F, ldc, false, align, batch, sa, sb, sd);
      it = batched_plans.emplace(key, p).first;
    }
    Plan& p = it->second;
    const float alpha = 1.f, beta = 0.f;
    check_lt(cublasLtMatmul(handle, p.op, &alpha, A, p.a, B, p.b, &beta, D, p.c, D, p.c, &p.algo, workspace,
                            workspace_bytes, stream),
             "batched matmul");
  }

  Plan make_plan(bool ta, bool tb, int m, int n, int k, cudaDataType_t at, int lda, cudaDataType_t bt, int ldb,
                 cudaDataType_t dt, int ldc, bool bias, const int (&align)[4], int batch = 1, long long sa = 0,
                 long long sb = 0, long long sd = 0) {
    Plan p;
    check_lt(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "create matmul descriptor");
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)), "set transa");
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)), "set transb");
    if (bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
               "set bias epilogue");
    }
    // Stored shapes: op(A) is m × k, op(B) is k × n.
    check_lt(cublasLtMatrixLayoutCreate(&p.a, at, ta ? k : m, ta ? m : k, lda), "A layout");
    check_lt(cublasLtMatrixLayoutCreate(&p.b, bt, tb ? n : k, tb ? k : n, ldb), "B layout");
    check_lt(cublasLtMatrixLayoutCreate(&p.c, dt, m, n, ldc), "C layout");
    if (batch > 1) {
      const cublasLtMatrixLayout_t layouts[3] = {p.a, p.b, p.c};
      const long long strides[3] = {sa, sb, sd};
      for (int i = 0; i < 3; ++i) {
        check_lt(cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)),
                 "set batch count");
        check_lt(cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                  sizeof(strides[i])),
                 "set batch stride");
      }
    }
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "create preference");
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                  sizeof(workspace_bytes)),
             "set workspace preference");
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; ++i) {
      // C and D are the same array here; the bias has no alignment preference of its own.
      const std::uint32_t bytes = static_cast<std::uint32_t>(i < 2 ? align[i] : align[2]);
      check_lt(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &bytes, sizeof(bytes)), "set alignment preference");
    }
    (void)align[3];
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t s =
        cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || found == 0)
      throw std::runtime_error("cuBLASLt has no algorithm for a " + std::to_string(m) + "x" + std::to_string(n) + "x" +
                               std::to_string(k) + " GEMM (transa " + std::to_string(ta) + ", transb " +
                               std::to_string(tb) + "): " + status_name(s));
    p.algo = result.algo;
    return p;
  }
};

Blas::Blas(std::size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  check_lt(cublasLtCreate(&impl_->handle), "create handle");
  impl_->workspace_bytes = workspace_bytes;
  if (workspace_bytes) DITWIN_CUDA_CHECK(cudaMalloc(&impl_->workspace, workspace_bytes));
}
Blas::~Blas() = default;

template <typename T>
void matmul_forward(Blas& blas, T* out, const T* inp, const T* weight, const T* bias, int n, int ic, int oc,
                    cudaStream_t stream) {
  constexpr cudaDataType_t t = data_type<T>();
  // outᵀ (oc × n) = Wᵀ (op T of the stored ic × oc) · inpᵀ (ic × n).
  blas.impl().gemm(true, false, oc, n, ic, weight, t, ic, inp, t, ic, out, t, oc, 0.f, bias, stream);
}

template <typename T>
void matmul_backward(Blas& blas, T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                     int n, int ic, int oc, cudaStream_t stream, bool accumulate_dinp) {
  constexpr cudaDataType_t t = data_type<T>();
  // dinpᵀ (ic × n) (+)= W (stored ic × oc) · doutᵀ (oc × n); beta 0 does not read dinp.
  if (dinp)
    blas.impl().gemm(false, false, ic, n, oc, weight, t, ic, dout, t, oc, dinp, t, ic, accumulate_dinp ? 1.f : 0.f,
                     nullptr, stream);
  // dWᵀ (ic × oc) += inpᵀ (ic × n) · dout (op T of the stored oc × n), in fp32.
  if (dweight)
    blas.impl().gemm(false, true, ic, oc, n, inp, t, ic, dout, t, oc, dweight, CUDA_R_32F, ic, 1.f, nullptr, stream);
  if (dbias) column_sum_accumulate<T>(dbias, dout, n, oc, stream);
}

template <typename T>
void gram_batched(Blas& blas, float* out, const T* x, int batch, int rows, int d, cudaStream_t stream) {
  constexpr cudaDataType_t t = data_type<T>();
  // Column-major, x_i is d x rows (ld d): out_i (rows x rows) = x_iᵀ · x_i.
  const long long sx = static_cast<long long>(rows) * d, so = static_cast<long long>(rows) * rows;
  blas.impl().gemm_batched(true, false, rows, rows, d, x, t, d, sx, x, t, d, sx, out, rows, so, batch, stream);
}

template <typename T>
void outer_batched(Blas& blas, float* out, const T* g, const T* a, int batch, int rows, int d_out, int d_in,
                   cudaStream_t stream) {
  constexpr cudaDataType_t t = data_type<T>();
  // Column-major: a_i is d_in x rows (ld d_in), g_i is d_out x rows (ld d_out); out_iᵀ (d_in x d_out)
  // = a_i · g_iᵀ, which is the row-major d_out x d_in gradient g_iᵀ a_i.
  const long long sa = static_cast<long long>(rows) * d_in, sg = static_cast<long long>(rows) * d_out,
                  so = static_cast<long long>(d_in) * d_out;
  blas.impl().gemm_batched(false, true, d_in, d_out, rows, a, t, d_in, sa, g, t, d_out, sg, out, d_in, so, batch, stream);
}

template void gram_batched<float>(Blas&, float*, const float*, int, int, int, cudaStream_t);
template void gram_batched<bf16>(Blas&, float*, const bf16*, int, int, int, cudaStream_t);
template void outer_batched<float>(Blas&, float*, const float*, const float*, int, int, int, int, cudaStream_t);
template void outer_batched<bf16>(Blas&, float*, const bf16*, const bf16*, int, int, int, int, cudaStream_t);
template void matmul_forward<float>(Blas&, float*, const float*, const float*, const float*, int, int, int, cudaStream_t);
template void matmul_forward<bf16>(Blas&, bf16*, const bf16*, const bf16*, const bf16*, int, int, int, cudaStream_t);
template void matmul_backward<float>(Blas&, float*, float*, float*, const float*, const float*, const float*, int, int,
                                     int, cudaStream_t, bool);
template void matmul_backward<bf16>(Blas&, bf16*, float*, float*, const bf16*, const bf16*, const bf16*, int, int, int,
                                    cudaStream_t, bool);

}  // namespace ditwin::kernels::cuda
