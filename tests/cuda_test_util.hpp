// Helpers for the CUDA kernel tests: a fixture that skips (with a message) where no GPU is
// present, device buffers that upload/download through the storage type (bf16 or float) and are
// poisoned with NaN before a kernel writes them, fresh random inputs, and bf16 rounding for the
// CPU reference.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/common.hpp"

namespace ditwin::test {

namespace kc = ditwin::kernels::cuda;

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kc::device_count() == 0) GTEST_SKIP() << "no CUDA device here: GPU test skipped (run tools/device/check.sh on a GPU machine)";
    DITWIN_CUDA_CHECK(cudaStreamCreate(&stream));
    seed = std::random_device{}();
    gen_.seed(seed);
    trace_ = std::make_unique<::testing::ScopedTrace>(__FILE__, __LINE__, "random seed " + std::to_string(seed));
  }
  void TearDown() override {
    if (stream) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
  }
  // Fresh inputs every run (never zeros): normal(0, scale), from this test's seed.
  std::vector<float> fresh(std::size_t n, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) {
      do x = dist(gen_);
      while (x == 0.0f);
    }
    return v;
  }
  void sync() { DITWIN_CUDA_CHECK(cudaStreamSynchronize(stream)); }

  cudaStream_t stream = nullptr;
  std::uint32_t seed = 0;

 private:
  std::unique_ptr<::testing::ScopedTrace> trace_;
  std::mt19937 gen_;
};

template <typename T>
inline T to_storage(float x) {
  if constexpr (std::is_same_v<T, kc::bf16>) return __float2bfloat16(x);
  else return static_cast<T>(x);
}
template <typename T>
inline float from_storage(T x) {
  if constexpr (std::is_same_v<T, kc::bf16>) return __bfloat162float(x);
  else return static_cast<float>(x);
}

// Values as the storage type holds them (bf16 rounding), for the CPU reference's inputs.
template <typename T>
inline std::vector<float> rounded(std::vector<float> v) {
  for (auto& x : v) x = from_storage(to_storage<T>(x));
  return v;
}

template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t n) : n_(n) { DITWIN_CUDA_CHECK(cudaMalloc(&p_, std::max<std::size_t>(1, n) * sizeof(T))); }
  explicit DeviceArray(const std::vector<float>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() { return p_; }
  const T* get() const { return p_; }
  std::size_t size() const { return n_; }
  void upload(const std::vector<float>& host) {
    std::vector<T> tmp(host.size());
    for (std::size_t i = 0; i < host.size(); ++i) tmp[i] = to_storage<T>(host[i]);
    DITWIN_CUDA_CHECK(cudaMemcpy(p_, tmp.data(), tmp.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<float> download() const {
    std::vector<T> tmp(n_);
    DITWIN_CUDA_CHECK(cudaDeviceSynchronize());
    DITWIN_CUDA_CHECK(cudaMemcpy(tmp.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> out(n_);
    for (std::size_t i = 0; i < n_; ++i) out[i] = from_storage(tmp[i]);
    return out;
  }
  // All bits set: NaN in float and in bf16, so an element the kernel never writes fails the check.
  void poison() { DITWIN_CUDA_CHECK(cudaMemset(p_, 0xFF, n_ * sizeof(T))); }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// ||got − want|| / ||want|| under `tolerance`, and every element finite (written).
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tolerance,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double num = 0, den = 0;
  std::size_t bad = 0, first_bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      if (bad++ == 0) first_bad = i;
      continue;
    }
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " elements not finite (unwritten?), first at " << first_bad;
  ASSERT_GT(den, 0.0) << what << ": the reference is all zero, the check would prove nothing";
  const double rel = std::sqrt(num / den);
  EXPECT_LT(rel, tolerance) << what << ": relative error " << rel;
}

// Tolerances: fp32 arithmetic over fp32 storage, and bf16 storage (8 bits of mantissa) with fp32
// accumulation.
constexpr double tol_fp32 = 1e-5;
constexpr double tol_bf16 = 1.5e-2;

}  // namespace ditwin::test
