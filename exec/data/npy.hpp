// NumPy's .npy format, the dataset shards' container (docs/data.md): a header parser that treats
// the file as untrusted (bounded lengths, no allocation from a length it has not checked; fuzzed
// by fuzz/fuzz_npy.cpp) and the header numpy.save would write for an array we write ourselves.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ditwin::exec {

// The element types a dataset holds; `other` is any descr we do not read (kept for the message).
enum class NpyDtype { float32, int32, int64, other };
const char* to_string(NpyDtype d);  // "float32", "int32", "int64", "other"
std::size_t dtype_bytes(NpyDtype d);

struct NpyHeader {
  std::string descr;                // as written: "<f4", ">f4", "<f8", ...
  NpyDtype dtype = NpyDtype::other;  // little-endian float32/int32/int64, else other
  bool fortran_order = false;
  std::vector<std::int64_t> shape;  // () for a scalar
  std::size_t data_offset = 0;      // bytes before the first element
  std::int64_t elements() const;    // product of shape (1 for a scalar)
};

// The largest header this reader accepts (numpy's own default limit is 10,000 bytes).
constexpr std::size_t npy_max_header_bytes = 1 << 20;

// Parses the .npy header at the start of `bytes` (the bytes after it are ignored). Throws
// InputError "<where>: ..." for anything but a well-formed v1/v2/v3 header: bad magic, a header
// length past the bytes given or past npy_max_header_bytes, a malformed or incomplete dictionary,
// more than 32 dimensions, or a size that overflows 2^62 bytes. Big-endian and non-float32/int
// descrs parse (dtype other) so that the caller can say which field wanted what.
NpyHeader parse_npy_header(const std::string& bytes, const std::string& where);
// Reads and parses the header of a file (at most npy_max_header_bytes + 12 bytes are read); errors
// start with `where` (default: the path).
NpyHeader read_npy_header(const std::string& path, const std::string& where = "");
// The header (magic, version, length, dictionary, padding to 64 bytes) of a little-endian C-order
// array, as numpy.save writes it; the data follows it directly.
std::string npy_header(NpyDtype dtype, const std::vector<std::int64_t>& shape);

}  // namespace ditwin::exec
