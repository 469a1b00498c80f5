// Runs the CUDA kernels of native/src/det_cuda.cu (RoIAlign forward / backward, the NMS suppression mask) on the CPU
// through native/test/cuda_emu and compares them with the CPU operators of roi_align.cc / nms.cc:
//   RoIAlign forward: bit-identical (same operations in the same order, no FMA contraction);
//   RoIAlign backward: atomics change the summation order, so within 1e-12 (float64) / 1e-5 (float32) relative;
//   NMS: the mask + host scan (nms_scan) keep exactly the CPU kernel's indices.
// It checks index math, geometry, the grid-stride loops and the scan, not anything GPU-specific.
//
// Build and run: native/test/build-det-emu.sh

#include "cuda_emu/cuda_emu.h"

// Round-to-nearest intrinsics: plain operations on the host (the test is compiled without FMA contraction targets).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }

#define VITA_DET_CUDA_EMULATION 1
#define VITA_DET_LAUNCH(kernel, blocks, threads, stream, ...) emu_launch(kernel, (blocks), (threads), __VA_ARGS__)
#include "../src/det_cuda.cu"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <vector>

namespace {

int failures = 0;

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0) return 0.0;
  const at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  const double scale = std::max(1e-30, y.abs().max().item<double>());
  return (x - y).abs().max().item<double>() / scale;
}

using FwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t, double, int64_t, bool);
using BwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, int64_t, int64_t, double, int64_t,
                          bool);
using NmsSig = at::Tensor(const at::Tensor&, const at::Tensor&, double);

// RoIs of every kind on an H x W map at `scale`: inside, partly outside, large (grid > 1), thin, empty, inverted,
// beyond the map.
at::Tensor make_rois(int64_t K, int64_t N, int64_t H, int64_t W, double scale) {
  at::Tensor u = at::rand({K, 6}, at::kDouble);
  auto a = u.accessor<double, 2>();
  at::Tensor r = at::empty({K, 5}, at::kDouble);
  auto o = r.accessor<double, 2>();
  const double iw = W / scale, ih = H / scale;
  for (int64_t k = 0; k < K; ++k) {
    double x1 = a[k][0] * iw, y1 = a[k][1] * ih, w = (0.05 + a[k][2]) * iw * 0.5, h = (0.05 + a[k][3]) * ih * 0.5;
    switch (k % 7) {
      case 1: x1 = -a[k][4] * iw * 0.3; y1 = -a[k][5] * ih * 0.3; break;
      case 2: w = iw; h = ih * 1.3; break;
      case 3: w = a[k][4] * 0.5 / scale; break;
      case 4: w = 0; break;
      case 5: w = -a[k][4] * 3 / scale; break;
      case 6: x1 = iw + 2 / scale + a[k][4] * iw; break;
      default: break;
    }
    o[k][0] = static_cast<double>(k % N);
    o[k][1] = x1;
    o[k][2] = y1;
    o[k][3] = x1 + w;
    o[k][4] = y1 + h;
  }
  return r;
}

