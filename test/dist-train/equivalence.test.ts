import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setNumThreads } from '../../src/engine/index.js';
import { distAvailable } from '../../src/engine/dist.js';
import { launchWorkers } from '../../src/cli/launch.js';
import { checkpointName } from '../../src/train/checkpoint.js';
import { loadConfig } from '../../src/tasks/segmentation/configs.js';
import { trainSegmentor } from '../../src/tasks/segmentation/train.js';
import { tinyDataset } from '../train/train-helpers.js';
import { WORKER, type WorkerSpec, exactOverrides, maxAbsDiff, modelTensors } from './helpers.js';

setNumThreads(1);

/*
 * Tolerance. In float64 the two computations differ only in summation order: the gradient average over ranks
 * ((g0 + g1) / 2 against the backward of the batch mean), the SyncBatchNorm statistics (sums of the ranks'
 * sums in float64 against BatchNorm's own reduction) and the loss. Each is a relative error of a few u = 2^-53 ≈ 1.1e-16
 * on O(1) values. AdamW's step lr · m̂ / (sqrt(v̂) + eps) passes a gradient error δg to the parameters as at most
 * lr · δg / eps (eps = 1e-8, lr ≤ 3.6e-4 here): ≲ 3.6e-4 · 1e-15 / 1e-8 ≈ 4e-11 per step, a few steps: ~1e-10.
 * Tolerance 1e-9 on every model tensor (parameters and BN running statistics), measured ~6e-14. Any real difference
 * — a sample on the wrong rank, gradients not averaged, statistics per rank instead of synchronised — changes the
 * parameters by O(lr) = 1e-4 in the first step (Adam's step is about lr in every coordinate), 10^5 times the tolerance;
 * the test checks that the training itself moved the parameters by that much.
 */
const TOL = 1e-9;

async function launch2(spec: WorkerSpec): Promise<void> {
  const err = new PassThrough();
  let text = '';
  err.on('data', (d: Buffer) => { text += d.toString(); });
  const r = await launchWorkers({ nproc: 2, args: [WORKER, JSON.stringify(spec)], stdout: new PassThrough().resume(), stderr: err, handleSignals: false });
  assert.equal(r.code, 0, `2-process run failed: ${r.message}\n${text}`);
}

test('data-parallel equivalence (float64): 2 processes × batch 1 = 1 process × batch 2; resume across 1 ↔ 2 processes', { skip: distAvailable().gloo ? false : 'the addon has no Gloo process groups' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddp-eq-'));
  try {
    const data = await tinyDataset(dir, 8);
    const overrides = exactOverrides();
    const base = { overrides, data, dtype: 'float64' as const, seed: 3 };
    const one = (workDir: string, resume: string | null = null) => trainSegmentor({
      config: loadConfig('upernet_vit_adapter_synth', overrides), dataRoot: data, workDir, batch: 2, dtype: 'float64', seed: 3, workers: 0,
      handleSignals: false, resume,
    });
    // A: one process, batch 2, 4 iterations (checkpoints at 2 and 4)
    const a = await one(join(dir, 'a'));
    assert.equal(a.world_size, 1);
    // B: two processes, batch 1 each
    await launch2({ ...base, workDir: join(dir, 'b'), batch: 1 });
    const ck = (d: string, i: number): Map<string, Float64Array> => modelTensors(join(dir, d, checkpointName(i)));
    const a2 = ck('a', 2);
    const a4 = ck('a', 4);
    const initialMove = maxAbsDiff(a2, a4);
    assert.ok(initialMove.max > 1e-5, `training moved the weights by only ${initialMove.max}`);
    for (const i of [2, 4]) {
      const d = maxAbsDiff(ck('a', i), ck('b', i));
      assert.ok(d.max <= TOL, `iteration ${i}: 2×1 differs from 1×2 by ${d.max} (${d.key}); tolerance ${TOL}`);
    }
    const logB = readFileSync(join(dir, 'b', 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(logB.filter((l) => l.event === 'iter').length, 4, 'one log (rank 0), one line per iteration');
    assert.equal((logB[0]!.meta as Record<string, unknown>).world_size, 2);
    assert.equal((logB[0]!.meta as Record<string, unknown>).sync_bn, 23);

    // C: B's iteration-2 checkpoint (2 processes) resumed by one process with batch 2: continues at the same sample
    const c = await one(join(dir, 'c'), join(dir, 'b', checkpointName(2)));
    assert.equal(c.ran, 2);
    const dc = maxAbsDiff(a4, ck('c', 4));
    assert.ok(dc.max <= TOL, `2 → 1 process resume differs from the straight run by ${dc.max} (${dc.key})`);
    const logC = readFileSync(join(dir, 'c', 'log.jsonl'), 'utf8');
    assert.match(logC, /written by 2 processes; continuing with 1/);
    // D: A's iteration-2 checkpoint (1 process) resumed by two processes with batch 1
    await launch2({ ...base, workDir: join(dir, 'd'), batch: 1, resume: join(dir, 'a', checkpointName(2)) });
    const dd = maxAbsDiff(a4, ck('d', 4));
    assert.ok(dd.max <= TOL, `1 → 2 process resume differs from the straight run by ${dd.max} (${dd.key})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('data-parallel equivalence with gradient accumulation (float64): 2 processes × 1 × accumulate 2 = 1 process × 2 × accumulate 2', { skip: distAvailable().gloo ? false : 'the addon has no Gloo process groups' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddp-acc-'));
  try {
    const data = await tinyDataset(dir, 10);
    // 3 iterations of 2 micro-batches: the non-final micro-batch runs no collective, the final one averages the sum
    const overrides = exactOverrides({ max_iters: 3, checkpoint_interval: 3, optimizer_config: { grad_clip: null, cumulative_iters: 2 } });
    const a = await trainSegmentor({
      config: loadConfig('upernet_vit_adapter_synth', overrides), dataRoot: data, workDir: join(dir, 'a'), batch: 2, dtype: 'float64',
      seed: 5, workers: 0, handleSignals: false,
    });
    assert.equal(a.iterations, 3);
    await launch2({ overrides, data, dtype: 'float64', seed: 5, workDir: join(dir, 'b'), batch: 1 });
    const d = maxAbsDiff(modelTensors(join(dir, 'a', checkpointName(3))), modelTensors(join(dir, 'b', checkpointName(3))));
    assert.ok(d.max <= TOL, `with accumulation 2×1 differs from 1×2 by ${d.max} (${d.key})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
