import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setNumThreads } from '../../src/engine/index.js';
import { distAvailable } from '../../src/engine/dist.js';
import { freePort } from '../../src/cli/launch.js';
import { openTrainCheckpoint, listCheckpoints } from '../../src/train/checkpoint.js';
import { loadConfig } from '../../src/tasks/segmentation/configs.js';
import { datasetFromConfig, evaluateDataset } from '../../src/tasks/segmentation/evaluate.js';
import { buildSegmentor } from '../../src/tasks/segmentation/inference.js';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import { fromBytes } from '../../src/engine/index.js';
import type { TensorSource } from '../../src/nn/index.js';
import { BIN, runBin, tinyDataset, writeTinyTrainConfig } from '../train/train-helpers.js';

setNumThreads(1);
const skip = distAvailable().gloo ? false : 'the addon has no Gloo process groups';

interface Worker { proc: ChildProcess; out: () => string; err: () => string; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> }

/** Starts `vit-adapter <args>` as rank `rank` of a hand-launched job (torchrun's variables). */
function worker(args: string[], env: Record<string, string>): Worker {
  const proc = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  let t0 = 0;
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>((res) => {
    proc.on('exit', (code, signal) => res({ code, signal, ms: performance.now() - t0 }));
  });
  return { proc, out: () => out, err: () => err, done, set start(v: number) { t0 = v; } } as Worker & { start: number };
}

const sleep = (ms: number): Promise<void> => new Promise((d) => setTimeout(d, ms));

