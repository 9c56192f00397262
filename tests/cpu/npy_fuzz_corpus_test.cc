// Replays the .npy fuzzer's corpus (tests/data/npy/fuzz_corpus.b64) in every test run, with the
// properties fuzz/npy_parse_fuzzer checks: each input fails with an mlafuse::Error naming the
// file, or reads and round-trips through encode_npy unchanged.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "cpu/fuzz_corpus.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/npy.h"

namespace mlafuse {
namespace {

TEST(NpyFuzzCorpus, EveryInputFailsCleanlyOrRoundTrips) {
  const auto inputs = testing::load_fuzz_corpus("npy");
  ASSERT_GE(inputs.size(), 15u);
  int read = 0, failed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE("corpus entry " + std::to_string(i));
    Tensor t;
    try {
      t = parse_npy(inputs[i], "entry.npy");
    } catch (const Error& e) {
      ++failed;
      EXPECT_EQ(std::string(e.what()).rfind("entry.npy: ", 0), 0u) << e.what();
      continue;
    }
    ++read;
    const std::string bytes = encode_npy(t, "entry.npy");
    const Tensor again = parse_npy(bytes, "again.npy");
    ASSERT_EQ(again.dtype(), t.dtype());
    ASSERT_EQ(again.shape(), t.shape());
    const size_t n = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
    EXPECT_TRUE(n == 0 || std::memcmp(again.raw(), t.raw(), n) == 0);
    EXPECT_EQ(encode_npy(again, "again.npy"), bytes);
  }
  // The corpus exercises both outcomes.
  EXPECT_GE(read, 8);
  EXPECT_GE(failed, 5);
}

}  // namespace
}  // namespace mlafuse
