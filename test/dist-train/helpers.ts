/**
 * Shared pieces of the data-parallel tests: the exact-check config (the tiny training config without dropout,
 * drop-path or padding, so that every image has the same number of labelled pixels and the loss of 2 ranks × b
 * equals the loss of 1 process × 2b), and a worker entry that trains in-process with the job's environment.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import type { ConfigOverrides } from '../../src/tasks/segmentation/configs.js';
import { tinyTrainOverrides } from '../train/train-helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The compiled worker script ({@link ./worker.ts}). */
export const WORKER = resolve(here, 'worker.js');

/**
 * The tiny config for exact comparisons: no stochastic layers (dropout, drop-path), and no resize ratio, so a 64-px
 * scene is cropped whole (no 255 padding: every image has 64×64 labelled pixels and the per-rank mean losses average
 * to the mean over the union).
 */
export function exactOverrides(extraTrain: Record<string, unknown> = {}): ConfigOverrides {
  const o = tinyTrainOverrides({ pipeline: { img_scale: [256, 64], crop_size: [64, 64], ratio_range: null }, ...extraTrain });
  o.model!.backbone!.drop_path_rate = 0;
  (o.model!.decode_head as Record<string, unknown>).dropout_ratio = 0;
  (o.model!.auxiliary_head as Record<string, unknown>).dropout_ratio = 0;
  return o;
}

/** What {@link WORKER} reads from its argument (JSON). */
export interface WorkerSpec {
  overrides: ConfigOverrides;
  data: string;
  workDir: string;
  batch: number;
  dtype?: 'float32' | 'float64';
  seed?: number;
  resume?: string | null;
  timeoutMs?: number;
}

/** The model tensors of a training checkpoint as float64 arrays (optimizer and RNG entries left out). */
export function modelTensors(path: string): Map<string, Float64Array> {
  const c = loadCheckpoint(path);
  try {
    const out = new Map<string, Float64Array>();
    for (const [k, t] of c.tensors) {
      if (k.startsWith('optimizer.') || k.startsWith('rng.')) continue;
      const b = t.read();
      const buf = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
      const arr = t.dtype === 'float64' ? new Float64Array(buf) : t.dtype === 'float32' ? Float64Array.from(new Float32Array(buf))
        : t.dtype === 'int64' ? Float64Array.from(new BigInt64Array(buf), Number) : null;
      if (arr) out.set(k, arr);
    }
    return out;
  } finally {
    c.close();
  }
}

/** Largest absolute difference over every entry of two tensor maps (same keys required). */
export function maxAbsDiff(a: Map<string, Float64Array>, b: Map<string, Float64Array>): { max: number; key: string } {
  let max = 0;
  let key = '';
  if (a.size !== b.size) throw new Error(`different tensor sets: ${a.size} vs ${b.size}`);
  for (const [k, x] of a) {
    const y = b.get(k);
    if (!y || y.length !== x.length) throw new Error(`tensor ${k} missing or of another size`);
    for (let i = 0; i < x.length; i++) {
      const d = Math.abs(x[i]! - y[i]!);
      if (d > max) {
        max = d;
        key = k;
      }
    }
  }
  return { max, key };
}
