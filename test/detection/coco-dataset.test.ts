/**
 * COCO annotation / results validation and the documented behaviour on bad or unusual input, plus small hand-made
 * evaluations whose results follow from the definitions (no fixture needed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type CocoJson, CocoFormatError, encodeMask, evaluateCoco, loadCocoJson, loadCocoResults, parseCocoJson,
} from '../../src/tasks/detection/coco/index.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';

const skip = skipUnlessFixtures('coco/coco_small.gt.json');
const read = (name: string): unknown => JSON.parse(readFileSync(fixturePath('coco', name), 'utf8'));

/** One 100x100 image, categories 1 and 2, one 20x20 GT box of category 1 at (10, 10). */
function tiny(): CocoJson {
  return {
    images: [{ id: 5, width: 100, height: 100 }],
    categories: [{ id: 1, name: 'a' }, { id: 2, name: 'b' }],
    annotations: [{ id: 1, image_id: 5, category_id: 1, bbox: [10, 10, 20, 20], area: 400, iscrowd: 0, segmentation: [[10, 10, 30, 10, 30, 30, 10, 30]] }],
  };
}
const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

test('annotation files: missing or mistyped fields, duplicates and orphans are clear errors', () => {
  const bad = (mut: (j: Record<string, unknown> & CocoJson) => void, re: RegExp): void => {
    const j = clone(tiny()) as Record<string, unknown> & CocoJson;
    mut(j);
    assert.throws(() => parseCocoJson(j, 'ann.json'), (e: Error) => e instanceof CocoFormatError && re.test(e.message) && e.message.includes('ann.json'));
  };
  bad((j) => delete (j as Partial<CocoJson>).images, /missing top-level field "images"/);
  bad((j) => { (j as Record<string, unknown>).annotations = {}; }, /"annotations" must be a list/);
  bad((j) => delete (j.images[0] as Partial<CocoJson['images'][0]>).height, /images\[0\]: missing field "height"/);
  bad((j) => { j.images[0]!.width = 10.5; }, /"width" must be an integer/);
  bad((j) => { j.images.push({ id: 5, width: 1, height: 1 }); }, /duplicate image id 5/);
  bad((j) => { j.categories.push({ id: 2, name: 'c' }); }, /duplicate category id 2/);
  bad((j) => delete (j.annotations[0] as Partial<CocoJson['annotations'][0]>).area, /annotations\[0\] \(id 1\): missing field "area"/);
  bad((j) => { j.annotations[0]!.image_id = 6; }, /image_id 6 is not in "images"/);
  bad((j) => { j.annotations[0]!.category_id = 9; }, /category_id 9 is not in "categories"/);
  bad((j) => { j.annotations.push({ ...j.annotations[0]! }); }, /duplicate annotation id 1/);
  bad((j) => { (j.annotations[0] as Record<string, unknown>).bbox = [1, 2, 3]; }, /"bbox" must be \[x, y, width, height\]/);
  bad((j) => { j.annotations[0]!.iscrowd = 2; }, /"iscrowd" must be 0 or 1/);
  bad((j) => { (j.annotations[0] as Record<string, unknown>).segmentation = { size: [100, 100], counts: 'zz' }; }, /invalid character/);
  bad((j) => { (j.annotations[0] as Record<string, unknown>).segmentation = { size: [10, 10], counts: [5, 5] }; }, /sum to 10, expected height\*width/);
  bad((j) => { (j.annotations[0] as Record<string, unknown>).segmentation = [[1, 'x']]; }, /polygon 0 must be a flat list of numbers/);
  assert.throws(() => parseCocoJson([1, 2], 'x.json'), /expected a JSON object/);
  // iscrowd may be omitted (0); a category without a name is named by its id
  const j = clone(tiny());
  delete (j.annotations[0] as Partial<CocoJson['annotations'][0]>).iscrowd;
  delete (j.categories[1] as Partial<CocoJson['categories'][0]>).name;
  const ds = parseCocoJson(j);
  assert.equal(ds.annotations[0]!.iscrowd, 0);
  assert.equal(ds.category(2)!.name, '2');
  assert.deepEqual(ds.imgIds(), [5]);
  assert.deepEqual(ds.catIds(), [1, 2]);
  assert.equal(ds.annsOf(5).length, 1);
});

