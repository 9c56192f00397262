// mlafuse._C: the nanobind extension under the Python package. Arrays arrive through DLPack
// (numpy on the CPU, torch CUDA tensors on the GPU) and are wrapped, not copied; every op checks
// its arguments in C++ (the same checks as the C++ API) and runs on the backend of the arrays'
// device, on the caller's stream. Past the first call on a device (which makes the backend and a
// small index table) nothing here synchronises or allocates device memory, so a call can be
// captured in a CUDA graph. The Python layer (mlafuse/__init__.py) only picks dtype tags,
// allocates missing outputs (and the decode scratch, with torch) and fetches the stream.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <string>

#include "compile_report.h"
#include "mla_decode.h"
#include "mlafuse/app/pipeline.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/ir/text.h"
#include "mlafuse/passes/pass_manager.h"
#include "mlafuse/quant/output_quant.h"
#include "tensors.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace mlafuse::py {
namespace {

// One op call of a quantization op through Backend::run, n = every row of x.
void run_op(const Place& place, std::string_view op, const AttrMap& attrs,
            std::span<const Tensor> inputs, std::span<Tensor> outputs, uintptr_t stream,
            const AttentionMetadata* meta = nullptr) {
  DeviceScope scope(place);
  Backend& backend = backend_for(place);
  RunContext ctx;
  ctx.host_meta = place.device == Device::kCpu ? meta : nullptr;
  ctx.device_meta = meta;
  ctx.num_tokens = inputs[0].rank() > 0 ? inputs[0].dim(0) : 0;
  ctx.stream = stream_handle(stream);
  backend.run(OpCall{op, attrs, inputs, outputs}, ctx);
}

// quant_fp8_group's arguments converted once: the call, and the host-time loop over it.
struct QuantGroupCall {
  Place place;
  AttrMap attrs;
  Tensor in[1];
  Tensor out[2];
  uintptr_t stream = 0;
  void operator()() const {
    Tensor outs[] = {out[0], out[1]};
    run_op(place, "quant_fp8_group", attrs, in, outs, stream);
  }
};

constexpr const char* kQuantGroupOp = "quant_fp8_group (x, out = q, scale_out = s)";

QuantGroupCall prepare_quant_fp8_group(const InArray& x, const OutArray& out,
                                       const OutArray& scale_out, int64_t group_size,
                                       bool column_major_scales, bool tma_aligned_scales,
                                       bool scale_ue8m0, double eps, const std::string& x_tag,
                                       uintptr_t stream) {
  ArgSet args;
  QuantGroupCall c;
  c.in[0] = args.add(x, "x", x_tag);
  c.out[0] = args.add(out, "out", "fp8e4m3");
  c.out[1] = args.add(scale_out, "scale_out");
  c.attrs.set("group_size", group_size);
  c.attrs.set("col_major", column_major_scales);
  c.attrs.set("tma_aligned", tma_aligned_scales);
  c.attrs.set("ue8m0", scale_ue8m0);
  c.attrs.set("eps", eps);
  c.place = args.place();
  c.stream = stream;
  return c;
}

// Mean host microseconds of `iters` calls of `fn` (launches only: nothing waits for the device).
template <typename Fn>
double host_us(int64_t iters, const Fn& fn) {
  MLAFUSE_CHECK(iters > 0, "iters must be positive, got ", iters);
  fn();  // warm-up: lazily made state (backends, tables) is not part of a steady-state call
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) fn();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
         static_cast<double>(iters);
}

// iters as for mla_decode_op.
double quant_fp8_group(const InArray& x, const OutArray& out, const OutArray& scale_out,
                       int64_t group_size, bool column_major_scales, bool tma_aligned_scales,
                       bool scale_ue8m0, double eps, const std::string& x_tag, uintptr_t stream,
                       int64_t iters) {
  return with_op_context(kQuantGroupOp, [&] {
    const QuantGroupCall call =
        prepare_quant_fp8_group(x, out, scale_out, group_size, column_major_scales,
                                tma_aligned_scales, scale_ue8m0, eps, x_tag, stream);
    return iters == 0 ? (call(), 0.0) : host_us(iters, call);
  });
}

