/**
 * The training pipeline against ../shared/fixtures/training/pipeline_cases.{json,safetensors}: every
 * case, byte for byte (float32 bit for bit), with the fixtures' forced random draws consumed in
 * order with their exact arguments. Arrays shipped only as sha256 are compared by hash.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';
import { readSafetensors, type RawTensor } from '../helpers/safetensors-mini.js';
import { ForcedRandom, SeededRandom, type RecordedDraw, type SeededRandomState } from '../../src/train/random.js';
import { bgrToHsv, hsvToBgr } from '../../src/tasks/segmentation/cv-color.js';
import { normalizeToCHW, resizeBilinearHWC, resizeBilinearHWCFixedPointRegion, resizeNearestHWC } from '../../src/tasks/segmentation/pipeline-image.js';
import {
  ADE20K_TRAIN_PIPELINE,
  PHOTOMETRIC_DEFAULT,
  adjustBrightness,
  adjustContrast,
  adjustHue,
  adjustSaturation,
  cropHWC,
  hwcToChw,
  labelToInt64,
  normalizeHWC,
  normalizeLut,
  padHWC,
  photoMetricDistortion,
  photoMetricSteps,
  randomCrop,
  randomFlip,
  randomResize,
  reduceZeroLabel,
  resizePlan,
  sampleResizeRatio,
  scaledTrainPipelineCfg,
  trainPipeline,
  type ImageLabelPair,
  type PhotoMetricCfg,
  type TrainPipelineCfg,
} from '../../src/tasks/segmentation/pipeline-train.js';

const SKIP = skipUnlessFixtures('training/pipeline_cases.json');

interface ArrayInfo {
  shape: number[];
  dtype: string;
  sha256: string;
  key?: string;
}
interface Case {
  name: string;
  kind: string;
  arrays: Record<string, ArrayInfo>;
  draws?: RecordedDraw[];
  [k: string]: unknown;
}
interface Fixture {
  cases: Case[];
  size_table_config_scale: {
    h: number;
    w: number;
    draw: number;
    ratio: number;
    scale: [number, number];
    scale_factor: number;
    new_w: number;
    new_h: number;
    w_scale: number;
    h_scale: number;
  }[];
}

let fixture: Fixture | null = null;
let tensors: Map<string, RawTensor> | null = null;
function load(): { fx: Fixture; st: Map<string, RawTensor> } {
  if (fixture === null) {
    fixture = JSON.parse(readFileSync(fixturePath('training', 'pipeline_cases.json'), 'utf8')) as Fixture;
    tensors = readSafetensors(fixturePath('training', 'pipeline_cases.safetensors'));
  }
  return { fx: fixture, st: tensors! };
}
function getCase(name: string): Case {
  const c = load().fx.cases.find((k) => k.name === name);
  if (!c) throw new Error(`fixture case ${name} missing`);
  return c;
}
function casesOfKind(kind: string): Case[] {
  return load().fx.cases.filter((c) => c.kind === kind);
}

type AnyArray = Uint8Array | Float32Array | BigInt64Array;
const DTYPE: Record<string, string> = { uint8: 'U8', float32: 'F32', int64: 'I64' };

function bytesOf(a: AnyArray): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}
function sha256(a: AnyArray): string {
  return createHash('sha256').update(bytesOf(a)).digest('hex');
}

/** A stored uint8 array (copied, so tests can't alias the file buffer). */
function u8(c: Case, key: string): Uint8Array {
  const info = c.arrays[key];
  assert.ok(info?.key, `${c.name}.${key} is not stored`);
  const t = load().st.get(info.key)!;
  assert.equal(t.dtype, 'U8', `${c.name}.${key} dtype`);
  assert.equal(sha256(t.data), info.sha256, `${c.name}.${key}: stored bytes do not match the listed sha256`);
  return new Uint8Array(t.data);
}
function f32(c: Case, key: string): Float32Array {
  const info = c.arrays[key];
  assert.ok(info?.key, `${c.name}.${key} is not stored`);
  const t = load().st.get(info.key)!;
  assert.equal(t.dtype, 'F32', `${c.name}.${key} dtype`);
  const copy = new Uint8Array(t.data);
  return new Float32Array(copy.buffer);
}
function shapeOf(c: Case, key: string): number[] {
  const info = c.arrays[key];
  assert.ok(info, `${c.name}: no array ${key}`);
  return info.shape;
}

/**
 * Asserts `actual` equals fixture array `key`: same dtype and element count, same sha256 of the raw
 * bytes; where the array is stored, the first differing element is reported on failure.
 */