async function waitForCheckpoint(workDir: string, iter: number, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  const log = join(workDir, 'log.jsonl');
  for (;;) {
    if (existsSync(log) && readFileSync(log, 'utf8').split('\n').some((l) => l.includes('"event":"checkpoint"') && l.includes(`"iter":${iter},`))) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`no checkpoint at iteration ${iter} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

test('a lost worker (killed, or hanging past --dist-timeout) makes the other exit naming it; the checkpoint is intact and --resume continues', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddp-kill-'));
  const procs: ChildProcess[] = [];
  try {
    const data = await tinyDataset(dir, 8);
    const cfg = writeTinyTrainConfig(dir, 'tiny', { max_iters: 8, checkpoint_interval: 1, max_keep_ckpts: 3 });
    for (const [how, timeoutS] of [['SIGKILL', 30], ['SIGSTOP', 4]] as const) {
      const workDir = join(dir, `w-${how}`);
      const port = await freePort();
      const args = ['train', '--config', cfg, '--data', data, '--work-dir', workDir, '--dist-timeout', String(timeoutS), '--json'];
      const ws = [0, 1].map((r) => worker(args, {
        RANK: String(r), LOCAL_RANK: String(r), WORLD_SIZE: '2', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port),
      }) as Worker & { start: number });
      procs.push(...ws.map((w) => w.proc));
      await waitForCheckpoint(workDir, 2);
      ws[0]!.start = performance.now();
      ws[1]!.proc.kill(how);
      const r0 = await ws[0]!.done;
      assert.equal(r0.code, 1, `rank 0 should fail: ${ws[0]!.err()}`);
      assert.match(ws[0]!.err(), /rank 0: lost rank 1 during iteration \d+: .*the last complete checkpoint is .*iter_0000000\d\.safetensors/,
        ws[0]!.err());
      if (how === 'SIGSTOP') {
        assert.match(ws[0]!.err(), /within the timeout of 4000 ms/);
        assert.ok(r0.ms >= 3500 && r0.ms < 4000 + 15_000, `rank 0 gave up after ${r0.ms} ms (timeout 4 s)`);
        ws[1]!.proc.kill('SIGKILL');
      } else {
        assert.ok(r0.ms < 15_000, `rank 0 took ${r0.ms} ms to notice the lost rank`);
      }
      await ws[1]!.done;
      // the newest checkpoint is complete and loads
      const last = listCheckpoints(workDir).at(-1)!;
      assert.ok(last.iteration >= 2, JSON.stringify(listCheckpoints(workDir)));
      const { state, checkpoint } = openTrainCheckpoint(last.path);
      assert.equal(state.iteration, last.iteration);
      assert.equal(state.world_size, 2);
      checkpoint.close();
      if (how === 'SIGKILL') {
        // resume with the launcher: continues from the newest checkpoint to the end
        const res = runBin(['train', '--config', cfg, '--data', data, '--work-dir', workDir, '--nproc', '2', '--resume', '--json'], 120_000);
        assert.equal(res.code, 0, res.stderr);
        const j = JSON.parse(res.stdout) as Record<string, unknown>;
        assert.equal(j.iterations, 8);
        assert.equal(j.ran, 8 - last.iteration);
        assert.equal(j.world_size, 2);
        assert.match(String(j.resumed_from), new RegExp(`iter_0+${last.iteration}\\.safetensors$`));
      }
    }
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad input: mismatched world size, a rank that never joins, a port in use, launcher options in a worker', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddp-bad-'));
  const srv = createServer();
  const procs: ChildProcess[] = [];
  try {
    const data = await tinyDataset(dir, 8);
    const cfg = writeTinyTrainConfig(dir, 'tiny');
    const args = ['train', '--config', cfg, '--data', data, '--work-dir', join(dir, 'w'), '--dist-timeout', '3'];
    let port = await freePort();
    const env = (r: number, w: number): Record<string, string> => ({ RANK: String(r), WORLD_SIZE: String(w), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
    const mismatch = [worker(args, env(0, 2)), worker(args, env(1, 3))];
    procs.push(...mismatch.map((w) => w.proc));
    const [m0, m1] = await Promise.all(mismatch.map((w) => w.done));
    assert.equal(m0!.code, 1);
    assert.equal(m1!.code, 1);
    assert.match(mismatch[0]!.err(), /mismatched world size: rank 0 was started with worldSize 2, rank 1 with 3/);
    // ranks started with different jobs (here another --iters): refused on every rank, naming the rank
    port = await freePort();
    const other = [worker(args, env(0, 2)), worker([...args, '--iters', '5'], env(1, 2))];
    procs.push(...other.map((w) => w.proc));
    const [o0, o1] = await Promise.all(other.map((w) => w.done));
    assert.deepEqual([o0!.code, o1!.code], [1, 1]);
    for (const w of other) assert.match(w.err(), /rank 1 runs another job than rank 0: resume_key, max_iters differ/);
    port = await freePort();
    const alone = worker(args, env(0, 2));
    procs.push(alone.proc);
    const a = await alone.done;
    assert.equal(a.code, 1);
    assert.match(alone.err(), /rank\(s\) 1 did not join within 3000 ms/);
    // the launcher refuses a port in use before starting anything
    await new Promise<void>((d) => srv.listen(0, '127.0.0.1', () => d()));
    const busy = (srv.address() as { port: number }).port;
    const r = runBin([...args, '--nproc', '2', '--master-port', String(busy)]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`--master-port ${busy} on 127\\.0\\.0\\.1 is already in use`));
    // a worker started with launcher options, and bad worker variables
    const inWorker = spawn(process.execPath, [BIN, ...args, '--nproc', '2'], { env: { ...process.env, ...env(0, 2) }, stdio: ['ignore', 'ignore', 'pipe'] });
    let e = '';
    inWorker.stderr.on('data', (d: Buffer) => { e += d.toString(); });
    const code = await new Promise((res) => inWorker.on('exit', res));
    assert.equal(code, 2);
    assert.match(e, /already a worker of a launched job \(WORLD_SIZE=2/);
    const badRank = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env(5, 2) }, stdio: ['ignore', 'ignore', 'pipe'] });
    let e2 = '';
    badRank.stderr.on('data', (d: Buffer) => { e2 += d.toString(); });
    assert.equal(await new Promise((res) => badRank.on('exit', res)), 2);
    assert.match(e2, /RANK="5" must be an integer in 0\.\.1/);
    const badBackend = runBin([...args, '--dist-backend', 'mpi']);
    assert.equal(badBackend.code, 2);
    assert.match(badBackend.stderr, /--dist-backend must be gloo or nccl/);
  } finally {
    srv.close();
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the issue\'s smoke test: synth 8 scenes, train --nproc 2 --iters 4 --batch 1 --json → world_size 2; sharded evaluation = one process', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddp-smoke-'));
  try {
    const D = join(dir, 'D');
    const W = join(dir, 'W');
    const s = runBin(['synth', '--out', D, '--count', '8', '--size', '128']);
    assert.equal(s.code, 0, s.stderr);
    const r = runBin(['train', '--config', 'upernet_vit_adapter_synth', '--data', D, '--nproc', '2', '--iters', '4', '--batch', '1', '--work-dir', W, '--json'], 300_000);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as Record<string, unknown> & { dist: Record<string, unknown>; eval: Record<string, number> };
    assert.equal(j.world_size, 2);
    assert.equal(j.iterations, 4);
    assert.equal(j.sync_bn, 23);
    assert.equal(j.dist.global_batch, 2);
    assert.ok((j.dist.bytes as number) > 0 && (j.dist.buckets as number) >= 1);
    // rank 0 reports alone: one progress line for the end, nothing from rank 1 on success
    assert.doesNotMatch(r.stderr, /\[rank 1\]/);
    assert.equal(r.stderr.match(/^iter 4\/4 /gm)?.length, 1, r.stderr);
    // the evaluation at the end was sharded over the 2 ranks (1 val image each) and gathered: it equals one process
    // evaluating both images with the checkpoint's weights
    const config = loadConfig('upernet_vit_adapter_synth');
    const model = buildSegmentor(config);
    const c = loadCheckpoint(String(j.checkpoint));
    const sd = new Map<string, TensorSource>();
    for (const [k, t] of c.tensors) if (!k.startsWith('optimizer.') && !k.startsWith('rng.')) sd.set(k, { shape: t.shape, materialize: () => fromBytes(t.read(), t.dtype, t.shape) });
    model.loadStateDict(sd, { strict: true });
    c.close();
    model.eval();
    const ds = datasetFromConfig(config, { dataRoot: D, imgDir: 'img_dir/val', annDir: 'ann_dir/val' });
    const full = await evaluateDataset(model, config, ds);
    assert.equal(full.images, 2);
    const firstOnly = await evaluateDataset(model, config, ds, { limit: 1 });
    // the counts are integers: equal up to an argmax flip from another thread count (none on this 2-core machine)
    const tol = 2e-4;
    for (const k of ['mIoU', 'aAcc', 'mAcc'] as const) assert.ok(Math.abs(j.eval[k]! - full[k]!) <= tol, `${k}: sharded ${j.eval[k]} vs ${full[k]}`);
    assert.ok(Math.abs(firstOnly.aAcc! - full.aAcc!) > tol, 'the check tells one shard from the gathered whole');
    model.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Ctrl-C to the launcher: every worker stops after the same iteration, one checkpoint there, exit 130', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddp-int-'));
  try {
    const data = await tinyDataset(dir, 8);
    const cfg = writeTinyTrainConfig(dir, 'long', { max_iters: 200, checkpoint_interval: 100 });
    const workDir = join(dir, 'w');
    const launcher = worker(['train', '--config', cfg, '--data', data, '--work-dir', workDir, '--nproc', '2', '--json'], {});
    try {
      const log = join(workDir, 'log.jsonl');
      const t0 = Date.now();
      while (!(existsSync(log) && readFileSync(log, 'utf8').includes('"iter":2,')) && Date.now() - t0 < 60_000) await sleep(100);
      launcher.proc.kill('SIGINT');
      const r = await launcher.done;
      assert.equal(r.code, 130, launcher.err());
      const j = JSON.parse(launcher.out()) as { iterations: number; interrupted: boolean; world_size: number; checkpoint: string };
      assert.equal(j.interrupted, true);
      assert.equal(j.world_size, 2);
      assert.ok(j.iterations >= 2 && j.iterations < 200);
      assert.deepEqual(listCheckpoints(workDir).map((c) => c.iteration), [j.iterations], 'one checkpoint, at the iteration where both stopped');
      assert.match(launcher.err(), /interrupted: the workers saved a checkpoint and stopped/);
      const events = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; iter?: number });
      assert.equal(events.at(-1)!.event, 'interrupted');
      assert.equal(events.at(-1)!.iter, j.iterations);
    } finally {
      if (launcher.proc.exitCode === null) launcher.proc.kill('SIGKILL');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
