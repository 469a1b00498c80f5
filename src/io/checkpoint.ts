/**
 * One entry point for every checkpoint format: {@link loadCheckpoint} detects the format from the
 * file's magic bytes (never its extension) and returns an ordered name → {@link LazyTensor} map
 * plus JSON-safe metadata.
 *
 * PyTorch checkpoints are flattened: when the top-level dict has a `state_dict` (else `model`,
 * else `module`) dict holding tensors, the tensors are those inside it, named by their dotted path
 * (`backbone.level_embed`); the other top-level entries (`meta`, `optimizer`, ...) go to
 * `metadata` in JSON-safe form. Otherwise every tensor in the tree is taken, named by its path.
 */
import { CheckpointError, withContext } from './errors.js';
import { isLazyTensor, type LazyTensor } from './raw.js';
import { PyGlobal, PySlice } from './pickle.js';
import { openNpzSource, isNpyMagic } from './npz.js';
import { LEGACY_PTH_HINT, PthTensor, isLegacyTorchMagic, openPthSource } from './pth.js';
import { openSafetensorsSource } from './safetensors.js';
import { FileSource, type ByteSource } from './source.js';
import { ZipReader, isZipMagic } from './zip.js';

/** Checkpoint formats {@link loadCheckpoint} understands. */
export type CheckpointFormat = 'safetensors' | 'pth' | 'npz';

/** A loaded checkpoint: tensors are read on demand. */
export interface Checkpoint {
  /** The path given. */
  path: string;
  /** Detected format. */
  format: CheckpointFormat;
  /** Tensors by name, in file order (pth: pickle order; safetensors: data order; npz: archive order). */
  tensors: Map<string, LazyTensor>;
  /**
   * Non-tensor information: safetensors `__metadata__` (strings); for pth, the top-level entries
   * other than the state dict and any non-tensor leaves (JSON-safe, see {@link toJsonSafe}).
   */
  metadata: Record<string, unknown>;
  /** For pth: the top-level key the tensors were taken from (`state_dict`, ...), or null. */
  stateDictKey: string | null;
  /** Closes the file descriptor (later reads reopen the file). */
  close(): void;
}

/** Options of {@link loadCheckpoint}. */
export interface LoadCheckpointOptions {
  /** pth only: take tensors from this top-level key instead of auto-detecting. */
  stateDictKey?: string;
}

/** Top-level keys tried, in order, to find the state dict of a pth checkpoint. */
export const STATE_DICT_KEYS: readonly string[] = ['state_dict', 'model', 'module'];

function sniffSafetensors(head: Uint8Array, size: number): boolean {
  if (head.length < 9 || size < 10) return false;
  const n = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  return n >= 2n && n <= BigInt(size - 8) && head[8] === 0x7b;
}

function detectFromSource(source: ByteSource): CheckpointFormat {
  const file = source.name;
  const head = source.read(0, Math.min(source.size, 512), 'file header');
  if (isZipMagic(head)) {
    const zip = new ZipReader(source);
    if (zip.entries.some((e) => /^(?:[^/]+\/)?data\.pkl$/.test(e.name))) return 'pth';
    if (zip.entries.length > 0 && zip.entries.every((e) => e.name.endsWith('.npy') || e.name.endsWith('/'))) return 'npz';
    throw new CheckpointError(
      'zip archive that is neither a PyTorch checkpoint (no <folder>/data.pkl) nor an .npz (entries are not all .npy)',
      { file },
    );
  }
  if (sniffSafetensors(head, source.size)) return 'safetensors';
  if (isLegacyTorchMagic(head)) throw new CheckpointError(LEGACY_PTH_HINT, { file });
  if (isNpyMagic(head)) throw new CheckpointError('a single .npy array is not a checkpoint; pack it into an .npz', { file });
  if (source.size < 10) throw new CheckpointError(`file is only ${source.size} bytes: empty or truncated`, { file });
  if (head.length >= 8 && head[8] === 0x7b) {
    throw new CheckpointError('looks like a safetensors file but the header length exceeds the file: truncated', { file });
  }
  throw new CheckpointError('unrecognised checkpoint format (expected safetensors, a PyTorch zip checkpoint or .npz)', { file });
}

