import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LoadedBatch, Prefetcher, SampleLoader } from '../../src/train/loader.js';
import { BatchSampler, epochPermutation } from '../../src/train/sampler.js';
import { listSamples } from '../../src/tasks/segmentation/datasets.js';
import { customDataset } from '../../src/tasks/segmentation/datasets.js';
import { SYNTHETIC_CLASSES } from '../../src/tasks/segmentation/synthetic.js';
import { type SegSampleContext, type SegTrainSample, segSampleFn } from '../../src/tasks/segmentation/train-data.js';
import { scaledTrainPipelineCfg } from '../../src/tasks/segmentation/pipeline-train.js';
import { BIN, tinyDataset, writeTinyTrainConfig } from './train-helpers.js';

const workerUrl = new URL('../../src/tasks/segmentation/train-worker.js', import.meta.url);

async function context(root: string): Promise<SegSampleContext> {
  const ds = customDataset({ dataRoot: root, imgDir: 'img_dir/train', annDir: 'ann_dir/train', imgSuffix: '.png', classes: SYNTHETIC_CLASSES });
  return {
    samples: listSamples(ds).map((s) => ({ image: s.image, label: s.label! })),
    pipeline: scaledTrainPipelineCfg(64, { reduceZeroLabel: false }), numClasses: SYNTHETIC_CLASSES.length, ignoreIndex: 255,
    reduceZeroLabel: false,
  };
}

async function batches(ctx: SegSampleContext, workers: number, n: number, o: { skipBad?: boolean; warn?: string[] } = {}): Promise<LoadedBatch<SegTrainSample>[]> {
  const sampler = new BatchSampler(ctx.samples.length, 2, { seed: 9 });
  const loader = new SampleLoader<SegTrainSample>({ workers, workerUrl, workerData: ctx, inProcess: segSampleFn(ctx) });
  const pf = new Prefetcher(sampler, loader, { prefetch: 3, skipBad: o.skipBad ?? false, onWarn: (m) => o.warn?.push(m) });
  try {
    const out: LoadedBatch<SegTrainSample>[] = [];
    for (let i = 0; i < n; i++) out.push(await pf.next());
    return out;
  } finally {
    await loader.close();
  }
}

test('sampler: seeded shuffle per epoch, drop_last, resumable state', () => {
  const a = new BatchSampler(7, 2, { seed: 1 });
  assert.equal(a.batchesPerEpoch, 3);
  const seen = [a.next(), a.next(), a.next()].flatMap((b) => b.indices);
  assert.equal(new Set(seen).size, 6, 'each sample at most once per epoch (one dropped)');
  assert.deepEqual(seen, Array.from(epochPermutation(7, 1, 0)).slice(0, 6));
  const b4 = a.next();
  assert.equal(b4.epoch, 1);
  assert.notDeepEqual(Array.from(epochPermutation(7, 1, 1)), Array.from(epochPermutation(7, 1, 0)));
  const c = new BatchSampler(7, 2, { seed: 1 });
  c.setState(b4.after);
  const d = new BatchSampler(7, 2, { seed: 1 });
  for (let i = 0; i < 4; i++) d.next();
  assert.deepEqual(c.next().indices, d.next().indices);
  assert.throws(() => new BatchSampler(7, 2, { seed: 2 }).setState(b4.after), /seed 1 \(now 2\)/);
  assert.throws(() => new BatchSampler(1, 2, { seed: 0 }), /fewer than one batch of 2/);
});

