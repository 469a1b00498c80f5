// RoIAlign (mmcv 1.4.2 `roi_align`, average pooling) for vit-adapter's detection heads: CPU kernels (forward and
// backward, multi-threaded), CUDA dispatch (kernels in det_cuda.cu, under VITA_WITH_CUDA), operator registration and
// autograd.
//
//   input   (N, C, H, W)   float32 / float64
//   rois    (K, 5)         (batch index, x1, y1, x2, y2) in image pixels, same dtype and device as input
//   output  (K, C, PH, PW)
//
// Per RoI (aligned: offset 0.5, else 0): start = x1 * scale - offset, end = x2 * scale - offset, roi_w = end - start
// (aligned = false: roi_w = max(roi_w, 1)), bin_w = roi_w / PW, grid_w = sampling_ratio > 0 ? sampling_ratio :
// ceil(roi_w / PW); likewise for y. Sample (iy, ix) of bin (ph, pw):
//   y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h,   x = start_x + pw * bin_w + (ix + 0.5) * bin_w / grid_w
// A sample with y < -1, y > H, x < -1 or x > W contributes nothing; else y, x are clamped below at 0, y_low = floor(y),
// and y_low >= H - 1 gives y_low = y_high = H - 1, y = H - 1 (else y_high = y_low + 1); same for x; bilinear weights
// w1..w4 = hy*hx, hy*lx, ly*hx, ly*lx (ly = y - y_low, hy = 1 - ly). Output = sum of samples / max(grid_h * grid_w, 1).
// All arithmetic in the input dtype, in mmcv's CPU order (so float32 results equal mmcv's CPU kernel bit for bit up to
// the sum order, which is the same here too: per bin, samples in (iy, ix) order, w1 v1 + w2 v2 + w3 v3 + w4 v4).
//
// Backward: grad_input[b, c, corner] += (grad_output[k, c, bin] / count) * w (mmcv rounds (g * w) / count instead:
// one division per bin rather than four per sample; the two differ by at most an ulp or so per term). On the CPU the
// threads own disjoint channel ranges, so the scatter needs no atomics and the result is deterministic.
//
// Operators (namespace vit_adapter):
//   roi_align(input, rois, pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned) -> Tensor
//       differentiable w.r.t. input (Autograd kernel), CompositeExplicitAutograd kernel for no-grad calls
//   roi_align_forward(<same>) -> Tensor                                                   CPU (+ CUDA)
//   roi_align_backward(grad_output, rois, input_size, pooled_height, pooled_width, spatial_scale, sampling_ratio,
//                      aligned) -> Tensor grad_input                                      CPU (+ CUDA)

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "native_util.h"

#ifdef VITA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "det_cuda.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace vita_roi_align {

