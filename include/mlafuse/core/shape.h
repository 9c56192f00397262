// Shapes whose leading dimension may be the symbolic token count T.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlafuse {

// One dimension: a fixed extent, or the symbolic token count "T" scaled by nothing.
struct Dim {
  static constexpr int64_t kSymbolicTokens = -1;
  int64_t value = 0;  // >= 0, or kSymbolicTokens

  static Dim tokens() { return Dim{kSymbolicTokens}; }
  static Dim fixed(int64_t v) { return Dim{v}; }
  bool is_tokens() const { return value == kSymbolicTokens; }
  int64_t resolve(int64_t num_tokens) const { return is_tokens() ? num_tokens : value; }
  bool operator==(const Dim&) const = default;
};

struct Shape {
  std::vector<Dim> dims;

  Shape() = default;
  Shape(std::initializer_list<Dim> d) : dims(d) {}
  explicit Shape(std::vector<Dim> d) : dims(std::move(d)) {}

  size_t rank() const { return dims.size(); }
  const Dim& operator[](size_t i) const { return dims[i]; }
  Dim& operator[](size_t i) { return dims[i]; }
  bool operator==(const Shape&) const = default;
  // Concrete extents for a given token count.
  std::vector<int64_t> resolve(int64_t num_tokens) const;
  // "[T, 128, 192]"
  std::string str() const;
};

// Whether the fixed extents of `s` (T counted once) times `elem_bytes` fit in int64: a type whose
// byte size wraps is refused where it is declared, so no later product of its extents can wrap.
bool fixed_bytes_fit(const Shape& s, size_t elem_bytes);

// The same for concrete extents, zeros counted as 1 (contiguous strides skip nothing).
bool extents_bytes_fit(const std::vector<int64_t>& extents, size_t elem_bytes);

// "[3, 4]" for concrete extents.
std::string shape_str(const std::vector<int64_t>& extents);

}  // namespace mlafuse
