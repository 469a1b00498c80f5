/**
 * Test worker: trains the exact-check config in this process with the job's place from torchrun's environment
 * (RANK, WORLD_SIZE, ...; none: one process) and prints the summary (rank 0) as JSON. Argument: a {@link WorkerSpec}.
 */
import { setNumThreads } from '../../src/engine/index.js';
import { workerEnv } from '../../src/cli/launch.js';
import { loadConfig } from '../../src/tasks/segmentation/configs.js';
import { trainSegmentor } from '../../src/tasks/segmentation/train.js';
import type { WorkerSpec } from './helpers.js';

const spec = JSON.parse(process.argv[2]!) as WorkerSpec;
const env = workerEnv();
setNumThreads(1);
try {
  const r = await trainSegmentor({
    config: loadConfig('upernet_vit_adapter_synth', spec.overrides), dataRoot: spec.data, workDir: spec.workDir, batch: spec.batch,
    dtype: spec.dtype ?? 'float32', seed: spec.seed ?? 0, resume: spec.resume ?? null, workers: 0, handleSignals: false,
    dist: env && env.worldSize > 1 ? {
      rank: env.rank, worldSize: env.worldSize, localRank: env.localRank, masterAddr: env.masterAddr, masterPort: env.masterPort,
      timeoutMs: spec.timeoutMs ?? 60_000,
    } : null,
  });
  if (!env || env.rank === 0) process.stdout.write(`${JSON.stringify(r)}\n`);
} catch (e) {
  process.stderr.write(`worker rank ${env?.rank ?? 0}: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
}
