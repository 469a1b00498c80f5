/**
 * Detection kernels: the native RoIAlign (`vit_adapter::roi_align`, forward and forward + backward) against its
 * tensor-op composition, and the native NMS (`vit_adapter::nms`, also through mmcv's `batched_nms`) against the scalar
 * TypeScript reference, on the CPU in one process.
 *
 * RoIAlign: Mask R-CNN's RoI extractor shapes: four FPN maps (strides 4, 8, 16, 32) of an 800×1216 padded image with
 * 256 channels, 1000 RoIs (square-root areas log-uniform in [16, 640] px, mapped to levels by mmdet's rule), outputs
 * 7×7 (box head) and 14×14 (mask head), float32. NMS: 1000 and 5000 clustered boxes, IoU threshold 0.7 (the RPN's),
 * float32; batched NMS over 5 groups (the RPN's levels) with 5000 boxes.
 * Native times are the median of 3 calls (2 in quick mode) after a warm-up call; the composition is timed once.
 * Quick mode: 400×608 image, 64 channels, 200 RoIs.
 *
 *   node dist/bench/detect-kernels.js [--quick] [--json]
 * `benchDetectKernels({ quick })` returns the same figures (bench/detect.ts embeds them).
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Tensor, cat, getNumThreads, manualSeed, noGrad, randn, scope, tensor } from '../src/engine/index.js';
import { batchedNms, hasNativeNms, hasNativeRoIAlign, nms, roiAlign } from '../src/nn/index.js';
import { mulberry32 as rng } from '../src/train/random.js';
import { ms, timeCalls, type Stats } from './common.js';

type Impl = 'native' | 'composition';

const STRIDES = [4, 8, 16, 32];

/** Random RoIs over an H×W image, grouped by mmdet's level rule: per level a (k, 5) float32 tensor (or null). */
function makeRois(n: number, H: number, W: number, seed: number): (Tensor | null)[] {
  const r = rng(seed);
  const per: number[][][] = [[], [], [], []];
  for (let i = 0; i < n; i++) {
    const side = 16 * Math.pow(40, r()); // sqrt(area) in [16, 640]
    const aspect = Math.pow(2, 2 * r() - 1);
    const w = side * Math.sqrt(aspect);
    const h = side / Math.sqrt(aspect);
    const x1 = r() * (W - w * 0.5) - w * 0.25;
    const y1 = r() * (H - h * 0.5) - h * 0.25;
    const lvl = Math.min(3, Math.max(0, Math.floor(Math.log2(Math.sqrt(w * h) / 56 + 1e-6))));
    per[lvl]!.push([0, x1, y1, x1 + w, y1 + h]);
  }
  return per.map((rows) => (rows.length ? tensor(rows, { dtype: 'float32' }) : null));
}

function extract(feats: Tensor[], rois: (Tensor | null)[], size: number, impl: Impl): Tensor[] {
  const out: Tensor[] = [];
  rois.forEach((r, l) => {
    if (r) out.push(roiAlign(feats[l]!, r, { outputSize: size, spatialScale: 1 / STRIDES[l]!, samplingRatio: 0, aligned: true, impl }));
  });
  return out;
}

const row = (native: Stats, reference: Stats): Record<string, number> => ({
  native_ms: native.median_s * 1e3,
  reference_ms: reference.median_s * 1e3,
  speedup: reference.median_s / native.median_s,
});

/** Clustered float32 boxes (as the RPN produces them) with random scores and 5 group ids. */
function makeBoxes(n: number, seed: number): { boxes: Tensor; scores: Tensor; idxs: Tensor } {
  const r = rng(seed);
  const centres = Array.from({ length: Math.max(1, Math.floor(n / 20)) }, () => [r() * 1216, r() * 800]);
  const b: number[][] = [];
  const s: number[] = [];
  const g: number[] = [];
  for (let i = 0; i < n; i++) {
    const [cx, cy] = centres[Math.floor(r() * centres.length)]!;
    const w = 16 + r() * 200;
    const h = 16 + r() * 200;
    const x1 = cx! + (r() - 0.5) * 0.3 * w - w / 2;
    const y1 = cy! + (r() - 0.5) * 0.3 * h - h / 2;
    b.push([x1, y1, x1 + w, y1 + h]);
    s.push(r());
    g.push(Math.floor(r() * 5));
  }
  return { boxes: tensor(b, { dtype: 'float32' }), scores: tensor(s, { dtype: 'float32' }), idxs: tensor(g, { dtype: 'int64' }) };
}

/**
 * Runs the kernel benchmark; `log` receives progress lines. Returns the figures (milliseconds, median of the
 * repeats; `speedup` = reference or composition time / native time).
 */
