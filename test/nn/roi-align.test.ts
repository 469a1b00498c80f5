/**
 * RoIAlign (src/nn/ops/roi-align.ts): hand-derived values, the native kernel against the tensor-op composition
 * (forward and gradients, float64 and float32), both against the Mask R-CNN fixture's RoI features
 * (../shared/fixtures/detection), error handling, and the CUDA kernels (det_cuda.cu) compiled with nvcc and run under
 * the CPU emulation of native/test/cuda_emu (native/test/build-det-emu.sh).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Tensor, cat, fromBytes, op, randn, manualSeed, tensor, zeros } from '../../src/engine/index.js';
import { readSafetensors } from '../../src/io/index.js';
import { hasNativeRoIAlign, roiAlign, type RoIAlignOptions } from '../../src/nn/index.js';
import { fixturePath, repoRoot, skipUnlessFixtures } from '../helpers/fixtures.js';
import { gradcheck } from '../helpers/gradcheck.js';
import { assertClose, relErr, rng, values } from '../helpers/numeric.js';

const IMPLS = ['composition', 'native'] as const;
const skipNative = hasNativeRoIAlign() ? false : 'native roi_align not built';

/** plane[y][x] = x + 10 y on an H x W map, one channel (bilinear interpolation reproduces it exactly). */
function ramp(H: number, W: number, dtype: 'float32' | 'float64' = 'float64'): Tensor {
  const v: number[] = [];
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) v.push(x + 10 * y);
  return tensor(v, { dtype, shape: [1, 1, H, W] });
}

describe('roiAlign by hand (mmcv aligned semantics)', () => {
  for (const impl of IMPLS) {
    test(`${impl}: bin centres, adaptive 2x2 grid, clamping at the borders, outside RoIs`, { skip: impl === 'native' && skipNative }, () => {
      const x = ramp(4, 4);
      const o = (rois: number[][], opts: Partial<RoIAlignOptions> = {}): Tensor =>
        roiAlign(x, tensor(rois, { dtype: 'float64' }), { outputSize: 1, spatialScale: 1, impl, ...opts });
      // (1,1)-(3,3): start 0.5, size 2 → one bin with a 2x2 grid at x, y ∈ {1, 2} → mean x = 1.5, mean y = 1.5
      assertClose(o([[0, 1, 1, 3, 3]]), [1.5 + 15], { atol: 1e-13 });
      // 2x2 output: bin size 1, one sample per bin at its centre: (1, 1), (2, 1), (1, 2), (2, 2)
      assertClose(o([[0, 1, 1, 3, 3]], { outputSize: 2 }), [11, 12, 21, 22], { shape: [1, 1, 2, 2], atol: 1e-13 });
      // sample x = 3.5 > W - 1 = 3 → column 3; y = 0.5 → halfway between rows 0 and 1
      assertClose(o([[0, 3.5, 0.5, 4.5, 1.5]]), [3 + 5], { atol: 1e-13 });
      // sample y = -0.5 ∈ [-1, 0) → clamped to row 0; x = 0.5
      assertClose(o([[0, 0.5, -0.5, 1.5, 0.5]]), [0.5], { atol: 1e-13 });
      // x = -1.5 < -1 → the sample contributes 0 (and still counts in the average)
      assertClose(o([[0, -2, 1, -1, 2]]), [0], { atol: 1e-13 });
      // a 2-wide RoI half outside: samples x = -1.5 (dropped) and x = -0.5 → 0 (clamped to column 0), y = 1
      assertClose(o([[0, -2, 1, 0, 2]], { outputSize: [1, 1], samplingRatio: 0 }), [(0 + (0 + 10)) / 2], { atol: 1e-13 });
      // empty and inverted RoIs give zeros
      assertClose(o([[0, 2, 2, 2, 2], [0, 3, 3, 1, 1]]), [0, 0], { atol: 0 });
      // aligned = false: start 1, size 2 → samples at 1.5, 2.5 → mean 2 in x and y
      assertClose(o([[0, 1, 1, 3, 3]], { aligned: false }), [2 + 20], { atol: 1e-13 });
      // a fixed sampling ratio of 3 on a 2-wide bin: x = 0.5 + (i + 0.5)·2/3 → mean 1.5 (linear map)
      assertClose(o([[0, 1, 1, 3, 3]], { samplingRatio: 3 }), [1.5 + 15], { atol: 1e-13 });
      // spatial scale 1/2 on image coordinates (2, 2)-(6, 6) = map (1, 1)-(3, 3)
      assertClose(o([[0, 2, 2, 6, 6]], { spatialScale: 0.5 }), [16.5], { atol: 1e-13 });
    });
  }

  test('composition gradients against finite differences (float64)', () => {
    manualSeed(3);
    const x = randn([2, 2, 5, 6], { dtype: 'float64' });
    const rois = tensor([[0, 1, 2, 15, 11], [1, -6, -3, 9, 30], [1, 3, 3, 3.5, 17]], { dtype: 'float64' });
    gradcheck((inp) => roiAlign(inp!, rois, { outputSize: [3, 2], spatialScale: 0.5, impl: 'composition' }), [x]);
  });
});

