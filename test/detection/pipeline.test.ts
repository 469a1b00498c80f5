import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  COCO_TEST_PIPELINE, type DetTestPipelineCfg, detInputTensor, detResizeShape, padShapeOf, prepareDetectionInput,
} from '../../src/tasks/detection/pipeline.js';
import { resizeBilinearHWC } from '../../src/tasks/segmentation/pipeline-image.js';
import { IMAGENET_NORM } from '../../src/tasks/segmentation/configs.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';

/** The README's rule, written out independently: scale = min(1333 / long, 800 / short), int(x · scale + 0.5). */
function expected(h: number, w: number, long = 1333, short = 800): { nh: number; nw: number; sf: number[] } {
  const scale = Math.min(long / Math.max(h, w), short / Math.min(h, w));
  const nw = Math.trunc(w * scale + 0.5);
  const nh = Math.trunc(h * scale + 0.5);
  return { nh, nw, sf: [nw / w, nh / h, nw / w, nh / h].map((x) => new Float32Array([x])[0]!) };
}

function randomImage(h: number, w: number, seed: number): Uint8Array {
  const d = new Uint8Array(h * w * 3);
  let s = seed >>> 0;
  for (let i = 0; i < d.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    d[i] = s >>> 24;
  }
  return d;
}

test('detection resize: sizes and float32 scale_factor for landscape, portrait and square images (1333×800)', () => {
  const cases: [number, number][] = [[480, 640], [640, 427], [500, 500], [75, 103], [1080, 1920], [2000, 300], [800, 1333], [33, 1000]];
  for (const [h, w] of cases) {
    const e = expected(h, w);
    const r = detResizeShape(w, h, COCO_TEST_PIPELINE);
    assert.deepEqual(r.size, [e.nw, e.nh], `${h}x${w}`);
    assert.deepEqual(r.scaleFactor, e.sf, `${h}x${w} scale_factor`);
    assert.ok(Math.max(e.nh, e.nw) <= 1333 && Math.min(e.nh, e.nw) <= 800, 'within the bounds');
    assert.ok(Math.max(e.nh, e.nw) === 1333 || Math.min(e.nh, e.nw) === 800, 'one bound reached');
  }
  // portrait and landscape of the same image are transposes of each other
  assert.deepEqual(detResizeShape(427, 640, COCO_TEST_PIPELINE).size, [...detResizeShape(640, 427, COCO_TEST_PIPELINE).size].reverse());
  // keep_ratio false: exactly img_scale (w, h)
  const fixed: DetTestPipelineCfg = { img_scale: [200, 100], keep_ratio: false, size_divisor: 32 };
  assert.deepEqual(detResizeShape(640, 480, fixed).size, [200, 100]);
});

test('detection pipeline: the fixture\'s img_metas (ori 75x103 at img_scale (160, 96))', { skip: skipUnlessFixtures('detection/maskrcnn_small.json') }, () => {
  const fx = JSON.parse(readFileSync(fixturePath('detection/maskrcnn_small.json'), 'utf8')) as {
    img_metas: { ori_shape: number[]; img_shape: number[]; pad_shape: number[]; scale_factor: number[]; batch_input_shape: number[] }[];
    img_metas_source: { img_scale: [number, number] };
  };
  const m = fx.img_metas[0]!;
  const [h, w] = m.ori_shape as [number, number];
  const cfg: DetTestPipelineCfg = { img_scale: fx.img_metas_source.img_scale, keep_ratio: true, size_divisor: 32 };
  const r = prepareDetectionInput({ data: randomImage(h, w, 3), height: h, width: w }, cfg, IMAGENET_NORM);
  assert.deepEqual(r.meta.oriShape, m.ori_shape.slice(0, 2));
  assert.deepEqual(r.meta.imgShape, m.img_shape.slice(0, 2));
  assert.deepEqual(r.meta.padShape, m.pad_shape.slice(0, 2));
  assert.deepEqual(r.meta.padShape, m.batch_input_shape);
  assert.deepEqual(r.meta.scaleFactor, m.scale_factor, 'float32 scale_factor equal to mmdetection\'s');
});

