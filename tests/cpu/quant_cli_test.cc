// `mlafuse quant` end to end: run the built CLI on .npy inputs and compare its files with the
// reference quantizers; bad inputs exit non-zero with one message naming the file or option.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cpu/ref_test_util.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/core/npy.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

class QuantCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("mlafuse_quant_cli_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    const auto x = testing::random_acts(DType::kF32, kT, kD, 17);
    x_ = testing::make_act(DType::kF32, {kT, kD}, x);
    write_npy(path("x.npy"), x_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Runs `mlafuse quant <args>`; returns the exit status, stderr in err_.
  int cli(const std::string& args) {
    const std::string cmd = std::string(MLAFUSE_CLI_PATH) + " quant " + args + " >" +
                            path("stdout.txt") + " 2>" + path("stderr.txt");
    const int rc = std::system(cmd.c_str());
    std::ifstream f(path("stderr.txt"));
    err_.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }
  static bool same(const Tensor& a, const Tensor& b) {
    return a.shape() == b.shape() &&
           std::memcmp(a.raw(), b.raw(), static_cast<size_t>(a.numel()) * dtype_size(a.dtype())) ==
               0;
  }

  static constexpr int64_t kT = 7, kD = 256;
  std::filesystem::path dir_;
  Tensor x_;
  std::string err_;
};

TEST_F(QuantCli, GroupFp8EveryFlagMatchesTheReference) {
  for (int64_t g : {128, 64}) {
    for (int flags = 0; flags < 8; ++flags) {
      ref::Fp8GroupParams p;
      p.group_size = g;
      p.ue8m0 = flags & 1;
      p.col_major = flags & 2;
      p.tma_aligned = flags & 4;
      std::string args =
          "--quant fp8-group" + std::to_string(g) + " --in " + path("x.npy") + " --out " + path("g");
      if (p.ue8m0) args += " --ue8m0";
      if (p.col_major) args += " --col-major";
      if (p.tma_aligned) args += " --tma-aligned";
      if (p.tma_aligned && !p.col_major) {  // padding row-major scales would change nothing
        EXPECT_EQ(cli(args), 2) << args;
        EXPECT_NE(err_.find("--tma-aligned pads column-major scales and needs --col-major"),
                  std::string::npos)
            << err_;
        continue;
      }
      ASSERT_EQ(cli(args), 0) << args << "\n" << err_;
      Tensor q = Tensor::empty(DType::kFp8E4M3, {kT, kD});
      Tensor s = Tensor::empty(DType::kF32, {kT, kD / g});  // logical order == row-major
      if (p.col_major) {
        const GroupScaleLayout l{kT, kD / g, true, p.tma_aligned};
        s = Tensor::empty_strided(DType::kF32, {kT, kD / g}, {1, l.group_stride()},
                                  l.storage_numel());
      }
      ref::quant_fp8_group(x_, kT, p, q, s);
      const Tensor fq = read_npy(path("g.q.npy"), DType::kU8, 2);
      const Tensor fs = read_npy(path("g.scale.npy"), DType::kF32, 2);
      EXPECT_TRUE(same(fq, q.view(DType::kU8, q.shape(), q.strides()))) << args;
      EXPECT_TRUE(same(fs, s.clone())) << args;
    }
  }
}

TEST_F(QuantCli, StaticAndNvfp4WithGivenAndDerivedScales) {
  ASSERT_EQ(cli("--key fp8-static --scale 0.125 --in " + path("x.npy") + " --out " + path("s")), 0)
      << err_;
  Tensor q = Tensor::empty(DType::kU8, {kT, kD});
  ref::quant_fp8_static(x_, kT, testing::scalar_f32(0.125f), q);
  EXPECT_TRUE(same(read_npy(path("s.q.npy")), q));
  EXPECT_EQ(read_npy(path("s.scale.npy")).data<float>()[0], 0.125f);

  // Derived: amax / 448.
  ASSERT_EQ(cli("--key fp8-static --in " + path("x.npy") + " --out " + path("d")), 0) << err_;
  float amax = 0;
  for (int64_t i = 0; i < x_.numel(); ++i) amax = std::fmax(amax, std::fabs(x_.data<float>()[i]));
  EXPECT_EQ(read_npy(path("d.scale.npy")).data<float>()[0], amax / 448.0f);

  for (const char* gs_opt : {"--global-scale 3.5", ""}) {
    ASSERT_EQ(cli(std::string("--key nvfp4 ") + gs_opt + " --in " + path("x.npy") + " --out " +
                  path("n")),
              0)
        << err_;
    const float gs = std::string(gs_opt).empty() ? 448.0f * 6.0f / amax : 3.5f;
    const Nvfp4ScaleLayout l{kT, kD};
    Tensor nq = Tensor::empty(DType::kU8, {kT, kD / 2});
    Tensor nsf = Tensor::empty(DType::kU8, {l.padded_rows(), l.padded_cols()});
    ref::quant_nvfp4(x_, kT, testing::scalar_f32(gs), nq, nsf);
    EXPECT_TRUE(same(read_npy(path("n.q.npy"), DType::kU8, 2), nq)) << gs_opt;
    EXPECT_TRUE(same(read_npy(path("n.scale.npy"), DType::kU8, 2), nsf)) << gs_opt;
  }
}

TEST_F(QuantCli, BadInputsExitNonZeroWithOneClearMessage) {
  const std::string x = " --in " + path("x.npy") + " --out " + path("o");
  write_npy(path("i32.npy"), Tensor::empty(DType::kI32, {4, 128}));
  EXPECT_NE(cli("--key fp8-group128 --in " + path("i32.npy") + " --out " + path("o")), 0);
  EXPECT_NE(err_.find("i32.npy"), std::string::npos) << err_;
  EXPECT_NE(err_.find("dtype f32"), std::string::npos) << err_;
  write_npy(path("r3.npy"), Tensor::empty(DType::kF32, {2, 4, 128}));
  EXPECT_NE(cli("--key fp8-group128 --in " + path("r3.npy") + " --out " + path("o")), 0);
  EXPECT_NE(err_.find("r3.npy"), std::string::npos) << err_;
  EXPECT_NE(err_.find("rank 2"), std::string::npos) << err_;
  write_npy(path("d100.npy"), Tensor::empty(DType::kF32, {2, 100}));
  EXPECT_NE(cli("--key fp8-group64 --in " + path("d100.npy") + " --out " + path("o")), 0);
  EXPECT_NE(err_.find("group size 64"), std::string::npos) << err_;
  EXPECT_NE(cli("--key fp8-group32" + x), 0);  // --key: the old name of --quant
  EXPECT_NE(err_.find("option --quant must be one of"), std::string::npos) << err_;
  EXPECT_NE(cli("--key nvfp4 --col-major" + x), 0);
  EXPECT_NE(err_.find("--col-major"), std::string::npos) << err_;
  EXPECT_NE(cli("--key fp8-static --scale -1" + x), 0);
  EXPECT_NE(err_.find("--scale"), std::string::npos) << err_;
  EXPECT_NE(cli("--key fp8-static --scale 1" + std::string(" --in ") + path("nope.npy") +
                " --out " + path("o")),
            0);
  EXPECT_NE(err_.find("nope.npy"), std::string::npos) << err_;
  EXPECT_NE(cli("--in " + path("x.npy") + " --out " + path("o")), 0);
  EXPECT_NE(err_.find("option --quant is required"), std::string::npos) << err_;
  EXPECT_NE(cli("--quant fp8-static --key nvfp4" + x), 0);
  EXPECT_NE(err_.find("option --quant is given twice"), std::string::npos) << err_;
  // A folder as the prefix would write hidden files into it (dir/.q.npy).
  for (const std::string& out : {path("") + "/", path("."), std::string("..")}) {
    EXPECT_EQ(cli("--quant fp8-static --in " + path("x.npy") + " --out " + out), 2) << out;
    EXPECT_NE(err_.find("option --out takes a file prefix"), std::string::npos) << err_;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / ".q.npy"));
  // An empty x [0, 10^12] quantizes to empty outputs without allocating a 10^12 row.
  {
    std::ofstream f(path("empty.npy"), std::ios::binary);
    std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1000000000000), }";
    h += std::string(64 - (10 + h.size() + 1) % 64, ' ') + "\n";
    f << std::string("\x93NUMPY\x01\x00", 8) << static_cast<char>(h.size()) << '\0' << h;
  }
  for (const char* k : {"nvfp4 --global-scale 1", "fp8-group128", "fp8-static --scale 1"}) {
    EXPECT_EQ(cli(std::string("--quant ") + k + " --in " + path("empty.npy") + " --out " +
                  path("e")),
              0)
        << k << ": " << err_;
  }
  EXPECT_NE(cli("--key nvfp4 --bogus" + x), 0);
  EXPECT_NE(err_.find("--bogus"), std::string::npos) << err_;
  write_npy(path("zeros.npy"), Tensor::empty(DType::kF32, {2, 32}));
  EXPECT_NE(cli("--key nvfp4 --in " + path("zeros.npy") + " --out " + path("o")), 0);
  EXPECT_NE(err_.find("--global-scale"), std::string::npos) << err_;
  EXPECT_EQ(cli("--help"), 0);
}

}  // namespace
}  // namespace mlafuse