namespace {

struct Params {
  int64_t N = 0, C = 0, H = 0, W = 0, K = 0, PH = 0, PW = 0;
  double scale = 0;
  int64_t ratio = 0;
  bool aligned = true;
};

using vita::shape_str;

// Validates everything but the input tensor itself (its sizes come in `input_size`).
Params check_common(const char* op, at::IntArrayRef input_size, at::ScalarType dtype, at::Device device,
                    const at::Tensor& rois, int64_t pooled_height, int64_t pooled_width, double spatial_scale,
                    int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(input_size.size() == 4, op, ": input must be 4-D (N, C, H, W), got shape ", shape_str(input_size));
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op, ": input must be float32 or float64, got ", dtype);
  TORCH_CHECK(rois.defined() && rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be (K, 5) rows of (batch index, x1, y1, x2, y2), got shape ",
              rois.defined() ? shape_str(rois.sizes()) : std::string("<undefined>"));
  TORCH_CHECK(rois.scalar_type() == dtype, op, ": rois must have the input's dtype ", dtype, ", got ",
              rois.scalar_type());
  TORCH_CHECK(rois.device() == device, op, ": rois are on ", rois.device(), " but input is on ", device);
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op, ": output size must be positive, got ", pooled_height, " x ",
              pooled_width);
  TORCH_CHECK(std::isfinite(spatial_scale) && spatial_scale > 0, op,
              ": spatial_scale must be a positive finite number, got ", spatial_scale);
  TORCH_CHECK(sampling_ratio >= 0, op, ": sampling_ratio must be >= 0 (0 = adaptive), got ", sampling_ratio);
  for (int64_t d : input_size) TORCH_CHECK(d >= 0, op, ": negative input size ", shape_str(input_size));
  Params p;
  p.N = input_size[0];
  p.C = input_size[1];
  p.H = input_size[2];
  p.W = input_size[3];
  p.K = rois.size(0);
  p.PH = pooled_height;
  p.PW = pooled_width;
  p.scale = spatial_scale;
  p.ratio = sampling_ratio;
  p.aligned = aligned;
  // Batch indices must be integers in [0, N) and coordinates finite (mmcv reads out of bounds / loops forever).
  if (p.K > 0) {
    at::Tensor r = rois.to(at::kCPU, at::kDouble).contiguous();
    const double* rp = r.data_ptr<double>();
    for (int64_t k = 0; k < p.K; ++k) {
      const double b = rp[5 * k];
      TORCH_CHECK(b >= 0 && b < static_cast<double>(p.N) && b == std::floor(b), op, ": roi ", k, " has batch index ",
                  b, "; expected an integer in [0, ", p.N, ")");
      for (int j = 1; j < 5; ++j) {
        TORCH_CHECK(std::isfinite(rp[5 * k + j]), op, ": roi ", k, " has a non-finite coordinate ", rp[5 * k + j]);
      }
    }
  }
  return p;
}

// ------------------------------------------------------------------------------------------------------------
// Sample geometry of one RoI (shared by every channel).

template <typename T>
struct Sample {
  int64_t p1, p2, p3, p4;  // offsets into the H x W plane
  T w1, w2, w3, w4;
};

template <typename T>
struct RoiSamples {
  int64_t batch = 0;
  T count = T(1);
  std::vector<int64_t> bin_start;  // PH*PW + 1 entries into `samples`
  std::vector<Sample<T>> samples;  // valid samples, grouped by bin, in (iy, ix) order
};

template <typename T>
void roi_samples(const T* roi, const Params& p, RoiSamples<T>& out) {
  const T scale = static_cast<T>(p.scale);
  const T offset = p.aligned ? T(0.5) : T(0);
  out.batch = static_cast<int64_t>(roi[0]);
  const T start_w = roi[1] * scale - offset;
  const T start_h = roi[2] * scale - offset;
  const T end_w = roi[3] * scale - offset;
  const T end_h = roi[4] * scale - offset;
  T roi_w = end_w - start_w;
  T roi_h = end_h - start_h;
  if (!p.aligned) {
    roi_w = std::max(roi_w, T(1));
    roi_h = std::max(roi_h, T(1));
  }
  const T bin_h = roi_h / static_cast<T>(p.PH);
  const T bin_w = roi_w / static_cast<T>(p.PW);
  const int64_t grid_h = p.ratio > 0 ? p.ratio : static_cast<int64_t>(std::ceil(roi_h / static_cast<T>(p.PH)));
  const int64_t grid_w = p.ratio > 0 ? p.ratio : static_cast<int64_t>(std::ceil(roi_w / static_cast<T>(p.PW)));
  out.count = static_cast<T>(std::max<int64_t>(grid_h * grid_w, 1));
  const int64_t bins = p.PH * p.PW;
  out.bin_start.assign(static_cast<size_t>(bins + 1), 0);
  out.samples.clear();
  const int64_t H = p.H, W = p.W;
  for (int64_t ph = 0; ph < p.PH; ++ph) {
    for (int64_t pw = 0; pw < p.PW; ++pw) {
      out.bin_start[static_cast<size_t>(ph * p.PW + pw)] = static_cast<int64_t>(out.samples.size());
      if (H <= 0 || W <= 0) continue;
      for (int64_t iy = 0; iy < grid_h; ++iy) {
        const T yy = start_h + static_cast<T>(ph) * bin_h +
                     static_cast<T>(static_cast<float>(iy) + .5f) * bin_h / static_cast<T>(grid_h);
        for (int64_t ix = 0; ix < grid_w; ++ix) {
          const T xx = start_w + static_cast<T>(pw) * bin_w +
                       static_cast<T>(static_cast<float>(ix) + .5f) * bin_w / static_cast<T>(grid_w);
          T y = yy, x = xx;
          if (y < T(-1) || y > static_cast<T>(H) || x < T(-1) || x > static_cast<T>(W)) continue;
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
          const T ly = y - static_cast<T>(y_low), lx = x - static_cast<T>(x_low);
          const T hy = T(1) - ly, hx = T(1) - lx;
          Sample<T> s;
          s.p1 = y_low * W + x_low;
          s.p2 = y_low * W + x_high;
          s.p3 = y_high * W + x_low;
          s.p4 = y_high * W + x_high;
          s.w1 = hy * hx;
          s.w2 = hy * lx;
          s.w3 = ly * hx;
          s.w4 = ly * lx;
          out.samples.push_back(s);
        }
      }
    }
  }
  out.bin_start[static_cast<size_t>(bins)] = static_cast<int64_t>(out.samples.size());
}

