#include "mlafuse/ir/op_registry.h"

#include <algorithm>
#include <cmath>

#include "mlafuse/core/checked.h"
#include "mlafuse/core/error.h"
#include "mlafuse/quant/output_quant.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::ir {

std::string_view attr_kind_name(AttrKind k) {
  switch (k) {
    case AttrKind::kInt:
      return "i64";
    case AttrKind::kFloat:
      return "f64";
    case AttrKind::kBool:
      return "bool";
    case AttrKind::kString:
      return "string";
    case AttrKind::kInts:
      return "i64[]";
  }
  return "?";
}

namespace {

AttrKind kind_of(const AttrValue& v) {
  switch (v.index()) {
    case 0:
      return AttrKind::kInt;
    case 1:
      return AttrKind::kFloat;
    case 2:
      return AttrKind::kBool;
    case 3:
      return AttrKind::kString;
    default:
      return AttrKind::kInts;
  }
}

}  // namespace

// ---- OpSchema ----------------------------------------------------------------------------------

int OpSchema::input_index(std::string_view operand) const {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].name == operand) return static_cast<int>(i);
  }
  return -1;
}

int OpSchema::output_index(std::string_view operand) const {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].name == operand) return static_cast<int>(i);
  }
  return -1;
}

const AttrSpec* OpSchema::find_attr(std::string_view attr) const {
  for (const AttrSpec& a : attrs) {
    if (a.name == attr) return &a;
  }
  return nullptr;
}

void OpSchema::check_attrs(const AttrMap& values) const {
  // Both lists are sorted by name (AttrMap is ordered; OpRegistry::add sorts the specs), so one
  // forward walk pairs them; an unsorted schema falls back to a search.
  size_t j = 0;
  size_t required_seen = 0;
  for (const auto& [key, v] : values.items()) {
    while (j < attrs.size() && attrs[j].name < key) ++j;
    const AttrSpec* spec = j < attrs.size() && attrs[j].name == key ? &attrs[j] : find_attr(key);
    if (spec == nullptr) {
      std::string known;
      for (const AttrSpec& a : attrs) known += (known.empty() ? "" : ", ") + a.name;
      MLAFUSE_FAIL("op ", name, " has no attribute '", key,
                   "' (it takes: ", known.empty() ? "none" : known, ")");
    }
    MLAFUSE_CHECK(kind_of(v) == spec->kind, "op ", name, " attribute '", key, "' must be ",
                  attr_kind_name(spec->kind), ", got ", attr_kind_name(kind_of(v)));
    required_seen += spec->required;
  }
  size_t required = 0;
  for (const AttrSpec& a : attrs) required += a.required;
  if (required_seen == required) return;
  for (const AttrSpec& a : attrs) {
    MLAFUSE_CHECK(!a.required || values.has(a.name), "op ", name, " needs the attribute '", a.name,
                  "' (", attr_kind_name(a.kind), ")");
  }
}

std::vector<std::optional<ValueType>> OpSchema::infer_outputs(std::span<const ValueType* const> in,
                                                              const AttrMap& values) const {
  check_attrs(values);
  MLAFUSE_CHECK(in.size() == inputs.size(), "op ", name, " takes ", inputs.size(), " inputs, got ",
                in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    MLAFUSE_CHECK(in[i] != nullptr || inputs[i].optional, "op ", name, ": required input ",
                  inputs[i].name, " is absent");
  }
  std::vector<std::optional<ValueType>> out = infer(in, values);
  MLAFUSE_CHECK(out.size() == outputs.size(), "internal: op ", name, " inferred ", out.size(),
                " outputs for ", outputs.size());
  return out;
}

// ---- inference helpers -------------------------------------------------------------------------

namespace {

// Checks one operand of `op`; messages name the op, the operand, its type and what was expected.
class Operand {
 public:
  Operand(std::string_view op, std::string_view name, const ValueType* t)
      : op_(op), name_(name), t_(t) {}

