/**
 * NMS and batched NMS (src/nn/ops/nms.ts): hand cases (IoU exactly at the threshold, mmcv's float32 threshold, ties),
 * the native kernel against the scalar reference on random clustered boxes (identical kept indices, float32 and
 * float64), batched NMS against an independent per-group computation, both mmcv paths (offsets, split_thr), errors.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { type Tensor, op, tensor } from '../../src/engine/index.js';
import { batchedNms, hasNativeNms, nms, nmsReference } from '../../src/nn/index.js';
import { rng, values } from '../helpers/numeric.js';

const IMPLS = ['composition', 'native'] as const;
const skipNative = hasNativeNms() ? false : 'native nms not built';

const t64 = (v: number[][] | number[]): Tensor => tensor(v, { dtype: 'float64' });

describe('nms by hand', () => {
  for (const impl of IMPLS) {
    test(`${impl}: strict threshold, float32 threshold rounding, ties, output order`, { skip: impl === 'native' && skipNative }, () => {
      // IoU([0,0,2,1], [0,0,1,1]) = 1 / 2 exactly: kept at threshold 0.5 (IoU > thr suppresses), dropped below
      const a = t64([[0, 0, 2, 1], [0, 0, 1, 1]]);
      const s = t64([0.9, 0.8]);
      assert.deepEqual(values(nms(a, s, 0.5, { impl })), [0, 1]);
      assert.deepEqual(values(nms(a, s, 0.4999, { impl })), [0]);
      // mmcv passes the threshold as a C float: 0.7 becomes 0.699999988..., so a float64 IoU of 0.699999995 is > thr
      const b = t64([[0, 0, 1, 1], [0, 0, 0.699999995, 1]]);
      assert.deepEqual(values(nms(b, s, 0.7, { impl })), [0]);
      assert.deepEqual(values(nms(t64([[0, 0, 1, 1], [0, 0, 0.69999998, 1]]), s, 0.7, { impl })), [0, 1]);
      // equal scores: the lower index comes first and wins
      const c = t64([[10, 10, 20, 20], [0, 0, 5, 5], [11, 11, 20, 20], [0, 0, 5, 5.2]]);
      assert.deepEqual(values(nms(c, t64([0.5, 0.5, 0.5, 0.5]), 0.5, { impl })), [0, 1]);
      // kept indices in descending score order (no IoU above 0.97 here: 1 and 3 overlap by 25 / 26 = 0.9615)
      assert.deepEqual(values(nms(c, t64([0.1, 0.7, 0.3, 0.2]), 0.97, { impl })), [1, 2, 3, 0]);
      assert.deepEqual(values(nms(c, t64([0.1, 0.7, 0.3, 0.2]), 0.96, { impl })), [1, 2, 0]);
      // zero-area boxes: IoU 0 (or NaN for two empty boxes) never suppresses
      assert.deepEqual(values(nms(t64([[1, 1, 1, 1], [1, 1, 1, 1]]), s, 0, { impl })), [0, 1]);
      // the result is int64 on the boxes' device
      assert.equal(nms(a, s, 0.5, { impl }).dtype, 'int64');
    });

    test(`${impl}: empty input`, { skip: impl === 'native' && skipNative }, () => {
      const k = nms(tensor([], { dtype: 'float32' }).view(0, 4), tensor([], { dtype: 'float32' }), 0.5, { impl });
      assert.deepEqual(k.shape, [0]);
      assert.equal(k.dtype, 'int64');
      const kb = batchedNms(tensor([], { dtype: 'float32' }).view(0, 4), tensor([], { dtype: 'float32' }), tensor([], { dtype: 'int64' }), 0.5, { impl });
      assert.deepEqual(kb.shape, [0]);
    });
  }
});

/** n boxes around a few cluster centres (heavy overlap), scores optionally quantised to make ties. */
function clustered(n: number, seed: number, o: { integer?: boolean; quantise?: number; groups?: number } = {}): { boxes: number[][]; scores: number[]; idxs: number[] } {
  const r = rng(seed);
  const centres = Array.from({ length: Math.max(1, Math.floor(n / 25)) }, () => [r() * 800, r() * 600]);
  const boxes: number[][] = [];
  const scores: number[] = [];
  const idxs: number[] = [];
  for (let i = 0; i < n; i++) {
    const [cx, cy] = centres[Math.floor(r() * centres.length)]!;
    let x1 = cx! + (r() - 0.5) * 40;
    let y1 = cy! + (r() - 0.5) * 40;
    let w = 20 + r() * 80;
    let h = 20 + r() * 80;
    if (o.integer) { x1 = Math.round(x1); y1 = Math.round(y1); w = Math.round(w); h = Math.round(h); }
    boxes.push([x1, y1, x1 + w, y1 + h]);
    const sc = r();
    scores.push(o.quantise ? Math.round(sc * o.quantise) / o.quantise : sc);
    idxs.push(Math.floor(r() * (o.groups ?? 1)));
  }
  return { boxes, scores, idxs };
}