void quant_fp8_static(const InArray& x, const InArray& scale, const OutArray& out,
                      const std::string& x_tag, uintptr_t stream) {
  with_op_context("quant_fp8_static (x, scale, out = q)", [&] {
    ArgSet args;
    const Tensor in[] = {args.add(x, "x", x_tag), args.add(scale, "scale")};
    Tensor outs[] = {args.add(out, "out", "fp8e4m3")};
    run_op(args.place(), "quant_fp8_static", AttrMap{}, in, outs, stream);
  });
}

void quant_nvfp4(const InArray& x, const InArray& global_scale, const OutArray& out,
                 const OutArray& scale_out, const std::string& x_tag, uintptr_t stream) {
  with_op_context("quant_nvfp4 (x, global_scale, out = q, scale_out = sf)", [&] {
    ArgSet args;
    const Tensor in[] = {args.add(x, "x", x_tag), args.add(global_scale, "global_scale")};
    Tensor outs[] = {args.add(out, "out"), args.add(scale_out, "scale_out")};
    run_op(args.place(), "quant_nvfp4", AttrMap{}, in, outs, stream);
  });
}

void cache_write(const InArray& kv_c_normed, const InArray& k_pe, const OutArray& kv_cache,
                 const InArray& slot_mapping, uintptr_t stream) {
  with_op_context("cache_write (kv_c_normed, k_pe, kv_cache, slot_mapping)", [&] {
    ArgSet args;
    const Tensor in[] = {args.add(kv_c_normed, "kv_c_normed", "bf16"),
                         args.add(k_pe, "k_pe", "bf16"), args.add(kv_cache, "kv_cache", "bf16")};
    Tensor outs[] = {in[2]};  // in place
    AttentionMetadata meta;
    meta.slot_mapping = args.add(slot_mapping, "slot_mapping");
    meta.page_size = in[2].rank() == 3 ? in[2].dim(1) : 0;
    run_op(args.place(), "cache_write", AttrMap{}, in, outs, stream, &meta);
  });
}

MlaDecodeArgs prepare_mla_decode(
    ArgSet& args, const InArray& q, const InArray& kv_cache, const InArray& block_table,
    const InArray& seq_lens, const InArray& w_uv, const OutArray& out, const std::string& out_tag,
    const std::optional<InArray>& output_scale, const std::optional<OutArray>& output_block_scale,
    const std::string& block_scale_tag, int64_t num_tokens,
    const std::optional<InArray>& num_tokens_device, const std::optional<OutArray>& workspace,
    double softmax_scale, bool scale_ue8m0, int64_t num_kv_splits, bool reuse_schedule,
    bool workspace_temporary, int64_t tokens_per_seq) {
  MlaDecodeArgs a;
  a.q = args.add(q, "q", "bf16");
  a.kv_cache = args.add(kv_cache, "kv_cache", "bf16");
  a.block_table = args.add(block_table, "block_table");
  a.seq_lens = args.add(seq_lens, "seq_lens");
  a.w_uv = args.add(w_uv, "w_uv", "bf16");
  a.out = args.add(out, "out", out_tag);
  a.output_scale = args.add(output_scale, "output_scale");
  a.output_block_scale = args.add(output_block_scale, "output_block_scale", block_scale_tag);
  a.num_tokens_device = args.add(num_tokens_device, "num_tokens");
  a.workspace = args.add(workspace, "workspace");
  a.num_tokens = num_tokens;
  a.softmax_scale = softmax_scale;
  a.scale_ue8m0 = scale_ue8m0;
  a.num_kv_splits = num_kv_splits;
  a.reuse_schedule = reuse_schedule;
  a.workspace_temporary = workspace_temporary;
  a.tokens_per_seq = tokens_per_seq;
  return a;
}

