#include "mlafuse/mla/attention_metadata.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mlafuse/core/error.h"

namespace mlafuse {
namespace {

Tensor i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty(DType::kI32, {static_cast<int64_t>(v.size())});
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

// Decode-only metadata: `lens` and `qsl` per sequence, one block-table column of 64-token pages
// (page i for sequence i), no slots written.
AttentionMetadata decodes(const std::vector<int32_t>& lens, const std::vector<int32_t>& qsl,
                          int64_t t_pad) {
  AttentionMetadata m;
  m.num_decodes = static_cast<int64_t>(lens.size());
  m.num_decode_tokens = qsl.back();
  m.page_size = 64;
  m.seq_lens = i32(lens);
  m.query_start_loc = i32(qsl);
  m.block_table = Tensor::empty(DType::kI32, {m.num_decodes, 1});
  for (int64_t s = 0; s < m.num_decodes; ++s) {
    m.block_table.data<int32_t>()[s] = static_cast<int32_t>(s);
  }
  m.slot_mapping = i32(std::vector<int32_t>(static_cast<size_t>(t_pad), -1));
  return m;
}

void expect_error(const AttentionMetadata& m, MetadataForm form, const std::string& words) {
  try {
    validate_attention_metadata(m, form);
    FAIL() << "no throw; expected: " << words;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(AttentionMetadata, MultiTokenDecodes) {
  // Decodes of 2, 1 and 3 query tokens, each within its length.
  const AttentionMetadata m = decodes({2, 40, 3}, {0, 2, 3, 6}, 6);
  EXPECT_EQ(m.num_tokens(), 6);
  EXPECT_EQ(validate_attention_metadata(m, MetadataForm::kStep), 6);
  expect_error(decodes({1, 40}, {0, 2, 3}, 3), MetadataForm::kStep,
               "sequence 0: seq_lens 1 is shorter than its 2 query tokens");
  // A decode without tokens is a padding one (length 0), of the padded form only.
  expect_error(decodes({5, 4, 6}, {0, 2, 2, 3}, 3), MetadataForm::kStep,
               "decode sequence 1 has 0 query tokens");
  AttentionMetadata counts = m;
  counts.num_decode_tokens = 5;
  counts.num_prefill_tokens = 1;
  expect_error(counts, MetadataForm::kStep, "query_start_loc[3] is 6");
  counts = m;
  counts.num_decode_tokens = 2;  // fewer tokens than decodes
  expect_error(counts, MetadataForm::kStep, "3 decodes need at least as many tokens");
}

// The decode query length picks the decode kernels' schedule: given, it bounds every decode;
// absent (0), the counts decide.
TEST(AttentionMetadata, MaxDecodeQueryLen) {
  AttentionMetadata m = decodes({2, 40, 3}, {0, 2, 3, 6}, 6);
  EXPECT_FALSE(m.one_token_decodes());
  m.max_decode_query_len = 3;
  EXPECT_EQ(validate_attention_metadata(m, MetadataForm::kStep), 6);
  EXPECT_FALSE(m.one_token_decodes());
  m.max_decode_query_len = 2;
  expect_error(m, MetadataForm::kStep,
               "decode 2 has 3 query tokens in query_start_loc, more than max_decode_query_len 2");
  m.max_decode_query_len = -1;
  expect_error(m, MetadataForm::kStep, "max_decode_query_len -1 is negative");
  AttentionMetadata one = decodes({2, 40, 3}, {0, 1, 2, 3}, 3);
  EXPECT_TRUE(one.one_token_decodes());
  one.max_decode_query_len = 4;  // an MTP engine's step whose decodes hold one token each
  EXPECT_EQ(validate_attention_metadata(one, MetadataForm::kStep), 3);
  EXPECT_FALSE(one.one_token_decodes());
  one.max_decode_query_len = 1;
  EXPECT_TRUE(one.one_token_decodes());
}

TEST(AttentionMetadata, PaddedDecodesTakeOneTokenOrNone) {
  // A CUDA-graph bucket of 6: two real decodes of 2 tokens, then padding decodes of length 0
  // taking the 2 padding tokens one each, then none.
  const AttentionMetadata m = decodes({7, 9, 0, 0, 0, 0}, {0, 2, 4, 5, 6, 6, 6}, 6);
  EXPECT_EQ(validate_attention_metadata(m, MetadataForm::kPadded), 6);
  expect_error(m, MetadataForm::kStep, "sequence 2: seq_lens 0 is shorter than its 1 query tokens");
  expect_error(decodes({7, 0}, {0, 1, 3}, 3), MetadataForm::kPadded,
               "padding decode 1 (seq_lens 0) has 2 query tokens");
  expect_error(decodes({7, -1}, {0, 1, 2}, 2), MetadataForm::kPadded, "seq_lens -1");
}

}  // namespace
}  // namespace mlafuse
