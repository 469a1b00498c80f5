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
import { MAX_PICKLE_DEPTH, PyGlobal, PySlice } from './pickle.js';
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
   * other than the state dict and any non-tensor leaves (JSON-safe and bounded in size, see
   * {@link toJsonSafe}; computed on first access, so loading tensors never converts it).
   */
  readonly metadata: Record<string, unknown>;
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

/**
 * A dict key as a name: strings as they are, numbers / bools / None as Python prints them, anything else (tuples)
 * through {@link toJsonSafe} with a tiny budget — `String()` of a tuple built from shared references would expand it.
 */
function keyName(k: unknown): string {
  if (typeof k === 'string') return k;
  if (typeof k === 'number' || typeof k === 'bigint') return String(k);
  if (typeof k === 'boolean') return k ? 'True' : 'False';
  if (k === null || k === undefined) return 'None';
  return JSON.stringify(toJsonSafe(k, { maxNodes: 64, maxChars: 256, maxString: 64, maxArray: 16, maxDepth: 4 }));
}

function dictEntries(v: Record<string, unknown> | Map<unknown, unknown>): [string, unknown][] {
  if (v instanceof Map) return [...v].map(([k, x]) => [keyName(k), x]);
  return Object.entries(v);
}

function dictValues(v: Record<string, unknown> | Map<unknown, unknown>): Iterable<unknown> {
  return v instanceof Map ? v.values() : Object.values(v);
}

function dictGet(v: Record<string, unknown> | Map<unknown, unknown>, key: string): unknown {
  if (v instanceof Map) return v.get(key);
  return Object.hasOwn(v, key) ? v[key] : undefined;
}

function nestedTooDeep(): CheckpointError {
  return new CheckpointError(`the checkpoint's object tree is nested more than ${MAX_PICKLE_DEPTH} levels deep`);
}

/**
 * A memoised "does this subtree hold a tensor" test: each container is examined once per checkpoint, however many
 * references point to it (a fresh walk per call would be quadratic, or exponential in a DAG without the memo). A
 * container on the current path (a cycle) counts as holding none.
 */
function tensorFinder(): (v: unknown) => boolean {
  const memo = new Map<object, boolean>();
  const has = (v: unknown, depth: number): boolean => {
    if (v instanceof PthTensor || isLazyTensor(v)) return true;
    if (typeof v !== 'object' || v === null) return false;
    const known = memo.get(v);
    if (known !== undefined) return known;
    if (depth > MAX_PICKLE_DEPTH) throw nestedTooDeep();
    memo.set(v, false);
    let found = false;
    if (isDict(v)) {
      for (const x of dictValues(v)) if (has(x, depth + 1)) { found = true; break; }
    } else if (Array.isArray(v)) {
      found = v.some((x) => has(x, depth + 1));
    }
    memo.set(v, found);
    return found;
  };
  return (v) => has(v, 0);
}

/** Options of {@link toJsonSafe}. */
export interface JsonSafeOptions {
  /** Longest string kept whole (longer ones are cut, with a note). Default 4096. */
  maxString?: number;
  /** Longest array kept whole. Default 1000. */
  maxArray?: number;
  /** Deepest nesting kept. Default 32. */
  maxDepth?: number;
  /**
   * Budget for the whole result: values written (every number, string, array, object...). Default 100 000. Shared
   * references are written out again at each place they occur (JSON has no references), so a small pickle whose
   * memo builds a DAG (a list of 10 references to a list of 10 references to ...) would otherwise expand
   * exponentially; beyond the budget, what is left is replaced by a `"[truncated: ...]"` note.
   */
  maxNodes?: number;
  /** Budget of string characters for the whole result (same reason). Default 1 000 000. */
  maxChars?: number;
}

/** Marker written where {@link toJsonSafe} stopped because its budget was spent. */
export const JSON_SAFE_BUDGET_NOTE = '[truncated: metadata size budget exhausted]';

