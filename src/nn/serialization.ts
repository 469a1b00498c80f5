/** Bridges checkpoint files (src/io) and modules: lazy tensor sources, loading into a module, saving. */
import { DTYPE_SIZE, type Tensor, fromBytes, noGrad } from '../engine/index.js';
import { type Checkpoint, type LoadCheckpointOptions, loadCheckpoint } from '../io/checkpoint.js';
import type { LazyTensor } from '../io/raw.js';
import { writeSafetensors } from '../io/safetensors.js';
import type { LoadResult, Module, StateDict, TensorSource } from './module.js';

/** A {@link TensorSource} reading a checkpoint tensor on demand. */
export function lazySource(t: LazyTensor, device?: string): TensorSource {
  return { shape: t.shape, materialize: () => fromBytes(t.read(), t.dtype, t.shape, device) };
}

/** Options of {@link readStateDict} and {@link loadWeights}. */
export interface ReadStateDictOptions extends LoadCheckpointOptions {
  /** Keep only keys under this prefix, with the prefix removed (e.g. `backbone.`). */
  select?: string;
  /** Prefixes removed from keys that have them (e.g. `module.`). */
  strip?: string[];
}

function rekey(name: string, o: ReadStateDictOptions): string | null {
  let k = name;
  if (o.select) {
    if (!k.startsWith(o.select)) return null;
    k = k.slice(o.select.length);
  }
  for (const p of o.strip ?? []) if (k.startsWith(p)) k = k.slice(p.length);
  return k;
}

/** Opens a checkpoint and returns its (re-keyed) tensors as lazy sources, plus the open checkpoint. */
export function openStateDict(path: string, o: ReadStateDictOptions = {}): { sources: Map<string, TensorSource>; checkpoint: Checkpoint } {
  const ckpt = loadCheckpoint(path, o);
  const sources = new Map<string, TensorSource>();
  for (const [name, t] of ckpt.tensors) {
    const k = rekey(name, o);
    if (k !== null) sources.set(k, lazySource(t));
  }
  return { sources, checkpoint: ckpt };
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

/**
 * Loads a checkpoint file (safetensors, PyTorch .pth, .npz) into a module, reading one tensor at a time.
 * Strict by default (throws listing missing / unexpected / mismatched keys).
 */
export function loadWeights(module: Module, path: string, o: ReadStateDictOptions & { strict?: boolean } = {}): LoadResult {
  const { sources, checkpoint } = openStateDict(path, o);
  try {
    return module.loadStateDict(sources, { strict: o.strict ?? true });
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