/** Random RoIs of every kind on maps of size H x W (image size H / scale x W / scale). */
function randomRois(n: number, N: number, H: number, W: number, scale: number, seed: number): number[][] {
  const r = rng(seed);
  const iw = W / scale;
  const ih = H / scale;
  const rois: number[][] = [];
  for (let i = 0; i < n; i++) {
    const b = Math.floor(r() * N);
    const kind = i % 8;
    let x1 = r() * iw;
    let y1 = r() * ih;
    let w = (0.05 + r()) * iw * 0.5;
    let h = (0.05 + r()) * ih * 0.5;
    if (kind === 1) { x1 = -r() * iw * 0.3; y1 = -r() * ih * 0.3; } // partly outside (top-left)
    if (kind === 2) { w = iw; h = ih * 1.2; } // partly outside (bottom-right), large: adaptive grid > 1
    if (kind === 3) { w = r() * 0.5 / scale; } // thin
    if (kind === 4) { w = 0; } // empty
    if (kind === 5) { x1 = iw + 2 / scale + r() * iw; } // entirely beyond the map
    if (kind === 6) { w = -r() * 3 / scale; } // inverted
    if (kind === 7) { w = 3 * iw; h = 3 * ih; x1 = -iw; y1 = -ih; } // covers the map and beyond, big grid
    rois.push([b, x1, y1, x1 + w, y1 + h]);
  }
  return rois;
}

