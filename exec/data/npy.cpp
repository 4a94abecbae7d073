// The .npy header: a 6-byte magic, a version, a little-endian header length, then a Python dict
// literal {'descr': '<f4', 'fortran_order': False, 'shape': (256, 4, 32, 32), } padded with
// spaces to a multiple of 64 bytes. The parser reads only that subset of Python (quoted strings
// without escapes, True/False, tuples of non-negative integers) and checks every length first.
#include "exec/data/npy.hpp"

#include <cstring>
#include <fstream>

#include "model/errors.hpp"

namespace ditwin::exec {

namespace {

constexpr char magic[] = "\x93NUMPY";
constexpr std::size_t magic_bytes = 6;
constexpr std::size_t max_dims = 32;
constexpr std::int64_t max_array_bytes = std::int64_t{1} << 62;

// A cursor over the dictionary text; every read checks the end.
class Literal {
 public:
  Literal(const std::string& text, const std::string& where) : s_(text), where_(where) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(where_ + ": not a valid .npy header: " + what + " at header byte " + std::to_string(i_));
  }
  void space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool at(char c) {
    space();
    return i_ < s_.size() && s_[i_] == c;
  }
  void expect(char c) {
    if (!at(c)) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string() {
    space();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) fail("expected a quoted string");
    const char quote = s_[i_++];
    const std::size_t begin = i_;
    while (i_ < s_.size() && s_[i_] != quote) {
      if (s_[i_] == '\\') fail("escapes are not supported in header strings");
      ++i_;
    }
    if (i_ >= s_.size()) fail("unterminated string");
    return s_.substr(begin, i_++ - begin);
  }
  bool boolean() {
    space();
    for (const auto& [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
      const std::size_t n = std::strlen(word);
      if (s_.compare(i_, n, word) == 0) {
        i_ += n;
        return value;
      }
    }
    fail("expected True or False");
  }
  std::vector<std::int64_t> tuple() {
    expect('(');
    std::vector<std::int64_t> dims;
    while (!at(')')) {
      if (dims.size() == max_dims) fail("more than " + std::to_string(max_dims) + " dimensions");
      std::int64_t v = 0;
      std::size_t digits = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        if (++digits > 18) fail("a dimension with more than 18 digits");
        v = v * 10 + (s_[i_++] - '0');
      }
      if (digits == 0) fail("expected a non-negative integer dimension");
      if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2's long suffix (old numpy wrote it)
      dims.push_back(v);
      if (at(',')) ++i_;
      else if (!at(')')) fail("expected ',' or ')' in the shape");
    }
    ++i_;
    return dims;
  }
  std::size_t position() const { return i_; }
  bool done() {
    space();
    return i_ >= s_.size();
  }

 private:
  const std::string& s_;
  const std::string& where_;
  std::size_t i_ = 0;
};

NpyDtype dtype_of(const std::string& descr) {
  // '<' little-endian; '=' native, which numpy writes only where byte order cannot matter, and
  // this reader runs on little-endian machines alone.
  if (descr.size() != 3 || (descr[0] != '<' && descr[0] != '=')) return NpyDtype::other;
  const std::string t = descr.substr(1);
  if (t == "f4") return NpyDtype::float32;
  if (t == "i4") return NpyDtype::int32;
  if (t == "i8") return NpyDtype::int64;
  return NpyDtype::other;
}

}  // namespace

const char* to_string(NpyDtype d) {
  switch (d) {
    case NpyDtype::float32: return "float32";
    case NpyDtype::int32: return "int32";
    case NpyDtype::int64: return "int64";
    case NpyDtype::other: break;
  }
  return "other";
}

std::size_t dtype_bytes(NpyDtype d) {
  switch (d) {
    case NpyDtype::float32:
    case NpyDtype::int32: return 4;
    case NpyDtype::int64: return 8;
    case NpyDtype::other: break;
  }
  return 0;
}

std::int64_t NpyHeader::elements() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;  // bounded by parse_npy_header
  return n;
}

