// Non-maximum suppression (mmcv 1.4.2 `nms`, offset 0) for vit-adapter's detection heads: CPU kernel, CUDA dispatch
// (IoU mask kernel in det_cuda.cu, under VITA_WITH_CUDA), operator registration.
//
//   nms(Tensor boxes (n, 4) x1 y1 x2 y2, Tensor scores (n), float iou_threshold) -> Tensor int64 kept indices
//
// Boxes are visited in descending score order (stable: equal scores keep index order; NaN scores first, as torch's
// descending sort places them); a box not yet suppressed is kept and suppresses every later box j with
// IoU(i, j) > iou_threshold, where, in the boxes' dtype and in mmcv's order of operations,
//   area = (x2 - x1) * (y2 - y1),  w = max(0, min(x2_i, x2_j) - max(x1_i, x1_j))  (same for h),  inter = w * h,
//   IoU = inter / (area_i + area_j - inter).
// The threshold is rounded to float32 first (mmcv's C++ signature takes a `float`). The result lists the kept boxes in
// descending score order. Boxes and scores must share one floating dtype (float32 / float64) and device.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "native_util.h"

#ifdef VITA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "det_cuda.h"
#endif

#include <algorithm>
#include <cstdlib>
#include <type_traits>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace vita_nms {

namespace {

using vita::shape_str;

void check_inputs(const char* op, const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK(boxes.defined() && scores.defined(), op, ": boxes and scores must be defined tensors");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be (n, 4) rows of (x1, y1, x2, y2), got shape ",
              shape_str(boxes));
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), op, ": scores must be (n,) = (", boxes.size(0),
              ",) to match boxes, got shape ", shape_str(scores));
  TORCH_CHECK(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble, op,
              ": boxes must be float32 or float64, got ", boxes.scalar_type());
  TORCH_CHECK(scores.scalar_type() == boxes.scalar_type(), op, ": scores must have the boxes' dtype ",
              boxes.scalar_type(), ", got ", scores.scalar_type());
  TORCH_CHECK(scores.device() == boxes.device(), op, ": scores are on ", scores.device(), " but boxes on ",
              boxes.device());
  TORCH_CHECK(!std::isnan(iou_threshold), op, ": iou_threshold is NaN");
}

// Indices in descending score order, stable, NaN first.
template <typename T>
std::vector<int64_t> descending_order(const T* s, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [s](int64_t a, int64_t b) {
    const T x = s[a], y = s[b];
    const bool xn = std::isnan(x), yn = std::isnan(y);
    if (xn || yn) return xn && !yn;
    return x > y;
  });
  return order;
}

// Flag type of the same width as T, so that the suppression loop vectorises without mixed-width lanes.
template <typename T>
using Flag = typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type;

// Suppression by kept box (ix1, iy1, ix2, iy2, iarea) of boxes [b0, n) (score-sorted arrays): sup[b] |= IoU > thr.
// Branch-free, so it vectorises; boxes already suppressed are tested too (harmless: flags are only ever set).
// Every operation is rounded separately (no FMA: the variants below never enable the fma target feature), in mmcv's
// order: w = max(0, min(x2) - max(x1)), inter = w * h, IoU = inter / (area_i + area_j - inter); std::max(a, b) is
// written as a < b ? b : a to keep its NaN behaviour.
#define VITA_NMS_ROW_BODY                                                  \
  for (int64_t b = b0; b < n; ++b) {                                       \
    const T xx1 = ix1 < x1[b] ? x1[b] : ix1;                               \
    const T yy1 = iy1 < y1[b] ? y1[b] : iy1;                               \
    const T xx2 = x2[b] < ix2 ? x2[b] : ix2;                               \
    const T yy2 = y2[b] < iy2 ? y2[b] : iy2;                               \
    const T dw = xx2 - xx1;                                                \
    const T dh = yy2 - yy1;                                                \
    const T w = T(0) < dw ? dw : T(0);                                     \
    const T h = T(0) < dh ? dh : T(0);                                     \
    const T inter = w * h;                                                 \
    const T ovr = inter / (iarea + area[b] - inter);                       \
    sup[b] |= ovr > thr ? Flag<T>(1) : Flag<T>(0);                         \
  }

template <typename T>
void suppress_row_default(const T* __restrict__ x1, const T* __restrict__ y1, const T* __restrict__ x2,
                          const T* __restrict__ y2, const T* __restrict__ area, Flag<T>* __restrict__ sup, int64_t b0,
                          int64_t n, T ix1, T iy1, T ix2, T iy2, T iarea, T thr) {
#pragma omp simd
  VITA_NMS_ROW_BODY
}

#if defined(__GNUC__) && defined(__x86_64__)
#define VITA_NMS_AVX2 1
template <typename T>
__attribute__((target("avx2"))) void suppress_row_avx2(const T* __restrict__ x1, const T* __restrict__ y1,
                                                       const T* __restrict__ x2, const T* __restrict__ y2,
                                                       const T* __restrict__ area, Flag<T>* __restrict__ sup,
                                                       int64_t b0, int64_t n, T ix1, T iy1, T ix2, T iy2, T iarea,
                                                       T thr) {
#pragma omp simd
  VITA_NMS_ROW_BODY
}
#else
#define VITA_NMS_AVX2 0
#endif