describe('native roi_align against the composition', { skip: skipNative }, () => {
  const levels = [[28, 37, 1 / 4], [14, 19, 1 / 8], [7, 10, 1 / 16], [4, 5, 1 / 32]] as const;
  for (const dtype of ['float64', 'float32'] as const) {
    test(`forward and input gradient on four FPN-like levels, outputs 7 and 14 and 3x5 (${dtype})`, (t) => {
      manualSeed(11);
      let fwd = 0;
      let grad = 0;
      levels.forEach(([H, W, scale], l) => {
        const x = randn([2, 3, H, W], { dtype });
        const rois = tensor(randomRois(40, 2, H, W, scale, 100 + l), { dtype });
        for (const [size, ratio, aligned] of [[7, 0, true], [14, 0, true], [[3, 5], 2, true], [7, 0, false]] as const) {
          const opts = { outputSize: size as number | [number, number], spatialScale: scale, samplingRatio: ratio, aligned };
          const xa = x.detach().requiresGrad_();
          const xb = x.detach().requiresGrad_();
          const a = roiAlign(xa, rois, { ...opts, impl: 'native' });
          const b = roiAlign(xb, rois, { ...opts, impl: 'composition' });
          assert.deepEqual(a.shape, b.shape);
          fwd = Math.max(fwd, relErr(values(a), values(b)));
          const g = randn(a.shape, { dtype });
          a.mul(g).sum().backward();
          b.mul(g).sum().backward();
          grad = Math.max(grad, relErr(values(xa.grad!), values(xb.grad!)));
        }
      });
      t.diagnostic(`${dtype}: forward max rel err ${fwd.toExponential(2)}, gradient ${grad.toExponential(2)}`);
      const tol = dtype === 'float64' ? 1e-13 : 2e-6;
      assert.ok(fwd <= tol, `forward rel err ${fwd} > ${tol}`);
      assert.ok(grad <= tol, `gradient rel err ${grad} > ${tol}`);
    });
  }

  test('the NCHW and channels-last CPU kernels give bit-identical outputs and gradients (float32, float64)', () => {
    const saved = process.env.VITA_ROI_ALIGN_LAYOUT;
    try {
      for (const dtype of ['float32', 'float64'] as const) {
        manualSeed(5);
        const x = randn([2, 16, 20, 27], { dtype });
        const rois = tensor(randomRois(60, 2, 20, 27, 1 / 8, 77), { dtype });
        const g = randn([60, 16, 7, 7], { dtype });
        const run = (layout: string): [number[], number[]] => {
          process.env.VITA_ROI_ALIGN_LAYOUT = layout;
          const xi = x.detach().requiresGrad_();
          const y = roiAlign(xi, rois, { outputSize: 7, spatialScale: 1 / 8, impl: 'native' });
          y.mul(g).sum().backward();
          return [values(y), values(xi.grad!)];
        };
        const [ya, ga] = run('nchw');
        const [yb, gb] = run('nhwc');
        assert.deepEqual(yb, ya, `${dtype} forward`);
        assert.deepEqual(gb, ga, `${dtype} gradient`);
        const xc = x.detach().requiresGrad_();
        const yc = roiAlign(xc, rois, { outputSize: 7, spatialScale: 1 / 8, impl: 'composition' });
        yc.mul(g).sum().backward();
        const tol = dtype === 'float64' ? 1e-13 : 2e-6;
        assert.ok(relErr(ya, values(yc)) <= tol && relErr(ga, values(xc.grad!)) <= tol);
      }
    } finally {
      if (saved === undefined) delete process.env.VITA_ROI_ALIGN_LAYOUT;
      else process.env.VITA_ROI_ALIGN_LAYOUT = saved;
    }
  });

  test('the float32 kernel reproduces the float32 composition sample for sample on an exact case', () => {
    // integer-valued map and RoIs whose sample weights are exact binary fractions: both sums are exact
    const x = ramp(6, 8, 'float32');
    // bins 2 wide with 2 samples: positions and weights are multiples of 1/2; the second RoI drops and clamps samples
    const rois = tensor([[0, 0.5, 0.5, 4.5, 4.5], [0, -1.5, -1.5, 2.5, 2.5], [0, 5.5, 3.5, 9.5, 7.5]], { dtype: 'float32' });
    const a = roiAlign(x, rois, { outputSize: 2, spatialScale: 1, impl: 'native' });
    const b = roiAlign(x, rois, { outputSize: 2, spatialScale: 1, impl: 'composition' });
    assert.deepEqual(values(a), values(b));
  });

  test('without grad and with grad disabled on the input the op still runs; rois get no gradient', () => {
    const x = randn([1, 2, 5, 5], { dtype: 'float64' });
    const rois = tensor([[0, 1, 1, 9, 9]], { dtype: 'float64' }).requiresGrad_();
    const y = roiAlign(x, rois, { outputSize: 2, spatialScale: 0.5, impl: 'native' });
    assert.deepEqual(y.shape, [1, 2, 2, 2]);
    const xg = x.detach().requiresGrad_();
    roiAlign(xg, rois, { outputSize: 2, spatialScale: 0.5, impl: 'native' }).sum().backward();
    assert.ok(xg.grad);
    // every sample is inside the map: each output's weights sum to 1, so the gradient sums to 4 per channel
    assertClose(xg.grad!.sum(), 8, { atol: 1e-12 });
  });
});

describe('empty inputs', () => {
  for (const impl of IMPLS) {
    test(`${impl}: zero RoIs give (0, C, oh, ow) and a zero gradient`, { skip: impl === 'native' && skipNative }, () => {
      const x = randn([1, 3, 4, 4], { dtype: 'float64' }).requiresGrad_();
      const y = roiAlign(x, zeros([0, 5], { dtype: 'float64' }), { outputSize: [2, 3], spatialScale: 1, impl });
      assert.deepEqual(y.shape, [0, 3, 2, 3]);
      y.sum().backward();
      assert.equal(x.grad ? values(x.grad).every((v) => v === 0) : true, true);
    });
  }
});

