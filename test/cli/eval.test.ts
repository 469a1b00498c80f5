import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADE20K_CLASSES } from '../../src/tasks/segmentation/classes.js';
import { getPreset, loadConfig } from '../../src/tasks/segmentation/configs.js';
import { datasetFromConfig } from '../../src/tasks/segmentation/evaluate.js';
import { runBin, writeScenePng, writeTinyWholeConfig } from './helpers.js';

interface EvalJson { aAcc: number; mIoU: number; reduce_zero_label: boolean; images: number; dataset: string }

test('a custom dataset does not inherit ADE20K\'s reduce_zero_label (configs and datasetFromConfig)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-rzl-'));
  try {
    const ade = getPreset('upernet_deit_adapter_tiny_512_160k_ade20k');
    assert.equal(ade.dataset.reduce_zero_label, true);
    assert.equal(datasetFromConfig(ade, { dataRoot: dir }).reduceZeroLabel, true, 'ADE20K keeps its convention');
    assert.equal(datasetFromConfig(ade, { dataRoot: dir, kind: 'custom' }).reduceZeroLabel, false);
    assert.equal(datasetFromConfig(ade, { dataRoot: dir, kind: 'custom', reduceZeroLabel: true }).reduceZeroLabel, true);
    assert.equal(datasetFromConfig(ade, { dataRoot: dir, kind: 'ade20k', imgDir: 'x' }).reduceZeroLabel, true);
    // A JSON config that turns the base's ADE20K dataset into a custom one gets mmseg's CustomDataset default...
    const p = join(dir, 'c.json');
    writeFileSync(p, JSON.stringify({
      base: 'upernet_deit_adapter_tiny_512_160k_ade20k', dataset: { type: 'CustomDataset', classes: [...ADE20K_CLASSES] },
    }));
    assert.equal(loadConfig(p).dataset.reduce_zero_label, false);
    // ...unless it says otherwise.
    writeFileSync(p, JSON.stringify({
      base: 'upernet_deit_adapter_tiny_512_160k_ade20k', dataset: { type: 'CustomDataset', classes: [...ADE20K_CLASSES], reduce_zero_label: true },
    }));
    assert.equal(loadConfig(p).dataset.reduce_zero_label, true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('eval: the model scored against its own predictions (written by segment) as a custom dataset gives 100 %', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-self-eval-'));
  try {
    const cfg = writeTinyWholeConfig(dir);
    const data = join(dir, 'data');
    mkdirSync(join(data, 'img'), { recursive: true });
    mkdirSync(join(data, 'ann'), { recursive: true });
    for (const [name, seed] of [['s1', 1], ['s2', 2]] as const) await writeScenePng(join(data, 'img', `${name}.png`), seed);
    // Same config, same (seeded) random weights, single thread: the predictions are the labels.
    const seg = runBin(['segment', join(data, 'img'), '--config', cfg, '--out', join(dir, 'pred'), '--json', '--threads', '1']);
    assert.equal(seg.code, 0, seg.stderr);
    for (const name of ['s1', 's2']) copyFileSync(join(dir, 'pred', `${name}_labels.png`), join(data, 'ann', `${name}.png`));
    const outJson = join(dir, 'res', 'result.json');
    const args = ['eval', '--config', cfg, '--data', data, '--dataset', 'custom', '--img-dir', 'img', '--ann-dir', 'ann',
      '--img-suffix', '.png', '--threads', '1'];
    const r = runBin([...args, '--json', '--out', outJson]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as EvalJson;
    assert.equal(j.reduce_zero_label, false);
    assert.equal(j.images, 2);
    assert.equal(j.aAcc, 1);
    assert.equal(j.mIoU, 1);
    assert.match(r.stderr, /reduce_zero_label off/);
    assert.deepEqual(JSON.parse(readFileSync(outJson, 'utf8')).mIoU, 1);
    // The opposite convention, asked for explicitly, is in force and visible (and scores the shifted labels low).
    linkSync(outJson, join(dir, 'res', 'old-link.json'));
    const z = runBin([...args, '--reduce-zero-label', '--out', outJson]);
    assert.equal(z.code, 0, z.stderr);
    assert.match(z.stdout, /reduce_zero_label on/);
    assert.match(z.stderr, /reduce_zero_label on/);
    const zj = JSON.parse(readFileSync(outJson, 'utf8')) as EvalJson;
    assert.equal(zj.reduce_zero_label, true);
    assert.ok(zj.mIoU < 1);
    // --out is written atomically: the old file's other hard link still holds the first result.
    assert.equal((JSON.parse(readFileSync(join(dir, 'res', 'old-link.json'), 'utf8')) as EvalJson).reduce_zero_label, false);
    const both = runBin([...args, '--reduce-zero-label', '--no-reduce-zero-label']);
    assert.equal(both.code, 2);

    // An unreadable image stops eval with an error naming the file and the sample.
    writeFileSync(join(data, 'img', 's1.png'), 'not an image');
    const bad = runBin(args);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /sample 1 of 2 \(s1\): .*s1\.png: cannot decode image/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
