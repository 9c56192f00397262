// Options and choices shared by the commands that run the MLA block (mlafuse run, mlafuse bench).
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "cli_args.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/quant/output_quant.h"

namespace mlafuse::cli {

// --quant, --col-major, --ue8m0 and --tma-aligned: the output quantization, every command alike.
// The --quant choices are the format table's (quant/output_quant.h).
struct QuantFlags {
  std::string quant;
  bool col_major = false;
  bool ue8m0 = false;
  bool tma_aligned = false;

  // `with_none`: "none" (no quantization) is a choice.
  explicit QuantFlags(std::string default_quant = "fp8-group128", bool with_none = false)
      : quant(std::move(default_quant)), with_none_(with_none) {}

  // Declares the four options on `p`, in this order; `quant_help` describes --quant.
  void add_to(ArgParser* p, std::string quant_help = kRunQuantHelp);
  static constexpr const char* kRunQuantHelp =
      "quantization fused into the attention (default fp8-group128 --col-major --tma-aligned; "
      "given --quant or a flag, only the flags given are set)";
  // The quantization the four options name. The layout flags' rule: --col-major, --ue8m0 and
  // --tma-aligned apply to group FP8 only, and --tma-aligned pads the column-major scale buffer's
  // column stride, so without --col-major it would change nothing (vLLM ignores it there too).
  // Both are refused naming the flag rather than accepted with no effect.
  OutputQuant get() const;
  // get(), or `fallback` when neither --quant nor a flag was given.
  OutputQuant resolve(const ArgParser& p, const OutputQuant& fallback) const;

 private:
  bool with_none_;
};

// A line for text reports timed on `backend` ("" for the GPU): CPU times measure the reference
// implementation, not the product.
std::string timing_note(const std::string& backend, int iters);

// The backend to run on, and a sentence on how it was chosen (`why`). `requested` "" picks cuda
// when a GPU is present, else cpu; "cuda" without a GPU throws naming --backend cuda.
std::unique_ptr<Backend> pick_backend(const std::string& requested, std::string* why);

}  // namespace mlafuse::cli