describe('bad input gives clear errors', () => {
  for (const impl of IMPLS) {
    test(`${impl}: shapes, dtypes, batch indices, non-finite coordinates`, { skip: impl === 'native' && skipNative }, () => {
      const x = randn([2, 1, 4, 4]);
      const r = (v: number[][]): Tensor => tensor(v);
      const o = { outputSize: 2, spatialScale: 1, impl } as const;
      assert.throws(() => roiAlign(randn([1, 4, 4]), r([[0, 0, 0, 1, 1]]), o), /input must be 4-D/);
      assert.throws(() => roiAlign(x, r([[0, 0, 1, 1]]), o), /rois must be \(K, 5\)/);
      assert.throws(() => roiAlign(x.to('int64'), r([[0, 0, 0, 1, 1]]), o), /float32 or float64/);
      assert.throws(() => roiAlign(x, r([[2, 0, 0, 1, 1]]), o), /batch index 2; expected an integer in \[0, 2\)/);
      assert.throws(() => roiAlign(x, r([[0.5, 0, 0, 1, 1]]), o), /batch index/);
      assert.throws(() => roiAlign(x, r([[0, 0, NaN, 1, 1]]), o), /non-finite coordinate/);
      assert.throws(() => roiAlign(x, r([[0, 0, 0, 1, 1]]), { ...o, outputSize: 0 }), /positive integer/);
      assert.throws(() => roiAlign(x, r([[0, 0, 0, 1, 1]]), { ...o, spatialScale: -1 }), /spatialScale/);
      assert.throws(() => roiAlign(x, r([[0, 0, 0, 1, 1]]), { ...o, samplingRatio: -1 }), /samplingRatio/);
    });
  }

  test('the native operators check their arguments (TORCH_CHECK surfaces as a JS exception)', { skip: skipNative }, () => {
    const fwd = op('vit_adapter::roi_align_forward');
    const bwd = op('vit_adapter::roi_align_backward');
    const x = randn([1, 2, 4, 4]);
    const rois64 = tensor([[0, 0, 0, 2, 2]], { dtype: 'float64' });
    assert.throws(() => fwd.t([x.handle, rois64.handle, 2, 2, 1, 0, true]), /rois must have the input's dtype/);
    assert.throws(() => fwd.t([x.handle, x.handle, 2, 2, 1, 0, true]), /rois must be \(K, 5\)/);
    assert.throws(() => fwd.t([x.handle, rois64.to('float32').handle, 0, 2, 1, 0, true]), /output size must be positive/);
    assert.throws(() => fwd.t([x.handle, tensor([[3, 0, 0, 2, 2]]).handle, 2, 2, 1, 0, true]), /batch index 3/);
    assert.throws(() => bwd.t([randn([1, 2, 3, 3]).handle, rois64.to('float32').handle, [1, 2, 4, 4], 2, 2, 1, 0, true]),
      /grad_output must be \(K, C, PH, PW\) = \(1, 2, 2, 2\)/);
    // still usable afterwards
    assert.deepEqual(fwd.t([x.handle, rois64.to('float32').handle, 2, 2, 1, 0, true]).shape, [1, 2, 2, 2]);
  });
});

// ---- the Mask R-CNN fixture --------------------------------------------------------------------------------

const IO = 'detection/maskrcnn_small.io.safetensors';
const STRIDES = [4, 8, 16, 32];

/** mmdet SingleRoIExtractor.map_roi_levels: floor(log2(sqrt(w h) / 56 + 1e-6)) clamped to [0, 3]. */
function roiLevels(rois: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let k = 0; k < rois.length / 5; k++) {
    const s = Math.sqrt((rois[5 * k + 3]! - rois[5 * k + 1]!) * (rois[5 * k + 4]! - rois[5 * k + 2]!));
    out.push(Math.min(3, Math.max(0, Math.floor(Math.log2(s / 56 + 1e-6)))));
  }
  return out;
}

/** The extractor: each RoI on its level's map with scale 1 / stride; rows in the input order. */
function extract(feats: Tensor[], rois: Tensor, levels: number[], size: number, impl: 'native' | 'composition'): Tensor {
  const K = rois.shape[0]!;
  const C = feats[0]!.shape[1]!;
  const out = zeros([K, C, size, size], { dtype: feats[0]!.dtype });
  const rows: Tensor[] = new Array<Tensor>(K);
  for (let l = 0; l < 4; l++) {
    const idx = levels.map((v, k) => (v === l ? k : -1)).filter((k) => k >= 0);
    if (idx.length === 0) continue;
    const sel = rois.indexSelect(0, tensor(idx, { dtype: 'int64' }));
    const y = roiAlign(feats[l]!, sel, { outputSize: size, spatialScale: 1 / STRIDES[l]!, samplingRatio: 0, aligned: true, impl });
    idx.forEach((k, i) => { rows[k] = y.select(0, i); });
  }
  return K === 0 ? out : cat(rows.map((r) => r.unsqueeze(0)), 0);
}

