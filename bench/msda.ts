/**
 * Deformable-attention core alone: the native kernel (`vit_adapter::ms_deform_attn` through `msDeformAttnCore` with
 * `setMsDeformAttnImpl(true)`) against the grid_sample composition (`setMsDeformAttnImpl(false)`), CPU, forward and
 * forward + backward, at the ViT-Adapter-T 512×512 shapes (6 heads, 32 channels per head, 4 points):
 *   injector:  1024 queries (the 1/16 grid), values on 64×64, 32×32, 16×16 (S = 5376, 3 levels)
 *   extractor: 5376 queries (the three adapter levels), values on 32×32 (1 level)
 *
 *   node dist/bench/msda.js [--threads N] [--iters 10] [--warmup 2] [--size 512] [--json]
 */
import {
  type Tensor, getNumThreads, manualSeed, noGrad, rand, randn, scope, setNumThreads, softmax,
} from '../src/engine/index.js';
import { type SpatialShapes, hasNativeMsDeformAttn, msDeformAttnCore, setMsDeformAttnImpl } from '../src/models/adapter/index.js';

interface Options { threads: number; iters: number; warmup: number; size: number; json: boolean }

function parseArgs(argv: string[]): Options {
  const o: Options = { threads: 0, iters: 10, warmup: 2, size: 512, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${a}: expected a non-negative integer, got ${argv[i]}`);
      return n;
    };
    if (a === '--threads') o.threads = num();
    else if (a === '--iters') o.iters = Math.max(1, num());
    else if (a === '--warmup') o.warmup = num();
    else if (a === '--size') o.size = num();
    else if (a === '--json') o.json = true;
    else if (a === '-h' || a === '--help') {
      console.log('usage: node dist/bench/msda.js [--threads N] [--iters 10] [--warmup 2] [--size 512] [--json]');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (o.size % 32) throw new Error(`--size must be a multiple of 32, got ${o.size}`);
  return o;
}

interface Case { name: string; lq: number; shapes: SpatialShapes }

function cases(size: number): Case[] {
  const s8 = size / 8, s16 = size / 16, s32 = size / 32;
  return [
    { name: 'injector', lq: s16 * s16, shapes: [[s8, s8], [s16, s16], [s32, s32]] },
    { name: 'extractor', lq: s8 * s8 + s16 * s16 + s32 * s32, shapes: [[s16, s16]] },
  ];
}

const M = 6;
const D = 32;
const P = 4;

interface Inputs { value: Tensor; locations: Tensor; weights: Tensor; gradOutput: Tensor; levelStart: number[] }

function makeInputs(c: Case): Inputs {
  const L = c.shapes.length;
  const S = c.shapes.reduce((a, [h, w]) => a + h * w, 0);
  const levelStart: number[] = [];
  let s = 0;
  for (const [h, w] of c.shapes) { levelStart.push(s); s += h * w; }
  return scope(() => {
    const value = randn([1, S, M, D]);
    // reference points anywhere in the image plus small per-head/level/point offsets (a few land outside)
    const locations = rand([1, c.lq, 1, 1, 1, 2]).add(randn([1, c.lq, M, L, P, 2]).mul(0.05)).contiguous();
    const weights = softmax(randn([1, c.lq, M, L * P]), -1).view(1, c.lq, M, L, P);
    const gradOutput = randn([1, c.lq, M * D]);
    return { value: value.keep(), locations: locations.keep(), weights: weights.keep(), gradOutput: gradOutput.keep(), levelStart };
  });
}

interface Timing { median_ms: number; min_ms: number; max_ms: number }

function time(fn: () => void, o: Options): Timing {
  for (let i = 0; i < o.warmup; i++) fn();
  const t: number[] = [];
  for (let i = 0; i < o.iters; i++) {
    const t0 = performance.now();
    fn();
    t.push(performance.now() - t0);
  }
  t.sort((a, b) => a - b);
  return { median_ms: t[Math.floor(t.length / 2)]!, min_ms: t[0]!, max_ms: t[t.length - 1]! };
}

function forward(c: Case, x: Inputs): void {
  scope(() => noGrad(() => { msDeformAttnCore(x.value, c.shapes, x.levelStart, x.locations, x.weights); }));
}

/** Forward + backward to all three differentiable inputs; returns the gradients when `keepGrads`. */
function forwardBackward(c: Case, x: Inputs, keepGrads = false): Tensor[] {
  return scope(() => {
    const v = x.value.detach().requiresGrad_();
    const l = x.locations.detach().requiresGrad_();
    const w = x.weights.detach().requiresGrad_();
    const out = msDeformAttnCore(v, c.shapes, x.levelStart, l, w);
    out.backward(x.gradOutput);
    return keepGrads ? [out.detach(), v.grad!, l.grad!, w.grad!] : [];
  });
}

function maxRel(a: Tensor, b: Tensor): number {
  return scope(() => a.sub(b).abs().max().item() / Math.max(b.abs().max().item(), 1e-30));
}

function main(): void {
  const o = parseArgs(process.argv.slice(2));
  if (o.threads) setNumThreads(o.threads);
  manualSeed(0);
  const native = hasNativeMsDeformAttn();
  const results: Record<string, unknown>[] = [];
  if (!o.json) {
    console.log(`MSDA core, CPU, ${getNumThreads()} threads, ${o.iters} timed calls after ${o.warmup} warm-up; ` +
      `ViT-Adapter-T ${o.size}x${o.size} shapes, ${M} heads, D=${D}, ${P} points`);
    console.log(native ? '  native kernel: built in (vit_adapter::ms_deform_attn)'
      : '  native kernel: NOT built into this addon (hasNativeMsDeformAttn() is false): timing the grid_sample composition only');
  }
  for (const c of cases(o.size)) {
    const x = makeInputs(c);
    const S = c.shapes.reduce((a, [h, w]) => a + h * w, 0);
    const row: Record<string, unknown> = { case: c.name, queries: c.lq, S, levels: c.shapes.length };
    try {
      setMsDeformAttnImpl(false);
      const compFwd = time(() => forward(c, x), o);
      const compFb = time(() => { forwardBackward(c, x); }, o);
      row.composition = { forward: compFwd, forward_backward: compFb };
      if (native) {
        // agreement of the two implementations on these inputs (output and the three gradients)
        const ref = forwardBackward(c, x, true);
        setMsDeformAttnImpl(true);
        const got = forwardBackward(c, x, true);
        row.max_rel_diff = Object.fromEntries(['output', 'grad_value', 'grad_locations', 'grad_weights']
          .map((k, i) => [k, maxRel(got[i]!, ref[i]!)]));
        for (const t of [...ref, ...got]) t.dispose();
        const natFwd = time(() => forward(c, x), o);
        const natFb = time(() => { forwardBackward(c, x); }, o);
        row.native = { forward: natFwd, forward_backward: natFb };
        row.speedup = { forward: compFwd.median_ms / natFwd.median_ms, forward_backward: compFb.median_ms / natFb.median_ms };
      }
    } finally {
      setMsDeformAttnImpl(null);
      for (const t of [x.value, x.locations, x.weights, x.gradOutput]) t.dispose();
    }
    results.push(row);
  }
  if (o.json) {
    console.log(JSON.stringify({ threads: getNumThreads(), native, size: o.size, heads: M, head_dim: D, points: P, results }));
    return;
  }
  const f = (t: Timing | undefined): string => (t ? `${t.median_ms.toFixed(2).padStart(9)} (min ${t.min_ms.toFixed(2)})` : '        -');
  console.log(`\n  ${'case'.padEnd(34)} ${'pass'.padEnd(17)} ${'composition ms'.padStart(24)} ${'native ms'.padStart(24)}  speed-up (target >= 5x forward)`);
  for (const r of results) {
    const comp = r.composition as { forward: Timing; forward_backward: Timing };
    const nat = r.native as { forward: Timing; forward_backward: Timing } | undefined;
    const sp = r.speedup as { forward: number; forward_backward: number } | undefined;
    const label = `${r.case} (Lq ${r.queries}, S ${r.S}, L ${r.levels})`;
    for (const pass of ['forward', 'forward_backward'] as const) {
      const speed = sp ? `${sp[pass].toFixed(1)}x${pass === 'forward' ? (sp[pass] >= 5 ? '  met' : '  NOT met') : ''}` : '-';
      console.log(`  ${label.padEnd(34)} ${pass.replace('_', '+').padEnd(17)} ${f(comp[pass]).padStart(24)} ${f(nat?.[pass]).padStart(24)}  ${speed}`);
    }
    if (r.max_rel_diff) {
      const d = r.max_rel_diff as Record<string, number>;
      console.log(`  ${''.padEnd(34)} native vs composition, max|diff|/max|ref|: ` +
        Object.entries(d).map(([k, v]) => `${k} ${v.toExponential(1)}`).join('  '));
    }
  }
}

main();
