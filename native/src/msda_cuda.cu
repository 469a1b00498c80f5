// CUDA kernels of multi-scale deformable attention (vit-adapter). Plain CUDA, no torch headers; see msda_cuda.h for
// the layouts and msda.cc for the semantics (grid_sample bilinear, zero padding, align_corners=False, on pixel
// coordinates x = loc_x * W - 0.5, y = loc_y * H - 0.5; the corner / floor convention matches at::grid_sampler_2d).
//
// Work decomposition:
//   forward   one thread per output element (n, q, m, d). The D threads of one (n, q, m) are consecutive, so the
//             value-row gathers and the output store are coalesced; the location / weight loads are the same
//             address across those threads (broadcast).
//   backward  one group of G lanes per (n, q, m), G = the power of two >= min(D, 32) (groups never straddle a warp);
//             lane j handles channels j, j + G, ... For every sampling point a lane atomically adds its channels'
//             a * w_c * grad_out into grad_value (float / double accumulator) and forms its partial sums of
//             sum_c w_c <g, v_c> and of the x / y derivatives; the group reduces them with __shfl_xor_sync and
//             lane 0 writes grad_attention_weights and grad_sampling_locations. Every lane of a warp runs the same
//             number of shuffles (points outside the image and threads past the end contribute zeros), as the
//             full-mask shuffles require.
// Accumulation is in float for float / half / bfloat16 and in double for double.

#include "msda_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

// Kernel launch. native/test/msda_cuda_emu_test.cc defines VITA_MSDA_CUDA_EMULATION and its own VITA_MSDA_LAUNCH to
// run these kernels on the CPU (lane-accurate warp emulation) where no GPU is available.
#ifndef VITA_MSDA_CUDA_EMULATION
#define VITA_MSDA_LAUNCH(kernel, blocks, threads, stream, ...) kernel<<<(blocks), (threads), 0, (stream)>>>(__VA_ARGS__)
#endif