function expectArray(c: Case, key: string, actual: AnyArray, shape?: number[]): void {
  const info = c.arrays[key];
  assert.ok(info, `${c.name}: no array ${key}`);
  const expDtype = DTYPE[info.dtype];
  const actDtype = actual instanceof Uint8Array ? 'U8' : actual instanceof Float32Array ? 'F32' : 'I64';
  assert.equal(actDtype, expDtype, `${c.name}.${key}: dtype`);
  if (shape) assert.deepEqual(shape, info.shape, `${c.name}.${key}: shape`);
  const n = info.shape.reduce((a, b) => a * b, 1);
  assert.equal(actual.length, n, `${c.name}.${key}: ${actual.length} elements, expected ${n} (${info.shape.join('x')})`);
  const h = sha256(actual);
  if (h === info.sha256) return;
  let detail = '';
  if (info.key) {
    const t = load().st.get(info.key)!;
    const a = bytesOf(actual);
    const bytesPer = a.length / n;
    for (let i = 0; i < a.length; i++) {
      if (a[i] !== t.data[i]) {
        const e = Math.floor(i / bytesPer);
        const exp =
          actDtype === 'U8'
            ? t.data[e]
            : actDtype === 'F32'
              ? new Float32Array(new Uint8Array(t.data.subarray(e * 4, e * 4 + 4)).buffer)[0]
              : new BigInt64Array(new Uint8Array(t.data.subarray(e * 8, e * 8 + 8)).buffer)[0];
        const diff = [...a].filter((v, j) => v !== t.data[j]).length;
        detail = `; first difference at element ${e} (index ${info.shape.map((_, d) => Math.floor(e / info.shape.slice(d + 1).reduce((x, y) => x * y, 1)) % info.shape[d]!).join(',')}): got ${actual[e]}, expected ${exp}; ${diff} bytes differ`;
        break;
      }
    }
  }
  assert.fail(`${c.name}.${key}: sha256 ${h} differs from the fixture's ${info.sha256}${detail}`);
}

function pairOf(c: Case, imgKey = 'in.img', segKey = 'in.seg'): ImageLabelPair {
  const [height, width] = shapeOf(c, imgKey);
  return { img: u8(c, imgKey), label: u8(c, segKey), height: height!, width: width! };
}

/** BGR ↔ RGB swap of an HWC 3-channel array (new array). */
function swapRB<T extends Uint8Array | Float32Array>(a: T): T {
  const o = a.slice() as T;
  for (let i = 0; i < a.length; i += 3) {
    o[i] = a[i + 2]!;
    o[i + 2] = a[i]!;
  }
  return o;
}

function pmdCfg(c: Case): PhotoMetricCfg {
  const t = c.transform as { brightness_delta: number; contrast_range: [number, number]; saturation_range: [number, number]; hue_delta: number };
  return { brightnessDelta: t.brightness_delta, contrastRange: t.contrast_range, saturationRange: t.saturation_range, hueDelta: t.hue_delta };
}

// ----------------------------------------------------------------------------------------------
// Random sources

test('SeededRandom: save/restore (through JSON) reproduces the stream exactly; derived streams differ', () => {
  const r = new SeededRandom(1234);
  for (let i = 0; i < 17; i++) r.randomSample();
  const saved = JSON.parse(JSON.stringify(r.getState())) as SeededRandomState;
  const run = (g: SeededRandom): number[] => {
    const v: number[] = [];
    for (let i = 0; i < 50; i++) v.push(g.randomSample(), g.rand(), g.randint(0, 513), g.randint(2), g.randint(-18, 18), g.uniform(-32, 32));
    return v;
  };
  const a = run(r);
  const b = run(SeededRandom.fromState(saved));
  assert.deepEqual(b, a);
  const c = new SeededRandom(99);
  c.setState(saved);
  assert.deepEqual(run(c), a);
  // same seed → same stream; other seed or key → another stream
  assert.deepEqual(run(new SeededRandom(5, 1, 2)), run(new SeededRandom(5, 1, 2)));
  assert.notDeepEqual(run(new SeededRandom(5, 1, 2)), run(new SeededRandom(5, 1, 3)));
  assert.notDeepEqual(run(new SeededRandom(5)), run(new SeededRandom(6)));
  assert.throws(() => r.setState({ algorithm: 'xoshiro128**', s: [0, 0, 0, 0] }), /not all 0/);
  assert.throws(() => r.setState({ algorithm: 'mt19937', s: [1, 2, 3, 4] } as unknown as SeededRandomState), /xoshiro128/);
});

test('SeededRandom: ranges and rough uniformity (numpy semantics)', () => {
  const r = new SeededRandom(7);
  const hist = new Array<number>(36).fill(0);
  let lo = 1;
  let hi = 0;
  for (let i = 0; i < 36000; i++) {
    const v = r.randint(-18, 18);
    assert.ok(Number.isInteger(v) && v >= -18 && v < 18, `randint(-18, 18) gave ${v}`);
    hist[v + 18]!++;
    const u = r.randomSample();
    lo = Math.min(lo, u);
    hi = Math.max(hi, u);
    assert.ok(u >= 0 && u < 1);
    const f = r.uniform(0.5, 1.5);
    assert.ok(f >= 0.5 && f < 1.5);
    const b = r.randint(2);
    assert.ok(b === 0 || b === 1);
  }
  // each of 36 bins expects 1000; a 5-sigma band is about ±160
  for (const n of hist) assert.ok(n > 800 && n < 1200, `randint bin count ${n}`);
  assert.ok(lo < 0.001 && hi > 0.999);
  assert.equal(r.randint(5, 6), 5);
  assert.throws(() => r.randint(3, 3), /empty range/);
});

