import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readImage } from '../../src/io/image.js';
import { decodeMask, evaluateCoco, loadCocoJson, parseCocoJson, rleArea, rleToBbox } from '../../src/tasks/detection/coco/index.js';
import { buildSyntheticCoco, syntheticFileName } from '../../src/tasks/detection/synthetic.js';
import { SYNTHETIC_THING_CLASSES } from '../../src/tasks/detection/classes.js';
import { generateScene, sampleSeed } from '../../src/tasks/segmentation/synthetic.js';
import { runBin } from '../cli/helpers.js';

test('synthetic COCO: annotations parse with the coco API; RLE masks equal the scene instances; area = RLE area = visible pixels; bbox = toBbox', () => {
  const opts = { count: 5, size: 64, seed: 7, val: 2 };
  const { train, val } = buildSyntheticCoco(opts);
  assert.equal(train.images.length, 3);
  assert.equal(val.images.length, 2);
  assert.deepEqual(train.categories.map((c) => c.name), [...SYNTHETIC_THING_CLASSES]);
  assert.deepEqual(train.categories.map((c) => c.id), [1, 2, 3, 4, 5]);
  const annIds = new Set<number>();
  let total = 0;
  for (const [split, json] of [['train', train], ['val', val]] as const) {
    const ds = parseCocoJson(JSON.parse(JSON.stringify(json)), `synthetic ${split}`); // through JSON, as a file would be
    assert.equal(ds.images.length, json.images.length);
    for (const im of json.images) {
      const i = im.id - 1;
      assert.equal(im.file_name, syntheticFileName(i));
      assert.equal(split === 'train', i < 3, 'the first count - val scenes are the train split');
      // regenerate the scene independently: every visible instance is one annotation, in painting order
      const scene = generateScene({ width: 64, height: 64, seed: sampleSeed(opts.seed, i) });
      const anns = ds.annsOf(im.id);
      assert.equal(anns.length, scene.instances.length);
      scene.instances.forEach((inst, k) => {
        const a = anns[k]!;
        assert.ok(!annIds.has(a.id), 'annotation ids are unique across splits');
        annIds.add(a.id);
        assert.equal(a.category_id, inst.classId - 3);
        assert.equal(a.iscrowd, 0);
        const seg = a.segmentation as { size: [number, number]; counts: string };
        assert.deepEqual(seg.size, [64, 64]);
        assert.equal(typeof seg.counts, 'string', 'compressed RLE');
        assert.deepEqual(decodeMask(seg), inst.mask, 'the RLE decodes to the visible mask');
        let px = 0;
        for (const v of inst.mask) px += v;
        assert.equal(a.area, px, 'area = number of visible pixels');
        assert.equal(rleArea(seg), a.area, 'area = RLE area');
        assert.deepEqual(rleToBbox(seg), a.bbox, 'bbox = toBbox of the RLE');
        total++;
      });
    }
  }
  assert.ok(total > 5, `a few instances (${total})`);
});

test('synthetic COCO: the ground truth fed back as results (score 1) gives AP = AR = 1 for bbox and segm', () => {
  const { val } = buildSyntheticCoco({ count: 6, size: 96, seed: 2, val: 4 });
  const gt = parseCocoJson(val, 'synthetic val');
  for (const iouType of ['bbox', 'segm'] as const) {
    const results = val.annotations.map((a) => ({
      image_id: a.image_id, category_id: a.category_id, score: 1,
      ...(iouType === 'bbox' ? { bbox: a.bbox } : { segmentation: a.segmentation }),
    }));
    const e = evaluateCoco(gt, results, iouType);
    assert.equal(e.stats.length, 12);
    assert.equal(e.stats[0], 1, `${iouType} AP`);
    assert.equal(e.stats[1], 1, `${iouType} AP50`);
    assert.equal(e.stats[2], 1, `${iouType} AP75`);
    assert.equal(e.stats[8], 1, `${iouType} AR100`);
    for (const c of e.perCategoryAp) assert.ok(c.ap === 1 || c.ap === -1, `${c.name}: ${c.ap}`);
    // shifting every box / dropping every mask's results lowers the score: the check can fail
    const worse = evaluateCoco(gt, results.slice(0, Math.floor(results.length / 2)), iouType);
    assert.ok(worse.stats[8]! < 1, 'half the detections: recall below 1');
  }
});

test('synth --coco writes the semantic layout and COCO instances next to it; the files load and name the written images', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'synth-coco-'));
  try {
    const r = runBin(['synth', '--out', dir, '--count', '4', '--size', '48', '--seed', '5', '--val', '2', '--coco', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { train: number; val: number; coco: { files: { train: string; val: string }; image_dirs: { train: string; val: string }; annotations: { train: number; val: number } } };
    assert.equal(j.train, 2);
    assert.equal(j.val, 2);
    for (const split of ['train', 'val'] as const) {
      assert.equal(j.coco.files[split], join(dir, 'annotations', `instances_${split}.json`));
      const ds = loadCocoJson(j.coco.files[split]);
      assert.equal(ds.annotations.length, j.coco.annotations[split]);
      for (const im of ds.images) {
        const file = join(dir, 'img_dir', split, im.file_name!);
        assert.ok(existsSync(file), file);
        assert.ok(existsSync(join(dir, 'ann_dir', split, im.file_name!)), 'semantic label map next to it');
        const img = await readImage(file);
        assert.deepEqual([img.height, img.width], [im.height, im.width]);
      }
    }
    // without --coco: no annotations folder (the command is unchanged)
    const plain = join(dir, 'plain');
    const p = runBin(['synth', '--out', plain, '--count', '2', '--size', '32', '--json']);
    assert.equal(p.code, 0, p.stderr);
    assert.ok(!existsSync(join(plain, 'annotations')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