namespace vita_msda_cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(typename Acc<T>::type v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Bilinear set-up of one point on an H x W level. False when no corner is inside (also for non-finite coordinates).
template <typename A>
struct Corners {
  A fx, fy;
  int64_t x0, y0;
  bool i00, i01, i10, i11;  // corner (y0|y0+1, x0|x0+1) inside the image
};

template <typename A>
__device__ __forceinline__ bool setup_point(A lx, A ly, int64_t H, int64_t W, Corners<A>& c) {
  const A x = lx * static_cast<A>(W) - A(0.5);
  const A y = ly * static_cast<A>(H) - A(0.5);
  if (!(x >= A(-1) && y >= A(-1) && x < static_cast<A>(W) && y < static_cast<A>(H))) return false;
  const A xf = floor(x), yf = floor(y);
  c.x0 = static_cast<int64_t>(xf);
  c.y0 = static_cast<int64_t>(yf);
  c.fx = x - xf;
  c.fy = y - yf;
  const bool x0in = c.x0 >= 0, x1in = c.x0 + 1 < W, y0in = c.y0 >= 0, y1in = c.y0 + 1 < H;
  c.i00 = y0in && x0in;
  c.i01 = y0in && x1in;
  c.i10 = y1in && x0in;
  c.i11 = y1in && x1in;
  return true;
}

// A point setup_point rejected contributes nothing unless something is not finite; then the grid_sample composition
// gives NaN (see skipped_point in msda.cc, which this mirrors): `poisoned` makes the output row NaN; ga / gx / gy are
// the point's grad_attention_weights / grad_loc_x / grad_loc_y. Only evaluated for rejected points.
template <typename A>
struct Skipped {
  bool poisoned;
  A ga, gx, gy;
};

template <typename A>
__device__ __forceinline__ bool finite_acc(A v) {
  return v - v == A(0);  // false for NaN and +-Inf
}

template <typename A>
__device__ __forceinline__ Skipped<A> skipped_point(A lx, A ly, A a, int64_t H, int64_t W) {
  const A x = lx * static_cast<A>(W) - A(0.5);
  const A y = ly * static_cast<A>(H) - A(0.5);
  const bool xf = finite_acc(x), yf = finite_acc(y), af = finite_acc(a);
  const A nan = A(0) / A(0);
  if (xf && yf) return {!af, A(0), af ? A(0) : nan, af ? A(0) : nan};
  return {true, nan, (yf && af) ? A(0) : nan, (xf && af) ? A(0) : nan};
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    msda_forward_kernel(const T* __restrict__ value, const int64_t* __restrict__ shapes,
                        const int64_t* __restrict__ starts, const T* __restrict__ loc, const T* __restrict__ attn,
                        T* __restrict__ out, Dims d) {
  using A = typename Acc<T>::type;
  const int64_t total = d.N * d.Lq * d.M * d.D;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int64_t ch = idx % d.D;
  const int64_t nqm = idx / d.D;  // ((n * Lq) + q) * M + m
  const int64_t m = nqm % d.M;
  const int64_t n = nqm / (d.M * d.Lq);
  const int64_t MD = d.M * d.D;
  const T* vbase = value + n * d.S * MD + m * d.D + ch;
  const int64_t LP = d.L * d.P;
  const T* lp = loc + nqm * LP * 2;
  const T* ap = attn + nqm * LP;
  A acc = A(0);
  for (int64_t l = 0; l < d.L; ++l) {
    const int64_t H = __ldg(shapes + 2 * l), W = __ldg(shapes + 2 * l + 1);
    const T* vl = vbase + __ldg(starts + l) * MD;
    for (int64_t p = 0; p < d.P; ++p) {
      const int64_t k = l * d.P + p;
      Corners<A> c;
      if (!setup_point<A>(to_acc(lp[2 * k]), to_acc(lp[2 * k + 1]), H, W, c)) {
        if (skipped_point<A>(to_acc(lp[2 * k]), to_acc(lp[2 * k + 1]), to_acc(ap[k]), H, W).poisoned) acc = A(0) / A(0);
        continue;
      }
      const A a = to_acc(ap[k]);
      const A wy0 = (A(1) - c.fy) * a, wy1 = c.fy * a, wx0 = A(1) - c.fx, wx1 = c.fx;
      const int64_t off = (c.y0 * W + c.x0) * MD;  // corner (y0, x0); only read when inside
      if (c.i00) acc += wy0 * wx0 * to_acc(vl[off]);
      if (c.i01) acc += wy0 * wx1 * to_acc(vl[off + MD]);
      if (c.i10) acc += wy1 * wx0 * to_acc(vl[off + W * MD]);
      if (c.i11) acc += wy1 * wx1 * to_acc(vl[off + W * MD + MD]);
    }
  }
  out[idx] = from_acc<T>(acc);  // out[(n, q), m * D + ch] has flat index nqm * D + ch == idx
}

template <typename A, int G>
__device__ __forceinline__ A group_sum(A v) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, G);
  return v;
}

