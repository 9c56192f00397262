#include "mlafuse/core/npy.h"

#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "mlafuse/core/error.h"
#include "mlafuse/core/file.h"
#include "mlafuse/core/shape.h"

namespace mlafuse {

namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes

float half_to_f32(uint16_t h, bool bf16) {
  if (bf16) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  // f16: exact widening.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t u;
  if (e == 0) {
    float v = static_cast<float>(m) * (1.0f / 16777216.0f);
    std::memcpy(&u, &v, 4);
    u |= sign;
  } else if (e == 31) {
    u = sign | 0x7f800000u | (m << 13);
  } else {
    u = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The header dict, parsed strictly: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`
// with each of the three keys exactly once and nothing else, then spaces and one '\n'. Anything
// else is an error naming the file and the offending byte, so a corrupt header is never half-read.
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  NpyHeader parse() {
    NpyHeader h;
    bool seen[3] = {false, false, false};
    space();
    expect('{');
    while (true) {
      space();
      if (peek() == '}') break;
      const std::string key = quoted();
      space();
      expect(':');
      space();
      int which;
      if (key == "descr") {
        which = 0;
        h.descr = quoted();
      } else if (key == "fortran_order") {
        which = 1;
        h.fortran_order = boolean();
      } else if (key == "shape") {
        which = 2;
        h.shape = tuple();
      } else {
        fail("unknown key '" + key + "' (a .npy header has descr, fortran_order and shape)");
      }
      if (seen[which]) fail("key '" + key + "' appears twice");
      seen[which] = true;
      space();
      if (peek() != ',') break;
      ++i_;
    }
    space();
    expect('}');
    while (i_ < s_.size() && s_[i_] == ' ') ++i_;
    if (i_ + 1 != s_.size() || s_[i_] != '\n') fail("the header must end with '}', spaces and '\\n'");
    static const char* const kKeys[3] = {"descr", "fortran_order", "shape"};
    for (int k = 0; k < 3; ++k) {
      MLAFUSE_CHECK(seen[k], path_, ": .npy header has no '", kKeys[k], "' entry");
    }
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    MLAFUSE_FAIL(path_, ": malformed .npy header at byte ", i_, ": ", what);
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t')) ++i_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string quoted() {
    expect('\'');
    const size_t end = s_.find('\'', i_);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string v(s_.substr(i_, end - i_));
    i_ = end + 1;
    return v;
  }
  bool boolean() {
    for (const auto& [word, v] : {std::pair<std::string_view, bool>{"True", true}, {"False", false}}) {
      if (s_.substr(i_, word.size()) == word) {
        i_ += word.size();
        return v;
      }
    }
    fail("expected True or False");
  }
  // "()", "(5,)", "(2, 3)"; each extent below 2^40 so no product of a few of them can wrap
  // before it is checked.
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> shape;
    bool trailing_comma = false;
    while (true) {
      space();
      if (peek() == ')') break;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("expected a dimension of the shape");
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        v = v * 10 + (s_[i_++] - '0');
        if (v >= (int64_t{1} << 40)) fail("a shape dimension of 2^40 or more");
      }
      shape.push_back(v);
      if (shape.size() > 32) fail("a shape of more than 32 dimensions");
      trailing_comma = false;
      space();
      if (peek() != ',' && peek() != ')') fail("expected ',' or ')' after a shape dimension");
      if (peek() != ',') break;
      ++i_;
      trailing_comma = true;
    }
    // numpy writes a one-element tuple as "(5,)"; "(5)" is not a tuple.
    if (shape.size() == 1 && !trailing_comma) fail("a one-dimension shape is written (N,)");
    expect(')');
    return shape;
  }

  std::string_view s_;
  const std::string& path_;
  size_t i_ = 0;
};

}  // namespace

std::string encode_npy(const Tensor& t, const std::string& path) {
  MLAFUSE_CHECK(t.defined(), path, ": cannot write an absent tensor");
  MLAFUSE_CHECK(t.device() == Device::kCpu, path, ": tensor ", t.str(),
                " is on the device; copy it to the host first");
  const Tensor c = t.is_contiguous() ? t : t.clone();
  std::string descr;
  std::vector<char> bytes;
  const int64_t n = c.numel();
  switch (c.dtype()) {
    case DType::kF32:
      descr = "<f4";
      break;
    case DType::kI32:
      descr = "<i4";
      break;
    case DType::kU8:
    case DType::kFp8E4M3:
    case DType::kE8M0:
    case DType::kFp4E2M1x2:
      descr = "|u1";
      break;
    case DType::kBF16:
    case DType::kF16: {
      descr = "<f4";
      bytes.resize(static_cast<size_t>(n) * 4);
      const uint16_t* src = c.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) {
        const float f = half_to_f32(src[i], c.dtype() == DType::kBF16);
        std::memcpy(bytes.data() + i * 4, &f, 4);
      }
      break;
    }
  }
  if (bytes.empty() && n > 0) {
    const char* src = static_cast<const char*>(c.raw());
    bytes.assign(src, src + static_cast<size_t>(n) * dtype_size(c.dtype()));
  }
  std::string shape = "(";
  for (size_t i = 0; i < c.rank(); ++i) shape += (i ? ", " : "") + std::to_string(c.dim(i));
  shape += c.rank() == 1 ? ",)" : ")";  // numpy's one-element tuple "(5,)"
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so the data starts on a 64-byte boundary; the header ends with '\n'.
  const size_t prefix = 6 + 2 + 2;  // magic, version, header length
  header += std::string((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  MLAFUSE_CHECK(header.size() <= 65535, path, ": .npy header too long for shape ", shape);

  const uint16_t hl = static_cast<uint16_t>(header.size());
  std::string out(kMagic, 6);
  out += {1, 0, static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};  // version, length
  out += header;
  out.append(bytes.data(), bytes.size());
  return out;
}

void write_npy(const std::string& path, const Tensor& t) {
  const std::string bytes = encode_npy(t, path);
  std::ofstream f(path, std::ios::binary);
  MLAFUSE_CHECK(f.good(), path, ": cannot open for writing");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  MLAFUSE_CHECK(f.good(), path, ": write failed");
}

Tensor parse_npy(std::string_view data, const std::string& path) {
  MLAFUSE_CHECK(data.size() >= 10 && data.compare(0, 6, std::string_view(kMagic, 6)) == 0, path,
                ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(data[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<unsigned char>(data[8]) | (static_cast<unsigned char>(data[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    MLAFUSE_CHECK(data.size() >= 12, path, ": truncated .npy header");
    header_len = 0;
    for (int i = 3; i >= 0; --i)
      header_len = (header_len << 8) | static_cast<unsigned char>(data[8 + i]);
    header_start = 12;
  } else {
    MLAFUSE_FAIL(path, ": unsupported .npy format version ", major, ".",
                 static_cast<int>(static_cast<unsigned char>(data[7])));
  }
  MLAFUSE_CHECK(header_len <= data.size() - header_start, path, ": truncated .npy header");
  const std::string_view header = data.substr(header_start, header_len);
  const NpyHeader h = HeaderParser(header, path).parse();
  MLAFUSE_CHECK(!h.fortran_order, path,
                ": Fortran-order (column-major) arrays are not supported; "
                "save with np.ascontiguousarray");
  DType dtype;
  if (h.descr == "<f4") {
    dtype = DType::kF32;
  } else if (h.descr == "<i4") {
    dtype = DType::kI32;
  } else if (h.descr == "|u1" || h.descr == "<u1" || h.descr == ">u1") {
    dtype = DType::kU8;
  } else if (!h.descr.empty() && h.descr[0] == '>') {
    MLAFUSE_FAIL(path, ": big-endian data ('", h.descr, "') is not supported");
  } else {
    MLAFUSE_FAIL(path, ": unsupported .npy dtype '", h.descr,
                 "'; expected '<f4' (f32), '<i4' (i32) or '|u1' (u8)");
  }
  const std::vector<int64_t>& shape = h.shape;
  // The size is checked against the file before allocating, so a corrupt shape is a clear error
  // rather than bad_alloc or a wrapped product: want stays <= have at every step.
  const size_t have = data.size() - header_start - header_len;
  double need = static_cast<double>(dtype_size(dtype));  // exact below 2^53
  for (int64_t d : shape) need *= static_cast<double>(d);
  size_t want = need == 0 ? 0 : dtype_size(dtype);
  for (int64_t d : shape) {
    const size_t ud = static_cast<size_t>(d);
    MLAFUSE_CHECK(ud == 0 || want <= have / ud, path, ": truncated .npy data: ", shape_str(shape),
                  " ", dtype_name(dtype), " needs ",
                  need < 0x1p53 ? std::to_string(static_cast<uint64_t>(need)) : "over 2^53",
                  " bytes, the file holds ", have);
    want *= ud;
  }
  MLAFUSE_CHECK(want == have, path, ": ", have - want, " bytes after the data of ",
                shape_str(shape), " ", dtype_name(dtype), " (", want,
                " bytes); the file is longer than its header says");
  // An empty array allocates nothing, but its strides still multiply the other extents.
  MLAFUSE_CHECK(extents_bytes_fit(shape, dtype_size(dtype)), path, ": .npy shape ",
                shape_str(shape), " ", dtype_name(dtype), " is more than 2^63 bytes");
  Tensor t = Tensor::empty(dtype, shape);
  if (want > 0) std::memcpy(t.raw(), data.data() + header_start + header_len, want);
  return t;
}

Tensor read_npy(const std::string& path) { return parse_npy(read_file(path), path); }

Tensor read_npy(const std::string& path, DType dtype, size_t rank) {
  Tensor t = read_npy(path);
  MLAFUSE_CHECK(t.dtype() == dtype && t.rank() == rank, path, ": expected an array of dtype ",
                dtype_name(dtype), " and rank ", rank, ", got ", dtype_name(t.dtype()), " ",
                shape_str(t.shape()), " (rank ", t.rank(), ")");
  return t;
}

}  // namespace mlafuse