/** Detects the format of a checkpoint file from its magic bytes. Throws for unknown or legacy formats. */
export function detectFormat(path: string): CheckpointFormat {
  const source = new FileSource(path);
  try {
    return detectFromSource(source);
  } finally {
    source.close();
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const p = Object.getPrototypeOf(v) as unknown;
  return p === Object.prototype || p === null;
}

function isDict(v: unknown): v is Record<string, unknown> | Map<unknown, unknown> {
  return v instanceof Map || isPlainObject(v);
}

function dictEntries(v: Record<string, unknown> | Map<unknown, unknown>): [string, unknown][] {
  if (v instanceof Map) return [...v].map(([k, x]) => [String(k), x]);
  return Object.entries(v);
}

function dictGet(v: Record<string, unknown> | Map<unknown, unknown>, key: string): unknown {
  if (v instanceof Map) return v.get(key);
  return Object.hasOwn(v, key) ? v[key] : undefined;
}

function containsTensor(v: unknown, seen = new Set<unknown>()): boolean {
  if (v instanceof PthTensor || isLazyTensor(v)) return true;
  if (typeof v !== 'object' || v === null || seen.has(v)) return false;
  seen.add(v);
  if (isDict(v)) return dictEntries(v).some(([, x]) => containsTensor(x, seen));
  if (Array.isArray(v)) return v.some((x) => containsTensor(x, seen));
  return false;
}

/** Options of {@link toJsonSafe}. */
export interface JsonSafeOptions {
  /** Longest string kept whole (longer ones are cut, with a note). Default 4096. */
  maxString?: number;
  /** Longest array kept whole. Default 1000. */
  maxArray?: number;
  /** Deepest nesting kept. Default 32. */
  maxDepth?: number;
}

/**
 * Converts an unpickled value to something `JSON.stringify` can write faithfully: bigint → decimal
 * string, NaN/±Infinity → string, bytes → `{"__bytes__": length}`, tensors →
 * `{"__tensor__": {dtype, shape}}`, Maps → objects (string keys) or `[key, value]` pairs, Sets →
 * arrays, Python globals → `"module.name"`, slices → `{start, stop, step}`; long strings and arrays
 * are cut with a note; cycles become `"[circular]"`.
 */
export function toJsonSafe(v: unknown, options: JsonSafeOptions = {}): unknown {
  const maxString = options.maxString ?? 4096;
  const maxArray = options.maxArray ?? 1000;
  const maxDepth = options.maxDepth ?? 32;
  const stack = new Set<unknown>();
  const conv = (x: unknown, depth: number): unknown => {
    if (x === null || x === undefined) return null;
    if (typeof x === 'boolean') return x;
    if (typeof x === 'number') return Number.isFinite(x) ? x : String(x);
    if (typeof x === 'bigint') return x.toString();
    if (typeof x === 'string') return x.length > maxString ? `${x.slice(0, maxString)}... [truncated, ${x.length} chars]` : x;
    if (typeof x !== 'object') return String(x);
    if (x instanceof Uint8Array) return { __bytes__: x.length };
    if (isLazyTensor(x)) return { __tensor__: { dtype: x.dtype, shape: [...x.shape] } };
    if (x instanceof PyGlobal) return x.qualifiedName;
    if (depth >= maxDepth) return '[too deep]';
    if (stack.has(x)) return '[circular]';
    stack.add(x);
    try {
      if (x instanceof PySlice) return { start: conv(x.start, depth + 1), stop: conv(x.stop, depth + 1), step: conv(x.step, depth + 1) };
      if (Array.isArray(x) || x instanceof Set) {
        const arr = [...x];
        const out = arr.slice(0, maxArray).map((y) => conv(y, depth + 1));
        if (arr.length > maxArray) out.push(`... [truncated, ${arr.length} items]`);
        return out;
      }
      if (x instanceof Map) {
        if ([...x.keys()].every((k) => typeof k === 'string')) {
          const o: Record<string, unknown> = {};
          for (const [k, y] of x) Object.defineProperty(o, k as string, { value: conv(y, depth + 1), enumerable: true, writable: true, configurable: true });
          return o;
        }
        return [...x].slice(0, maxArray).map(([k, y]) => [conv(k, depth + 1), conv(y, depth + 1)]);
      }
      const o: Record<string, unknown> = {};
      for (const [k, y] of Object.entries(x)) {
        Object.defineProperty(o, k, { value: conv(y, depth + 1), enumerable: true, writable: true, configurable: true });
      }
      return o;
    } finally {
      stack.delete(x);
    }
  };
  return conv(v, 0);
}

function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Result of {@link flattenPth}. */
export interface FlattenedPth {
  /** Tensors by dotted path. */
  tensors: Map<string, LazyTensor>;
  /** JSON-safe non-tensor entries. */
  metadata: Record<string, unknown>;
  /** Top-level key the tensors came from, or null when the whole tree was walked. */
  stateDictKey: string | null;
}

/**
 * Flattens an unpickled checkpoint tree into named tensors and metadata (see module doc).
 * @param stateDictKey force the top-level key holding the state dict
 */
export function flattenPth(root: unknown, stateDictKey?: string): FlattenedPth {
  const tensors = new Map<string, LazyTensor>();
  const metadata: Record<string, unknown> = {};
  const seen = new Set<unknown>();
  const walk = (v: unknown, path: string): void => {
    if (v instanceof PthTensor || isLazyTensor(v)) {
      if (tensors.has(path)) throw new CheckpointError(`two tensors flatten to the same name '${path}'`);
      tensors.set(path, v);
      return;
    }
    const container = isDict(v) || Array.isArray(v);
    if (container && containsTensor(v) && !seen.has(v)) {
      seen.add(v);
      const entries = isDict(v) ? dictEntries(v) : (v as unknown[]).map((x, i): [string, unknown] => [String(i), x]);
      for (const [k, x] of entries) walk(x, path === '' ? k : `${path}.${k}`);
      return;
    }
    setOwn(metadata, path === '' ? 'value' : path, toJsonSafe(v));
  };
  let key: string | null = null;
  if (isDict(root)) {
    if (stateDictKey !== undefined) {
      const sd = dictGet(root, stateDictKey);
      if (sd === undefined) throw new CheckpointError(`checkpoint has no top-level key '${stateDictKey}'`);
      key = stateDictKey;
    } else {
      key = STATE_DICT_KEYS.find((k) => { const sd = dictGet(root, k); return isDict(sd) && containsTensor(sd); }) ?? null;
    }
    if (key !== null) {
      const sd = dictGet(root, key);
      if (isDict(sd)) {
        for (const [k, x] of dictEntries(sd)) {
          if (x instanceof PthTensor || isLazyTensor(x) || containsTensor(x)) walk(x, k);
          else setOwn(metadata, `${key}.${k}`, toJsonSafe(x));
        }
      } else {
        walk(sd, key);
      }
      for (const [k, x] of dictEntries(root)) if (k !== key) setOwn(metadata, k, toJsonSafe(x));
    } else {
      walk(root, '');
    }
  } else if (root instanceof PthTensor || isLazyTensor(root)) {
    tensors.set('tensor', root);
  } else {
    walk(root, '');
  }
  return { tensors, metadata, stateDictKey: key };
}

/**
 * Opens a checkpoint of any supported format (detected by magic bytes) for tensor-by-tensor
 * reading. Throws a {@link CheckpointError} naming the file for unknown, legacy, corrupt or
 * truncated files. Call `close()` when done.
 */
export function loadCheckpoint(path: string, options: LoadCheckpointOptions = {}): Checkpoint {
  const source = new FileSource(path);
  try {
    const format = detectFromSource(source);
    if (format === 'safetensors') {
      const f = openSafetensorsSource(source);
      return { path, format, tensors: new Map(f.tensors), metadata: { ...f.metadata }, stateDictKey: null, close: () => f.close() };
    }
    if (format === 'npz') {
      const f = openNpzSource(source);
      return { path, format, tensors: new Map(f.tensors), metadata: {}, stateDictKey: null, close: () => f.close() };
    }
    const f = openPthSource(source);
    let flat: FlattenedPth;
    try {
      flat = flattenPth(f.root, options.stateDictKey);
    } catch (e) {
      throw withContext(e, path);
    }
    return { path, format, tensors: flat.tensors, metadata: flat.metadata, stateDictKey: flat.stateDictKey, close: () => f.close() };
  } catch (e) {
    source.close();
    throw withContext(e, path);
  }
}
