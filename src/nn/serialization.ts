/** Bridges checkpoint files (src/io) and modules: lazy tensor sources, loading into a module, saving. */
import { DTYPE_SIZE, type Tensor, fromBytes, noGrad } from '../engine/index.js';
import { type Checkpoint, type LoadCheckpointOptions, loadCheckpoint } from '../io/checkpoint.js';
import { withContext } from '../io/errors.js';
import { rekeyEntries } from '../io/keys.js';
import type { LazyTensor } from '../io/raw.js';
import { writeSafetensors } from '../io/safetensors.js';
import type { LoadResult, LoadStateDictOptions, Module, StateDict, TensorSource } from './module.js';

/** A {@link TensorSource} reading a checkpoint tensor on demand (its dtype is known before reading). */
export function lazySource(t: LazyTensor, device?: string): TensorSource {
  return { shape: t.shape, dtype: t.dtype, materialize: () => fromBytes(t.read(), t.dtype, t.shape, device) };
}

/** Options of {@link readStateDict} and {@link loadWeights}. */
export interface ReadStateDictOptions extends LoadCheckpointOptions {
  /** Keep only keys under this prefix, with the prefix removed (e.g. `backbone.`). */
  select?: string;
  /**
   * Prefixes removed from keys that have them (e.g. `module.`). Two keys that end up equal (`module.w` and `w`)
   * are an error, never a silent overwrite.
   */
  strip?: string[];
}

/**
 * Opens a checkpoint and returns its (re-keyed, see {@link rekeyEntries}) tensors as lazy sources, plus the open
 * checkpoint (close it when done). Throws a CheckpointError when two keys collide after `select` / `strip`.
 */
export function openStateDict(path: string, o: ReadStateDictOptions = {}): { sources: Map<string, TensorSource>; checkpoint: Checkpoint } {
  const ckpt = loadCheckpoint(path, o);
  try {
    const sources = new Map<string, TensorSource>();
    for (const [k, , t] of rekeyEntries(ckpt.tensors, o)) sources.set(k, lazySource(t));
    return { sources, checkpoint: ckpt };
  } catch (e) {
    ckpt.close();
    throw withContext(e, path);
  }
}

/** Reads every (selected) tensor of a checkpoint into memory. */
export function readStateDict(path: string, o: ReadStateDictOptions = {}): StateDict {
  const { sources, checkpoint } = openStateDict(path, o);
  try {
    return new Map([...sources].map(([k, s]) => [k, s.materialize().keep()]));
  } finally {
    checkpoint.close();
  }
}

/** Options of {@link loadWeights}. */
export interface LoadWeightsOptions extends ReadStateDictOptions, LoadStateDictOptions {}

/**
 * Loads a checkpoint file (safetensors, PyTorch .pth, .npz) into a module, reading one tensor at a time.
 * Strict by default (throws listing missing / unexpected / mismatched keys). Floating tensors holding NaN/±Inf are
 * refused unless `allowNonfinite` (see {@link Module.loadStateDict}), as are integer tensors for floating ones.
 */
export function loadWeights(module: Module, path: string, o: LoadWeightsOptions = {}): LoadResult {
  const { sources, checkpoint } = openStateDict(path, o);
  try {
    return module.loadStateDict(sources, { strict: o.strict ?? true, allowNonfinite: o.allowNonfinite ?? false });
  } finally {
    checkpoint.close();
  }
}

/** Writes a module's state dict (or any state dict) to a safetensors file. Returns bytes written. */
export function saveSafetensors(src: Module | StateDict, path: string, metadata?: Record<string, string>): number {
  const sd: StateDict = src instanceof Map ? src : src.stateDict();
  const entries = new Map<string, LazyTensor>();
  for (const [k, t] of sd) {
    const tt: Tensor = t;
    entries.set(k, { dtype: tt.dtype, shape: tt.shape, nbytes: tt.numel() * DTYPE_SIZE[tt.dtype], read: () => noGrad(() => tt.toBytes()) });
  }
  return writeSafetensors(path, entries, metadata);
}
