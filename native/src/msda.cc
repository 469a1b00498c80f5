// Multi-scale deformable attention (MSDA) for vit-adapter: CPU kernels, operator registration, autograd.
//
// Semantics (the `ms_deform_attn` core of ViT-Adapter / Deformable DETR, i.e. the pure-PyTorch composition
// built on grid_sample(mode=bilinear, padding_mode=zeros, align_corners=False)):
//
//   value               (N, S, M, D)        S = sum_l H_l * W_l, levels stored one after another (row-major H, W)
//   spatial_shapes      (L, 2)  int64       (H_l, W_l)
//   level_start_index   (L,)    int64       start of level l along S (= sum_{k<l} H_k W_k)
//   sampling_locations  (N, Lq, M, L, P, 2) (x, y) normalised to [0, 1]; points may lie outside
//   attention_weights   (N, Lq, M, L, P)
//   output              (N, Lq, M * D)
//
//   out[n, q, m*D + d] = sum_{l,p} attn[n,q,m,l,p] * bilinear(value[n, level l, m, d]; x = loc_x W_l - 0.5,
//                                                                                      y = loc_y H_l - 0.5)
//   where each of the four corners contributes only when it lies inside the H_l x W_l image (zero padding).
//   A point with x in [-1, W) and y in [-1, H) touches at least one pixel; the corner convention (x0 = floor(x),
//   gradients taken with the floor on the left) is the one of at::grid_sampler_2d, so the gradients match it too,
//   including at exact pixel centres and on the x = -1 / y = -1 lines. Non-finite sampling locations (and
//   non-finite attention weights of points outside the image) propagate NaN exactly as the composition does (see
//   skipped_point below).
//
// Backward: with g = grad_out[n, q, m, :], v_c the value row of corner c (zero when outside), w_c its bilinear
// weight, a the attention weight, fx / fy the fractional parts of x / y:
//   grad_value[corner c]      += a * w_c * g
//   grad_attention_weights     = < g, sum_c w_c v_c >
//   grad_loc_x                 = a * W * < g, (1-fy)(v_01 - v_00) + fy (v_11 - v_10) >
//   grad_loc_y                 = a * H * < g, (1-fx)(v_10 - v_00) + fx (v_11 - v_01) >
// i.e. per sampling point four D-long axpys and three D-long reductions, nothing bigger.
//
// CPU implementation:
//  * No (N*M) x D x Lq x P intermediate: each (n, q, m) accumulates its D outputs in registers.
//  * Accumulation in float for float / bfloat16 / half inputs, in double for double inputs.
//  * Vectorised over D (contiguous in value, output and grad_output). float / double with D a multiple of 16 / 8
//    (ViT-Adapter: D = 32 or 64) use explicit SIMD kernels written with GCC/Clang vector extensions (64-byte
//    vectors, accumulators in registers, a shuffle tree for the three reductions per point). Other cases
//    (bfloat16 / half, odd D, compilers without vector extensions) use generic `#pragma omp simd` loops.
//    The kernels are compiled three times (baseline x86-64, AVX2+FMA, AVX-512) through GCC/Clang target
//    attributes and picked at run time from the CPU's features, so the addon needs no -march flag.
//  * Forward: at::parallel_for over the N*Lq (n, q) rows; every output element is written exactly once.
//  * Backward: grad_value is scattered, so tasks own disjoint parts of it: a task is (n, m, b) where b is one of B
//    blocks of queries. Task (n, m, b) writes only grad_value buffer b at [n, :, m, :] (it zeroes that slice
//    first), and grad_locations / grad_weights of its own (n, q in block b, m). B = 1 (no extra memory) whenever
//    the N*M tasks balance over the threads (N=1, M=6 on 2 threads: 3 tasks each); otherwise the smallest B that
//    balances them, with B-1 extra float buffers summed at the end. Deterministic (no atomics, fixed order).
//    Measured (ViT-Adapter-T, float32, AVX-512): with 2 threads B = 1 takes 0.82-0.89 ms on the injector backward
//    vs 0.98-1.45 ms with per-thread buffers (B = 2, 4 MB grad_value copy to zero and reduce), 1.28-1.35 vs
//    1.30-1.43 ms on the extractor; with 1 thread an extra block costs +0.3..0.5 ms (injector) and +0.1 ms
//    (extractor). So extra buffers are used only when they buy load balance.
//  * Debug / benchmark knobs (read once): VITA_MSDA_ISA=default|avx2|avx512 (cap the code path),
//    VITA_MSDA_NO_VEC=1 (generic kernels only), VITA_MSDA_QUERY_BLOCKS=B (force the backward split).
//
// Operators (namespace vit_adapter):
//   ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> Tensor
//       differentiable (Autograd kernel: torch::autograd::Function; CompositeExplicitAutograd kernel for
//       no-autograd / inference-mode calls)
//   ms_deform_attn_forward(<same>) -> Tensor                                    CPU (+ CUDA with VITA_WITH_CUDA)
//   ms_deform_attn_backward(<same>, grad_output) -> (grad_value, grad_sampling_locations, grad_attention_weights)
//                                                                                CPU (+ CUDA with VITA_WITH_CUDA)
// C++ callers in other translation units may declare (namespace vita_msda) `at::Tensor ms_deform_attn(...)`,
// `std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward(...)` and `const char* cpu_isa_name()`;
// the first two go through the dispatcher.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "native_util.h"

#ifdef VITA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "msda_cuda.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(VITA_MSDA_NO_MULTIVERSION)
#define VITA_MSDA_X86 1
#define VITA_MSDA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define VITA_MSDA_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#else
#define VITA_MSDA_X86 0
#endif

#if defined(__GNUC__)
#define VITA_MSDA_HAVE_VEC 1
#if !defined(__clang__)
// 64-byte vectors in the baseline / AVX2 variants: every function taking or returning them is always_inline, so the
// "AVX512F vector return without AVX512F enabled changes the ABI" note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#else
#define VITA_MSDA_HAVE_VEC 0
#endif

#if defined(__clang__)
#define VITA_MSDA_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define VITA_MSDA_UNROLL _Pragma("GCC unroll 16")
#else
#define VITA_MSDA_UNROLL
#endif

#if defined(__GNUC__)
#define VITA_MSDA_INLINE inline __attribute__((always_inline))
#define VITA_MSDA_RESTRICT __restrict__
#else
#define VITA_MSDA_INLINE inline
#define VITA_MSDA_RESTRICT
#endif

