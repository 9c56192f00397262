#include "mlafuse/backends/backend.h"
#include "mlafuse/backends/cpu/cpu_backend.h"
#include "mlafuse/core/error.h"

#if defined(MLAFUSE_WITH_CUDA)
#include "mlafuse/backends/cuda/cuda_backend.h"
#endif

namespace mlafuse {

std::vector<std::string> available_backends() {
#if defined(MLAFUSE_WITH_CUDA)
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

std::unique_ptr<Backend> make_backend(std::string_view name) {
  if (name == "cpu") return make_cpu_backend();
#if defined(MLAFUSE_WITH_CUDA)
  if (name == "cuda") return make_cuda_backend();
#endif
  std::string names;
  for (const auto& n : available_backends()) names += (names.empty() ? "" : ", ") + n;
  MLAFUSE_FAIL("unknown backend '", name, "'; this build has: ", names);
}

}  // namespace mlafuse
