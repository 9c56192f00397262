#include "cli_job.h"

#include <utility>
#include <vector>

#include "mlafuse/core/error.h"

namespace mlafuse::cli {

void QuantFlags::add_to(ArgParser* p, std::string quant_help) {
  std::vector<std::string> choices;
  for (const OutputFormatInfo& f : output_formats()) {
    if (with_none_ || f.key) choices.emplace_back(f.name);
  }
  p->add_choice("--quant", &quant, std::move(choices), std::move(quant_help));
  p->add_flag("--col-major", &col_major, "group FP8: column-major scales");
  p->add_flag("--ue8m0", &ue8m0, "group FP8: power-of-two scales");
  p->add_flag("--tma-aligned", &tma_aligned,
              "group FP8 with --col-major: scale column stride padded to 4 tokens");
}

OutputQuant QuantFlags::get() const {
  const std::optional<OutputFormat> format = find_output_format(quant);
  MLAFUSE_CHECK(format.has_value(), "option --quant must be one of ",
                output_format_names("|", with_none_), ", got '", quant, "'");
  std::string group_names;  // "fp8-group128 or fp8-group64"
  for (const OutputFormatInfo& f : output_formats()) {
    if (f.group_fp8()) group_names += (group_names.empty() ? "" : " or ") + std::string(f.name);
  }
  const bool group = output_format_info(*format).group_fp8();
  for (const auto& [flag, on] : {std::pair<const char*, bool>{"--col-major", col_major},
                                 {"--ue8m0", ue8m0},
                                 {"--tma-aligned", tma_aligned}}) {
    MLAFUSE_CHECK(group || !on, flag, " applies to --quant ", group_names, ", not ", quant);
  }
  MLAFUSE_CHECK(!tma_aligned || col_major,
                "--tma-aligned pads column-major scales and needs --col-major (row-major scales "
                "have no column stride to pad)");
  return OutputQuant::make(*format, col_major, tma_aligned, ue8m0);
}

OutputQuant QuantFlags::resolve(const ArgParser& p, const OutputQuant& fallback) const {
  const bool any_flag = col_major || ue8m0 || tma_aligned;
  if (!p.given("--quant") && !any_flag) return fallback;
  return get();
}

std::string timing_note(const std::string& backend, int iters) {
  if (backend != "cpu") return "";
  return "CPU timings are indicative only: the naive reference backend, median of " +
         std::to_string(iters) + " run(s); GPU numbers come from --backend cuda";
}

std::unique_ptr<Backend> pick_backend(const std::string& requested, std::string* why) {
  if (!requested.empty()) {
    auto b = make_backend(requested);
    if (requested == "cuda") {
      try {  // the CUDA backend answers capability queries without a GPU; running needs one
        b->allocate(DType::kU8, {1}, {1}, 1);
      } catch (const Error& e) {
        MLAFUSE_FAIL("--backend cuda: ", e.what());
      }
    }
    *why = "as requested";
    return b;
  }
  for (const std::string& name : available_backends()) {
    if (name != "cuda") continue;
    auto b = make_backend("cuda");
    const std::string reason = b->unusable_reason();
    if (!reason.empty()) {
      *why = "default; no usable GPU: " + reason;
      return make_backend("cpu");
    }
    *why = "default: a GPU is present";
    return b;
  }
  *why = "default: this build has no CUDA backend";
  return make_backend("cpu");
}

}  // namespace mlafuse::cli