namespace vita_msda {

namespace {

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

struct Dims {
  int64_t N, S, M, D, Lq, L, P;
};

struct LevelInfo {
  int64_t H, W, start;
};

template <typename scalar_t>
struct Args {
  const scalar_t* value = nullptr;
  const LevelInfo* levels = nullptr;
  const scalar_t* loc = nullptr;
  const scalar_t* attn = nullptr;
  const scalar_t* grad_out = nullptr;
  scalar_t* out = nullptr;
  scalar_t* grad_loc = nullptr;
  scalar_t* grad_attn = nullptr;
  Dims g{};
};

// ------------------------------------------------------------------------------------------------------------
// Inner loops over D. DC > 0: compile-time length DC (fully unrolled, accumulators in registers); DC == 0: `dn`.

template <int DC, typename acc_t, typename scalar_t>
VITA_MSDA_INLINE void axpy(acc_t* VITA_MSDA_RESTRICT acc, acc_t w, const scalar_t* VITA_MSDA_RESTRICT v, int dn) {
  if constexpr (DC > 0) {
#pragma omp simd
    for (int d = 0; d < DC; ++d) acc[d] += w * static_cast<acc_t>(v[d]);
  } else {
#pragma omp simd
    for (int d = 0; d < dn; ++d) acc[d] += w * static_cast<acc_t>(v[d]);
  }
}

// Returns <g, v> and does gv += w * g.
template <int DC, typename acc_t, typename scalar_t>
VITA_MSDA_INLINE acc_t dot_axpy(acc_t* VITA_MSDA_RESTRICT gv, const scalar_t* VITA_MSDA_RESTRICT v,
                                const acc_t* VITA_MSDA_RESTRICT g, acc_t w, int dn) {
  acc_t s = 0;
  if constexpr (DC > 0) {
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < DC; ++d) {
      s += g[d] * static_cast<acc_t>(v[d]);
      gv[d] += w * g[d];
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < dn; ++d) {
      s += g[d] * static_cast<acc_t>(v[d]);
      gv[d] += w * g[d];
    }
  }
  return s;
}

template <typename T>
void add_into(T* VITA_MSDA_RESTRICT dst, const T* VITA_MSDA_RESTRICT src, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// Bilinear set-up of one sampling point. Returns false when no corner lies inside the image (also for NaN).
template <typename acc_t>
struct Bilinear {
  acc_t fx, fy;  // fractional parts
  int64_t x0, y0;
  bool x0_in, x1_in, y0_in, y1_in;
};

template <typename acc_t>
VITA_MSDA_INLINE bool bilinear_setup(acc_t lx, acc_t ly, int64_t H, int64_t W, Bilinear<acc_t>& b) {
  const acc_t x = lx * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t y = ly * static_cast<acc_t>(H) - acc_t(0.5);
  if (!(x >= acc_t(-1) && y >= acc_t(-1) && x < static_cast<acc_t>(W) && y < static_cast<acc_t>(H))) return false;
  const acc_t xf = std::floor(x), yf = std::floor(y);
  b.x0 = static_cast<int64_t>(xf);
  b.y0 = static_cast<int64_t>(yf);
  b.fx = x - xf;
  b.fy = y - yf;
  b.x0_in = b.x0 >= 0;
  b.y0_in = b.y0 >= 0;
  b.x1_in = b.x0 + 1 < W;
  b.y1_in = b.y0 + 1 < H;
  return true;
}

// Points that touch no pixel (bilinear_setup returned false) normally contribute nothing. The composition
// (grid_sample, libtorch 1.13 CPU kernel, zero padding) differs when something is not finite; measured there:
//  * a non-finite coordinate (NaN, +-Inf, also x = loc_x * W - 0.5 overflowing) makes the bilinear weights NaN, so
//    the sample is NaN in every channel, the output row (n, q, m, :) is NaN whatever the attention weight, and in
//    the backward: grad_attention_weights = NaN, grad_loc_x = NaN when y (the other coordinate) or the attention
//    weight is not finite, else 0 (likewise grad_loc_y with x); nothing reaches grad_value (all corners masked);
//  * finite coordinates outside the image with a non-finite attention weight: the sample is 0 but 0 * a is NaN,
//    so the output row is NaN; grad_attention_weights = 0, grad_loc = (NaN, NaN), grad_value untouched.
// These helpers are evaluated only on that rare branch, so the hot loop is unchanged.
template <typename acc_t>
VITA_MSDA_INLINE bool finite_acc(acc_t v) {
  return v - v == acc_t(0);  // false for NaN and +-Inf
}

template <typename acc_t>
struct SkippedGrads {
  bool poisoned;  // the output row becomes NaN
  acc_t ga, gx, gy;
};

template <typename acc_t>
inline SkippedGrads<acc_t> skipped_point(acc_t lx, acc_t ly, acc_t a, int64_t H, int64_t W) {
  const acc_t x = lx * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t y = ly * static_cast<acc_t>(H) - acc_t(0.5);
  const bool xf = finite_acc(x), yf = finite_acc(y), af = finite_acc(a);
  const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
  if (xf && yf) return {!af, acc_t(0), af ? acc_t(0) : nan, af ? acc_t(0) : nan};
  return {true, nan, (yf && af) ? acc_t(0) : nan, (xf && af) ? acc_t(0) : nan};
}

// ------------------------------------------------------------------------------------------------------------
// Forward: rows [nq_begin, nq_end) of the flattened (n, q) range. D is processed in tiles of TW channels.

template <typename scalar_t, int DC>
VITA_MSDA_INLINE void forward_rows(const Args<scalar_t>& A, int64_t nq_begin, int64_t nq_end) {
  using acc_t = typename AccType<scalar_t>::type;
  constexpr int TW = DC > 0 ? DC : 64;
  const Dims g = A.g;
  const scalar_t* VITA_MSDA_RESTRICT value = A.value;
  const scalar_t* VITA_MSDA_RESTRICT loc = A.loc;
  const scalar_t* VITA_MSDA_RESTRICT attn = A.attn;
  scalar_t* VITA_MSDA_RESTRICT out = A.out;
  const LevelInfo* levels = A.levels;
  const int64_t MD = g.M * g.D;
  const int64_t LP = g.L * g.P;
  for (int64_t nq = nq_begin; nq < nq_end; ++nq) {
    const int64_t n = nq / g.Lq;
    const scalar_t* vn = value + n * g.S * MD;
    for (int64_t m = 0; m < g.M; ++m) {
      const int64_t pt0 = (nq * g.M + m) * LP;
      scalar_t* o = out + nq * MD + m * g.D;
      for (int64_t d0 = 0; d0 < g.D; d0 += TW) {
        const int dn = DC > 0 ? DC : static_cast<int>(std::min<int64_t>(TW, g.D - d0));
        const scalar_t* vnm = vn + m * g.D + d0;
        acc_t acc[TW];
        for (int d = 0; d < TW; ++d) acc[d] = acc_t(0);
        for (int64_t l = 0; l < g.L; ++l) {
          const int64_t H = levels[l].H, W = levels[l].W;
          const scalar_t* vl = vnm + levels[l].start * MD;
          const int64_t k0 = pt0 + l * g.P;
          for (int64_t p = 0; p < g.P; ++p) {
            const int64_t k = k0 + p;
            Bilinear<acc_t> b;
            if (!bilinear_setup<acc_t>(static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W, b)) {
              if (skipped_point<acc_t>(static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]),
                                       static_cast<acc_t>(attn[k]), H, W).poisoned) {
                for (int d = 0; d < TW; ++d) acc[d] = std::numeric_limits<acc_t>::quiet_NaN();
              }
              continue;
            }
            const acc_t a = static_cast<acc_t>(attn[k]);
            const acc_t ay0 = a * (acc_t(1) - b.fy), ay1 = a * b.fy;
            const acc_t gx0 = acc_t(1) - b.fx, gx1 = b.fx;
            // Offsets of the rows of corners (y0, x0) and (y0 + 1, x0); only dereferenced when inside.
            const int64_t o0 = (b.y0 * W + b.x0) * MD, o1 = o0 + W * MD;
            if (b.y0_in) {
              if (b.x0_in) axpy<DC>(acc, ay0 * gx0, vl + o0, dn);
              if (b.x1_in) axpy<DC>(acc, ay0 * gx1, vl + o0 + MD, dn);
            }
            if (b.y1_in) {
              if (b.x0_in) axpy<DC>(acc, ay1 * gx0, vl + o1, dn);
              if (b.x1_in) axpy<DC>(acc, ay1 * gx1, vl + o1 + MD, dn);
            }
          }
        }
        for (int d = 0; d < dn; ++d) o[d0 + d] = static_cast<scalar_t>(acc[d]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------------------
// Backward for one task: batch n, head m, queries [q0, q1). gv is the grad_value buffer (same layout as value)
// the task owns at [n, :, m, :]; it is zeroed here. gbuf: D scratch accumulators.

template <typename scalar_t, int DC>
VITA_MSDA_INLINE void backward_task(const Args<scalar_t>& A, typename AccType<scalar_t>::type* gv_base, int64_t n,
                                    int64_t m, int64_t q0, int64_t q1,
                                    typename AccType<scalar_t>::type* VITA_MSDA_RESTRICT gbuf) {
  using acc_t = typename AccType<scalar_t>::type;
  const Dims g = A.g;
  const int dn = DC > 0 ? DC : static_cast<int>(g.D);
  const int64_t MD = g.M * g.D;
  const int64_t LP = g.L * g.P;
  const scalar_t* VITA_MSDA_RESTRICT loc = A.loc;
  const scalar_t* VITA_MSDA_RESTRICT attn = A.attn;
  const scalar_t* VITA_MSDA_RESTRICT gout = A.grad_out;
  scalar_t* VITA_MSDA_RESTRICT gloc = A.grad_loc;
  scalar_t* VITA_MSDA_RESTRICT gattn = A.grad_attn;
  const LevelInfo* levels = A.levels;
  const scalar_t* vnm = A.value + n * g.S * MD + m * g.D;
  acc_t* gvnm = gv_base + n * g.S * MD + m * g.D;
  for (int64_t s = 0; s < g.S; ++s) std::memset(gvnm + s * MD, 0, sizeof(acc_t) * static_cast<size_t>(g.D));

  for (int64_t q = q0; q < q1; ++q) {
    const int64_t nq = n * g.Lq + q;
    const scalar_t* go = gout + nq * MD + m * g.D;
    for (int d = 0; d < dn; ++d) gbuf[d] = static_cast<acc_t>(go[d]);
    const int64_t pt0 = (nq * g.M + m) * LP;
    for (int64_t l = 0; l < g.L; ++l) {
      const int64_t H = levels[l].H, W = levels[l].W;
      const scalar_t* vl = vnm + levels[l].start * MD;
      acc_t* gvl = gvnm + levels[l].start * MD;
      const int64_t k0 = pt0 + l * g.P;
      for (int64_t p = 0; p < g.P; ++p) {
        const int64_t k = k0 + p;
        Bilinear<acc_t> b;
        if (!bilinear_setup<acc_t>(static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W, b)) {
          const SkippedGrads<acc_t> sk = skipped_point<acc_t>(static_cast<acc_t>(loc[2 * k]),
                                                              static_cast<acc_t>(loc[2 * k + 1]),
                                                              static_cast<acc_t>(attn[k]), H, W);
          gattn[k] = static_cast<scalar_t>(sk.ga);
          gloc[2 * k] = static_cast<scalar_t>(sk.gx);
          gloc[2 * k + 1] = static_cast<scalar_t>(sk.gy);
          continue;
        }
        const acc_t a = static_cast<acc_t>(attn[k]);
        const acc_t wy0 = acc_t(1) - b.fy, wy1 = b.fy, wx0 = acc_t(1) - b.fx, wx1 = b.fx;
        const int64_t off = (b.y0 * W + b.x0) * MD;
        acc_t d00 = 0, d01 = 0, d10 = 0, d11 = 0;
        if (b.y0_in) {
          if (b.x0_in) d00 = dot_axpy<DC>(gvl + off, vl + off, gbuf, a * wy0 * wx0, dn);
          if (b.x1_in) d01 = dot_axpy<DC>(gvl + off + MD, vl + off + MD, gbuf, a * wy0 * wx1, dn);
        }
        if (b.y1_in) {
          const int64_t off1 = off + W * MD;
          if (b.x0_in) d10 = dot_axpy<DC>(gvl + off1, vl + off1, gbuf, a * wy1 * wx0, dn);
          if (b.x1_in) d11 = dot_axpy<DC>(gvl + off1 + MD, vl + off1 + MD, gbuf, a * wy1 * wx1, dn);
        }
        gattn[k] = static_cast<scalar_t>(wy0 * (wx0 * d00 + wx1 * d01) + wy1 * (wx0 * d10 + wx1 * d11));
        gloc[2 * k] = static_cast<scalar_t>(a * static_cast<acc_t>(W) * (wy0 * (d01 - d00) + wy1 * (d11 - d10)));
        gloc[2 * k + 1] = static_cast<scalar_t>(a * static_cast<acc_t>(H) * (wx0 * (d10 - d00) + wx1 * (d11 - d01)));
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------------------
// Explicit-SIMD kernels for float / double with D a multiple of the vector width (16 floats / 8 doubles, i.e.
// 64-byte GCC/Clang vector-extension types; the compiler splits them into 4 SSE, 2 AVX2 or 1 AVX-512 register(s)
// depending on the target the enclosing function is compiled for). They keep the accumulators in registers and do
// the three horizontal sums per sampling point of the backward with a short shuffle tree (an `omp simd reduction`
// is lowered by GCC -O2 to a scalar loop over the lanes, which made the backward several times slower).

#if VITA_MSDA_HAVE_VEC
typedef float vita_vf16 __attribute__((vector_size(64)));
typedef float vita_vf8 __attribute__((vector_size(32)));
typedef float vita_vf4 __attribute__((vector_size(16)));
typedef double vita_vd8 __attribute__((vector_size(64)));
typedef double vita_vd4 __attribute__((vector_size(32)));
typedef double vita_vd2 __attribute__((vector_size(16)));

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  using V = vita_vf16;
  static constexpr int kW = 16;
  static VITA_MSDA_INLINE float hsum(const vita_vf16& v) {
    vita_vf8 a, b;
    std::memcpy(&a, &v, sizeof(a));
    std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof(a), sizeof(b));
    const vita_vf8 s8 = a + b;
    vita_vf4 c, d;
    std::memcpy(&c, &s8, sizeof(c));
    std::memcpy(&d, reinterpret_cast<const char*>(&s8) + sizeof(c), sizeof(d));
    const vita_vf4 s4 = c + d;
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
  }
};
template <>
struct Simd<double> {
  using V = vita_vd8;
  static constexpr int kW = 8;
  static VITA_MSDA_INLINE double hsum(const vita_vd8& v) {
    vita_vd4 a, b;
    std::memcpy(&a, &v, sizeof(a));
    std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof(a), sizeof(b));
    const vita_vd4 s4 = a + b;
    vita_vd2 c, d;
    std::memcpy(&c, &s4, sizeof(c));
    std::memcpy(&d, reinterpret_cast<const char*>(&s4) + sizeof(c), sizeof(d));
    const vita_vd2 s2 = c + d;
    return s2[0] + s2[1];
  }
};

template <typename V, typename T>
VITA_MSDA_INLINE V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
VITA_MSDA_INLINE void vstore(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// j-th vector of the grad_out row: from registers (NV > 0) or memory (run-time count).
template <int NV, typename V, typename T>
VITA_MSDA_INLINE V grad_vec(const V* greg, const T* go, int j) {
  if constexpr (NV > 0) {
    return greg[j];
  } else {
    return vload<V>(go + j * static_cast<int>(sizeof(V) / sizeof(T)));
  }
}

// Forward, T in {float, double}, D a multiple of NV * kW: tiles of NV vectors held in registers.
template <typename T, int NV>
VITA_MSDA_INLINE void forward_rows_vec(const Args<T>& A, int64_t nq_begin, int64_t nq_end) {
  using V = typename Simd<T>::V;
  constexpr int VW = Simd<T>::kW;
  constexpr int TW = NV * VW;
  const Dims g = A.g;
  const T* value = A.value;
  const T* loc = A.loc;
  const T* attn = A.attn;
  T* out = A.out;
  const LevelInfo* levels = A.levels;
  const int64_t MD = g.M * g.D;
  const int64_t LP = g.L * g.P;
  for (int64_t nq = nq_begin; nq < nq_end; ++nq) {
    const int64_t n = nq / g.Lq;
    const T* vn = value + n * g.S * MD;
    for (int64_t m = 0; m < g.M; ++m) {
      const int64_t pt0 = (nq * g.M + m) * LP;
      T* o = out + nq * MD + m * g.D;
      for (int64_t d0 = 0; d0 < g.D; d0 += TW) {
        const T* vnm = vn + m * g.D + d0;
        V acc[NV];
        VITA_MSDA_UNROLL
        for (int j = 0; j < NV; ++j) acc[j] = V{};
        for (int64_t l = 0; l < g.L; ++l) {
          const int64_t H = levels[l].H, W = levels[l].W;
          const T* vl = vnm + levels[l].start * MD;
          const int64_t k0 = pt0 + l * g.P;
          for (int64_t p = 0; p < g.P; ++p) {
            const int64_t k = k0 + p;
            Bilinear<T> b;
            if (!bilinear_setup<T>(loc[2 * k], loc[2 * k + 1], H, W, b)) {
              if (skipped_point<T>(loc[2 * k], loc[2 * k + 1], attn[k], H, W).poisoned) {
                VITA_MSDA_UNROLL
                for (int j = 0; j < NV; ++j) acc[j] = V{} + std::numeric_limits<T>::quiet_NaN();
              }
              continue;
            }
            const T a = attn[k];
            const T ay0 = a * (T(1) - b.fy), ay1 = a * b.fy;
            const T w00 = ay0 * (T(1) - b.fx), w01 = ay0 * b.fx, w10 = ay1 * (T(1) - b.fx), w11 = ay1 * b.fx;
            // Offsets of the rows of corners (y0, x0) and (y0 + 1, x0); only dereferenced when inside.
            const int64_t o0 = (b.y0 * W + b.x0) * MD, o1 = o0 + W * MD;
            if (b.x0_in && b.x1_in && b.y0_in && b.y1_in) {
              VITA_MSDA_UNROLL
              for (int j = 0; j < NV; ++j) {
                const V s0 = w00 * vload<V>(vl + o0 + j * VW) + w01 * vload<V>(vl + o0 + MD + j * VW);
                const V s1 = w10 * vload<V>(vl + o1 + j * VW) + w11 * vload<V>(vl + o1 + MD + j * VW);
                acc[j] += s0 + s1;
              }
            } else {
              if (b.y0_in && b.x0_in) {
                VITA_MSDA_UNROLL
                for (int j = 0; j < NV; ++j) acc[j] += w00 * vload<V>(vl + o0 + j * VW);
              }
              if (b.y0_in && b.x1_in) {
                VITA_MSDA_UNROLL
                for (int j = 0; j < NV; ++j) acc[j] += w01 * vload<V>(vl + o0 + MD + j * VW);
              }
              if (b.y1_in && b.x0_in) {
                VITA_MSDA_UNROLL
                for (int j = 0; j < NV; ++j) acc[j] += w10 * vload<V>(vl + o1 + j * VW);
              }
              if (b.y1_in && b.x1_in) {
                VITA_MSDA_UNROLL
                for (int j = 0; j < NV; ++j) acc[j] += w11 * vload<V>(vl + o1 + MD + j * VW);
              }
            }
          }
        }
        VITA_MSDA_UNROLL
        for (int j = 0; j < NV; ++j) vstore(o + d0 + j * VW, acc[j]);
      }
    }
  }
}

// Backward, T in {float, double}, D = nv * kW (NV > 0: nv = NV at compile time, grad_out row kept in registers;
// NV == 0: nv = D / kW at run time). Same task contract as backward_task.
template <typename T, int NV>
VITA_MSDA_INLINE void backward_task_vec(const Args<T>& A, T* gv_base, int64_t n, int64_t m, int64_t q0, int64_t q1) {
  using V = typename Simd<T>::V;
  constexpr int VW = Simd<T>::kW;
  constexpr int NR = NV > 0 ? NV : 1;
  const Dims g = A.g;
  const int nv = NV > 0 ? NV : static_cast<int>(g.D / VW);
  const int64_t MD = g.M * g.D;
  const int64_t LP = g.L * g.P;
  const T* loc = A.loc;
  const T* attn = A.attn;
  T* gloc = A.grad_loc;
  T* gattn = A.grad_attn;
  const LevelInfo* levels = A.levels;
  const T* vnm = A.value + n * g.S * MD + m * g.D;
  T* gvnm = gv_base + n * g.S * MD + m * g.D;
  for (int64_t s = 0; s < g.S; ++s) std::memset(gvnm + s * MD, 0, sizeof(T) * static_cast<size_t>(g.D));

  for (int64_t q = q0; q < q1; ++q) {
    const int64_t nq = n * g.Lq + q;
    const T* go = A.grad_out + nq * MD + m * g.D;
    V greg[NR];  // grad_out row in registers when NV > 0
    if constexpr (NV > 0) {
      VITA_MSDA_UNROLL
      for (int j = 0; j < NV; ++j) greg[j] = vload<V>(go + j * VW);
    }

    const int64_t pt0 = (nq * g.M + m) * LP;
    for (int64_t l = 0; l < g.L; ++l) {
      const int64_t H = levels[l].H, W = levels[l].W;
      const T* vl = vnm + levels[l].start * MD;
      T* gvl = gvnm + levels[l].start * MD;
      const int64_t k0 = pt0 + l * g.P;
      for (int64_t p = 0; p < g.P; ++p) {
        const int64_t k = k0 + p;
        Bilinear<T> b;
        if (!bilinear_setup<T>(loc[2 * k], loc[2 * k + 1], H, W, b)) {
          const SkippedGrads<T> sk = skipped_point<T>(loc[2 * k], loc[2 * k + 1], attn[k], H, W);
          gattn[k] = sk.ga;
          gloc[2 * k] = sk.gx;
          gloc[2 * k + 1] = sk.gy;
          continue;
        }
        const T a = attn[k];
        const T wy0 = T(1) - b.fy, wy1 = b.fy, wx0 = T(1) - b.fx, wx1 = b.fx;
        const T w00 = wy0 * wx0, w01 = wy0 * wx1, w10 = wy1 * wx0, w11 = wy1 * wx1;
        const T aw00 = a * w00, aw01 = a * w01, aw10 = a * w10, aw11 = a * w11;
        const int64_t off0 = (b.y0 * W + b.x0) * MD;  // corner (y0, x0); only dereferenced when inside
        const int64_t off1 = off0 + W * MD;
        V acc_a = V{}, acc_x = V{}, acc_y = V{};
        if (b.x0_in && b.x1_in && b.y0_in && b.y1_in) {
          VITA_MSDA_UNROLL
          for (int j = 0; j < nv; ++j) {
            const V gj = grad_vec<NV, V>(greg, go, j);
            const V v00 = vload<V>(vl + off0 + j * VW), v01 = vload<V>(vl + off0 + MD + j * VW);
            const V v10 = vload<V>(vl + off1 + j * VW), v11 = vload<V>(vl + off1 + MD + j * VW);
            acc_a += gj * ((w00 * v00 + w01 * v01) + (w10 * v10 + w11 * v11));
            acc_x += gj * (wy0 * (v01 - v00) + wy1 * (v11 - v10));
            acc_y += gj * (wx0 * (v10 - v00) + wx1 * (v11 - v01));
            vstore(gvl + off0 + j * VW, vload<V>(gvl + off0 + j * VW) + aw00 * gj);
            vstore(gvl + off0 + MD + j * VW, vload<V>(gvl + off0 + MD + j * VW) + aw01 * gj);
            vstore(gvl + off1 + j * VW, vload<V>(gvl + off1 + j * VW) + aw10 * gj);
            vstore(gvl + off1 + MD + j * VW, vload<V>(gvl + off1 + MD + j * VW) + aw11 * gj);
          }
        } else {
          const bool i00 = b.y0_in && b.x0_in, i01 = b.y0_in && b.x1_in;
          const bool i10 = b.y1_in && b.x0_in, i11 = b.y1_in && b.x1_in;
          for (int j = 0; j < nv; ++j) {
            const V gj = grad_vec<NV, V>(greg, go, j);
            const V v00 = i00 ? vload<V>(vl + off0 + j * VW) : V{};
            const V v01 = i01 ? vload<V>(vl + off0 + MD + j * VW) : V{};
            const V v10 = i10 ? vload<V>(vl + off1 + j * VW) : V{};
            const V v11 = i11 ? vload<V>(vl + off1 + MD + j * VW) : V{};
            acc_a += gj * ((w00 * v00 + w01 * v01) + (w10 * v10 + w11 * v11));
            acc_x += gj * (wy0 * (v01 - v00) + wy1 * (v11 - v10));
            acc_y += gj * (wx0 * (v10 - v00) + wx1 * (v11 - v01));
            if (i00) vstore(gvl + off0 + j * VW, vload<V>(gvl + off0 + j * VW) + aw00 * gj);
            if (i01) vstore(gvl + off0 + MD + j * VW, vload<V>(gvl + off0 + MD + j * VW) + aw01 * gj);
            if (i10) vstore(gvl + off1 + j * VW, vload<V>(gvl + off1 + j * VW) + aw10 * gj);
            if (i11) vstore(gvl + off1 + MD + j * VW, vload<V>(gvl + off1 + MD + j * VW) + aw11 * gj);
          }
        }
        gattn[k] = Simd<T>::hsum(acc_a);
        gloc[2 * k] = a * static_cast<T>(W) * Simd<T>::hsum(acc_x);
        gloc[2 * k + 1] = a * static_cast<T>(H) * Simd<T>::hsum(acc_y);
      }
    }
  }
}
#endif  // VITA_MSDA_HAVE_VEC

// ------------------------------------------------------------------------------------------------------------
// ISA variants (same source compiled for three targets) and run-time selection.
//
// Kernel selector K: K >= 0 generic kernel with compile-time D tile K (0: run-time); K = -NV (NV >= 1): vector
// kernel with NV vectors; K = kVecRuntime: vector backward with a run-time vector count.

constexpr int kVecRuntime = -1000;

template <typename scalar_t, int K>
VITA_MSDA_INLINE void forward_kernel(const Args<scalar_t>& A, int64_t b, int64_t e) {
#if VITA_MSDA_HAVE_VEC
  if constexpr (K < 0) {
    forward_rows_vec<scalar_t, -K>(A, b, e);
    return;
  } else
#endif
  {
    forward_rows<scalar_t, (K > 0 ? K : 0)>(A, b, e);
  }
}

template <typename scalar_t, int K>
VITA_MSDA_INLINE void backward_kernel(const Args<scalar_t>& A, typename AccType<scalar_t>::type* gv, int64_t n,
                                      int64_t m, int64_t q0, int64_t q1, typename AccType<scalar_t>::type* gbuf) {
#if VITA_MSDA_HAVE_VEC
  if constexpr (K < 0) {
    backward_task_vec<scalar_t, (K == kVecRuntime ? 0 : -K)>(A, gv, n, m, q0, q1);
    return;
  } else
#endif
  {
    backward_task<scalar_t, (K > 0 ? K : 0)>(A, gv, n, m, q0, q1, gbuf);
  }
}

enum class Isa { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

Isa detect_isa() {
  Isa best = Isa::kDefault;
#if VITA_MSDA_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    best = Isa::kAvx512;
#endif
  if (const char* env = std::getenv("VITA_MSDA_ISA")) {
    const std::string s(env);
    Isa want = best;
    if (s == "default" || s == "scalar" || s == "baseline") want = Isa::kDefault;
    else if (s == "avx2") want = Isa::kAvx2;
    else if (s == "avx512") want = Isa::kAvx512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;
  }
  return best;
}

Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

bool vec_kernels_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("VITA_MSDA_NO_VEC");
    return !(env && env[0] && env[0] != '0');
  }();
  return on;
}

template <typename scalar_t>
using ForwardFn = void (*)(const Args<scalar_t>&, int64_t, int64_t);
template <typename scalar_t>
using BackwardFn = void (*)(const Args<scalar_t>&, typename AccType<scalar_t>::type*, int64_t, int64_t, int64_t,
                            int64_t, typename AccType<scalar_t>::type*);

template <typename scalar_t, int K>
void forward_default(const Args<scalar_t>& A, int64_t b, int64_t e) {
  forward_kernel<scalar_t, K>(A, b, e);
}
template <typename scalar_t, int K>
void backward_default(const Args<scalar_t>& A, typename AccType<scalar_t>::type* gv, int64_t n, int64_t m, int64_t q0,
                      int64_t q1, typename AccType<scalar_t>::type* gbuf) {
  backward_kernel<scalar_t, K>(A, gv, n, m, q0, q1, gbuf);
}
#if VITA_MSDA_X86
template <typename scalar_t, int K>
VITA_MSDA_TARGET_AVX2 void forward_avx2(const Args<scalar_t>& A, int64_t b, int64_t e) {
  forward_kernel<scalar_t, K>(A, b, e);
}
template <typename scalar_t, int K>
VITA_MSDA_TARGET_AVX2 void backward_avx2(const Args<scalar_t>& A, typename AccType<scalar_t>::type* gv, int64_t n,
                                         int64_t m, int64_t q0, int64_t q1, typename AccType<scalar_t>::type* gbuf) {
  backward_kernel<scalar_t, K>(A, gv, n, m, q0, q1, gbuf);
}
template <typename scalar_t, int K>
VITA_MSDA_TARGET_AVX512 void forward_avx512(const Args<scalar_t>& A, int64_t b, int64_t e) {
  forward_kernel<scalar_t, K>(A, b, e);
}
template <typename scalar_t, int K>
VITA_MSDA_TARGET_AVX512 void backward_avx512(const Args<scalar_t>& A, typename AccType<scalar_t>::type* gv,
                                             int64_t n, int64_t m, int64_t q0, int64_t q1,
                                             typename AccType<scalar_t>::type* gbuf) {
  backward_kernel<scalar_t, K>(A, gv, n, m, q0, q1, gbuf);
}
#endif

template <typename scalar_t, int K>
ForwardFn<scalar_t> forward_fn_for_isa(Isa isa) {
#if VITA_MSDA_X86
  if (isa == Isa::kAvx512) return &forward_avx512<scalar_t, K>;
  if (isa == Isa::kAvx2) return &forward_avx2<scalar_t, K>;
#endif
  (void)isa;
  return &forward_default<scalar_t, K>;
}

template <typename scalar_t, int K>
BackwardFn<scalar_t> backward_fn_for_isa(Isa isa) {
#if VITA_MSDA_X86
  if (isa == Isa::kAvx512) return &backward_avx512<scalar_t, K>;
  if (isa == Isa::kAvx2) return &backward_avx2<scalar_t, K>;
#endif
  (void)isa;
  return &backward_default<scalar_t, K>;
}

template <typename scalar_t>
constexpr bool has_vec() {
#if VITA_MSDA_HAVE_VEC
  return std::is_same<scalar_t, float>::value || std::is_same<scalar_t, double>::value;
#else
  return false;
#endif
}

// Forward: vector kernel with tiles of 4, 2 or 1 vectors when D is a multiple; else the generic kernel with tiles
// of 64, 32 or 16 channels (compile-time) or run-time tiles of <= 64.
template <typename scalar_t>
ForwardFn<scalar_t> pick_forward(int64_t D) {
  const Isa isa = cpu_isa();
  if constexpr (has_vec<scalar_t>()) {
#if VITA_MSDA_HAVE_VEC
    constexpr int VW = Simd<scalar_t>::kW;
    if (vec_kernels_enabled()) {
      if (D % (4 * VW) == 0) return forward_fn_for_isa<scalar_t, -4>(isa);
      if (D % (2 * VW) == 0) return forward_fn_for_isa<scalar_t, -2>(isa);
      if (D % VW == 0) return forward_fn_for_isa<scalar_t, -1>(isa);
    }
#endif
  }
  if (D % 64 == 0) return forward_fn_for_isa<scalar_t, 64>(isa);
  if (D % 32 == 0) return forward_fn_for_isa<scalar_t, 32>(isa);
  if (D % 16 == 0) return forward_fn_for_isa<scalar_t, 16>(isa);
  return forward_fn_for_isa<scalar_t, 0>(isa);
}

// Backward handles all of D at once (the dot products span D): vector kernel with 1, 2 or 4 vectors
// (compile-time) or any multiple of the vector width (run-time); else the generic kernel (compile-time D for
// 16 / 32 / 64, else run-time).
template <typename scalar_t>
BackwardFn<scalar_t> pick_backward(int64_t D) {
  const Isa isa = cpu_isa();
  if constexpr (has_vec<scalar_t>()) {
#if VITA_MSDA_HAVE_VEC
    constexpr int VW = Simd<scalar_t>::kW;
    if (vec_kernels_enabled()) {
      if (D == 4 * VW) return backward_fn_for_isa<scalar_t, -4>(isa);
      if (D == 2 * VW) return backward_fn_for_isa<scalar_t, -2>(isa);
      if (D == VW) return backward_fn_for_isa<scalar_t, -1>(isa);
      if (D % VW == 0) return backward_fn_for_isa<scalar_t, kVecRuntime>(isa);
    }
#endif
  }
  if (D == 64) return backward_fn_for_isa<scalar_t, 64>(isa);
  if (D == 32) return backward_fn_for_isa<scalar_t, 32>(isa);
  if (D == 16) return backward_fn_for_isa<scalar_t, 16>(isa);
  return backward_fn_for_isa<scalar_t, 0>(isa);
}

// ------------------------------------------------------------------------------------------------------------
// Validation.

using vita::shape_str;

struct Checked {
  Dims g;
  std::vector<LevelInfo> levels;  // host copy of spatial_shapes / level_start_index
};

Checked check_inputs(const char* op, const at::Tensor& value, const at::Tensor& spatial_shapes,
                     const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                     const at::Tensor& attention_weights) {
  TORCH_CHECK(value.defined() && spatial_shapes.defined() && level_start_index.defined() &&
                  sampling_locations.defined() && attention_weights.defined(),
              op, ": all inputs must be defined tensors");
  TORCH_CHECK(value.dim() == 4, op, ": value must be 4-D (N, S, M, D), got shape ", shape_str(value));
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2, op,
              ": spatial_shapes must be (L, 2) holding (H, W) per level, got shape ", shape_str(spatial_shapes));
  const int64_t L = spatial_shapes.size(0);
  TORCH_CHECK(L >= 1, op, ": spatial_shapes must hold at least one level, got shape ", shape_str(spatial_shapes));
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == L, op,
              ": level_start_index must be (L,) = (", L, ",) to match spatial_shapes, got shape ",
              shape_str(level_start_index));
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2, op,
              ": sampling_locations must be 6-D (N, Lq, M, L, P, 2), got shape ", shape_str(sampling_locations));
  TORCH_CHECK(attention_weights.dim() == 5, op, ": attention_weights must be 5-D (N, Lq, M, L, P), got shape ",
              shape_str(attention_weights));

  Dims g;
  g.N = value.size(0);
  g.S = value.size(1);
  g.M = value.size(2);
  g.D = value.size(3);
  g.Lq = sampling_locations.size(1);
  g.L = L;
  g.P = sampling_locations.size(4);
  TORCH_CHECK(sampling_locations.size(0) == g.N && sampling_locations.size(2) == g.M &&
                  sampling_locations.size(3) == g.L,
              op, ": sampling_locations shape ", shape_str(sampling_locations), " does not match (N, Lq, M, L, P, 2) = (",
              g.N, ", Lq, ", g.M, ", ", g.L, ", P, 2) from value ", shape_str(value), " and spatial_shapes ",
              shape_str(spatial_shapes));
  TORCH_CHECK(attention_weights.size(0) == g.N && attention_weights.size(1) == g.Lq &&
                  attention_weights.size(2) == g.M && attention_weights.size(3) == g.L &&
                  attention_weights.size(4) == g.P,
              op, ": attention_weights shape ", shape_str(attention_weights), " must be (N, Lq, M, L, P) = (", g.N, ", ",
              g.Lq, ", ", g.M, ", ", g.L, ", ", g.P, ")");

  const auto dt = value.scalar_type();
  TORCH_CHECK(at::isFloatingType(dt), op, ": value must be a floating-point tensor, got ", dt);
  TORCH_CHECK(sampling_locations.scalar_type() == dt && attention_weights.scalar_type() == dt, op,
              ": value, sampling_locations and attention_weights must share one floating dtype, got ", dt, ", ",
              sampling_locations.scalar_type(), " and ", attention_weights.scalar_type());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong, op,
              ": spatial_shapes and level_start_index must be int64 (Long), got ", spatial_shapes.scalar_type(),
              " and ", level_start_index.scalar_type());

  const auto dev = value.device();
  TORCH_CHECK(spatial_shapes.device() == dev && level_start_index.device() == dev &&
                  sampling_locations.device() == dev && attention_weights.device() == dev,
              op, ": all inputs must be on one device; value is on ", dev, ", spatial_shapes on ", spatial_shapes.device(),
              ", level_start_index on ", level_start_index.device(), ", sampling_locations on ",
              sampling_locations.device(), ", attention_weights on ", attention_weights.device());

  // Level geometry (a tiny host copy; on CUDA this is one small device-to-host transfer).
  at::Tensor shapes_h = spatial_shapes.to(at::kCPU).contiguous();
  at::Tensor start_h = level_start_index.to(at::kCPU).contiguous();
  const int64_t* sh = shapes_h.data_ptr<int64_t>();
  const int64_t* st = start_h.data_ptr<int64_t>();
  Checked c;
  c.levels.resize(static_cast<size_t>(L));
  int64_t acc = 0;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t H = sh[2 * l], W = sh[2 * l + 1];
    TORCH_CHECK(H >= 0 && W >= 0, op, ": spatial_shapes[", l, "] = (", H, ", ", W, ") must be non-negative");
    TORCH_CHECK(st[l] == acc, op, ": level_start_index[", l, "] = ", st[l], " but the levels before it hold ", acc,
                " positions (expected level_start_index[l] = sum_{k<l} H_k * W_k)");
    c.levels[static_cast<size_t>(l)] = LevelInfo{H, W, acc};
    acc += H * W;
  }
  TORCH_CHECK(acc == g.S, op, ": value has S = ", g.S, " positions (dim 1) but spatial_shapes sums to sum H_l*W_l = ",
              acc);
  c.g = g;
  return c;
}

// grad_output of the backward op: defined, (N, Lq, M*D), on value's device.
void check_grad_output(const char* op, const Dims& g, const at::Tensor& grad_out_in, const at::Tensor& value_in) {
  TORCH_CHECK(grad_out_in.defined(), op, ": grad_output must be defined");
  TORCH_CHECK(grad_out_in.dim() == 3 && grad_out_in.size(0) == g.N && grad_out_in.size(1) == g.Lq &&
                  grad_out_in.size(2) == g.M * g.D,
              op, ": grad_output must be (N, Lq, M*D) = (", g.N, ", ", g.Lq, ", ", g.M * g.D, "), got shape ",
              shape_str(grad_out_in));
  TORCH_CHECK(grad_out_in.device() == value_in.device(), op, ": grad_output is on ", grad_out_in.device(),
              " but value is on ", value_in.device());
}

bool any_zero(const Dims& g) {
  return g.N == 0 || g.Lq == 0 || g.M == 0 || g.D == 0;
}

// Number of query blocks B for the backward task split (see the header comment).
int64_t choose_query_blocks(const Dims& g, int threads) {
  static const int64_t forced = [] {
    const char* env = std::getenv("VITA_MSDA_QUERY_BLOCKS");  // benchmarking / tests only
    return env ? std::max<int64_t>(0, std::atoll(env)) : int64_t{0};
  }();
  if (forced > 0) return std::min<int64_t>(forced, std::max<int64_t>(1, g.Lq));
  const int64_t NM = g.N * g.M;
  if (threads <= 1 || NM <= 0 || NM >= 4 * static_cast<int64_t>(threads)) return 1;
  const int64_t bytes_per_buffer = g.N * g.S * g.M * g.D * 4;
  const int64_t mem_cap = std::max<int64_t>(1, (int64_t{512} << 20) / std::max<int64_t>(1, bytes_per_buffer));
  const int64_t bmax = std::min<int64_t>({(4 * threads + NM - 1) / NM, std::max<int64_t>(1, g.Lq / 16), mem_cap + 1});
  int64_t best = 1;
  double best_eff = 0;
  for (int64_t b = 1; b <= bmax; ++b) {
    const int64_t tasks = NM * b;
    const int64_t rounds = (tasks + threads - 1) / threads;
    const double eff = static_cast<double>(tasks) / static_cast<double>(rounds * threads);
    if (eff > best_eff + 1e-9) {
      best = b;
      best_eff = eff;
    }
    if (eff >= 0.9) break;
  }
  return best;
}

// ------------------------------------------------------------------------------------------------------------
// CPU operators.

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value_in, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& loc_in,
                                      const at::Tensor& attn_in) {
  const char* op = "vit_adapter::ms_deform_attn_forward";
  Checked c = check_inputs(op, value_in, spatial_shapes, level_start_index, loc_in, attn_in);
  const Dims g = c.g;
  at::Tensor value = value_in.contiguous();
  at::Tensor loc = loc_in.contiguous();
  at::Tensor attn = attn_in.contiguous();
  at::Tensor out = at::empty({g.N, g.Lq, g.M * g.D}, value.options());
  if (any_zero(g)) return out.zero_();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    Args<scalar_t> A;
    A.value = value.data_ptr<scalar_t>();
    A.levels = c.levels.data();
    A.loc = loc.data_ptr<scalar_t>();
    A.attn = attn.data_ptr<scalar_t>();
    A.out = out.data_ptr<scalar_t>();
    A.g = g;
    const ForwardFn<scalar_t> fn = pick_forward<scalar_t>(g.D);
    const int64_t work_per_row = std::max<int64_t>(1, g.M * g.L * g.P * g.D * 4);
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work_per_row);
    at::parallel_for(0, g.N * g.Lq, grain, [&](int64_t b, int64_t e) { fn(A, b, e); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value_in, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& loc_in, const at::Tensor& attn_in, const at::Tensor& grad_out_in) {
  const char* op = "vit_adapter::ms_deform_attn_backward";
  Checked c = check_inputs(op, value_in, spatial_shapes, level_start_index, loc_in, attn_in);
  const Dims g = c.g;
  check_grad_output(op, g, grad_out_in, value_in);
  at::Tensor value = value_in.contiguous();
  at::Tensor loc = loc_in.contiguous();
  at::Tensor attn = attn_in.contiguous();
  at::Tensor grad_out = grad_out_in.to(value.scalar_type()).contiguous();

  at::Tensor grad_loc = at::empty_like(loc, at::MemoryFormat::Contiguous);
  at::Tensor grad_attn = at::empty_like(attn, at::MemoryFormat::Contiguous);
  at::Tensor grad_value;
  if (any_zero(g) || g.S == 0) {
    grad_value = at::zeros_like(value, at::MemoryFormat::Contiguous);
    grad_loc.zero_();
    grad_attn.zero_();
    return std::make_tuple(grad_value, grad_loc, grad_attn);
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    constexpr bool direct = std::is_same<acc_t, scalar_t>::value;
    const at::ScalarType acc_dtype = std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat;
    Args<scalar_t> A;
    A.value = value.data_ptr<scalar_t>();
    A.levels = c.levels.data();
    A.loc = loc.data_ptr<scalar_t>();
    A.attn = attn.data_ptr<scalar_t>();
    A.grad_out = grad_out.data_ptr<scalar_t>();
    A.grad_loc = grad_loc.data_ptr<scalar_t>();
    A.grad_attn = grad_attn.data_ptr<scalar_t>();
    A.g = g;
    const int64_t numel = g.N * g.S * g.M * g.D;
    const int64_t B = choose_query_blocks(g, at::get_num_threads());
    // buffer 0 is grad_value itself when it holds acc_t; the other buffers are float/double scratch.
    const int64_t extra = direct ? B - 1 : B;
    at::Tensor scratch;
    if (extra > 0) scratch = at::empty({extra, numel}, value.options().dtype(acc_dtype));
    if (direct) grad_value = at::empty_like(value, at::MemoryFormat::Contiguous);
    std::vector<acc_t*> bufs(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      if (direct && b == 0) bufs[0] = reinterpret_cast<acc_t*>(grad_value.data_ptr<scalar_t>());
      else bufs[static_cast<size_t>(b)] = scratch.data_ptr<acc_t>() + (direct ? b - 1 : b) * numel;
    }
    const BackwardFn<scalar_t> fn = pick_backward<scalar_t>(g.D);
    const int64_t tasks = g.N * g.M * B;
    at::parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
      std::vector<acc_t> gbuf(static_cast<size_t>(g.D));
      for (int64_t t = tb; t < te; ++t) {
        const int64_t b = t % B;
        const int64_t nm = t / B;
        const int64_t n = nm / g.M, m = nm % g.M;
        const int64_t q0 = g.Lq * b / B, q1 = g.Lq * (b + 1) / B;
        fn(A, bufs[static_cast<size_t>(b)], n, m, q0, q1, gbuf.data());
      }
    });
    if (B > 1) {
      acc_t* dst = bufs[0];
      at::parallel_for(0, numel, 1 << 14, [&](int64_t e0, int64_t e1) {
        for (int64_t b = 1; b < B; ++b) add_into(dst + e0, bufs[static_cast<size_t>(b)] + e0, e1 - e0);
      });
    }
    if (!direct) grad_value = scratch[0].view(value.sizes()).to(value.scalar_type());
  });
  return std::make_tuple(grad_value, grad_loc, grad_attn);
}