test('ForcedRandom: checks function and arguments of every call', () => {
  const f = new ForcedRandom([
    { fn: 'randint', args: [0, 9], value: 4 },
    { fn: 'randint', args: [2], value: 1 },
    { fn: 'uniform', args: [-32, 32], value: 3.5 },
  ]);
  assert.equal(f.randint(0, 9), 4);
  assert.throws(() => f.randint(0, 2), /call 2 is randint\(0, 2\), recorded randint\(2\)/);
  assert.equal(f.randint(2), 1);
  assert.throws(() => f.assertDone(), /1 of 3 draws unused/);
  assert.throws(() => f.rand(), /recorded uniform/);
  assert.equal(f.uniform(-32, 32), 3.5);
  f.assertDone();
  assert.throws(() => f.randomSample(), /only 3 draws/);
});

// ----------------------------------------------------------------------------------------------
// OpenCV tables

test('hsv_tables: BGR->HSV and HSV->BGR (32 vector + 8 scalar pixels per row) byte for byte', { skip: SKIP }, () => {
  const c = getCase('hsv_tables');
  const [h, w] = shapeOf(c, 'bgr2hsv.in');
  const bgr = u8(c, 'bgr2hsv.in');
  expectArray(c, 'bgr2hsv.out', bgrToHsv(bgr, h!, w!, 'bgr'));
  // RGB input with order 'rgb' gives the same HSV
  expectArray(c, 'bgr2hsv.out', bgrToHsv(swapRB(bgr), h!, w!, 'rgb'));
  const hsv = u8(c, 'hsv2bgr.in');
  const [h2, w2] = shapeOf(c, 'hsv2bgr.in');
  expectArray(c, 'hsv2bgr.out', hsvToBgr(hsv, h2!, w2!, 'bgr'));
  const rgb = hsvToBgr(hsv, h2!, w2!, 'rgb');
  expectArray(c, 'hsv2bgr.out', swapRB(rgb));
  // in place
  const inPlace = new Uint8Array(hsv);
  hsvToBgr(inPlace, h2!, w2!, 'bgr', inPlace);
  expectArray(c, 'hsv2bgr.out', inPlace);
});

test('HSV->BGR: vector and scalar arithmetic really differ (the split matters)', { skip: SKIP }, () => {
  const c = getCase('hsv_tables');
  const [h, w] = shapeOf(c, 'hsv2bgr.in');
  const hsv = u8(c, 'hsv2bgr.in');
  const exp = load().st.get(c.arrays['hsv2bgr.out']!.key!)!.data;
  const allScalar = hsvToBgr(hsv, h!, w!, 'bgr', undefined, w! + 1);
  const allVector = hsvToBgr(hsv, h!, w!, 'bgr', undefined, 1);
  let diffScalar = 0;
  let diffVector = 0;
  for (let y = 0; y < h!; y++) {
    for (let i = 0; i < w! * 3; i++) {
      const k = y * w! * 3 + i;
      if (i < 32 * 3 && allScalar[k] !== exp[k]) diffScalar++;
      if (i >= 32 * 3 && allVector[k] !== exp[k]) diffVector++;
    }
  }
  assert.ok(diffScalar > 0, 'scalar arithmetic on the vector columns should differ somewhere');
  assert.ok(diffVector > 0, 'vector arithmetic on the scalar columns should differ somewhere');
});

/** float32(1 − a·b) rounded once (a true fma), computed exactly with BigInt: an independent reference. */
function fmaOneMinusExact(a: number, b: number): number {
  const K = 2n ** 40n;
  const ai = BigInt(a * 2 ** 40); // exact: a, b are float32 values ≥ 2^-16 or 0
  const bi = BigInt(b * 2 ** 40);
  assert.equal(Number(ai) / 2 ** 40, a);
  assert.equal(Number(bi) / 2 ** 40, b);
  const num = K * K - ai * bi; // exact value · 2^80, ≥ 0
  if (num === 0n) return 0;
  // exponent e with 2^(e-1) <= x < 2^e; float32 ulp 2^(e-24)
  let e = num.toString(2).length - 80;
  const shift = 80 + e - 24; // ulp = 2^(shift - 80)
  let q: bigint;
  if (shift >= 0) {
    const d = 2n ** BigInt(shift);
    q = num / d;
    const r = num - q * d;
    if (2n * r > d || (2n * r === d && (q & 1n) === 1n)) q += 1n;
  } else {
    q = num * 2n ** BigInt(-shift);
  }
  e = shift - 80;
  return Number(q) * 2 ** e;
}