void roi_case(at::ScalarType dt, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t PH, int64_t PW,
              double scale, int64_t ratio, bool aligned) {
  static const auto fwd =
      c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::roi_align_forward", "").typed<FwdSig>();
  static const auto bwd =
      c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::roi_align_backward", "").typed<BwdSig>();
  at::Tensor input = at::randn({N, C, H, W}, at::kDouble).to(dt);
  at::Tensor rois = make_rois(K, N, H, W, scale).to(dt);
  at::Tensor go = at::randn({K, C, PH, PW}, at::kDouble).to(dt);
  vita_det_cuda::RoIAlignDims d;
  d.N = N; d.C = C; d.H = H; d.W = W; d.K = K; d.PH = PH; d.PW = PW;
  d.spatial_scale = scale; d.sampling_ratio = ratio; d.aligned = aligned;
  const bool dbl = dt == at::kDouble;
  at::Tensor out = at::full({K, C, PH, PW}, 12345.0, input.options());
  at::Tensor gin = at::zeros({N, C, H, W}, input.options());
  const cudaError_t e1 = vita_det_cuda::roi_align_forward(dbl, input.data_ptr(), rois.data_ptr(), out.data_ptr(), d, nullptr);
  const cudaError_t e2 = vita_det_cuda::roi_align_backward(dbl, go.data_ptr(), rois.data_ptr(), gin.data_ptr(), d, nullptr);
  const at::Tensor o_ref = fwd.call(input, rois, PH, PW, scale, ratio, aligned);
  const at::Tensor g_ref = bwd.call(go, rois, {N, C, H, W}, PH, PW, scale, ratio, aligned);
  const bool same = at::equal(out, o_ref);
  const double rg = max_rel(gin, g_ref);
  const double tol = dbl ? 1e-12 : 1e-5;
  const bool ok = e1 == cudaSuccess && e2 == cudaSuccess && same && rg < tol;
  std::printf("  roi_align %-6s K=%lld C=%lld %lldx%lld map, %lldx%lld out, ratio %lld, aligned %d: forward %s "
              "(max rel %.1e), grad_input rel err %.2e  %s\n",
              c10::toString(dt), (long long)K, (long long)C, (long long)H, (long long)W, (long long)PH, (long long)PW,
              (long long)ratio, aligned ? 1 : 0, same ? "bit-identical" : "DIFFERS", max_rel(out, o_ref), rg,
              ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

void nms_case(at::ScalarType dt, int64_t n, double thr, bool ties) {
  static const auto cpu = c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::nms", "").typed<NmsSig>();
  // clustered boxes
  at::Tensor c = at::rand({std::max<int64_t>(1, n / 20), 2}, at::kDouble) * 500;
  at::Tensor pick = at::randint(0, c.size(0), {n}, at::kLong);
  at::Tensor ctr = c.index_select(0, pick) + (at::rand({n, 2}, at::kDouble) - 0.5) * 30;
  at::Tensor wh = at::rand({n, 2}, at::kDouble) * 60 + 10;
  at::Tensor boxes = at::cat({ctr - wh / 2, ctr + wh / 2}, 1).to(dt).contiguous();
  at::Tensor scores = at::rand({n}, at::kDouble);
  if (ties) scores = (scores * 8).floor() / 8;
  scores = scores.to(dt);
  const at::Tensor ref = cpu.call(boxes, scores, thr);
  // the CUDA path: host order (stable, descending), sorted boxes, device mask, host scan
  at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, 0, /*descending=*/true)).contiguous();
  at::Tensor sorted = boxes.index_select(0, order).contiguous();
  const int64_t words = (n + 63) / 64;
  std::vector<unsigned long long> mask(static_cast<size_t>(n * words), 0xdeadbeefULL);
  const cudaError_t e = vita_det_cuda::nms_mask(dt == at::kDouble, sorted.data_ptr(), n, static_cast<float>(thr),
                                                mask.data(), nullptr);
  const std::vector<int64_t> keep = vita_det_cuda::nms_scan(mask.data(), n, order.data_ptr<int64_t>());
  const at::Tensor got = at::tensor(keep, at::kLong);
  const bool ok = e == cudaSuccess && got.numel() == ref.numel() && at::equal(got, ref);
  std::printf("  nms %-6s n=%lld thr %.2f%s: %lld kept, %s  %s\n", c10::toString(dt), (long long)n, thr,
              ties ? " (tied scores)" : "", (long long)ref.numel(), ok ? "identical" : "DIFFERENT", ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

}  // namespace

int main() {
  at::manual_seed(3);
  std::printf("== detection CUDA kernels (det_cuda.cu) under CPU emulation vs the CPU operators\n");
  for (const auto dt : {at::kDouble, at::kFloat}) {
    roi_case(dt, 2, 3, 9, 11, 21, 3, 4, 0.5, 0, true);
    roi_case(dt, 1, 2, 6, 5, 14, 7, 7, 0.25, 0, true);
    roi_case(dt, 2, 2, 8, 8, 14, 2, 2, 1.0, 2, false);
  }
  for (const auto dt : {at::kDouble, at::kFloat}) {
    nms_case(dt, 150, 0.5, false);
    nms_case(dt, 200, 0.3, true);
    nms_case(dt, 64, 0.7, false);
  }
  std::printf("  detection CUDA emulation: %s\n", failures == 0 ? "all passed" : "FAILURES");
  return failures == 0 ? 0 : 1;
}
