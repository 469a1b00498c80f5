import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  intersectAndUnion,
  SegEvaluator,
  totalAreaToMetrics,
  nanmean,
  fscore,
  roundHalfEven,
  asciiTable,
} from '../../src/tasks/segmentation/metrics.js';

const close = (a: number, b: number, eps = 1e-12): void => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);

// A 3×4 image, 5 classes (class 4 appears nowhere), ignore index 255.
//   label: 0 0 1 1 | 2 2 255 255 | 0 1 2 0
//   pred : 0 1 1 1 | 2 0 3   0   | 0 1 3 3
// Dropping the two ignored pixels leaves 10 (label, pred) pairs:
//   (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (0,0) (1,1) (2,3) (0,3)
// area_label     = [4, 3, 3, 0, 0]
// area_pred      = [3, 4, 1, 2, 0]   (the pred 3 and 0 under the ignored pixels do not count)
// area_intersect = [2, 3, 1, 0, 0]
// area_union     = pred + label − intersect = [5, 4, 3, 2, 0]
// IoU = [2/5, 3/4, 1/3, 0 (predicted but absent from the labels), NaN (absent everywhere)]
// Acc = [2/4, 3/3, 1/3, NaN (no labelled pixel), NaN]
// aAcc = 6/10; mIoU = (0.4 + 0.75 + 1/3 + 0) / 4 = 0.3708333…; mAcc = (0.5 + 1 + 1/3) / 3 = 0.6111…
const LABEL = Uint8Array.from([0, 0, 1, 1, 2, 2, 255, 255, 0, 1, 2, 0]);
const PRED = Uint8Array.from([0, 1, 1, 1, 2, 0, 3, 0, 0, 1, 3, 3]);

test('intersectAndUnion: hand-computed areas with ignore pixels', () => {
  const a = intersectAndUnion(PRED, LABEL, 5);
  assert.deepEqual([...a.areaLabel], [4, 3, 3, 0, 0]);
  assert.deepEqual([...a.areaPredLabel], [3, 4, 1, 2, 0]);
  assert.deepEqual([...a.areaIntersect], [2, 3, 1, 0, 0]);
  assert.deepEqual([...a.areaUnion], [5, 4, 3, 2, 0]);
});

test('metrics: NaN for a class absent from pred and label, 0 IoU for a false-positive-only class', () => {
  const s = totalAreaToMetrics(intersectAndUnion(PRED, LABEL, 5));
  close(s.IoU[0]!, 0.4);
  close(s.IoU[1]!, 0.75);
  close(s.IoU[2]!, 1 / 3);
  assert.equal(s.IoU[3], 0);
  assert.ok(Number.isNaN(s.IoU[4]!));
  close(s.Acc[0]!, 0.5);
  close(s.Acc[1]!, 1);
  close(s.Acc[2]!, 1 / 3);
  assert.ok(Number.isNaN(s.Acc[3]!));
  assert.ok(Number.isNaN(s.Acc[4]!));
  close(s.aAcc, 0.6);
  close(s.mIoU, (0.4 + 0.75 + 1 / 3 + 0) / 4);
  close(s.mAcc, (0.5 + 1 + 1 / 3) / 3);
  // Dice of class 0 = 2·2 / (3 + 4); F1 equals Dice wherever both are defined.
  close(s.Dice[0]!, 4 / 7);
  close(s.Fscore[0]!, 4 / 7);
  close(s.Precision[0]!, 2 / 3);
  close(s.Recall[0]!, 0.5);
});

test('reduceZeroLabel follows mmseg: 0 → 255 (ignored), v → v − 1, 255 stays 255', () => {
  // raw label: 0 1 2 3 255 1  → reduced: 255 0 1 2 255 0
  // pred     : 2 0 1 2 0   1
  // kept pairs (label, pred): (0,0) (1,1) (2,2) (0,1)
  // area_label = [2,1,1], area_pred = [1,2,1], intersect = [1,1,1], union = [2,2,1]
  // IoU = [0.5, 0.5, 1] → mIoU = 2/3; aAcc = 3/4
  const label = Uint8Array.from([0, 1, 2, 3, 255, 1]);
  const pred = Uint8Array.from([2, 0, 1, 2, 0, 1]);
  const a = intersectAndUnion(pred, label, 3, 255, true);
  assert.deepEqual([...a.areaLabel], [2, 1, 1]);
  assert.deepEqual([...a.areaPredLabel], [1, 2, 1]);
  assert.deepEqual([...a.areaIntersect], [1, 1, 1]);
  assert.deepEqual([...a.areaUnion], [2, 2, 1]);
  const s = totalAreaToMetrics(a);
  close(s.mIoU, 2 / 3);
  close(s.aAcc, 0.75);
});

