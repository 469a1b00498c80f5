import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setNumThreads } from '../../src/engine/index.js';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import { checkpointName, listCheckpoints } from '../../src/train/checkpoint.js';
import { ResumeMismatchError } from '../../src/train/trainer.js';
import { trainSegmentor } from '../../src/tasks/segmentation/train.js';
import { tinyDataset, tinyTrainConfig } from './train-helpers.js';

// one intra-op thread: the tests share 2 cores with other processes (bit-exactness itself does not depend on it)
setNumThreads(1);

function tensorsOf(path: string): Map<string, Uint8Array> {
  const c = loadCheckpoint(path);
  try {
    return new Map([...c.tensors].map(([k, t]) => [k, t.read().slice()]));
  } finally {
    c.close();
  }
}

function differing(a: Map<string, Uint8Array>, b: Map<string, Uint8Array>): string[] {
  const out: string[] = [];
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    const x = a.get(k);
    const y = b.get(k);
    if (!x || !y || x.length !== y.length || !x.every((v, i) => v === y[i])) out.push(k);
  }
  return out;
}

test('resume is bit-exact: 4 iterations straight = 2, resume, 2 (CPU; data from worker threads)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'train-resume-'));
  try {
    const data = await tinyDataset(dir, 8);
    const config = tinyTrainConfig();
    const common = { config, dataRoot: data, seed: 5, handleSignals: false } as const;
    const a = await trainSegmentor({ ...common, workDir: join(dir, 'a'), workers: 2 });
    assert.equal(a.iterations, 4);
    assert.deepEqual(listCheckpoints(join(dir, 'a')).map((e) => e.iteration), [2, 4]);
    const mid = join(dir, 'a', checkpointName(2));
    // the second half in another process state, with another number of workers
    const b = await trainSegmentor({ ...common, workDir: join(dir, 'b'), workers: 1, resume: mid });
    assert.equal(b.iterations, 4);
    assert.equal(b.ran, 2);
    const ta = tensorsOf(join(dir, 'a', checkpointName(4)));
    const tb = tensorsOf(join(dir, 'b', checkpointName(4)));
    assert.ok([...ta.keys()].some((k) => k.startsWith('optimizer.state.')), 'the checkpoint holds the optimizer state');
    assert.ok(ta.has('rng.torch_cpu'));
    assert.deepEqual(differing(ta, tb), [], 'every tensor identical (model, optimizer state, RNG state)');
    // and training did change the weights between the two checkpoints (the comparison can fail)
    const changed = differing(tensorsOf(mid), ta).filter((k) => k.startsWith('backbone.') || k.startsWith('decode_head.'));
    assert.ok(changed.length > 10, `only ${changed.length} tensors changed between iterations 2 and 4`);
    assert.deepEqual(a.losses, b.losses, 'the last iteration logged the same losses');

    // a resume file from another configuration / seed: a clear error naming what differs
    await assert.rejects(
      trainSegmentor({ ...common, seed: 6, workDir: join(dir, 'c'), workers: 0, resume: mid }),
      (e: unknown) => e instanceof ResumeMismatchError && /seed: 5 vs 6/.test(e.message) && e.message.includes(mid),
    );
    const otherLr = tinyTrainConfig({ optimizer: { lr: 1e-3, paramwise_cfg: { num_layers: 4, layer_decay_rate: 0.9 } } });
    await assert.rejects(
      trainSegmentor({ ...common, config: otherLr, workDir: join(dir, 'd'), workers: 0, resume: mid }),
      /train\.optimizer\.lr: 0\.0012 vs 0\.001/,
    );
    assert.equal(existsSync(join(dir, 'c', checkpointName(4))), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
