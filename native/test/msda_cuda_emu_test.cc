// Runs the CUDA kernels and launchers of native/src/msda_cuda.cu on the CPU through native/test/cuda_emu (one
// std::thread per lane, lane-accurate __shfl_xor_sync, mutex atomics) and compares them with the CPU operator of
// msda.cc in float64. Checks index math, the lane-group / shuffle structure of the backward, the G selection for
// every D range, atomics into the accumulator buffer and the half / bfloat16 conversions, where no GPU exists.
// It does not check anything GPU-specific (timing, memory model, occupancy).
//
// Build and run: native/test/build-selftest.sh --cuda-emu

#include "cuda_emu/cuda_emu.h"

#include "../src/msda_cuda.cu"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "msda_harness.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {


int failures = 0;

// Max relative error over the finite elements; +inf when the NaN / Inf positions of a and b differ.
double max_rel(const at::Tensor& a0, const at::Tensor& b0) {
  if (a0.numel() == 0) return 0.0;
  const at::Tensor a = a0.to(at::kDouble), b = b0.to(at::kDouble);
  if (!at::equal(a.isnan(), b.isnan()) || !at::equal(a.isinf(), b.isinf())) return INFINITY;
  const at::Tensor fa = at::where(at::isfinite(a), a, at::zeros_like(a));
  const at::Tensor fb = at::where(at::isfinite(b), b, at::zeros_like(b));
  const double scale = std::max(1e-30, fb.abs().max().item<double>());
  return (fa - fb).abs().max().item<double>() / scale;
}

vita_msda_cuda::DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return vita_msda_cuda::DType::kFloat64;
    case at::kHalf: return vita_msda_cuda::DType::kFloat16;
    case at::kBFloat16: return vita_msda_cuda::DType::kBFloat16;
    default: return vita_msda_cuda::DType::kFloat32;
  }
}

