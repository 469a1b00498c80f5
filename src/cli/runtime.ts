/**
 * Options shared by several CLI commands that touch the runtime: `--threads` (with a warning above the core
 * count) and `--device` (with a clear message when CUDA is absent), plus what `info` reports about the BLAS
 * library really loaded into the process.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';
import { backend, cuda, setNumThreads } from '../engine/index.js';
import { type Parsed, UsageError, intOption } from './args.js';
import { warn } from './output.js';

/** Applies `--threads N` when given; warns on stderr when N exceeds the cores this process may use. */
export function applyThreads(p: Parsed): void {
  if (p.options.threads === undefined) return;
  const n = intOption(p, 'threads', 1);
  const cores = availableParallelism();
  if (n > cores) {
    warn(`warning: --threads ${n} is more than the ${cores} CPU core(s) available; expect slower runs, not faster (use --threads ${cores} or fewer)`);
  }
  setNumThreads(n);
}

/**
 * The message for a CUDA device on a machine or build without CUDA. Distinguishes a libtorch built without CUDA
 * (nothing to do but install a CUDA build) from a CUDA build that sees no GPU.
 */
export function cudaUnavailableMessage(device: string): string {
  const i = backend().info();
  if (!i.builtWithCuda) {
    return `--device ${device}: CUDA is not available in this libtorch build (libtorch ${i.torchVersion} was built without CUDA). ` +
      'Use --device cpu, or install a CUDA build of libtorch (set LIBTORCH to its folder, or install a CUDA PyTorch) and ' +
      'rebuild the addon with `npm run build:native`.';
  }
  return `--device ${device}: this libtorch build supports CUDA, but no CUDA device is visible (${i.cudaDevices} device(s)); ` +
    'check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or use --device cpu.';
}

/** Parses and checks `--device cpu|cuda|cuda:N` (default cpu) before any tensor is made on it. */
export function deviceOption(p: Parsed): string {
  const v = p.options.device;
  if (v !== undefined && typeof v !== 'string') throw new UsageError('--device expects a value');
  const d = v ?? 'cpu';
  if (!/^(cpu|cuda(:\d+)?)$/.test(d)) throw new UsageError(`--device must be cpu, cuda or cuda:N, got ${JSON.stringify(d)}`);
  if (d === 'cpu') return d;
  if (!cuda.isAvailable()) throw new Error(cudaUnavailableMessage(d));
  const idx = d.includes(':') ? Number(d.slice(5)) : 0;
  const count = cuda.deviceCount();
  if (idx >= count) throw new Error(`--device ${d}: there are only ${count} CUDA device(s) (cuda:0${count > 1 ? `..cuda:${count - 1}` : ''})`);
  return d;
}

/** The BLAS libraries mapped into this process, and a short name for the one in use. */
export interface LoadedBlas {
  /** e.g. `OpenBLAS 0.3.21 (openblas-openmp)`, `MKL`, `reference BLAS`, or `unknown` where it cannot be told. */
  name: string;
  /** Paths of the BLAS/LAPACK shared libraries mapped into the process (from /proc/self/maps; empty elsewhere). */
  libraries: string[];
}

/**
 * Which BLAS the process has really loaded, from the shared libraries mapped into it (Linux `/proc/self/maps`).
 * libtorch's own `BLAS_INFO` only says what it was compiled against (Debian's says `generic` while the system's
 * `libblas.so.3` is OpenBLAS). Call after the addon is loaded.
 */
export function loadedBlas(mapsText?: string): LoadedBlas {
  let text = mapsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/maps', 'utf8');
    } catch {
      return { name: 'unknown', libraries: [] };
    }
  }
  const libs = new Set<string>();
  for (const line of text.split('\n')) {
    const path = line.trim().split(/\s+/).slice(5).join(' ');
    if (path.startsWith('/') && /(blas|lapack|mkl_|libmkl|blis|accelerate)[^/]*\.so/i.test(basename(path))) libs.add(path);
  }
  const libraries = [...libs].sort();
  const names: string[] = [];
  for (const l of libraries) {
    const b = basename(l);
    const m = /openblas[a-z]*-?r?(\d+\.\d+\.\d+)?/i.exec(b);
    if (m) {
      const variant = /\/(openblas-[a-z]+)\//.exec(l)?.[1];
      names.push(`OpenBLAS${m[1] ? ` ${m[1]}` : ''}${variant ? ` (${variant})` : ''}`);
    } else if (/mkl/i.test(b)) names.push('MKL');
    else if (/blis/i.test(b)) names.push('BLIS');
  }
  if (names.length === 0 && libraries.some((l) => /libblas\.so/.test(basename(l)))) names.push('reference BLAS (libblas)');
  return { name: [...new Set(names)].join(', ') || (libraries.length ? 'unknown' : 'none mapped'), libraries };
}
