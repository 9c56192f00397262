#include "gpu/common/gpu_harness.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>

#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/quant/codecs.h"

namespace mlafuse::gpu_test {

bool gpu_present(std::string* reason) { return cuda::device_available(reason); }

bool gpu_required() {
  const char* v = std::getenv("MLAFUSE_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

bool small_shapes() {
  const char* v = std::getenv("MLAFUSE_GPU_TEST_SMALL");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

std::vector<int64_t> token_counts() {
  if (small_shapes()) return {1, 3, 7, 64, 255, 256};
  return {1, 3, 7, 64, 255, 256, 1000, 8192};
}

std::vector<int64_t> hidden_sizes() {
  if (small_shapes()) return {2048};
  return {2048, 16384};
}

// ---- TensorSpec ---------------------------------------------------------------------------
TensorSpec TensorSpec::contiguous(DType dtype, std::vector<int64_t> shape) {
  TensorSpec s;
  s.dtype = dtype;
  s.strides = Tensor::contiguous_strides(shape);
  s.storage_numel = 1;
  for (int64_t e : shape) s.storage_numel *= e;
  s.shape = std::move(shape);
  return s;
}

TensorSpec TensorSpec::layout(DType dtype, Layout layout, const std::vector<int64_t>& logical) {
  const LayoutPlan p = plan_layout(layout, logical);
  return TensorSpec{dtype, p.shape, p.strides, p.storage_numel};
}

int64_t TensorSpec::storage_bytes() const {
  return storage_numel * static_cast<int64_t>(dtype_size(dtype));
}

Tensor host_filled(const TensorSpec& spec, uint8_t fill) {
  Tensor t = Tensor::empty_strided(spec.dtype, spec.shape, spec.strides, spec.storage_numel);
  std::memset(t.storage()->data, fill, t.storage()->bytes);
  return t;
}

namespace {

TensorSpec spec_of(const Tensor& host) {
  MLAFUSE_CHECK(host.device() == Device::kCpu && host.offset() == 0,
                "harness inputs must be host tensors that start their storage, got ", host.str());
  const int64_t es = static_cast<int64_t>(dtype_size(host.dtype()));
  return TensorSpec{host.dtype(), host.shape(), host.strides(),
                    static_cast<int64_t>(host.storage()->bytes) / es};
}

uint8_t guard_byte(int64_t i) { return static_cast<uint8_t>(0xa5 ^ (i * 37)); }

}  // namespace

// ---- GuardedBuffer ------------------------------------------------------------------------
GuardedBuffer::GuardedBuffer(const TensorSpec& spec) : spec_(spec) {
  const int64_t payload = spec.storage_bytes();
  MLAFUSE_CUDA_CHECK(cudaMalloc(&base_, static_cast<size_t>(payload + 2 * kGuardBytes)));
  std::vector<uint8_t> guard(kGuardBytes);
  for (int64_t i = 0; i < kGuardBytes; ++i) guard[static_cast<size_t>(i)] = guard_byte(i);
  MLAFUSE_CUDA_CHECK(cudaMemcpy(base_, guard.data(), kGuardBytes, cudaMemcpyHostToDevice));
  MLAFUSE_CUDA_CHECK(
      cudaMemcpy(base_ + kGuardBytes + payload, guard.data(), kGuardBytes, cudaMemcpyHostToDevice));
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  // The tensor's storage is the payload alone; the guards belong to this object.
  auto st = std::make_shared<Storage>();
  st->data = base_ + kGuardBytes;
  st->bytes = static_cast<size_t>(payload);
  st->device = Device::kCuda;
  tensor_ = Tensor(std::move(st), spec.dtype, spec.shape, spec.strides, 0);
}

GuardedBuffer::~GuardedBuffer() { cudaFree(base_); }

void GuardedBuffer::poison(uint8_t fill) {
  MLAFUSE_CUDA_CHECK(
      cudaMemset(base_ + kGuardBytes, fill, static_cast<size_t>(spec_.storage_bytes())));
  // cudaMemset and pageable cudaMemcpy may still be in flight when they return, and backends run
  // on their own non-blocking streams: finish before anything else touches the buffer.
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
}

void GuardedBuffer::upload(const Tensor& host) {
  MLAFUSE_CHECK(static_cast<int64_t>(host.storage()->bytes) == spec_.storage_bytes(),
                "upload: host storage of ", host.str(), " holds ", host.storage()->bytes,
                " bytes, the device buffer ", spec_.storage_bytes());
  MLAFUSE_CUDA_CHECK(cudaMemcpy(base_ + kGuardBytes, host.storage()->data, host.storage()->bytes,
                                cudaMemcpyHostToDevice));
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
}

Tensor GuardedBuffer::download() const {
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor t = host_filled(spec_, 0);
  MLAFUSE_CUDA_CHECK(cudaMemcpy(t.storage()->data, base_ + kGuardBytes, t.storage()->bytes,
                                cudaMemcpyDeviceToHost));
  return t;
}

std::string GuardedBuffer::guard_damage() const {
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  const int64_t payload = spec_.storage_bytes();
  std::vector<uint8_t> lo(kGuardBytes), hi(kGuardBytes);
  MLAFUSE_CUDA_CHECK(cudaMemcpy(lo.data(), base_, kGuardBytes, cudaMemcpyDeviceToHost));
  MLAFUSE_CUDA_CHECK(
      cudaMemcpy(hi.data(), base_ + kGuardBytes + payload, kGuardBytes, cudaMemcpyDeviceToHost));
  for (int64_t i = 0; i < kGuardBytes; ++i) {
    if (lo[static_cast<size_t>(i)] != guard_byte(i)) {
      return detail::concat("write ", kGuardBytes - i, " bytes before the storage");
    }
    if (hi[static_cast<size_t>(i)] != guard_byte(i)) {
      return detail::concat("write ", i, " bytes past the end of the ", payload, "-byte storage");
    }
  }
  return "";
}

// ---- running an op ------------------------------------------------------------------------
Outputs run_reference(Backend& cpu, const OpCase& c, uint8_t poison) {
  std::vector<Tensor> inputs = c.inputs;
  std::vector<Tensor> outputs;
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    const int a = i < c.alias.size() ? c.alias[i] : -1;
    if (a >= 0) {
      // In place: a private copy of the input, so the caller's tensor stays as it was.
      Tensor copy = host_filled(spec_of(c.inputs[static_cast<size_t>(a)]), 0);
      std::memcpy(copy.storage()->data, c.inputs[static_cast<size_t>(a)].storage()->data,
                  copy.storage()->bytes);
      inputs[static_cast<size_t>(a)] = copy;
      outputs.push_back(copy);
    } else {
      outputs.push_back(host_filled(c.outputs[i], poison));
    }
  }
  RunContext ctx;
  ctx.host_meta = c.meta;
  ctx.device_meta = c.meta;
  ctx.num_tokens = c.n;
  cpu.run(OpCall{c.op, c.attrs, inputs, outputs}, ctx);
  return outputs;
}

Outputs run_cuda(Backend& cuda, const OpCase& c, uint8_t poison) {
  std::vector<std::unique_ptr<GuardedBuffer>> in_bufs(c.inputs.size());
  std::vector<Tensor> inputs(c.inputs.size());
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!c.inputs[i].defined()) continue;
    in_bufs[i] = std::make_unique<GuardedBuffer>(spec_of(c.inputs[i]));
    in_bufs[i]->upload(c.inputs[i]);
    inputs[i] = in_bufs[i]->tensor();
  }
  std::vector<std::unique_ptr<GuardedBuffer>> out_bufs(c.outputs.size());
  std::vector<Tensor> outputs(c.outputs.size());
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    const int a = i < c.alias.size() ? c.alias[i] : -1;
    if (a >= 0) {
      outputs[i] = inputs[static_cast<size_t>(a)];
    } else {
      out_bufs[i] = std::make_unique<GuardedBuffer>(c.outputs[i]);
      out_bufs[i]->poison(poison);
      outputs[i] = out_bufs[i]->tensor();
    }
  }
  // Metadata: device copies of the defined tensors.
  std::vector<std::unique_ptr<GuardedBuffer>> meta_bufs;
  AttentionMetadata dev_meta;
  if (c.meta != nullptr) {
    dev_meta = *c.meta;
    for (Tensor* t : {&dev_meta.seq_lens, &dev_meta.query_start_loc, &dev_meta.block_table,
                      &dev_meta.slot_mapping}) {
      if (!t->defined()) continue;
      meta_bufs.push_back(std::make_unique<GuardedBuffer>(spec_of(*t)));
      meta_bufs.back()->upload(*t);
      *t = meta_bufs.back()->tensor();
    }
  }
  std::unique_ptr<GuardedBuffer> n_buf;
  RunContext ctx;
  ctx.host_meta = c.meta;
  ctx.device_meta = c.meta != nullptr ? &dev_meta : nullptr;
  ctx.num_tokens = c.n;
  if (c.n_on_device) {
    n_buf = std::make_unique<GuardedBuffer>(TensorSpec::contiguous(DType::kI32, {1}));
    n_buf->upload(i32_tensor({static_cast<int32_t>(c.n)}));
    ctx.num_tokens_device = n_buf->tensor().data<int32_t>();
    ctx.num_tokens = c.t_pad;
  }
  cuda.run(OpCall{c.op, c.attrs, inputs, outputs}, ctx);
  cuda.synchronize();
  MLAFUSE_CUDA_CHECK(cudaGetLastError());

