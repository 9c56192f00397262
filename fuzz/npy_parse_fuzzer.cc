// libFuzzer target for the .npy reader. Properties checked on every input:
// - reading never crashes and fails only with mlafuse::Error (anything else escapes: a finding);
// - whatever reads re-encodes to bytes that read back to the same dtype, shape and data, and whose
//   encoding is a fixed point.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "mlafuse/core/error.h"
#include "mlafuse/core/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  mlafuse::Tensor t;
  try {
    t = mlafuse::parse_npy(bytes, "fuzz.npy");
  } catch (const mlafuse::Error&) {
    return 0;
  }
  const std::string encoded = mlafuse::encode_npy(t, "fuzz.npy");
  const mlafuse::Tensor again = mlafuse::parse_npy(encoded, "re-encoded.npy");
  const size_t n = static_cast<size_t>(t.numel()) * mlafuse::dtype_size(t.dtype());
  if (again.dtype() != t.dtype() || again.shape() != t.shape() ||
      (n > 0 && std::memcmp(again.raw(), t.raw(), n) != 0) ||
      mlafuse::encode_npy(again, "re-encoded.npy") != encoded) {
    std::abort();
  }
  return 0;
}