NpyHeader parse_npy_header(const std::string& bytes, const std::string& where) {
  if (bytes.size() < magic_bytes + 2 || bytes.compare(0, magic_bytes, magic, magic_bytes) != 0)
    throw InputError(where + ": not a .npy file (it does not start with \\x93NUMPY)");
  const auto major = static_cast<unsigned char>(bytes[6]);
  const auto minor = static_cast<unsigned char>(bytes[7]);
  if (major < 1 || major > 3 || minor != 0)
    throw InputError(where + ": .npy version " + std::to_string(major) + "." + std::to_string(minor) +
                     " (this reader knows 1.0, 2.0 and 3.0)");
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  const std::size_t preamble = magic_bytes + 2 + length_bytes;
  if (bytes.size() < preamble) throw InputError(where + ": the .npy header is cut short (" + std::to_string(bytes.size()) + " bytes)");
  std::size_t header_bytes = 0;
  for (std::size_t k = 0; k < length_bytes; ++k)
    header_bytes |= static_cast<std::size_t>(static_cast<unsigned char>(bytes[8 + k])) << (8 * k);
  if (header_bytes > npy_max_header_bytes)
    throw InputError(where + ": the .npy header says it is " + std::to_string(header_bytes) + " bytes long (at most " +
                     std::to_string(npy_max_header_bytes) + " are read)");
  if (bytes.size() - preamble < header_bytes)
    throw InputError(where + ": the .npy header is cut short: it says " + std::to_string(header_bytes) + " bytes, the file has " +
                     std::to_string(bytes.size() - preamble) + " after the preamble");
  const std::string text = bytes.substr(preamble, header_bytes);

  NpyHeader h;
  h.data_offset = preamble + header_bytes;
  Literal p(text, where);
  bool has_descr = false, has_order = false, has_shape = false;
  p.expect('{');
  while (!p.at('}')) {
    const std::string key = p.string();
    p.expect(':');
    bool* seen = key == "descr" ? &has_descr : key == "fortran_order" ? &has_order : key == "shape" ? &has_shape : nullptr;
    if (!seen) p.fail("unknown key '" + key + "' (a .npy header has descr, fortran_order and shape)");
    if (*seen) p.fail("'" + key + "' given twice");
    *seen = true;
    if (key == "descr") h.descr = p.string();
    else if (key == "fortran_order") h.fortran_order = p.boolean();
    else h.shape = p.tuple();
    if (p.at(',')) p.expect(',');
    else if (!p.at('}')) p.fail("expected ',' or '}'");
  }
  p.expect('}');
  if (!p.done()) p.fail("text after the dictionary");
  if (!has_descr || !has_order || !has_shape)
    throw InputError(where + ": not a valid .npy header: it lacks " +
                     std::string(!has_descr ? "descr" : !has_order ? "fortran_order" : "shape"));
  h.dtype = dtype_of(h.descr);
  // Sizes stay far below overflow: at most 2^62 bytes of 8-byte elements.
  std::int64_t elements = 1;
  for (std::int64_t d : h.shape) {
    if (d != 0 && elements > max_array_bytes / 8 / d)
      throw InputError(where + ": the .npy shape describes more than 2^62 bytes");
    elements *= d;
  }
  return h;
}

NpyHeader read_npy_header(const std::string& path, const std::string& where) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError((where.empty() ? path : where) + ": cannot open");
  std::string bytes(magic_bytes + 2 + 4 + npy_max_header_bytes, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<std::size_t>(in.gcount()));
  return parse_npy_header(bytes, where.empty() ? path : where);
}

std::string npy_header(NpyDtype dtype, const std::vector<std::int64_t>& shape) {
  std::string dict = "{'descr': '";
  dict += dtype == NpyDtype::float32 ? "<f4" : dtype == NpyDtype::int32 ? "<i4" : "<i8";
  dict += "', 'fortran_order': False, 'shape': (";
  for (std::size_t k = 0; k < shape.size(); ++k) (dict += k ? ", " : "") += std::to_string(shape[k]);
  dict += shape.size() == 1 ? ",), }" : "), }";  // (256,): a one-element tuple needs its comma
  // Padded with spaces and a final newline so the data starts 64-byte aligned, as numpy pads.
  const bool v1 = dict.size() + 1 + 10 <= 65535;
  const std::size_t preamble = v1 ? 10 : 12;
  std::size_t total = preamble + dict.size() + 1;
  total = (total + 63) / 64 * 64;
  const std::size_t header_bytes = total - preamble;
  dict.append(header_bytes - dict.size() - 1, ' ');
  dict += '\n';
  std::string out(magic, magic_bytes);
  out += static_cast<char>(v1 ? 1 : 2);
  out += '\0';
  for (std::size_t k = 0; k < (v1 ? 2u : 4u); ++k) out += static_cast<char>((header_bytes >> (8 * k)) & 0xff);
  return out + dict;
}

}  // namespace ditwin::exec
