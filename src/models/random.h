// Seeded random numbers for weights and batches: a small generator whose streams are the same on
// every platform (std::normal_distribution is not), so a seed names the same model everywhere.
#pragma once

#include <cmath>
#include <cstdint>

namespace mlafuse::models::detail {

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xoshiro256**: one independent stream per (seed, purpose, index), so tensors generated block by
// block (or by several threads) do not depend on the order they are generated in.
class Rng {
 public:
  Rng(uint64_t seed, uint64_t purpose, uint64_t index = 0) {
    uint64_t sm = seed ^ (purpose * 0xd1b54a32d192ed03ull) ^ (index * 0x8cb92ba72f3d8dd7ull);
    for (uint64_t& w : s_) w = splitmix64(sm);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 24 random bits (exact in f32).
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return static_cast<uint64_t>((next() >> 11) * 0x1.0p-53 * n); }
  // Standard normal by Box-Muller (exact shape; for activations, where counts are small).
  float normal() {
    const double u1 = (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  // Approximately standard normal: Irwin-Hall sum of four 16-bit uniforms from one draw, scaled
  // to unit variance (tails end at +-3.46). Cheap enough for the 117M-element o_proj weight.
  float fast_normal() {
    const uint64_t r = next();
    const uint32_t sum = static_cast<uint32_t>(r & 0xffff) +
                         static_cast<uint32_t>((r >> 16) & 0xffff) +
                         static_cast<uint32_t>((r >> 32) & 0xffff) + static_cast<uint32_t>(r >> 48);
    // Each uniform is (k + 0.5) / 65536; the sum of four has mean 2 and variance 1/3.
    return (static_cast<float>(sum) + 2.0f) * (1.0f / 65536.0f) * 1.7320508f - 2.0f * 1.7320508f;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace mlafuse::models::detail