  const ValueType& type() const { return *t_; }
  const Dim& dim(size_t i) const { return t_->shape.dims[i]; }

  // Fails with "op input name: expected <what>, got <type>".
  template <typename... Args>
  void expect(bool cond, const Args&... what) const {
    MLAFUSE_CHECK(cond, op_, " input ", name_, ": expected ", what..., ", got ", t_->str());
  }
  void dtype_in(std::initializer_list<DType> allowed) const {
    if (std::find(allowed.begin(), allowed.end(), t_->dtype) != allowed.end()) return;
    std::string names;
    for (DType d : allowed) names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
    expect(false, "dtype ", names);
  }
  void rank(size_t r) const { expect(t_->shape.rank() == r, "rank ", r); }
  void row_major() const { expect(t_->layout == Layout::kRowMajor, "layout row_major"); }
  void fixed_dim(size_t i, int64_t v) const {
    expect(!dim(i).is_tokens() && dim(i).value == v, "dim ", i, " == ", v);
  }
  void not_tokens(size_t i) const { expect(!dim(i).is_tokens(), "a fixed extent in dim ", i); }
  void same_dim(size_t i, const Dim& d, std::string_view other) const {
    expect(dim(i) == d, "dim ", i, " == ", dim_str(d), " (as ", other, ")");
  }
  // A single f32 element: static scales.
  void scalar_f32() const {
    expect(t_->dtype == DType::kF32 && t_->shape.rank() == 1 && !dim(0).is_tokens() &&
               dim(0).value == 1 && t_->layout == Layout::kRowMajor,
           "f32[1]");
  }

  static std::string dim_str(const Dim& d) {
    return d.is_tokens() ? std::string("T") : std::to_string(d.value);
  }

