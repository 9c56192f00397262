// Options and choices shared by the commands that run the MLA block (mlafuse run, mlafuse bench).
#pragma once

#include <memory>
#include <string>

#include "cli_args.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/models/mla_block.h"

namespace mlafuse::cli {

// --quant, --col-major, --ue8m0 and --tma-aligned: the quantization fused into the attention.
struct QuantFlags {
  std::string quant = "fp8-group128";
  bool col_major = false;
  bool ue8m0 = false;
  bool tma_aligned = false;

  // Declares the four options on `p`, in this order; `quant_help` describes --quant.
  void add_to(ArgParser* p, std::string quant_help = kRunQuantHelp);
  static constexpr const char* kRunQuantHelp =
      "quantization fused into the attention (default fp8-group128 --col-major --tma-aligned; "
      "given --quant or a flag, only the flags given are set)";
  // The quantization the flags name; `fallback` when none of them was given. Given --quant or a
  // flag, only the flags given are set. Throws when a layout flag is given for a non-group key.
  models::OutputQuant resolve(const ArgParser& p, const models::OutputQuant& fallback) const;
};

// The layout flags' rule for every command: --col-major, --ue8m0 and --tma-aligned apply to
// group FP8 only, and --tma-aligned pads the column-major scale buffer's column stride, so without
// --col-major it would change nothing (vLLM ignores it there too). Both are refused naming the
// flag rather than accepted with no effect.
void check_layout_flags(const std::string& quant, bool col_major, bool ue8m0, bool tma_aligned);

// A line for text reports timed on `backend` ("" for the GPU): CPU times measure the reference
// implementation, not the product.
std::string timing_note(const std::string& backend, int iters);

// The backend to run on, and a sentence on how it was chosen (`why`). `requested` "" picks cuda
// when a GPU is present, else cpu; "cuda" without a GPU throws naming --backend cuda.
std::unique_ptr<Backend> pick_backend(const std::string& requested, std::string* why);

}  // namespace mlafuse::cli
