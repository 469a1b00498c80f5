#!/usr/bin/env bash
# Builds (and optionally runs) the standalone MSDA self-test / benchmark (native/test/msda_selftest.cc) against
# libtorch, compiling native/src/msda.cc with the addon's flags (-O2, no -march).
#
#   native/test/build-selftest.sh                   build only
#   native/test/build-selftest.sh --run [args...]   build, then run msda_selftest with args (--test, --bench, ...)
#   native/test/build-selftest.sh --all-paths       build, then run the tests once per CPU code path
#                                                   (AVX-512 / AVX2 / baseline x86-64, vector kernels on and off)
#   native/test/build-selftest.sh --cuda-emu        also build msda_cuda_emu_test (the CUDA kernels of msda_cuda.cu
#                                                   run on the CPU under native/test/cuda_emu) and run it
#
# Environment: LIBTORCH   a libtorch folder with include/ and lib/ (default: Debian's libtorch-dev);
#                         with lib/libtorch_cuda.so, msda_cuda.cu is compiled by nvcc and VITA_WITH_CUDA defined
#              CUDA_HOME  (default /usr/local/cuda), NVCC (default $CUDA_HOME/bin/nvcc or nvcc), CUDA_ARCHS (80,90)
#              OUT_DIR    build folder (default /tmp/vita-msda-selftest); CXX (g++); OPT (-O2)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../src"
out="${OUT_DIR:-/tmp/vita-msda-selftest}"
cxx="${CXX:-g++}"
opt="${OPT:--O2}"
mkdir -p "$out"

if [[ -n "${LIBTORCH:-}" ]]; then
  inc=(-I"$LIBTORCH/include" -I"$LIBTORCH/include/torch/csrc/api/include")
  libdir="$LIBTORCH/lib"
else
  inc=(-I/usr/include -I/usr/include/torch/csrc/api/include)
  libdir=/usr/lib/x86_64-linux-gnu
fi
ldflags=(-L"$libdir" -Wl,--disable-new-dtags,-rpath,"$libdir")
libs=(-ltorch -ltorch_cpu -lc10)
defs=()
objs=()
# Debian's libtorch links the generic libblas.so.3; use the OpenMP OpenBLAS as the addon build does (the pthreads
# OpenBLAS competes with the OpenMP pool and makes the 2-thread timings erratic).
omp_blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
if [[ -z "${LIBTORCH:-}" && -e "$omp_blas/libblas.so.3" ]]; then
  ldflags=(-L"$omp_blas" -Wl,--disable-new-dtags,-rpath,"$omp_blas" "${ldflags[@]}")
fi
if [[ -e "$libdir/libtorch_cuda.so" ]]; then
  cuda_home="${CUDA_HOME:-/usr/local/cuda}"
  nvcc="${NVCC:-$( [[ -x "$cuda_home/bin/nvcc" ]] && echo "$cuda_home/bin/nvcc" || echo nvcc )}"
  arch=()
  IFS=',' read -ra archs <<< "${CUDA_ARCHS:-80,90}"
  for a in "${archs[@]}"; do arch+=(-gencode "arch=compute_$a,code=sm_$a"); done
  echo "nvcc msda_cuda.cu"
  "$nvcc" -std=c++17 -O3 -Xcompiler -fPIC "${arch[@]}" -c "$src/msda_cuda.cu" -o "$out/msda_cuda.o"
  defs+=(-DVITA_WITH_CUDA)
  inc+=(-I"$cuda_home/include")
  objs+=("$out/msda_cuda.o")
  libs+=(-ltorch_cuda -lc10_cuda -lcudart)
  ldflags+=(-L"$cuda_home/lib64")
fi

flags=(-std=c++17 -fexceptions -frtti "$opt" -fopenmp -fPIC -D_GLIBCXX_USE_CXX11_ABI=1 -Wall -Wextra
       -Wno-unused-parameter -Wno-deprecated-declarations "${defs[@]}" "${inc[@]}")

"$cxx" "${flags[@]}" -c "$src/msda.cc" -o "$out/msda.o" &
pid1=$!
"$cxx" "${flags[@]}" -c "$here/msda_selftest.cc" -o "$out/msda_selftest.o" &
pid2=$!
wait "$pid1"
wait "$pid2"
# --no-as-needed keeps libtorch_cuda (CUDA hooks, kernels) loaded although nothing references it by symbol.
"$cxx" -fopenmp "$out/msda_selftest.o" "$out/msda.o" "${objs[@]}" -o "$out/msda_selftest" "${ldflags[@]}" \
  -Wl,--no-as-needed "${libs[@]}" -Wl,--as-needed
echo "built $out/msda_selftest"

case "${1:-}" in
  --cuda-emu)
    "$cxx" "${flags[@]}" -Wno-unknown-pragmas -pthread -I"$here/cuda_emu" -c "$here/msda_cuda_emu_test.cc" \
      -o "$out/msda_cuda_emu_test.o"
    "$cxx" -fopenmp -pthread "$out/msda_cuda_emu_test.o" "$out/msda.o" -o "$out/msda_cuda_emu_test" "${ldflags[@]}" \
      -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -Wl,--as-needed
    echo "built $out/msda_cuda_emu_test"
    "$out/msda_cuda_emu_test"
    ;;
  --run)
    shift
    "$out/msda_selftest" "$@"
    ;;
  --all-paths)
    status=0
    for isa in avx512 avx2 default; do
      for novec in 0 1; do
        echo "### VITA_MSDA_ISA=$isa VITA_MSDA_NO_VEC=$novec"
        VITA_MSDA_ISA=$isa VITA_MSDA_NO_VEC=$novec "$out/msda_selftest" --test | grep -E "CPU path|worst max abs|rel err|tests:|FAIL" \
          || status=1
        [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
      done
    done
    exit $status
    ;;
esac
