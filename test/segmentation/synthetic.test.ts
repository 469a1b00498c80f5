import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generateScene,
  writeSyntheticDataset,
  SYNTHETIC_CLASSES,
  SYNTHETIC_PALETTE,
} from '../../src/tasks/segmentation/synthetic.js';
import { listSamples } from '../../src/tasks/segmentation/datasets.js';
import { readImage, readLabelMap } from '../../src/io/image.js';

const W = 96;
const H = 72;

test('same seed gives identical bytes; different seeds differ', () => {
  const a = generateScene({ width: W, height: H, seed: 7 });
  const b = generateScene({ width: W, height: H, seed: 7 });
  assert.deepEqual(a.image, b.image);
  assert.deepEqual(a.semantic, b.semantic);
  assert.equal(a.instances.length, b.instances.length);
  a.instances.forEach((inst, i) => {
    assert.equal(inst.classId, b.instances[i]!.classId);
    assert.deepEqual(inst.mask, b.instances[i]!.mask);
    assert.deepEqual(inst.bbox, b.instances[i]!.bbox);
  });
  const c = generateScene({ width: W, height: H, seed: 8 });
  assert.notDeepEqual(a.image, c.image);
  assert.notDeepEqual(a.semantic, c.semantic);
});

test('class ids in range; instance masks agree with the semantic map (occlusion)', () => {
  assert.equal(SYNTHETIC_CLASSES.length, SYNTHETIC_PALETTE.length);
  let occluded = 0;
  const seen = new Set<number>();
  for (let seed = 0; seed < 12; seed++) {
    const s = generateScene({ width: W, height: H, seed });
    assert.equal(s.image.length, W * H * 3);
    assert.equal(s.semantic.length, W * H);
    for (const v of s.semantic) {
      assert.ok(v < SYNTHETIC_CLASSES.length, `class ${v} out of range`);
      seen.add(v);
    }
    const cover = new Uint8Array(W * H);
    for (const inst of s.instances) {
      assert.ok(inst.classId >= 4 && inst.classId < SYNTHETIC_CLASSES.length);
      let area = 0;
      let x0 = W;
      let y0 = H;
      let x1 = -1;
      let y1 = -1;
      for (let p = 0; p < W * H; p++) {
        if (!inst.mask[p]) continue;
        area++;
        cover[p]!++;
        // a visible instance pixel carries the instance's class in the semantic map
        assert.equal(s.semantic[p], inst.classId);
        const x = p % W;
        const y = Math.floor(p / W);
        x0 = Math.min(x0, x);
        y0 = Math.min(y0, y);
        x1 = Math.max(x1, x);
        y1 = Math.max(y1, y);
      }
      assert.ok(area > 0);
      assert.equal(inst.area, area);
      assert.deepEqual(inst.bbox, [x0, y0, x1 - x0 + 1, y1 - y0 + 1]);
    }
    for (let p = 0; p < W * H; p++) {
      // masks are disjoint (later instances took the overlap) and cover exactly the object pixels
      assert.ok(cover[p]! <= 1);
      assert.equal(cover[p] === 1, s.semantic[p]! >= 4);
    }
    // count instances whose bounding boxes overlap an earlier one's: occlusion happened
    s.instances.forEach((a, i) =>
      s.instances.slice(0, i).forEach((b) => {
        const [ax, ay, aw, ah] = a.bbox;
        const [bx, by, bw, bh] = b.bbox;
        if (ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah) occluded++;
      }),
    );
  }
  assert.ok(occluded > 0, 'no overlapping instances in 12 scenes');
  assert.ok(seen.size >= 7, `only ${seen.size} classes seen`);
});

test('numClasses restricts the classes drawn', () => {
  for (let seed = 0; seed < 6; seed++) {
    const s = generateScene({ width: 48, height: 40, seed, numClasses: 5 });
    assert.ok(s.semantic.every((v) => v < 5));
    assert.ok(s.instances.every((i) => i.classId === 4));
  }
  assert.throws(() => generateScene({ width: 8, height: 8, seed: 0, numClasses: 12 }), /numClasses/);
});

test('writeSyntheticDataset writes the generic layout and reads back exactly', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-adapter-syn-'));
  try {
    const { config, names } = await writeSyntheticDataset(dir, 3, { width: 40, height: 30, seed: 5 });
    assert.deepEqual(names, ['synthetic_0000', 'synthetic_0001', 'synthetic_0002']);
    const samples = listSamples(config);
    assert.deepEqual(
      samples.map((s) => s.name),
      names,
    );
    assert.deepEqual(config.classes, SYNTHETIC_CLASSES);
    const again = await writeSyntheticDataset(join(dir, 'again'), 3, { width: 40, height: 30, seed: 5 });
    for (let i = 0; i < samples.length; i++) {
      const lab = await readLabelMap(samples[i]!.label!);
      const img = await readImage(samples[i]!.image);
      assert.deepEqual([lab.width, lab.height, img.width, img.height], [40, 30, 40, 30]);
      const lab2 = await readLabelMap(listSamples(again.config)[i]!.label!);
      assert.deepEqual(lab.data, lab2.data);
      assert.ok(lab.data.every((v) => v < SYNTHETIC_CLASSES.length));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
