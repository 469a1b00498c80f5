// CUDA kernels of the detection operators (vit-adapter): RoIAlign forward / backward (mmcv 1.4.2 semantics, see
// roi_align.cc) and the pairwise-suppression mask of NMS (see nms.cc). Plain CUDA, no torch headers.
//
// Kept deliberately simple (they cannot be run on the machines this project is developed on):
//   roi_align_forward   one thread per output element (k, c, ph, pw); it recomputes the RoI geometry and walks the
//                       bin's samples in the CPU kernel's order.
//   roi_align_backward  one thread per grad_output element; atomicAdd of (g / count) * w into grad_input
//                       (double atomicAdd needs sm_60 or newer; the build targets sm_80 / sm_90).
//   nms_mask            one thread per (row i, 64-column word): 64 IoU tests, one 64-bit word written.
// Every floating operation that mmcv's CPU kernel rounds separately is written with an explicit round-to-nearest
// intrinsic (__fmul_rn, __dadd_rn, ...), so nvcc cannot contract it into an FMA: sample positions, weights and IoUs
// are then bit-identical to the CPU kernels'. (Only the RoIAlign backward's accumulation order differs: atomics.)

#include "det_cuda.h"

#include <cuda_runtime.h>

#include <cstdint>

// Kernel launch. native/test/det_cuda_emu_test.cc defines VITA_DET_CUDA_EMULATION and its own VITA_DET_LAUNCH to run
// these kernels on the CPU (native/test/cuda_emu) where no GPU is available.
#ifndef VITA_DET_CUDA_EMULATION
#define VITA_DET_LAUNCH(kernel, blocks, threads, stream, ...) kernel<<<(blocks), (threads), 0, (stream)>>>(__VA_ARGS__)
#endif

namespace vita_det_cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

template <typename T>
struct Geom {
  int64_t batch, grid_h, grid_w;
  T start_h, start_w, bin_h, bin_w, count;
};

template <typename T>
__device__ __forceinline__ Geom<T> roi_geom(const T* roi, const RoIAlignDims& d) {
  Geom<T> g;
  const T scale = static_cast<T>(d.spatial_scale);
  const T offset = d.aligned ? T(0.5) : T(0);
  g.batch = static_cast<int64_t>(roi[0]);
  g.start_w = sub_rn(mul_rn(roi[1], scale), offset);
  g.start_h = sub_rn(mul_rn(roi[2], scale), offset);
  const T end_w = sub_rn(mul_rn(roi[3], scale), offset);
  const T end_h = sub_rn(mul_rn(roi[4], scale), offset);
  T roi_w = sub_rn(end_w, g.start_w);
  T roi_h = sub_rn(end_h, g.start_h);
  if (!d.aligned) {
    roi_w = roi_w > T(1) ? roi_w : T(1);
    roi_h = roi_h > T(1) ? roi_h : T(1);
  }
  g.bin_h = div_rn(roi_h, static_cast<T>(d.PH));
  g.bin_w = div_rn(roi_w, static_cast<T>(d.PW));
  g.grid_h = d.sampling_ratio > 0 ? d.sampling_ratio : static_cast<int64_t>(ceil(div_rn(roi_h, static_cast<T>(d.PH))));
  g.grid_w = d.sampling_ratio > 0 ? d.sampling_ratio : static_cast<int64_t>(ceil(div_rn(roi_w, static_cast<T>(d.PW))));
  const int64_t cnt = g.grid_h * g.grid_w;
  g.count = static_cast<T>(cnt > 1 ? cnt : 1);
  return g;
}

// Sample coordinate along one axis: start + p * bin + (i + 0.5) * bin / grid, in mmcv's order.
template <typename T>
__device__ __forceinline__ T sample_coord(T start, int64_t p, T bin, int64_t i, int64_t grid) {
  const T half = static_cast<T>(static_cast<float>(i) + .5f);
  return add_rn(add_rn(start, mul_rn(static_cast<T>(p), bin)), div_rn(mul_rn(half, bin), static_cast<T>(grid)));
}

