// CUDA launchers of the detection kernels (vit-adapter): RoIAlign forward / backward and the NMS IoU mask.
// Implemented in det_cuda.cu, compiled by plain nvcc (no torch headers); roi_align.cc and nms.cc validate the inputs
// and call these under VITA_WITH_CUDA. All pointers are device pointers to contiguous data; `is_double` selects
// float64 (else float32).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace vita_det_cuda {

struct RoIAlignDims {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0;                       // rois
  int64_t PH = 0, PW = 0;              // output bins
  double spatial_scale = 1;
  int64_t sampling_ratio = 0;          // 0 = adaptive
  bool aligned = true;
};

// input (N, C, H, W), rois (K, 5) (batch index validated by the caller), output (K, C, PH, PW): fully written.
cudaError_t roi_align_forward(bool is_double, const void* input, const void* rois, void* output, const RoIAlignDims& d,
                              cudaStream_t stream);

// grad_output (K, C, PH, PW); grad_input (N, C, H, W) ZERO-INITIALISED by the caller, accumulated with atomicAdd.
cudaError_t roi_align_backward(bool is_double, const void* grad_output, const void* rois, void* grad_input,
                               const RoIAlignDims& d, cudaStream_t stream);

// boxes (n, 4) already sorted by descending score; mask (n, ceil(n / 64)) fully written: bit (j % 64) of word j / 64
// of row i is set when j > i and IoU(i, j) > iou_threshold (IoU in the boxes' dtype, mmcv's operation order).
cudaError_t nms_mask(bool is_double, const void* boxes, int64_t n, float iou_threshold, unsigned long long* mask,
                     cudaStream_t stream);

// The greedy scan over a (host copy of the) mask from nms_mask: `order[a]` is the original index of sorted box a.
// Returns the kept original indices in sorted (descending score) order.
inline std::vector<int64_t> nms_scan(const unsigned long long* mask, int64_t n, const int64_t* order) {
  const int64_t words = (n + 63) / 64;
  std::vector<unsigned long long> removed(static_cast<size_t>(words), 0ULL);
  std::vector<int64_t> keep;
  for (int64_t a = 0; a < n; ++a) {
    if ((removed[static_cast<size_t>(a / 64)] >> (a % 64)) & 1ULL) continue;
    keep.push_back(order[a]);
    const unsigned long long* row = mask + a * words;
    for (int64_t w = a / 64; w < words; ++w) removed[static_cast<size_t>(w)] |= row[w];
  }
  return keep;
}

}  // namespace vita_det_cuda
