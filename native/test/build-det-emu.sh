#!/usr/bin/env bash
# Builds and runs native/test/det_cuda_emu_test.cc: the CUDA kernels of native/src/det_cuda.cu run on the CPU under
# native/test/cuda_emu, compared with the CPU operators of roi_align.cc / nms.cc (compiled in, against Debian's
# libtorch-dev or $LIBTORCH, CPU only). Environment: OUT_DIR (default /tmp/vita-det-emu), CXX (g++).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../src"
out="${OUT_DIR:-/tmp/vita-det-emu}"
cxx="${CXX:-g++}"
mkdir -p "$out"
if [[ -n "${LIBTORCH:-}" ]]; then
  inc=(-I"$LIBTORCH/include" -I"$LIBTORCH/include/torch/csrc/api/include")
  libdir="$LIBTORCH/lib"
else
  inc=(-I/usr/include -I/usr/include/torch/csrc/api/include)
  libdir=/usr/lib/x86_64-linux-gnu
fi
ldflags=(-L"$libdir" -Wl,--disable-new-dtags,-rpath,"$libdir")
omp_blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
if [[ -z "${LIBTORCH:-}" && -e "$omp_blas/libblas.so.3" ]]; then
  ldflags=(-L"$omp_blas" -Wl,--disable-new-dtags,-rpath,"$omp_blas" "${ldflags[@]}")
fi
flags=(-std=c++17 -fexceptions -frtti -O1 -fopenmp -fPIC -D_GLIBCXX_USE_CXX11_ABI=1 -Wall -Wextra
       -Wno-unused-parameter -Wno-deprecated-declarations "${inc[@]}")
"$cxx" "${flags[@]}" -c "$src/roi_align.cc" -o "$out/roi_align.o" &
p1=$!
"$cxx" "${flags[@]}" -c "$src/nms.cc" -o "$out/nms.o" &
p2=$!
"$cxx" "${flags[@]}" -Wno-unknown-pragmas -pthread -I"$here/cuda_emu" -c "$here/det_cuda_emu_test.cc" -o "$out/det_emu.o" &
p3=$!
wait "$p1"; wait "$p2"; wait "$p3"
"$cxx" -fopenmp -pthread "$out/det_emu.o" "$out/roi_align.o" "$out/nms.o" -o "$out/det_cuda_emu_test" "${ldflags[@]}" \
  -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -Wl,--as-needed
"$out/det_cuda_emu_test"
