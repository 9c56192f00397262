#include "mlafuse/core/mla_config.h"

#include <sstream>

#include "mlafuse/core/error.h"

namespace mlafuse {

void MlaConfig::validate() const {
  const std::pair<const char*, int64_t> fields[] = {
      {"num_heads", num_heads},     {"qk_nope_dim", qk_nope_dim}, {"qk_rope_dim", qk_rope_dim},
      {"v_head_dim", v_head_dim},   {"kv_lora_rank", kv_lora_rank}, {"hidden", hidden},
      {"page_size", page_size}};
  for (const auto& [name, v] : fields) {
    MLAFUSE_CHECK(v > 0, "MLA config field ", name, " must be positive, got ", v);
  }
  MLAFUSE_CHECK(softmax_scale >= 0, "MLA config softmax_scale must be >= 0, got ", softmax_scale);
}

std::string MlaConfig::str() const {
  std::ostringstream os;
  os << "MLA(H=" << num_heads << ", P=" << qk_nope_dim << ", R=" << qk_rope_dim
     << ", V=" << v_head_dim << ", L=" << kv_lora_rank << ", hidden=" << hidden
     << ", page=" << page_size << ", softmax scale " << scale() << ")";
  return os.str();
}

}  // namespace mlafuse
