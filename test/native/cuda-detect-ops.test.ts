/**
 * The detection kernels on a real GPU (skipped without one; CI has none): `vit_adapter::roi_align` (forward and
 * backward) and `vit_adapter::nms` on CUDA against the CPU kernels, which the CPU tests tie to the fixtures and to the
 * compositions. scripts/gpu-check.sh runs this file on a device machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cuda, manualSeed, randn, scope, tensor } from '../../src/engine/index.js';
import { batchedNms, nms, roiAlign } from '../../src/nn/index.js';
import { relErr, rng, values } from '../helpers/numeric.js';

const skip = cuda.isAvailable() ? false : 'no CUDA device';

/** RoIs of every kind the CPU tests use: inside, partly outside, thin, empty, beyond the map; batch index 0 or 1. */
function makeRois(n: number, size: number, seed: number): number[] {
  const r = rng(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x1 = (r() * 1.4 - 0.2) * size;
    const y1 = (r() * 1.4 - 0.2) * size;
    const kind = i % 5;
    const w = kind === 0 ? 0 : kind === 1 ? r() * 2 : r() * size * 0.6;
    const h = kind === 2 ? r() * 2 : r() * size * 0.6;
    out.push(i % 2, x1, y1, x1 + w, y1 + h);
  }
  return out;
}

for (const dtype of ['float64', 'float32'] as const) {
  test(`roi_align on CUDA equals the CPU kernel (${dtype}, forward and backward)`, { skip }, () => {
    scope(() => {
      manualSeed(3);
      const x = randn([2, 16, 40, 56], { dtype });
      const rois = tensor(makeRois(300, 4 * 48, 11), { dtype, shape: [300, 5] });
      for (const [outputSize, spatialScale, samplingRatio] of [[7, 0.25, 0], [14, 0.25, 0], [7, 0.125, 2]] as const) {
        const opts = { outputSize, spatialScale, samplingRatio };
        const xc = x.clone().requiresGrad_();
        const yc = roiAlign(xc, rois, opts);
        const g = randn(yc.shape, { dtype });
        yc.backward(g);
        const xg = x.to('cuda').requiresGrad_();
        const yg = roiAlign(xg, rois.to('cuda'), opts);
        yg.backward(g.to('cuda'));
        cuda.synchronize();
        const tol = dtype === 'float64' ? 1e-12 : 1e-5;
        const eOut = relErr(values(yg.to('cpu')), values(yc));
        const eGrad = relErr(values(xg.grad!.to('cpu')), values(xc.grad!));
        assert.ok(eOut <= tol, `output ${outputSize}x${outputSize}: relative error ${eOut} > ${tol}`);
        assert.ok(eGrad <= tol, `input gradient ${outputSize}x${outputSize}: relative error ${eGrad} > ${tol}`);
      }
    });
  });
}

test('nms and batchedNms on CUDA keep the same boxes as the CPU kernel', { skip }, () => {
  scope(() => {
    const r = rng(5);
    for (const n of [0, 1, 500, 3000]) {
      const b: number[] = [];
      const s: number[] = [];
      const idx: number[] = [];
      for (let i = 0; i < n; i++) {
        const cx = Math.floor(r() * 20) * 30 + r() * 8;
        const cy = Math.floor(r() * 20) * 30 + r() * 8;
        const w = 10 + r() * 40;
        const h = 10 + r() * 40;
        b.push(cx, cy, cx + w, cy + h);
        s.push(r());
        idx.push(i % 4);
      }
      const boxes = tensor(b, { dtype: 'float32', shape: [n, 4] });
      const scores = tensor(s, { dtype: 'float32', shape: [n] });
      const groups = tensor(idx, { dtype: 'int64', shape: [n] });
      for (const thr of [0.5, 0.7]) {
        const cpu = values(nms(boxes, scores, thr));
        const gpu = values(nms(boxes.to('cuda'), scores.to('cuda'), thr).to('cpu'));
        assert.deepEqual(gpu, cpu, `nms n=${n} iou=${thr}`);
        const cpuB = values(batchedNms(boxes, scores, groups, thr));
        const gpuB = values(batchedNms(boxes.to('cuda'), scores.to('cuda'), groups.to('cuda'), thr).to('cpu'));
        assert.deepEqual(gpuB, cpuB, `batchedNms n=${n} iou=${thr}`);
      }
    }
  });
});
