// Micro-benchmark of the vit_adapter MSDA CPU kernels (forward / backward op only, no reference).
//   msda_bench [--threads N] [--iters K] [--case injector|extractor|both]
// Prints wall-clock min / median / max ms per call and the median process CPU time per call.
// Build: bench/native/build-bench.sh [--run args...]. Environment knobs of msda.cc: VITA_MSDA_ISA=default|avx2|avx512,
// VITA_MSDA_NO_VEC=1 (generic kernels), VITA_MSDA_QUERY_BLOCKS=B (force the backward query-block split).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "../../native/test/msda_harness.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

namespace vita_msda {
const char* cpu_isa_name();
}

namespace {

double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Wall time (min / median / max) and the median CPU time of all threads (less sensitive to other load).
void stats(const char* what, std::vector<double> t, std::vector<double> c) {
  std::sort(t.begin(), t.end());
  std::sort(c.begin(), c.end());
  std::printf("    %-9s wall min %7.3f  median %7.3f  max %7.3f ms   cpu median %7.3f ms\n", what, t.front(),
              t[t.size() / 2], t.back(), c[c.size() / 2]);
}

void run(const char* name, int64_t Lq, std::vector<std::pair<int64_t, int64_t>> hw, int iters) {
  const auto& fwd = vita_msda_harness::forward_op();
  const auto& bwd = vita_msda_harness::backward_op();
  const int64_t N = 1, M = 6, D = 32, P = 4, L = static_cast<int64_t>(hw.size());
  const vita_msda_harness::Levels lv = vita_msda_harness::make_levels(hw);
  const int64_t S = lv.S;
  const at::Tensor& shapes = lv.shapes;
  const at::Tensor& starts = lv.starts;
  at::Tensor value = at::randn({N, S, M, D});
  at::Tensor loc = (at::rand({N, Lq, 1, 1, 1, 2}) + at::randn({N, Lq, M, L, P, 2}) * 0.05).contiguous();
  at::Tensor attn = at::softmax(at::randn({N, Lq, M, L * P}), -1).view({N, Lq, M, L, P});
  at::Tensor go = at::randn({N, Lq, M * D});
  std::printf("  %s (Lq=%lld, S=%lld, L=%lld)\n", name, (long long)Lq, (long long)S, (long long)L);
  std::vector<double> tf, tb, cf, cb;
  for (int i = 0; i < iters + 3; ++i) {
    const double c0 = cpu_ms();
    auto t0 = std::chrono::steady_clock::now();
    at::Tensor o = fwd.call(value, shapes, starts, loc, attn);
    auto t1 = std::chrono::steady_clock::now();
    const double c1 = cpu_ms();
    auto g = bwd.call(value, shapes, starts, loc, attn, go);
    auto t2 = std::chrono::steady_clock::now();
    const double c2 = cpu_ms();
    if (i >= 3) {
      tf.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      tb.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      cf.push_back(c1 - c0);
      cb.push_back(c2 - c1);
    }
  }
  stats("forward", tf, cf);
  stats("backward", tb, cb);
}
}  // namespace

int main(int argc, char** argv) {
  int threads = 2, iters = 50;
  std::string which = "both";
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--case")) which = argv[++i];
  }
  at::set_num_threads(threads);
  std::printf("msda_bench: %d threads, CPU path %s\n", at::get_num_threads(), vita_msda::cpu_isa_name());
  if (which != "extractor") run("injector", 1024, {{64, 64}, {32, 32}, {16, 16}}, iters);
  if (which != "injector") run("extractor", 5376, {{32, 32}}, iters);
  return 0;
}