// Bilinear corners of one sample; false when the sample lies outside [-1, H] x [-1, W].
template <typename T>
__device__ __forceinline__ bool bilinear(T y, T x, int64_t H, int64_t W, int64_t& p1, int64_t& p2, int64_t& p3,
                                         int64_t& p4, T& w1, T& w2, T& w3, T& w4) {
  if (y < T(-1) || y > static_cast<T>(H) || x < T(-1) || x > static_cast<T>(W)) return false;
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  int64_t y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(x), y_high, x_high;
  if (y_low >= H - 1) {
    y_high = y_low = H - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= W - 1) {
    x_high = x_low = W - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = sub_rn(y, static_cast<T>(y_low)), lx = sub_rn(x, static_cast<T>(x_low));
  const T hy = sub_rn(T(1), ly), hx = sub_rn(T(1), lx);
  w1 = mul_rn(hy, hx);
  w2 = mul_rn(hy, lx);
  w3 = mul_rn(ly, hx);
  w4 = mul_rn(ly, lx);
  p1 = y_low * W + x_low;
  p2 = y_low * W + x_high;
  p3 = y_high * W + x_low;
  p4 = y_high * W + x_high;
  return true;
}

template <typename T>
__global__ void roi_align_forward_kernel(const T* __restrict__ input, const T* __restrict__ rois, T* __restrict__ out,
                                         RoIAlignDims d) {
  const int64_t total = d.K * d.C * d.PH * d.PW;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pw = idx % d.PW;
    const int64_t ph = (idx / d.PW) % d.PH;
    const int64_t c = (idx / (d.PW * d.PH)) % d.C;
    const int64_t k = idx / (d.PW * d.PH * d.C);
    const Geom<T> g = roi_geom(rois + 5 * k, d);
    const T* plane = input + (g.batch * d.C + c) * d.H * d.W;
    T acc = 0;
    if (d.H > 0 && d.W > 0) {
      for (int64_t iy = 0; iy < g.grid_h; ++iy) {
        const T y = sample_coord(g.start_h, ph, g.bin_h, iy, g.grid_h);
        for (int64_t ix = 0; ix < g.grid_w; ++ix) {
          const T x = sample_coord(g.start_w, pw, g.bin_w, ix, g.grid_w);
          int64_t p1, p2, p3, p4;
          T w1, w2, w3, w4;
          if (!bilinear(y, x, d.H, d.W, p1, p2, p3, p4, w1, w2, w3, w4)) continue;
          const T v = add_rn(add_rn(add_rn(mul_rn(w1, plane[p1]), mul_rn(w2, plane[p2])), mul_rn(w3, plane[p3])),
                             mul_rn(w4, plane[p4]));
          acc = add_rn(acc, v);
        }
      }
    }
    out[idx] = div_rn(acc, g.count);
  }
}

template <typename T>
__global__ void roi_align_backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ rois,
                                          T* __restrict__ grad_in, RoIAlignDims d) {
  const int64_t total = d.K * d.C * d.PH * d.PW;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pw = idx % d.PW;
    const int64_t ph = (idx / d.PW) % d.PH;
    const int64_t c = (idx / (d.PW * d.PH)) % d.C;
    const int64_t k = idx / (d.PW * d.PH * d.C);
    const Geom<T> g = roi_geom(rois + 5 * k, d);
    T* plane = grad_in + (g.batch * d.C + c) * d.H * d.W;
    const T go = div_rn(grad_out[idx], g.count);  // (g / count) * w, as the CPU kernel
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      const T y = sample_coord(g.start_h, ph, g.bin_h, iy, g.grid_h);
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const T x = sample_coord(g.start_w, pw, g.bin_w, ix, g.grid_w);
        int64_t p1, p2, p3, p4;
        T w1, w2, w3, w4;
        if (!bilinear(y, x, d.H, d.W, p1, p2, p3, p4, w1, w2, w3, w4)) continue;
        atomicAdd(plane + p1, mul_rn(go, w1));
        atomicAdd(plane + p2, mul_rn(go, w2));
        atomicAdd(plane + p3, mul_rn(go, w3));
        atomicAdd(plane + p4, mul_rn(go, w4));
      }
    }
  }
}

