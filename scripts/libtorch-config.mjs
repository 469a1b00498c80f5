#!/usr/bin/env node
// Finds the libtorch to build the addon against and prints what binding.gyp needs.
// Order: $LIBTORCH (a libtorch folder with include/ and lib/), then a Python torch install that ships its
// headers (python3 -c "import torch"), then Debian's libtorch-dev (/usr/include/torch).
// Usage: node scripts/libtorch-config.mjs --json | --include | --libdirs | --ldflags | --defines | --cflags
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);

function fromFolder(dir, source) {
  const inc = join(dir, 'include');
  const lib = join(dir, 'lib');
  if (!existsSync(join(inc, 'torch')) || !existsSync(join(lib, 'libtorch.so'))) return null;
  return { source, includeDirs: [inc, join(inc, 'torch/csrc/api/include')], libDir: lib, cuda: existsSync(join(lib, 'libtorch_cuda.so')) };
}

function fromPython() {
  for (const py of [process.env.PYTHON, 'python3', '/usr/bin/python3'].filter(Boolean)) {
    try {
      const [dir, abi] = execFileSync(py, ['-c', 'import torch, os; print(os.path.dirname(torch.__file__)); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))'], {
        encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 60000,
      }).trim().split('\n');
      // Debian's python3-torch wraps the same system libtorch as libtorch-dev: use the Debian path for it.
      if (!dir || dir.startsWith('/usr/lib/python3/')) continue;
      const found = fromFolder(dir, `python torch (${py}): ${dir}`);
      // pip wheels before torch 2.7 use the pre-C++11 std::string ABI: the addon must match
      if (found && abi === '0') found.cxx11Abi = false;
      if (found) return found;
    } catch { /* no torch for this interpreter */ }
  }
  return null;
}

function fromDebian() {
  const lib = '/usr/lib/x86_64-linux-gnu';
  if (!existsSync('/usr/include/torch') || !existsSync(join(lib, 'libtorch.so'))) return null;
  return { source: 'debian libtorch-dev', includeDirs: ['/usr/include', '/usr/include/torch/csrc/api/include'], libDir: lib, cuda: false };
}

export function findLibtorch() {
  let found = null;
  if (process.env.LIBTORCH) {
    found = fromFolder(process.env.LIBTORCH, `LIBTORCH=${process.env.LIBTORCH}`);
    if (!found) throw new Error(`LIBTORCH=${process.env.LIBTORCH} has no include/torch or lib/libtorch.so`);
  }
  found ??= fromPython() ?? fromDebian();
  if (!found) return null;
  const libs = ['-ltorch', '-ltorch_cpu', '-lc10'];
  const ldflags = [`-L${found.libDir}`, `-Wl,--disable-new-dtags,-rpath,${found.libDir}`];
  const defines = [];
  // binding.gyp defines _GLIBCXX_USE_CXX11_ABI=1; a libtorch built with the old ABI needs 0 (the later -D wins).
  // VITA_CXX11_ABI=0|1 overrides the detection (e.g. for a LIBTORCH folder of the pre-C++11 ABI).
  const abiEnv = process.env.VITA_CXX11_ABI;
  if (abiEnv === '0' || (abiEnv !== '1' && found.cxx11Abi === false)) defines.push('_GLIBCXX_USE_CXX11_ABI=0');
  const extraObjects = [];
  let cudaInclude = null;
  if (found.cuda) {
    libs.push('-ltorch_cuda', '-lc10_cuda');
    defines.push('VITA_WITH_CUDA');
    for (const cu of readdirSync(join(root, 'native/src')).filter((f) => f.endsWith('.cu')).sort()) {
      extraObjects.push(join(root, 'native/build', cu.replace(/\.cu$/, '.o')));
    }
    const cudaHome = process.env.CUDA_HOME ?? (existsSync('/usr/local/cuda') ? '/usr/local/cuda' : null);
    if (cudaHome) { cudaInclude = join(cudaHome, 'include'); ldflags.push(`-L${join(cudaHome, 'lib64')}`); }
    libs.push('-lcudart');
  }
  // Debian's libtorch links the generic libblas.so.3; the OpenMP OpenBLAS must win (see README "BLAS").
  const ompBlas = '/usr/lib/x86_64-linux-gnu/openblas-openmp';
  let blas = null;
  if (found.source.startsWith('debian') && existsSync(join(ompBlas, 'libblas.so.3'))) {
    // First on the rpath, so that libtorch_cpu's NEEDED libblas.so.3 resolves to it.
    ldflags.unshift(`-L${ompBlas}`, `-Wl,--disable-new-dtags,-rpath,${ompBlas}`);
    ldflags.push('-Wl,--no-as-needed', '-l:libblas.so.3', '-l:liblapack.so.3', '-Wl,--as-needed');
    blas = ompBlas;
  }
  const includeDirs = [...found.includeDirs];
  if (cudaInclude) includeDirs.push(cudaInclude);
  return { ...found, includeDirs, libs, ldflags, defines, extraObjects, blas, cudaInclude };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const cfg = findLibtorch();
  const what = process.argv[2] ?? '--json';
  if (!cfg) {
    if (what === '--json') { console.log('null'); process.exit(0); }
    console.error('libtorch not found: set LIBTORCH, install a Python torch, or apt-get install libtorch-dev');
    process.exit(1);
  }
  const out = {
    '--json': () => JSON.stringify(cfg, null, 1),
    '--include': () => cfg.includeDirs.join(' '),
    '--libs': () => [...cfg.extraObjects, ...cfg.libs].join(' '),
    '--ldflags': () => cfg.ldflags.join(' '),
    '--defines': () => cfg.defines.join(' '),
    '--sources': () => readdirSync(join(root, 'native/src')).filter((f) => f.endsWith('.cc')).sort().map((f) => `src/${f}`).join(' '),
  }[what];
  if (!out) { console.error(`unknown option ${what}`); process.exit(2); }
  console.log(out());
}