// ------------------------------------------------------------------------------------------------------------
// CPU kernels.

template <typename T>
void forward_cpu_impl(const T* input, const T* rois, T* output, const Params& p) {
  const int64_t bins = p.PH * p.PW;
  const int64_t HW = p.H * p.W;
  at::parallel_for(0, p.K, 1, [&](int64_t k0, int64_t k1) {
    RoiSamples<T> rs;
    for (int64_t k = k0; k < k1; ++k) {
      roi_samples<T>(rois + 5 * k, p, rs);
      const Sample<T>* smp = rs.samples.data();
      const int64_t* bs = rs.bin_start.data();
      for (int64_t c = 0; c < p.C; ++c) {
        const T* plane = input + (rs.batch * p.C + c) * HW;
        T* o = output + (k * p.C + c) * bins;
        for (int64_t b = 0; b < bins; ++b) {
          T acc = 0;
          for (int64_t i = bs[b]; i < bs[b + 1]; ++i) {
            const Sample<T>& s = smp[i];
            acc += s.w1 * plane[s.p1] + s.w2 * plane[s.p2] + s.w3 * plane[s.p3] + s.w4 * plane[s.p4];
          }
          o[b] = acc / rs.count;
        }
      }
    }
  });
}

template <typename T>
void backward_cpu_impl(const T* grad_out, const T* rois, T* grad_in, const Params& p) {
  const int64_t bins = p.PH * p.PW;
  const int64_t HW = p.H * p.W;
  // Threads own channel ranges: every (b, c) plane of grad_in is written by one thread only.
  at::parallel_for(0, p.C, 1, [&](int64_t c0, int64_t c1) {
    RoiSamples<T> rs;
    for (int64_t k = 0; k < p.K; ++k) {
      roi_samples<T>(rois + 5 * k, p, rs);
      if (rs.samples.empty()) continue;
      const Sample<T>* smp = rs.samples.data();
      const int64_t* bs = rs.bin_start.data();
      for (int64_t c = c0; c < c1; ++c) {
        T* plane = grad_in + (rs.batch * p.C + c) * HW;
        const T* go = grad_out + (k * p.C + c) * bins;
        for (int64_t b = 0; b < bins; ++b) {
          const T g = go[b] / rs.count;
          for (int64_t i = bs[b]; i < bs[b + 1]; ++i) {
            const Sample<T>& s = smp[i];
            plane[s.p1] += g * s.w1;
            plane[s.p2] += g * s.w2;
            plane[s.p3] += g * s.w3;
            plane[s.p4] += g * s.w4;
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------------------
// Channels-last CPU kernels. With many RoIs the NCHW kernels above stream every channel plane's RoI window once per
// channel; reading the input as (N, H, W, C) instead makes each sample's four corners four contiguous C-vectors, so
// the channel loop vectorises and every cache line fetched is used in full. The input (or, in the backward, the
// gradient) is transposed once per call. Per output / gradient element the operations and their order are exactly
// those of the NCHW kernels (no FMA: the AVX2 variant does not enable the fma feature), so both layouts give
// bit-identical results; `pick_layout` chooses by the amount of sampling work (VITA_ROI_ALIGN_LAYOUT=nchw|nhwc
// forces one, for tests and benchmarks).

#define VITA_RA_FWD_ROW_BODY                                                                   \
  for (int64_t c = 0; c < n; ++c) acc[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c];
#define VITA_RA_BWD_ROW_BODY                                                                   \
  for (int64_t c = 0; c < n; ++c) {                                                            \
    r1[c] += g[c] * w1;                                                                        \
    r2[c] += g[c] * w2;                                                                        \
    r3[c] += g[c] * w3;                                                                        \
    r4[c] += g[c] * w4;                                                                        \
  }

template <typename T>
void fwd_row_default(T* __restrict__ acc, const T* v1, const T* v2, const T* v3, const T* v4, T w1, T w2, T w3, T w4,
                     int64_t n) {
#pragma omp simd
  VITA_RA_FWD_ROW_BODY
}

// The four corner rows coincide for samples clamped at the border: those go through the plain loop (the
// read-modify-writes of one channel stay in order); distinct rows through the __restrict__ / simd one.
template <typename T>
void bwd_row_alias(T* r1, T* r2, T* r3, T* r4, const T* g, T w1, T w2, T w3, T w4, int64_t n) {
  VITA_RA_BWD_ROW_BODY
}
template <typename T>
void bwd_row_default(T* __restrict__ r1, T* __restrict__ r2, T* __restrict__ r3, T* __restrict__ r4,
                     const T* __restrict__ g, T w1, T w2, T w3, T w4, int64_t n) {
#pragma omp simd
  VITA_RA_BWD_ROW_BODY
}

#if defined(__GNUC__) && defined(__x86_64__)
#define VITA_RA_AVX2 1
template <typename T>
__attribute__((target("avx2"))) void fwd_row_avx2(T* __restrict__ acc, const T* v1, const T* v2, const T* v3,
                                                   const T* v4, T w1, T w2, T w3, T w4, int64_t n) {
#pragma omp simd
  VITA_RA_FWD_ROW_BODY
}
template <typename T>
__attribute__((target("avx2"))) void bwd_row_avx2(T* __restrict__ r1, T* __restrict__ r2, T* __restrict__ r3,
                                                   T* __restrict__ r4, const T* __restrict__ g, T w1, T w2, T w3, T w4,
                                                   int64_t n) {
#pragma omp simd
  VITA_RA_BWD_ROW_BODY
}
#else
#define VITA_RA_AVX2 0
#endif

bool ra_use_avx2() {
#if VITA_RA_AVX2
  return vita::cpu_has_avx2();
#else
  return false;
#endif
}

// dst (B, S, R) = transpose of src (B, R, S) per batch entry, in 32 x 32 tiles, tiles spread over the threads
// (libtorch's permute + contiguous of NHWC -> NCHW was several times slower here).
template <typename T>
void transpose_batched(const T* src, T* dst, int64_t B, int64_t R, int64_t S) {
  constexpr int64_t kT = 32;
  const int64_t tr = (R + kT - 1) / kT, ts = (S + kT - 1) / kT;
  at::parallel_for(0, B * tr * ts, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / (tr * ts);
      const int64_t r0 = (t / ts) % tr * kT, s0 = t % ts * kT;
      const int64_t r1 = std::min(R, r0 + kT), s1 = std::min(S, s0 + kT);
      const T* sb = src + b * R * S;
      T* db = dst + b * R * S;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = s0; c < s1; ++c) db[c * R + r] = sb[r * S + c];
    }
  });
}

template <typename T>
void forward_cl_impl(const T* input_cl, const T* rois, T* output, const Params& p) {
  const int64_t bins = p.PH * p.PW;
  const int64_t C = p.C;
  const bool avx2 = ra_use_avx2();
  at::parallel_for(0, p.K, 1, [&](int64_t k0, int64_t k1) {
    RoiSamples<T> rs;
    std::vector<T> acc(static_cast<size_t>(C));
    for (int64_t k = k0; k < k1; ++k) {
      roi_samples<T>(rois + 5 * k, p, rs);
      const Sample<T>* smp = rs.samples.data();
      const int64_t* bs = rs.bin_start.data();
      const T* img = input_cl + rs.batch * p.H * p.W * C;
      T* o = output + k * C * bins;
      for (int64_t b = 0; b < bins; ++b) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t i = bs[b]; i < bs[b + 1]; ++i) {
          const Sample<T>& s = smp[i];
#if VITA_RA_AVX2
          if (avx2) {
            fwd_row_avx2<T>(acc.data(), img + s.p1 * C, img + s.p2 * C, img + s.p3 * C, img + s.p4 * C, s.w1, s.w2,
                            s.w3, s.w4, C);
            continue;
          }
#endif
          fwd_row_default<T>(acc.data(), img + s.p1 * C, img + s.p2 * C, img + s.p3 * C, img + s.p4 * C, s.w1, s.w2,
                             s.w3, s.w4, C);
        }
        for (int64_t c = 0; c < C; ++c) o[c * bins + b] = acc[static_cast<size_t>(c)] / rs.count;
      }
    }
  });
  (void)avx2;
}

// grad_cl: (N, H, W, C), zeroed by the caller. Threads own channel ranges (disjoint slices of every pixel's row).
template <typename T>
void backward_cl_impl(const T* grad_out, const T* rois, T* grad_cl, const Params& p) {
  const int64_t bins = p.PH * p.PW;
  const int64_t C = p.C;
  const bool avx2 = ra_use_avx2();
  const int64_t grain = std::max<int64_t>(8, C / std::max<int64_t>(1, at::get_num_threads()));
  at::parallel_for(0, C, grain, [&](int64_t c0, int64_t c1) {
    RoiSamples<T> rs;
    const int64_t n = c1 - c0;
    std::vector<T> g(static_cast<size_t>(n));
    for (int64_t k = 0; k < p.K; ++k) {
      roi_samples<T>(rois + 5 * k, p, rs);
      if (rs.samples.empty()) continue;
      const Sample<T>* smp = rs.samples.data();
      const int64_t* bs = rs.bin_start.data();
      T* img = grad_cl + rs.batch * p.H * p.W * C + c0;
      const T* go = grad_out + (k * C + c0) * bins;
      for (int64_t b = 0; b < bins; ++b) {
        if (bs[b] == bs[b + 1]) continue;
        for (int64_t c = 0; c < n; ++c) g[static_cast<size_t>(c)] = go[c * bins + b] / rs.count;
        for (int64_t i = bs[b]; i < bs[b + 1]; ++i) {
          const Sample<T>& s = smp[i];
          if (s.p1 == s.p2 || s.p1 == s.p3 || s.p2 == s.p4 || s.p3 == s.p4) {
            bwd_row_alias<T>(img + s.p1 * C, img + s.p2 * C, img + s.p3 * C, img + s.p4 * C, g.data(), s.w1, s.w2, s.w3,
                             s.w4, n);
            continue;
          }
#if VITA_RA_AVX2
          if (avx2) {
            bwd_row_avx2<T>(img + s.p1 * C, img + s.p2 * C, img + s.p3 * C, img + s.p4 * C, g.data(), s.w1, s.w2, s.w3,
                            s.w4, n);
            continue;
          }
#endif
          bwd_row_default<T>(img + s.p1 * C, img + s.p2 * C, img + s.p3 * C, img + s.p4 * C, g.data(), s.w1, s.w2,
                             s.w3, s.w4, n);
        }
      }
    }
  });
  (void)avx2;
}

// Channels-last when the sampling reads (at least 4 corners per output bin and channel) clearly outweigh the
// transposition (a read and a write of the whole input).
bool pick_channels_last(const Params& p) {
  const char* env = std::getenv("VITA_ROI_ALIGN_LAYOUT");
  if (env && std::strcmp(env, "nchw") == 0) return false;
  if (env && std::strcmp(env, "nhwc") == 0) return true;
  if (p.C < 8) return false;
  return p.K * p.PH * p.PW * 4 >= 2 * p.N * p.H * p.W;
}

at::Tensor roi_align_forward_cpu(const at::Tensor& input_in, const at::Tensor& rois_in, int64_t pooled_height,
                                 int64_t pooled_width, double spatial_scale, int64_t sampling_ratio, bool aligned) {
  const char* op = "vit_adapter::roi_align_forward";
  TORCH_CHECK(input_in.defined(), op, ": input is undefined");
  const Params p = check_common(op, input_in.sizes(), input_in.scalar_type(), input_in.device(), rois_in,
                                pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned);
  at::Tensor out = at::empty({p.K, p.C, p.PH, p.PW}, input_in.options());
  if (p.K == 0 || p.C == 0) return out;
  at::Tensor input = input_in.contiguous();
  at::Tensor rois = rois_in.contiguous();
  const bool cl = pick_channels_last(p);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu", [&] {
    if (cl) {
      at::Tensor input_cl = at::empty({p.N, p.H, p.W, p.C}, input.options());
      transpose_batched<scalar_t>(input.data_ptr<scalar_t>(), input_cl.data_ptr<scalar_t>(), p.N, p.C, p.H * p.W);
      forward_cl_impl<scalar_t>(input_cl.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), p);
    } else {
      forward_cpu_impl<scalar_t>(input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), p);
    }
  });
  return out;
}

