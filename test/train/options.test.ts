import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setNumThreads } from '../../src/engine/index.js';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import { trainSegmentor } from '../../src/tasks/segmentation/train.js';
import { tinyDataset, tinyTrainConfig } from './train-helpers.js';

setNumThreads(1);

function read(path: string): Map<string, Buffer> {
  const c = loadCheckpoint(path);
  try {
    return new Map([...c.tensors].map(([k, t]) => [k, Buffer.from(t.read())]));
  } finally {
    c.close();
  }
}

test('--with-cp gives the same training as without (same losses, weights to float rounding); --freeze-backbone trains only the heads; accumulation and clipping run', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'train-opts-'));
  try {
    const data = await tinyDataset(dir, 6);
    const config = tinyTrainConfig({ max_iters: 2, checkpoint_interval: 2 });
    const common = { config, dataRoot: data, workers: 0, seed: 4, handleSignals: false } as const;
    const plain = await trainSegmentor({ ...common, workDir: join(dir, 'plain') });
    const cp = await trainSegmentor({ ...common, workDir: join(dir, 'cp'), withCp: true });
    assert.deepEqual(cp.losses, plain.losses);
    const a = read(plain.checkpoint!);
    const b = read(cp.checkpoint!);
    // same values up to float rounding (the recomputed graph accumulates some gradients in another order)
    let worst = 0;
    for (const k of a.keys()) {
      if (!k.startsWith('backbone.') || /num_batches/.test(k)) continue;
      const x = new Float32Array(a.get(k)!.buffer.slice(a.get(k)!.byteOffset, a.get(k)!.byteOffset + a.get(k)!.byteLength));
      const y = new Float32Array(b.get(k)!.buffer.slice(b.get(k)!.byteOffset, b.get(k)!.byteOffset + b.get(k)!.byteLength));
      for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!) / Math.max(Math.abs(y[i]!), 1e-3));
    }
    assert.ok(worst < 1e-4, `with_cp changed the weights by ${worst}`);

    const frozen = await trainSegmentor({ ...common, workDir: join(dir, 'frozen'), freezeBackbone: true });
    const f = read(frozen.checkpoint!);
    await trainSegmentor({ ...common, config: tinyTrainConfig({ max_iters: 2, checkpoint_interval: 1, max_keep_ckpts: 5 }), workDir: join(dir, 'init'), freezeBackbone: true });
    const first = read(join(dir, 'init', 'iter_00000001.safetensors'));
    const params = [...f.keys()].filter((k) => k.startsWith('backbone.') && !/running_|num_batches/.test(k));
    assert.ok(params.length > 20);
    // frozen: the backbone's parameters do not move between iterations 1 and 2, the heads' do; no optimizer state for the backbone
    assert.deepEqual(params.filter((k) => !f.get(k)!.equals(first.get(k)!)), []);
    assert.ok([...f.keys()].some((k) => k.startsWith('decode_head.') && !/running_|num_batches/.test(k) && !f.get(k)!.equals(first.get(k)!)));
    const optPlain = [...a.keys()].filter((k) => k.startsWith('optimizer.state.')).length;
    const optFrozen = [...f.keys()].filter((k) => k.startsWith('optimizer.state.')).length;
    assert.ok(optFrozen > 0 && optFrozen < optPlain);

    const acc = await trainSegmentor({ ...common, workDir: join(dir, 'acc'), accumulate: 2, clipGrad: 0.5 });
    assert.equal(acc.iterations, 2);
    for (const v of Object.values(acc.losses)) assert.ok(Number.isFinite(v));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