  for (size_t i = 0; i < out_bufs.size(); ++i) {
    if (out_bufs[i]) {
      const std::string dmg = out_bufs[i]->guard_damage();
      EXPECT_TRUE(dmg.empty()) << c.op << ": output " << i << " " << dtype_name(c.outputs[i].dtype)
                               << shape_str(c.outputs[i].shape) << ": " << dmg;
    }
  }
  for (size_t i = 0; i < in_bufs.size(); ++i) {
    if (!in_bufs[i]) continue;
    const std::string dmg = in_bufs[i]->guard_damage();
    EXPECT_TRUE(dmg.empty()) << c.op << ": input " << i << " " << c.inputs[i].str() << ": " << dmg;
    bool aliased = false;
    for (int a : c.alias) aliased = aliased || a == static_cast<int>(i);
    if (!aliased) {
      EXPECT_TRUE(bitwise_equal(c.inputs[i], in_bufs[i]->download(),
                                c.op + ": input " + std::to_string(i) + " must stay unchanged"));
    }
  }
  Outputs result;
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    const int a = i < c.alias.size() ? c.alias[i] : -1;
    result.push_back(a >= 0 ? in_bufs[static_cast<size_t>(a)]->download()
                            : out_bufs[i]->download());
  }
  return result;
}

// ---- comparisons --------------------------------------------------------------------------
::testing::AssertionResult bitwise_equal(const Tensor& ref, const Tensor& dut,
                                         const std::string& what) {
  const size_t bytes = ref.storage()->bytes;
  if (dut.storage()->bytes != bytes) {
    return ::testing::AssertionFailure() << what << ": storage sizes differ (" << bytes << " vs "
                                         << dut.storage()->bytes << " bytes)";
  }
  const auto* a = static_cast<const uint8_t*>(ref.storage()->data);
  const auto* b = static_cast<const uint8_t*>(dut.storage()->data);
  if (std::memcmp(a, b, bytes) == 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  const size_t es = dtype_size(ref.dtype());
  int64_t count = 0;
  for (size_t i = 0; i < bytes; i += es) {
    if (std::memcmp(a + i, b + i, es) == 0) continue;
    if (++count <= 8) {
      os << "\n  element " << i / es;
      if (ref.rank() == 2 && ref.strides()[1] == 1 && ref.strides()[0] > 0) {
        os << " (row " << (i / es) / ref.strides()[0] << ", col " << (i / es) % ref.strides()[0]
           << ")";
      }
      os << ": ref 0x";
      for (size_t k = es; k-- > 0;) os << std::hex << ((a[i + k] >> 4) & 0xf) << (a[i + k] & 0xf);
      os << " cuda 0x";
      for (size_t k = es; k-- > 0;) os << ((b[i + k] >> 4) & 0xf) << (b[i + k] & 0xf);
      os << std::dec;
    }
  }
  return ::testing::AssertionFailure()
         << what << " " << ref.str() << ": " << count << " elements differ" << os.str();
}

void expect_backends_bitwise_equal(Backend& cpu, Backend& cuda, const OpCase& c,
                                   bool both_poisons) {
  for (uint8_t poison : {uint8_t{0xff}, uint8_t{0x5a}}) {
    const Outputs ref = run_reference(cpu, c, poison);
    const Outputs dut = run_cuda(cuda, c, poison);
    for (size_t i = 0; i < ref.size(); ++i) {
      std::ostringstream what;
      what << c.op << " output " << i << " (n=" << c.n << (c.n_on_device ? " on device" : "")
           << ", poison 0x" << std::hex << int{poison} << ")";
      EXPECT_TRUE(bitwise_equal(ref[i], dut[i], what.str()));
    }
    if (!both_poisons) break;
  }
}

namespace {
double element_f64(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kBF16:
      return bf16_bits_to_f32(t.data<uint16_t>()[i]);
    case DType::kF16:
      return f16_bits_to_f32(t.data<uint16_t>()[i]);
    case DType::kF32:
      return t.data<float>()[i];
    default:
      MLAFUSE_FAIL("close(): tensor ", t.str(), " is not a float tensor");
  }
}
}  // namespace

