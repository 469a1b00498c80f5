/**
 * The RLE mask API against pycocotools (`../shared/fixtures/coco/rle_cases.json`, every case of every section), and
 * hand-made cases for the codec and input errors that need no fixture.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  type RLE, bboxIou, compressRle, countsFromString, countsToString, decodeMask, encodeMask, frBbox, frPoly, mergeRles,
  polygonsToRle, rleArea, rleIou, rleToBbox, rleToData,
} from '../../src/tasks/detection/coco/index.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';

const skip = skipUnlessFixtures('coco/rle_cases.json');
interface Cases {
  encode: { name: string; h: number; w: number; mask: number[]; rle: RLE; uncompressed_counts: number[]; area: number; bbox: number[] }[];
  frPoly: {
    name: string; h: number; w: number; polygons: number[][]; rles: RLE[]; areas: number[]; merged: RLE; merged_area: number;
    merged_bbox: number[]; merged_mask: number[];
  }[];
  frBbox: { h: number; w: number; bbox: number[]; rle: RLE; area: number; mask: number[] }[];
  frUncompressed: { uncompressed: RLE; rle: RLE; area: number; bbox: number[]; mask: number[] }[];
  merge: { name: string; rles: RLE[]; intersect: boolean; result: RLE; area: number }[];
  iou_rle: { name: string; dt: RLE[]; gt: RLE[]; iscrowd: number[]; iou: number[][] }[];
  iou_bbox: { name: string; dt: number[][]; gt: number[][]; iscrowd: number[]; iou: number[][] }[];
}
const cases = (): Cases => JSON.parse(readFileSync(fixturePath('coco', 'rle_cases.json'), 'utf8')) as Cases;

test('rle fixtures: encode → compressed string, runs, area, bbox; decode gives the mask back', { skip }, () => {
  const c = cases();
  assert.ok(c.encode.length > 0);
  for (const e of c.encode) {
    const rle = encodeMask(Uint8Array.from(e.mask), e.h, e.w);
    assert.deepEqual(rle, e.rle, e.name);
    assert.deepEqual(Array.from(rleToData(e.rle).cnts), e.uncompressed_counts, `${e.name} runs`);
    assert.equal(rleArea(e.rle), e.area, `${e.name} area`);
    assert.deepEqual(rleToBbox(e.rle), e.bbox, `${e.name} bbox`);
    assert.deepEqual(Array.from(decodeMask(e.rle)), e.mask, `${e.name} decode`);
    assert.deepEqual(Array.from(decodeMask({ size: e.rle.size, counts: e.uncompressed_counts })), e.mask, `${e.name} decode uncompressed`);
  }
});

test('rle fixtures: frPoly per part, merged (annToRLE) with area, bbox and mask', { skip }, () => {
  for (const p of cases().frPoly) {
    p.polygons.forEach((poly, i) => {
      const r = frPoly(poly, p.h, p.w);
      assert.deepEqual(r, p.rles[i], `${p.name} part ${i}`);
      assert.equal(rleArea(r), p.areas[i], `${p.name} part ${i} area`);
    });
    const merged = polygonsToRle(p.polygons, p.h, p.w);
    assert.deepEqual(merged, p.merged, `${p.name} merged`);
    assert.equal(rleArea(merged), p.merged_area);
    assert.deepEqual(rleToBbox(merged), p.merged_bbox, `${p.name} merged bbox`);
    assert.deepEqual(Array.from(decodeMask(merged)), p.merged_mask, `${p.name} merged mask`);
  }
});

test('rle fixtures: frBbox (box rasterised as its corner polygon)', { skip }, () => {
  for (const b of cases().frBbox) {
    const r = frBbox(b.bbox, b.h, b.w);
    assert.deepEqual(r, b.rle, JSON.stringify(b.bbox));
    assert.equal(rleArea(r), b.area);
    assert.deepEqual(Array.from(decodeMask(r)), b.mask);
  }
});

test('rle fixtures: uncompressed → compressed, area, bbox (zero-length runs), mask', { skip }, () => {
  for (const u of cases().frUncompressed) {
    const name = JSON.stringify(u.uncompressed);
    assert.deepEqual(compressRle(u.uncompressed), u.rle, name);
    assert.equal(rleArea(u.uncompressed), u.area, name);
    assert.equal(rleArea(u.rle), u.area, name);
    assert.deepEqual(rleToBbox(u.uncompressed), u.bbox, `${name} bbox`);
    assert.deepEqual(rleToBbox(u.rle), u.bbox, `${name} bbox (compressed)`);
    assert.deepEqual(Array.from(decodeMask(u.rle)), u.mask, name);
  }
});

test('rle fixtures: merge (union and intersection)', { skip }, () => {
  for (const m of cases().merge) {
    const r = mergeRles(m.rles, m.intersect);
    assert.deepEqual(r, m.result, `${m.name} intersect=${m.intersect}`);
    assert.equal(rleArea(r), m.area);
  }
});

test('rle fixtures: mask IoU with crowd flags and size mismatch (-1); box IoU', { skip }, () => {
  const c = cases();
  for (const i of c.iou_rle) assert.deepEqual(rleIou(i.dt, i.gt, i.iscrowd.map(Boolean)), i.iou, i.name);
  for (const i of c.iou_bbox) assert.deepEqual(bboxIou(i.dt, i.gt, i.iscrowd.map(Boolean)), i.iou, i.name);
});

test('rle codec: negative deltas, multi-character counts and round trips of random runs', () => {
  // counts[3] - counts[1] < 0 is stored as a negative value; large counts need several characters
  const runs = [5, 100000, 3, 7, 0, 1, 123456789, 2];
  assert.deepEqual(Array.from(countsFromString(countsToString(runs))), runs);
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  for (let trial = 0; trial < 200; trial++) {
    const len = 1 + rnd(30);
    const r = Array.from({ length: len }, () => (rnd(4) === 0 ? rnd(2000000) : rnd(40)));
    assert.deepEqual(Array.from(countsFromString(countsToString(r))), r);
  }
});

test('rle encode/decode round trip of random masks (row-major in, column-major runs)', () => {
  let seed = 3;
  const rnd = (): number => {
    seed = (seed * 69069 + 1) % 4294967296;
    return seed / 4294967296;
  };
  for (const [h, w] of [[1, 1], [3, 7], [16, 5], [31, 33]] as const) {
    const m = Uint8Array.from({ length: h * w }, () => (rnd() < 0.4 ? 1 : 0));
    const r = encodeMask(m, h, w);
    assert.deepEqual(r.size, [h, w]);
    assert.deepEqual(decodeMask(r), m);
    assert.equal(rleArea(r), m.reduce((a, b) => a + b, 0));
  }
  // one pixel at (x=2, y=0) of a 3x4 image: column-major position 2*3 = 6
  const m = new Uint8Array(12);
  m[2] = 1;
  assert.deepEqual(Array.from(rleToData(encodeMask(m, 3, 4)).cnts), [6, 1, 5]);
  assert.deepEqual(rleToBbox(encodeMask(m, 3, 4)), [2, 0, 1, 1]);
});

test('rle input errors are clear', () => {
  assert.throws(() => encodeMask(Uint8Array.from([0, 2, 1, 0]), 2, 2), /value 2.*0\/1 mask/);
  assert.throws(() => encodeMask(new Uint8Array(5), 2, 2), /5 values, expected h\*w/);
  assert.throws(() => countsFromString('ab~'), /invalid character "~"/);
  assert.throws(() => countsFromString('0P'), /ends inside a value/);
  assert.throws(() => decodeMask({ size: [2, 2], counts: [1, 2] }), /sum to 3, expected height\*width/);
  assert.throws(() => rleArea({ size: [2, 2], counts: [1, -2, 3] }), /counts\[1\] = -2/);
  assert.throws(() => rleArea({ size: [2], counts: [4] } as unknown as RLE), /size must be \[height, width\]/);
  assert.throws(() => polygonsToRle([], 4, 4), /empty polygon list/);
  assert.throws(() => bboxIou([[0, 0, 1]], [[0, 0, 1, 1]], [false]), /expected \[x, y, w, h\]/);
  assert.throws(() => bboxIou([[0, 0, 1, 1]], [[0, 0, 1, 1]], []), /one flag per ground-truth/);
  assert.deepEqual(bboxIou([], [[0, 0, 1, 1]], [false]), []);
  // different sizes merge to an empty [0, 0] RLE, as pycocotools
  assert.deepEqual(mergeRles([encodeMask(new Uint8Array(4), 2, 2), encodeMask(new Uint8Array(6), 2, 3)]), { size: [0, 0], counts: '' });
});