test('HSV->BGR vector path: the fused 1 - s*h terms are exactly rounded for every (H, S) (BigInt reference)', () => {
  const fr = Math.fround;
  const inv255 = fr(1 / 255);
  const hscale = fr(6 / 180);
  const sectors = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]];
  const vs = [1, 77, 200, 255];
  const w = 256;
  const h = 180 * vs.length;
  const hsv = new Uint8Array(h * w * 3);
  const expected = new Uint8Array(h * w * 3);
  let unfusedDiffers = 0;
  for (let H = 0; H < 180; H++) {
    for (let S = 0; S < 256; S++) {
      const s = fr(S * inv255);
      const hh = fr(H * hscale);
      const sector = Math.trunc(hh);
      const hf = fr(hh - sector);
      const f2 = fmaOneMinusExact(s, hf);
      const f3 = fmaOneMinusExact(s, fr(1 - hf));
      if (f3 !== fr(1 - fr(s * fr(1 - hf)))) unfusedDiffers++;
      for (let vi = 0; vi < vs.length; vi++) {
        const V = vs[vi]!;
        const i = ((vi * 180 + H) * w + S) * 3;
        hsv[i] = H;
        hsv[i + 1] = S;
        hsv[i + 2] = V;
        const v = fr(V * inv255);
        const t = [v, fr(v * fr(1 - s)), fr(v * f2), fr(v * f3)];
        const [bk, gk, rk] = sectors[sector]!;
        expected[i] = Math.trunc(fr(t[bk!]! * 255));
        expected[i + 1] = Math.trunc(fr(t[gk!]! * 255));
        expected[i + 2] = Math.trunc(fr(t[rk!]! * 255));
      }
    }
  }
  const got = hsvToBgr(hsv, h, w, 'bgr', undefined, 32); // 256 = 8 blocks of 32: every pixel vector
  let bad = 0;
  for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) bad++;
  assert.equal(bad, 0, `${bad} bytes differ from the exactly rounded reference`);
  assert.ok(unfusedDiffers > 0, 'fused and unfused 1 - s(1 - h) should differ for some (H, S)');
});

test('resize_tables: OpenCV INTER_LINEAR (uint8, incl. exact-half) and INTER_NEAREST', { skip: SKIP }, () => {
  const c = getCase('resize_tables');
  const items = c.items as { index: number; src_hw: [number, number]; channels: number; dst_hw: [number, number]; interpolation: string }[];
  assert.equal(items.length, 9);
  for (const it of items) {
    const src = u8(c, `${it.index}.in`);
    const [sh, sw] = it.src_hw;
    const [dh, dw] = it.dst_hw;
    const out = it.interpolation === 'bilinear' ? resizeBilinearHWC(src, sh, sw, dh, dw) : resizeNearestHWC(src, sh, sw, dh, dw);
    expectArray(c, `${it.index}.out`, out);
  }
});

test('resizeBilinearHWCFixedPointRegion equals cropping the full resize (up, down, exact half, same size)', () => {
  const r = new SeededRandom(3);
  const sizes: [number, number, number, number, number][] = [
    [23, 37, 29, 47, 3],
    [40, 30, 17, 11, 3],
    [32, 48, 16, 24, 3],
    [12, 9, 12, 9, 3],
    [7, 5, 30, 3, 1],
    [5, 40, 9, 17, 1],
  ];
  for (const [h, w, nh, nw, c] of sizes) {
    const img = Uint8Array.from({ length: h * w * c }, () => r.randint(256));
    const full = resizeBilinearHWC(img, h, w, nh, nw);
    for (let k = 0; k < 6; k++) {
      const y0 = r.randint(0, nh);
      const y1 = r.randint(y0, nh + 1);
      const x0 = r.randint(0, nw);
      const x1 = r.randint(x0, nw + 1);
      const region = resizeBilinearHWCFixedPointRegion(img, h, w, nh, nw, y0, y1, x0, x1);
      const expected = cropHWC(full, nh, nw, c, [y0, y1, x0, x1]).data;
      assert.deepEqual([...region], [...expected], `${w}x${h} -> ${nw}x${nh}, rows ${y0}..${y1}, cols ${x0}..${x1}`);
    }
  }
  assert.throws(() => resizeBilinearHWCFixedPointRegion(new Uint8Array(12), 2, 2, 4, 4, 0, 5, 0, 4), /not inside 4x4/);
});

test('size_table_config_scale: Resize size arithmetic at (2048, 512), 15 image sizes', { skip: SKIP }, () => {
  const rows = load().fx.size_table_config_scale;
  assert.equal(rows.length, 15);
  for (const r of rows) {
    const rng = new ForcedRandom([{ fn: 'random_sample', args: [], value: r.draw }]);
    const ratio = sampleResizeRatio(rng, [0.5, 2.0]);
    rng.assertDone();
    assert.equal(ratio, r.ratio, `${r.w}x${r.h} draw ${r.draw}: ratio`);
    const p = resizePlan(r.h, r.w, [2048, 512], ratio);
    const tag = `${r.w}x${r.h} ratio ${r.ratio}`;
    assert.deepEqual(p.scale, r.scale, `${tag}: scale`);
    assert.equal(p.factor, r.scale_factor, `${tag}: factor`);
    assert.equal(p.newW, r.new_w, `${tag}: new_w`);
    assert.equal(p.newH, r.new_h, `${tag}: new_h`);
    assert.equal(p.newW / r.w, r.w_scale, `${tag}: w_scale`);
    assert.equal(p.newH / r.h, r.h_scale, `${tag}: h_scale`);
    assert.deepEqual(p.scaleFactor, [r.w_scale, r.h_scale, r.w_scale, r.h_scale].map(Math.fround), `${tag}: float32 scale_factor`);
  }
});