::testing::AssertionResult close(const Tensor& ref, const Tensor& dut, int64_t rows, double abs_tol,
                                 double rel_tol, double norm_tol, const std::string& what) {
  if (ref.shape() != dut.shape() || ref.rank() != 2) {
    return ::testing::AssertionFailure() << what << ": shapes " << ref.str() << " vs " << dut.str();
  }
  const int64_t cols = ref.dim(1);
  double err2 = 0.0, ref2 = 0.0;
  int64_t bad = 0;
  std::ostringstream os;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double a = element_f64(ref, r * cols + c);
      const double b = element_f64(dut, r * cols + c);
      bool ok;
      if (!std::isfinite(a) || !std::isfinite(b)) {
        ok = (std::isnan(a) && std::isnan(b)) || a == b;
      } else {
        ok = std::fabs(a - b) <= abs_tol + rel_tol * std::fabs(a);
        err2 += (a - b) * (a - b);
        ref2 += a * a;
      }
      if (!ok && ++bad <= 8) os << "\n  [" << r << ", " << c << "]: ref " << a << " cuda " << b;
    }
  }
  const double norm = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  if (bad == 0 && norm <= norm_tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " elements out of tolerance (abs " << abs_tol << " + rel "
         << rel_tol << "), normalized error " << norm << " (limit " << norm_tol << ")" << os.str();
}

