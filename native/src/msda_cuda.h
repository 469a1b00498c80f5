// CUDA launchers of multi-scale deformable attention (vit-adapter). Implemented in msda_cuda.cu, which is compiled
// by plain nvcc (no torch headers); msda.cc calls these under VITA_WITH_CUDA.
//
// Layouts (all contiguous, all device pointers):
//   value               (N, S, M, D)          dtype T
//   spatial_shapes      (L, 2)  int64         (H_l, W_l)
//   level_start_index   (L,)    int64
//   sampling_locations  (N, Lq, M, L, P, 2)   dtype T, (x, y) in [0, 1] (may lie outside)
//   attention_weights   (N, Lq, M, L, P)      dtype T
//   output / grad_output (N, Lq, M * D)       dtype T
// T is float, double, __half or __nv_bfloat16 (selected by `dtype`); accumulation is in float (double for double).
//
// The caller validates shapes (S == sum H_l W_l, level_start_index consistent) before launching: the kernels trust
// spatial_shapes / level_start_index.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vita_msda_cuda {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

struct Dims {
  int64_t N = 0, S = 0, M = 0, D = 0, Lq = 0, L = 0, P = 0;
};

// output: (N, Lq, M*D) of dtype T; every element is written. Returns the launch status.
cudaError_t ms_deform_attn_forward(DType dtype, const void* value, const int64_t* spatial_shapes,
                                   const int64_t* level_start_index, const void* sampling_locations,
                                   const void* attention_weights, void* output, const Dims& dims,
                                   cudaStream_t stream);

// grad_value_acc: (N, S, M, D), ZERO-INITIALISED by the caller, accumulated with atomicAdd; its dtype is float for
// T in {float, half, bfloat16} and double for T = double (the caller casts it to T for half / bfloat16).
// grad_sampling_locations (N, Lq, M, L, P, 2) and grad_attention_weights (N, Lq, M, L, P) have dtype T and are
// fully written. Returns the launch status.
cudaError_t ms_deform_attn_backward(DType dtype, const void* value, const int64_t* spatial_shapes,
                                    const int64_t* level_start_index, const void* sampling_locations,
                                    const void* attention_weights, const void* grad_output, void* grad_value_acc,
                                    void* grad_sampling_locations, void* grad_attention_weights, const Dims& dims,
                                    cudaStream_t stream);

}  // namespace vita_msda_cuda