 private:
  std::string_view op_;
  std::string_view name_;
  const ValueType* t_;
};

ValueType make_type(DType dtype, std::vector<Dim> dims, Layout layout = Layout::kRowMajor) {
  return ValueType{dtype, Shape(std::move(dims)), layout};
}

int64_t positive_attr(std::string_view op, const AttrMap& a, std::string_view key) {
  const int64_t v = a.get<int64_t>(key);
  MLAFUSE_CHECK(v > 0, op, " attribute ", key, " must be positive, got ", v);
  return v;
}

// ---- mla_attention -----------------------------------------------------------------------------

using namespace mla_attention::attr;
namespace mla_in = mla_attention::in;
namespace qfp8_static_in = quant_fp8_static::in;
namespace qfp8_group_in = quant_fp8_group::in;
namespace qnvfp4_in = quant_nvfp4::in;
namespace lfp8_block_in = linear_fp8_block::in;
namespace lnvfp4_in = linear_nvfp4::in;
namespace cw_in = cache_write::in;

std::vector<std::optional<ValueType>> infer_mla_attention(std::span<const ValueType* const> in,
                                                          const AttrMap& a) {
  constexpr std::string_view op = ops::kMlaAttention;
  const int64_t layer = a.get<int64_t>(kLayer);
  MLAFUSE_CHECK(layer >= 0, op, " attribute layer must be >= 0, got ", layer);
  const int64_t h = positive_attr(op, a, kNumHeads);
  const int64_t p = positive_attr(op, a, kQkNopeDim);
  const int64_t r = positive_attr(op, a, kQkRopeDim);
  const int64_t v = positive_attr(op, a, kVHeadDim);
  const int64_t l = positive_attr(op, a, kKvLoraRank);
  const double softmax_scale = a.get_or<double>(kSoftmaxScale, 0.0);
  MLAFUSE_CHECK(std::isfinite(softmax_scale) && softmax_scale >= 0, op,
                " attribute softmax_scale must be finite and >= 0 (0 = default), got ",
                softmax_scale);

  Operand q(op, "q", in[mla_in::kQ]), kvc(op, "kv_c_normed", in[mla_in::kKvCNormed]),
      kpe(op, "k_pe", in[mla_in::kKPe]), cache(op, "kv_cache", in[mla_in::kKvCache]);
  for (const Operand* x : {&q, &kvc, &kpe, &cache}) {
    x->dtype_in({DType::kBF16});
    x->row_major();
  }
  q.rank(3);
  q.fixed_dim(1, h);
  q.fixed_dim(2, checked_add(p, r, "mla_attention qk_nope_dim + qk_rope_dim"));
  const Dim tokens = q.dim(0);
  kvc.rank(2);
  kvc.same_dim(0, tokens, "q dim 0");
  kvc.fixed_dim(1, l);
  kpe.rank(3);
  kpe.same_dim(0, tokens, "q dim 0");
  kpe.fixed_dim(1, 1);
  kpe.fixed_dim(2, r);
  cache.rank(3);
  cache.not_tokens(0);
  cache.not_tokens(1);
  cache.expect(cache.dim(1).value > 0, "a positive page size in dim 1");
  cache.fixed_dim(2, checked_add(l, r, "mla_attention kv_lora_rank + qk_rope_dim"));

  const ValueType* output_scale = in[mla_in::kOutputScale];
  const bool has_scale = output_scale != nullptr;
  if (has_scale) Operand(op, "output_scale", output_scale).scalar_f32();
  const int64_t hv = checked_mul(h, v, "mla_attention num_heads * v_head_dim");
  const OutputQuant quant = fused_output_quant(a, has_scale);  // attributes -> types

  std::vector<std::optional<ValueType>> out(3);
  out[mla_attention::out::kKvCacheOut] = *in[mla_in::kKvCache];  // updated in place
  const int64_t g = quant.group_size();
  MLAFUSE_CHECK(g == 0 || hv % g == 0, op, ": quant_group_size ", g, " (", quant.info().name,
                ") does not divide H*V = ", hv);
  const DType code = quant.info().code_dtype();
  // Packed sub-byte codes (fp4e2m1x2) hold two values a byte.
  out[mla_attention::out::kOut] =
      make_type(code, {tokens, Dim::fixed(code == DType::kFp4E2M1x2 ? hv / 2 : hv)});
  if (g > 0) {
    out[mla_attention::out::kOutputBlockScale] = make_type(
        quant.key()->scale.dtype, {tokens, Dim::fixed(hv / g)}, quant.block_scale_layout());
  }
  // Backends decode the quantization from the buffers these types give (SPEC 3.4): the same one.
  mla_attention_output_quant(a, code, has_scale,
                             g > 0 ? std::optional<int64_t>(hv / g) : std::nullopt, hv);
  return out;
}

// ---- quantization ops --------------------------------------------------------------------------

// x [T, D] float activation, row-major; returns D.
int64_t check_activation(std::string_view op, const ValueType* t) {
  Operand x(op, "x", t);
  x.dtype_in({DType::kBF16, DType::kF16, DType::kF32});
  x.rank(2);
  x.row_major();
  x.not_tokens(1);
  return x.dim(1).value;
}

std::vector<std::optional<ValueType>> infer_quant_fp8_static(std::span<const ValueType* const> in,
                                                             const AttrMap&) {
  constexpr std::string_view op = ops::kQuantFp8Static;
  const int64_t d = check_activation(op, in[qfp8_static_in::kX]);
  Operand(op, "scale", in[qfp8_static_in::kScale]).scalar_f32();
  return {make_type(DType::kFp8E4M3, {in[qfp8_static_in::kX]->shape[0], Dim::fixed(d)})};
}

std::vector<std::optional<ValueType>> infer_quant_fp8_group(std::span<const ValueType* const> in,
                                                            const AttrMap& a) {
  constexpr std::string_view op = ops::kQuantFp8Group;
  const int64_t d = check_activation(op, in[qfp8_group_in::kX]);
  namespace qfg = quant_fp8_group::attr;
  const int64_t g = positive_attr(op, a, qfg::kGroupSize);
  MLAFUSE_CHECK(g % 16 == 0, op, " group_size must be a multiple of 16, got ", g);
  MLAFUSE_CHECK(d % g == 0, op, " group_size ", g, " does not divide x's last dim ", d, " (x is ",
                in[qfp8_group_in::kX]->str(), ")");
  const double eps = a.get_or<double>(qfg::kEps, ops::kDefaultQuantEps);
  MLAFUSE_CHECK(std::isfinite(eps) && eps > 0, op, " eps must be positive and finite, got ", eps);
  const Dim tokens = in[qfp8_group_in::kX]->shape[0];
  return {make_type(DType::kFp8E4M3, {tokens, Dim::fixed(d)}),
          make_type(DType::kF32, {tokens, Dim::fixed(d / g)},
                    group_scale_layout(a.get<bool>(qfg::kColMajor), a.get<bool>(qfg::kTmaAligned)))};
}

std::vector<std::optional<ValueType>> infer_quant_nvfp4(std::span<const ValueType* const> in,
                                                        const AttrMap&) {
  constexpr std::string_view op = ops::kQuantNvfp4;
  const int64_t d = check_activation(op, in[qnvfp4_in::kX]);
  MLAFUSE_CHECK(d % 16 == 0, op, ": x's last dim ", d, " must be a multiple of 16 (x is ",
                in[qnvfp4_in::kX]->str(), ")");
  Operand(op, "global_scale", in[qnvfp4_in::kGlobalScale]).scalar_f32();
  const Dim tokens = in[qnvfp4_in::kX]->shape[0];
  return {make_type(DType::kFp4E2M1x2, {tokens, Dim::fixed(d / 2)}),
          make_type(DType::kFp8E4M3, {tokens, Dim::fixed(d / 16)}, Layout::kNvfp4Swizzled)};
}

// ---- linear ops --------------------------------------------------------------------------------

// wq [N, K] fp8e4m3 and ws [ceil(N/128), ceil(K/128)] f32; returns {N, K}.
std::pair<int64_t, int64_t> check_block_weight(std::string_view op, const ValueType* wq_t,
                                               const ValueType* ws_t) {
  Operand wq(op, "wq", wq_t), ws(op, "ws", ws_t);
  wq.dtype_in({DType::kFp8E4M3});
  wq.rank(2);
  wq.row_major();
  wq.not_tokens(0);
  wq.not_tokens(1);
  const int64_t n = wq.dim(0).value, k = wq.dim(1).value;
  ws.dtype_in({DType::kF32});
  ws.rank(2);
  ws.row_major();
  ws.fixed_dim(0, ceil_div_nowrap(n, 128));
  ws.fixed_dim(1, ceil_div_nowrap(k, 128));
  return {n, k};
}

std::vector<std::optional<ValueType>> infer_linear_fp8_block(std::span<const ValueType* const> in,
                                                             const AttrMap&) {
  constexpr std::string_view op = ops::kLinearFp8Block;
  const auto [n, k] = check_block_weight(op, in[lfp8_block_in::kWq], in[lfp8_block_in::kWs]);
  Operand xq(op, "xq", in[lfp8_block_in::kXq]), xs(op, "xs", in[lfp8_block_in::kXs]);
  xq.dtype_in({DType::kFp8E4M3});
  xq.rank(2);
  xq.row_major();
  xq.fixed_dim(1, k);
  const Dim tokens = xq.dim(0);
  xs.dtype_in({DType::kF32});
  const bool per_tensor = xs.type().shape.rank() == 1;
  if (per_tensor) {
    xs.scalar_f32();
  } else {
    xs.rank(2);
    xs.same_dim(0, tokens, "xq dim 0");
    xs.not_tokens(1);
    const int64_t groups = xs.dim(1).value;
    // Divisions, not groups * 128: groups comes from the IR and may be anything.
    xs.expect(groups > 0 && k % groups == 0 && (k / groups == 128 || k / groups == 64), "[", Operand::dim_str(tokens),
              ", ", k / 128, "] or [", Operand::dim_str(tokens), ", ", k / 64,
              "] (group 128 or 64 over K = ", k, ")");
    xs.expect(xs.type().layout != Layout::kNvfp4Swizzled, "a group-FP8 scale layout");
  }
  return {make_type(DType::kBF16, {tokens, Dim::fixed(n)})};
}

std::vector<std::optional<ValueType>> infer_linear_nvfp4(std::span<const ValueType* const> in,
                                                         const AttrMap&) {
  constexpr std::string_view op = ops::kLinearNvfp4;
  const auto [n, k] = check_block_weight(op, in[lnvfp4_in::kWq], in[lnvfp4_in::kWs]);
  MLAFUSE_CHECK(k % 16 == 0, op, ": K = ", k, " (wq's dim 1) must be a multiple of 16");
  Operand xq(op, "xq", in[lnvfp4_in::kXq]), sf(op, "sf", in[lnvfp4_in::kSf]);
  xq.dtype_in({DType::kFp4E2M1x2});
  xq.rank(2);
  xq.row_major();
  xq.fixed_dim(1, k / 2);
  const Dim tokens = xq.dim(0);
  sf.dtype_in({DType::kFp8E4M3});
  sf.rank(2);
  sf.same_dim(0, tokens, "xq dim 0");
  sf.fixed_dim(1, k / 16);
  sf.expect(sf.type().layout == Layout::kNvfp4Swizzled, "layout nvfp4_swizzled");
  Operand(op, "global_scale", in[lnvfp4_in::kGlobalScale]).scalar_f32();
  return {make_type(DType::kBF16, {tokens, Dim::fixed(n)})};
}

std::vector<std::optional<ValueType>> infer_cache_write(std::span<const ValueType* const> in,
                                                        const AttrMap&) {
  constexpr std::string_view op = ops::kCacheWrite;
  Operand kvc(op, "kv_c_normed", in[cw_in::kKvCNormed]), kpe(op, "k_pe", in[cw_in::kKPe]),
      cache(op, "kv_cache", in[cw_in::kKvCache]);
  for (const Operand* x : {&kvc, &kpe, &cache}) {
    x->dtype_in({DType::kBF16});
    x->row_major();
  }
  kvc.rank(2);
  kvc.not_tokens(1);
  kpe.rank(3);
  kpe.same_dim(0, kvc.dim(0), "kv_c_normed dim 0");
  kpe.fixed_dim(1, 1);
  kpe.not_tokens(2);
  cache.rank(3);
  cache.not_tokens(0);
  cache.not_tokens(1);
  cache.fixed_dim(2, checked_add(kvc.dim(1).value, kpe.dim(2).value,
                                 "cache_write kv_c_normed dim 1 + k_pe dim 2"));
  return {*in[cw_in::kKvCache]};
}

std::vector<OpSchema> builtin_schemas() {
  using K = AttrKind;
  std::vector<OpSchema> s;
  s.push_back(OpSchema{std::string(ops::kMlaAttention),
                       {{"q"}, {"kv_c_normed"}, {"k_pe"}, {"kv_cache"}, {"output_scale", true}},
                       {{"out"}, {"kv_cache_out"}, {"output_block_scale", true}},
                       {{std::string(kLayer), K::kInt},
                        {std::string(kNumHeads), K::kInt},
                        {std::string(kQkNopeDim), K::kInt},
                        {std::string(kQkRopeDim), K::kInt},
                        {std::string(kVHeadDim), K::kInt},
                        {std::string(kKvLoraRank), K::kInt},
                        {std::string(kSoftmaxScale), K::kFloat, false},
                        {std::string(kQuantGroupSize), K::kInt, false},
                        {std::string(kQuantScaleUe8m0), K::kBool, false},
                        {std::string(kQuantColMajor), K::kBool, false},
                        {std::string(kQuantTmaAligned), K::kBool, false}},
                       infer_mla_attention});
  s.push_back(OpSchema{
      std::string(ops::kQuantFp8Static), {{"x"}, {"scale"}}, {{"q"}}, {}, infer_quant_fp8_static});
  s.push_back(OpSchema{std::string(ops::kQuantFp8Group),
                       {{"x"}},
                       {{"q"}, {"s"}},
                       {{std::string(quant_fp8_group::attr::kGroupSize), K::kInt},
                        {std::string(quant_fp8_group::attr::kUe8m0), K::kBool},
                        {std::string(quant_fp8_group::attr::kColMajor), K::kBool},
                        {std::string(quant_fp8_group::attr::kTmaAligned), K::kBool},
                        {std::string(quant_fp8_group::attr::kEps), K::kFloat, false}},
                       infer_quant_fp8_group});
  s.push_back(OpSchema{std::string(ops::kQuantNvfp4),
                       {{"x"}, {"global_scale"}},
                       {{"q"}, {"sf"}},
                       {},
                       infer_quant_nvfp4});
  s.push_back(OpSchema{std::string(ops::kLinearFp8Block),
                       {{"xq"}, {"xs"}, {"wq"}, {"ws"}},
                       {{"y"}},
                       {},
                       infer_linear_fp8_block});
  s.push_back(OpSchema{std::string(ops::kLinearNvfp4),
                       {{"xq"}, {"sf"}, {"global_scale"}, {"wq"}, {"ws"}},
                       {{"y"}},
                       {},
                       infer_linear_nvfp4});
  s.push_back(OpSchema{std::string(ops::kCacheWrite),
                       {{"kv_c_normed"}, {"k_pe"}, {"kv_cache"}},
                       {{"kv_cache_out"}},
                       {},
                       infer_cache_write});
  return s;
}

}  // namespace

