/**
 * COCOeval against pycocotools on the shared cases (`../shared/fixtures/coco/`: coco_small, coco_edge; bbox and
 * segm): the 12 stats and per-category AP within 1e-12, the printed summary identical, and the intermediates of
 * debug.json (IoUs, per-image match records, precision and recall arrays) so a failure points at its stage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  COCO_PARAMS, type CocoEvalOutput, evaluateCoco, formatCocoSummary, formatPythonFixed, loadCocoJson, meanAboveMinusOne,
  numpyLinspace, pairwiseSum,
} from '../../src/tasks/detection/coco/index.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';

const skip = skipUnlessFixtures('coco/coco_edge.debug.json');
const read = (name: string): unknown => JSON.parse(readFileSync(fixturePath('coco', name), 'utf8'));
const TOL = 1e-12;

interface Expected { stats: number[]; per_category_ap: { category_id: number; ap: number }[]; summary: string }
interface EvalImg {
  image_id: number; category_id: number; area: string; dtIds: number[]; gtIds: number[]; dtMatches: number[][]; gtMatches: number[][];
  dtIgnore: number[][]; gtIgnore: number[];
}
interface Debug {
  catIds: number[]; imgIds: number[];
  ious: { image_id: number; category_id: number; dt_ids: number[]; gt_ids: number[]; iou: number[][] }[];
  evalImgs: EvalImg[];
  precision_all_100: number[][][];
  recall: number[][][][];
}

const closeArr = (a: number[], b: number[], what: string): void => {
  assert.equal(a.length, b.length, `${what}: length`);
  a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) <= TOL, `${what}[${i}]: ${v} vs pycocotools ${b[i]} (diff ${v - b[i]!})`));
};

const cache = new Map<string, CocoEvalOutput>();
function run(name: string, iouType: 'bbox' | 'segm'): CocoEvalOutput {
  const key = `${name}.${iouType}`;
  let r = cache.get(key);
  if (!r) {
    const gt = loadCocoJson(fixturePath('coco', `${name}.gt.json`));
    r = evaluateCoco(gt, read(`${name}.${iouType}.json`), iouType, { keepDetails: true });
    cache.set(key, r);
  }
  return r;
}

test('parameters: numpy linspace thresholds equal params.json exactly', { skip: skipUnlessFixtures('coco/params.json') }, () => {
  const p = read('params.json') as { iouThrs: number[]; recThrs: number[]; maxDets: number[]; areaRng: number[][]; areaRngLbl: string[] };
  assert.deepEqual([...COCO_PARAMS.iouThrs], p.iouThrs);
  assert.deepEqual([...COCO_PARAMS.recThrs], p.recThrs);
  assert.deepEqual([...COCO_PARAMS.maxDets], p.maxDets);
  assert.deepEqual(COCO_PARAMS.areaRng.map((r) => [...r]), p.areaRng);
  assert.deepEqual([...COCO_PARAMS.areaRngLbl], p.areaRngLbl);
});

test('numpy helpers: linspace arithmetic, pairwise sum, {:0.3f} half-even on the exact binary value', () => {
  assert.equal(numpyLinspace(0.5, 0.95, 10)[8], 0.8999999999999999);
  assert.equal(numpyLinspace(0, 1, 101)[35], 0.35000000000000003);
  assert.equal(numpyLinspace(0, 1, 101)[100], 1);
  // pairwise vs sequential differ on these; the pairwise value is numpy's (8 interleaved accumulators)
  const xs = [1e16, 1, 1, 1, 1, 1, 1, 1, 1, -1e16];
  let seq = 0;
  for (const x of xs) seq += x;
  assert.equal(seq, 0);
  assert.equal(pairwiseSum(xs), 8); // np.add.reduce of the same array (numpy 2.4)
  assert.equal(meanAboveMinusOne([-1, -1]), -1);
  assert.equal(meanAboveMinusOne([-1, 0.5, 1]), 0.75);
  assert.equal(formatPythonFixed(0.5625, 3), '0.562');
  // expected strings from Python's format(x, '0.3f')
  assert.equal(formatPythonFixed(0.5635, 3), '0.564'); // 0.56350000000000000088… in binary: above the tie
  assert.equal(formatPythonFixed(0.2345, 3), '0.234'); // 0.23449999999999998623…: below it
  assert.equal(formatPythonFixed(0.0005, 3), '0.001');
  assert.equal(formatPythonFixed(0.0625, 3), '0.062');
  assert.equal(formatPythonFixed(0.1875, 3), '0.188');
  assert.equal(formatPythonFixed(-1, 3), '-1.000');
  assert.equal(formatPythonFixed(0.95, 2), '0.95');
  assert.equal(formatPythonFixed(1, 3), '1.000');
  assert.equal(formatPythonFixed(-0.0004, 3), '-0.000');
  assert.equal(formatPythonFixed(123.4565, 3), '123.457');
});

for (const name of ['coco_small', 'coco_edge']) {
  for (const iouType of ['bbox', 'segm'] as const) {
    test(`${name} ${iouType}: stats and per-category AP within 1e-12, summary text identical`, { skip }, () => {
      const exp = (read(`${name}.expected.json`) as Record<string, Expected>)[iouType]!;
      const r = run(name, iouType);
      closeArr(r.stats, exp.stats, 'stats');
      assert.deepEqual(r.perCategoryAp.map((c) => c.categoryId), exp.per_category_ap.map((c) => c.category_id));
      closeArr(r.perCategoryAp.map((c) => c.ap), exp.per_category_ap.map((c) => c.ap), 'per_category_ap');
      assert.equal(r.summary, exp.summary);
      assert.equal(formatCocoSummary(exp.stats), exp.summary);
    });

    test(`${name} ${iouType}: intermediates (ious, evalImgs, precision, recall) equal debug.json`, { skip }, () => {
      const dbg = (read(`${name}.debug.json`) as Record<string, Debug>)[iouType]!;
      const r = run(name, iouType);
      const d = r.details!;
      assert.deepEqual(d.catIds, dbg.catIds);
      assert.deepEqual(d.imgIds, dbg.imgIds);
      // IoUs per (image, category)
      const ours = new Map(d.ious.map((x) => [`${x.imageId}/${x.categoryId}`, x]));
      assert.equal(d.ious.length, dbg.ious.length, 'number of (image, category) IoU matrices');
      for (const e of dbg.ious) {
        const key = `${e.image_id}/${e.category_id}`;
        const o = ours.get(key);
        assert.ok(o, `missing IoU matrix for image/category ${key}`);
        assert.deepEqual(o.dtIds, e.dt_ids, `${key} dt order`);
        assert.deepEqual(o.gtIds, e.gt_ids, `${key} gt order`);
        e.iou.forEach((row, i) => closeArr(o.iou[i]!, row, `${key} iou[${i}]`));
      }
      // per-image records in pycocotools' order
      assert.equal(d.evalImgs.length, dbg.evalImgs.length, 'number of evalImgs records');
      dbg.evalImgs.forEach((e, i) => {
        const o = d.evalImgs[i]!;
        const where = `evalImgs[${i}] image ${e.image_id} cat ${e.category_id} area ${e.area}`;
        assert.deepEqual([o.imageId, o.categoryId, o.area], [e.image_id, e.category_id, e.area], where);
        assert.deepEqual(o.dtIds, e.dtIds, `${where} dtIds`);
        assert.deepEqual(o.gtIds, e.gtIds, `${where} gtIds`);
        assert.deepEqual(o.gtIgnore, e.gtIgnore, `${where} gtIgnore`);
        assert.deepEqual(o.dtMatches, e.dtMatches, `${where} dtMatches`);
        assert.deepEqual(o.gtMatches, e.gtMatches, `${where} gtMatches`);
        assert.deepEqual(o.dtIgnore, e.dtIgnore, `${where} dtIgnore`);
      });
      // precision[t][r][k] at area all, maxDets 100; recall[t][k][a][m]
      const T = 10, R = 101, K = d.catIds.length, A = 4, M = 3;
      for (let t = 0; t < T; t++) {
        for (let rr = 0; rr < R; rr++) {
          const ours2 = Array.from({ length: K }, (_, k) => d.precision[(((t * R + rr) * K + k) * A + 0) * M + 2]!);
          closeArr(ours2, dbg.precision_all_100[t]![rr]!, `precision[t=${t}][r=${rr}]`);
        }
        for (let k = 0; k < K; k++) {
          for (let a = 0; a < A; a++) {
            const ours3 = Array.from({ length: M }, (_, m) => d.recall[((t * K + k) * A + a) * M + m]!);
            closeArr(ours3, dbg.recall[t]![k]![a]!, `recall[t=${t}][k=${k}][a=${a}]`);
          }
        }
      }
    });
  }
}

test('coco_edge: what the README calls out (AR large 0.5625 printed 0.562, category 7 AP -1, dropped category 99)', { skip }, () => {
  const r = run('coco_edge', 'bbox');
  assert.ok(r.numDroppedDetections >= 3, `dropped ${r.numDroppedDetections}`);
  assert.equal(r.perCategoryAp.find((c) => c.categoryId === 7)!.ap, -1);
  assert.equal(r.stats[11], 0.5625);
  assert.ok(r.summary.split('\n')[11]!.endsWith('area= large | maxDets=100 ] = 0.562'), r.summary);
  // bit-identical, not only within the tolerance: same arithmetic as pycocotools / numpy
  const exp = (read('coco_edge.expected.json') as Record<string, Expected>).bbox!;
  assert.deepEqual(r.stats, exp.stats);
});
