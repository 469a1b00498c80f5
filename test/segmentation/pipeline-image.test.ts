import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  rescaleSize,
  rescaleFactor,
  sizeToMultiple,
  resizeBilinearHWC,
  resizeBilinearHWCFloat,
  resizeBilinearHWCFixedPoint,
  normalizeToCHW,
  flipHorizontalHWC,
  rescaleImageHWC,
} from '../../src/tasks/segmentation/pipeline-image.js';

test('rescaleSize: ADE20K test scale (2048, 512)', () => {
  // 683×512 (w×h): factor = min(2048 / 683, 512 / 512) = min(2.9985…, 1) = 1
  //   → (int(683·1 + 0.5), int(512·1 + 0.5)) = (683, 512)
  assert.deepEqual(rescaleSize(683, 512, [2048, 512]), [683, 512]);
  assert.equal(rescaleFactor(683, 512, [2048, 512]), 1);
  // 500×375: factor = min(2048/500 = 4.096, 512/375 = 1.36533…) = 1.36533…
  //   → w = int(682.67 + 0.5) = 683, h = int(512 + 0.5) = 512
  assert.deepEqual(rescaleSize(500, 375, [2048, 512]), [683, 512]);
  // 2000×1000: factor = min(1.024, 0.512) = 0.512 → (1024, 512)
  assert.deepEqual(rescaleSize(2000, 1000, [2048, 512]), [1024, 512]);
  // the order of the pair does not matter (mmcv takes max/min)
  assert.deepEqual(rescaleSize(2000, 1000, [512, 2048]), [1024, 512]);
  // a plain factor: int(10·1.25 + 0.5) = 13, int(7·1.25 + 0.5) = int(9.25) = 9
  assert.deepEqual(rescaleSize(10, 7, 1.25), [13, 9]);
  // ResizeToMultiple(32): 683 → 704, 512 stays
  assert.deepEqual(sizeToMultiple(683, 512, 32), [704, 512]);
});

test('resize of a constant image stays constant (up, down, 2x down, float and bytes)', () => {
  const h = 7;
  const w = 5;
  const u8 = new Uint8Array(h * w * 3).fill(137);
  const f32 = new Float32Array(h * w * 3).fill(0.3);
  for (const [nh, nw] of [
    [13, 11],
    [3, 2],
    [1, 1],
    [7, 5],
  ] as const) {
    assert.ok(resizeBilinearHWC(u8, h, w, nh, nw).every((v) => v === 137), `u8 ${nh}x${nw}`);
    assert.ok(resizeBilinearHWC(f32, h, w, nh, nw).every((v) => v === Math.fround(0.3)), `f32 ${nh}x${nw}`);
  }
  const even = new Uint8Array(8 * 6 * 3).fill(201);
  assert.ok(resizeBilinearHWCFixedPoint(even, 8, 6, 4, 3).every((v) => v === 201));
});

test('2×2 → 4×4 bilinear, computed by hand', () => {
  // Source [[10, 20], [30, 40]]. Half-pixel centres: x_src = (x + 0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25;
  // outside the image the edge pixel is used. Row 0 → [10, 12.5, 17.5, 20], row 1 → [30, 32.5, 37.5, 40];
  // output rows mix them with weights (1,0), (0.75,0.25), (0.25,0.75), (0,1).
  const src = Float32Array.from([10, 20, 30, 40]);
  const expected = [10, 12.5, 17.5, 20, 15, 17.5, 22.5, 25, 25, 27.5, 32.5, 35, 30, 32.5, 37.5, 40];
  assert.deepEqual([...resizeBilinearHWC(src, 2, 2, 4, 4)], expected);
  assert.deepEqual([...resizeBilinearHWCFloat(Uint8Array.from([10, 20, 30, 40]), 2, 2, 4, 4)], expected);
  // OpenCV's 8-bit path (what cv2.resize returns): weights 0.75 → 1536, 0.25 → 512 (×2048);
  // e.g. 12.5: horizontal 10·1536 + 20·512 = 25600; vertical ((1536·(25600>>4))>>16) +
  // ((512·(25600>>4))>>16) = 37 + 12 = 49, (49 + 2) >> 2 = 12. Every x.5 comes out as x here.
  const u8 = resizeBilinearHWC(Uint8Array.from([10, 20, 30, 40]), 2, 2, 4, 4);
  assert.deepEqual([...u8], [10, 12, 17, 20, 15, 17, 22, 25, 25, 27, 32, 35, 30, 32, 37, 40]);
});