// ----------------------------------------------------------------------------------------------
// Single transforms

test('Resize cases: forced ratio, image INTER_LINEAR, labels INTER_NEAREST, meta', { skip: SKIP }, () => {
  const cases = casesOfKind('Resize');
  assert.ok(cases.length >= 4);
  for (const c of cases) {
    const t = c.transform as { img_scale: [number, number]; ratio_range: [number, number]; keep_ratio: boolean };
    assert.equal(t.keep_ratio, true);
    const rng = new ForcedRandom(c.draws!);
    const r = randomResize(pairOf(c), t.img_scale, t.ratio_range, rng);
    rng.assertDone();
    expectArray(c, 'out.img', r.img, [r.height, r.width, 3]);
    expectArray(c, 'out.seg', r.label, [r.height, r.width]);
    const res = c.result as { img_shape: number[]; scale: number[]; scale_factor: number[] };
    const resc = c.rescale as { scale_factor: number; new_wh: number[] };
    assert.deepEqual([r.height, r.width, 3], res.img_shape, c.name);
    assert.deepEqual(r.plan.scale, res.scale, c.name);
    assert.deepEqual(r.plan.scaleFactor, res.scale_factor, c.name);
    assert.equal(r.plan.factor, resc.scale_factor, c.name);
    assert.deepEqual([r.plan.newW, r.plan.newH], resc.new_wh, c.name);
  }
});

test('RandomCrop cases: boxes, checks (ignore 255, strict 0.75, 10 checks + unchecked 11th), crops', { skip: SKIP }, () => {
  const cases = casesOfKind('RandomCrop');
  assert.ok(cases.length >= 5);
  for (const c of cases) {
    const t = c.transform as { crop_size: [number, number]; cat_max_ratio: number; ignore_index: number };
    const rng = new ForcedRandom(c.draws!);
    const r = randomCrop(pairOf(c), t.crop_size, t.cat_max_ratio, t.ignore_index, rng);
    rng.assertDone();
    const bboxes = c.bboxes_drawn as number[][];
    const checks = c.checks as { bbox_y1y2x1x2: number[]; labels: number[]; max_share: number; accepted: boolean }[];
    assert.equal(r.boxesDrawn, bboxes.length, `${c.name}: boxes drawn`);
    assert.deepEqual(r.box, c.final_bbox_y1y2x1x2, `${c.name}: final box`);
    assert.equal(r.checks.length, checks.length, `${c.name}: checks`);
    r.checks.forEach((k, i) => {
      assert.deepEqual(k.labels, checks[i]!.labels, `${c.name} check ${i}: labels`);
      assert.equal(k.maxShare, checks[i]!.max_share, `${c.name} check ${i}: max share`);
      assert.equal(k.accepted, checks[i]!.accepted, `${c.name} check ${i}: accepted`);
    });
    assert.deepEqual([r.height, r.width, 3], (c.result as { img_shape: number[] }).img_shape, c.name);
    expectArray(c, 'out.img', r.img);
    expectArray(c, 'out.seg', r.label);
  }
  assert.equal(getCase('crop_all_rejected').checks instanceof Array && (getCase('crop_all_rejected').checks as unknown[]).length, 10);
});

test('RandomFlip cases: flip iff rand() < 0.5', { skip: SKIP }, () => {
  const cases = casesOfKind('RandomFlip');
  assert.ok(cases.length >= 5);
  for (const c of cases) {
    const t = c.transform as { prob: number; direction: string };
    assert.equal(t.direction, 'horizontal');
    const rng = new ForcedRandom(c.draws!);
    const r = randomFlip(pairOf(c), t.prob, rng);
    rng.assertDone();
    assert.equal(r.flip, (c.result as { flip: boolean }).flip, c.name);
    expectArray(c, 'out.img', r.img);
    expectArray(c, 'out.seg', r.label);
  }
});

test('PhotoMetricDistortion cases: draws in order, every step and the output, BGR and RGB input', { skip: SKIP }, () => {
  const cases = casesOfKind('PhotoMetricDistortion');
  assert.ok(cases.length >= 6);
  for (const c of cases) {
    const [h, w] = shapeOf(c, 'in.img');
    const img = u8(c, 'in.img');
    const cfg = pmdCfg(c);
    assert.deepEqual(cfg, { ...PHOTOMETRIC_DEFAULT }, `${c.name}: the recipe's parameters`);
    const rng = new ForcedRandom(c.draws!);
    const r = photoMetricDistortion(img, h!, w!, cfg, rng, 'bgr');
    rng.assertDone();
    expectArray(c, 'out.img', r.img);
    assert.deepEqual(photoMetricSteps(r.params.mode), c.steps, `${c.name}: step order`);
    // every intermediate step from the drawn parameters
    let cur = img;
    (c.steps as string[]).forEach((step, k) => {
      const p = r.params;
      if (step === 'brightness' && p.brightness !== null) cur = adjustBrightness(cur, p.brightness);
      if (step === 'contrast' && p.contrast !== null) cur = adjustContrast(cur, p.contrast);
      if (step === 'saturation' && p.saturation !== null) cur = adjustSaturation(cur, h!, w!, p.saturation, 'bgr');
      if (step === 'hue' && p.hue !== null) cur = adjustHue(cur, h!, w!, p.hue, 'bgr');
      expectArray(c, `step${k}.${step}`, cur);
    });
    // the same picture stored as RGB
    const rgbIn = swapRB(img);
    const rng2 = new ForcedRandom(c.draws!);
    const r2 = photoMetricDistortion(rgbIn, h!, w!, cfg, rng2, 'rgb');
    rng2.assertDone();
    expectArray(c, 'out.img', swapRB(r2.img));
    assert.deepEqual([...rgbIn], [...swapRB(img)], `${c.name}: input not modified`);
  }
});