test('RoI features of the Mask R-CNN fixture (proposals, mask RoIs, the hand-made extra RoIs on all four levels)', { skip: skipUnlessFixtures(IO) }, (t) => {
  const { tensors } = readSafetensors(fixturePath(IO));
  const get = (k: string): Tensor => {
    const raw = tensors.get(k);
    if (!raw) throw new Error(`fixture tensor ${k} missing`);
    return fromBytes(raw.data, raw.dtype, raw.shape);
  };
  const neck = [0, 1, 2, 3].map((l) => get(`neck.${l}`));
  const proposals = get('proposals').narrow(1, 0, 4);
  const propRois = cat([zeros([proposals.shape[0]!, 1], { dtype: 'float64' }), proposals], 1);
  const extraRois = get('extra.rois');
  const cases = [
    { name: 'bbox_roi_feats', rois: propRois, size: 7 },
    { name: 'mask_roi_feats', rois: get('mask_rois'), size: 14 },
    { name: 'extra.bbox_roi_feats', rois: extraRois, size: 7 },
    { name: 'extra.mask_roi_feats', rois: extraRois, size: 14 },
  ];
  // the README's level formula reproduces the stored levels and counts
  assert.deepEqual(roiLevels(values(extraRois)), values(get('extra.roi_levels')));
  const propLevels = roiLevels(values(propRois));
  assert.deepEqual([0, 1, 2, 3].map((l) => propLevels.filter((v) => v === l).length), [560, 2, 0, 0]);
  const impls = hasNativeRoIAlign() ? IMPLS : (['composition'] as const);
  for (const impl of impls) {
    for (const dtype of ['float64', 'float32'] as const) {
      const feats = neck.map((f) => f.to(dtype));
      for (const c of cases) {
        const rois = c.rois.to(dtype);
        const out = extract(feats, rois, roiLevels(values(c.rois)), c.size, impl);
        const ref = get(c.name);
        assert.deepEqual(out.shape, ref.shape, c.name);
        const err = relErr(values(out), values(ref));
        t.diagnostic(`${impl} ${dtype} ${c.name}: max |out - ref| / max |ref| = ${err.toExponential(2)}`);
        const tol = dtype === 'float64' ? 1e-12 : 1e-4;
        assert.ok(err <= tol, `${impl} ${dtype} ${c.name}: rel err ${err} > ${tol}`);
      }
    }
  }
});

// ---- CUDA kernels (no GPU here): nvcc compilation and a CPU emulation run -------------------------------------

function findNvcc(): string | null {
  for (const c of [process.env.NVCC, '/usr/local/cuda/bin/nvcc', '/usr/local/bin/nvcc']) if (c && existsSync(c)) return c;
  const r = spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

test('det_cuda.cu compiles with nvcc (sm_80)', { skip: findNvcc() ? false : 'nvcc not installed', timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vita-det-nvcc-'));
  try {
    const r = spawnSync(findNvcc()!, ['-std=c++17', '-O2', '-c', join(repoRoot(), 'native/src/det_cuda.cu'), '-o', join(dir, 'det_cuda.o'),
      '-gencode', 'arch=compute_80,code=sm_80'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `nvcc failed:\n${r.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('detection CUDA kernels under CPU emulation match the CPU operators (RoIAlign forward bit-identical, NMS identical)', { timeout: 600_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vita-det-emu-'));
  try {
    const r = spawnSync('bash', [join(repoRoot(), 'native/test/build-det-emu.sh')], { encoding: 'utf8', env: { ...process.env, OUT_DIR: dir } });
    assert.equal(r.status, 0, `emulation test failed:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
    assert.match(r.stdout, /detection CUDA emulation: all passed/);
    const rows = r.stdout.split('\n').filter((l) => /^ {2}(roi_align|nms) /.test(l));
    assert.ok(rows.length === 12 && rows.every((l) => l.trimEnd().endsWith('ok')), rows.join('\n'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