describe('native nms against the scalar reference', { skip: skipNative }, () => {
  for (const dtype of ['float64', 'float32'] as const) {
    test(`identical kept indices on random clustered boxes (${dtype}; thresholds 0.3, 0.5, 0.7; ties; NaN scores)`, (t) => {
      let cases = 0;
      let kept = 0;
      for (const [n, seed, quantise] of [[50, 1, 0], [400, 2, 0], [1000, 3, 20], [1200, 4, 0], [300, 5, 4]] as const) {
        const c = clustered(n, seed, { quantise });
        if (seed === 5) c.scores[7] = NaN;
        const boxes = tensor(c.boxes, { dtype });
        const scores = tensor(c.scores, { dtype });
        for (const thr of [0.3, 0.5, 0.7]) {
          const a = values(nms(boxes, scores, thr, { impl: 'native' }));
          const b = values(nms(boxes, scores, thr, { impl: 'composition' }));
          assert.deepEqual(a, b, `n=${n} seed=${seed} thr=${thr}`);
          // and the scalar reference on the plain arrays (float32 emulated) gives the same list
          assert.deepEqual(b, nmsReference(boxes.toTypedArray(), scores.toTypedArray(), thr, dtype === 'float32'));
          assert.ok(a.length > 0 && a.length < n, 'some boxes kept, some suppressed');
          cases++;
          kept += a.length;
        }
      }
      t.diagnostic(`${dtype}: ${cases} cases, ${kept} kept boxes in all, identical`);
    });
  }

  test('the native operator checks its arguments (TORCH_CHECK surfaces as a JS exception)', () => {
    const raw = op('vit_adapter::nms');
    const b = tensor([[0, 0, 1, 1]], { dtype: 'float32' });
    assert.throws(() => raw.t([b.handle, t64([1]).handle, 0.5]), /scores must have the boxes' dtype/);
    assert.throws(() => raw.t([b.handle, tensor([1, 2]).handle, 0.5]), /scores must be \(n,\) = \(1,\)/);
    assert.throws(() => raw.t([tensor([[0, 0, 1]]).handle, tensor([1]).handle, 0.5]), /boxes must be \(n, 4\)/);
    assert.throws(() => raw.t([b.handle, tensor([1]).handle, NaN]), /iou_threshold is NaN/);
    assert.deepEqual(values(raw.t([b.handle, tensor([1]).handle, 0.5])), [0]);
  });
});

/** Per-group NMS with the scalar reference on the unshifted boxes, merged by descending score (ties: index). */
function perGroup(c: { boxes: number[][]; scores: number[]; idxs: number[] }, thr: number): number[] {
  const groups = new Map<number, number[]>();
  c.idxs.forEach((g, i) => groups.set(g, [...(groups.get(g) ?? []), i]));
  const kept: number[] = [];
  for (const members of groups.values()) {
    const k = nmsReference(members.flatMap((i) => c.boxes[i]!), members.map((i) => c.scores[i]!), thr, false);
    kept.push(...k.map((j) => members[j]!));
  }
  return kept.sort((a, b) => (c.scores[b]! - c.scores[a]!) || a - b);
}

describe('batchedNms', () => {
  for (const impl of IMPLS) {
    test(`${impl}: groups never suppress each other; the offset path and the split_thr path agree with per-group NMS`, { skip: impl === 'native' && skipNative }, () => {
      // integer coordinates: the shifted boxes are exact in float64, so IoUs equal the unshifted ones
      for (const [n, seed, groups] of [[200, 21, 3], [600, 22, 7], [100, 23, 1]] as const) {
        const c = clustered(n, seed, { integer: true, groups });
        const boxes = t64(c.boxes);
        const scores = t64(c.scores);
        const idxs = tensor(c.idxs, { dtype: 'int64' });
        for (const thr of [0.5, 0.7]) {
          const expected = perGroup(c, thr);
          assert.deepEqual(values(batchedNms(boxes, scores, idxs, thr, { impl })), expected, `offset path n=${n} thr=${thr}`);
          assert.deepEqual(values(batchedNms(boxes, scores, idxs, thr, { impl, splitThr: 1 })), expected, `split path n=${n} thr=${thr}`);
          assert.deepEqual(values(batchedNms(boxes, scores, idxs.to('float32'), thr, { impl })), expected, 'float idxs');
        }
        // class-agnostic = one plain NMS
        assert.deepEqual(values(batchedNms(boxes, scores, idxs, 0.5, { impl, classAgnostic: true })), values(nms(boxes, scores, 0.5, { impl })));
      }
      // two identical boxes in different groups are both kept
      const same = t64([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]);
      assert.deepEqual(values(batchedNms(same, t64([0.3, 0.9, 0.5]), tensor([0, 1, 0], { dtype: 'int64' }), 0.5, { impl })), [1, 2]);
    });

    test(`${impl}: bad input`, { skip: impl === 'native' && skipNative }, () => {
      const b = tensor([[0, 0, 1, 1], [0, 0, 2, 2]]);
      const s = tensor([0.5, 0.6]);
      assert.throws(() => batchedNms(b, s, tensor([0], { dtype: 'int64' }), 0.5, { impl }), /idxs must be \(n,\) = \(2,\)/);
      assert.throws(() => batchedNms(b, s, tensor([0, -1], { dtype: 'int64' }), 0.5, { impl }), /idxs\[1\] = -1/);
      assert.throws(() => nms(b.narrow(1, 0, 3), s, 0.5, { impl }), /boxes must be \(n, 4\)/);
      assert.throws(() => nms(b, tensor([0.5]), 0.5, { impl }), /scores must be \(n,\) = \(2,\)/);
      assert.throws(() => nms(b.to('int64'), s, 0.5, { impl }), /boxes must be float32 or float64/);
      assert.throws(() => nms(b, s, 0.5, { impl: 'fast' as 'native' }), /impl must be/);
    });
  }

  test('float32 boxes: native and composition agree on both mmcv paths with fractional coordinates', { skip: skipNative }, () => {
    const c = clustered(800, 31, { groups: 5 });
    const boxes = tensor(c.boxes, { dtype: 'float32' });
    const scores = tensor(c.scores, { dtype: 'float32' });
    const idxs = tensor(c.idxs, { dtype: 'int64' });
    for (const splitThr of [10000, 1]) {
      const a = values(batchedNms(boxes, scores, idxs, 0.6, { impl: 'native', splitThr }));
      const b = values(batchedNms(boxes, scores, idxs, 0.6, { impl: 'composition', splitThr }));
      assert.deepEqual(a, b);
    }
  });
});
