import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { autocastSupported, setNumThreads } from '../../src/engine/index.js';
import { openTrainCheckpoint } from '../../src/train/checkpoint.js';
import { trainSegmentor } from '../../src/tasks/segmentation/train.js';
import { tinyDataset, tinyTrainConfig } from './train-helpers.js';

setNumThreads(1);

test('training with bf16 autocast on CPU: finite losses that differ from float32; fp16 on CPU is refused', {
  skip: autocastSupported() ? false : 'the native addon has no autocast binding',
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'train-amp-'));
  try {
    const data = await tinyDataset(dir, 6);
    const config = tinyTrainConfig({ max_iters: 2, checkpoint_interval: 2 });
    const common = { config, dataRoot: data, workers: 0, seed: 2, handleSignals: false } as const;
    const bf = await trainSegmentor({ ...common, workDir: join(dir, 'bf16'), amp: 'bf16' });
    const fp = await trainSegmentor({ ...common, workDir: join(dir, 'fp32') });
    for (const v of Object.values(bf.losses)) assert.ok(Number.isFinite(v));
    assert.notEqual(bf.losses['decode.loss_ce'], fp.losses['decode.loss_ce'], 'autocast changed the arithmetic');
    assert.ok(Math.abs(bf.losses['decode.loss_ce']! - fp.losses['decode.loss_ce']!) < 0.2, 'but not the result much');
    const ck = openTrainCheckpoint(bf.checkpoint!);
    assert.equal(ck.state.grad_scaler, null, 'bf16 needs no loss scaler');
    ck.checkpoint.close();
    await assert.rejects(trainSegmentor({ ...common, workDir: join(dir, 'fp16'), amp: 'fp16' }), /float16 needs a CUDA device/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