export async function benchDetectKernels(opts: { quick?: boolean; log?: (s: string) => void } = {}): Promise<Record<string, unknown>> {
  const log = opts.log ?? ((): void => {});
  const quick = opts.quick ?? false;
  if (!hasNativeRoIAlign() || !hasNativeNms()) {
    return { skipped: 'the native roi_align / nms kernels are not built into this addon' };
  }
  const [H, W] = quick ? [400, 608] : [800, 1216];
  const C = quick ? 64 : 256;
  const nRois = quick ? 200 : 1000;
  const repeats = quick ? 2 : 3;
  manualSeed(0);
  const feats = STRIDES.map((s) => randn([1, C, Math.ceil(H / s), Math.ceil(W / s)]));
  const rois = makeRois(nRois, H, W, 7);
  const roiAlignRows: Record<string, unknown>[] = [];
  for (const size of [7, 14]) {
    // the composition takes seconds to minutes per call: one timed call, no warm-up
    const reps = (impl: Impl): [number, number] => (impl === 'native' ? [repeats, 1] : [1, 0]);
    const fwd = (impl: Impl): Stats => timeCalls(() => scope(() => { noGrad(() => extract(feats, rois, size, impl)); }), ...reps(impl));
    const fwdBwd = (impl: Impl): Stats => timeCalls(() => scope(() => {
      const fs = feats.map((f) => f.detach().requiresGrad_());
      const outs = extract(fs, rois, size, impl);
      cat(outs.map((o) => o.flatten()), 0).sum().backward();
    }), ...reps(impl));
    log(`roi_align ${size}x${size}: forward`);
    const fN = fwd('native');
    const fC = fwd('composition');
    log(`roi_align ${size}x${size}: forward + backward`);
    const bN = fwdBwd('native');
    const bC = fwdBwd('composition');
    roiAlignRows.push({
      output: size,
      forward: { native_ms: fN.median_s * 1e3, composition_ms: fC.median_s * 1e3, speedup: fC.median_s / fN.median_s },
      forward_backward: { native_ms: bN.median_s * 1e3, composition_ms: bC.median_s * 1e3, speedup: bC.median_s / bN.median_s },
    });
    log(`  forward ${ms(fN.median_s)} ms native vs ${ms(fC.median_s)} ms composition; forward+backward ${ms(bN.median_s)} vs ${ms(bC.median_s)} ms`);
  }
  const nmsRows: Record<string, unknown>[] = [];
  for (const n of [1000, 5000]) {
    const { boxes, scores, idxs } = makeBoxes(n, 100 + n);
    const kept = nms(boxes, scores, 0.7, { impl: 'native' }).shape[0];
    log(`nms ${n} boxes`);
    const a = timeCalls(() => scope(() => { nms(boxes, scores, 0.7, { impl: 'native' }); }), repeats * 3, 1);
    const b = timeCalls(() => scope(() => { nms(boxes, scores, 0.7, { impl: 'composition' }); }), repeats, 1);
    nmsRows.push({ op: 'nms', boxes: n, kept, ...row(a, b) });
    const ba = timeCalls(() => scope(() => { batchedNms(boxes, scores, idxs, 0.7, { impl: 'native' }); }), repeats * 3, 1);
    const bb = timeCalls(() => scope(() => { batchedNms(boxes, scores, idxs, 0.7, { impl: 'composition' }); }), repeats, 1);
    nmsRows.push({ op: 'batched_nms (5 groups)', boxes: n, kept: batchedNms(boxes, scores, idxs, 0.7).shape[0], ...row(ba, bb) });
    log(`  nms ${ms(a.median_s)} ms native vs ${ms(b.median_s)} ms reference; batched ${ms(ba.median_s)} vs ${ms(bb.median_s)} ms`);
  }
  return {
    threads: getNumThreads(),
    quick,
    roi_align: {
      image: [H, W], channels: C, rois: nRois, dtype: 'float32',
      rois_per_level: rois.map((r) => (r ? r.shape[0] : 0)),
      cases: roiAlignRows,
    },
    nms: { dtype: 'float32', iou_threshold: 0.7, cases: nmsRows },
  };
}

function printReport(r: Record<string, unknown>): void {
  if (r.skipped) {
    console.log(`detect kernels: skipped (${String(r.skipped)})`);
    return;
  }
  const ra = r.roi_align as { image: number[]; channels: number; rois: number; rois_per_level: number[]; cases: Record<string, Record<string, number>>[] };
  console.log(`RoIAlign, ${ra.rois} RoIs (per level ${ra.rois_per_level.join('/')}), ${ra.channels} channels, FPN maps of ${ra.image.join('x')}, float32, ${String(r.threads)} threads`);
  for (const c of ra.cases) {
    const f = c.forward!;
    const b = c.forward_backward!;
    console.log(`  ${String(c.output)}x${String(c.output)}: forward ${f.native_ms!.toFixed(1)} ms native / ${f.composition_ms!.toFixed(1)} ms composition (${f.speedup!.toFixed(1)}x); `
      + `forward+backward ${b.native_ms!.toFixed(1)} / ${b.composition_ms!.toFixed(1)} ms (${b.speedup!.toFixed(1)}x)`);
  }
  const nm = r.nms as { cases: Record<string, number | string>[] };
  console.log('NMS, IoU 0.7, float32 (native vs scalar TypeScript reference)');
  for (const c of nm.cases) {
    console.log(`  ${String(c.op)} ${String(c.boxes)} boxes (${String(c.kept)} kept): ${(c.native_ms as number).toFixed(2)} ms native / `
      + `${(c.reference_ms as number).toFixed(2)} ms reference (${(c.speedup as number).toFixed(1)}x)`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const argv = process.argv.slice(2);
  for (const a of argv) {
    if (a === '-h' || a === '--help') {
      console.log('usage: node dist/bench/detect-kernels.js [--quick] [--json]');
      process.exit(0);
    }
    if (a !== '--quick' && a !== '--json') {
      console.error(`unknown argument ${a}; usage: node dist/bench/detect-kernels.js [--quick] [--json]`);
      process.exit(2);
    }
  }
  const json = argv.includes('--json');
  const r = await benchDetectKernels({ quick: argv.includes('--quick'), log: json ? undefined : (s) => console.error(s) });
  if (json) console.log(JSON.stringify(r, null, 1));
  else printReport(r);
}