test('files: a missing file and invalid JSON name the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coco-test-'));
  try {
    assert.throws(() => loadCocoJson(join(dir, 'nope.json')), /cannot read COCO annotation file .*nope\.json/);
    writeFileSync(join(dir, 'bad.json'), '{"images": [');
    assert.throws(() => loadCocoJson(join(dir, 'bad.json')), /bad\.json is not valid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('results: loadRes semantics (ids, areas, the first result decides the kind) and clear errors', () => {
  const gt = parseCocoJson(tiny());
  const boxes = loadCocoResults(gt, [{ image_id: 5, category_id: 1, bbox: [0, 0, 4, 5], score: 0.5 }, { image_id: 5, category_id: 2, bbox: [1, 1, 2, 2], score: 0.1 }], 'bbox');
  assert.deepEqual(boxes.map((d) => [d.id, d.area]), [[1, 20], [2, 4]]);
  assert.deepEqual(boxes[0]!.segmentation, [[0, 0, 0, 5, 4, 5, 4, 0]]);
  const m = new Uint8Array(100 * 100);
  for (let y = 20; y < 23; y++) for (let x = 40; x < 42; x++) m[y * 100 + x] = 1;
  const rle = encodeMask(m, 100, 100);
  const masks = loadCocoResults(gt, [{ image_id: 5, category_id: 1, segmentation: rle, score: 0.3 }], 'segm');
  assert.equal(masks[0]!.area, 6);
  assert.deepEqual(masks[0]!.bbox, [40, 20, 2, 3]);
  // with a box in the first result, the box decides the area even for masks (mmdetection's results)
  const both = loadCocoResults(gt, [{ image_id: 5, category_id: 1, segmentation: rle, bbox: [0, 0, 10, 10], score: 0.3 }], 'segm');
  assert.equal(both[0]!.area, 100);
  // an empty bbox in the first result selects the mask branch (pycocotools' `not ann['bbox'] == []`)
  const emptyBox = loadCocoResults(gt, [{ image_id: 5, category_id: 1, segmentation: rle, bbox: [], score: 0.3 }], 'segm');
  assert.deepEqual([emptyBox[0]!.area, emptyBox[0]!.bbox], [6, [40, 20, 2, 3]]);

  assert.throws(() => loadCocoResults(gt, { a: 1 }, 'bbox'), /results must be a list/);
  assert.throws(() => loadCocoResults(gt, [{ image_id: 6, category_id: 1, bbox: [0, 0, 1, 1], score: 1 }], 'bbox'), /results\[0\]: image_id 6 is not an image of the ground truth/);
  assert.throws(() => loadCocoResults(gt, [{ image_id: 5, category_id: 1, bbox: [0, 0, 1, 1] }], 'bbox'), /results\[0\]: missing field "score"/);
  assert.throws(() => loadCocoResults(gt, [{ image_id: 5, category_id: 1, bbox: [0, 0, 1, 1], score: 1 }, { image_id: 5, category_id: 1, score: 1, segmentation: rle }], 'bbox'),
    /results\[1\]: missing field "bbox"/);
  assert.throws(() => loadCocoResults(gt, [{ image_id: 5, category_id: 1, score: 1 }], 'bbox'), /needs a "bbox".*or a "segmentation"/);
  assert.throws(() => loadCocoResults(gt, [{ image_id: 5, category_id: 1, score: 1, segmentation: { size: [100, 100], counts: '0' } }], 'segm'),
    /results\[0\]: segmentation: run lengths sum to 0, expected height\*width/);
});

test('evaluation by hand: a perfect box gives AP 1; IoU 0.75 / 0.6 boxes match up to their threshold only', () => {
  // Exact values ignore numpy's spacing(1) in the precision denominator: 1 / (1 + 2^-52) = 1 - 2^-52, so "1" is
  // 0.9999999999999998 in pycocotools too; compare within 1e-15 and check that entry exactly.
  const near = (got: number[], want: number[]): void =>
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) <= 1e-15, `stats[${i}] = ${v}, expected ${want[i]}`));
  const gt = parseCocoJson(tiny());
  const perfect = evaluateCoco(gt, [{ image_id: 5, category_id: 1, bbox: [10, 10, 20, 20], score: 0.9 }], 'bbox', { keepDetails: true });
  // 400 px² is small: AP / AR all and small are 1, medium and large have no GT (-1); category 2 has no GT (-1)
  near(perfect.stats, [1, 1, 1, 1, -1, -1, 1, 1, 1, 1, -1, -1]);
  assert.equal(perfect.details!.precision[0], 1 / (1 + 2.220446049250313e-16));
  assert.equal(perfect.stats[8], 1); // recall has no epsilon
  near(perfect.perCategoryAp.map((c) => c.ap), [1, -1]);
  // [10, 10, 20, 15] inside the GT: IoU 300/400 = 0.75 → matched at t = 0.5 .. 0.75 (6 of 10 thresholds)
  const r75 = evaluateCoco(gt, [{ image_id: 5, category_id: 1, bbox: [10, 10, 20, 15], score: 0.9 }], 'bbox');
  near([r75.stats[0]!, r75.stats[2]!], [0.6, 1]); // AP@0.75 = 1: an IoU equal to the threshold matches
  // [10, 10, 20, 12]: IoU 240/400 = 0.6 → 0.5, 0.55, 0.6
  const r60 = evaluateCoco(gt, [{ image_id: 5, category_id: 1, bbox: [10, 10, 20, 12], score: 0.9 }], 'bbox');
  near([r60.stats[0]!, r60.stats[2]!], [0.3, 0]);
  assert.equal(r60.stats[8], 0.3);
  // the same through masks (segm): the polygon GT is a 20x20 square, the detection the mask of [10, 10, 20, 12]
  const m = new Uint8Array(100 * 100);
  for (let y = 10; y < 22; y++) for (let x = 10; x < 30; x++) m[y * 100 + x] = 1;
  const s60 = evaluateCoco(gt, [{ image_id: 5, category_id: 1, segmentation: encodeMask(m, 100, 100), score: 0.9 }], 'segm');
  near([s60.stats[0]!], [0.3]);
  assert.equal(s60.stats[8], 0.3);
  // a second, lower-scored duplicate is a false positive: precision at full recall stays 1, AR unchanged
  const dup = evaluateCoco(gt, [{ image_id: 5, category_id: 1, bbox: [10, 10, 20, 20], score: 0.9 }, { image_id: 5, category_id: 1, bbox: [10, 10, 20, 20], score: 0.8 }], 'bbox');
  near(dup.stats, perfect.stats);
  // ... but ranked first it costs half the precision: envelope 0.5 at every recall threshold
  const dupFirst = evaluateCoco(gt, [{ image_id: 5, category_id: 1, bbox: [50, 50, 20, 20], score: 0.95 }, { image_id: 5, category_id: 1, bbox: [10, 10, 20, 20], score: 0.8 }], 'bbox');
  near([dupFirst.stats[0]!, dupFirst.stats[8]!], [0.5, 1]);
});

