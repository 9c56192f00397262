// Node attributes: a small ordered map of typed values shared by the IR and the backends.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "mlafuse/core/error.h"

namespace mlafuse {

using AttrValue = std::variant<int64_t, double, bool, std::string, std::vector<int64_t>>;

class AttrMap {
 public:
  bool has(const std::string& key) const { return values_.count(key) != 0; }
  void set(const std::string& key, AttrValue v) { values_[key] = std::move(v); }
  void erase(const std::string& key) { values_.erase(key); }
  const AttrValue* find(const std::string& key) const {
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second;
  }
  template <typename T>
  const T& get(const std::string& key) const {
    const AttrValue* v = find(key);
    MLAFUSE_CHECK(v != nullptr, "attribute '", key, "' is missing");
    const T* p = std::get_if<T>(v);
    MLAFUSE_CHECK(p != nullptr, "attribute '", key, "' has the wrong type");
    return *p;
  }
  template <typename T>
  T get_or(const std::string& key, T fallback) const {
    const AttrValue* v = find(key);
    if (v == nullptr) return fallback;
    const T* p = std::get_if<T>(v);
    MLAFUSE_CHECK(p != nullptr, "attribute '", key, "' has the wrong type");
    return *p;
  }
  const std::map<std::string, AttrValue>& items() const { return values_; }
  bool operator==(const AttrMap&) const = default;

 private:
  std::map<std::string, AttrValue> values_;  // ordered: printing is stable
};

}  // namespace mlafuse