test('Normalize case: the float32 table and the image (to_rgb), from BGR and from RGB input; test-time normalizeToCHW agrees', { skip: SKIP }, () => {
  const c = getCase('normalize');
  const t = c.transform as { mean: number[]; std: number[]; to_rgb: boolean };
  const lut = normalizeLut(t.mean, t.std);
  expectArray(c, 'lut_rgb_by_value', lut);
  const [h, w] = shapeOf(c, 'in.img');
  const img = u8(c, 'in.img');
  expectArray(c, 'out.img', normalizeHWC(img, h!, w!, lut, 'bgr', t.to_rgb));
  expectArray(c, 'out.img', normalizeHWC(swapRB(img), h!, w!, lut, 'rgb', t.to_rgb));
  // to_rgb = false keeps mmseg's BGR planes
  const bgrOut = normalizeHWC(swapRB(img), h!, w!, lut, 'rgb', false);
  assert.equal(bgrOut[0], lut[img[0]!]);
  // the test-time normalisation (pipeline-image.ts) gives the same values: every byte value, every channel
  const ramp = Uint8Array.from({ length: 256 * 3 }, (_, i) => Math.floor(i / 3));
  const chw = normalizeToCHW(ramp, 1, 256, t.mean, t.std, true);
  expectArray(c, 'lut_rgb_by_value', chw);
  assert.deepEqual([...t.mean], [...ADE20K_TRAIN_PIPELINE.mean]);
  assert.deepEqual([...t.std], [...ADE20K_TRAIN_PIPELINE.std]);
});

test('Pad cases: bottom/right, image 0 (float and uint8), labels 255', { skip: SKIP }, () => {
  for (const c of casesOfKind('Pad')) {
    const t = c.transform as { size: [number, number]; pad_val: number; seg_pad_val: number };
    const [h, w] = shapeOf(c, 'in.img');
    const info = c.arrays['in.img']!;
    const img = info.dtype === 'float32' ? f32(c, 'in.img') : u8(c, 'in.img');
    expectArray(c, 'out.img', padHWC(img, h!, w!, 3, t.size[0], t.size[1], t.pad_val));
    expectArray(c, 'out.seg', padHWC(u8(c, 'in.seg'), h!, w!, 1, t.size[0], t.size[1], t.seg_pad_val));
  }
  assert.throws(() => padHWC(new Uint8Array(20 * 3), 4, 5, 3, 3, 8, 0), /does not fit/);
});

test('load_reduce_zero_label: 0 -> 255, v -> v - 1, 255 stays', { skip: SKIP }, () => {
  const c = getCase('load_reduce_zero_label');
  expectArray(c, 'out.seg', reduceZeroLabel(u8(c, 'in.seg_png_values')));
  expectArray(c, 'out.img', u8(c, 'in.img'));
  assert.deepEqual([...reduceZeroLabel(Uint8Array.from([0, 1, 2, 150, 254, 255]))], [255, 0, 1, 149, 253, 255]);
});

// ----------------------------------------------------------------------------------------------
// Whole pipelines

interface PipelineStep {
  type: string;
  img_scale?: [number, number];
  ratio_range?: [number, number];
  crop_size?: [number, number];
  cat_max_ratio?: number;
  prob?: number;
  mean?: [number, number, number];
  std?: [number, number, number];
  to_rgb?: boolean;
  size?: [number, number];
  pad_val?: number;
  seg_pad_val?: number;
  reduce_zero_label?: boolean;
}

function cfgFromCase(c: Case): TrainPipelineCfg {
  const steps = c.pipeline as PipelineStep[];
  const get = (type: string): PipelineStep => {
    const s = steps.find((x) => x.type === type);
    if (!s) throw new Error(`${c.name}: no ${type}`);
    return s;
  };
  const resize = get('Resize');
  const crop = get('RandomCrop');
  const norm = get('Normalize');
  const pad = get('Pad');
  get('PhotoMetricDistortion');
  return {
    ...ADE20K_TRAIN_PIPELINE,
    reduceZeroLabel: get('LoadAnnotations').reduce_zero_label!,
    imgScale: resize.img_scale!,
    ratioRange: resize.ratio_range!,
    cropSize: crop.crop_size!,
    catMaxRatio: crop.cat_max_ratio!,
    flipProb: get('RandomFlip').prob!,
    photoMetric: PHOTOMETRIC_DEFAULT,
    mean: norm.mean!,
    std: norm.std!,
    toRgb: norm.to_rgb!,
    padSize: pad.size!,
    padVal: pad.pad_val!,
    segPadVal: pad.seg_pad_val!,
  };
}

