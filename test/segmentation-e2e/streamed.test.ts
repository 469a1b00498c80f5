/**
 * The streamed final stage of `segmentImage` (resize to the photo, softmax, un-flip, TTA average and argmax in bands
 * of output rows) against the full-resolution computation it replaced (mmseg's `aug_test`, kept as the baseline in
 * src/tools/full-resolution.ts): bitwise rows of the bilinear resize, softmax per pixel, identical labels and
 * probabilities.
 */
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type Tensor, fromBytes, getNumThreads, interpolate, manualSeed, noGrad, randn, scope, softmax,
} from '../../src/engine/index.js';
import { type SegConfig, loadConfig } from '../../src/tasks/segmentation/configs.js';
import {
  type ProbabilityBand, type RgbLike, type SegModel, bilinearAxis, buildSegmentor, resizeRowsExact, segmentImage,
  softmaxClasses, streamLabels,
} from '../../src/tasks/segmentation/inference.js';
import type { EncoderDecoder } from '../../src/tasks/segmentation/segmentor.js';
import { segmentImageFullResolution } from '../../src/tools/full-resolution.js';
import { tinyModelOverrides } from './helpers.js';

/** True when the two float32 tensors are bitwise equal (same shape, same bytes). */
function sameBits(a: Tensor, b: Tensor): boolean {
  if (a.shape.join() !== b.shape.join()) return false;
  return Buffer.from(a.toBytes()).equals(Buffer.from(b.toBytes()));
}

test('resizeRowsExact: every band of rows is bitwise the full bilinear resize (up, down, equal sides, align_corners)', () => {
  noGrad(() => scope(() => {
    manualSeed(11);
    const cases: [number, number, number, number][] = [
      [16, 24, 50, 70], // up both ways
      [64, 96, 37, 53], // down both ways
      [16, 16, 16, 40], // rows unchanged
      [20, 16, 45, 16], // columns unchanged
      [13, 17, 300, 401], // odd sizes, large factor
      [12, 12, 12, 12], // nothing to do
      [128, 176, 500, 700], // the 4:1-ish factor of real slide logits
    ];
    for (const alignCorners of [false, true]) {
      for (const [h, w, H, W] of cases) {
        const x = randn([1, 3, h, w]).mul(4);
        const full = h === H && w === W ? x : interpolate(x, { size: [H, W], mode: 'bilinear', alignCorners });
        const axis = bilinearAxis(h, H, alignCorners);
        for (const rows of H <= 64 ? [1, 7, H] : [37, H]) {
          for (let y0 = 0; y0 < H; y0 += rows) {
            const y1 = Math.min(H, y0 + rows);
            const band = resizeRowsExact(x, y0, y1, W, axis, alignCorners);
            if (!sameBits(band, full.narrow(2, y0, y1 - y0).contiguous())) {
              assert.fail(`${h}x${w} -> ${H}x${W} alignCorners=${alignCorners} rows [${y0}, ${y1}): max diff ${band.sub(full.narrow(2, y0, y1 - y0)).abs().max().item()}`);
            }
          }
        }
      }
    }
  }));
});

test('bilinearAxis: the weights libtorch uses, read back from interpolating one-hot rows', () => {
  noGrad(() => scope(() => {
    for (const alignCorners of [false, true]) {
      for (const [n, m] of [[12, 50], [37, 301], [64, 40], [512, 3000], [513, 2999]] as const) {
        // channel k = one-hot row k; resizing the height only gives, at output row y, the weight of source row k
        const eye = new Float32Array(n * n);
        for (let k = 0; k < n; k++) eye[k * n + k] = 1;
        const probe = interpolate(fromBytes(eye, 'float32', [1, n, n, 1]), { size: [m, 1], mode: 'bilinear', alignCorners });
        const p = probe.toTypedArray() as Float32Array; // [k][y]
        const a = bilinearAxis(n, m, alignCorners);
        let bad = 0;
        for (let y = 0; y < m; y++) {
          const at = (k: number): number => p[k * m + y]!;
          if (a.i0[y] === a.i1[y]) {
            if (at(a.i0[y]!) !== Math.fround(a.w0[y]! + a.w1[y]!)) bad++;
          } else if (at(a.i0[y]!) !== a.w0[y] || at(a.i1[y]!) !== a.w1[y]) bad++;
        }
        assert.equal(bad, 0, `${n} -> ${m} alignCorners=${alignCorners}: ${bad} rows with other weights`);
      }
    }
  }));
});

/** Pixels (flat indices) where libtorch's class softmax of an N-pixel image may take its scalar path. */
function scalarTailPixels(n: number, threads: number): Set<number> {
  const out = new Set<number>();
  const chunk = Math.ceil(n / threads);
  for (let t = 0; t < threads; t++) {
    const end = Math.min(n, (t + 1) * chunk);
    for (let i = Math.max(t * chunk, end - 16); i < end; i++) out.add(i);
  }
  return out;
}