template <typename T, int G>
__global__ void __launch_bounds__(kThreads)
    msda_backward_kernel(const T* __restrict__ value, const int64_t* __restrict__ shapes,
                         const int64_t* __restrict__ starts, const T* __restrict__ loc, const T* __restrict__ attn,
                         const T* __restrict__ grad_out, typename Acc<T>::type* __restrict__ grad_value,
                         T* __restrict__ grad_loc, T* __restrict__ grad_attn, Dims d) {
  using A = typename Acc<T>::type;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t groups = d.N * d.Lq * d.M;
  const int64_t grp = tid / G;
  const int lane = static_cast<int>(tid % G);
  const bool active = grp < groups;
  const int64_t nqm = active ? grp : 0;
  const int64_t m = nqm % d.M;
  const int64_t n = nqm / (d.M * d.Lq);
  const int64_t MD = d.M * d.D;
  const int64_t LP = d.L * d.P;
  const T* vbase = value + n * d.S * MD + m * d.D;
  A* gvbase = grad_value + n * d.S * MD + m * d.D;
  const T* go = grad_out + nqm * d.D;
  for (int64_t l = 0; l < d.L; ++l) {
    const int64_t H = __ldg(shapes + 2 * l), W = __ldg(shapes + 2 * l + 1);
    const int64_t start = __ldg(starts + l);
    const T* vl = vbase + start * MD;
    A* gvl = gvbase + start * MD;
    for (int64_t p = 0; p < d.P; ++p) {
      const int64_t k = nqm * LP + l * d.P + p;
      Corners<A> c;
      const bool valid = active && setup_point<A>(to_acc(loc[2 * k]), to_acc(loc[2 * k + 1]), H, W, c);
      A pa = A(0), px = A(0), py = A(0), a = A(0);
      if (valid) {
        a = to_acc(attn[k]);
        const A wy0 = A(1) - c.fy, wy1 = c.fy, wx0 = A(1) - c.fx, wx1 = c.fx;
        const A w00 = wy0 * wx0, w01 = wy0 * wx1, w10 = wy1 * wx0, w11 = wy1 * wx1;
        const int64_t off00 = (c.y0 * W + c.x0) * MD, off01 = off00 + MD;
        const int64_t off10 = off00 + W * MD, off11 = off10 + MD;
        for (int64_t ch = lane; ch < d.D; ch += G) {
          const A g = to_acc(go[ch]);
          const A v00 = c.i00 ? to_acc(vl[off00 + ch]) : A(0);
          const A v01 = c.i01 ? to_acc(vl[off01 + ch]) : A(0);
          const A v10 = c.i10 ? to_acc(vl[off10 + ch]) : A(0);
          const A v11 = c.i11 ? to_acc(vl[off11 + ch]) : A(0);
          pa += g * (w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11);
          px += g * (wy0 * (v01 - v00) + wy1 * (v11 - v10));
          py += g * (wx0 * (v10 - v00) + wx1 * (v11 - v01));
          const A ag = a * g;
          if (c.i00) atomicAdd(gvl + off00 + ch, w00 * ag);
          if (c.i01) atomicAdd(gvl + off01 + ch, w01 * ag);
          if (c.i10) atomicAdd(gvl + off10 + ch, w10 * ag);
          if (c.i11) atomicAdd(gvl + off11 + ch, w11 * ag);
        }
      }
      pa = group_sum<A, G>(pa);
      px = group_sum<A, G>(px);
      py = group_sum<A, G>(py);
      if (active && lane == 0) {
        if (valid) {
          grad_attn[k] = from_acc<T>(pa);
          grad_loc[2 * k] = from_acc<T>(a * static_cast<A>(W) * px);
          grad_loc[2 * k + 1] = from_acc<T>(a * static_cast<A>(H) * py);
        } else {
          const Skipped<A> sk = skipped_point<A>(to_acc(loc[2 * k]), to_acc(loc[2 * k + 1]), to_acc(attn[k]), H, W);
          grad_attn[k] = from_acc<T>(sk.ga);
          grad_loc[2 * k] = from_acc<T>(sk.gx);
          grad_loc[2 * k + 1] = from_acc<T>(sk.gy);
        }
      }
    }
  }
}

bool grid_for(int64_t threads, unsigned int& blocks) {
  const int64_t b = (threads + kThreads - 1) / kThreads;
  if (b <= 0 || b > 0x7fffffffLL) return false;
  blocks = static_cast<unsigned int>(b);
  return true;
}

template <typename T>
cudaError_t launch_forward(const void* value, const int64_t* shapes, const int64_t* starts, const void* loc,
                           const void* attn, void* out, const Dims& d, cudaStream_t stream) {
  const int64_t total = d.N * d.Lq * d.M * d.D;
  if (total == 0) return cudaSuccess;
  unsigned int blocks = 0;
  if (!grid_for(total, blocks)) return cudaErrorInvalidConfiguration;
  auto* kernel = &msda_forward_kernel<T>;
  VITA_MSDA_LAUNCH(kernel, blocks, kThreads, stream, static_cast<const T*>(value), shapes, starts,
                   static_cast<const T*>(loc), static_cast<const T*>(attn), static_cast<T*>(out), d);
  return cudaGetLastError();
}