void check_grad_output(const char* op, const at::Tensor& grad, const Params& p, at::ScalarType dtype,
                       at::Device device) {
  TORCH_CHECK(grad.defined() && grad.dim() == 4 && grad.size(0) == p.K && grad.size(1) == p.C &&
                  grad.size(2) == p.PH && grad.size(3) == p.PW,
              op, ": grad_output must be (K, C, PH, PW) = (", p.K, ", ", p.C, ", ", p.PH, ", ", p.PW, "), got shape ",
              grad.defined() ? shape_str(grad.sizes()) : std::string("<undefined>"));
  TORCH_CHECK(grad.device() == device, op, ": grad_output is on ", grad.device(), " but rois on ", device);
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), op, ": grad_output must be floating point, got ",
              grad.scalar_type());
  (void)dtype;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad_in, const at::Tensor& rois_in, at::IntArrayRef input_size,
                                  int64_t pooled_height, int64_t pooled_width, double spatial_scale,
                                  int64_t sampling_ratio, bool aligned) {
  const char* op = "vit_adapter::roi_align_backward";
  TORCH_CHECK(rois_in.defined(), op, ": rois is undefined");
  const at::ScalarType dt = rois_in.scalar_type();
  const Params p = check_common(op, input_size, dt, rois_in.device(), rois_in, pooled_height, pooled_width,
                                spatial_scale, sampling_ratio, aligned);
  check_grad_output(op, grad_in, p, dt, rois_in.device());
  if (p.K == 0 || p.C == 0 || p.H == 0 || p.W == 0) return at::zeros(input_size, rois_in.options());
  at::Tensor grad = grad_in.to(dt).contiguous();
  at::Tensor rois = rois_in.contiguous();
  if (pick_channels_last(p)) {
    at::Tensor grad_cl = at::zeros({p.N, p.H, p.W, p.C}, rois_in.options());
    at::Tensor grad_input = at::empty(input_size, rois_in.options());
    AT_DISPATCH_FLOATING_TYPES(dt, "roi_align_backward_cpu", [&] {
      backward_cl_impl<scalar_t>(grad.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), grad_cl.data_ptr<scalar_t>(), p);
      transpose_batched<scalar_t>(grad_cl.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(), p.N, p.H * p.W, p.C);
    });
    return grad_input;
  }
  at::Tensor grad_input = at::zeros(input_size, rois_in.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "roi_align_backward_cpu", [&] {
    backward_cpu_impl<scalar_t>(grad.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(),
                                p);
  });
  return grad_input;
}

