// Minimal CPU emulation of the CUDA features msda_cuda.cu uses, so that its kernels and launchers can be run and
// checked on a machine without a GPU (native/test/msda_cuda_emu_test.cc). Not a general CUDA emulator.
//
// Each warp runs as 32 std::threads; __shfl_xor_sync exchanges values through a per-warp barrier, so the kernels'
// requirement that all 32 lanes of a warp execute the same shuffles is checked: a lane that skips or adds a shuffle
// makes the barrier time out, which is reported as a failure (g_emu_failures) instead of hanging.
// atomicAdd is serialised by a mutex. Half / bfloat16 are c10::Half / c10::BFloat16.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#define VITA_MSDA_CUDA_EMULATION 1

// ---- runtime API subset
typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorInvalidConfiguration = 9;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == 0 ? "no error" : "emulated CUDA error"; }

// ---- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)

struct EmuDim3 {
  unsigned int x = 0, y = 0, z = 0;
};
inline thread_local EmuDim3 threadIdx, blockIdx;
inline EmuDim3 blockDim, gridDim;

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// ---- half / bfloat16
typedef c10::Half __half;
typedef c10::BFloat16 __nv_bfloat16;
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return static_cast<float>(h); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }

// ---- atomics
inline std::mutex& emu_atomic_mutex() {
  static std::mutex m;
  return m;
}
inline float atomicAdd(float* p, float v) {
  std::lock_guard<std::mutex> lock(emu_atomic_mutex());
  const float old = *p;
  *p = old + v;
  return old;
}
inline double atomicAdd(double* p, double v) {
  std::lock_guard<std::mutex> lock(emu_atomic_mutex());
  const double old = *p;
  *p = old + v;
  return old;
}

// ---- warps and shuffles
inline std::atomic<int> g_emu_failures{0};

struct EmuWarp {
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  long generation = 0;
  bool broken = false;
  double slots[32] = {};

  // Returns false when the other lanes did not arrive (divergent shuffles).
  bool barrier() {
    std::unique_lock<std::mutex> lock(mu);
    if (broken) return false;
    const long gen = generation;
    if (++arrived == 32) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return true;
    }
    if (!cv.wait_for(lock, std::chrono::seconds(5), [&] { return generation != gen || broken; })) {
      broken = true;
      cv.notify_all();
      return false;
    }
    return !broken;
  }
};
inline thread_local EmuWarp* t_warp = nullptr;

template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32) {
  EmuWarp& w = *t_warp;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (mask != 0xffffffffu) ++g_emu_failures;  // the kernels only use full-warp shuffles
  w.slots[lane] = static_cast<double>(v);
  if (!w.barrier()) {
    ++g_emu_failures;
    return v;
  }
  // Source lane: lane ^ lane_mask within the width-sized segment (CUDA returns the own value when it falls outside).
  int src = lane ^ lane_mask;
  if ((src / width) != (lane / width)) src = lane;
  const T out = static_cast<T>(w.slots[src]);
  if (!w.barrier()) {
    ++g_emu_failures;
    return v;
  }
  return out;
}

// Runs kernel<<<blocks, threads>>>(args...) on the CPU, one warp (32 threads) at a time.
template <typename... P, typename... A>
void emu_launch(void (*kernel)(P...), unsigned int blocks, int threads, A... args) {
  if (threads % 32 != 0) {
    std::printf("emu_launch: block size %d is not a multiple of 32\n", threads);
    ++g_emu_failures;
    return;
  }
  blockDim.x = static_cast<unsigned int>(threads);
  gridDim.x = blocks;
  for (unsigned int b = 0; b < blocks; ++b) {
    for (int wbase = 0; wbase < threads; wbase += 32) {
      EmuWarp warp;
      std::vector<std::thread> lanes;
      lanes.reserve(32);
      for (int lane = 0; lane < 32; ++lane) {
        lanes.emplace_back([&, lane] {
          blockIdx.x = b;
          threadIdx.x = static_cast<unsigned int>(wbase + lane);
          t_warp = &warp;
          kernel(args...);
        });
      }
      for (auto& t : lanes) t.join();
      if (warp.broken) ++g_emu_failures;
    }
  }
}

#define VITA_MSDA_LAUNCH(kernel, blocks, threads, stream, ...) emu_launch(kernel, (blocks), (threads), __VA_ARGS__)