// ------------------------------------------------------------------------------------------------------------
// CUDA operators (launchers in msda_cuda.cu).

#ifdef VITA_WITH_CUDA
vita_msda_cuda::DType cuda_dtype(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return vita_msda_cuda::DType::kFloat32;
    case at::kDouble: return vita_msda_cuda::DType::kFloat64;
    case at::kHalf: return vita_msda_cuda::DType::kFloat16;
    case at::kBFloat16: return vita_msda_cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t, " (expected float32, float64, float16 or bfloat16)");
  }
  return vita_msda_cuda::DType::kFloat32;
}

vita_msda_cuda::Dims cuda_dims(const Dims& g) {
  vita_msda_cuda::Dims d;
  d.N = g.N;
  d.S = g.S;
  d.M = g.M;
  d.D = g.D;
  d.Lq = g.Lq;
  d.L = g.L;
  d.P = g.P;
  return d;
}

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
                                       const at::Tensor& level_start_index_in, const at::Tensor& loc_in,
                                       const at::Tensor& attn_in) {
  const char* op = "vit_adapter::ms_deform_attn_forward";
  Checked c = check_inputs(op, value_in, spatial_shapes_in, level_start_index_in, loc_in, attn_in);
  const Dims g = c.g;
  const c10::cuda::CUDAGuard guard(value_in.device());
  at::Tensor value = value_in.contiguous();
  at::Tensor shapes = spatial_shapes_in.contiguous();
  at::Tensor starts = level_start_index_in.contiguous();
  at::Tensor loc = loc_in.contiguous();
  at::Tensor attn = attn_in.contiguous();
  at::Tensor out = at::empty({g.N, g.Lq, g.M * g.D}, value.options());
  if (any_zero(g)) return out.zero_();
  const cudaError_t err = vita_msda_cuda::ms_deform_attn_forward(
      cuda_dtype(value.scalar_type(), op), value.data_ptr(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
      loc.data_ptr(), attn.data_ptr(), out.data_ptr(), cuda_dims(g), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value_in, const at::Tensor& spatial_shapes_in, const at::Tensor& level_start_index_in,
    const at::Tensor& loc_in, const at::Tensor& attn_in, const at::Tensor& grad_out_in) {
  const char* op = "vit_adapter::ms_deform_attn_backward";
  Checked c = check_inputs(op, value_in, spatial_shapes_in, level_start_index_in, loc_in, attn_in);
  const Dims g = c.g;
  check_grad_output(op, g, grad_out_in, value_in);
  const c10::cuda::CUDAGuard guard(value_in.device());
  at::Tensor value = value_in.contiguous();
  at::Tensor shapes = spatial_shapes_in.contiguous();
  at::Tensor starts = level_start_index_in.contiguous();
  at::Tensor loc = loc_in.contiguous();
  at::Tensor attn = attn_in.contiguous();
  at::Tensor grad_out = grad_out_in.to(value.scalar_type()).contiguous();
  const auto dt = value.scalar_type();
  const at::ScalarType acc_dtype = dt == at::kDouble ? at::kDouble : at::kFloat;
  // grad_value accumulates with atomics: zero-initialised, in float (double for double inputs).
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_dtype));
  at::Tensor grad_loc = at::empty_like(loc, at::MemoryFormat::Contiguous);
  at::Tensor grad_attn = at::empty_like(attn, at::MemoryFormat::Contiguous);
  if (any_zero(g) || g.S == 0) {
    grad_loc.zero_();
    grad_attn.zero_();
  } else {
    const cudaError_t err = vita_msda_cuda::ms_deform_attn_backward(
        cuda_dtype(dt, op), value.data_ptr(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr(),
        attn.data_ptr(), grad_out.data_ptr(), grad_value_acc.data_ptr(), grad_loc.data_ptr(), grad_attn.data_ptr(),
        cuda_dims(g), at::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
  }
  at::Tensor grad_value = acc_dtype == dt ? grad_value_acc : grad_value_acc.to(dt);
  return std::make_tuple(grad_value, grad_loc, grad_attn);
}
#endif  // VITA_WITH_CUDA

// ------------------------------------------------------------------------------------------------------------
// Dispatcher entry points, autograd.

using FwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&);
using BwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                               const at::Tensor&, const at::Tensor&, const at::Tensor&);

