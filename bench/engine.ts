/**
 * Engine micro-benchmarks: matmul and conv2d throughput, layerNorm and softmax bandwidth, and the cost of one addon
 * call. Every figure is the median of N timed runs after warm-up.
 *
 *   node dist/bench/engine.js [--json] [--repeats N] [--threads N] [--quick]
 *
 * Notes: this machine may set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which slow OpenBLAS; the report says whether they
 * are set (compare with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE node dist/bench/engine.js`). Timings on a shared
 * 2-core machine are noisy: compare ratios within one run.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { setImmediate as immediate } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import {
  backend, conv2d, getNumThreads, layerNorm, noGrad, randn, scope, setNumThreads, softmax, tensor,
} from '../src/engine/index.js';

interface Measure { name: string; medianMs: number; minMs: number; runs: number; value?: number; unit?: string; note?: string }

const { values: opts } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    repeats: { type: 'string', default: '7' },
    threads: { type: 'string' },
    quick: { type: 'boolean', default: false },
  },
});
const REPEATS = Math.max(1, Number(opts.repeats));
if (opts.threads !== undefined) setNumThreads(Number(opts.threads));

const now = (): number => performance.now();
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Times `fn` (which must force completion itself) `repeats` times after `warmup` calls; milliseconds. */
function time(fn: () => void, repeats = REPEATS, warmup = 2): number[] {
  for (let i = 0; i < warmup; i++) fn();
  const out: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = now();
    fn();
    out.push(now() - t0);
  }
  return out;
}

/** A CPU op is complete when it returns; on CUDA we would synchronise here. */
function sync(): void {
  if (backend().cudaIsAvailable()) backend().cudaSynchronize();
}

const results: Measure[] = [];
function record(name: string, ms: number[], value?: (medianMs: number) => number, unit?: string, note?: string): Measure {
  const med = median(ms);
  const m: Measure = { name, medianMs: med, minMs: Math.min(...ms), runs: ms.length };
  if (value) { m.value = value(med); m.unit = unit; }
  if (note) m.note = note;
  results.push(m);
  if (!opts.json) {
    const v = m.value === undefined ? '' : `  ${m.value.toFixed(m.value < 10 ? 2 : 1)} ${unit}`;
    console.log(`${name.padEnd(46)} ${med.toFixed(med < 1 ? 4 : 2).padStart(10)} ms (min ${m.minMs.toFixed(med < 1 ? 4 : 2)})${v}${note ? `  ${note}` : ''}`);
  }
  return m;
}

// ---- environment -------------------------------------------------------------------------------------------------
/** The BLAS libraries mapped into this process (Linux), resolved through symlinks / alternatives. */
function loadedBlas(): string[] {
  if (!existsSync('/proc/self/maps')) return [];
  const paths = new Set<string>();
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /\s(\/\S*blas\S*)$/i.exec(line);
    if (m) {
      try { paths.add(realpathSync(m[1]!)); } catch { paths.add(m[1]!); }
    }
  }
  return [...paths];
}
const info = backend().info();
const env = {
  torchVersion: info.torchVersion,
  threads: getNumThreads(),
  interopThreads: info.interopThreads,
  cuda: info.cuda,
  OPENBLAS_CORETYPE: process.env.OPENBLAS_CORETYPE ?? null,
  OPENBLAS_L2_SIZE: process.env.OPENBLAS_L2_SIZE ?? null,
  OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? null,
  node: process.version,
  repeats: REPEATS,
  blasBuildInfo: /BLAS_INFO=(\w+)/.exec(info.config)?.[1] ?? 'unknown',
  blasLoaded: loadedBlas(),
};
if (!opts.json) {
  console.log(`libtorch ${env.torchVersion}, ${env.threads} threads (interop ${env.interopThreads}), node ${env.node}`);
  console.log(`BLAS: built for ${env.blasBuildInfo}, loaded ${env.blasLoaded.join(', ') || 'unknown'}`);
  console.log(`OPENBLAS_CORETYPE ${env.OPENBLAS_CORETYPE === null ? 'not set' : `= ${env.OPENBLAS_CORETYPE} (set: slows OpenBLAS)`}, ` +
    `OPENBLAS_L2_SIZE ${env.OPENBLAS_L2_SIZE === null ? 'not set' : `= ${env.OPENBLAS_L2_SIZE} (set)`}`);
  console.log(`median of ${REPEATS} runs after warm-up\n`);
}

