// Node attributes: a small ordered map of typed values shared by the IR and the backends.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mlafuse/core/error.h"

namespace mlafuse {

using AttrValue = std::variant<int64_t, double, bool, std::string, std::vector<int64_t>>;

class AttrMap {
 public:
  // Keys are looked up as string_view (a transparent map), so the op contract's constants
  // (ir/op_contract.h) serve as keys without building a std::string per lookup.
  bool has(std::string_view key) const { return values_.find(key) != values_.end(); }
  void set(std::string_view key, AttrValue v) {
    values_.insert_or_assign(std::string(key), std::move(v));
  }
  void erase(std::string_view key) {
    if (auto it = values_.find(key); it != values_.end()) values_.erase(it);
  }
  const AttrValue* find(std::string_view key) const {
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second;
  }
  template <typename T>
  const T& get(std::string_view key) const {
    const AttrValue* v = find(key);
    MLAFUSE_CHECK(v != nullptr, "attribute '", key, "' is missing");
    const T* p = std::get_if<T>(v);
    MLAFUSE_CHECK(p != nullptr, "attribute '", key, "' has the wrong type");
    return *p;
  }
  template <typename T>
  T get_or(std::string_view key, T fallback) const {
    const AttrValue* v = find(key);
    if (v == nullptr) return fallback;
    const T* p = std::get_if<T>(v);
    MLAFUSE_CHECK(p != nullptr, "attribute '", key, "' has the wrong type");
    return *p;
  }
  const std::map<std::string, AttrValue, std::less<>>& items() const { return values_; }
  bool operator==(const AttrMap&) const = default;

 private:
  std::map<std::string, AttrValue, std::less<>> values_;  // ordered: printing is stable
};

}  // namespace mlafuse