test('labelMap is applied entry by entry in place before the zero-label reduction (mmseg order)', () => {
  // {1: 2, 2: 3}: a raw 1 becomes 2 and then 3 (mmseg mutates in place); a raw 2 becomes 3.
  const label = Uint8Array.from([1, 2, 0]);
  const pred = Uint8Array.from([3, 3, 0]);
  const a = intersectAndUnion(pred, label, 4, 255, false, new Map([[1, 2], [2, 3]]));
  assert.deepEqual([...a.areaLabel], [1, 0, 0, 2]);
  assert.deepEqual([...a.areaIntersect], [1, 0, 0, 2]);
  // Plain-object form behaves the same.
  const b = intersectAndUnion(pred, label, 4, 255, false, { 1: 2, 2: 3 });
  assert.deepEqual([...b.areaLabel], [...a.areaLabel]);
});

test('out-of-range values fall outside every histogram (torch.histc)', () => {
  // pred 7 and label 9 are outside 0..3 but not ignored: label 0 / pred 7 counts label 0 only,
  // label 9 / pred 1 counts pred 1 only.
  const a = intersectAndUnion([7, 1], [0, 9], 4);
  assert.deepEqual([...a.areaLabel], [1, 0, 0, 0]);
  assert.deepEqual([...a.areaPredLabel], [0, 1, 0, 0]);
  assert.deepEqual([...a.areaIntersect], [0, 0, 0, 0]);
});

test('intersectAndUnion rejects mismatched sizes', () => {
  assert.throws(() => intersectAndUnion([0, 1], [0], 2), /2 pixels but label has 1/);
});

test('accumulating two images equals evaluating their concatenation', () => {
  const predA = Uint8Array.from([0, 1, 2, 2, 1, 0, 3]);
  const labelA = Uint8Array.from([0, 1, 1, 2, 255, 0, 3]);
  const predB = Uint8Array.from([3, 3, 0, 1, 2]);
  const labelB = Uint8Array.from([3, 2, 0, 0, 255]);
  const ev = new SegEvaluator({ numClasses: 5 });
  ev.add(predA, labelA);
  ev.add(predB, labelB);
  assert.equal(ev.count, 2);
  const cat = intersectAndUnion(Uint8Array.from([...predA, ...predB]), Uint8Array.from([...labelA, ...labelB]), 5);
  assert.deepEqual([...ev.totals.areaIntersect], [...cat.areaIntersect]);
  assert.deepEqual([...ev.totals.areaUnion], [...cat.areaUnion]);
  assert.deepEqual([...ev.totals.areaPredLabel], [...cat.areaPredLabel]);
  assert.deepEqual([...ev.totals.areaLabel], [...cat.areaLabel]);
  const s1 = ev.summary();
  const s2 = totalAreaToMetrics(cat);
  assert.equal(s1.mIoU, s2.mIoU);
  assert.equal(s1.mAcc, s2.mAcc);
  assert.equal(s1.aAcc, s2.aAcc);
  ev.reset();
  assert.equal(ev.count, 0);
  assert.ok(Number.isNaN(ev.summary().aAcc));
});

test('formatTable prints mmseg-style percentages with nan', () => {
  const ev = new SegEvaluator({ numClasses: 5 });
  ev.add(PRED, LABEL);
  const t = ev.formatTable(['a', 'b', 'c', 'd', 'e']);
  assert.match(t, /per class results:/);
  assert.match(t, /\|\s+Class\s+\|\s+IoU\s+\|\s+Acc\s+\|/);
  assert.match(t, /\|\s+a\s+\|\s+40\.00\s+\|\s+50\.00\s+\|/);
  assert.match(t, /\|\s+b\s+\|\s+75\.00\s+\|\s+100\.00\s+\|/);
  assert.match(t, /\|\s+c\s+\|\s+33\.33\s+\|\s+33\.33\s+\|/);
  assert.match(t, /\|\s+d\s+\|\s+0\.00\s+\|\s+nan\s+\|/);
  assert.match(t, /\|\s+e\s+\|\s+nan\s+\|\s+nan\s+\|/);
  assert.match(t, /\|\s+aAcc\s+\|\s+mIoU\s+\|\s+mAcc\s+\|/);
  assert.match(t, /\|\s+60\.00\s+\|\s+37\.08\s+\|\s+61\.11\s+\|/);
  assert.throws(() => ev.formatTable(['only one']), /1 class names given for 5 classes/);
});

test('helpers: nanmean, fscore, roundHalfEven, asciiTable', () => {
  close(nanmean([1, Number.NaN, 3]), 2);
  assert.ok(Number.isNaN(nanmean([Number.NaN])));
  close(fscore(0.5, 1), (2 * 0.5) / 1.5);
  assert.equal(roundHalfEven(12.5, 0), 12); // numpy rounds halves to even
  assert.equal(roundHalfEven(13.5, 0), 14);
  assert.equal(roundHalfEven(0.125, 2), 0.12);
  // PrettyTable centring: even-length text gets the extra space on the left.
  assert.equal(asciiTable(['ab'], [['wxyz']]), '+------+\n|  ab  |\n+------+\n| wxyz |\n+------+');
  assert.equal(asciiTable(['Class'], [['wall']]).split('\n')[3], '|  wall |');
});
