// .npy read/write: round trips per dtype, the exact header bytes numpy expects, strided views
// written in logical order, bf16 widened to f32, and every malformed input named in the error.
#include "mlafuse/core/npy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cpu/ref_test_util.h"
#include "mlafuse/quant/codecs.h"

namespace mlafuse {
namespace {

using testing::expect_error;

class Npy : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("mlafuse_npy_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string slurp(const std::string& p) const {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  void put(const std::string& p, const std::string& bytes) const {
    std::ofstream f(p, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // A version-1.0 file with the given header dict and payload, padded as numpy pads it.
  std::string make_file(std::string dict, const std::string& payload, int major = 1) const {
    const size_t prefix = major == 1 ? 10 : 12;
    dict += std::string((64 - (prefix + dict.size() + 1) % 64) % 64, ' ') + "\n";
    std::string s = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
    const size_t hl = dict.size();
    s += static_cast<char>(hl & 0xff);
    s += static_cast<char>((hl >> 8) & 0xff);
    if (major != 1) s += std::string(2, '\0');
    return s + dict + payload;
  }
  std::filesystem::path dir_;
};

TEST_F(Npy, F32RoundTripAndExactHeader) {
  Tensor t = Tensor::empty(DType::kF32, {3, 4});
  for (int i = 0; i < 12; ++i) t.data<float>()[i] = 0.5f * static_cast<float>(i) - 1.0f;
  write_npy(path("a.npy"), t);
  const std::string bytes = slurp(path("a.npy"));
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
  ASSERT_EQ(dict.size(), 59u);
  // 10 + 59 + 1 = 70 bytes round up to 128: the data starts on a 64-byte boundary.
  ASSERT_EQ(bytes.size(), 128u + 48u);
  EXPECT_EQ(bytes.substr(0, 10), std::string("\x93NUMPY\x01\x00\x76\x00", 10));  // 118
  EXPECT_EQ(bytes.substr(10, 59), dict);
  EXPECT_EQ(bytes.substr(69, 58), std::string(58, ' '));
  EXPECT_EQ(bytes[127], '\n');
  const Tensor r = read_npy(path("a.npy"), DType::kF32, 2);
  EXPECT_EQ(r.shape(), t.shape());
  EXPECT_EQ(std::memcmp(r.raw(), t.raw(), 48), 0);
}

TEST_F(Npy, EveryDtypeRoundTrips) {
  Tensor i32 = Tensor::empty(DType::kI32, {5});
  for (int i = 0; i < 5; ++i) i32.data<int32_t>()[i] = -7 * i;
  write_npy(path("i.npy"), i32);
  EXPECT_NE(slurp(path("i.npy")).find("'shape': (5,)"), std::string::npos);
  Tensor ri = read_npy(path("i.npy"), DType::kI32, 1);
  EXPECT_EQ(std::memcmp(ri.raw(), i32.raw(), 20), 0);

  Tensor fp8 = Tensor::empty(DType::kFp8E4M3, {2, 3, 2});
  for (int i = 0; i < 12; ++i) fp8.data<uint8_t>()[i] = static_cast<uint8_t>(i * 21);
  write_npy(path("q.npy"), fp8);
  EXPECT_NE(slurp(path("q.npy")).find("'|u1'"), std::string::npos);
  Tensor rq = read_npy(path("q.npy"));
  EXPECT_EQ(rq.dtype(), DType::kU8);
  EXPECT_EQ(rq.shape(), (std::vector<int64_t>{2, 3, 2}));
  EXPECT_EQ(std::memcmp(rq.raw(), fp8.raw(), 12), 0);

  // bf16 and f16 are widened exactly to f32.
  Tensor bf = Tensor::empty(DType::kBF16, {4});
  const float vals[4] = {1.5f, -3.0e-3f, 65504.0f, -0.0f};
  for (int i = 0; i < 4; ++i) bf.data<uint16_t>()[i] = f32_to_bf16_bits(vals[i]);
  write_npy(path("bf.npy"), bf);
  Tensor rb = read_npy(path("bf.npy"), DType::kF32, 1);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(f32_bits(rb.data<float>()[i]), f32_bits(round_to_bf16(vals[i])));
  }
  Tensor h = Tensor::empty(DType::kF16, {4});
  for (int i = 0; i < 4; ++i) h.data<uint16_t>()[i] = f32_to_f16_bits(vals[i]);
  write_npy(path("h.npy"), h);
  Tensor rh = read_npy(path("h.npy"), DType::kF32, 1);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(f32_bits(rh.data<float>()[i]), f32_bits(f16_bits_to_f32(h.data<uint16_t>()[i])));
  }
  // Scalars and empty arrays.
  write_npy(path("s.npy"), Tensor::empty(DType::kF32, {}));
  EXPECT_EQ(read_npy(path("s.npy")).rank(), 0u);
  write_npy(path("e.npy"), Tensor::empty(DType::kF32, {0, 7}));
  EXPECT_EQ(read_npy(path("e.npy")).shape(), (std::vector<int64_t>{0, 7}));
}

TEST_F(Npy, StridedViewIsWrittenInLogicalOrder) {
  // Column-major [3, 2] scales: storage (0 1 2 | 3 4 5) holds logical rows (0,3), (1,4), (2,5).
  Tensor s = Tensor::empty_strided(DType::kF32, {3, 2}, {1, 3}, 6);
  for (int i = 0; i < 6; ++i) static_cast<float*>(s.storage()->data)[i] = static_cast<float>(i);
  write_npy(path("cm.npy"), s);
  const Tensor r = read_npy(path("cm.npy"), DType::kF32, 2);
  const float want[6] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r.data<float>()[i], want[i]);
}