for (const name of ['pipeline_small', 'pipeline_config_scale']) {
  test(`${name}: every stage step by step, then trainPipeline() from BGR and from RGB input`, { skip: SKIP }, () => {
    const c = getCase(name);
    const cfg = cfgFromCase(c);
    const [h0, w0] = shapeOf(c, 'in.img');
    const img0 = u8(c, 'in.img');
    const seg0 = u8(c, 'in.seg_png_values');
    expectArray(c, 'stage0.LoadImageFromFile.img', img0);

    // stage by stage with the single-transform functions and one forced stream
    const rng = new ForcedRandom(c.draws!);
    let pair: ImageLabelPair = { img: img0, label: reduceZeroLabel(seg0), height: h0!, width: w0! };
    expectArray(c, 'stage1.LoadAnnotations.img', pair.img);
    expectArray(c, 'stage1.LoadAnnotations.seg', pair.label);
    const rs = randomResize(pair, cfg.imgScale, cfg.ratioRange, rng);
    pair = rs;
    expectArray(c, 'stage2.Resize.img', pair.img, [pair.height, pair.width, 3]);
    expectArray(c, 'stage2.Resize.seg', pair.label);
    const cr = randomCrop(pair, cfg.cropSize, cfg.catMaxRatio, cfg.ignoreIndex, rng);
    pair = cr;
    expectArray(c, 'stage3.RandomCrop.img', pair.img, [pair.height, pair.width, 3]);
    expectArray(c, 'stage3.RandomCrop.seg', pair.label);
    const fl = randomFlip(pair, cfg.flipProb, rng);
    pair = fl;
    expectArray(c, 'stage4.RandomFlip.img', pair.img);
    expectArray(c, 'stage4.RandomFlip.seg', pair.label);
    const pm = photoMetricDistortion(pair.img, pair.height, pair.width, cfg.photoMetric!, rng, 'bgr');
    rng.assertDone();
    expectArray(c, 'stage5.PhotoMetricDistortion.img', pm.img);
    expectArray(c, 'stage5.PhotoMetricDistortion.seg', pair.label);
    const lut = normalizeLut(cfg.mean, cfg.std);
    const norm = normalizeHWC(pm.img, pair.height, pair.width, lut, 'bgr', cfg.toRgb);
    expectArray(c, 'stage6.Normalize.img', norm);
    const [ph, pw] = cfg.padSize!;
    const padded = padHWC(norm, pair.height, pair.width, 3, ph, pw, cfg.padVal);
    const paddedSeg = padHWC(pair.label, pair.height, pair.width, 1, ph, pw, cfg.segPadVal);
    expectArray(c, 'stage7.Pad.img', padded);
    expectArray(c, 'stage7.Pad.seg', paddedSeg);
    expectArray(c, 'final.img_chw', hwcToChw(padded, ph, pw));
    expectArray(c, 'final.gt_semantic_seg', labelToInt64(paddedSeg));

    // stage meta
    const stages = c.stages as { transform: string; meta: { img_shape: number[]; pad_shape: number[]; scale?: number[]; scale_factor: number[]; flip?: boolean } }[];
    const resizeMeta = stages.find((s) => s.transform === 'Resize')!.meta;
    assert.deepEqual(rs.plan.scale, resizeMeta.scale);
    assert.deepEqual(rs.plan.scaleFactor, resizeMeta.scale_factor);

    // the composed pipeline, BGR and RGB input
    const finalMeta = c.final_meta as { ori_shape: number[]; img_shape: number[]; pad_shape: number[]; flip: boolean };
    for (const order of ['bgr', 'rgb'] as const) {
      const input = order === 'bgr' ? img0 : swapRB(img0);
      const copy = new Uint8Array(input);
      const seg = new Uint8Array(seg0);
      const rng2 = new ForcedRandom(c.draws!);
      const out = trainPipeline({ image: { data: input, height: h0!, width: w0! }, label: { data: seg, height: h0!, width: w0! }, channelOrder: order }, cfg, rng2);
      rng2.assertDone();
      expectArray(c, 'final.img_chw', out.img);
      expectArray(c, 'stage7.Pad.seg', out.label);
      expectArray(c, 'final.gt_semantic_seg', labelToInt64(out.label));
      assert.deepEqual([...input], [...copy], `${name} (${order}): image input not modified`);
      assert.deepEqual([...seg], [...seg0], `${name} (${order}): label input not modified`);
      assert.equal(out.height, ph);
      assert.equal(out.width, pw);
      assert.deepEqual(out.meta.oriShape, finalMeta.ori_shape);
      assert.deepEqual(out.meta.imgShape, finalMeta.img_shape);
      assert.deepEqual(out.meta.padShape, finalMeta.pad_shape);
      assert.equal(out.meta.flip, finalMeta.flip);
      assert.deepEqual(out.meta.scale, resizeMeta.scale);
      assert.deepEqual(out.meta.scaleFactor, resizeMeta.scale_factor);
      assert.equal(out.meta.inputOrder, order);
      assert.equal(out.meta.outputOrder, 'rgb');
      assert.doesNotThrow(() => JSON.stringify(out.meta));
    }
  });
}