// iters = 0: one call. iters > 0 (bench/python_overhead.py): the same call with the arrays
// converted once, looped in C++ after a warm-up; returns the mean host microseconds of one call.
double mla_decode_op(const InArray& q, const InArray& kv_cache, const InArray& block_table,
                     const InArray& seq_lens, const InArray& w_uv, const OutArray& out,
                     const std::string& out_tag, const std::optional<InArray>& output_scale,
                     const std::optional<OutArray>& output_block_scale,
                     const std::string& block_scale_tag, int64_t num_tokens,
                     const std::optional<InArray>& num_tokens_device,
                     const std::optional<OutArray>& workspace, double softmax_scale,
                     bool scale_ue8m0, int64_t num_kv_splits, uintptr_t stream, int64_t iters,
                     bool reuse_schedule, bool workspace_temporary, int64_t tokens_per_seq) {
  return with_op_context("mla_decode", [&] {
    ArgSet args;
    const MlaDecodeArgs a =
        prepare_mla_decode(args, q, kv_cache, block_table, seq_lens, w_uv, out, out_tag,
                           output_scale, output_block_scale, block_scale_tag, num_tokens,
                           num_tokens_device, workspace, softmax_scale, scale_ue8m0, num_kv_splits,
                           reuse_schedule, workspace_temporary, tokens_per_seq);
    const auto call = [&] {
      DeviceScope scope(args.place());
      mla_decode(a, args.place(), stream_handle(stream));
    };
    return iters == 0 ? (call(), 0.0) : host_us(iters, call);
  });
}

size_t workspace_bytes(int64_t t_pad, int64_t heads, int device_id, int64_t num_kv_splits) {
  return with_op_context("mla_decode_workspace_bytes", [&] {
    Place p;
    p.device = device_id < 0 ? Device::kCpu : Device::kCuda;
    p.device_id = device_id < 0 ? 0 : device_id;
    p.first = "device";
    DeviceScope scope(p);
    return mla_decode_workspace_bytes(t_pad, heads, p, num_kv_splits);
  });
}

// The fusion pipeline of `mlafuse compile` over graph text: (compiled text, the --json report).
std::pair<std::string, std::string> compile(const std::string& text, const std::string& backend,
                                            const std::optional<std::string>& disable) {
  return with_op_context("compile", [&] {
    const auto t0 = std::chrono::steady_clock::now();
    ir::Graph graph = ir::parse_graph(text, ir::ParseOptions{"graph_text", true});
    const std::map<std::string, int64_t> ops_before = graph.op_counts();
    std::unique_ptr<Backend> b = make_backend(backend);
    passes::PassManager pm = app::default_pipeline(*b);
    if (disable) pm.disable(*disable);
    const std::vector<passes::PassStats> stats = pm.run(graph);
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    return std::pair{ir::print_graph(graph), cli::compile_report_json(stats, ops_before, graph,
                                                                      "graph_text", b->name(), us)};
  });
}

std::optional<QuantKey> detect_key(const std::string& out_dtype, bool has_output_scale,
                                   std::optional<int64_t> block_scale_groups, int64_t output_dim) {
  return with_op_context("detect_output_quant_key", [&] {
    const std::optional<DType> dt = parse_dtype(out_dtype);
    if (!dt)
      throw nb::type_error(("out_dtype '" + out_dtype + "' is not an mlafuse dtype").c_str());
    return detect_output_quant_key(*dt, has_output_scale, block_scale_groups, output_dim);
  });
}