test('empty results: accepted (pycocotools loadRes fails), every figure is 0 where GT exists, -1 elsewhere', () => {
  const gt = parseCocoJson(tiny());
  const empty = evaluateCoco(gt, [], 'bbox');
  assert.deepEqual(empty.stats, [0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -1, -1]);
  assert.deepEqual(empty.perCategoryAp.map((c) => c.ap), [0, -1]);
  // identical to results holding only a detection of an unknown category, which pycocotools does evaluate
  const unknown = evaluateCoco(gt, [{ image_id: 5, category_id: 77, bbox: [10, 10, 20, 20], score: 1 }], 'bbox');
  assert.deepEqual(unknown.stats, empty.stats);
  assert.equal(unknown.numDroppedDetections, 1);
  assert.equal(evaluateCoco(gt, [], 'segm').stats[0], 0);
});

test('GT lacking what the iouType needs is a clear error', () => {
  const j = clone(tiny());
  delete j.annotations[0]!.bbox;
  assert.throws(() => evaluateCoco(parseCocoJson(j, 'g.json'), [], 'bbox'), /annotation id 1 has no "bbox" \(needed for iouType bbox\)/);
  const k = clone(tiny());
  delete k.annotations[0]!.segmentation;
  assert.throws(() => evaluateCoco(parseCocoJson(k, 'g.json'), [{ image_id: 5, category_id: 1, bbox: [0, 0, 5, 5], score: 1 }], 'segm'),
    /annotation id 1 has no "segmentation"/);
  assert.throws(() => evaluateCoco(parseCocoJson(tiny()), [], 'keypoints' as 'bbox'), /iouType must be "bbox" or "segm"/);
});

test('coco_small: results for unknown categories are dropped; they change nothing but the detection ids', { skip }, () => {
  const gt = loadCocoJson(fixturePath('coco', 'coco_small.gt.json'));
  const res = read('coco_small.bbox.json') as Record<string, unknown>[];
  const base = evaluateCoco(gt, res, 'bbox');
  const extra = [{ image_id: res[0]!.image_id, category_id: 4242, bbox: [0, 0, 50, 50], score: 0.99 }, ...res];
  const r = evaluateCoco(gt, extra, 'bbox');
  assert.deepEqual(r.stats, base.stats);
  assert.equal(r.numDroppedDetections, 1);
  assert.equal(r.numDetections, res.length);
  // a result for an image that is not in the GT is an error naming it
  assert.throws(() => evaluateCoco(gt, [...res, { image_id: 999999, category_id: 1, bbox: [0, 0, 1, 1], score: 1 }], 'bbox'),
    new RegExp(`results\\[${res.length}\\]: image_id 999999 is not an image of the ground truth`));
});

test('progress is reported once per category', () => {
  const gt = parseCocoJson(tiny());
  const seen: [number, number][] = [];
  evaluateCoco(gt, [], 'bbox', { onProgress: (d, t) => seen.push([d, t]) });
  assert.deepEqual(seen, [[1, 2], [2, 2]]);
});
