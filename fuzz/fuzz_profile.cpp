// libFuzzer target: the device-profile reader (`--profile FILE`, written by `ditwin calibrate`).
// Bytes -> JSON -> profile_from_json; an accepted profile must also survive its own round trip
// (to_json, then read again), which is what calibrate's output meets on the next simulate.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "cost_models/profile.hpp"  // defines: profile_from_json, DeviceProfile::to_json
#include "model/errors.hpp"         // defines: InputError

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {  // the harness's own parse (parse_error, out_of_range 406)
    return 0;
  }
  ditwin::cost::DeviceProfile profile;
  try {
    profile = ditwin::cost::profile_from_json(document, "fuzz-profile.json");
  } catch (const ditwin::InputError&) {
    return 0;  // refused with a message: correct
  }
  nlohmann::json written = profile.to_json();
  try {
    ditwin::cost::profile_from_json(written, "round-trip.json");
  } catch (const ditwin::InputError& e) {
    // An accepted profile that ditwin writes but then refuses: a finding (libFuzzer saves the input).
    std::fprintf(stderr, "fuzz_profile: accepted profile refused after to_json: %s\n", e.what());
    std::abort();
  }
  return 0;
}