test('data loader: batches are identical in-process and with 2 worker threads (order and bytes), in sampler order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'loader-det-'));
  try {
    const ctx = await context(await tinyDataset(dir, 10));
    const a = await batches(ctx, 0, 5);
    const b = await batches(ctx, 2, 5);
    const ref = new BatchSampler(ctx.samples.length, 2, { seed: 9 });
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(a[i]!.sampled.indices, ref.next().indices);
      assert.deepEqual(b[i]!.samples.map((s) => s.index), a[i]!.sampled.indices);
      for (let k = 0; k < 2; k++) {
        assert.deepEqual(Buffer.from(b[i]!.samples[k]!.img.buffer), Buffer.from(a[i]!.samples[k]!.img.buffer));
        assert.deepEqual(b[i]!.samples[k]!.label, a[i]!.samples[k]!.label);
      }
    }
    // epoch 1 re-draws the augmentation: the same image gives other arrays
    const first = a[0]!.samples[0]!;
    const again = (await batches(ctx, 0, 9)).slice(4).flatMap((x) => x.samples).find((s) => s.index === first.index);
    if (again) assert.notDeepEqual(Buffer.from(again.img.buffer), Buffer.from(first.img.buffer));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('data loader: a corrupt image fails with its file name (workers), or is skipped with a warning', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'loader-bad-'));
  try {
    const ctx = await context(await tinyDataset(dir, 6));
    for (const s of ctx.samples) writeFileSync(s.image, 'not an image');
    ctx.samples = ctx.samples.slice(0, 4);
    await assert.rejects(batches(ctx, 2, 1), (e: Error) => /synthetic_000\d\.png/.test(e.message) && /cannot decode|image/i.test(e.message));
    await assert.rejects(batches(ctx, 0, 1), /synthetic_000\d\.png/);
    // all bad: skipping cannot help, the error says so
    const warn: string[] = [];
    await assert.rejects(batches(ctx, 1, 1, { skipBad: true, warn }), /every sample of the dataset failed to load/);
    assert.ok(warn.length >= 4 && warn.every((w) => /skipping a bad sample: .*synthetic_000\d\.png/.test(w)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('data loader: one bad sample among good ones is replaced with --skip-bad-samples; labels of another size and class ids out of range are named', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'loader-skip-'));
  try {
    const root = await tinyDataset(dir, 8);
    const ctx = await context(root);
    writeFileSync(ctx.samples[2]!.image, Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]));
    const warn: string[] = [];
    const got = await batches(ctx, 2, 3, { skipBad: true, warn });
    assert.equal(got.flatMap((b) => b.samples).length, 6);
    assert.ok(got.flatMap((b) => b.samples).every((s) => s.index !== 2));
    assert.ok(got.flatMap((b) => b.skipped).every((x) => x.index === 2 && /synthetic_0002\.png/.test(x.error)));
    assert.ok(warn.every((w) => /skipping a bad sample: .*synthetic_0002\.png/.test(w)));

    const { writeLabelPng } = await import('../../src/io/image.js');
    const c2 = await context(root);
    await writeLabelPng(c2.samples[0]!.label, new Uint8Array(32 * 32), 32, 32);
    await writeLabelPng(c2.samples[1]!.label, new Uint8Array(64 * 64).fill(20), 64, 64);
    const f0 = segSampleFn(c2);
    await assert.rejects(Promise.resolve(f0({ index: 0, epoch: 0, seed: 0 })), (e: Error) => e.message.includes(c2.samples[0]!.label) && /32x32 but its image .* is 64x64/.test(e.message));
    await assert.rejects(Promise.resolve(f0({ index: 1, epoch: 0, seed: 0 })), (e: Error) => e.message.includes(c2.samples[1]!.label) && /class id 20 out of range: the config has 9 classes/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('data loader: close() terminates the workers and rejects pending samples (no hang)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'loader-close-'));
  try {
    const ctx = await context(await tinyDataset(dir, 4));
    const loader = new SampleLoader<SegTrainSample>({ workers: 2, workerUrl, workerData: ctx });
    const pending = [0, 1, 2, 3].map((index) => loader.load({ index, epoch: 0, seed: 0 }));
    const closing = loader.close();
    const settled = await Promise.allSettled(pending);
    await closing;
    assert.ok(settled.every((s) => s.status === 'rejected' || s.status === 'fulfilled'));
    await assert.rejects(loader.load({ index: 0, epoch: 0, seed: 0 }), /closed/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train CLI: Ctrl-C (SIGINT) finishes the iteration, saves a checkpoint, stops the workers and exits 130', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'train-sigint-'));
  try {
    const data = await tinyDataset(dir, 8);
    const cfg = writeTinyTrainConfig(dir, 'tiny', { max_iters: 200, checkpoint_interval: 100 });
    const work = join(dir, 'work');
    const child = spawn(process.execPath, [BIN, 'train', '--config', cfg, '--data', data, '--work-dir', work, '--workers', '2',
      '--threads', '1', '--log-interval', '1', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    let sent = false;
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    const exit = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no progress line: ${stderr}`)), 60_000);
      child.stderr.on('data', (b: Buffer) => {
        stderr += b.toString();
        if (!sent && /iter 2\/200/.test(stderr)) {
          sent = true;
          clearTimeout(timer);
          child.kill('SIGINT');
          resolve();
        }
      });
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await exit;
    clearTimeout(killer);
    assert.equal(code, 130, stderr);
    assert.match(stderr, /interrupt: finishing this iteration/);
    const j = JSON.parse(stdout) as { interrupted: boolean; iterations: number; checkpoint: string };
    assert.equal(j.interrupted, true);
    assert.ok(j.iterations >= 2 && j.iterations < 200);
    assert.ok(existsSync(j.checkpoint));
    assert.ok(readdirSync(work).some((n) => n.startsWith('iter_')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
