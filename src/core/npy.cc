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

// The value of key `key` in the header dict, as its raw text (a quoted string, True/False, or a
// parenthesised tuple).
std::string dict_value(const std::string& header, const std::string& key, const std::string& path) {
  const std::string quoted = "'" + key + "'";
  const size_t k = header.find(quoted);
  MLAFUSE_CHECK(k != std::string::npos, path, ": .npy header has no '", key, "' entry: ", header);
  size_t i = header.find(':', k + quoted.size());
  MLAFUSE_CHECK(i != std::string::npos, path, ": malformed .npy header: ", header);
  ++i;
  while (i < header.size() && std::isspace(static_cast<unsigned char>(header[i]))) ++i;
  MLAFUSE_CHECK(i < header.size(), path, ": malformed .npy header: ", header);
  size_t end;
  if (header[i] == '\'') {
    end = header.find('\'', i + 1);
    MLAFUSE_CHECK(end != std::string::npos, path, ": malformed .npy header: ", header);
    return header.substr(i + 1, end - i - 1);
  }
  if (header[i] == '(') {
    end = header.find(')', i);
    MLAFUSE_CHECK(end != std::string::npos, path, ": malformed .npy header: ", header);
    return header.substr(i, end - i + 1);
  }
  end = i;
  while (end < header.size() && std::isalnum(static_cast<unsigned char>(header[end]))) ++end;
  return header.substr(i, end - i);
}

std::vector<int64_t> parse_shape(const std::string& tuple, const std::string& path) {
  std::vector<int64_t> shape;
  const std::string inner = tuple.substr(1, tuple.size() - 2);
  std::stringstream ss(inner);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = 0, b = item.size();
    while (a < b && std::isspace(static_cast<unsigned char>(item[a]))) ++a;
    while (b > a && std::isspace(static_cast<unsigned char>(item[b - 1]))) --b;
    if (a == b) continue;  // the trailing comma of "(5,)"
    int64_t v = 0;
    for (size_t i = a; i < b; ++i) {
      MLAFUSE_CHECK(std::isdigit(static_cast<unsigned char>(item[i])) && v < (int64_t{1} << 40),
                    path, ": bad .npy shape ", tuple);
      v = v * 10 + (item[i] - '0');
    }
    shape.push_back(v);
  }
  return shape;
}

}  // namespace

void write_npy(const std::string& path, const Tensor& t) {
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

  std::ofstream f(path, std::ios::binary);
  MLAFUSE_CHECK(f.good(), path, ": cannot open for writing");
  f.write(kMagic, 6);
  const char version[2] = {1, 0};
  f.write(version, 2);
  const uint16_t hl = static_cast<uint16_t>(header.size());
  const char hl_bytes[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
  f.write(hl_bytes, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  MLAFUSE_CHECK(f.good(), path, ": write failed");
}

Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MLAFUSE_CHECK(f.good(), path, ": cannot open for reading");
  const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  MLAFUSE_CHECK(data.size() >= 10 && data.compare(0, 6, kMagic, 6) == 0, path,
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
  MLAFUSE_CHECK(header_start + header_len <= data.size(), path, ": truncated .npy header");
  const std::string header = data.substr(header_start, header_len);
  const std::string descr = dict_value(header, "descr", path);
  const std::string fortran = dict_value(header, "fortran_order", path);
  const std::string shape_text = dict_value(header, "shape", path);
  MLAFUSE_CHECK(fortran == "False", path,
                ": Fortran-order (column-major) arrays are not supported; "
                "save with np.ascontiguousarray");
  DType dtype;
  if (descr == "<f4") {
    dtype = DType::kF32;
  } else if (descr == "<i4") {
    dtype = DType::kI32;
  } else if (descr == "|u1" || descr == "<u1" || descr == ">u1") {
    dtype = DType::kU8;
  } else if (!descr.empty() && descr[0] == '>') {
    MLAFUSE_FAIL(path, ": big-endian data ('", descr, "') is not supported");
  } else {
    MLAFUSE_FAIL(path, ": unsupported .npy dtype '", descr, "'; expected '<f4' (f32), '<i4' (i32) ",
                 "or '|u1' (u8)");
  }
  MLAFUSE_CHECK(shape_text.size() >= 2 && shape_text.front() == '(', path, ": bad .npy shape ",
                shape_text);
  const std::vector<int64_t> shape = parse_shape(shape_text, path);
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
  Tensor t = Tensor::empty(dtype, shape);
  if (want > 0) std::memcpy(t.raw(), data.data() + header_start + header_len, want);
  return t;
}

Tensor read_npy(const std::string& path, DType dtype, size_t rank) {
  Tensor t = read_npy(path);
  MLAFUSE_CHECK(t.dtype() == dtype && t.rank() == rank, path, ": expected an array of dtype ",
                dtype_name(dtype), " and rank ", rank, ", got ", dtype_name(t.dtype()), " ",
                shape_str(t.shape()), " (rank ", t.rank(), ")");
  return t;
}

}  // namespace mlafuse