const c10::TypedOperatorHandle<FwdSig>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::ms_deform_attn_forward", "").typed<FwdSig>();
  return op;
}

const c10::TypedOperatorHandle<BwdSig>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::ms_deform_attn_backward", "").typed<BwdSig>();
  return op;
}

class MSDeformAttnFunction : public torch::autograd::Function<MSDeformAttnFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& value,
                            const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                            const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = forward_op().call(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
    ctx->save_for_backward({value, spatial_shapes, level_start_index, sampling_locations, attention_weights});
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = grad_outputs[0];
    if (!grad.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    at::Tensor gv, gl, ga;
    std::tie(gv, gl, ga) = backward_op().call(saved[0], saved[1], saved[2], saved[3], saved[4], grad);
    return {gv, at::Tensor(), at::Tensor(), gl, ga};
  }
};

at::Tensor ms_deform_attn_autograd(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                   const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                   const at::Tensor& attention_weights) {
  return MSDeformAttnFunction::apply(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

// Used when autograd is not involved (inference mode tensors, or below the Autograd key).
at::Tensor ms_deform_attn_noautograd(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights) {
  return forward_op().call(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

}  // namespace

// C++ entry points for other translation units (declare them where needed; they go through the dispatcher).
at::Tensor ms_deform_attn(const at::Tensor& value, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                          const at::Tensor& attention_weights) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vit_adapter::ms_deform_attn", "").typed<FwdSig>();
  return op.call(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  return backward_op().call(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                            grad_output);
}

// Which CPU code path the kernels use ("default", "avx2" or "avx512").
const char* cpu_isa_name() {
  switch (cpu_isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "default";
  }
}

}  // namespace vita_msda

TORCH_LIBRARY(vit_adapter, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations, "
      "Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(vit_adapter, CPU, m) {
  m.impl("ms_deform_attn_forward", &vita_msda::ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &vita_msda::ms_deform_attn_backward_cpu);
}

#ifdef VITA_WITH_CUDA
TORCH_LIBRARY_IMPL(vit_adapter, CUDA, m) {
  m.impl("ms_deform_attn_forward", &vita_msda::ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &vita_msda::ms_deform_attn_backward_cuda);
}
#endif

TORCH_LIBRARY_IMPL(vit_adapter, CompositeExplicitAutograd, m) {
  m.impl("ms_deform_attn", &vita_msda::ms_deform_attn_noautograd);
}

TORCH_LIBRARY_IMPL(vit_adapter, Autograd, m) {
  m.impl("ms_deform_attn", &vita_msda::ms_deform_attn_autograd);
}
