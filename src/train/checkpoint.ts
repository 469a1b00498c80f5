/**
 * Training checkpoints: one safetensors file per save, `iter_<N>.safetensors` in the work dir, holding
 *
 * - the model's state dict under its own keys (`backbone.*`, `decode_head.*`, `auxiliary_head.*` for a segmentor),
 *   so `segment` / `eval --checkpoint` load the file directly;
 * - the optimizer state under `optimizer.*` (tensors), the CPU random generator state as `rng.torch_cpu` (uint8);
 * - everything else as JSON in the safetensors metadata under `vit_adapter_train` (iteration, scheduler and
 *   optimizer hyper-parameters, sampler and augmentation RNG state, the config, run metadata).
 *
 * Writes are atomic: the file is written under a temporary name in the same folder, flushed to disk (`fsync`),
 * renamed over the final name and the folder entry flushed, so a process killed at any moment leaves either the
 * previous checkpoints or the new complete one — never a truncated `iter_*.safetensors`. Older checkpoints beyond
 * `keep` are deleted after the new one is in place.
 */
import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { DTYPE_SIZE, type Tensor, noGrad } from '../engine/index.js';
import { loadCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { type LazyTensor, float32ToFloat16, toFloat32Array } from '../io/raw.js';
import { writeSafetensors } from '../io/safetensors.js';
import { isAtomicTempOf } from '../io/files.js';

/** The metadata key holding the training state JSON. */
export const TRAIN_META_KEY = 'vit_adapter_train';
/** Format tag stored in the metadata. */
export const TRAIN_CHECKPOINT_FORMAT = 'vit-adapter-train/1';
/** Tensor-name prefixes that are training state, not model weights. */
export const TRAIN_STATE_PREFIXES: readonly string[] = ['optimizer.', 'rng.'];

const NAME_RE = /^iter_(\d+)\.safetensors$/;

/** The checkpoint file name of an iteration. */
export function checkpointName(iteration: number): string {
  return `iter_${String(iteration).padStart(8, '0')}.safetensors`;
}

/** A tensor to write: a live tensor (read at write time) or raw bytes. */
export type CheckpointTensor = Tensor | LazyTensor;

function lazyOf(t: CheckpointTensor): LazyTensor {
  if ('read' in t) return t;
  const tt = t;
  return { dtype: tt.dtype, shape: tt.shape, nbytes: tt.numel() * DTYPE_SIZE[tt.dtype], read: () => noGrad(() => tt.toBytes()) };
}

/**
 * Writes a safetensors file atomically and durably (temp file in the same folder + fsync + rename + folder fsync:
 * `writeSafetensors` with `durable: true`), so a process killed at any moment leaves the previous file intact.
 * @returns bytes written
 */
export function writeAtomic(path: string, tensors: Iterable<readonly [string, CheckpointTensor]>, metadata: Record<string, string>): number {
  const entries: [string, LazyTensor][] = [];
  for (const [k, t] of tensors) entries.push([k, lazyOf(t)]);
  return writeSafetensors(path, entries, metadata, { durable: true });
}

/** A checkpoint found in a work dir. */
export interface CheckpointEntry {
  path: string;
  iteration: number;
}

/** The `iter_*.safetensors` files of a folder, oldest first (by iteration). Missing folder: none. */
export function listCheckpoints(dir: string): CheckpointEntry[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => ({ n, m: NAME_RE.exec(n) }))
    .filter((x): x is { n: string; m: RegExpExecArray } => x.m !== null)
    .map((x) => ({ path: join(dir, x.n), iteration: Number(x.m[1]) }))
    .filter((e) => { try { return statSync(e.path).isFile(); } catch { return false; } })
    .sort((a, b) => a.iteration - b.iteration);
}

/** The newest checkpoint of a work dir, or null. */
export function latestCheckpoint(dir: string): string | null {
  const all = listCheckpoints(dir);
  return all.length ? all[all.length - 1]!.path : null;
}