// ---- random inputs ------------------------------------------------------------------------
Tensor random_activations(DType dtype, int64_t rows, int64_t cols, uint64_t seed,
                          Specials specials) {
  MLAFUSE_CHECK(is_float_activation(dtype), "random_activations: dtype ", dtype_name(dtype));
  Tensor t = Tensor::empty(dtype, {rows, cols});
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-8, 8);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> which(0, 7);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float huge = dtype == DType::kF16 ? 65504.0f : (dtype == DType::kBF16 ? 3.0e38f : 3.3e38f);
  const float tiny = dtype == DType::kF16 ? 5.96e-8f : 1.0e-39f;  // subnormal in the type
  float scale = 1.0f;
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (i % 16 == 0) scale = std::ldexp(1.0f, exponent(rng));
    float v = normal(rng) * scale;
    if (specials.rate > 0.0 && unit(rng) < specials.rate) {
      switch (which(rng)) {
        case 0:
          v = nan;
          break;
        case 1:
          v = -nan;
          break;
        case 2:
          v = inf;
          break;
        case 3:
          v = -inf;
          break;
        case 4:
          v = 0.0f;
          break;
        case 5:
          v = -0.0f;
          break;
        case 6:
          v = (unit(rng) < 0.5 ? -tiny : tiny);
          break;
        default:
          v = (unit(rng) < 0.5 ? -huge : huge);
          break;
      }
    }
    switch (dtype) {
      case DType::kBF16: {
        uint16_t b = f32_to_bf16_bits(v);
        if (std::isnan(v)) b = std::signbit(v) ? 0xffc0 : 0x7fc0;
        t.data<uint16_t>()[i] = b;
        break;
      }
      case DType::kF16: {
        uint16_t h = f32_to_f16_bits(v);
        if (std::isnan(v)) h = std::signbit(v) ? 0xfe00 : 0x7e00;
        t.data<uint16_t>()[i] = h;
        break;
      }
      default:
        t.data<float>()[i] =
            std::isnan(v) ? bits_f32(std::signbit(v) ? 0xffc00000u : 0x7fc00000u) : v;
    }
  }
  return t;
}

Tensor random_fp8(std::vector<int64_t> shape, uint64_t seed) {
  Tensor t = Tensor::empty(DType::kFp8E4M3, std::move(shape));
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint8_t c;
    do {
      c = static_cast<uint8_t>(rng());
    } while ((c & 0x7f) == 0x7f);
    t.data<uint8_t>()[i] = c;
  }
  return t;
}

Tensor random_positive(std::vector<int64_t> shape, float lo, float hi, uint64_t seed) {
  Tensor t = Tensor::empty(DType::kF32, std::move(shape));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

Tensor scalar_f32(float v) {
  Tensor t = Tensor::empty(DType::kF32, {1});
  t.data<float>()[0] = v;
  return t;
}

Tensor i32_tensor(const std::vector<int32_t>& values) {
  Tensor t = Tensor::empty(DType::kI32, {static_cast<int64_t>(values.size())});
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

}  // namespace mlafuse::gpu_test