noGrad(() => {
  // ---- matmul --------------------------------------------------------------------------------------------------
  for (const n of opts.quick ? [1024] : [1024, 4096]) {
    const a = randn([n, n]);
    const b = randn([n, n]);
    const reps = n >= 4096 ? Math.min(REPEATS, 3) : REPEATS;
    const ms = time(() => { a.matmul(b).dispose(); sync(); }, reps, 1);
    record(`matmul ${n}x${n}x${n} fp32`, ms, (t) => (2 * n ** 3) / (t * 1e6), 'GFLOP/s');
    a.dispose();
    b.dispose();
  }

  // ---- conv2d 1×64×128×128, 3×3, 64→64, pad 1 ------------------------------------------------------------------
  {
    const x = randn([1, 64, 128, 128]);
    const w = randn([64, 64, 3, 3]);
    const bias = randn([64]);
    const flops = 2 * 64 * 64 * 9 * 128 * 128;
    const ms = time(() => { conv2d(x, w, bias, { padding: 1 }).dispose(); sync(); });
    record('conv2d 1x64x128x128 3x3 64->64 pad 1', ms, (t) => flops / (t * 1e6), 'GFLOP/s');
    x.dispose(); w.dispose(); bias.dispose();
  }

  // ---- layerNorm 1×4096×768 ------------------------------------------------------------------------------------
  {
    const x = randn([1, 4096, 768]);
    const g = randn([768]);
    const b = randn([768]);
    const bytes = 2 * x.numel() * 4; // read x, write y (the affine terms are negligible)
    const ms = time(() => { layerNorm(x, [768], g, b).dispose(); sync(); });
    record('layerNorm 1x4096x768 (last dim)', ms, (t) => bytes / (t * 1e6), 'GB/s');
    x.dispose(); g.dispose(); b.dispose();
  }

  // ---- softmax 12×1024×1024 along the last dim -----------------------------------------------------------------
  {
    const x = randn([12, 1024, 1024]);
    const bytes = 2 * x.numel() * 4;
    const ms = time(() => { softmax(x, -1).dispose(); sync(); });
    record('softmax 12x1024x1024 (last dim)', ms, (t) => bytes / (t * 1e6), 'GB/s');
    x.dispose();
  }
});

// ---- addon call overhead -----------------------------------------------------------------------------------------
{
  const a = tensor([1]);
  const b = tensor([2]);
  const calls = opts.quick ? 2000 : 20000;
  const batches = 15;
  /** Median over batches of the per-call time of `body`, in microseconds. */
  const perCall = async (body: () => void): Promise<number[]> => {
    for (let i = 0; i < calls; i++) body(); // warm-up
    const out: number[] = [];
    for (let k = 0; k < batches; k++) {
      await immediate(); // between batches: lets Node run the deferred finalizers of collected handles
      const t0 = now();
      for (let i = 0; i < calls; i++) body();
      out.push(((now() - t0) * 1000) / calls);
    }
    return out;
  };
  const us = (name: string, xs: number[], note?: string): void => {
    const med = median(xs);
    const m: Measure = { name, medianMs: med / 1000, minMs: Math.min(...xs) / 1000, runs: xs.length, value: med, unit: 'µs/op' };
    if (note) m.note = note;
    results.push(m);
    if (!opts.json) console.log(`${name.padEnd(46)} ${med.toFixed(2).padStart(10)} µs/op (min ${Math.min(...xs).toFixed(2)})${note ? `  ${note}` : ''}`);
  };
  const h1 = a.handle;
  const h2 = b.handle;
  const be = backend();
  const addId = be.findOp('aten::add', 'Tensor')!;
  us('tiny op: backend().call(add) + dispose', await perCall(() => { be.dispose(be.call(addId, [h1, h2, 1]) as never); }),
    'the raw addon round trip');
  us('tiny op: a.add(b) + dispose()', await perCall(() => { a.add(b).dispose(); }), 'Tensor API, 1-element tensors');
  us('tiny op: a.add(b), GC reclaims', await perCall(() => { a.add(b); }), 'no dispose: the wrappers are left to V8 and finalised between batches');
  us('tiny op inside its own scope()', await perCall(() => { scope(() => { a.add(b); }); }), 'one scope per op');
  const inner = 10;
  us('tiny op, 10 per scope()', (await perCall(() => { scope(() => { for (let i = 0; i < inner; i++) a.add(b); }); })).map((v) => v / inner),
    'scope cost amortised');
  us('shape query (t.shape)', await perCall(() => { void a.shape; }), 'metadata cached after the first call');
  us('item() of a 1-element tensor', await perCall(() => { a.item(); }));
  a.dispose();
  b.dispose();
}

if (opts.json) {
  console.log(JSON.stringify({ env, results }, null, 2));
}