/** Deletes all but the newest `keep` checkpoints (and stale partial files of dead writers). */
export function pruneCheckpoints(dir: string, keep: number): string[] {
  const removed: string[] = [];
  const all = listCheckpoints(dir);
  for (const e of all.slice(0, Math.max(0, all.length - keep))) {
    try {
      unlinkSync(e.path);
      removed.push(e.path);
    } catch { /* already gone */ }
  }
  return removed;
}

/** Removes the temporary files that killed writers left for `iter_*.safetensors` checkpoints. */
export function removeStalePartials(dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^\.(iter_\d+\.safetensors)\./.exec(n);
    if (m && isAtomicTempOf(n, m[1]!)) { try { unlinkSync(join(dir, n)); } catch { /* gone */ } }
  }
}

/** A training checkpoint opened for reading. */
export interface OpenTrainCheckpoint {
  path: string;
  /** The parsed `vit_adapter_train` metadata. */
  state: Record<string, unknown>;
  /** The open file (tensors read on demand); close when done. */
  checkpoint: Checkpoint;
}

/** Opens a training checkpoint; throws naming the file when it is not one (e.g. a plain weights file). */
export function openTrainCheckpoint(path: string): OpenTrainCheckpoint {
  const ckpt = loadCheckpoint(path);
  const raw = ckpt.metadata[TRAIN_META_KEY];
  if (typeof raw !== 'string') {
    ckpt.close();
    throw new Error(`${path} is not a vit-adapter training checkpoint (no '${TRAIN_META_KEY}' metadata): ` +
      'resume needs a file written by `vit-adapter train`; to start from weights use --pretrained or --load-from');
  }
  let state: Record<string, unknown>;
  try {
    state = JSON.parse(raw) as Record<string, unknown>;
  } catch (e) {
    ckpt.close();
    throw new Error(`${path}: corrupt training metadata (${(e as Error).message})`);
  }
  if (state.format !== TRAIN_CHECKPOINT_FORMAT) {
    ckpt.close();
    throw new Error(`${path}: training checkpoint format ${JSON.stringify(state.format)}, expected ${TRAIN_CHECKPOINT_FORMAT}`);
  }
  return { path, state, checkpoint: ckpt };
}

/** What {@link exportWeights} wrote. */
export interface ExportResult {
  path: string;
  tensors: number;
  bytes: number;
  dtype: 'float32' | 'float16';
}

/**
 * Writes the model weights of a training checkpoint (its non-`optimizer.*`/`rng.*` tensors, under the same keys) to a
 * new safetensors file, floating-point tensors converted to `dtype` (float16 halves the size; loaders convert back
 * to the model's dtype), integer buffers kept. `metadata` is stored as the file's `__metadata__` (strings).
 */
export function exportWeights(src: string, dst: string, o: { dtype?: 'float32' | 'float16'; metadata?: Record<string, string> } = {}): ExportResult {
  const dtype = o.dtype ?? 'float16';
  const ckpt = loadCheckpoint(src);
  try {
    const entries: [string, LazyTensor][] = [];
    for (const [k, t] of ckpt.tensors) {
      if (TRAIN_STATE_PREFIXES.some((p) => k.startsWith(p))) continue;
      if (t.dtype === 'float32' && dtype === 'float16') {
        const n = t.shape.reduce((a, b) => a * b, 1);
        entries.push([k, {
          dtype: 'float16', shape: t.shape, nbytes: n * 2,
          read: () => new Uint8Array(float32ToFloat16(toFloat32Array({ dtype: 'float32', data: t.read() })).buffer),
        }]);
      } else {
        entries.push([k, t]);
      }
    }
    const bytes = writeAtomic(dst, entries, o.metadata ?? {});
    return { path: dst, tensors: entries.length, bytes, dtype };
  } finally {
    ckpt.close();
  }
}
