/**
 * Checkpoint inspection and conversion (backing `vit-adapter inspect` and `convert`).
 */
import { basename } from 'node:path';
import type { DType } from '../engine/dtype.js';
import { loadCheckpoint, type CheckpointFormat, type LoadCheckpointOptions } from './checkpoint.js';
import { CheckpointError, withContext } from './errors.js';
import { rekeyEntries } from './keys.js';
import { numel, type LazyTensor } from './raw.js';
import { writeSafetensors } from './safetensors.js';

/** One tensor as listed by {@link inspectFile}. */
export interface TensorInfo {
  /** Tensor name. */
  name: string;
  /** Element type. */
  dtype: DType;
  /** Shape. */
  shape: number[];
}

/** Result of {@link inspectFile} (JSON-safe, for `inspect --json`). */
export interface InspectResult {
  /** The path inspected. */
  file: string;
  /** Detected format. */
  format: CheckpointFormat;
  /** Every tensor, in file order. */
  tensors: TensorInfo[];
  /** Total number of elements over all tensors (parameters and buffers alike). */
  num_parameters: number;
  /** Total size of the tensor data in bytes. */
  total_bytes: number;
  /** pth: the top-level key holding the state dict, or null. */
  state_dict_key: string | null;
  /** Format metadata (see `Checkpoint.metadata`). */
  metadata: Record<string, unknown>;
}

/** Lists the tensors and metadata of a checkpoint without reading any tensor data. */
export function inspectFile(path: string, options: LoadCheckpointOptions = {}): InspectResult {
  const ck = loadCheckpoint(path, options);
  try {
    const tensors: TensorInfo[] = [];
    let count = 0;
    let bytes = 0;
    for (const [name, t] of ck.tensors) {
      tensors.push({ name, dtype: t.dtype, shape: [...t.shape] });
      count += numel(t.shape);
      bytes += t.nbytes;
    }
    return {
      file: path, format: ck.format, tensors, num_parameters: count, total_bytes: bytes,
      state_dict_key: ck.stateDictKey, metadata: ck.metadata,
    };
  } finally {
    ck.close();
  }
}

/** Options of {@link convertToSafetensors}. */
export interface ConvertOptions extends LoadCheckpointOptions {
  /** Keep only keys under this prefix, and strip it (`'backbone'` and `'backbone.'` are equivalent). */
  prefix?: string;
  /** Prefixes to strip from the keys, applied in order (each at most once, where present). */
  strip?: string[];
  /** `__metadata__` to write. Default: `{format: 'pt', source: <input file name>}` plus a safetensors input's own metadata. */
  metadata?: Record<string, string>;
}

/** Summary returned by {@link convertToSafetensors}. */
export interface ConvertResult {
  /** Tensors written. */
  tensors: number;
  /** File size written. */
  bytes: number;
  /** Names written, in order. */
  names: string[];
}

/**
 * Converts any supported checkpoint to safetensors, streaming: tensors are read and written one
 * at a time, so memory stays around the size of the largest tensor. Key selection: `prefix`
 * first, then `strip`. Two keys mapping to the same name is an error.
 */
export function convertToSafetensors(inPath: string, outPath: string, options: ConvertOptions = {}): ConvertResult {
  const ck = loadCheckpoint(inPath, options);
  try {
    let prefix = options.prefix ?? '';
    if (prefix !== '' && !prefix.endsWith('.')) prefix += '.';
    let selected: [string, LazyTensor][];
    try {
      selected = rekeyEntries(ck.tensors, { select: prefix, strip: options.strip }).map(([out, , t]) => [out, t]);
    } catch (e) {
      throw withContext(e, inPath);
    }
    if (selected.length === 0) {
      throw new CheckpointError(
        prefix ? `no tensor name starts with '${prefix}'` : 'the checkpoint holds no tensors', { file: inPath },
      );
    }
    let metadata = options.metadata;
    if (metadata === undefined) {
      metadata = {};
      if (ck.format === 'safetensors') {
        for (const [k, v] of Object.entries(ck.metadata)) {
          if (typeof v === 'string') Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true });
        }
      }
      metadata['format'] ??= 'pt';
      metadata['source'] ??= basename(inPath);
    }
    const bytes = writeSafetensors(outPath, selected, metadata);
    return { tensors: selected.length, bytes, names: selected.map(([n]) => n) };
  } finally {
    ck.close();
  }
}
