// Buffer planning: every value's buffer per padded token bucket (aliases share), the weights
// bound once, and the prepared calls of a bucket.
#include <algorithm>
#include <cstring>
#include <optional>

#include "executor_bucket.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/mla/attention_metadata.h"
#include "mlafuse/runtime/executor.h"

namespace mlafuse::runtime {

using detail::dtype_compatible;
using detail::host_buffer;
using detail::storage_bytes;

Tensor Executor::to_device(const Tensor& host) {
  check_device(host, "host tensor", Device::kCpu);
  const bool whole = host.is_contiguous() && host.offset() == 0 &&
                     static_cast<int64_t>(host.storage()->bytes) ==
                         host.numel() * static_cast<int64_t>(dtype_size(host.dtype()));
  const Tensor src = whole ? host : host.clone();
  if (backend_.device() == Device::kCpu) return src;  // the host is the device: share
  Tensor dev = backend_.allocate(src.dtype(), src.shape(), Tensor::contiguous_strides(src.shape()),
                                 src.numel());
  backend_.copy(src, dev);
  return dev;
}

Tensor Executor::allocate(const LayoutPlan& plan, DType dtype) {
  return backend_.allocate(dtype, plan.shape, plan.strides, plan.storage_numel);
}

void Executor::bind_weights(const WeightStore& weights) {
  device_weights_.config = weights.config;
  for (const ir::Value* v : graph_.weights()) {
    auto it = weights.tensors.find(v->name());
    MLAFUSE_CHECK(it != weights.tensors.end(), "weight ", v->name(), " (", v->type().str(),
                  ") is not in the weight store");
    const Tensor& t = it->second;
    for (const Dim& d : v->shape().dims) {
      MLAFUSE_CHECK(!d.is_tokens(), "weight ", v->name(), " ", v->type().str(),
                    " has a token dim; weights have fixed shapes");
    }
    MLAFUSE_CHECK(v->layout() == Layout::kRowMajor, "weight ", v->name(), " ", v->type().str(),
                  ": weights must be row-major");
    MLAFUSE_CHECK(t.defined() && dtype_compatible(v->dtype(), t.dtype()) &&
                      t.shape() == v->shape().resolve(0),
                  "weight ", v->name(), ": expected ", v->type().str(), ", got ",
                  t.defined() ? t.str() : std::string("an absent tensor"));
    Tensor dev = to_device(t);
    device_weights_.tensors[v->name()] = dev;
    weight_buffers_[v] = dev;
  }
  // Layer weights of every attention node, checked against the node's head counts.
  for (const ir::Node* node : graph_.nodes()) {
    if (node->op() != ir::ops::kMlaAttention) continue;
    const AttrMap& a = node->attrs();
    namespace attr = ir::mla_attention::attr;
    const int64_t layer = a.get<int64_t>(attr::kLayer);
    const int64_t h = a.get<int64_t>(attr::kNumHeads), p = a.get<int64_t>(attr::kQkNopeDim);
    const int64_t v = a.get<int64_t>(attr::kVHeadDim), l = a.get<int64_t>(attr::kKvLoraRank);
    const MlaLayerWeights& w = weights.layer(layer);
    const std::string who = "layer " + std::to_string(layer) + " weights: ";
    check_dtype(w.w_uk_t, (who + "w_uk_t").c_str(), DType::kBF16);
    check_dtype(w.w_uv, (who + "w_uv").c_str(), DType::kBF16);
    check_shape(w.w_uk_t, (who + "w_uk_t").c_str(), {h, p, l});
    check_shape(w.w_uv, (who + "w_uv").c_str(), {h, l, v});
    // Prefill up-projects with the block-FP8 kv_b_proj when the layer carries it; the bf16 one is
    // then neither checked nor uploaded (32 MiB a layer at DeepSeek-V3's dims).
    const bool fp8_kv_b = !w.kv_b_proj_fp8.empty();
    if (fp8_kv_b) {
      check_block_fp8(w.kv_b_proj_fp8, who + "kv_b_proj_fp8", Device::kCpu, {h * (p + v), l});
    } else {
      check_dtype(w.kv_b_proj, (who + "kv_b_proj").c_str(), DType::kBF16);
      check_shape(w.kv_b_proj, (who + "kv_b_proj").c_str(), {h * (p + v), l});
    }
    if (static_cast<int64_t>(device_weights_.layers.size()) <= layer) {
      device_weights_.layers.resize(static_cast<size_t>(layer + 1));
    }
    MlaLayerWeights& d = device_weights_.layers[static_cast<size_t>(layer)];
    if (!d.w_uk_t.defined()) {
      d.w_uk_t = to_device(w.w_uk_t);
      d.w_uv = to_device(w.w_uv);
      if (fp8_kv_b) {
        d.kv_b_proj_fp8 = {to_device(w.kv_b_proj_fp8.weight),
                           to_device(w.kv_b_proj_fp8.weight_scale_inv)};
      } else {
        d.kv_b_proj = to_device(w.kv_b_proj);
      }
    }
  }
}

int64_t Executor::padded_tokens(int64_t n) const {
  MLAFUSE_CHECK(n >= 1, "a batch needs at least one token, got ", n);
  for (int64_t b : options_.buckets) {
    if (b >= n) return b;
  }
  return n;
}

std::vector<BufferInfo> Executor::plan(int64_t t_pad) const {
  MLAFUSE_CHECK(t_pad >= 1, "plan: T_pad must be >= 1, got ", t_pad);
  std::vector<BufferInfo> out;
  auto info = [&](const ir::Value* v, BufferKind kind) {
    BufferInfo b;
    b.value = v->name();
    b.kind = kind;
    b.dtype = v->dtype();
    b.layout = v->layout();
    b.logical_shape = v->shape().resolve(t_pad);
    b.plan = plan_layout(v->layout(), b.logical_shape);
    b.bytes = storage_bytes(b.plan, v->dtype());
    return b;
  };
  for (const ir::Value* v : graph_.inputs()) out.push_back(info(v, BufferKind::kInput));
  for (const ir::Value* v : graph_.weights()) out.push_back(info(v, BufferKind::kWeight));
  for (const ir::Node* node : graph_.nodes()) {
    const ir::OpSchema& s = node->schema();
    for (size_t i = 0; i < node->num_outputs(); ++i) {
      const ir::Value* v = node->output(i);
      if (v == nullptr) continue;
      BufferInfo b = info(v, BufferKind::kNodeOutput);
      const std::string_view in = in_place_input(node->op(), s.outputs[i].name);
      if (!in.empty()) {
        const ir::Value* src = node->input(in);
        MLAFUSE_CHECK(src != nullptr, "node ", node->label(), ": in-place output ", v->name(),
                      " has no ", in, " input");
        MLAFUSE_CHECK(src->type() == v->type(), "node ", node->label(), ": in-place output ",
                      v->name(), " ", v->type().str(), " differs from its buffer ", src->name(),
                      " ", src->type().str());
        b.kind = BufferKind::kAlias;
        b.alias_of = src->name();
        b.bytes = 0;
      }
      out.push_back(std::move(b));
    }
  }
  return out;
}

Executor::Bucket& Executor::bucket(int64_t t_pad) {
  auto it = buckets_.find(t_pad);
  if (it != buckets_.end()) return *it->second;
  // An unpadded batch (above every listed bucket) replaces the previous unpadded one: a server's
  // prompt lengths vary call to call, and each bucket holds every buffer of the graph. Each run
  // ends synchronized, so nothing in flight uses the buffers freed here.
  auto unpadded = [&](int64_t t) {
    return std::find(options_.buckets.begin(), options_.buckets.end(), t) == options_.buckets.end();
  };
  if (unpadded(t_pad)) {
    std::erase_if(buckets_, [&](const auto& kv) {
      if (!unpadded(kv.first)) return false;
      if (last_ == kv.second.get()) last_ = nullptr;
      return true;
    });
  }
  auto b = std::make_unique<Bucket>();
  b->t_pad = t_pad;
  for (const BufferInfo& info : plan(t_pad)) {
    const ir::Value* v = graph_.value(info.value);
    switch (info.kind) {
      case BufferKind::kWeight:
        break;
      case BufferKind::kInput:
        b->buffers[v] = allocate(info.plan, info.dtype);
        b->staging[v] = host_buffer(info.plan, info.dtype);
        break;
      case BufferKind::kAlias:
        b->buffers[v] = b->buffers.at(graph_.value(info.alias_of));
        break;
      case BufferKind::kNodeOutput: {
        Tensor dev = allocate(info.plan, info.dtype);
        Tensor fill = host_buffer(info.plan, info.dtype);
        std::memset(fill.storage()->data, options_.fill_byte, fill.storage()->bytes);
        backend_.copy(fill, dev);
        b->buffers[v] = dev;
        break;
      }
    }
  }
  for (const ir::Node* node : graph_.nodes()) {
    PreparedCall c;
    c.node = node;
    for (const ir::Value* v : node->inputs()) {
      if (v == nullptr) {
        c.inputs.emplace_back();
      } else if (v->is_weight()) {
        c.inputs.push_back(weight_buffers_.at(v));
      } else {
        c.inputs.push_back(b->buffers.at(v));
      }
    }
    for (const ir::Value* v : node->outputs()) {
      c.outputs.push_back(v == nullptr ? Tensor() : b->buffers.at(v));
    }
    // Trailing absent optional operands are left out: backends take a short span and an undefined
    // tensor alike (docs/ops.md), and a short span is the form every backend handles.
    while (!c.inputs.empty() && !c.inputs.back().defined()) c.inputs.pop_back();
    while (!c.outputs.empty() && !c.outputs.back().defined()) c.outputs.pop_back();
    b->calls.push_back(std::move(c));
  }
  Bucket& ref = *b;
  buckets_.emplace(t_pad, std::move(b));
  return ref;
}

}  // namespace mlafuse::runtime