// The named keys (SPEC 2), by the names the C++ API gives them.
const std::pair<const char*, const QuantKey*> kNamedKeys[] = {
    {"kFp8StaticTensorSym", &kFp8StaticTensorSym}, {"kFp8DynamicTensorSym", &kFp8DynamicTensorSym},
    {"kFp8DynamicTokenSym", &kFp8DynamicTokenSym}, {"kFp8Dynamic128Sym", &kFp8Dynamic128Sym},
    {"kFp8Dynamic64Sym", &kFp8Dynamic64Sym},       {"kNvfp4Dynamic", &kNvfp4Dynamic}};

std::optional<std::string> key_name(const QuantKey& k) {
  for (const auto& [name, key] : kNamedKeys) {
    if (*key == k) return std::string(name);
  }
  return std::nullopt;
}

}  // namespace
}  // namespace mlafuse::py

NB_MODULE(_C, m) {
  using namespace mlafuse;
  using namespace mlafuse::py;
  m.doc() = "mlafuse kernels and compiler (the extension under the mlafuse package)";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const mlafuse::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

#if MLAFUSE_WITH_CUDA
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  m.def("available_backends", &available_backends);

  nb::class_<QuantKey>(m, "QuantKey")
      .def_prop_ro("dtype", [](const QuantKey& k) { return std::string(dtype_name(k.dtype)); })
      .def_prop_ro("group_size", &QuantKey::group_size)
      .def_prop_ro("scale_dtype",
                   [](const QuantKey& k) { return std::string(dtype_name(k.scale.dtype)); })
      .def_prop_ro("static", [](const QuantKey& k) { return k.scale.is_static; })
      .def_prop_ro("has_scale2", [](const QuantKey& k) { return k.scale2.has_value(); })
      .def_prop_ro("symmetric", [](const QuantKey& k) { return k.symmetric; })
      .def_prop_ro("name", &key_name)
      .def("__eq__", [](const QuantKey& a, const QuantKey& b) { return a == b; })
      .def("__hash__", [](const QuantKey& k) { return QuantKeyHash{}(k); })
      .def("__str__", &QuantKey::str)
      .def("__repr__", &QuantKey::str);
  for (const auto& [name, key] : kNamedKeys) m.attr(name) = *key;

  m.def("detect_output_quant_key", &detect_key, "out_dtype"_a, "has_output_scale"_a,
        "block_scale_groups"_a.none(), "output_dim"_a);
  m.def("quant_fp8_group", &quant_fp8_group, "x"_a, "out"_a, "scale_out"_a, "group_size"_a,
        "column_major_scales"_a, "tma_aligned_scales"_a, "scale_ue8m0"_a, "eps"_a, "x_tag"_a,
        "stream"_a, "iters"_a = 0);
  m.def("quant_fp8_static", &quant_fp8_static, "x"_a, "scale"_a, "out"_a, "x_tag"_a, "stream"_a);
  m.def("quant_nvfp4", &quant_nvfp4, "x"_a, "global_scale"_a, "out"_a, "scale_out"_a, "x_tag"_a,
        "stream"_a);
  m.def("cache_write", &cache_write, "kv_c_normed"_a, "k_pe"_a, "kv_cache"_a, "slot_mapping"_a,
        "stream"_a);
  m.def("mla_decode", &mla_decode_op, "q"_a, "kv_cache"_a, "block_table"_a, "seq_lens"_a, "w_uv"_a,
        "out"_a, "out_tag"_a, "output_scale"_a.none(), "output_block_scale"_a.none(),
        "block_scale_tag"_a, "num_tokens"_a, "num_tokens_device"_a.none(), "workspace"_a.none(),
        "softmax_scale"_a, "scale_ue8m0"_a, "num_kv_splits"_a, "stream"_a, "iters"_a = 0,
        "reuse_schedule"_a = false, "workspace_temporary"_a = false, "tokens_per_seq"_a = 1);
  m.def("mla_decode_workspace_bytes", &workspace_bytes, "t_pad"_a, "heads"_a, "device_id"_a,
        "num_kv_splits"_a = 0);
  m.def("compile", &compile, "graph_text"_a, "backend"_a, "disable"_a.none());
}
