import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ade20kDataset, customDataset, listSamples, DatasetError } from '../../src/tasks/segmentation/datasets.js';
import { ADE20K_CLASSES } from '../../src/tasks/segmentation/classes.js';

const root = mkdtempSync(join(tmpdir(), 'vit-adapter-ds-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

function touch(...parts: string[]): void {
  const p = join(root, ...parts);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, '');
}

test('ADE20K layout: sorted samples, reduce_zero_label, 150 classes', () => {
  const ade = join(root, 'ADEChallengeData2016');
  for (const n of ['ADE_val_00000002', 'ADE_val_00000001', 'ADE_val_00000010']) {
    touch('ADEChallengeData2016', 'images', 'validation', `${n}.jpg`);
    touch('ADEChallengeData2016', 'annotations', 'validation', `${n}.png`);
  }
  touch('ADEChallengeData2016', 'images', 'validation', '.hidden.jpg'); // skipped like mmcv.scandir
  touch('ADEChallengeData2016', 'images', 'validation', 'notes.txt'); // wrong suffix
  const cfg = ade20kDataset(ade);
  assert.equal(cfg.reduceZeroLabel, true);
  assert.equal(cfg.classes, ADE20K_CLASSES);
  assert.equal(cfg.palette.length, 150);
  const s = listSamples(cfg);
  assert.deepEqual(
    s.map((x) => x.name),
    ['ADE_val_00000001', 'ADE_val_00000002', 'ADE_val_00000010'],
  );
  assert.equal(s[0]!.image, join(ade, 'images', 'validation', 'ADE_val_00000001.jpg'));
  assert.equal(s[0]!.label, join(ade, 'annotations', 'validation', 'ADE_val_00000001.png'));

  // an image without annotation is reported clearly
  unlinkSync(join(ade, 'annotations', 'validation', 'ADE_val_00000002.png'));
  assert.throws(
    () => listSamples(cfg),
    (e: unknown) => e instanceof DatasetError && /1 of 3 images have no annotation/.test(e.message) && /ADE_val_00000002\.png/.test(e.message),
  );
  // missing folders
  assert.throws(() => listSamples(ade20kDataset(join(root, 'nowhere'))), /image folder not found/);
  assert.throws(() => listSamples(ade20kDataset(ade, 'training')), /image folder not found/);
});

test('custom dataset: data_root, suffixes, nested folders, split file, unlabelled', () => {
  touch('custom', 'imgs', 'b.png');
  touch('custom', 'imgs', 'sub', 'a.png');
  touch('custom', 'labels', 'b_gt.png');
  touch('custom', 'labels', 'sub', 'a_gt.png');
  const cfg = customDataset({
    dataRoot: join(root, 'custom'),
    imgDir: 'imgs',
    annDir: 'labels',
    imgSuffix: '.png',
    segMapSuffix: '_gt.png',
    classes: ['bg', 'thing'],
  });
  assert.equal(cfg.reduceZeroLabel, false);
  assert.equal(cfg.palette.length, 2);
  const s = listSamples(cfg);
  assert.deepEqual(
    s.map((x) => x.name),
    ['b', 'sub/a'],
  );
  assert.equal(s[1]!.label, join(root, 'custom', 'labels', 'sub', 'a_gt.png'));

  writeFileSync(join(root, 'custom', 'val.txt'), 'sub/a\n\nb\n');
  const split = listSamples({ ...cfg, split: join(root, 'custom', 'val.txt') });
  assert.deepEqual(
    split.map((x) => x.name),
    ['sub/a', 'b'],
  );
  writeFileSync(join(root, 'custom', 'bad.txt'), 'c\n');
  assert.throws(() => listSamples({ ...cfg, split: join(root, 'custom', 'bad.txt') }), /1 of 1 names in split file .* have no image/);
  assert.throws(() => listSamples({ ...cfg, split: join(root, 'custom', 'none.txt') }), /split file not found/);

  const unlabelled = listSamples(customDataset({ imgDir: join(root, 'custom', 'imgs'), imgSuffix: '.png', classes: ['x'] }));
  assert.deepEqual(
    unlabelled.map((x) => x.label),
    [null, null],
  );
  assert.throws(() => listSamples({ ...cfg, annDir: join(root, 'custom', 'nolabels') }), /annotation folder not found/);
  assert.throws(() => listSamples({ ...cfg, imgSuffix: '.jpg' }), /no images ending in '\.jpg'/);
  assert.throws(() => customDataset({ imgDir: 'x', classes: ['a', 'b'], palette: [[0, 0, 0]] }), /1 colours but 2 classes/);
});
