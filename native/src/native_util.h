// Small helpers shared by the native operators (msda.cc, roi_align.cc, nms.cc): shapes in error messages and the
// CPU feature check of the vectorised paths.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace vita {

// "[2, 3, 4]": a shape for error messages.
inline std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

inline std::string shape_str(const at::Tensor& t) { return shape_str(t.sizes()); }

// Whether the CPU we run on has AVX2 (asked once).
inline bool cpu_has_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}

}  // namespace vita
