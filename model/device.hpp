// Device presets: the datasheet figures every cost model starts from. A measured device
// profile (ditwin calibrate) can replace any of them.
#pragma once
#include <string>
#include <vector>

namespace ditwin {

enum class Precision { fp32, bf16, fp16, fp8 };
const char* to_string(Precision p);
// Bytes of one element of parameters/activations stored in this precision.
double element_bytes(Precision p);
// The peak that applies to a precision: bf16/fp16 share tensor-core rates, fp32 uses TF32.
double peak_for(Precision p, double bf16, double fp8, double fp32);

struct DeviceSpec {
  std::string name;
  double peak_flops_bf16 = 0;  // dense tensor-core FLOP/s (fp16 is the same on these parts)
  double peak_flops_fp8 = 0;   // dense; 0 = not supported
  double peak_flops_fp32 = 0;  // dense TF32 tensor-core FLOP/s, used for fp32 training
  double memory_bytes = 0;     // usable device memory
  double hbm_bytes_per_s = 0;
  double nvlink_bytes_per_s = 0;  // per direction, per GPU
  double default_nic_gbps = 0;    // the NIC each GPU usually gets in this generation
  bool measured = false;          // true for `cpu`: figures come from ditwin calibrate

  double peak_flops(Precision p) const;
};

// A named preset, or throws InputError with a did-you-mean.
DeviceSpec device_preset(const std::string& name, const std::string& json_path);
std::vector<std::string> device_preset_names();

}  // namespace ditwin