test('pipeline_config_scale uses the recipe values: ADE20K_TRAIN_PIPELINE equals the fixture config', { skip: SKIP }, () => {
  const cfg = cfgFromCase(getCase('pipeline_config_scale'));
  assert.deepEqual(cfg, { ...ADE20K_TRAIN_PIPELINE });
  assert.deepEqual(scaledTrainPipelineCfg(512), { ...ADE20K_TRAIN_PIPELINE });
});

test('trainPipeline: seeded runs reproduce; bad input gets a clear error', () => {
  const h = 40;
  const w = 60;
  const img = new Uint8Array(h * w * 3);
  const label = new Uint8Array(h * w);
  for (let i = 0; i < img.length; i++) img[i] = (i * 37 + (i >> 7)) & 255;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) label[y * w + x] = x < 20 ? 1 : y < 20 ? 2 : 3;
  const cfg = scaledTrainPipelineCfg(32);
  const sample = { image: { data: img, height: h, width: w }, label: { data: label, height: h, width: w } };
  const r1 = new SeededRandom(42, 0, 7);
  const a = trainPipeline(sample, cfg, r1);
  const state = r1.getState();
  const a2 = trainPipeline(sample, cfg, r1);
  const b = trainPipeline(sample, cfg, new SeededRandom(42, 0, 7));
  assert.deepEqual([...b.img], [...a.img]);
  assert.deepEqual([...b.label], [...a.label]);
  assert.deepEqual(b.meta, a.meta);
  const b2 = trainPipeline(sample, cfg, SeededRandom.fromState(state));
  assert.deepEqual([...b2.img], [...a2.img]);
  assert.deepEqual(b2.meta, a2.meta);
  assert.equal(a.img.length, 3 * 32 * 32);
  assert.equal(a.label.length, 32 * 32);
  assert.ok(a.label.every((v) => v === 255 || v <= 2), 'reduce_zero_label applied');
  assert.throws(
    () => trainPipeline({ ...sample, label: { data: new Uint8Array(10 * 10), height: 10, width: 10 } }, cfg, new SeededRandom(1)),
    /label map is 10x10 but the image is 60x40/,
  );
  assert.throws(
    () => trainPipeline({ ...sample, image: { data: new Uint8Array(5), height: h, width: w } }, cfg, new SeededRandom(1)),
    /image has 5 bytes, expected 40x60x3/,
  );
  assert.throws(() => trainPipeline(sample, { ...cfg, padSize: [16, 16] }, new SeededRandom(1)), /does not fit the pad size/);
});

test('trainPipeline runs in a worker thread (typed arrays only) and gives the main thread\'s result', async () => {
  const h = 48;
  const w = 64;
  const img = Uint8Array.from({ length: h * w * 3 }, (_, i) => (i * 131 + (i >> 5)) & 255);
  const label = Uint8Array.from({ length: h * w }, (_, i) => 1 + ((i % w >> 4) + (Math.floor(i / w) >> 4)) % 5);
  const cfg = scaledTrainPipelineCfg(32);
  const here = trainPipeline({ image: { data: img, height: h, width: w }, label: { data: label, height: h, width: w } }, cfg, new SeededRandom(9, 1, 2));
  const moduleUrl = new URL('../../src/tasks/segmentation/pipeline-train.js', import.meta.url).href;
  const randomUrl = new URL('../../src/train/random.js', import.meta.url).href;
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    (async () => {
      const P = await import(workerData.moduleUrl);
      const R = await import(workerData.randomUrl);
      const d = workerData;
      const out = P.trainPipeline({ image: { data: d.img, height: d.h, width: d.w }, label: { data: d.label, height: d.h, width: d.w } },
        d.cfg, new R.SeededRandom(9, 1, 2));
      parentPort.postMessage(out, [out.img.buffer, out.label.buffer]);
    })().catch((e) => { throw e; });`;
  const there = await new Promise<{ img: Float32Array; label: Uint8Array; meta: unknown }>((resolve, reject) => {
    const worker = new Worker(code, { eval: true, workerData: { moduleUrl, randomUrl, img, label, h, w, cfg } });
    worker.once('message', (m) => {
      resolve(m as { img: Float32Array; label: Uint8Array; meta: unknown });
      void worker.terminate();
    });
    worker.once('error', reject);
  });
  assert.ok(there.img instanceof Float32Array && there.label instanceof Uint8Array);
  assert.deepEqual([...there.img], [...here.img]);
  assert.deepEqual([...there.label], [...here.label]);
  assert.deepEqual(there.meta, here.meta);
});