template <typename T, int G>
cudaError_t launch_backward_g(const void* value, const int64_t* shapes, const int64_t* starts, const void* loc,
                              const void* attn, const void* grad_out, void* grad_value, void* grad_loc,
                              void* grad_attn, const Dims& d, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const int64_t groups = d.N * d.Lq * d.M;
  unsigned int blocks = 0;
  if (!grid_for(groups * G, blocks)) return cudaErrorInvalidConfiguration;
  auto* kernel = &msda_backward_kernel<T, G>;
  VITA_MSDA_LAUNCH(kernel, blocks, kThreads, stream, static_cast<const T*>(value), shapes, starts,
                   static_cast<const T*>(loc), static_cast<const T*>(attn), static_cast<const T*>(grad_out),
                   static_cast<A*>(grad_value), static_cast<T*>(grad_loc), static_cast<T*>(grad_attn), d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_backward(const void* value, const int64_t* shapes, const int64_t* starts, const void* loc,
                            const void* attn, const void* grad_out, void* grad_value, void* grad_loc, void* grad_attn,
                            const Dims& d, cudaStream_t stream) {
  if (d.N * d.Lq * d.M == 0) return cudaSuccess;
  int g = 1;  // lanes per (n, q, m): the power of two >= min(D, 32)
  while (g < 32 && g < d.D) g *= 2;
#define VITA_MSDA_LAUNCH_G(G_)                                                                                \
  case G_:                                                                                                    \
    return launch_backward_g<T, G_>(value, shapes, starts, loc, attn, grad_out, grad_value, grad_loc, grad_attn, \
                                    d, stream);
  switch (g) {
    VITA_MSDA_LAUNCH_G(1)
    VITA_MSDA_LAUNCH_G(2)
    VITA_MSDA_LAUNCH_G(4)
    VITA_MSDA_LAUNCH_G(8)
    VITA_MSDA_LAUNCH_G(16)
    VITA_MSDA_LAUNCH_G(32)
  }
#undef VITA_MSDA_LAUNCH_G
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t ms_deform_attn_forward(DType dtype, const void* value, const int64_t* spatial_shapes,
                                   const int64_t* level_start_index, const void* sampling_locations,
                                   const void* attention_weights, void* output, const Dims& dims,
                                   cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch_forward<float>(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                   output, dims, stream);
    case DType::kFloat64:
      return launch_forward<double>(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                    output, dims, stream);
    case DType::kFloat16:
      return launch_forward<__half>(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                    output, dims, stream);
    case DType::kBFloat16:
      return launch_forward<__nv_bfloat16>(value, spatial_shapes, level_start_index, sampling_locations,
                                           attention_weights, output, dims, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t ms_deform_attn_backward(DType dtype, const void* value, const int64_t* spatial_shapes,
                                    const int64_t* level_start_index, const void* sampling_locations,
                                    const void* attention_weights, const void* grad_output, void* grad_value_acc,
                                    void* grad_sampling_locations, void* grad_attention_weights, const Dims& dims,
                                    cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch_backward<float>(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                    grad_output, grad_value_acc, grad_sampling_locations, grad_attention_weights,
                                    dims, stream);
    case DType::kFloat64:
      return launch_backward<double>(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                     grad_output, grad_value_acc, grad_sampling_locations, grad_attention_weights,
                                     dims, stream);
    case DType::kFloat16:
      return launch_backward<__half>(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                     grad_output, grad_value_acc, grad_sampling_locations, grad_attention_weights,
                                     dims, stream);
    case DType::kBFloat16:
      return launch_backward<__nv_bfloat16>(value, spatial_shapes, level_start_index, sampling_locations,
                                            attention_weights, grad_output, grad_value_acc, grad_sampling_locations,
                                            grad_attention_weights, dims, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace vita_msda_cuda