test('softmaxClasses: independent of the band split; equals the full softmax except at its scalar-path pixels', () => {
  noGrad(() => scope(() => {
    manualSeed(12);
    const [c, h, w] = [150, 61, 97];
    const x = randn([1, c, h, w]).mul(6);
    const full = softmax(x, 1).toTypedArray() as Float32Array;
    const tails = scalarTailPixels(h * w, getNumThreads());
    let firstSplit: Float32Array | null = null;
    for (const rows of [1, 7, 61]) {
      const parts: Float32Array[] = [];
      for (let y0 = 0; y0 < h; y0 += rows) {
        const n = Math.min(rows, h - y0);
        parts.push(softmaxClasses(x.narrow(2, y0, n).contiguous()).contiguous().toTypedArray() as Float32Array);
      }
      // reassemble as C×H×W
      const got = new Float32Array(c * h * w);
      let y0 = 0;
      for (const part of parts) {
        const n = part.length / (c * w);
        for (let k = 0; k < c; k++) got.set(part.subarray(k * n * w, (k + 1) * n * w), k * h * w + y0 * w);
        y0 += n;
      }
      if (firstSplit) assert.ok(Buffer.from(got.buffer).equals(Buffer.from(firstSplit.buffer)), `band split ${rows} changes the result`);
      firstSplit ??= got;
      let maxDiff = 0;
      for (let i = 0; i < got.length; i++) {
        if (got[i] !== full[i]) {
          const px = i % (h * w);
          assert.ok(tails.has(px), `pixel ${px} differs from the full softmax outside libtorch's scalar tail`);
          maxDiff = Math.max(maxDiff, Math.abs(got[i]! - full[i]!));
        }
      }
      assert.ok(maxDiff <= 1e-6, `max diff ${maxDiff}`);
    }
  }));
});

// ---- the whole prediction against the full-resolution reference ----------------------------------------------------

/** Classes of the test model: fewer than ADE20K's 150 keeps the full-resolution reference cheap. */
const CLASSES = 40;

function tinyConfig(scale: [number, number]): SegConfig {
  return loadConfig('upernet_deit_adapter_tiny_512_160k_ade20k', {
    ...tinyModelOverrides(CLASSES),
    test_pipeline: { img_scale: scale },
    dataset: { type: 'CustomDataset', classes: Array.from({ length: CLASSES }, (_, i) => `class${i}`) },
    model: { ...tinyModelOverrides(CLASSES).model, test_cfg: { mode: 'slide', crop_size: [64, 64], stride: [48, 48] } },
  });
}

function noiseImage(w: number, h: number, seed: number): RgbLike {
  const data = new Uint8Array(w * h * 3);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    // smooth structure plus noise, so that several classes win somewhere
    const p = Math.floor(i / 3);
    data[i] = ((p % w) * 3 + Math.floor(p / w) * 2 + (s >>> 27)) & 255;
  }
  return { data, height: h, width: w };
}

let model: SegModel | null = null;
/**
 * The tiny ViT-Adapter + UperNet ({@link CLASSES} classes, random seeded weights), its `encodeDecode` memoised by input so that
 * the reference and the streamed path share the network passes (what is compared is everything after them).
 */
function tinyModel(): SegModel {
  if (!model) {
    manualSeed(21);
    const net: EncoderDecoder = buildSegmentor(tinyConfig([256, 64]));
    const cache = new Map<string, Tensor>();
    model = {
      encodeDecode: (img: Tensor): Tensor => {
        const key = `${img.shape.join('x')}:${createHash('sha256').update(img.toBytes()).digest('hex')}`;
        let out = cache.get(key);
        if (!out) cache.set(key, (out = net.encodeDecode(img).keep()));
        return out.clone();
      },
    };
  }
  return model;
}

