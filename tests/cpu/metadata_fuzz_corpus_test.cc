// Replays the metadata fuzzer's corpus (tests/data/metadata/fuzz_corpus.b64) in every test run,
// with the properties fuzz/metadata_fuzzer checks (fuzz/metadata_input.h: a finding aborts).
#include <gtest/gtest.h>

#include <string>

#include "cpu/fuzz_corpus.h"
#include "fuzz/metadata_input.h"

namespace mlafuse {
namespace {

TEST(MetadataFuzzCorpus, EveryInputIsRejectedCleanlyOrSafe) {
  const auto inputs = testing::load_fuzz_corpus("metadata");
  ASSERT_GE(inputs.size(), 9u);
  int accepted = 0, step = 0, rejected = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE("corpus entry " + std::to_string(i));
    const fuzzing::MetadataInput in = fuzzing::decode_metadata_input(inputs[i]);
    if (fuzzing::check_metadata_input(in)) {
      ++accepted;
      step += in.form == MetadataForm::kStep;
    } else {
      ++rejected;
    }
  }
  // The corpus reaches both outcomes, and the reference op on accepted steps; the first four
  // (hand-written) entries are valid, the next five not.
  EXPECT_GE(accepted, 4);
  EXPECT_GE(step, 3);
  EXPECT_GE(rejected, 5);
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_EQ(fuzzing::check_metadata_input(fuzzing::decode_metadata_input(inputs[i])), i < 4)
        << "hand-written entry " << i;
  }
}

}  // namespace
}  // namespace mlafuse