// ------------------------------------------------------------------------------------------------------------
// CUDA (kernels in det_cuda.cu).

#ifdef VITA_WITH_CUDA
vita_det_cuda::RoIAlignDims cuda_dims(const Params& p) {
  vita_det_cuda::RoIAlignDims d;
  d.N = p.N;
  d.C = p.C;
  d.H = p.H;
  d.W = p.W;
  d.K = p.K;
  d.PH = p.PH;
  d.PW = p.PW;
  d.spatial_scale = p.scale;
  d.sampling_ratio = p.ratio;
  d.aligned = p.aligned;
  return d;
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input_in, const at::Tensor& rois_in, int64_t pooled_height,
                                  int64_t pooled_width, double spatial_scale, int64_t sampling_ratio, bool aligned) {
  const char* op = "vit_adapter::roi_align_forward";
  TORCH_CHECK(input_in.defined(), op, ": input is undefined");
  const Params p = check_common(op, input_in.sizes(), input_in.scalar_type(), input_in.device(), rois_in,
                                pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned);
  const c10::cuda::CUDAGuard guard(input_in.device());
  at::Tensor out = at::empty({p.K, p.C, p.PH, p.PW}, input_in.options());
  if (p.K == 0 || p.C == 0) return out;
  at::Tensor input = input_in.contiguous();
  at::Tensor rois = rois_in.contiguous();
  const cudaError_t err = vita_det_cuda::roi_align_forward(input.scalar_type() == at::kDouble, input.data_ptr(),
                                                           rois.data_ptr(), out.data_ptr(), cuda_dims(p),
                                                           at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad_in, const at::Tensor& rois_in, at::IntArrayRef input_size,
                                   int64_t pooled_height, int64_t pooled_width, double spatial_scale,
                                   int64_t sampling_ratio, bool aligned) {
  const char* op = "vit_adapter::roi_align_backward";
  TORCH_CHECK(rois_in.defined(), op, ": rois is undefined");
  const at::ScalarType dt = rois_in.scalar_type();
  const Params p = check_common(op, input_size, dt, rois_in.device(), rois_in, pooled_height, pooled_width,
                                spatial_scale, sampling_ratio, aligned);
  check_grad_output(op, grad_in, p, dt, rois_in.device());
  const c10::cuda::CUDAGuard guard(rois_in.device());
  at::Tensor grad_input = at::zeros(input_size, rois_in.options());  // accumulated with atomicAdd
  if (p.K == 0 || p.C == 0 || p.H == 0 || p.W == 0) return grad_input;
  at::Tensor grad = grad_in.to(dt).contiguous();
  at::Tensor rois = rois_in.contiguous();
  const cudaError_t err = vita_det_cuda::roi_align_backward(dt == at::kDouble, grad.data_ptr(), rois.data_ptr(),
                                                            grad_input.data_ptr(), cuda_dims(p),
                                                            at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
  return grad_input;
}
#endif  // VITA_WITH_CUDA

// ------------------------------------------------------------------------------------------------------------
// Dispatcher entry points, autograd.

using FwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t, double, int64_t, bool);
using BwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, int64_t, int64_t, double, int64_t,
                          bool);