// ---- OpRegistry --------------------------------------------------------------------------------

OpRegistry::OpRegistry() {
  for (OpSchema& s : builtin_schemas()) add(std::move(s));
}

OpRegistry& OpRegistry::global() {
  static OpRegistry registry;
  return registry;
}

const OpSchema* OpRegistry::add(OpSchema schema) {
  MLAFUSE_CHECK(!schema.name.empty() && schema.infer, "an op schema needs a name and inference");
  std::sort(schema.attrs.begin(), schema.attrs.end(),
            [](const AttrSpec& a, const AttrSpec& b) { return a.name < b.name; });
  for (size_t i = 1; i < schema.attrs.size(); ++i) {
    MLAFUSE_CHECK(schema.attrs[i - 1].name != schema.attrs[i].name, "op ", schema.name,
                  " declares attribute '", schema.attrs[i].name, "' twice");
  }
  for (auto& s : schemas_) {
    if (s->name == schema.name) {
      *s = std::move(schema);
      return s.get();
    }
  }
  schemas_.push_back(std::make_unique<OpSchema>(std::move(schema)));
  return schemas_.back().get();
}

const OpSchema* OpRegistry::find(std::string_view op) const {
  for (const auto& s : schemas_) {
    if (s->name == op) return s.get();
  }
  return nullptr;
}

const OpSchema& OpRegistry::get(std::string_view op) const {
  const OpSchema* s = find(op);
  if (s == nullptr) {
    std::string known;
    for (const std::string& n : names()) known += (known.empty() ? "" : ", ") + n;
    MLAFUSE_FAIL("unknown op '", op, "' (registered: ", known, ")");
  }
  return *s;
}

std::vector<std::string> OpRegistry::names() const {
  std::vector<std::string> n;
  for (const auto& s : schemas_) n.push_back(s->name);
  std::sort(n.begin(), n.end());
  return n;
}

}  // namespace mlafuse::ir
