import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setNumThreads } from '../../src/engine/index.js';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import { isAtomicTempOf } from '../../src/io/files.js';
import {
  checkpointName, latestCheckpoint, listCheckpoints, openTrainCheckpoint, pruneCheckpoints, removeStalePartials, writeAtomic,
} from '../../src/train/checkpoint.js';
import type { LazyTensor } from '../../src/io/raw.js';
import { loadSegmentor } from '../../src/tasks/segmentation/inference.js';
import { trainSegmentor } from '../../src/tasks/segmentation/train.js';
import { BIN, runBin, tinyDataset, tinyTrainConfig, writeTinyTrainConfig } from './train-helpers.js';

setNumThreads(1);

const raw = (n: number, fill: number): LazyTensor => {
  const data = new Uint8Array(n * 4).fill(fill);
  return { dtype: 'float32', shape: [n], nbytes: n * 4, read: () => data };
};

test('atomic checkpoint write: a failure mid-write leaves the previous checkpoint intact and no partial file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-atomic-'));
  try {
    const first = join(dir, checkpointName(2));
    writeAtomic(first, [['a', raw(16, 1)], ['b', raw(16, 2)]], { vit_adapter_train: '{}' });
    let reads = 0;
    const failing: LazyTensor = {
      dtype: 'float32', shape: [1 << 16], nbytes: 1 << 18,
      read: () => { reads++; throw new Error('injected failure while writing'); },
    };
    assert.throws(() => writeAtomic(join(dir, checkpointName(4)), [['a', raw(1 << 16, 3)], ['b', failing]], {}), /injected failure/);
    assert.equal(reads, 1);
    assert.equal(existsSync(join(dir, checkpointName(4))), false);
    assert.deepEqual(readdirSync(dir), [checkpointName(2)]);
    assert.equal(latestCheckpoint(dir), first);
    const c = loadCheckpoint(first);
    assert.deepEqual([...c.tensors.keys()], ['a', 'b']);
    assert.equal(c.tensors.get('b')!.read()[0], 2);
    c.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a process killed (SIGKILL) while writing a checkpoint leaves the last good one loadable', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-kill-'));
  try {
    writeAtomic(join(dir, checkpointName(1)), [['w', raw(8, 7)]], { note: 'good' });
    const mod = pathToFileURL(join(BIN, '../../train/checkpoint.js')).href;
    // The child writes 64 tensors of 1 MiB, sleeping 30 ms per tensor, and reports when it has started.
    const code = `
      const { writeAtomic, checkpointName } = await import(${JSON.stringify(mod)});
      const sab = new Int32Array(new SharedArrayBuffer(4));
      const entries = [];
      for (let i = 0; i < 64; i++) entries.push(['t' + i, { dtype: 'float32', shape: [262144], nbytes: 1048576,
        read: () => { if (i === 2) process.stdout.write('writing\\n'); Atomics.wait(sab, 0, 0, 30); return new Uint8Array(1048576).fill(i); } }]);
      writeAtomic(${JSON.stringify(dir)} + '/' + checkpointName(2), entries, {});
      process.stdout.write('done\\n');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (b: Buffer) => {
        if (b.toString().includes('writing')) {
          child.kill('SIGKILL');
          resolve();
        } else if (b.toString().includes('done')) {
          reject(new Error('the child finished before it was killed'));
        }
      });
      child.on('error', reject);
    });
    await new Promise((r) => child.on('exit', r));
    assert.equal(existsSync(join(dir, checkpointName(2))), false, 'no truncated final file');
    assert.ok(readdirSync(dir).some((n) => isAtomicTempOf(n, checkpointName(2))), 'the partial file of the killed writer is there');
    assert.equal(latestCheckpoint(dir), join(dir, checkpointName(1)));
    const c = loadCheckpoint(latestCheckpoint(dir)!);
    assert.equal(c.tensors.get('w')!.read()[0], 7);
    c.close();
    removeStalePartials(dir);
    assert.deepEqual(readdirSync(dir), [checkpointName(1)]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('keep the newest K checkpoints; a plain weights file is not a resume file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-keep-'));
  try {
    for (const i of [5, 10, 15, 20]) writeAtomic(join(dir, checkpointName(i)), [['w', raw(4, i)]], {});
    pruneCheckpoints(dir, 2);
    assert.deepEqual(listCheckpoints(dir).map((e) => e.iteration), [15, 20]);
    assert.throws(() => openTrainCheckpoint(join(dir, checkpointName(20))), /is not a vit-adapter training checkpoint/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a training checkpoint loads directly in loadSegmentor, `eval --checkpoint` and `segment --checkpoint`', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-load-'));
  try {
    const data = await tinyDataset(dir, 6);
    const config = tinyTrainConfig({ max_iters: 2, checkpoint_interval: 2 });
    const r = await trainSegmentor({ config, dataRoot: data, workDir: join(dir, 'work'), workers: 0, seed: 1, handleSignals: false });
    assert.ok(r.checkpoint && existsSync(r.checkpoint));
    const { report } = loadSegmentor(config, r.checkpoint);
    assert.ok(report.loaded > 50, `loaded ${report.loaded}`);
    assert.deepEqual(report.notes, []);
    const cfg = writeTinyTrainConfig(dir);
    const ev = runBin(['eval', '--config', cfg, '--checkpoint', r.checkpoint, '--data', data, '--json', '--threads', '1']);
    assert.equal(ev.code, 0, ev.stderr);
    const j = JSON.parse(ev.stdout) as { images: number; mIoU: number | null; untrained: boolean };
    assert.equal(j.images, 2);
    assert.equal(j.untrained, false);
    assert.equal(typeof j.mIoU, 'number');
    mkdirSync(join(dir, 'seg'));
    const sg = runBin(['segment', join(data, 'img_dir', 'val'), '--config', cfg, '--checkpoint', r.checkpoint, '--out', join(dir, 'seg'), '--json', '--threads', '1']);
    assert.equal(sg.code, 0, sg.stderr);
    assert.equal((JSON.parse(sg.stdout) as { images: unknown[] }).images.length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