const c10::TypedOperatorHandle<FwdSig>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::roi_align_forward", "").typed<FwdSig>();
  return op;
}

const c10::TypedOperatorHandle<BwdSig>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::roi_align_backward", "").typed<BwdSig>();
  return op;
}

class RoIAlignFunction : public torch::autograd::Function<RoIAlignFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& rois,
                            int64_t pooled_height, int64_t pooled_width, double spatial_scale, int64_t sampling_ratio,
                            bool aligned) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = forward_op().call(input, rois, pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned);
    ctx->save_for_backward({rois});
    ctx->saved_data["input_size"] = input.sizes().vec();
    ctx->saved_data["pooled_height"] = pooled_height;
    ctx->saved_data["pooled_width"] = pooled_width;
    ctx->saved_data["spatial_scale"] = spatial_scale;
    ctx->saved_data["sampling_ratio"] = sampling_ratio;
    ctx->saved_data["aligned"] = aligned;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = grad_outputs[0];
    const at::Tensor none;
    if (!grad.defined()) return {none, none, none, none, none, none, none};
    const std::vector<int64_t> size = ctx->saved_data["input_size"].toIntVector();
    at::Tensor gi = backward_op().call(grad, saved[0], size, ctx->saved_data["pooled_height"].toInt(),
                                       ctx->saved_data["pooled_width"].toInt(),
                                       ctx->saved_data["spatial_scale"].toDouble(),
                                       ctx->saved_data["sampling_ratio"].toInt(), ctx->saved_data["aligned"].toBool());
    return {gi, none, none, none, none, none, none};
  }
};