void run_case(at::ScalarType dt, int64_t N, int64_t M, int64_t D, int64_t Lq, int64_t P,
              const std::vector<std::pair<int64_t, int64_t>>& hw, double tol, bool nonfinite = false) {
  const auto& fwd = vita_msda_harness::forward_op();
  const auto& bwd = vita_msda_harness::backward_op();
  const int64_t L = static_cast<int64_t>(hw.size());
  const vita_msda_harness::Levels lv = vita_msda_harness::make_levels(hw);
  const int64_t S = lv.S;
  const at::Tensor& shapes = lv.shapes;
  const at::Tensor& starts = lv.starts;
  at::Tensor value = at::randn({N, S, M, D}, at::kDouble).to(dt);
  at::Tensor loc = (at::rand({N, Lq, M, L, P, 2}, at::kDouble) * 1.5 - 0.25);
  // A few exact pixel centres, the x = -1 line and far-outside points (level 0 has a power-of-two width, so that
  // these coordinates are exact: elsewhere x = loc_x * W - 0.5 rounds differently with and without FMA contraction
  // and a point meant to lie on a pixel boundary may land on either side of it).
  loc.select(1, 0).select(-1, 0).fill_(0.5 / static_cast<double>(hw[0].second));
  if (Lq > 1) loc.select(1, 1).select(-1, 0).fill_(-0.5 / static_cast<double>(hw[0].second));
  if (Lq > 2) loc.select(1, 2).fill_(7.0);
  at::Tensor attn = at::rand({N, Lq, M, L, P}, at::kDouble);
  if (nonfinite) {
    // NaN / +-Inf coordinates (x only, y only, both) and non-finite weights of points outside and inside the image:
    // the kernels must reproduce the CPU operator's NaN pattern (that of the grid_sample composition).
    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    auto pt = [&](int64_t q, int64_t m, int64_t p) { return loc[N - 1][q % Lq][m % M][L - 1][p % P]; };
    pt(0, 0, 0)[0] = nan;
    pt(1, 1, 1)[1] = inf;
    pt(2, 0, 1)[0] = -inf;
    pt(2, 0, 1)[1] = nan;
    pt(3, 1, 0)[0] = 6.0;  // outside, weight +Inf
    attn[N - 1][3 % Lq][1 % M][L - 1][0] = inf;
    pt(4, 0, 1)[0] = 0.5;  // inside, weight NaN
    pt(4, 0, 1)[1] = 0.5;
    attn[N - 1][4 % Lq][0][L - 1][1 % P] = nan;
  }
  loc = loc.to(dt);
  attn = attn.to(dt);
  at::Tensor go = at::randn({N, Lq, M * D}, at::kDouble).to(dt);

  vita_msda_cuda::Dims d;
  d.N = N; d.S = S; d.M = M; d.D = D; d.Lq = Lq; d.L = L; d.P = P;
  at::Tensor out = at::empty({N, Lq, M * D}, value.options());
  const at::ScalarType acc = dt == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor gv = at::zeros({N, S, M, D}, value.options().dtype(acc));
  at::Tensor gl = at::empty_like(loc), ga = at::empty_like(attn);
  cudaError_t e1 = vita_msda_cuda::ms_deform_attn_forward(dtype_of(dt), value.data_ptr(), shapes.data_ptr<int64_t>(),
                                                          starts.data_ptr<int64_t>(), loc.data_ptr(), attn.data_ptr(),
                                                          out.data_ptr(), d, nullptr);
  cudaError_t e2 = vita_msda_cuda::ms_deform_attn_backward(
      dtype_of(dt), value.data_ptr(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr(),
      attn.data_ptr(), go.data_ptr(), gv.data_ptr(), gl.data_ptr(), ga.data_ptr(), d, nullptr);

  auto dd = [](const at::Tensor& t) { return t.to(at::kDouble); };
  at::Tensor o_ref = fwd.call(dd(value), shapes, starts, dd(loc), dd(attn));
  auto g_ref = bwd.call(dd(value), shapes, starts, dd(loc), dd(attn), dd(go));
  const double r0 = max_rel(out, o_ref), r1 = max_rel(gv, std::get<0>(g_ref)), r2 = max_rel(gl, std::get<1>(g_ref)),
               r3 = max_rel(ga, std::get<2>(g_ref));
  const bool ok = e1 == cudaSuccess && e2 == cudaSuccess && r0 < tol && r1 < tol && r2 < tol && r3 < tol;
  if (nonfinite) std::printf("  (NaN / Inf inputs, %lld NaN outputs)\n", (long long)o_ref.isnan().sum().item<int64_t>());
  std::printf("  %-9s N=%lld M=%lld D=%3lld Lq=%lld P=%lld L=%lld: rel err out %.2e  grad_value %.2e  grad_loc %.2e  "
              "grad_attn %.2e  %s\n",
              c10::toString(dt), (long long)N, (long long)M, (long long)D, (long long)Lq, (long long)P, (long long)L,
              r0, r1, r2, r3, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

}  // namespace

int main() {
  at::manual_seed(7);
  std::printf("== CUDA kernels (msda_cuda.cu) under CPU emulation vs the CPU operator\n");
  // D values cover every lane-group width G = 1, 2, 4, 8, 16, 32 and D > 32 (several channels per lane).
  run_case(at::kDouble, 2, 3, 32, 5, 4, {{8, 8}, {4, 4}, {2, 2}}, 1e-12);
  run_case(at::kDouble, 2, 2, 70, 4, 3, {{6, 4}, {3, 5}}, 1e-12);
  run_case(at::kDouble, 2, 3, 5, 6, 2, {{5, 8}, {3, 7}}, 1e-12);
  run_case(at::kDouble, 1, 5, 1, 7, 2, {{4, 4}}, 1e-12);
  run_case(at::kDouble, 1, 3, 2, 6, 2, {{4, 2}, {2, 1}}, 1e-12);
  run_case(at::kDouble, 1, 3, 3, 6, 2, {{4, 4}}, 1e-12);
  run_case(at::kDouble, 2, 2, 12, 5, 2, {{4, 4}, {2, 2}}, 1e-12);
  run_case(at::kDouble, 1, 2, 20, 5, 2, {{4, 4}}, 1e-12);
  run_case(at::kFloat, 2, 2, 32, 6, 4, {{8, 8}, {4, 4}}, 1e-5);
  run_case(at::kHalf, 1, 2, 32, 6, 4, {{8, 8}, {4, 4}}, 5e-3);
  run_case(at::kBFloat16, 1, 2, 32, 6, 4, {{8, 8}, {4, 4}}, 3e-2);
  // Non-finite sampling locations / weights (every lane-group width that matters: D = 5 -> G = 8, D = 70 -> 32).
  run_case(at::kDouble, 2, 3, 32, 6, 4, {{8, 8}, {4, 4}}, 1e-12, true);
  run_case(at::kDouble, 1, 2, 5, 6, 2, {{5, 8}, {3, 7}}, 1e-12, true);
  run_case(at::kDouble, 1, 2, 70, 6, 3, {{6, 4}}, 1e-12, true);
  run_case(at::kFloat, 2, 2, 32, 6, 4, {{8, 8}, {4, 4}}, 1e-5, true);
  run_case(at::kHalf, 1, 2, 32, 6, 4, {{8, 8}, {4, 4}}, 5e-3, true);
  const int emu = g_emu_failures.load();
  if (emu) std::printf("  emulation reported %d divergent / invalid shuffles\n", emu);
  std::printf("  CUDA emulation: %s\n", failures == 0 && emu == 0 ? "all passed" : "FAILURES");
  return failures == 0 && emu == 0 ? 0 : 1;
}