TEST_F(Npy, ReadsVersion2AndOtherWritersPadding) {
  std::string payload(8, '\0');
  const float v[2] = {1.0f, 2.0f};
  std::memcpy(payload.data(), v, 8);
  put(path("v2.npy"),
      make_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", payload, 2));
  const Tensor r = read_npy(path("v2.npy"), DType::kF32, 1);
  EXPECT_EQ(r.data<float>()[1], 2.0f);
  // Keys in another order, no spaces.
  put(path("ord.npy"), make_file("{'shape':(1, 2),'fortran_order':False,'descr':'<f4'}", payload));
  EXPECT_EQ(read_npy(path("ord.npy")).shape(), (std::vector<int64_t>{1, 2}));
}

TEST_F(Npy, MalformedFilesNameTheFile) {
  const std::string f4 = std::string(8, '\0');
  put(path("magic.npy"), "PK\x03\x04 not a npy file");
  expect_error([&] { read_npy(path("magic.npy")); }, {"magic.npy", "bad magic"});
  expect_error([&] { read_npy(path("missing.npy")); }, {"missing.npy", "cannot open"});
  put(path("f8.npy"), make_file("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", f4));
  expect_error([&] { read_npy(path("f8.npy")); }, {"f8.npy", "'<f8'"});
  put(path("be.npy"), make_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", f4));
  expect_error([&] { read_npy(path("be.npy")); }, {"be.npy", "big-endian"});
  put(path("fo.npy"), make_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", f4));
  expect_error([&] { read_npy(path("fo.npy")); }, {"fo.npy", "Fortran"});
  put(path("short.npy"),
      make_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", f4));
  expect_error([&] { read_npy(path("short.npy")); }, {"short.npy", "truncated", "12 bytes"});
  // A shape far past the payload (and past 2^64 bytes) is named before anything is allocated.
  put(path("huge.npy"),
      make_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627775, "
                "1099511627775), }",
                f4));
  expect_error([&] { read_npy(path("huge.npy")); }, {"huge.npy", "truncated", "over 2^53"});
  put(path("noshape.npy"), make_file("{'descr': '<f4', 'fortran_order': False, }", f4));
  expect_error([&] { read_npy(path("noshape.npy")); }, {"noshape.npy", "'shape'"});
  put(path("badshape.npy"),
      make_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", f4));
  expect_error([&] { read_npy(path("badshape.npy")); }, {"badshape.npy", "shape"});
  put(path("trunc_header.npy"), std::string("\x93NUMPY\x01\x00\xff\x00{'descr'", 18));
  expect_error([&] { read_npy(path("trunc_header.npy")); }, {"trunc_header.npy", "truncated"});
  put(path("v9.npy"), std::string("\x93NUMPY\x09\x00\x00\x00", 10));
  expect_error([&] { read_npy(path("v9.npy")); }, {"v9.npy", "version 9"});
  // Wrong dtype or rank for the caller.
  write_npy(path("i.npy"), Tensor::empty(DType::kI32, {3, 4, 5}));
  expect_error([&] { read_npy(path("i.npy"), DType::kF32, 2); },
               {"i.npy", "dtype f32 and rank 2", "i32 [3, 4, 5]"});
  expect_error([&] { write_npy(path("absent.npy"), Tensor()); }, {"absent.npy"});
  expect_error(
      [&] { write_npy((dir_ / "no/such/dir/x.npy").string(), Tensor::empty(DType::kF32, {1})); },
      {"x.npy", "cannot open"});
}

TEST_F(Npy, StrictReadingRefusesWhatNumpyWouldNotHaveWritten) {
  const std::string f4x2(8, '\0');
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  put(path("ok.npy"), make_file(ok, f4x2));
  EXPECT_EQ(read_npy(path("ok.npy")).numel(), 2);
  // Bytes after the data are an error, not ignored.
  put(path("junk.npy"), make_file(ok, f4x2 + "junk"));
  expect_error([&] { read_npy(path("junk.npy")); },
               {"junk.npy", "4 bytes after the data of [2] f32 (8 bytes)"});
  // A directory is named as one (it used to escape as an iostream exception).
  expect_error([&] { read_npy(dir_.string()); }, {"it is a directory"});
  // The header dict exactly: no unknown or repeated keys, (N,) for one dimension, and '\n' last.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1, }", "unknown key 'x'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
       "key 'descr' appears twice"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", "(N,)"},
      {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", "must end with '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,,), }", "a dimension of the shape"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }", "2^40 or more"},
      {"{'descr: '<f4', 'fortran_order': False, 'shape': (2,), }", "expected ':'"},
  };
  for (const auto& [dict, want] : bad) {
    SCOPED_TRACE(dict);
    put(path("bad.npy"), make_file(dict, f4x2));
    expect_error([&] { read_npy(path("bad.npy")); }, {"bad.npy", want});
  }
}

TEST_F(Npy, EmptyArraysOfHugeShapeAllocateNothingOrAreRefused) {
  // [0, 10^12]: a valid empty array; its row is never allocated.
  put(path("empty.npy"),
      make_file("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1000000000000), }", ""));
  const Tensor e = read_npy(path("empty.npy"), DType::kF32, 2);
  EXPECT_EQ(e.shape(), (std::vector<int64_t>{0, 1000000000000}));
  // [0, 2^40-1, 2^40-1]: still empty, but its strides would wrap int64.
  put(path("wrap.npy"), make_file("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                  "(0, 1099511627775, 1099511627775), }",
                                  ""));
  expect_error([&] { read_npy(path("wrap.npy")); }, {"wrap.npy", "is more than 2^63 bytes"});
}

}  // namespace
}  // namespace mlafuse
