import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type Tensor, arange, conv2d, fromBytes, manualSeed, noGrad, randn, scope, tensor } from '../../src/engine/index.js';
import { getPreset, type SegConfig } from '../../src/tasks/segmentation/configs.js';
import {
  type SegModel, inferLogits, segmentImage, slideCountMap, slideInference, slideWindows, wholeInference,
} from '../../src/tasks/segmentation/inference.js';

/** A pointwise model: logits = 1×1 conv of the input (4 classes), so overlapping windows agree exactly. */
function pointwiseStub(): SegModel & { shapes: number[][] } {
  const w = tensor([[0.5, -1, 0.2], [-0.3, 0.8, 0.1], [0.9, 0.4, -0.7], [-0.2, -0.1, 0.6]]).reshape(4, 3, 1, 1).keep();
  const b = tensor([0.1, -0.2, 0, 0.05]).keep();
  const shapes: number[][] = [];
  return { shapes, encodeDecode: (img: Tensor) => { shapes.push(img.shape); return conv2d(img, w, b); } };
}

/** A position-aware model: the pointwise logits plus the column index *within the window* (tests the placement). */
function windowRampStub(): SegModel {
  const base = pointwiseStub();
  return {
    encodeDecode: (img: Tensor) => {
      const [, , , wd] = img.shape as [number, number, number, number];
      return base.encodeDecode(img).add(arange(0, wd, 1, { dtype: 'float32' }).reshape(1, 1, 1, wd));
    },
  };
}

const pyGrids = (size: number, crop: number, stride: number): number => Math.floor(Math.max(size - crop + stride - 1, 0) / stride) + 1;

test('slide windows and counts: 683×512 image (w×h), crop 512, stride 341', () => {
  const wins = slideWindows(512, 683, [512, 512], [341, 341]);
  assert.equal(pyGrids(512, 512, 341), 1);
  assert.equal(pyGrids(683, 512, 341), 2);
  assert.deepEqual(wins, [{ y1: 0, y2: 512, x1: 0, x2: 512 }, { y1: 0, y2: 512, x1: 171, x2: 683 }]);
  const count = slideCountMap(512, 683, [512, 512], [341, 341]);
  for (const y of [0, 255, 511]) {
    for (let x = 0; x < 683; x++) assert.equal(count[y * 683 + x], x >= 171 && x < 512 ? 2 : 1, `count at (${x}, ${y})`);
  }
  // The same image after ResizeToMultiple(32): 704 wide.
  assert.deepEqual(slideWindows(512, 704, [512, 512], [341, 341]).map((w) => [w.x1, w.x2]), [[0, 512], [192, 704]]);
  // Larger images: the grid formula, full coverage, every window inside the image and crop-sized.
  for (const [h, w] of [[1000, 1500], [512, 2048], [700, 513], [300, 200]] as const) {
    const ws = slideWindows(h, w, [512, 512], [341, 341]);
    assert.equal(ws.length, pyGrids(h, 512, 341) * pyGrids(w, 512, 341));
    for (const win of ws) {
      assert.ok(win.y1 >= 0 && win.x1 >= 0 && win.y2 <= h && win.x2 <= w);
      assert.equal(win.y2 - win.y1, Math.min(512, h));
      assert.equal(win.x2 - win.x1, Math.min(512, w));
    }
    assert.ok(slideCountMap(h, w, [512, 512], [341, 341]).every((c) => c >= 1));
  }
});

test('slide == whole for a pointwise model; window placement and averaging are exact', () => {
  noGrad(() => scope(() => {
    manualSeed(3);
    const img = randn([1, 3, 96, 160]);
    const stub = pointwiseStub();
    const whole = wholeInference(stub, img);
    const slide = slideInference(stub, img, [64, 64], [48, 48]);
    assert.deepEqual(slide.shape, [1, 4, 96, 160]);
    assert.ok(slide.sub(whole).abs().max().item() < 1e-5);
    // windows: 2 rows × 3 columns, all 64×64
    assert.equal(stub.shapes.filter((s) => s[2] === 64 && s[3] === 64).length, 6);

    // With a window-relative ramp, each pixel's value is pointwise + mean of (x − x1) over the windows covering it.
    const ramp = slideInference(windowRampStub(), img, [64, 64], [48, 48]);
    const diff = ramp.sub(whole).select(1, 0).select(0, 0).toTypedArray() as Float32Array;
    const wins = slideWindows(96, 160, [64, 64], [48, 48]);
    for (const [y, x] of [[0, 0], [10, 47], [40, 50], [95, 100], [95, 159], [50, 96]] as const) {
      const cover = wins.filter((w) => y >= w.y1 && y < w.y2 && x >= w.x1 && x < w.x2);
      const expected = cover.reduce((s, w) => s + (x - w.x1), 0) / cover.length;
      assert.ok(Math.abs(diff[y * 160 + x]! - expected) < 1e-4, `(${x}, ${y}): ${diff[y * 160 + x]} vs ${expected}`);
    }
  }));
});