/**
 * Converts an unpickled value to something `JSON.stringify` can write faithfully: bigint → decimal
 * string, NaN/±Infinity → string, bytes → `{"__bytes__": length}`, tensors →
 * `{"__tensor__": {dtype, shape}}`, Maps → objects (string keys) or `[key, value]` pairs, Sets →
 * arrays, Python globals → `"module.name"`, slices → `{start, stop, step}`; long strings and arrays
 * are cut with a note; cycles become `"[circular]"`. The total output is bounded by `maxNodes` values
 * and `maxChars` string characters (see {@link JsonSafeOptions}); work is bounded likewise.
 */
export function toJsonSafe(v: unknown, options: JsonSafeOptions = {}): unknown {
  return jsonSafeConverter(options)(v);
}

/** A {@link toJsonSafe} whose budget is shared by every call of the returned function. */
function jsonSafeConverter(options: JsonSafeOptions): (v: unknown) => unknown {
  const maxString = options.maxString ?? 4096;
  const maxArray = options.maxArray ?? 1000;
  const maxDepth = options.maxDepth ?? 32;
  let nodes = options.maxNodes ?? 100_000;
  let chars = options.maxChars ?? 1_000_000;
  const stack = new Set<unknown>();
  const spent = (): boolean => nodes <= 0 || chars <= 0;
  // Every string written (values and object keys) is charged to `chars`: a long string referenced many times is
  // shared in memory but written out each time by JSON.stringify.
  const str = (x: string, canCut = true): string => {
    const cut = canCut && x.length > maxString ? `${x.slice(0, maxString)}... [truncated, ${x.length} chars]` : x;
    if (cut.length > chars) { chars = 0; return JSON_SAFE_BUDGET_NOTE; }
    chars -= cut.length;
    return cut;
  };
  const setOwnProp = (o: Record<string, unknown>, k: string, value: unknown): void => {
    Object.defineProperty(o, k, { value, enumerable: true, writable: true, configurable: true });
  };
  const conv = (x: unknown, depth: number): unknown => {
    if (spent()) return JSON_SAFE_BUDGET_NOTE;
    nodes--;
    if (x === null || x === undefined) return null;
    if (typeof x === 'boolean') return x;
    if (typeof x === 'number') return Number.isFinite(x) ? x : String(x);
    if (typeof x === 'bigint') return str(x.toString(), false);
    if (typeof x === 'string') return str(x);
    if (typeof x !== 'object') return str(String(x));
    if (x instanceof Uint8Array) return { __bytes__: x.length };
    if (isLazyTensor(x)) return { __tensor__: { dtype: x.dtype, shape: [...x.shape] } };
    if (x instanceof PyGlobal) return str(x.qualifiedName, false);
    if (depth >= maxDepth) return '[too deep]';
    if (stack.has(x)) return '[circular]';
    stack.add(x);
    try {
      if (x instanceof PySlice) return { start: conv(x.start, depth + 1), stop: conv(x.stop, depth + 1), step: conv(x.step, depth + 1) };
      if (Array.isArray(x) || x instanceof Set) {
        const total = Array.isArray(x) ? x.length : x.size;
        const out: unknown[] = [];
        for (const y of x) {
          if (out.length >= maxArray) { out.push(`... [truncated, ${total} items]`); break; }
          if (spent()) { out.push(JSON_SAFE_BUDGET_NOTE); break; }
          out.push(conv(y, depth + 1));
        }
        return out;
      }
      if (x instanceof Map) {
        let stringKeys = true;
        for (const k of x.keys()) if (typeof k !== 'string') { stringKeys = false; break; }
        if (stringKeys) {
          const o: Record<string, unknown> = {};
          let i = 0;
          for (const [k, y] of x) {
            if (i++ >= maxArray) { setOwnProp(o, '...', `[truncated, ${x.size} entries]`); break; }
            if (spent()) { setOwnProp(o, '...', JSON_SAFE_BUDGET_NOTE); break; }
            setOwnProp(o, str(k as string), conv(y, depth + 1));
          }
          return o;
        }
        const out: unknown[] = [];
        for (const [k, y] of x) {
          if (out.length >= maxArray) { out.push(`... [truncated, ${x.size} entries]`); break; }
          if (spent()) { out.push(JSON_SAFE_BUDGET_NOTE); break; }
          out.push([conv(k, depth + 1), conv(y, depth + 1)]);
        }
        return out;
      }
      const o: Record<string, unknown> = {};
      let i = 0;
      for (const k in x) {
        if (!Object.hasOwn(x, k)) continue;
        if (i++ >= maxArray) { setOwnProp(o, '...', '[truncated entries]'); break; }
        if (spent()) { setOwnProp(o, '...', JSON_SAFE_BUDGET_NOTE); break; }
        setOwnProp(o, str(k), conv((x as Record<string, unknown>)[k], depth + 1));
      }
      return o;
    } finally {
      stack.delete(x);
    }
  };
  return (v: unknown) => conv(v, 0);
}

