// libFuzzer target for the attention-metadata validator and what trusts it (the properties are in
// metadata_input.h).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "metadata_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  mlafuse::fuzzing::check_metadata_input(mlafuse::fuzzing::decode_metadata_input(bytes));
  return 0;
}
