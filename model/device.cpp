// Device presets with their datasheet sources.
#include "model/device.hpp"

#include <unistd.h>

#include "model/errors.hpp"
#include "model/json_reader.hpp"

namespace ditwin {

const char* to_string(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
    case Precision::fp8: return "fp8";
  }
  return "?";
}

double element_bytes(Precision p) {
  switch (p) {
    case Precision::fp32: return 4;
    case Precision::bf16:
    case Precision::fp16: return 2;
    case Precision::fp8: return 1;
  }
  return 4;
}

double peak_for(Precision p, double bf16, double fp8, double fp32) {
  switch (p) {
    case Precision::fp32: return fp32;
    case Precision::bf16:
    case Precision::fp16: return bf16;
    case Precision::fp8: return fp8;
  }
  return 0;
}

double DeviceSpec::peak_flops(Precision p) const { return peak_for(p, peak_flops_bf16, peak_flops_fp8, peak_flops_fp32); }

namespace {
constexpr double TB = 1e12, GB = 1e9, MiB = 1024.0 * 1024.0;

std::vector<DeviceSpec> presets() {
  std::vector<DeviceSpec> d;
  // NVIDIA A100 Tensor Core GPU datasheet (2021), SXM 80GB: BF16 312 TFLOPS dense, TF32 156,
  // no FP8; HBM2e 2,039 GB/s; NVLink 3 600 GB/s (300 per direction); 81,920 MiB; HDR 200 Gb/s.
  d.push_back({"A100-SXM-80GB", 312 * TB, 0, 156 * TB, 81920 * MiB, 2039 * GB, 300 * GB, 200});
  // NVIDIA H100 Tensor Core GPU datasheet (2023), SXM5: BF16 989.4 TFLOPS dense (1,979 sparse),
  // FP8 1,979 dense, TF32 494.7 dense; HBM3 3.35 TB/s; NVLink 4 900 GB/s (450 per direction);
  // 80 GB (81,559 MiB visible); ConnectX-7 400 Gb/s per GPU.
  d.push_back({"H100-SXM", 989.4 * TB, 1978.9 * TB, 494.7 * TB, 81559 * MiB, 3350 * GB, 450 * GB,
               400});
  // NVIDIA H200 datasheet (2024), SXM: same compute as H100 SXM; HBM3e 141 GB (143,771 MiB
  // visible) at 4.8 TB/s; NVLink 900 GB/s.
  d.push_back({"H200", 989.4 * TB, 1978.9 * TB, 494.7 * TB, 143771 * MiB, 4800 * GB, 450 * GB,
               400});
  // NVIDIA DGX B200 datasheet (2024), per GPU (1/8 of the system): FP8 4.5 PFLOPS dense
  // (72 PF sparse per 8), BF16 2.25 PF dense, TF32 1.1 PF dense; 180 GB HBM3e (1,440 GB per 8)
  // at 8 TB/s; NVLink 5 1.8 TB/s (900 GB/s per direction); ConnectX-7 400 Gb/s.
  d.push_back({"B200", 2250 * TB, 4500 * TB, 1100 * TB, 180 * GB, 8000 * GB, 900 * GB, 400});
  // The host CPU: compute and bandwidth figures come only from `ditwin calibrate --backend cpu`;
  // memory is what this machine has.
  DeviceSpec cpu;
  cpu.name = "cpu";
  cpu.measured = true;
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  cpu.memory_bytes = pages > 0 && page > 0 ? static_cast<double>(pages) * page : 0;
  d.push_back(cpu);
  return d;
}
}  // namespace

std::vector<std::string> device_preset_names() {
  std::vector<std::string> names;
  for (const auto& d : presets()) names.push_back(d.name);
  return names;
}

DeviceSpec device_preset(const std::string& name, const std::string& json_path) {
  for (auto& d : presets())
    if (d.name == name) return d;
  std::string message = json_path + ": unknown device \"" + name + "\"";
  std::string hint = closest_word(name, device_preset_names());
  if (!hint.empty()) message += " (did you mean \"" + hint + "\"?)";
  message += "; devices:";
  for (const auto& n : device_preset_names()) message += " " + n;
  throw InputError(message);
}

}  // namespace ditwin