function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Result of {@link flattenPth}. */
export interface FlattenedPth {
  /** Tensors by dotted path. */
  tensors: Map<string, LazyTensor>;
  /**
   * JSON-safe non-tensor entries (see {@link toJsonSafe}: bounded in size), computed on first access only — loading
   * tensors never converts metadata.
   */
  readonly metadata: Record<string, unknown>;
  /** Top-level key the tensors came from, or null when the whole tree was walked. */
  stateDictKey: string | null;
}

/** Converts collected non-tensor entries (path → unpickled value) with one shared {@link toJsonSafe} budget. */
function metadataOf(entries: ReadonlyMap<string, unknown>): Record<string, unknown> {
  const conv = jsonSafeConverter({});
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries) setOwn(out, k, conv(v));
  return out;
}

/** An object with a lazily computed, then cached, `metadata` property. */
function withLazyMetadata<T extends object>(base: T, compute: () => Record<string, unknown>): T & { readonly metadata: Record<string, unknown> } {
  let cached: Record<string, unknown> | null = null;
  Object.defineProperty(base, 'metadata', {
    get: () => (cached ??= compute()), enumerable: true, configurable: true,
  });
  return base as T & { readonly metadata: Record<string, unknown> };
}

/**
 * Flattens an unpickled checkpoint tree into named tensors and metadata (see module doc).
 * The walk visits each container once (shared references are not expanded) and refuses nesting deeper than
 * {@link MAX_PICKLE_DEPTH}; metadata is converted only when read.
 * @param stateDictKey force the top-level key holding the state dict
 */
export function flattenPth(root: unknown, stateDictKey?: string): FlattenedPth {
  const tensors = new Map<string, LazyTensor>();
  const meta = new Map<string, unknown>();
  const seen = new Set<unknown>();
  const containsTensor = tensorFinder();
  const walk = (v: unknown, path: string, depth: number): void => {
    if (v instanceof PthTensor || isLazyTensor(v)) {
      if (tensors.has(path)) throw new CheckpointError(`two tensors flatten to the same name '${path}'`);
      tensors.set(path, v);
      return;
    }
    if (depth > MAX_PICKLE_DEPTH) throw nestedTooDeep();
    const container = isDict(v) || Array.isArray(v);
    if (container && containsTensor(v) && !seen.has(v)) {
      seen.add(v);
      const entries = isDict(v) ? dictEntries(v) : (v as unknown[]).map((x, i): [string, unknown] => [String(i), x]);
      for (const [k, x] of entries) walk(x, path === '' ? k : `${path}.${k}`, depth + 1);
      return;
    }
    meta.set(path === '' ? 'value' : path, v);
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
          if (x instanceof PthTensor || isLazyTensor(x) || containsTensor(x)) walk(x, k, 1);
          else meta.set(`${key}.${k}`, x);
        }
      } else {
        walk(sd, key, 1);
      }
      for (const [k, x] of dictEntries(root)) if (k !== key) meta.set(k, x);
    } else {
      walk(root, '', 0);
    }
  } else if (root instanceof PthTensor || isLazyTensor(root)) {
    tensors.set('tensor', root);
  } else {
    walk(root, '', 0);
  }
  return withLazyMetadata({ tensors, stateDictKey: key }, () => metadataOf(meta));
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
    return withLazyMetadata(
      { path, format, tensors: flat.tensors, stateDictKey: flat.stateDictKey, close: () => f.close() },
      () => flat.metadata,
    );
  } catch (e) {
    source.close();
    throw withContext(e, path);
  }
}
