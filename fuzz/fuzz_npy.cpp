// libFuzzer target: the .npy header parser of the dataset reader (`ditwin execute` with
// training.data, `ditwin dataset check`). A refusal with InputError is the right answer to a bad
// header; any other exception, a crash or a sanitizer report is a finding. An accepted header of a
// type the reader trains on must also survive a rewrite: npy_header of its dtype and shape parses
// back to the same shape.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "exec/data/npy.hpp"  // defines: parse_npy_header, npy_header
#include "model/errors.hpp"   // defines: InputError

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    ditwin::exec::NpyHeader h = ditwin::exec::parse_npy_header(bytes, "fuzz.npy");
    if (h.data_offset > bytes.size()) std::abort();
    if (h.dtype != ditwin::exec::NpyDtype::other) {
      auto again = ditwin::exec::parse_npy_header(ditwin::exec::npy_header(h.dtype, h.shape), "rewritten.npy");
      if (again.shape != h.shape || again.dtype != h.dtype) std::abort();
    }
  } catch (const ditwin::InputError&) {
    // refused with a message: correct
  }
  return 0;
}
