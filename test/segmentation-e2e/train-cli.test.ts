import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readImage, readLabelMap, writeLabelPng } from '../../src/io/image.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';
import { runBin, tinyDataset, writeTinyTrainConfig } from '../train/train-helpers.js';

test('synth writes a train/val dataset that is the same for the same seed and another for another seed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'synth-cli-'));
  try {
    const r = runBin(['synth', '--out', join(dir, 'a'), '--count', '5', '--size', '64', '--seed', '4', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).train, 4);
    assert.equal(readdirSync(join(dir, 'a', 'img_dir', 'train')).length, 4);
    assert.equal(readdirSync(join(dir, 'a', 'ann_dir', 'val')).length, 1);
    const img = await readImage(join(dir, 'a', 'img_dir', 'val', 'synthetic_0004.png'));
    const lab = await readLabelMap(join(dir, 'a', 'ann_dir', 'val', 'synthetic_0004.png'));
    assert.deepEqual([img.width, img.height, lab.width, lab.height], [64, 64, 64, 64]);
    assert.ok(Math.max(...lab.data) < 9);
    assert.equal(runBin(['synth', '--out', join(dir, 'b'), '--count', '5', '--size', '64', '--seed', '4']).code, 0);
    assert.equal(runBin(['synth', '--out', join(dir, 'c'), '--count', '5', '--size', '64', '--seed', '5']).code, 0);
    const f = (d: string): Buffer => readFileSync(join(dir, d, 'img_dir', 'train', 'synthetic_0001.png'));
    assert.ok(f('a').equals(f('b')));
    assert.ok(!f('a').equals(f('c')));
    assert.equal(runBin(['synth', '--out', join(dir, 'd'), '--count', '1']).code, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train CLI: synth → train 2 iterations with evaluation → JSON summary; the log has every iteration', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'train-cli-'));
  try {
    const data = await tinyDataset(dir, 6);
    const cfg = writeTinyTrainConfig(dir, 'tiny', { max_iters: 2, checkpoint_interval: 1, max_keep_ckpts: 1 });
    const work = join(dir, 'work');
    const r = runBin(['train', '--config', cfg, '--data', data, '--work-dir', work, '--eval-interval', '2', '--workers', '1',
      '--threads', '1', '--json', '--export', join(dir, 'w16.safetensors')]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as Record<string, unknown> & { losses: Record<string, number>; mIoU: number; checkpoint: string };
    assert.equal(j.iterations, 2);
    assert.equal(j.world_size, 1);
    assert.ok(Number.isFinite(j.losses['decode.loss_ce']) && Number.isFinite(j.losses['aux.loss_ce']) && Number.isFinite(j.losses.loss));
    assert.ok(typeof j.mIoU === 'number' && j.mIoU >= 0 && j.mIoU <= 1);
    assert.match(j.checkpoint, /iter_00000002\.safetensors$/);
    assert.deepEqual(readdirSync(work).filter((n) => n.startsWith('iter_')), ['iter_00000002.safetensors'], 'keep 1');
    const log = readFileSync(join(work, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; iter?: number });
    assert.deepEqual(log.filter((l) => l.event === 'iter').map((l) => l.iter), [1, 2]);
    assert.equal(log.filter((l) => l.event === 'eval').length, 1);
    // the exported float16 weights load in eval
    const ev = runBin(['eval', '--config', cfg, '--checkpoint', join(dir, 'w16.safetensors'), '--data', data, '--json', '--threads', '1']);
    assert.equal(ev.code, 0, ev.stderr);
    // resume of a finished run: nothing to do, same checkpoint
    const again = runBin(['train', '--config', cfg, '--data', data, '--work-dir', work, '--resume', '--workers', '0', '--threads', '1', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal((JSON.parse(again.stdout) as { ran: number }).ran, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train CLI bad input: no images, labels of another size, class ids out of range, another config on resume, missing flags', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'train-bad-'));
  try {
    const cfg = writeTinyTrainConfig(dir, 'tiny', { max_iters: 2, checkpoint_interval: 2 });
    const args = (data: string, work = join(dir, 'w')): string[] => ['train', '--config', cfg, '--data', data, '--work-dir', work,
      '--workers', '1', '--threads', '1'];
    // a dataset folder with no images
    mkdirSync(join(dir, 'empty', 'img_dir', 'train'), { recursive: true });
    mkdirSync(join(dir, 'empty', 'ann_dir', 'train'), { recursive: true });
    let r = runBin(args(join(dir, 'empty')));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no images ending in '\.png' found in .*empty\/img_dir\/train/);
    r = runBin(args(join(dir, 'nowhere')));
    assert.match(r.stderr, /image folder not found: .*nowhere\/img_dir\/train/);
    // labels of another size
    const data = await tinyDataset(dir, 6);
    const lab = join(data, 'ann_dir', 'train', 'synthetic_0001.png');
    await writeLabelPng(lab, new Uint8Array(40 * 30), 30, 40);
    r = runBin(args(data));
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(lab) && /label map is 40x30 but its image .*synthetic_0001\.png is 64x64/.test(r.stderr), r.stderr);
    // class ids out of range
    await writeLabelPng(lab, new Uint8Array(64 * 64).fill(12), 64, 64);
    r = runBin(args(data));
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(lab) && /class id 12 out of range: the config has 9 classes/.test(r.stderr), r.stderr);
    await writeLabelPng(lab, new Uint8Array(64 * 64).fill(3), 64, 64);
    // resume file from another config
    r = runBin(args(data, join(dir, 'ok')));
    assert.equal(r.code, 0, r.stderr);
    const other = writeTinyTrainConfig(dir, 'other', { max_iters: 3, checkpoint_interval: 3 });
    r = runBin(['train', '--config', other, '--data', data, '--work-dir', join(dir, 'ok'), '--resume', '--workers', '0', '--threads', '1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /iter_00000002\.safetensors was written by another configuration/);
    assert.match(r.stderr, /train\.max_iters: 2 vs 3/);
    r = runBin(['train', '--config', cfg, '--data', data, '--work-dir', join(dir, 'none'), '--resume', '--threads', '1']);
    assert.match(r.stderr, /--resume: no checkpoint \(iter_\*\.safetensors\) in .*none/);
    r = runBin(['train', '--config', cfg, '--data', data, '--work-dir', join(dir, 'x'), '--resume', join(dir, 'missing.safetensors')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /missing\.safetensors/);
    assert.equal(runBin(['train', '--config', cfg, '--work-dir', join(dir, 'x')]).code, 2);
    assert.match(runBin(['train', '--config', cfg, '--data', data, '--work-dir', join(dir, 'x'), '--amp', 'fp8']).stderr, /--amp must be bf16 or fp16/);
    // a pretrained file of another architecture
    r = runBin([...args(data, join(dir, 'p')), '--pretrained', lab]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(lab), r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train --describe-params --json: the authors\' ViT-Adapter-T groups equal the fixture; B gives its 28 groups', { skip: skipUnlessFixtures('training') }, () => {
  type G = { group_name: string; lr_scale: number; lr: number; weight_decay: number; param_names: string[]; num_params: number; numel: number };
  const fx = JSON.parse(readFileSync(fixturePath('training', 'param_groups_tiny.json'), 'utf8')) as { groups: G[] };
  const r = runBin(['train', '--describe-params', '--config', 'upernet_deit_adapter_tiny_512_160k_ade20k', '--json', '--threads', '1']);
  assert.equal(r.code, 0, r.stderr);
  const got = (JSON.parse(r.stdout) as { groups: G[] }).groups;
  assert.equal(got.length, fx.groups.length);
  got.forEach((g, i) => {
    const e = fx.groups[i]!;
    assert.equal(g.group_name, e.group_name);
    assert.equal(g.lr_scale, e.lr_scale);
    assert.equal(g.lr, e.lr);
    assert.equal(g.weight_decay, e.weight_decay);
    assert.deepEqual(g.param_names, e.param_names);
    assert.equal(g.numel, e.numel);
  });
  const b = runBin(['train', '--describe-params', '--config', 'upernet_deit_adapter_base_512_160k_ade20k', '--json', '--threads', '1']);
  assert.equal(b.code, 0, b.stderr);
  const gb = (JSON.parse(b.stdout) as { groups: G[] }).groups;
  assert.equal(gb.length, 28);
  assert.equal(gb[0]!.group_name, 'layer_0_decay');
  assert.equal(gb.find((g) => g.group_name === 'layer_12_decay')!.lr_scale, 0.95);
});