test('inputs that are not multiples of 32 are padded for the network and cropped back', () => {
  noGrad(() => scope(() => {
    const img = randn([1, 3, 50, 70]);
    const stub = pointwiseStub();
    const whole = wholeInference(stub, img);
    assert.deepEqual(stub.shapes.at(-1), [1, 3, 64, 96]);
    assert.deepEqual(whole.shape, [1, 4, 50, 70]);
    const direct = stub.encodeDecode(img);
    assert.ok(whole.sub(direct).abs().max().item() < 1e-6);
    stub.shapes.length = 0;
    const slide = inferLogits(stub, img, { mode: 'slide', crop_size: [64, 64], stride: [48, 48] });
    // h 50 < 64: one row of 50-high windows; w 70: two windows [0, 64) and [6, 70); each padded to 64×64
    assert.deepEqual(stub.shapes, [[1, 3, 64, 64], [1, 3, 64, 64]]);
    assert.ok(slide.sub(direct).abs().max().item() < 1e-5);
  }));
});

function rampImage(h: number, w: number): { data: Uint8Array; height: number; width: number } {
  const data = new Uint8Array(h * w * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = (x * 5 + y * 3 + c * 70 + ((x * y) % 17)) % 256;
  return { data, height: h, width: w };
}

function smallConfig(): SegConfig {
  const c = getPreset('upernet_deit_adapter_tiny_512_160k_ade20k');
  c.test_pipeline.img_scale = [256, 64];
  c.model.test_cfg = { mode: 'slide', crop_size: [64, 64], stride: [48, 48] };
  return c;
}

test('segmentImage: slide == whole, flip TTA == no flip for a flip-equivariant model', () => {
  const img = rampImage(72, 150);
  const cfg = smallConfig();
  const stub = pointwiseStub();
  const slide = segmentImage(stub, img, cfg, { mode: 'slide' });
  const whole = segmentImage(stub, img, cfg, { mode: 'whole' });
  const flipped = segmentImage(stub, img, cfg, { mode: 'slide', flip: true });
  assert.equal(slide.height, 72);
  assert.equal(slide.width, 150);
  assert.equal(slide.labels.length, 72 * 150);
  assert.equal(slide.numClasses, 4);
  assert.deepEqual(slide.labels, whole.labels);
  assert.deepEqual(flipped.labels, slide.labels);
  assert.deepEqual(flipped.copies.map((c) => c.flip), [false, true]);
  // 150×72 → rescale to (256, 64) bounds → 133×64 → ResizeToMultiple(32) → 160×64
  assert.deepEqual([slide.copies[0]!.inputWidth, slide.copies[0]!.inputHeight], [160, 64]);
  const shares = slide.classShares.reduce((s, c) => s + c.share, 0);
  assert.ok(Math.abs(shares - 1) < 1e-12);
  assert.ok(slide.classShares.every((c, i, a) => i === 0 || a[i - 1]!.pixels >= c.pixels));
});

test('multi-scale TTA averages every (scale, flip) copy; a position-dependent model changes under flip', () => {
  const img = rampImage(64, 96);
  const cfg = smallConfig();
  const r = segmentImage(pointwiseStub(), img, cfg, { mode: 'whole', scales: [0.5, 1.0, 1.5], flip: true });
  assert.equal(r.copies.length, 6);
  assert.deepEqual(r.copies.map((c) => c.ratio), [0.5, 0.5, 1.0, 1.0, 1.5, 1.5]);
  assert.equal(r.labels.length, 64 * 96);
  // A model with a strong left-to-right ramp: flipping the input moves the ramp, so the flip copy disagrees.
  const rampy: SegModel = {
    encodeDecode: (x: Tensor) => {
      const [, , h, w] = x.shape as [number, number, number, number];
      const cols = arange(0, w, 1, { dtype: 'float32' }).div(w).reshape(1, 1, 1, w).expand(1, 1, h, w);
      return fromBytes(new Float32Array(h * w), 'float32', [1, 1, h, w]).add(cols).sub(0.5).mul(tensor([10, -10]).reshape(1, 2, 1, 1));
    },
  };
  const plain = segmentImage(rampy, img, cfg, { mode: 'whole' });
  const tta = segmentImage(rampy, img, cfg, { mode: 'whole', flip: true });
  assert.equal(plain.labels[0], 1);
  assert.equal(plain.labels[95], 0);
  assert.notDeepEqual(tta.labels, plain.labels);
});