at::Tensor roi_align_autograd(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height,
                              int64_t pooled_width, double spatial_scale, int64_t sampling_ratio, bool aligned) {
  return RoIAlignFunction::apply(input, rois, pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned);
}

at::Tensor roi_align_noautograd(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height,
                                int64_t pooled_width, double spatial_scale, int64_t sampling_ratio, bool aligned) {
  return forward_op().call(input, rois, pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned);
}

}  // namespace

}  // namespace vita_roi_align

TORCH_LIBRARY_FRAGMENT(vit_adapter, m) {
  m.def(
      "roi_align(Tensor input, Tensor rois, int pooled_height, int pooled_width, float spatial_scale, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_forward(Tensor input, Tensor rois, int pooled_height, int pooled_width, float spatial_scale, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad_output, Tensor rois, int[] input_size, int pooled_height, int pooled_width, "
      "float spatial_scale, int sampling_ratio, bool aligned) -> Tensor");
}

TORCH_LIBRARY_IMPL(vit_adapter, CPU, m) {
  m.impl("roi_align_forward", &vita_roi_align::roi_align_forward_cpu);
  m.impl("roi_align_backward", &vita_roi_align::roi_align_backward_cpu);
}

#ifdef VITA_WITH_CUDA
TORCH_LIBRARY_IMPL(vit_adapter, CUDA, m) {
  m.impl("roi_align_forward", &vita_roi_align::roi_align_forward_cuda);
  m.impl("roi_align_backward", &vita_roi_align::roi_align_backward_cuda);
}
#endif

TORCH_LIBRARY_IMPL(vit_adapter, CompositeExplicitAutograd, m) {
  m.impl("roi_align", &vita_roi_align::roi_align_noautograd);
}

TORCH_LIBRARY_IMPL(vit_adapter, Autograd, m) {
  m.impl("roi_align", &vita_roi_align::roi_align_autograd);
}
