// mlafuse quant: quantize an f32 .npy activation [T, D] with the reference quantizers (SPEC 3),
// e.g. to check activations dumped from another engine against mlafuse's codes and scales.
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
#include "mlafuse/quant/scale_layout.h"

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
  for (int64_t i = 0; i < x.numel(); ++i) m = std::fmax(m, std::fabs(x.data<float>()[i]));
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
  const std::string& key = flags.quant;
  const bool col_major = flags.col_major, ue8m0 = flags.ue8m0, tma_aligned = flags.tma_aligned;
  check_layout_flags(key, col_major, ue8m0, tma_aligned);
  const bool group = key == "fp8-group128" || key == "fp8-group64";
  MLAFUSE_CHECK(scale_text.empty() || key == "fp8-static", "--scale applies only to fp8-static");
  MLAFUSE_CHECK(gs_text.empty() || key == "nvfp4", "--global-scale applies only to nvfp4");

  const Tensor x = read_npy(in, DType::kF32, 2);
  const int64_t t = x.dim(0), d = x.dim(1);
  const std::string q_path = out + ".q.npy", s_path = out + ".scale.npy";
  std::string note;

  if (key == "fp8-static") {
    float s;
    if (!scale_text.empty()) {
      s = parse_scale("--scale", scale_text);
    } else {
      const float amax = tensor_amax(x);
      MLAFUSE_CHECK(std::isfinite(amax) && amax > 0, in, ": amax(x) = ", amax,
                    " gives no usable scale; pass --scale");
      s = amax / 448.0f;
      note = " (amax / 448)";
    }
    const Tensor scale = scalar(s);
    Tensor q = Tensor::empty(DType::kFp8E4M3, {t, d});
    ref::quant_fp8_static(x, t, scale, q);
    write_npy(q_path, q);
    write_npy(s_path, scale);
    std::printf("fp8-static: scale %.9g%s\n", s, note.c_str());
  } else if (group) {
    ref::Fp8GroupParams gp;
    gp.group_size = key == "fp8-group128" ? 128 : 64;
    gp.ue8m0 = ue8m0;
    gp.col_major = col_major;
    gp.tma_aligned = tma_aligned;
    MLAFUSE_CHECK(d % gp.group_size == 0, in, ": D = ", d, " (shape ", shape_str(x.shape()),
                  ") is not a multiple of the group size ", gp.group_size);
    const GroupScaleLayout l{t, d / gp.group_size, col_major, tma_aligned};
    Tensor q = Tensor::empty(DType::kFp8E4M3, {t, d});
    Tensor s = Tensor::empty_strided(DType::kF32, {t, d / gp.group_size},
                                     {l.token_stride(), l.group_stride()}, l.storage_numel());
    ref::quant_fp8_group(x, t, gp, q, s);
    write_npy(q_path, q);
    write_npy(s_path, s);  // the logical [T, D/G] order
    std::printf("%s%s%s%s: %lld x %lld scales\n", key.c_str(), col_major ? " col_major" : "",
                ue8m0 ? " ue8m0" : "", tma_aligned ? " tma_aligned" : "", static_cast<long long>(t),
                static_cast<long long>(d / gp.group_size));
  } else {
    MLAFUSE_CHECK(d % 16 == 0, in, ": D = ", d, " (shape ", shape_str(x.shape()),
                  ") is not a multiple of 16 (the NVFP4 block)");
    float gs;
    if (!gs_text.empty()) {
      gs = parse_scale("--global-scale", gs_text);
    } else {
      const float amax = tensor_amax(x);
      MLAFUSE_CHECK(std::isfinite(amax) && amax > 0, in, ": amax(x) = ", amax,
                    " gives no usable global scale; pass --global-scale");
      gs = 448.0f * 6.0f / amax;
      note = " (448 * 6 / amax)";
    }
    const Nvfp4ScaleLayout l{t, d};
    Tensor q = Tensor::empty(DType::kFp4E2M1x2, {t, d / 2});
    Tensor sf = Tensor::empty(DType::kFp8E4M3, {l.padded_rows(), l.padded_cols()});
    ref::quant_nvfp4(x, t, scalar(gs), q, sf);
    write_npy(q_path, q);
    write_npy(s_path, sf);
    std::printf("nvfp4: global scale %.9g%s\n", gs, note.c_str());
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
