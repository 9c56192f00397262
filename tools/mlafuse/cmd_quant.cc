// mlafuse quant: quantize an f32 .npy activation [T, D] with the reference quantizers (SPEC 3),
// e.g. to check activations dumped from another engine against mlafuse's codes and scales.
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_job.h"
#include "command.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/npy.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/quant/layout.h"
#include "mlafuse/quant/output_quant.h"

namespace mlafuse::cli {
namespace {

// A positive finite float from an option value, or an error naming the option.
float parse_scale(const std::string& option, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const float v = std::strtof(text.c_str(), &end);
  MLAFUSE_CHECK(end != text.c_str() && *end == '\0' && errno == 0 && std::isfinite(v) && v > 0,
                "option ", option, " needs a finite positive number, got '", text, "'");
  return v;
}

// max |x| ignoring NaN (as the quantizers' amax does).
float tensor_amax(const Tensor& x) {
  float m = 0.0f;
  for (int64_t i = 0; i < x.numel(); ++i) {  // every NaN skipped (std::fmax keeps a signalling one)
    const float a = std::fabs(x.data<float>()[i]);
    if (a > m) m = a;
  }
  return m;
}

Tensor scalar(float v) {
  Tensor t = Tensor::empty(DType::kF32, {1});
  t.data<float>()[0] = v;
  return t;
}

int run_quant(const std::vector<std::string>& args) {
  std::string in, out, scale_text, gs_text;
  QuantFlags flags;
  ArgParser p("quant",
              "quantize an f32 .npy [T, D] with the reference quantizers; writes PREFIX.q.npy "
              "(u8 codes: [T, D] fp8, [T, D/2] nvfp4) and PREFIX.scale.npy (fp8-static: f32 [1]; "
              "group FP8: f32 [T, D/G] in logical order whatever the layout flags; nvfp4: the u8 "
              "swizzled e4m3 block scales [round_up(T,128), round_up(D/16,4)])");
  flags.add_to(&p, "quantization key (SPEC 2); required");
  p.add_alias("--key", "--quant");  // the option's name before every command took --quant
  p.add_string("--scale", &scale_text, "S",
               "fp8-static: the dequant scale (default amax(x) / 448)");
  p.add_string("--global-scale", &gs_text, "GS",
               "nvfp4: the global scale (default 448 * 6 / amax(x))");
  p.add_string("--in", &in, "X.npy", "input: f32 array of shape [T, D]");
  p.add_string("--out", &out, "PREFIX", "output prefix");
  if (!p.parse(args)) return 0;
  MLAFUSE_CHECK(p.given("--quant"),
                "option --quant is required (fp8-static|fp8-group128|fp8-group64|nvfp4)");
  MLAFUSE_CHECK(!in.empty(), "option --in is required");
  MLAFUSE_CHECK(!out.empty(), "option --out is required");
  // PREFIX names files, not a folder: "dir/" would write the hidden dir/.q.npy.
  const std::string base = std::filesystem::path(out).filename().string();
  MLAFUSE_CHECK(!base.empty() && base != "." && base != "..", "option --out takes a file prefix ",
                "(PREFIX.q.npy, PREFIX.scale.npy), not a directory: got '", out, "'");
  const OutputQuant quant = flags.get();
  const std::string& key = flags.quant;
  MLAFUSE_CHECK(scale_text.empty() || quant.format == OutputFormat::kFp8Static,
                "--scale applies only to fp8-static");
  MLAFUSE_CHECK(gs_text.empty() || quant.format == OutputFormat::kNvfp4,
                "--global-scale applies only to nvfp4");

  const Tensor x = read_npy(in, DType::kF32, 2);
  const int64_t t = x.dim(0), d = x.dim(1);
  const std::string q_path = out + ".q.npy", s_path = out + ".scale.npy";
  const int64_t g = quant.group_size();
  if (g > 0 && d % g != 0) {
    std::string name = key;  // "16 (the NVFP4 block)"
    for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const std::string block = std::to_string(g) + " (the " + name + " block)";
    MLAFUSE_FAIL(in, ": D = ", d, " (shape ", shape_str(x.shape()), ") is not a multiple of ",
                 quant.info().group_fp8() ? "the group size " + std::to_string(g) : block);
  }

  // The scale input of the formats that take one: given, or calibrated from amax(x).
  Tensor scale;
  std::string note;
  if (quant.info().takes_scale()) {
    const bool is_static = quant.format == OutputFormat::kFp8Static;
    const std::string& text = is_static ? scale_text : gs_text;
    const char* option = is_static ? "--scale" : "--global-scale";
    float v;
    if (!text.empty()) {
      v = parse_scale(option, text);
    } else {
      const float amax = tensor_amax(x);
      MLAFUSE_CHECK(std::isfinite(amax) && amax > 0, in, ": amax(x) = ", amax, " gives no usable ",
                    is_static ? "scale" : "global scale", "; pass ", option);
      v = is_static ? amax / 448.0f : 448.0f * 6.0f / amax;
      // A tiny amax makes a subnormal scale whose reciprocal overflows (every code 0xff or
      // saturated, SPEC 3.1), or a global scale of inf.
      MLAFUSE_CHECK(std::isfinite(v) && std::isfinite(1.0f / v), in, ": amax(x) = ", amax,
                    " gives no usable ", is_static ? "scale" : "global scale", " (", v, "); pass ",
                    option);
      note = is_static ? " (amax / 448)" : " (448 * 6 / amax)";
    }
    scale = scalar(v);
  }
  const DType code = quant.info().code_dtype();
  Tensor q = Tensor::empty(code, {t, code == DType::kFp4E2M1x2 ? d / 2 : d});
  Tensor block_scale;
  if (g > 0) {
    const LayoutPlan plan = plan_layout(quant.block_scale_layout(), {t, d / g});
    block_scale = Tensor::empty_strided(quant.key()->scale.dtype, plan.shape, plan.strides,
                                        plan.storage_numel);
  }
  ref::quantize_output(quant, x, t, scale, q, block_scale);
  write_npy(q_path, q);
  // Group FP8 scales in the logical [T, D/G] order; NVFP4's swizzled bytes as stored.
  write_npy(s_path, g > 0 ? block_scale : scale);
  if (quant.format == OutputFormat::kFp8Static) {
    std::printf("fp8-static: scale %.9g%s\n", scale.data<float>()[0], note.c_str());
  } else if (quant.format == OutputFormat::kNvfp4) {
    std::printf("nvfp4: global scale %.9g%s\n", scale.data<float>()[0], note.c_str());
  } else {
    std::printf("%s: %lld x %lld scales\n", quant.str().c_str(), static_cast<long long>(t),
                static_cast<long long>(d / g));
  }
  std::printf("wrote %s and %s for x %s from %s\n", q_path.c_str(), s_path.c_str(),
              shape_str(x.shape()).c_str(), in.c_str());
  return 0;
}

const bool kRegistered = register_command(
    {"quant", "quantize an f32 .npy with the reference quantizers (fp8/nvfp4 codes + scales)",
     run_quant});

}  // namespace
}  // namespace mlafuse::cli
