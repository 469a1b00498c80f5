// Shared pieces of the standalone deformable-attention programs (self-test, CUDA emulation test, benchmark):
// typed handles of the vit_adapter operators and the level tensors of a list of (H, W) level sizes.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

namespace vita_msda_harness {

using FwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&);
using BwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                               const at::Tensor&, const at::Tensor&, const at::Tensor&);

inline const c10::TypedOperatorHandle<FwdSig>& msda_op() {  // the autograd op
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::ms_deform_attn", "").typed<FwdSig>();
  return op;
}

inline const c10::TypedOperatorHandle<FwdSig>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::ms_deform_attn_forward", "").typed<FwdSig>();
  return op;
}

inline const c10::TypedOperatorHandle<BwdSig>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::ms_deform_attn_backward", "").typed<BwdSig>();
  return op;
}

// spatial_shapes (L, 2), level_start_index (L,) and the total token count S of levels given as (H, W).
struct Levels {
  at::Tensor shapes;
  at::Tensor starts;
  int64_t S = 0;
};

inline Levels make_levels(const std::vector<std::pair<int64_t, int64_t>>& hw) {
  std::vector<int64_t> sh, st;
  Levels lv;
  for (const auto& p : hw) {
    sh.push_back(p.first);
    sh.push_back(p.second);
    st.push_back(lv.S);
    lv.S += p.first * p.second;
  }
  lv.shapes = at::tensor(sh, at::kLong).view({static_cast<int64_t>(hw.size()), 2});
  lv.starts = at::tensor(st, at::kLong);
  return lv;
}

}  // namespace vita_msda_harness
