/**
 * The test-pipeline steps of the authors' multi-scale Mask2Former configs: `SETR_Resize` (setr_multi_scale) and
 * `PadShortSide`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type TestPipelineCfg, loadConfig, padShortSideCHW, prepareTestImage, resizeForTest, setrResizeSize,
} from '../../src/tasks/segmentation/index.js';

const PIPE: TestPipelineCfg = { img_scale: [2048, 640], keep_ratio: true, size_divisor: null, flip: true, img_ratios: null };

test('SETR_Resize: the short side is max(crop, min(scale)), the long side follows the aspect ratio', () => {
  // 500×375 (w×h) at ratio 0.5: scale (1024, 320) → short side max(640, 320) = 640, long 640·500/375 = 853.3 → 853
  assert.deepEqual(setrResizeSize(500, 375, [1024, 320], [640, 640]), [853, 640]);
  // ratio 1.5: scale (3072, 960) → short side 960, long 1280
  assert.deepEqual(setrResizeSize(500, 375, [3072, 960], [640, 640]), [1280, 960]);
  // portrait: the short side is the width
  assert.deepEqual(setrResizeSize(300, 600, [2048, 640], [640, 640]), [640, 1280]);
  const img = { data: new Uint8Array(500 * 375 * 3).fill(7), height: 375, width: 500 };
  const setr = resizeForTest(img, { ...PIPE, setr_crop_size: [640, 640] }, 0.5);
  assert.deepEqual([setr.width, setr.height], [853, 640]);
  // plain Resize(keep_ratio) at the same ratio bounds the image by (1024, 320) instead
  const plain = resizeForTest(img, PIPE, 0.5);
  assert.deepEqual([plain.width, plain.height], [427, 320]);
});

test('PadShortSide: bottom/right padding to at least size×size, with normalised 0 or the normalised raw 0', () => {
  const data = Float32Array.from({ length: 3 * 2 * 3 }, (_, i) => i + 1); // 3×2×3
  const p = padShortSideCHW(data, 2, 3, 4, [-1, -2, -3]);
  assert.deepEqual([p.height, p.width], [4, 4]);
  assert.deepEqual(Array.from(p.data.subarray(0, 16)), [1, 2, 3, -1, 4, 5, 6, -1, -1, -1, -1, -1, -1, -1, -1, -1]);
  assert.deepEqual(Array.from(p.data.subarray(32, 36)), [13, 14, 15, -3]);
  // no padding when both sides reach the size
  assert.equal(padShortSideCHW(data, 2, 3, 2, [0, 0, 0]).data, data);
  const cfg = loadConfig('upernet_deit_adapter_tiny_512_160k_ade20k');
  cfg.test_pipeline = { ...PIPE, img_scale: [64, 32], pad_short_side: { size: 48, before_normalize: true } };
  const img = { data: new Uint8Array(40 * 20 * 3).fill(200), height: 20, width: 40 };
  const prep = prepareTestImage(img, cfg, { flip: true });
  assert.deepEqual([prep.height, prep.width], [48, 64]); // resized to 64×32, padded to 64×48
  const { mean, std } = cfg.img_norm_cfg;
  const at = (c: number, y: number, x: number): number => prep.data[(c * 48 + y) * 64 + x]!;
  for (let c = 0; c < 3; c++) {
    assert.ok(Math.abs(at(c, 0, 0) - (200 - mean[c]!) / std[c]!) < 1e-5);
    assert.ok(Math.abs(at(c, 40, 10) - (0 - mean[c]!) / std[c]!) < 1e-5, 'raw 0 normalised below the image');
  }
  cfg.test_pipeline.pad_short_side = { size: 48, before_normalize: false };
  assert.equal(prepareTestImage(img, cfg).data[(0 * 48 + 40) * 64 + 10], 0);
  // config validation
  assert.throws(() => loadConfig('upernet_deit_adapter_tiny_512_160k_ade20k', { test_pipeline: { pad_short_side: { size: 0, before_normalize: true } } }),
    /pad_short_side must be/);
  assert.throws(() => loadConfig('upernet_deit_adapter_tiny_512_160k_ade20k', { test_pipeline: { setr_crop_size: [640] as never } }),
    /setr_crop_size must be a pair/);
});