bool use_avx2() {
#if VITA_NMS_AVX2
  static const bool yes = [] {
    const char* env = std::getenv("VITA_NMS_NO_VEC");
    if (env && env[0] == '1') return false;
    return vita::cpu_has_avx2();
  }();
  return yes;
#else
  return false;
#endif
}

template <typename T>
std::vector<int64_t> nms_cpu_impl(const T* boxes, const T* scores, int64_t n, float thr_f) {
  const std::vector<int64_t> order = descending_order(scores, n);
  // Coordinates and areas in sorted order: the inner loop reads them contiguously.
  std::vector<T> x1(static_cast<size_t>(n)), y1(x1), x2(x1), y2(x1), area(x1);
  for (int64_t a = 0; a < n; ++a) {
    const T* b = boxes + 4 * order[static_cast<size_t>(a)];
    x1[a] = b[0];
    y1[a] = b[1];
    x2[a] = b[2];
    y2[a] = b[3];
    area[a] = (b[2] - b[0]) * (b[3] - b[1]);
  }
  const T thr = static_cast<T>(thr_f);
  std::vector<Flag<T>> suppressed(static_cast<size_t>(n), 0);
  std::vector<int64_t> keep;
  const bool avx2 = use_avx2();
  for (int64_t a = 0; a < n; ++a) {
    if (suppressed[a]) continue;
    keep.push_back(order[static_cast<size_t>(a)]);
#if VITA_NMS_AVX2
    if (avx2) {
      suppress_row_avx2<T>(x1.data(), y1.data(), x2.data(), y2.data(), area.data(), suppressed.data(), a + 1, n, x1[a],
                           y1[a], x2[a], y2[a], area[a], thr);
      continue;
    }
#endif
    suppress_row_default<T>(x1.data(), y1.data(), x2.data(), y2.data(), area.data(), suppressed.data(), a + 1, n,
                            x1[a], y1[a], x2[a], y2[a], area[a], thr);
  }
  (void)avx2;
  return keep;
}

at::Tensor nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, double iou_threshold) {
  const char* op = "vit_adapter::nms";
  check_inputs(op, boxes_in, scores_in, iou_threshold);
  const int64_t n = boxes_in.size(0);
  if (n == 0) return at::empty({0}, boxes_in.options().dtype(at::kLong));
  at::Tensor boxes = boxes_in.contiguous();
  at::Tensor scores = scores_in.contiguous();
  std::vector<int64_t> keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu", [&] {
    keep = nms_cpu_impl<scalar_t>(boxes.data_ptr<scalar_t>(), scores.data_ptr<scalar_t>(), n,
                                  static_cast<float>(iou_threshold));
  });
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())}, boxes.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out;
}

#ifdef VITA_WITH_CUDA
// The device computes the full suppression bit matrix of the score-sorted boxes (bit j of row i: IoU(i, j) > thr,
// j > i); the greedy scan over it (inherently sequential) runs on the host, as mmcv's CUDA nms does.
at::Tensor nms_cuda(const at::Tensor& boxes_in, const at::Tensor& scores_in, double iou_threshold) {
  const char* op = "vit_adapter::nms";
  check_inputs(op, boxes_in, scores_in, iou_threshold);
  const int64_t n = boxes_in.size(0);
  if (n == 0) return at::empty({0}, boxes_in.options().dtype(at::kLong));
  const c10::cuda::CUDAGuard guard(boxes_in.device());
  // Stable descending order with NaN first, computed on the host for exact agreement with the CPU kernel.
  at::Tensor scores_h = scores_in.to(at::kCPU).contiguous();
  std::vector<int64_t> order;
  AT_DISPATCH_FLOATING_TYPES(scores_h.scalar_type(), "nms_cuda_order",
                             [&] { order = descending_order(scores_h.data_ptr<scalar_t>(), n); });
  at::Tensor order_h = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  std::copy(order.begin(), order.end(), order_h.data_ptr<int64_t>());
  at::Tensor order_d = order_h.to(boxes_in.device());
  at::Tensor sorted = boxes_in.index_select(0, order_d).contiguous();
  const int64_t words = (n + 63) / 64;
  at::Tensor mask = at::empty({n, words}, boxes_in.options().dtype(at::kLong));
  const cudaError_t err = vita_det_cuda::nms_mask(sorted.scalar_type() == at::kDouble, sorted.data_ptr(), n,
                                                  static_cast<float>(iou_threshold),
                                                  reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>()),
                                                  at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
  at::Tensor mask_h = mask.to(at::kCPU);
  const std::vector<int64_t> keep = vita_det_cuda::nms_scan(
      reinterpret_cast<const unsigned long long*>(mask_h.data_ptr<int64_t>()), n, order.data());
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())}, at::TensorOptions().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out.to(boxes_in.device());
}
#endif  // VITA_WITH_CUDA

}  // namespace

}  // namespace vita_nms

TORCH_LIBRARY_FRAGMENT(vit_adapter, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
}

TORCH_LIBRARY_IMPL(vit_adapter, CPU, m) {
  m.impl("nms", &vita_nms::nms_cpu);
}

#ifdef VITA_WITH_CUDA
TORCH_LIBRARY_IMPL(vit_adapter, CUDA, m) {
  m.impl("nms", &vita_nms::nms_cuda);
}
#endif