test('detection pipeline: pad to multiples of 32 with zeros at the bottom/right, resized pixels normalised in RGB order', () => {
  const h = 45;
  const w = 70;
  const img = randomImage(h, w, 11);
  const cfg: DetTestPipelineCfg = { img_scale: [133, 80], keep_ratio: true, size_divisor: 32 };
  const e = expected(h, w, 133, 80);
  const r = prepareDetectionInput({ data: img, height: h, width: w }, cfg, IMAGENET_NORM);
  assert.deepEqual(r.meta.imgShape, [e.nh, e.nw]);
  const [ph, pw] = r.meta.padShape;
  assert.deepEqual([ph, pw], [Math.ceil(e.nh / 32) * 32, Math.ceil(e.nw / 32) * 32]);
  assert.ok(ph % 32 === 0 && pw % 32 === 0 && ph >= e.nh && pw >= e.nw && ph - e.nh < 32 && pw - e.nw < 32);
  assert.equal(r.data.length, 3 * ph * pw);
  const resized = resizeBilinearHWC(img, h, w, e.nh, e.nw);
  const mean = IMAGENET_NORM.mean.map(Math.fround);
  const inv = IMAGENET_NORM.std.map((s) => 1 / Math.fround(s));
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < ph; y++) {
      for (let x = 0; x < pw; x++) {
        const v = r.data[(c * ph + y) * pw + x]!;
        if (y >= e.nh || x >= e.nw) {
          assert.equal(v, 0, `padding at c${c} y${y} x${x}`);
        } else {
          const px = resized[(y * e.nw + x) * 3 + c]!;
          assert.equal(v, Math.fround(Math.fround(px - mean[c]!) * inv[c]!), `c${c} y${y} x${x}`);
        }
      }
    }
  }
  assert.deepEqual(padShapeOf(64, 96, 32), [64, 96], 'already a multiple: no padding');
  const t = detInputTensor(r);
  assert.deepEqual(t.shape, [1, 3, ph, pw]);
  t.dispose();
});

test('detection pipeline: a 1:1 scale keeps the pixels; normalisation values of known bytes', () => {
  // 64x96 at img_scale (96, 64): scale 1, no resize, no padding
  const h = 64;
  const w = 96;
  const img = new Uint8Array(h * w * 3);
  img.set([0, 128, 255], 0); // pixel (0, 0): R=0, G=128, B=255
  img.set([255, 255, 255], 3 * (h * w - 1));
  const r = prepareDetectionInput({ data: img, height: h, width: w }, { img_scale: [96, 64], keep_ratio: true, size_divisor: 32 }, IMAGENET_NORM);
  assert.deepEqual(r.meta.scaleFactor, [1, 1, 1, 1]);
  assert.deepEqual(r.meta.padShape, [64, 96]);
  const at = (c: number, p: number): number => r.data[c * h * w + p]!;
  const f = (v: number, c: number): number => Math.fround(Math.fround(v - Math.fround(IMAGENET_NORM.mean[c]!)) * (1 / Math.fround(IMAGENET_NORM.std[c]!)));
  assert.equal(at(0, 0), f(0, 0));
  assert.equal(at(1, 0), f(128, 1));
  assert.equal(at(2, 0), f(255, 2));
  assert.ok(Math.abs(at(0, 0) - (0 - 123.675) / 58.395) < 1e-5);
  assert.ok(Math.abs(at(2, 0) - (255 - 103.53) / 57.375) < 1e-5);
  assert.equal(at(1, h * w - 1), f(255, 1));
  assert.throws(() => prepareDetectionInput({ data: img.subarray(1), height: h, width: w }, COCO_TEST_PIPELINE, IMAGENET_NORM), /expected 96x64x3 bytes/);
});