/** Runs the streamed `segmentImage` (collecting its probability bands) and the reference; compares them. */
function compareWithReference(w: number, h: number, o: { mode: 'whole' | 'slide'; flip: boolean; scales: number[] },
  scale: [number, number] = [256, 64]): { maxDiff: number; differing: number; bands: number } {
  const cfg = tinyConfig(scale);
  const img = noiseImage(w, h, w * 31 + h);
  const m = tinyModel();
  const full = segmentImageFullResolution(m, img, cfg, { ...o, keepProbabilities: true });
  const ref = { labels: full.labels, probs: full.probs!, copies: full.copies.map((k) => k.flip) };
  const got = new Float32Array(ref.probs.length);
  const c = ref.probs.length / (w * h);
  const bands: [number, number][] = [];
  const onProbabilities = (b: ProbabilityBand): void => {
    bands.push([b.y0, b.y1]);
    assert.deepEqual(b.probs.shape, [1, c, b.y1 - b.y0, w]);
    const a = b.probs.contiguous().toTypedArray() as Float32Array;
    const n = b.y1 - b.y0;
    for (let k = 0; k < c; k++) got.set(a.subarray(k * n * w, (k + 1) * n * w), k * h * w + b.y0 * w);
  };
  const r = segmentImage(m, img, cfg, { ...o, onProbabilities });
  assert.equal(r.labels.length, w * h);
  assert.equal(r.copies.length, ref.copies.length);
  // the bands tile the rows in order
  bands.forEach(([y0, y1], i) => { assert.equal(y0, i === 0 ? 0 : bands[i - 1]![1]); assert.ok(y1 > y0); });
  assert.equal(bands[bands.length - 1]![1], h);
  // labels: identical
  let labelDiffs = 0;
  for (let i = 0; i < w * h; i++) if (r.labels[i] !== ref.labels[i]) labelDiffs++;
  assert.equal(labelDiffs, 0, `${labelDiffs} labels differ from the full-resolution path`);
  // probabilities: identical except where libtorch's full-image softmax took its scalar path (per copy; mirrored for
  // flipped copies)
  const tails = scalarTailPixels(w * h, getNumThreads());
  const allowed = new Set<number>();
  for (const flip of new Set(ref.copies)) {
    for (const p of tails) allowed.add(flip ? Math.floor(p / w) * w + (w - 1 - (p % w)) : p);
  }
  let maxDiff = 0;
  let differing = 0;
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== ref.probs[i]) {
      differing++;
      const px = i % (w * h);
      assert.ok(allowed.has(px), `probability of pixel (${px % w}, ${Math.floor(px / w)}) differs outside libtorch's scalar-softmax pixels: ${got[i]} vs ${ref.probs[i]}`);
      maxDiff = Math.max(maxDiff, Math.abs(got[i]! - ref.probs[i]!));
    }
  }
  assert.ok(maxDiff <= 1e-6, `max abs diff ${maxDiff}`);
  // the labels depend on them: several classes present
  assert.ok(r.classShares.length >= 2, `only ${r.classShares.length} class(es) predicted`);
  return { maxDiff, differing, bands: bands.length };
}

test('segmentImage streamed == full-resolution path: 700×500, whole and slide, with and without flip', () => {
  for (const mode of ['whole', 'slide'] as const) {
    for (const flip of [false, true]) {
      const s = compareWithReference(700, 500, { mode, flip, scales: [1] });
      assert.ok(s.bands > 1, 'a 700×500 photo is streamed in several bands');
    }
  }
});

test('segmentImage streamed == full-resolution path: odd sizes, multi-scale + flip, no resize, downscaling', () => {
  compareWithReference(333, 271, { mode: 'slide', flip: true, scales: [1] });
  compareWithReference(257, 129, { mode: 'whole', flip: true, scales: [0.75, 1.25] });
  // network input = photo (img_scale larger than the photo and sides already multiples of 32): no final resize
  compareWithReference(96, 64, { mode: 'slide', flip: true, scales: [1] }, [96, 64]);
  // network input larger than the photo: the final resize shrinks
  compareWithReference(41, 23, { mode: 'whole', flip: false, scales: [1] });
});

test('streamLabels: the band size changes nothing; no band holds more than its budget', () => {
  noGrad(() => scope(() => {
    manualSeed(13);
    const a = { logits: randn([1, 9, 12, 20]), flip: false };
    const b = { logits: randn([1, 9, 16, 24]), flip: true };
    const [H, W] = [73, 111];
    const runs = [1 << 23, 9 * W * 5, 1].map((bandElements) => {
      const probs: Tensor[] = [];
      const r = streamLabels([a, b], H, W, {
        bandElements,
        onProbabilities: (band) => {
          if (bandElements > 9 * W) assert.ok(9 * W * (band.y1 - band.y0) <= bandElements);
          probs.push(band.probs.clone().keep());
        },
      });
      return { labels: r.labels, probs };
    });
    for (const r of runs.slice(1)) assert.deepEqual(r.labels, runs[0]!.labels);
    // the same probabilities, band by band concatenated
    const flat = (ps: Tensor[]): Buffer => Buffer.concat(ps.map((p) => Buffer.from(p.permute(2, 0, 1, 3).contiguous().toBytes())));
    for (const r of runs.slice(1)) assert.ok(flat(r.probs).equals(flat(runs[0]!.probs)));
    for (const r of runs) for (const p of r.probs) p.dispose();
  }));
});