template <typename T>
__global__ void nms_mask_kernel(const T* __restrict__ boxes, int64_t n, int64_t words, float thr_f,
                                unsigned long long* __restrict__ mask) {
  const T thr = static_cast<T>(thr_f);
  const int64_t total = n * words;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / words;
    const int64_t w = idx % words;
    const T ix1 = boxes[4 * i], iy1 = boxes[4 * i + 1], ix2 = boxes[4 * i + 2], iy2 = boxes[4 * i + 3];
    const T iarea = mul_rn(sub_rn(ix2, ix1), sub_rn(iy2, iy1));
    unsigned long long bits = 0ULL;
    for (int b = 0; b < 64; ++b) {
      const int64_t j = w * 64 + b;
      if (j >= n) break;
      if (j <= i) continue;
      const T jx1 = boxes[4 * j], jy1 = boxes[4 * j + 1], jx2 = boxes[4 * j + 2], jy2 = boxes[4 * j + 3];
      const T jarea = mul_rn(sub_rn(jx2, jx1), sub_rn(jy2, jy1));
      // std::max(a, b) = a < b ? b : a; std::min(a, b) = b < a ? b : a (the CPU kernel's NaN behaviour)
      const T xx1 = ix1 < jx1 ? jx1 : ix1;
      const T yy1 = iy1 < jy1 ? jy1 : iy1;
      const T xx2 = jx2 < ix2 ? jx2 : ix2;
      const T yy2 = jy2 < iy2 ? jy2 : iy2;
      const T dw = sub_rn(xx2, xx1), dh = sub_rn(yy2, yy1);
      const T wv = T(0) < dw ? dw : T(0);
      const T hv = T(0) < dh ? dh : T(0);
      const T inter = mul_rn(wv, hv);
      const T ovr = div_rn(inter, sub_rn(add_rn(iarea, jarea), inter));
      if (ovr > thr) bits |= 1ULL << b;
    }
    mask[idx] = bits;
  }
}

unsigned blocks_for(int64_t total) {
  const int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

}  // namespace

cudaError_t roi_align_forward(bool is_double, const void* input, const void* rois, void* output, const RoIAlignDims& d,
                              cudaStream_t stream) {
  const int64_t total = d.K * d.C * d.PH * d.PW;
  if (total == 0) return cudaSuccess;
  if (is_double) {
    VITA_DET_LAUNCH(roi_align_forward_kernel<double>, blocks_for(total), kThreads, stream,
                    static_cast<const double*>(input), static_cast<const double*>(rois), static_cast<double*>(output), d);
  } else {
    VITA_DET_LAUNCH(roi_align_forward_kernel<float>, blocks_for(total), kThreads, stream,
                    static_cast<const float*>(input), static_cast<const float*>(rois), static_cast<float*>(output), d);
  }
  return cudaGetLastError();
}

cudaError_t roi_align_backward(bool is_double, const void* grad_output, const void* rois, void* grad_input,
                               const RoIAlignDims& d, cudaStream_t stream) {
  const int64_t total = d.K * d.C * d.PH * d.PW;
  if (total == 0) return cudaSuccess;
  if (is_double) {
    VITA_DET_LAUNCH(roi_align_backward_kernel<double>, blocks_for(total), kThreads, stream,
                    static_cast<const double*>(grad_output), static_cast<const double*>(rois),
                    static_cast<double*>(grad_input), d);
  } else {
    VITA_DET_LAUNCH(roi_align_backward_kernel<float>, blocks_for(total), kThreads, stream,
                    static_cast<const float*>(grad_output), static_cast<const float*>(rois),
                    static_cast<float*>(grad_input), d);
  }
  return cudaGetLastError();
}

cudaError_t nms_mask(bool is_double, const void* boxes, int64_t n, float iou_threshold, unsigned long long* mask,
                     cudaStream_t stream) {
  const int64_t words = (n + 63) / 64;
  const int64_t total = n * words;
  if (total == 0) return cudaSuccess;
  if (is_double) {
    VITA_DET_LAUNCH(nms_mask_kernel<double>, blocks_for(total), kThreads, stream, static_cast<const double*>(boxes), n,
                    words, iou_threshold, mask);
  } else {
    VITA_DET_LAUNCH(nms_mask_kernel<float>, blocks_for(total), kThreads, stream, static_cast<const float*>(boxes), n,
                    words, iou_threshold, mask);
  }
  return cudaGetLastError();
}

}  // namespace vita_det_cuda