test('exact 2× shrink uses the 2×2 box average with OpenCV rounding', () => {
  // One channel 2×4 → 1×2: blocks {0,1,2,3} and {4,5,6,8}: (6+2)>>2 = 2, (23+2)>>2 = 6
  const src = Uint8Array.from([0, 1, 4, 5, 2, 3, 6, 8]);
  assert.deepEqual([...resizeBilinearHWCFixedPoint(src, 2, 4, 1, 2)], [2, 6]);
  // the float version returns the exact means 1.5 and 5.75
  assert.deepEqual([...resizeBilinearHWCFloat(src, 2, 4, 1, 2)], [1.5, 5.75]);
});

test('resize keeps channels apart and validates sizes', () => {
  // 1×2 RGB → 1×4: each channel interpolates on its own
  const src = Uint8Array.from([0, 100, 200, 40, 100, 0]);
  const out = resizeBilinearHWCFloat(src, 1, 2, 1, 4);
  // x_src = −0.25, 0.25, 0.75, 1.25 → weights of pixel 1: 0, 0.25, 0.75, 1
  assert.deepEqual([...out], [0, 100, 200, 10, 100, 150, 30, 100, 50, 40, 100, 0]);
  assert.throws(() => resizeBilinearHWC(new Uint8Array(10), 2, 2, 4, 4), /whole number of channels/);
  const r = rescaleImageHWC(new Uint8Array(4 * 8 * 3).fill(9), 4, 8, [16, 2]);
  assert.deepEqual([r.width, r.height, r.scaleFactor], [4, 2, 0.5]);
  assert.equal(r.data.length, 2 * 4 * 3);
});

test('normalizeToCHW: mmcv imnormalize + HWC→CHW, to_rgb semantics', () => {
  // 1×2 RGB image: pixel0 = (9, 10, 11), pixel1 = (1, 2, 3)
  const img = Uint8Array.from([9, 10, 11, 1, 2, 3]);
  const mean = [1, 2, 3];
  const std = [2, 4, 8];
  // toRgb=true keeps RGB: R plane (9−1)/2, (1−1)/2 = 4, 0; G (10−2)/4, 0 = 2, 0; B (11−3)/8, 0 = 1, 0
  assert.deepEqual([...normalizeToCHW(img, 1, 2, mean, std, true)], [4, 0, 2, 0, 1, 0]);
  // toRgb=false gives BGR planes: B (11−1)/2, (3−1)/2 = 5, 1; G 2, 0; R (9−3)/8, (1−3)/8 = 0.75, −0.25
  assert.deepEqual([...normalizeToCHW(img, 1, 2, mean, std, false)], [5, 1, 2, 0, 0.75, -0.25]);
  // ImageNet stats: (123.675 − 123.675) / 58.395 = 0 exactly
  const n = normalizeToCHW(Uint8Array.from([124, 116, 104]), 1, 1, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], true);
  assert.equal(n[0], Math.fround(Math.fround(124 - Math.fround(123.675)) * (1 / Math.fround(58.395))));
});

test('flipHorizontalHWC mirrors columns and keeps pixel channels together', () => {
  const img = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // 2×2 RGB
  assert.deepEqual([...flipHorizontalHWC(img, 2, 2)], [4, 5, 6, 1, 2, 3, 10, 11, 12, 7, 8, 9]);
  const f = flipHorizontalHWC(Float32Array.from([0.5, 1.5, 2.5]), 1, 3);
  assert.ok(f instanceof Float32Array);
  assert.deepEqual([...f], [2.5, 1.5, 0.5]);
});
