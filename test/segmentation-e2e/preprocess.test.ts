import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getPreset } from '../../src/tasks/segmentation/configs.js';
import { prepareTestImage, resizeForTest, scaleForRatio } from '../../src/tasks/segmentation/inference.js';
import { rescaleSize } from '../../src/tasks/segmentation/pipeline-image.js';

const MEAN = [123.675, 116.28, 103.53];
const STD = [58.395, 57.12, 57.375];
/** mmcv's normalisation of one value, in float32 as cv2 computes it (mmseg keeps mean and std as float32). */
const norm = (v: number, c: number): number => Math.fround(Math.fround(v - Math.fround(MEAN[c]!)) * (1 / Math.fround(STD[c]!)));

function image(w: number, h: number, f: (x: number, y: number, c: number) => number): { data: Uint8Array; height: number; width: number } {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = f(x, y, c);
  return { data, height: h, width: w };
}

test('ADE20K test pipeline: sizes from rescale_size with (2048, 512) and ResizeToMultiple(32)', () => {
  const cfg = getPreset('upernet_deit_adapter_tiny_512_160k_ade20k');
  assert.deepEqual(cfg.test_pipeline.img_scale, [2048, 512]);
  assert.deepEqual(rescaleSize(683, 512, [2048, 512]), [683, 512]);
  assert.deepEqual(rescaleSize(500, 375, [2048, 512]), [683, 512]);
  assert.deepEqual(rescaleSize(1366, 1024, [2048, 512]), [683, 512]);
  assert.deepEqual(rescaleSize(256, 192, [2048, 512]), [683, 512]);
  assert.deepEqual(rescaleSize(3000, 500, [2048, 512]), [2048, 341]);
  const img = image(683, 512, (x, y, c) => (x * 7 + y * 3 + c * 50) % 256);
  const r = resizeForTest(img, cfg.test_pipeline);
  assert.deepEqual([r.resizedWidth, r.resizedHeight, r.width, r.height], [683, 512, 704, 512]);
  // MultiScaleFlipAug scales: (int(2048·r), int(512·r))
  assert.deepEqual(scaleForRatio([2048, 512], 0.75), [1536, 384]);
  assert.deepEqual(scaleForRatio([2048, 512], 1.75), [3584, 896]);
  const half = resizeForTest(img, cfg.test_pipeline, 0.5);
  assert.deepEqual([half.resizedWidth, half.resizedHeight, half.width, half.height], [342, 256, 352, 256]);
});

test('683×512 RGB image: normalised CHW values by hand (no resize needed)', () => {
  const cfg = getPreset('upernet_deit_adapter_tiny_512_160k_ade20k');
  cfg.test_pipeline.size_divisor = null;
  const f = (x: number, y: number, c: number): number => (x * 7 + y * 3 + c * 50) % 256;
  const img = image(683, 512, f);
  const p = prepareTestImage(img, cfg);
  assert.deepEqual([p.width, p.height, p.data.length], [683, 512, 3 * 683 * 512]);
  const plane = 683 * 512;
  for (const [x, y] of [[0, 0], [682, 0], [100, 200], [682, 511], [341, 256]] as const) {
    for (let c = 0; c < 3; c++) {
      assert.equal(p.data[c * plane + y * 683 + x], norm(f(x, y, c), c), `(${x}, ${y}, ${c})`);
    }
  }
  // (0, 0): R = 0 → (0 − 123.675) / 58.395; G = 50 → (50 − 116.28) / 57.12; B = 100 → (100 − 103.53) / 57.375
  assert.ok(Math.abs(p.data[0]! - -2.1179) < 1e-4);
  assert.ok(Math.abs(p.data[plane]! - -1.1604) < 1e-4);
  assert.ok(Math.abs(p.data[2 * plane]! - -0.0615) < 1e-4);
  // flip: column x of the flipped input is column w−1−x of the original
  const q = prepareTestImage(img, cfg, { flip: true });
  assert.equal(q.data[0], norm(f(682, 0, 0), 0));
  assert.equal(q.data[plane + 5 * 683 + 10], norm(f(672, 5, 1), 1));
  // to_rgb false gives BGR planes
  cfg.img_norm_cfg.to_rgb = false;
  const bgr = prepareTestImage(img, cfg);
  assert.equal(bgr.data[0], Math.fround(Math.fround(f(0, 0, 2) - Math.fround(MEAN[0]!)) * (1 / Math.fround(STD[0]!))));
});

test('1366×1024 image → 683×512: the uint8 image is resized (cv2 2× shrink = rounded 2×2 mean), then normalised', () => {
  const cfg = getPreset('upernet_deit_adapter_tiny_512_160k_ade20k');
  cfg.test_pipeline.size_divisor = null;
  const f = (x: number, y: number, c: number): number => (x * 11 + y * 5 + c * 80 + ((x ^ y) & 7)) % 256;
  const big = image(1366, 1024, f);
  const p = prepareTestImage(big, cfg);
  assert.deepEqual([p.width, p.height], [683, 512]);
  const plane = 683 * 512;
  for (const [x, y] of [[0, 0], [1, 0], [300, 100], [682, 511]] as const) {
    for (let c = 0; c < 3; c++) {
      const s = f(2 * x, 2 * y, c) + f(2 * x + 1, 2 * y, c) + f(2 * x, 2 * y + 1, c) + f(2 * x + 1, 2 * y + 1, c);
      const v = (s + 2) >> 2; // OpenCV INTER_LINEAR at exactly ½ in both axes
      assert.equal(p.data[c * plane + y * 683 + x], norm(v, c), `(${x}, ${y}, ${c})`);
    }
  }
});

test('AugReg configs normalise with mean = std = 127.5', () => {
  const cfg = getPreset('upernet_augreg_adapter_large_512_160k_ade20k');
  cfg.test_pipeline.size_divisor = null;
  cfg.test_pipeline.img_scale = [64, 32];
  const img = image(64, 32, () => 255);
  const p = prepareTestImage(img, cfg);
  assert.equal(p.data[0], Math.fround(Math.fround(255 - 127.5) * (1 / 127.5)));
});
