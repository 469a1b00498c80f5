#!/usr/bin/env bash
# Builds bench/native/msda_bench against Debian's libtorch (or $LIBTORCH); --run runs it with the given args.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../../native/src"
out="${OUT_DIR:-/tmp/vita-msda-bench}"
cxx="${CXX:-g++}"
opt="${OPT:--O2}"
mkdir -p "$out"
if [[ -n "${LIBTORCH:-}" ]]; then
  inc=(-I"$LIBTORCH/include" -I"$LIBTORCH/include/torch/csrc/api/include"); libdir="$LIBTORCH/lib"
else
  inc=(-I/usr/include -I/usr/include/torch/csrc/api/include); libdir=/usr/lib/x86_64-linux-gnu
fi
ldextra=()
# Debian's libtorch links the generic libblas.so.3; use the OpenMP OpenBLAS as the addon build does (the pthreads
# OpenBLAS competes with the OpenMP pool and makes 2-thread timings erratic).
omp_blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
if [[ -z "${LIBTORCH:-}" && -e "$omp_blas/libblas.so.3" ]]; then
  ldextra=(-L"$omp_blas" -Wl,--disable-new-dtags,-rpath,"$omp_blas")
fi
flags=(-std=c++17 -fexceptions -frtti "$opt" -fopenmp -fPIC -D_GLIBCXX_USE_CXX11_ABI=1 -Wno-deprecated-declarations
       "${inc[@]}" ${EXTRA_CXXFLAGS:-})
"$cxx" "${flags[@]}" -c "$src/msda.cc" -o "$out/msda.o" &
"$cxx" "${flags[@]}" -c "$here/msda_bench.cc" -o "$out/msda_bench.o" &
wait %1; wait %2
"$cxx" -fopenmp "$out/msda_bench.o" "$out/msda.o" -o "$out/msda_bench" "${ldextra[@]}" -L"$libdir" \
  -Wl,--disable-new-dtags,-rpath,"$libdir" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -Wl,--as-needed
echo "built $out/msda_bench"
if [[ "${1:-}" == "--run" ]]; then shift; "$out/msda_bench" "$@"; fi
